"""Awards: a CrowdTwist badge, a Credly badge template or a Badgr badge class given to a
recipient, and every rule an award must pass before it is recorded.

The rules that need the database to hold under concurrency (frequency caps, Credly duplicates,
claim code uses, template counters) are enforced by the store with atomic statements; this
module says what the limits are (period keys, dedupe keys, expiry instants) and builds the
errors, with no I/O.
"""

from __future__ import annotations

import calendar
import datetime as dt
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from badge_service.domain import limits
from badge_service.domain.badge_classes import BadgeClass, ExpiresDuration
from badge_service.domain.badge_templates import BadgeTemplate, ExpiryType, TemplateState
from badge_service.domain.badges import Badge, FrequencyPeriod
from badge_service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
)
from badge_service.domain.fields import (
    check_http_url,
    check_json_object,
    check_no_nul,
    is_email,
)

RESOURCE = "award"

# ListAwards: 50 a page by default, at most limits.AWARDS_PAGE.
LIST_DEFAULT_PAGE_SIZE = 50
LIST_MAX_PAGE_SIZE = limits.AWARDS_PAGE


class AwardKind(StrEnum):
    """Which vendor's definition an award is of."""

    BADGE = "badge"
    TEMPLATE = "template"
    CLASS = "class"


class RecipientKind(StrEnum):
    """How a recipient is identified."""

    MEMBER_ID = "member_id"
    EMAIL = "email"
    URL = "url"


class AwardState(StrEnum):
    """An award's state; expiry is judged at read time."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who receives an award: one identity."""

    kind: RecipientKind
    value: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """A piece of evidence (Open Badges Evidence)."""

    url: str = ""
    narrative: str = ""


@dataclass(slots=True)
class Award:
    """One award. Exactly one of badge_id, badge_template_id and badge_class_id is set, as
    ``kind`` says; badge_class_id is the class's 24-hex id (the proto shows its entityId).
    Times are aware UTC datetimes."""

    kind: AwardKind
    recipient: Recipient
    badge_id: int | None = None
    badge_template_id: str | None = None
    badge_class_id: str | None = None
    issued_at: dt.datetime | None = None
    narrative: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    custom_data: dict[str, Any] = field(default_factory=dict)
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str = ""
    claim_code: str = ""
    # 16 random hex characters, the salt of the Open Badges recipient identity hash.
    salt: str = ""
    id: str = ""
    org_id: int = 0
    create_time: dt.datetime | None = None
    created_by: int = 0

    def state(self, now: dt.datetime) -> AwardState:
        """Revoked wins over expired; expired once ``now`` reaches expires_at."""
        if self.revoked_at is not None:
            return AwardState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return AwardState.EXPIRED
        return AwardState.ACTIVE

    @property
    def recipient_key(self) -> str:
        """The normalised recipient identity (see recipient_key())."""
        return recipient_key(self.recipient)


@dataclass(frozen=True, slots=True)
class AwardFilter:
    """ListAwards: exactly one subject (a definition or a recipient key) and the optional
    revoked/expired filters (None means either)."""

    badge_id: int | None = None
    badge_template_id: str | None = None
    badge_class_id: str | None = None
    recipient_key: str | None = None
    revoked: bool | None = None
    expired: bool | None = None


def new_salt() -> str:
    """A fresh per-award salt: 16 random hex characters."""
    return secrets.token_hex(8)


def recipient_key(recipient: Recipient) -> str:
    """The recipient as one normalised string: ``email:a@b.c`` (trimmed, lower-cased),
    ``member_id:42``, ``url:https://...`` (trimmed). Caps and duplicates count per key."""
    value = recipient.value.strip()
    if recipient.kind is RecipientKind.EMAIL:
        value = value.lower()
    return f"{recipient.kind.value}:{value}"


def parse_recipient_key(key: str) -> Recipient:
    """The recipient a key was made from (normalised)."""
    kind, _, value = key.partition(":")
    return Recipient(RecipientKind(kind), value)


def check_recipient(recipient: Recipient | None, where: str) -> Recipient:
    """A well-formed recipient, normalised; INVALID_ARGUMENT otherwise."""
    if recipient is None:
        raise InvalidArgument(where, "is required: member_id, email or url")
    value = recipient.value.strip()
    kind = recipient.kind
    sub = f"{where}.{kind.value}"
    if not value:
        raise InvalidArgument(sub, "is required")
    check_no_nul(value, sub)
    if kind is RecipientKind.MEMBER_ID:
        limits.check_chars(value, limits.AWARD_TEXT_CHARS, sub)
    elif kind is RecipientKind.EMAIL:
        value = value.lower()
        limits.check_chars(value, limits.AWARD_EMAIL_CHARS, sub)
        if not is_email(value):
            raise InvalidArgument(sub, "is not an email address", reason="INVALID_EMAIL")
    else:
        check_http_url(value, sub)
    return Recipient(kind, value)


def check_details(award: Award, *, now: dt.datetime, prefix: str) -> None:
    """Checks the recipient and the free fields of an award and fills in issued_at and the
    salt. The definition's own rules come after, with the definition at hand. Fields are
    named under ``prefix`` ("award", "requests[3].award", or "" for top-level fields)."""
    prefix = f"{prefix}." if prefix else ""
    award.recipient = check_recipient(award.recipient, f"{prefix}recipient")
    if award.issued_at is None:
        award.issued_at = now
    elif award.issued_at > now:
        raise InvalidArgument(f"{prefix}issued_at", "must not be in the future")
    limits.check_chars(award.narrative, limits.AWARD_NARRATIVE_CHARS, f"{prefix}narrative")
    check_no_nul(award.narrative, f"{prefix}narrative")
    limits.check_items(award.evidence, limits.AWARD_EVIDENCE, f"{prefix}evidence")
    for i, ev in enumerate(award.evidence):
        if not ev.url and not ev.narrative:
            raise InvalidArgument(f"{prefix}evidence[{i}]", "needs a url or a narrative")
        check_http_url(ev.url, f"{prefix}evidence[{i}].url")
        limits.check_chars(
            ev.narrative, limits.AWARD_NARRATIVE_CHARS, f"{prefix}evidence[{i}].narrative"
        )
        check_no_nul(ev.narrative, f"{prefix}evidence[{i}].narrative")
    check_json_object(award.custom_data, f"{prefix}custom_data", limits.AWARD_CUSTOM_DATA_BYTES)
    if not award.salt:
        award.salt = new_salt()


def check_revocation_reason(reason: str, where: str = "reason") -> str:
    """A revocation needs a reason."""
    reason = reason.strip()
    if not reason:
        raise InvalidArgument(where, "is required: say why the award is revoked")
    check_no_nul(reason, where)
    limits.check_chars(reason, limits.AWARD_REASON_CHARS, where)
    return reason


# --- CrowdTwist ------------------------------------------------------------------------------

TOTAL_PERIOD = "total"


def check_badge_earnable(badge: Badge, issued_at: dt.datetime) -> None:
    """A disabled badge, or an award issued outside the earn window, is FAILED_PRECONDITION."""
    if not badge.is_enabled:
        raise FailedPrecondition(
            f"badge {badge.id} is disabled",
            reason="BADGE_DISABLED",
            metadata={"badge_id": str(badge.id)},
        )
    start, end = badge.date_start, badge.date_end
    if (start is not None and issued_at < start) or (end is not None and issued_at >= end):
        raise FailedPrecondition(
            f"badge {badge.id} cannot be earned at {issued_at.isoformat()}"
            " (outside its earn window)",
            reason="BADGE_NOT_EARNABLE",
            metadata={
                "badge_id": str(badge.id),
                "date_start": start.isoformat() if start else "",
                "date_end": end.isoformat() if end else "",
            },
        )


def period_key(period: FrequencyPeriod, at: dt.datetime) -> str:
    """The bucket ``at`` falls in for a freq_cap period, in UTC: ``day:2026-11-23``,
    ``week:2026-W48`` (ISO weeks, from Monday), ``month:2026-11``, ``year:2026``."""
    at = at.astimezone(dt.UTC)
    if period is FrequencyPeriod.DAY:
        return f"day:{at.date().isoformat()}"
    if period is FrequencyPeriod.WEEK:
        year, week, _ = at.isocalendar()
        return f"week:{year}-W{week:02d}"
    if period is FrequencyPeriod.MONTH:
        return f"month:{at.year}-{at.month:02d}"
    return f"year:{at.year}"


@dataclass(frozen=True, slots=True)
class CounterLimit:
    """One counter an award must fit under: its period key, the cap and why it is refused."""

    period: str
    limit: int
    reason: str
    label: str


def badge_limits(badge: Badge, issued_at: dt.datetime) -> list[CounterLimit]:
    """The counters a badge award takes a slot of (freq_max first, then freq_cap)."""
    out: list[CounterLimit] = []
    freq = badge.frequency
    if freq.freq_max is not None:
        out.append(CounterLimit(TOTAL_PERIOD, freq.freq_max, "FREQUENCY_MAX_REACHED", "total"))
    if freq.freq_cap is not None and freq.freq_period is not None:
        out.append(
            CounterLimit(
                period_key(freq.freq_period, issued_at),
                freq.freq_cap,
                "FREQUENCY_CAP_REACHED",
                freq.freq_period.label,
            )
        )
    return out


def limit_reached(badge_id: int, limit: CounterLimit) -> FailedPrecondition:
    """The recipient already holds as many awards as the limit allows."""
    if limit.reason == "FREQUENCY_MAX_REACHED":
        what = f"at most {limit.limit} awards of badge {badge_id} in total (freq_max)"
    else:
        what = f"at most {limit.limit} awards of badge {badge_id} per {limit.label} (freq_cap)"
    return FailedPrecondition(
        f"the recipient already has {what}",
        reason=limit.reason,
        metadata={
            "badge_id": str(badge_id),
            "limit": str(limit.limit),
            "period": limit.label,
            "period_key": limit.period,
        },
    )


# --- Credly ------------------------------------------------------------------------------------


def template_awarded(template_id: str) -> FailedPrecondition:
    """Awards keep their template (revoked ones too): archive it instead of deleting it."""
    return FailedPrecondition(
        f"badge template {template_id} has awards; archive it instead",
        reason="BADGE_TEMPLATE_HAS_BADGES",
        metadata={"badge_template_id": template_id},
    )


def check_template_awardable(template: BadgeTemplate) -> None:
    """Only active templates can be awarded."""
    if template.state is not TemplateState.ACTIVE:
        state = template.state.value if template.state else ""
        raise FailedPrecondition(
            f"badge template {template.id} is {state}; only active templates can be awarded",
            reason="TEMPLATE_NOT_ACTIVE",
            metadata={"badge_template_id": template.id, "state": state},
        )


def template_expiry(template: BadgeTemplate, issued_at: dt.datetime) -> dt.datetime | None:
    """The template's default expiry: a fixed date, or issued_at plus a number of days."""
    if template.default_expires_at_type is ExpiryType.DATE:
        return template.default_expires_at
    if template.default_expires_at_type is ExpiryType.DURATION and template.default_expires_in_days:
        return issued_at + dt.timedelta(days=template.default_expires_in_days)
    return None


def dedupe_key(template: BadgeTemplate, rkey: str) -> str | None:
    """The key unique per org that stops a second live award of a template to a recipient;
    None when the template allows duplicates."""
    if template.allow_duplicate_badges:
        return None
    return f"{template.id}|{rkey}"


def duplicate_award(template_id: str, rkey: str) -> AlreadyExists:
    """Credly: the recipient already holds a live award of this template."""
    return AlreadyExists(
        f"the recipient already has badge template {template_id} (duplicates are not allowed)",
        reason="AWARD_DUPLICATE",
        metadata={"badge_template_id": template_id, "recipient": rkey},
    )


# --- Badgr -------------------------------------------------------------------------------------


def check_class_awardable(badge_class: BadgeClass) -> None:
    """Archived classes cannot be awarded."""
    if badge_class.archived:
        raise FailedPrecondition(
            f"badge class {badge_class.entity_id} is archived; unarchive it to award it",
            reason="BADGE_CLASS_ARCHIVED",
            metadata={"badge_class_id": badge_class.entity_id},
        )


def _add_months(at: dt.datetime, months: int) -> dt.datetime:
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def class_expiry(badge_class: BadgeClass, issued_at: dt.datetime) -> dt.datetime | None:
    """issued_at plus the class's expires amount and duration (months and years by the
    calendar, the day clamped to the month's end); None when the class sets none."""
    exp = badge_class.expires
    if exp.duration is None or exp.amount <= 0:
        return None
    try:
        if exp.duration is ExpiresDuration.DAYS:
            return issued_at + dt.timedelta(days=exp.amount)
        if exp.duration is ExpiresDuration.WEEKS:
            return issued_at + dt.timedelta(weeks=exp.amount)
        if exp.duration is ExpiresDuration.MONTHS:
            return _add_months(issued_at, exp.amount)
        return _add_months(issued_at, 12 * exp.amount)
    except (OverflowError, ValueError):
        # Past year 9999: as good as never.
        return None


def claim_code_failure(code: str, *, exists: bool, expired: bool) -> FailedPrecondition | None:
    """Why a claim code could not be used: expired or used up (None if it does not exist)."""
    if not exists:
        return None
    if expired:
        return FailedPrecondition(
            f"claim code {code} has expired",
            reason="CLAIM_CODE_EXPIRED",
            metadata={"claim_code": code},
        )
    return FailedPrecondition(
        f"claim code {code} has no uses left",
        reason="CLAIM_CODE_USED_UP",
        metadata={"claim_code": code},
    )


# --- Revocation --------------------------------------------------------------------------------


def already_revoked(award_id: str) -> FailedPrecondition:
    """An award is revoked once."""
    return FailedPrecondition(
        f"award {award_id} is already revoked", reason="ALREADY_REVOKED", metadata={"id": award_id}
    )


def no_definition(where: str) -> InvalidArgument:
    """An award names exactly one definition."""
    return InvalidArgument(where, "is required: one of badge_id, badge_template_id, badge_class_id")
