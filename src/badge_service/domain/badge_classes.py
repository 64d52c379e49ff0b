"""Badgr v2 badge classes: their fields (alignments, expiry, Open Badges 3.0 properties,
custom property values), every rule a class must satisfy before it is stored, and archival."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from badge_service.domain import limits
from badge_service.domain.errors import FailedPrecondition, InvalidArgument
from badge_service.domain.fields import (
    check_http_url,
    check_image,
    check_json_object,
    check_json_text,
    check_text,
)
from badge_service.domain.issuers import (
    PropertyDefinition,
    PropertyTarget,
    PropertyType,
    check_print_templates,
    source_or_default,
)

ENTITY_TYPE_BADGE_CLASS = "BadgeClass"

# The resource name in NOT_FOUND errors.
BADGE_CLASS = "badge class"

# Sizes and counts are limits.BADGR_* (Badgr's own where its API states them); these are
# value ranges.
EXPIRES_AMOUNT_MAX = 9999
CREDIT_HOURS_MAX = 1_000_000.0

# Free text without a limit of its own has this one.
_TEXT = limits.BADGR_TEXT_CHARS


class ExpiresDuration(StrEnum):
    """The unit of a default expiry (Badgr's spelling)."""

    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"
    YEARS = "years"


@dataclass(slots=True)
class Alignment:
    """An objective or educational standard a badge class aligns with."""

    target_name: str
    target_url: str
    target_description: str = ""
    target_framework: str = ""
    target_code: str = ""
    display_as_skill: bool = False


@dataclass(slots=True)
class Expires:
    """A default expiry period; no duration means awards never expire."""

    amount: int = 0
    duration: ExpiresDuration | None = None


@dataclass(slots=True)
class Ob3Properties:
    """Open Badges 3.0 properties of a badge class."""

    credit_hours: float = 0.0
    field_of_study: str = ""
    human_code: str = ""
    specialization: str = ""


@dataclass(slots=True)
class PropertyValue:
    """The value of one custom property on a badge class."""

    property_id: str
    string_value: str = ""
    double_value: float | None = None
    array_value: list[str] = field(default_factory=list)
    public: bool = False


@dataclass(slots=True)
class BadgeClassPreferences:
    """Public page, custom property and print certificate preferences of a badge class."""

    include_on_public_pages: bool = True
    custom_property_values: list[PropertyValue] = field(default_factory=list)
    enabled_print_cert_template_ids: list[str] = field(default_factory=list)
    default_print_cert_template_id: str = ""


@dataclass(slots=True)
class BadgeClass:
    """A Badgr badge class. ``issuer_id`` is the issuer's 24-hex id, ``issuer_entity_id`` its
    entity id (what Badgr's ``issuer`` field shows)."""

    name: str
    description: str = ""
    image: str = ""
    issuer_id: str = ""
    issuer_entity_id: str = ""
    achievement_type: str = ""
    criteria_url: str = ""
    criteria_narrative: str = ""
    alignments: list[Alignment] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    expires: Expires = field(default_factory=Expires)
    extensions: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    source_url: str = ""
    image_path: str = ""
    original_json: str = ""
    archived: bool = False
    archived_date: dt.datetime | None = None
    archival_note: str = ""
    ob3_properties: Ob3Properties = field(default_factory=Ob3Properties)
    preferences: BadgeClassPreferences = field(default_factory=BadgeClassPreferences)
    id: str = ""
    entity_id: str = ""
    org_id: int = 0
    created_by: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class BadgeClassFilter:
    """ListBadgeClasses filters; None means no filter. ``issuer_id`` is a 24-hex id."""

    issuer_id: str | None = None
    archived: bool | None = None


def badge_class_awarded(count: int) -> FailedPrecondition:
    """The badge class has been awarded and the caller did not ask to cascade."""
    return FailedPrecondition(
        f"the badge class has been awarded {count} times; set cascade to delete the awards too",
        reason="BADGE_CLASS_AWARDED",
        metadata={"award_count": str(count)},
    )


def badge_class_archived() -> FailedPrecondition:
    """Claim codes cannot be made for an archived badge class."""
    return FailedPrecondition(
        "the badge class is archived; unarchive it to create claim codes",
        reason="BADGE_CLASS_ARCHIVED",
    )


# --- Badge classes --------------------------------------------------------------------------


def validate_badge_class(
    bc: BadgeClass,
    *,
    definitions: Sequence[PropertyDefinition],
    prefix: str = "badge_class",
) -> BadgeClass:
    """Checks every badge class rule, its custom property values against the issuer's
    ``definitions``; returns it with defaults filled in (source)."""
    check_text(bc.name, f"{prefix}.name", limit=limits.BADGR_NAME_CHARS, required=True)
    check_text(
        bc.description, f"{prefix}.description", limit=limits.BADGR_LONG_TEXT_CHARS, required=True
    )
    check_image(bc.image, f"{prefix}.image", required=True, limit=limits.BADGR_IMAGE_DATA_CHARS)
    check_text(bc.achievement_type, f"{prefix}.achievement_type", limit=_TEXT)
    check_http_url(bc.criteria_url, f"{prefix}.criteria_url")
    check_text(
        bc.criteria_narrative, f"{prefix}.criteria_narrative", limit=limits.BADGR_LONG_TEXT_CHARS
    )
    if not bc.criteria_url and not bc.criteria_narrative.strip():
        raise InvalidArgument(
            f"{prefix}.criteria_url", "criteria_url or criteria_narrative is required"
        )
    _check_alignments(bc.alignments, f"{prefix}.alignments")
    _check_tags(bc.tags, f"{prefix}.tags")
    _check_expires(bc.expires, f"{prefix}.expires")
    check_json_object(bc.extensions, f"{prefix}.extensions", limits.BADGR_EXTENSIONS_BYTES)
    bc.source = source_or_default(bc.source, f"{prefix}.source")
    check_http_url(bc.source_url, f"{prefix}.source_url")
    check_text(bc.image_path, f"{prefix}.image_path", limit=limits.BADGR_PATH_CHARS)
    check_json_text(bc.original_json, f"{prefix}.original_json", limit=limits.BADGR_JSON_CHARS)
    check_text(bc.archival_note, f"{prefix}.archival_note", limit=limits.BADGR_LONG_TEXT_CHARS)
    ob3 = bc.ob3_properties
    if not math.isfinite(ob3.credit_hours) or not 0 <= ob3.credit_hours <= CREDIT_HOURS_MAX:
        raise InvalidArgument(
            f"{prefix}.ob3_properties.credit_hours", f"must be from 0 to {CREDIT_HOURS_MAX:g}"
        )
    for name in ("field_of_study", "human_code", "specialization"):
        check_text(getattr(ob3, name), f"{prefix}.ob3_properties.{name}", limit=_TEXT)
    prefs = bc.preferences
    _check_values(
        prefs.custom_property_values,
        definitions,
        f"{prefix}.preferences.custom_property_values",
    )
    check_print_templates(
        prefs.default_print_cert_template_id,
        prefs.enabled_print_cert_template_ids,
        f"{prefix}.preferences",
    )
    return bc


def _check_alignments(alignments: Sequence[Alignment], where: str) -> None:
    limits.check_items(alignments, limits.BADGR_LIST_ITEMS, where, "alignments")
    for i, a in enumerate(alignments):
        at = f"{where}[{i}]"
        check_text(a.target_name, f"{at}.target_name", limit=limits.BADGR_NAME_CHARS, required=True)
        check_http_url(a.target_url, f"{at}.target_url", required=True)
        check_text(
            a.target_description, f"{at}.target_description", limit=limits.BADGR_LONG_TEXT_CHARS
        )
        check_text(a.target_framework, f"{at}.target_framework", limit=_TEXT)
        check_text(a.target_code, f"{at}.target_code", limit=_TEXT)


def _check_tags(tags: Sequence[str], where: str) -> None:
    limits.check_items(tags, limits.BADGR_LIST_ITEMS, where, "tags")
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        check_text(tag, f"{where}[{i}]", required=True, limit=_TEXT)
        if tag in seen:
            raise InvalidArgument(f"{where}[{i}]", "repeats a tag")
        seen.add(tag)


def _check_expires(expires: Expires, where: str) -> None:
    if expires.amount == 0 and expires.duration is None:
        return
    if not 1 <= expires.amount <= EXPIRES_AMOUNT_MAX:
        raise InvalidArgument(f"{where}.amount", f"must be from 1 to {EXPIRES_AMOUNT_MAX}")
    if expires.duration is None:
        raise InvalidArgument(f"{where}.duration", "is required with an amount")


def _check_values(
    values: Sequence[PropertyValue], definitions: Sequence[PropertyDefinition], where: str
) -> None:
    defs = {d.property_id: d for d in definitions}
    limits.check_items(values, limits.BADGR_LIST_ITEMS, where, "values")
    given: set[str] = set()
    for i, v in enumerate(values):
        at = f"{where}[{i}]"
        d = defs.get(v.property_id)
        if d is None or d.target_entity_type is not PropertyTarget.BADGE_CLASS:
            raise InvalidArgument(
                f"{at}.property_id", "is not a badge class property of the issuer"
            )
        if v.property_id in given:
            raise InvalidArgument(f"{at}.property_id", "repeats a property")
        given.add(v.property_id)
        _check_value(v, d, at)
    for d in definitions:
        if (
            d.required
            and d.target_entity_type is PropertyTarget.BADGE_CLASS
            and d.property_id not in given
        ):
            raise InvalidArgument(where, f"the required property {d.label!r} has no value")


def _check_value(v: PropertyValue, d: PropertyDefinition, at: str) -> None:
    choices = {c.id for c in d.choice_values} | {c.label for c in d.choice_values}
    kind = d.property_type
    uses_string = kind in (PropertyType.STRING, PropertyType.STRING_CHOICE)
    if not uses_string and v.string_value:
        raise InvalidArgument(f"{at}.string_value", f"does not apply to a {kind} property")
    if kind is not PropertyType.DOUBLE and v.double_value is not None:
        raise InvalidArgument(f"{at}.double_value", f"does not apply to a {kind} property")
    if kind is not PropertyType.STRING_MULTI_CHOICE and v.array_value:
        raise InvalidArgument(f"{at}.array_value", f"does not apply to a {kind} property")
    if kind is PropertyType.STRING:
        check_text(v.string_value, f"{at}.string_value", limit=limits.BADGR_NAME_CHARS)
    elif kind is PropertyType.STRING_CHOICE:
        if v.string_value not in choices:
            raise InvalidArgument(f"{at}.string_value", "must be one of the property's choices")
    elif kind is PropertyType.STRING_MULTI_CHOICE:
        seen: set[str] = set()
        for j, item in enumerate(v.array_value):
            if item not in choices:
                raise InvalidArgument(
                    f"{at}.array_value[{j}]", "must be one of the property's choices"
                )
            if item in seen:
                raise InvalidArgument(f"{at}.array_value[{j}]", "repeats a choice")
            seen.add(item)
    elif v.double_value is None or not math.isfinite(v.double_value):
        raise InvalidArgument(f"{at}.double_value", "must be a finite number")


def apply_archival(bc: BadgeClass, was: BadgeClass | None, now: dt.datetime) -> None:
    """Stamps ``archived_date`` when a class becomes archived, keeps it while it stays so,
    and clears it when the class is unarchived."""
    if not bc.archived:
        bc.archived_date = None
    elif was is not None and was.archived:
        bc.archived_date = was.archived_date
    else:
        bc.archived_date = now
