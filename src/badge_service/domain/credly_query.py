"""Credly's list query language for badge templates: ``filter=key::value|key::value`` and
``sort=key1|-key2``, parsed into plain values the store turns into SQL.

Pure functions: every rule of the syntax is here, so it is tested without a server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, urlencode

from badge_service.domain import limits
from badge_service.domain.badge_templates import UTC_MIDNIGHT, TemplateState
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.fields import is_date_text

FILTER_FIELD = "filter"
SORT_FIELD = "sort"
# limits.CREDLY_*: bounds that keep one request's SQL small (bind parameters, LIKE patterns)
# on both databases.


class SortKey(StrEnum):
    """The keys templates can be sorted by."""

    BADGES_COUNT = "badges_count"
    CREATED_AT = "created_at"
    NAME = "name"
    UPDATED_AT = "updated_at"


@dataclass(frozen=True, slots=True)
class SortTerm:
    """One key of a sort and its direction."""

    key: SortKey
    descending: bool = False

    def __str__(self) -> str:
        return f"-{self.key.value}" if self.descending else self.key.value


# Newest first; the store always appends the id as the last, ascending, tiebreak.
DEFAULT_SORT: tuple[SortTerm, ...] = (SortTerm(SortKey.CREATED_AT, descending=True),)


@dataclass(frozen=True, slots=True)
class TemplateFilter:
    """A parsed Credly filter; None (or empty) means no condition on that key.

    Text values are kept as typed; matching rules (case, partial) are the store's to apply as
    documented: ``query``/``name`` partial and case-insensitive, ``name_exact`` exact;
    ``skills``/``reporting_tags`` exact ignoring case (values here are already lower-cased);
    list keys match templates having any of the values. Date bounds are instants:
    ``*_from`` inclusive, ``*_before`` exclusive (the day after a ``*_max`` date).
    """

    query: str | None = None
    name: str | None = None
    name_exact: str | None = None
    public: bool | None = None
    reporting_tags: tuple[str, ...] | None = None
    recommendation_ids: tuple[str, ...] | None = None
    skills: tuple[str, ...] | None = None
    states: tuple[TemplateState, ...] | None = None
    created_from: dt.datetime | None = None
    created_before: dt.datetime | None = None
    updated_from: dt.datetime | None = None
    updated_before: dt.datetime | None = None
    owner_ids: tuple[str, ...] | None = None
    collection_ids: tuple[str, ...] | None = None


FILTER_KEYS = (
    "query",
    "name",
    "public",
    "reporting_tags",
    "recommendation_ids",
    "skills",
    "state",
    "created_at_min",
    "created_at_max",
    "updated_at_min",
    "updated_at_max",
    "owner_id",
    "collection_id",
)


def _bad_filter(description: str) -> InvalidArgument:
    return InvalidArgument(FILTER_FIELD, description, reason="INVALID_FILTER")


def _bad_sort(description: str) -> InvalidArgument:
    return InvalidArgument(SORT_FIELD, description, reason="INVALID_SORT")


def parse_filter(text: str) -> TemplateFilter:
    """Parses ``key::value|key::value``; INVALID_ARGUMENT (field ``filter``) naming the key or
    the pair at fault."""
    limits.check_chars(text, limits.CREDLY_FILTER_CHARS, FILTER_FIELD)
    if "\x00" in text:
        raise _bad_filter("must not contain NUL characters")
    if not text.strip():
        return TemplateFilter()
    values: dict[str, object] = {}
    for pair in text.split("|"):
        key, sep, raw = pair.partition("::")
        key = key.strip()
        if not sep or not key:
            raise _bad_filter(f"{pair!r} is not a key::value pair")
        if key not in FILTER_KEYS:
            raise _bad_filter(f"unknown key {key!r}; known keys: {', '.join(FILTER_KEYS)}")
        if key in values:
            raise _bad_filter(f"key {key!r} is given more than once")
        value = raw.strip()
        if not value:
            raise _bad_filter(f"key {key!r} needs a value")
        values[key] = _parse_value(key, value)
    return _build(values)


def _parse_value(key: str, value: str) -> object:
    if key == "query":
        return value
    if key == "name":
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            return ("exact", value[1:-1])
        return ("partial", value)
    if key == "public":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise _bad_filter(f"key 'public' must be true or false, not {value!r}")
        return lowered == "true"
    if key.endswith(("_min", "_max")):
        return _parse_date(key, value)
    items = _split_list(key, value)
    if key == "state":
        states = []
        for item in items:
            try:
                states.append(TemplateState(item.lower()))
            except ValueError:
                raise _bad_filter(
                    f"key 'state' must list active, archived or draft, not {item!r}"
                ) from None
        return tuple(dict.fromkeys(states))
    if key in ("skills", "reporting_tags"):
        return tuple(dict.fromkeys(i.lower() for i in items))
    # Ids are UUIDs, which Credly writes in lower case.
    return tuple(dict.fromkeys(i.lower() for i in items))


def _split_list(key: str, value: str) -> list[str]:
    items = [i.strip() for i in value.split(",")]
    items = [i for i in items if i]
    if not items:
        raise _bad_filter(f"key {key!r} needs at least one value")
    limits.check_items(items, limits.CREDLY_FILTER_VALUES, FILTER_FIELD, f"values for key {key!r}")
    return items


def _parse_date(key: str, value: str) -> dt.date:
    if not is_date_text(value):
        raise _bad_filter(f"key {key!r} must be a date YYYY-MM-DD, not {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _bad_filter(f"key {key!r} is not a real date: {value!r}") from None


def _start(day: object) -> dt.datetime | None:
    if not isinstance(day, dt.date):
        return None
    return dt.datetime.combine(day, UTC_MIDNIGHT)


def _after(day: object) -> dt.datetime | None:
    # A max date includes its whole day: the bound is the next midnight. The last date has no
    # next day, so it bounds nothing.
    if not isinstance(day, dt.date) or day == dt.date.max:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=1), UTC_MIDNIGHT)


def _build(v: dict[str, object]) -> TemplateFilter:
    name = v.get("name")
    name_mode, name_value = name if isinstance(name, tuple) else (None, None)

    def strings(key: str) -> tuple[str, ...] | None:
        got = v.get(key)
        return got if isinstance(got, tuple) else None

    public = v.get("public")
    states = v.get("state")
    query = v.get("query")
    return TemplateFilter(
        query=query if isinstance(query, str) else None,
        name=name_value if name_mode == "partial" else None,
        name_exact=name_value if name_mode == "exact" else None,
        public=public if isinstance(public, bool) else None,
        reporting_tags=strings("reporting_tags"),
        recommendation_ids=strings("recommendation_ids"),
        skills=strings("skills"),
        states=states if isinstance(states, tuple) else None,
        created_from=_start(v.get("created_at_min")),
        created_before=_after(v.get("created_at_max")),
        updated_from=_start(v.get("updated_at_min")),
        updated_before=_after(v.get("updated_at_max")),
        owner_ids=strings("owner_id"),
        collection_ids=strings("collection_id"),
    )


def parse_sort(text: str) -> tuple[SortTerm, ...]:
    """Parses ``key1|-key2``; empty means DEFAULT_SORT. INVALID_ARGUMENT (field ``sort``) for
    unknown, empty or repeated keys."""
    limits.check_chars(text, limits.CREDLY_SORT_CHARS, SORT_FIELD)
    if not text.strip():
        return DEFAULT_SORT
    terms: list[SortTerm] = []
    seen: set[SortKey] = set()
    for part in text.split("|"):
        part = part.strip()
        descending = part.startswith("-")
        name = part[1:] if descending else part
        try:
            key = SortKey(name)
        except ValueError:
            known = ", ".join(k.value for k in SortKey)
            raise _bad_sort(f"unknown sort key {name!r}; known keys: {known}") from None
        if key in seen:
            raise _bad_sort(f"sort key {name!r} is given more than once")
        seen.add(key)
        terms.append(SortTerm(key, descending))
    return tuple(terms)


def sort_text(terms: tuple[SortTerm, ...]) -> str:
    """The canonical ``sort`` text of parsed terms."""
    return "|".join(str(t) for t in terms)


# Keyset positions hold a name key (at most 255 characters, lower-cased) or an id; anything
# longer was not made by this service.
_POSITION_TEXT_MAX = 1024
_INT64 = 2**63


def check_position(
    value: object, sort: Sequence[SortTerm], field: str = "page_token"
) -> list[object]:
    """The keyset position a decoded page token holds, checked against the sort it was made
    for: one value per sort key (integers for counts and times, text for the name) and the id.
    A forged token with other shapes is INVALID_ARGUMENT rather than a bad query."""
    textual = [s.key is SortKey.NAME for s in sort] + [True]
    if not isinstance(value, list) or len(value) != len(textual):
        raise InvalidArgument(field, "is not a token this service issued")
    for item, is_text in zip(value, textual, strict=True):
        ok = (
            isinstance(item, str) and len(item) <= _POSITION_TEXT_MAX and "\x00" not in item
            if is_text
            else isinstance(item, int) and not isinstance(item, bool) and -_INT64 <= item < _INT64
        )
        if not ok:
            raise InvalidArgument(field, "is not a token this service issued")
    return value


def page_url(
    organization_id: str,
    page: int | None,
    *,
    filter_text: str,
    sort: str,
    per: int,
    default_per: int,
) -> str:
    """A numbered page as a Credly path with its query, or "" for no page."""
    if page is None:
        return ""
    query: list[tuple[str, str | int]] = []
    if filter_text:
        query.append(("filter", filter_text))
    if sort:
        query.append(("sort", sort))
    query.append(("page", page))
    if per != default_per:
        query.append(("page_size", per))
    path = f"/organizations/{quote(organization_id, safe='')}/badge_templates"
    return f"{path}?{urlencode(query, quote_via=quote)}"
