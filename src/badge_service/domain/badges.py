"""CrowdTwist badges: states, earn and display windows, frequency caps, tags, segments and
extra data, with every rule a badge must satisfy before it is stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from badge_service.domain import limits
from badge_service.domain.custom_fields import CustomField, check_extra_data
from badge_service.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from badge_service.domain.fields import check_http_url, check_text
from badge_service.domain.org_meta import TagRules, check_badge_tags

# CrowdTwist's list paging: 10 by default, at most 25 (limits.BADGES_PAGE).
LIST_DEFAULT_PAGE_SIZE = 10
LIST_MAX_PAGE_SIZE = limits.BADGES_PAGE
# The limit of every text field of a badge.
_TEXT = limits.BADGE_TEXT_CHARS


class BadgeStateType(IntEnum):
    """The kinds of badge state, in the order a member moves through them."""

    UNEARNED = 1
    IN_PROGRESS = 2
    EARNED = 3

    @property
    def label(self) -> str:
        """CrowdTwist's spelling: unearned, in progress, earned."""
        return self.name.lower().replace("_", " ")


class FrequencyPeriod(IntEnum):
    """The period a frequency cap counts over; values are CrowdTwist's freq_period_id."""

    WEEK = 1
    MONTH = 2
    YEAR = 3
    DAY = 4

    @property
    def label(self) -> str:
        """CrowdTwist's freq_period_name."""
        return self.name.lower()


class EligibilityType(StrEnum):
    """Whether a segment includes or excludes its members."""

    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


@dataclass(slots=True)
class BadgeState:
    """One state of a badge."""

    state: BadgeStateType | None
    order: int
    description: str = ""
    image_url: str = ""


@dataclass(slots=True)
class Frequency:
    """How often a member can earn a badge; None means no limit."""

    freq_cap: int | None = None
    freq_period: FrequencyPeriod | None = None
    freq_max: int | None = None


@dataclass(slots=True)
class BadgeTag:
    """A tag linked to a badge."""

    tag_name: str
    tag_id: int = 0


@dataclass(slots=True)
class Segment:
    """A segment linked to a badge."""

    name: str
    subscription_id: int
    eligibility_type: EligibilityType | None


@dataclass(slots=True)
class Badge:
    """A CrowdTwist badge. Times are aware UTC datetimes."""

    name: str
    title: str
    date_start: dt.datetime | None = None
    date_end: dt.datetime | None = None
    display_date_start: dt.datetime | None = None
    display_date_end: dt.datetime | None = None
    is_enabled: bool = True
    badge_states: list[BadgeState] = field(default_factory=list)
    frequency: Frequency = field(default_factory=Frequency)
    tags: list[BadgeTag] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    extra_data: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    org_id: int = 0
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class BadgeFilter:
    """ListBadges filters; None means no filter."""

    is_enabled: bool | None = None
    tag_name: str | None = None
    earnable_at: dt.datetime | None = None
    displayable_at: dt.datetime | None = None


def duplicate_name(name: str) -> AlreadyExists:
    """The org already has a badge of this internal name."""
    return AlreadyExists(
        f"a badge named {name!r} already exists",
        reason="BADGE_NAME_TAKEN",
        metadata={"name": name},
    )


def badge_awarded(badge_id: int) -> FailedPrecondition:
    """Awards keep their badge: a badge that has been awarded cannot be deleted."""
    return FailedPrecondition(
        f"badge {badge_id} has awards; disable it instead of deleting it",
        reason="BADGE_AWARDED",
        metadata={"badge_id": str(badge_id)},
    )


def validate_badge(
    badge: Badge,
    *,
    now: dt.datetime,
    custom_fields: Sequence[CustomField],
    org_tags: TagRules,
    prefix: str = "badge",
) -> Badge:
    """Checks every badge rule and returns the badge with defaults filled in (start dates,
    extra data defaults). Its cost is bounded by the badge's own limits and the org's quotas
    (custom fields, org meta tags), whatever else the org or any other org stores."""
    check_text(badge.name, f"{prefix}.name", required=True, limit=_TEXT)
    check_text(badge.title, f"{prefix}.title", required=True, limit=_TEXT)
    badge.date_start = badge.date_start or now
    badge.display_date_start = badge.display_date_start or now
    if badge.date_end is not None and badge.date_end < badge.date_start:
        raise InvalidArgument(f"{prefix}.date_end", "must not be before date_start")
    if badge.display_date_end is not None and badge.display_date_end < badge.display_date_start:
        raise InvalidArgument(f"{prefix}.display_date_end", "must not be before display_date_start")
    _check_states(badge.badge_states, f"{prefix}.badge_states")
    _check_frequency(badge.frequency, f"{prefix}.frequency")
    limits.check_items(badge.tags, limits.BADGE_TAGS, f"{prefix}.tags", "tags")
    check_badge_tags([t.tag_name for t in badge.tags], org_tags, f"{prefix}.tags")
    limits.check_items(badge.segments, limits.BADGE_SEGMENTS, f"{prefix}.segment", "segments")
    for i, seg in enumerate(badge.segments):
        if seg.eligibility_type is None:
            raise InvalidArgument(
                f"{prefix}.segment[{i}].eligibility_type", "is required: inclusion or exclusion"
            )
        check_text(seg.name, f"{prefix}.segment[{i}].name", limit=_TEXT)
    where = f"{prefix}.badge_extra_data"
    badge.extra_data = check_extra_data(badge.extra_data, custom_fields, where)
    # As stored and returned, defaults included: what a page of badges carries.
    limits.check_struct(badge.extra_data, limits.BADGE_EXTRA_DATA_BYTES, where)
    return badge


def _check_states(states: Sequence[BadgeState], where: str) -> None:
    if not states:
        raise InvalidArgument(where, "must have at least one state, including earned")
    if len(states) > len(BadgeStateType):
        raise InvalidArgument(where, "must have each state at most once")
    seen_states: set[BadgeStateType] = set()
    seen_orders: set[int] = set()
    for i, st in enumerate(states):
        if st.state is None:
            raise InvalidArgument(
                f"{where}[{i}].state", "is required: unearned, in progress or earned"
            )
        if st.state in seen_states:
            raise InvalidArgument(f"{where}[{i}].state", f"repeats the state {st.state.label!r}")
        if st.order < 1:
            raise InvalidArgument(f"{where}[{i}].order", "must be at least 1")
        if st.order in seen_orders:
            raise InvalidArgument(f"{where}[{i}].order", f"repeats the order {st.order}")
        seen_states.add(st.state)
        seen_orders.add(st.order)
        check_text(st.description, f"{where}[{i}].description", limit=_TEXT)
        check_http_url(st.image_url, f"{where}[{i}].image_url")
    if BadgeStateType.EARNED not in seen_states:
        raise InvalidArgument(where, "must include the earned state")
    by_order = sorted(states, key=lambda s: s.order)
    kinds = [s.state for s in by_order]
    if kinds != sorted(kinds):  # type: ignore[type-var]
        raise InvalidArgument(
            where, "orders must follow the progression unearned, in progress, earned"
        )


def _check_frequency(freq: Frequency, where: str) -> None:
    if freq.freq_cap is not None:
        if freq.freq_cap < 1:
            raise InvalidArgument(f"{where}.freq_cap", "must be at least 1")
        if freq.freq_period is None:
            raise InvalidArgument(f"{where}.freq_period", "is required with freq_cap")
    if freq.freq_max is not None:
        if freq.freq_max < 1:
            raise InvalidArgument(f"{where}.freq_max", "must be at least 1")
        if freq.freq_cap is not None and freq.freq_cap > freq.freq_max:
            raise InvalidArgument(f"{where}.freq_cap", "must not exceed freq_max")
