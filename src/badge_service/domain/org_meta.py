"""Capillary org meta: an organisation's badge metadata tags and how badge tags must use them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from badge_service.domain import limits
from badge_service.domain.custom_fields import DataType
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.fields import check_text


@dataclass(slots=True)
class OrgMetaTag:
    """One metadata tag: a key badges may carry, its type, description, and whether every
    badge must carry it."""

    key: str
    data_type: DataType | None
    description: str = ""
    mandatory: bool = False


@dataclass(slots=True)
class OrgMeta:
    """The badge metadata of one organisation."""

    id: str
    org_id: int
    tags: list[OrgMetaTag] = field(default_factory=list)
    created_on: dt.datetime | None = None
    created_by: int = 0
    last_updated_on: dt.datetime | None = None
    last_updated_by: int = 0


@dataclass(frozen=True, slots=True)
class TagRules:
    """What checking a badge's tags needs of its org's meta tags: their keys (empty when the
    org defines none, and any tag goes) and the mandatory ones."""

    keys: frozenset[str] = frozenset()
    mandatory: tuple[str, ...] = ()

    @classmethod
    def of(cls, tags: Sequence[OrgMetaTag]) -> TagRules:
        """The rules of a list of tags."""
        return cls(frozenset(t.key for t in tags), tuple(t.key for t in tags if t.mandatory))


def validate_tags(tags: Sequence[OrgMetaTag], prefix: str = "org_meta.tags") -> None:
    """At most ORG_META_TAGS_PER_ORG (RESOURCE_EXHAUSTED: the list replaces the org's tags);
    keys are required, unique and short; every tag has a data type."""
    limits.check_quota(len(tags), limits.ORG_META_TAGS_PER_ORG, prefix, "org meta tags")
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        where = f"{prefix}[{i}]"
        check_text(tag.key, f"{where}.key", limit=limits.ORG_META_TAG_KEY_CHARS, required=True)
        check_text(
            tag.description, f"{where}.description", limit=limits.ORG_META_TAG_DESCRIPTION_CHARS
        )
        if tag.key in seen:
            raise InvalidArgument(f"{where}.key", f"duplicates the key {tag.key!r}")
        seen.add(tag.key)
        if tag.data_type is None:
            raise InvalidArgument(
                f"{where}.data_type", "is required: one of INTEGER, BOOLEAN, DATE, STRING"
            )


def check_badge_tags(tag_names: Sequence[str], rules: TagRules, prefix: str) -> None:
    """Where the org defines meta tags, a badge's tags must name them and include every
    mandatory one. Tag names on one badge are unique either way."""
    seen: set[str] = set()
    keys = rules.keys
    for i, name in enumerate(tag_names):
        where = f"{prefix}[{i}].tag_name"
        check_text(name, where, limit=limits.BADGE_TEXT_CHARS, required=True)
        if name in seen:
            raise InvalidArgument(where, f"duplicates the tag {name!r}")
        seen.add(name)
        if keys and name not in keys:
            raise InvalidArgument(
                where, f"{name!r} is not an org meta tag key", reason="UNKNOWN_TAG"
            )
    missing = [key for key in rules.mandatory if key not in seen]
    if missing:
        raise InvalidArgument(
            prefix, f"must include the mandatory tags {missing}", reason="MANDATORY_TAG_MISSING"
        )
