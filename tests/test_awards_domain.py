"""The pure rules of domain/awards.py: recipient normalisation, frequency period buckets
(ISO weeks across a year end), expiry arithmetic (month ends, leap years, far futures) and
award states."""

from __future__ import annotations

import datetime as dt

import pytest

from badge_service.domain import awards as domain
from badge_service.domain.awards import Award, AwardKind, AwardState, Recipient, RecipientKind
from badge_service.domain.badge_classes import BadgeClass, Expires, ExpiresDuration
from badge_service.domain.badges import FrequencyPeriod
from badge_service.domain.errors import InvalidArgument

UTC = dt.UTC


def day(year: int, month: int, d: int) -> dt.datetime:
    """Midnight UTC of a date."""
    return dt.datetime(year, month, d, tzinfo=UTC)


def test_recipient_keys_are_normalised() -> None:
    key = domain.recipient_key
    assert key(Recipient(RecipientKind.EMAIL, " Ann@Example.COM ")) == "email:ann@example.com"
    assert key(Recipient(RecipientKind.MEMBER_ID, " 42 ")) == "member_id:42"
    assert key(Recipient(RecipientKind.MEMBER_ID, "Ab")) == "member_id:Ab"
    assert key(Recipient(RecipientKind.URL, "https://x.org/A")) == "url:https://x.org/A"
    back = domain.parse_recipient_key("url:https://x.org/a:b")
    assert back == Recipient(RecipientKind.URL, "https://x.org/a:b")


@pytest.mark.parametrize(
    ("when", "period", "key"),
    [
        (dt.datetime(2026, 11, 23, 0, 0, tzinfo=UTC), FrequencyPeriod.WEEK, "week:2026-W48"),
        (dt.datetime(2026, 11, 29, 23, 59, tzinfo=UTC), FrequencyPeriod.WEEK, "week:2026-W48"),
        (dt.datetime(2026, 11, 30, 0, 0, tzinfo=UTC), FrequencyPeriod.WEEK, "week:2026-W49"),
        # 2027-01-01 is a Friday: still ISO week 53 of 2026.
        (dt.datetime(2027, 1, 1, 12, 0, tzinfo=UTC), FrequencyPeriod.WEEK, "week:2026-W53"),
        (dt.datetime(2026, 2, 28, 23, 0, tzinfo=UTC), FrequencyPeriod.DAY, "day:2026-02-28"),
        (dt.datetime(2026, 2, 28, 23, 0, tzinfo=UTC), FrequencyPeriod.MONTH, "month:2026-02"),
        (dt.datetime(2026, 2, 28, 23, 0, tzinfo=UTC), FrequencyPeriod.YEAR, "year:2026"),
        # Buckets are UTC whatever the offset the time was given in.
        (
            dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            FrequencyPeriod.MONTH,
            "month:2026-02",
        ),
    ],
)
def test_period_keys(when: dt.datetime, period: FrequencyPeriod, key: str) -> None:
    assert domain.period_key(period, when) == key


@pytest.mark.parametrize(
    ("amount", "duration", "issued", "expires"),
    [
        (
            1,
            ExpiresDuration.MONTHS,
            day(2025, 1, 31),
            day(2025, 2, 28),
        ),
        (
            13,
            ExpiresDuration.MONTHS,
            day(2024, 12, 15),
            day(2026, 1, 15),
        ),
        (
            1,
            ExpiresDuration.YEARS,
            day(2024, 2, 29),
            day(2025, 2, 28),
        ),
        (
            3,
            ExpiresDuration.DAYS,
            day(2024, 2, 27),
            day(2024, 3, 1),
        ),
        (
            1,
            ExpiresDuration.WEEKS,
            day(2024, 1, 1),
            day(2024, 1, 8),
        ),
        # Past year 9999 is "never".
        (9999, ExpiresDuration.YEARS, day(2024, 1, 1), None),
        (0, ExpiresDuration.DAYS, day(2024, 1, 1), None),
    ],
)
def test_class_expiry(
    amount: int, duration: ExpiresDuration, issued: dt.datetime, expires: dt.datetime | None
) -> None:
    bc = BadgeClass(name="c", expires=Expires(amount, duration))
    assert domain.class_expiry(bc, issued) == expires
    assert domain.class_expiry(BadgeClass(name="c"), issued) is None


def test_award_state() -> None:
    now = day(2026, 1, 1)
    award = Award(kind=AwardKind.BADGE, recipient=Recipient(RecipientKind.MEMBER_ID, "m"))
    assert award.state(now) is AwardState.ACTIVE
    award.expires_at = now
    assert award.state(now) is AwardState.EXPIRED
    assert award.state(now - dt.timedelta(microseconds=1)) is AwardState.ACTIVE
    award.revoked_at = now - dt.timedelta(days=1)
    assert award.state(now) is AwardState.REVOKED


def test_check_details_fills_defaults_and_names_fields() -> None:
    now = day(2026, 1, 1)
    award = Award(kind=AwardKind.BADGE, recipient=Recipient(RecipientKind.EMAIL, " A@B.CO "))
    domain.check_details(award, now=now, prefix="award")
    assert award.issued_at == now and len(award.salt) == 16
    assert award.recipient == Recipient(RecipientKind.EMAIL, "a@b.co")
    bad = Award(kind=AwardKind.BADGE, recipient=Recipient(RecipientKind.MEMBER_ID, "a\x00"))
    with pytest.raises(InvalidArgument) as err:
        domain.check_details(bad, now=now, prefix="")
    assert err.value.field == "recipient.member_id"
    nul = Award(
        kind=AwardKind.BADGE,
        recipient=Recipient(RecipientKind.MEMBER_ID, "m"),
        custom_data={"k": "a\x00"},
    )
    with pytest.raises(InvalidArgument) as err:
        domain.check_details(nul, now=now, prefix="award")
    assert err.value.field == "award.custom_data"
