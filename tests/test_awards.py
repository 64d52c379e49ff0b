"""badges.v1.AwardService, the core: CreateAward for each kind of definition with every
vendor rule (CrowdTwist earn window, enabled flag and frequency caps; Credly state, duplicates,
default expiry and badges_count; Badgr archived classes and expiry), RedeemClaimCode, GetAward,
RevokeAward, custom data, deletes of awarded definitions, bad input, tenancy and roles.
Concurrency, batches and lists are in test_awards_concurrency.py, test_awards_batch.py and
test_awards_list.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, common_pb2
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import custom_field_pb2 as cfpb
from tests.support import Client, Org, expect_error
from tests.test_badge_templates import templates
from tests.test_issuers import classes, create_class, create_issuer, small_class

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
DENIED = grpc.StatusCode.PERMISSION_DENIED
ACTIVE = apb.AWARD_STATE_ACTIVE
REVOKED = apb.AWARD_STATE_REVOKED
EXPIRED = apb.AWARD_STATE_EXPIRED
HEX24 = re.compile(r"^[0-9a-f]{24}$")
BASE_URL = "http://localhost:50051"


def awards(client: Client) -> award_pb2_grpc.AwardServiceStub:
    """The AwardService stub of a client."""
    return client.stub(award_pb2_grpc.AwardServiceStub)


def at(value: dt.datetime) -> Timestamp:
    """A Timestamp of an aware datetime."""
    out = Timestamp()
    out.FromDatetime(value)
    return out


def utc(value: Timestamp) -> dt.datetime:
    """The aware datetime of a Timestamp."""
    return value.ToDatetime(dt.UTC)


def member(member_id: str) -> apb.Recipient:
    """A recipient by member id."""
    return apb.Recipient(member_id=member_id)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct of plain values."""
    out = struct_pb2.Struct()
    out.update(value)
    return out


async def make_badge(org: Org, name: str = "badge_001", **overrides: Any) -> bpb.Badge:
    """A CrowdTwist badge with an earned state, earnable since 30 days ago; ``overrides`` set
    Badge fields (e.g. frequency=bpb.Frequency(...), is_enabled=False, date_end=...)."""
    fields: dict[str, Any] = {
        "date_start": at(dt.datetime.now(dt.UTC) - dt.timedelta(days=30)),
        "name": name,
        "title": "Game Attendance",
        "badge_states": [bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=1)],
    }
    fields.update(overrides)
    return await org.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=bpb.Badge(**fields)))


async def make_template(
    org: Org, name: str = "Archery Basics", **overrides: Any
) -> tpb.BadgeTemplate:
    """A Credly badge template, active unless ``overrides`` say otherwise."""
    fields: dict[str, Any] = {"name": name, "state": tpb.BADGE_TEMPLATE_STATE_ACTIVE}
    fields.update(overrides)
    return await templates(org.admin).CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(
            organization_id=org.uuid, badge_template=tpb.BadgeTemplate(**fields)
        )
    )


async def get_template(org: Org, template_id: str) -> tpb.BadgeTemplate:
    """A template as the reader sees it."""
    return await templates(org.reader).GetBadgeTemplate(
        tpb.GetBadgeTemplateRequest(organization_id=org.uuid, id=template_id)
    )


async def make_class(org: Org, name: str = "Math Expert", **overrides: Any) -> bcpb.BadgeClass:
    """A Badgr badge class of a new issuer."""
    issuer = await create_issuer(org.admin)
    return await create_class(org.admin, small_class(issuer.id, name, **overrides))


async def give(client: Client, **fields: Any) -> apb.Award:
    """CreateAward with the given Award fields."""
    return await awards(client).CreateAward(apb.CreateAwardRequest(award=apb.Award(**fields)))


def give_call(client: Client, **fields: Any) -> Any:
    """The CreateAward call, unawaited (for expect_error)."""
    return awards(client).CreateAward(apb.CreateAwardRequest(award=apb.Award(**fields)))


async def revoke(client: Client, award_id: str, reason: str = "issued by mistake") -> apb.Award:
    """RevokeAward."""
    return await awards(client).RevokeAward(apb.RevokeAwardRequest(id=award_id, reason=reason))


async def get_award(client: Client, award_id: str, **fields: Any) -> apb.Award:
    """GetAward."""
    return await awards(client).GetAward(apb.GetAwardRequest(id=award_id, **fields))


# --- CrowdTwist badges --------------------------------------------------------------------------


async def test_award_a_badge_round_trips(org: Org) -> None:
    badge = await make_badge(org)
    issued = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    before = dt.datetime.now(dt.UTC)
    got = await give(
        org.admin,
        badge_id=badge.id,
        recipient=member("m-42"),
        issued_at=at(issued),
        narrative="Attended the *final*",
        evidence=[apb.Evidence(url="https://example.com/ticket", narrative="ticket")],
    )
    assert HEX24.match(got.id)
    assert got.WhichOneof("definition") == "badge_id" and got.badge_id == badge.id
    assert got.recipient == member("m-42")
    assert utc(got.issued_at) == issued
    assert got.narrative == "Attended the *final*"
    assert list(got.evidence) == [
        apb.Evidence(url="https://example.com/ticket", narrative="ticket")
    ]
    assert got.state == ACTIVE
    assert not got.HasField("expires_at") and not got.HasField("revoke_time")
    assert got.open_badge_id == "" and not got.HasField("open_badge")
    assert utc(got.create_time) >= before - dt.timedelta(seconds=1)
    assert got.created_by > 0
    assert await get_award(org.reader, got.id) == got


async def test_issued_at_defaults_to_now(org: Org) -> None:
    badge = await make_badge(org)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    got = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    assert before <= utc(got.issued_at) <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert got.issued_at == got.create_time


async def test_disabled_badge_is_refused(org: Org) -> None:
    badge = await make_badge(org, is_enabled=False)
    await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=member("m")),
        FAILED,
        reason="BADGE_DISABLED",
    )
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 0


async def test_earn_window(org: Org) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=2)
    badge = await make_badge(org, date_start=at(start), date_end=at(end))
    # Inside the window (issued in the past): fine.
    inside = await give(
        org.admin,
        badge_id=badge.id,
        recipient=member("m"),
        issued_at=at(start + dt.timedelta(days=1)),
    )
    assert inside.state == ACTIVE
    # Now is past date_end; before date_start is before the window; date_end itself is out.
    for issued in (None, start - dt.timedelta(seconds=1), end):
        extra = {} if issued is None else {"issued_at": at(issued)}
        got = await expect_error(
            give_call(org.admin, badge_id=badge.id, recipient=member("m"), **extra),
            FAILED,
            reason="BADGE_NOT_EARNABLE",
        )
        assert got.info is not None and got.info.metadata["badge_id"] == str(badge.id)
    future = await make_badge(org, "future", date_start=at(now + dt.timedelta(days=1)))
    await expect_error(
        give_call(org.admin, badge_id=future.id, recipient=member("m")),
        FAILED,
        reason="BADGE_NOT_EARNABLE",
    )


async def test_freq_max(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=2))
    for _ in range(2):
        await give(org.admin, badge_id=badge.id, recipient=member("m"))
    got = await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=member("m")),
        FAILED,
        reason="FREQUENCY_MAX_REACHED",
    )
    assert got.info is not None
    assert (got.info.metadata["limit"], got.info.metadata["period"]) == ("2", "total")
    # Another recipient has its own count; an email recipient counts case-insensitively.
    await give(org.admin, badge_id=badge.id, recipient=member("other"))
    await give(org.admin, badge_id=badge.id, recipient=apb.Recipient(email="A@Example.com"))
    await give(org.admin, badge_id=badge.id, recipient=apb.Recipient(email=" a@example.COM "))
    await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=apb.Recipient(email="a@example.com")),
        FAILED,
        reason="FREQUENCY_MAX_REACHED",
    )
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 5


async def test_freq_cap_per_week(org: Org) -> None:
    # ISO weeks start on Monday: two Mondays in the past, a Tuesday of each week.
    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    monday = today - dt.timedelta(days=today.weekday() + 14)
    week1, week2 = monday + dt.timedelta(days=1), monday + dt.timedelta(days=8)
    start = monday - dt.timedelta(days=1)
    badge = await make_badge(
        org,
        date_start=at(start),
        frequency=bpb.Frequency(freq_cap=1, freq_period=bpb.FREQUENCY_PERIOD_WEEK, freq_max=5),
    )
    await give(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(week1))
    # Same week (Sunday at the end of it): capped.
    got = await expect_error(
        give_call(
            org.admin,
            badge_id=badge.id,
            recipient=member("m"),
            issued_at=at(monday + dt.timedelta(days=6, hours=11)),
        ),
        FAILED,
        reason="FREQUENCY_CAP_REACHED",
    )
    assert got.info is not None
    assert (got.info.metadata["limit"], got.info.metadata["period"]) == ("1", "week")
    # The next week: fine, once.
    await give(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(week2))
    await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(week2)),
        FAILED,
        reason="FREQUENCY_CAP_REACHED",
    )
    # A refused award took no slot of freq_max: 5 - 2 = 3 more weeks would still be allowed.
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(recipient=member("m")))
    assert listed.total_size == 2


@pytest.mark.parametrize(
    ("period", "same", "next_"),
    [
        (bpb.FREQUENCY_PERIOD_DAY, dt.timedelta(hours=5), dt.timedelta(days=1)),
        (bpb.FREQUENCY_PERIOD_MONTH, dt.timedelta(days=20), dt.timedelta(days=31)),
        (bpb.FREQUENCY_PERIOD_YEAR, dt.timedelta(days=200), dt.timedelta(days=366)),
    ],
)
async def test_freq_cap_other_periods(
    org: Org, period: bpb.FrequencyPeriod.ValueType, same: dt.timedelta, next_: dt.timedelta
) -> None:
    base = dt.datetime(2020, 1, 1, 1, 0, tzinfo=dt.UTC)
    badge = await make_badge(
        org, date_start=at(base), frequency=bpb.Frequency(freq_cap=1, freq_period=period)
    )
    await give(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(base))
    await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(base + same)),
        FAILED,
        reason="FREQUENCY_CAP_REACHED",
    )
    await give(org.admin, badge_id=badge.id, recipient=member("m"), issued_at=at(base + next_))


async def test_revoking_gives_a_cap_slot_back(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=1))
    first = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    await expect_error(
        give_call(org.admin, badge_id=badge.id, recipient=member("m")),
        FAILED,
        reason="FREQUENCY_MAX_REACHED",
    )
    await revoke(org.admin, first.id)
    second = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    assert second.state == ACTIVE


# --- Credly templates ---------------------------------------------------------------------------


async def test_award_a_template(org: Org) -> None:
    template = await make_template(org)
    got = await give(
        org.admin, badge_template_id=template.id, recipient=apb.Recipient(email="Ann@Example.com")
    )
    assert got.badge_template_id == template.id
    assert got.recipient == apb.Recipient(email="ann@example.com")
    assert not got.HasField("expires_at")
    assert (await get_template(org, template.id)).badges_count == 1
    # Upper-case template ids name the same template.
    other = await give(org.admin, badge_template_id=template.id.upper(), recipient=member("x"))
    assert other.badge_template_id == template.id


async def test_template_duplicates(org: Org) -> None:
    template = await make_template(org)
    first = await give(
        org.admin, badge_template_id=template.id, recipient=apb.Recipient(email="a@b.co")
    )
    got = await expect_error(
        give_call(
            org.admin, badge_template_id=template.id, recipient=apb.Recipient(email="A@B.CO")
        ),
        EXISTS,
        reason="AWARD_DUPLICATE",
    )
    assert got.info is not None and got.info.metadata["badge_template_id"] == template.id
    assert (await get_template(org, template.id)).badges_count == 1
    # After a revocation the recipient may be awarded again.
    await revoke(org.admin, first.id)
    assert (await get_template(org, template.id)).badges_count == 0
    await give(org.admin, badge_template_id=template.id, recipient=apb.Recipient(email="a@b.co"))
    assert (await get_template(org, template.id)).badges_count == 1
    # A template that allows duplicates takes any number.
    dup = await make_template(org, "Dup OK", allow_duplicate_badges=True)
    for _ in range(3):
        await give(org.admin, badge_template_id=dup.id, recipient=apb.Recipient(email="a@b.co"))
    assert (await get_template(org, dup.id)).badges_count == 3


@pytest.mark.parametrize("state", ["draft", "archived"])
async def test_inactive_templates_are_refused(org: Org, state: str) -> None:
    if state == "draft":
        template = await make_template(org, state=tpb.BADGE_TEMPLATE_STATE_DRAFT)
    else:
        template = await make_template(org)
        await templates(org.admin).ArchiveBadgeTemplate(
            tpb.ArchiveBadgeTemplateRequest(organization_id=org.uuid, id=template.id)
        )
    got = await expect_error(
        give_call(org.admin, badge_template_id=template.id, recipient=member("m")),
        FAILED,
        reason="TEMPLATE_NOT_ACTIVE",
    )
    assert got.info is not None and got.info.metadata["state"] == state
    assert (await get_template(org, template.id)).badges_count == 0


async def test_template_default_expiry(org: Org) -> None:
    by_days = await make_template(
        org,
        "Ninety",
        default_expires_at_type=tpb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
        default_expires_in_days=90,
    )
    issued = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(microsecond=0)
    got = await give(
        org.admin, badge_template_id=by_days.id, recipient=member("m"), issued_at=at(issued)
    )
    assert utc(got.expires_at) == issued + dt.timedelta(days=90)
    assert got.state == ACTIVE
    by_date = await make_template(
        org,
        "Fixed",
        default_expires_at_type=tpb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE,
        default_expires_at_date="2099-01-31",
    )
    got = await give(org.admin, badge_template_id=by_date.id, recipient=member("m"))
    assert utc(got.expires_at) == dt.datetime(2099, 1, 31, tzinfo=dt.UTC)
    # An expiry already past: the award is recorded, and shows as expired.
    old = await make_template(
        org,
        "Short",
        default_expires_at_type=tpb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
        default_expires_in_days=1,
    )
    got = await give(
        org.admin,
        badge_template_id=old.id,
        recipient=member("m"),
        issued_at=at(dt.datetime.now(dt.UTC) - dt.timedelta(days=3)),
    )
    assert got.state == EXPIRED
    assert (await get_award(org.reader, got.id)).state == EXPIRED


# --- Badgr classes ------------------------------------------------------------------------------


async def test_award_a_class(org: Org) -> None:
    bc = await make_class(org)
    for ref in (bc.entity_id, bc.id):
        got = await give(
            org.admin, badge_class_id=ref, recipient=apb.Recipient(url="https://example.com/me")
        )
        assert got.badge_class_id == bc.entity_id
        assert got.open_badge_id == f"{BASE_URL}/public/assertions/{got.id}"
        assert not got.HasField("expires_at")
        assert got.recipient == apb.Recipient(url="https://example.com/me")


@pytest.mark.parametrize(
    ("amount", "duration", "delta"),
    [
        (30, bcpb.EXPIRES_DURATION_DAYS, dt.timedelta(days=30)),
        (2, bcpb.EXPIRES_DURATION_WEEKS, dt.timedelta(weeks=2)),
    ],
)
async def test_class_expiry_days_weeks(
    org: Org, amount: int, duration: bcpb.ExpiresDuration.ValueType, delta: dt.timedelta
) -> None:
    bc = await make_class(org, expires=bcpb.Expires(amount=amount, duration=duration))
    issued = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    got = await give(
        org.admin, badge_class_id=bc.entity_id, recipient=member("m"), issued_at=at(issued)
    )
    assert utc(got.expires_at) == issued + delta


async def test_class_expiry_months_years(org: Org) -> None:
    issued = dt.datetime(2024, 1, 31, 10, 0, tzinfo=dt.UTC)
    months = await make_class(
        org, expires=bcpb.Expires(amount=1, duration=bcpb.EXPIRES_DURATION_MONTHS)
    )
    got = await give(
        org.admin, badge_class_id=months.entity_id, recipient=member("m"), issued_at=at(issued)
    )
    # January 31st plus a month is the last day of February (2024 is a leap year).
    assert utc(got.expires_at) == dt.datetime(2024, 2, 29, 10, 0, tzinfo=dt.UTC)
    assert got.state == EXPIRED
    years = await make_class(
        org, "Years", expires=bcpb.Expires(amount=100, duration=bcpb.EXPIRES_DURATION_YEARS)
    )
    got = await give(
        org.admin, badge_class_id=years.entity_id, recipient=member("m"), issued_at=at(issued)
    )
    assert utc(got.expires_at) == dt.datetime(2124, 1, 31, 10, 0, tzinfo=dt.UTC)
    assert got.state == ACTIVE


async def test_archived_class_is_refused(org: Org) -> None:
    bc = await make_class(org, archived=True)
    await expect_error(
        give_call(org.admin, badge_class_id=bc.entity_id, recipient=member("m")),
        FAILED,
        reason="BADGE_CLASS_ARCHIVED",
    )


# --- Claim codes ----------------------------------------------------------------------------------


async def new_code(org: Org, bc: bcpb.BadgeClass, **fields: Any) -> bcpb.ClaimCode:
    """One claim code of a class."""
    got = await classes(org.admin).CreateClaimCodes(
        bcpb.CreateClaimCodesRequest(id_or_entity_id=bc.entity_id, **fields)
    )
    return got.claim_codes[0]


def redeem_call(client: Client, bc: bcpb.BadgeClass, code: str, who: str = "m") -> Any:
    """RedeemClaimCode, unawaited."""
    return awards(client).RedeemClaimCode(
        apb.RedeemClaimCodeRequest(
            id_or_entity_id=bc.entity_id, claim_code=code, recipient=member(who)
        )
    )


async def uses_remaining(org: Org, bc: bcpb.BadgeClass) -> int:
    """The first claim code's uses_remaining."""
    got = await classes(org.reader).ListClaimCodes(
        bcpb.ListClaimCodesRequest(id_or_entity_id=bc.entity_id)
    )
    return got.claim_codes[0].uses_remaining


async def test_redeem_a_claim_code(org: Org) -> None:
    bc = await make_class(org, expires=bcpb.Expires(amount=10, duration=bcpb.EXPIRES_DURATION_DAYS))
    code = await new_code(org, bc, use_limit=2)
    got = await awards(org.admin).RedeemClaimCode(
        apb.RedeemClaimCodeRequest(
            id_or_entity_id=bc.id,
            claim_code=code.code,
            recipient=apb.Recipient(email="Kid@School.org"),
            narrative="At the fair",
            evidence=[apb.Evidence(url="https://example.com/photo")],
        )
    )
    assert got.badge_class_id == bc.entity_id and got.claim_code == code.code
    assert got.recipient == apb.Recipient(email="kid@school.org")
    assert got.narrative == "At the fair" and got.state == ACTIVE
    assert utc(got.expires_at) == utc(got.issued_at) + dt.timedelta(days=10)
    assert await uses_remaining(org, bc) == 1
    await redeem_call(org.admin, bc, code.code, "second")
    assert await uses_remaining(org, bc) == 0
    got_err = await expect_error(
        redeem_call(org.admin, bc, code.code, "third"), FAILED, reason="CLAIM_CODE_USED_UP"
    )
    assert got_err.info is not None and got_err.info.metadata["claim_code"] == code.code
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_class_id=bc.entity_id))
    assert listed.total_size == 2


async def test_redeem_refusals(org: Org, other_org: Org) -> None:
    bc = await make_class(org)
    # A code that expires soon after it is made: the margin is for a loaded machine, since
    # the server refuses an expiry already past when the request arrives.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    expired = await new_code(org, bc, expires_at=at(expires))
    await expect_error(redeem_call(org.admin, bc, "NOSUCHCODE12"), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(redeem_call(org.admin, bc, ""), INVALID, field="claim_code")
    await expect_error(
        awards(org.admin).RedeemClaimCode(
            apb.RedeemClaimCodeRequest(id_or_entity_id=bc.entity_id, claim_code=expired.code)
        ),
        INVALID,
        field="recipient",
    )
    # Another org's class is unknown to this one.
    await expect_error(
        redeem_call(other_org.admin, bc, expired.code), NOT_FOUND, reason="NOT_FOUND"
    )
    # Once the clock has passed its expiry (waited for, whatever the checks above took):
    await asyncio.sleep((expires - dt.datetime.now(dt.UTC)).total_seconds() + 0.05)
    assert dt.datetime.now(dt.UTC) > expires
    await expect_error(
        redeem_call(org.admin, bc, expired.code), FAILED, reason="CLAIM_CODE_EXPIRED"
    )
    assert await uses_remaining(org, bc) == 1
    # An archived class's codes cannot be redeemed, and no use is taken.
    live = await make_class(org, "Other")
    code = await new_code(org, live)
    await classes(org.admin).UpdateBadgeClass(
        bcpb.UpdateBadgeClassRequest(
            badge_class=bcpb.BadgeClass(id=live.id, archived=True),
            update_mask=field_mask_pb2.FieldMask(paths=["archived"]),
        )
    )
    await expect_error(
        redeem_call(org.admin, live, code.code), FAILED, reason="BADGE_CLASS_ARCHIVED"
    )
    assert await uses_remaining(org, live) == 1
    await expect_error(redeem_call(org.reader, live, code.code), DENIED)


# --- Get and revoke -------------------------------------------------------------------------------


async def test_revoke(org: Org) -> None:
    badge = await make_badge(org)
    award = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    got = await revoke(org.admin, award.id, "  Cheated at the game  ")
    assert got.state == REVOKED and got.revocation_reason == "Cheated at the game"
    assert utc(got.revoke_time) >= before
    assert await get_award(org.reader, award.id) == got
    again = await expect_error(
        awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id=award.id, reason="twice")),
        FAILED,
        reason="ALREADY_REVOKED",
    )
    assert again.info is not None and again.info.metadata["id"] == award.id
    assert (await get_award(org.reader, award.id)).revocation_reason == "Cheated at the game"


async def test_revoke_bad_input(org: Org, other_org: Org) -> None:
    badge = await make_badge(org)
    award = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    for reason in ("", "   "):
        await expect_error(
            awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id=award.id, reason=reason)),
            INVALID,
            field="reason",
        )
    await expect_error(
        awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id="", reason="x")),
        INVALID,
        field="id",
    )
    for unknown in ("0" * 24, "not-an-id"):
        await expect_error(
            awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id=unknown, reason="x")),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
    await expect_error(
        awards(other_org.admin).RevokeAward(apb.RevokeAwardRequest(id=award.id, reason="x")),
        NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        awards(org.reader).RevokeAward(apb.RevokeAwardRequest(id=award.id, reason="x")),
        DENIED,
        reason="WRITE_REQUIRES_ADMIN",
    )
    assert (await get_award(org.reader, award.id)).state == ACTIVE


async def test_get_award_errors(org: Org, other_org: Org) -> None:
    badge = await make_badge(org)
    award = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    await expect_error(get_award(org.reader, ""), INVALID, field="id")
    await expect_error(get_award(org.reader, "f" * 24), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(get_award(other_org.admin, award.id), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(get_award(org.reader, award.id, view=7), INVALID, field="view")
    # The Open Badges view of a badge award has no assertion (only class awards do).
    got = await get_award(org.reader, award.id, view=apb.AWARD_VIEW_OPEN_BADGES_V2)
    assert not got.HasField("open_badge")


# --- Custom data ----------------------------------------------------------------------------------


async def test_custom_data(org: Org) -> None:
    badge = await make_badge(org)
    plain = await give(
        org.admin, badge_id=badge.id, recipient=member("m"), custom_data=struct({"any": "thing"})
    )
    # Without custom fields, any data is kept.
    assert dict(plain.custom_data) == {"any": "thing"}
    await org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(
            custom_field=cfpb.CustomField(name="seat", data_type=common_pb2.DATA_TYPE_INTEGER)
        )
    )
    await org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(
            custom_field=cfpb.CustomField(
                name="venue",
                data_type=common_pb2.DATA_TYPE_STRING,
                is_mandatory=True,
                default_value="home",
            )
        )
    )
    got = await give(
        org.admin, badge_id=badge.id, recipient=member("m"), custom_data=struct({"seat": "12"})
    )
    assert dict(got.custom_data) == {"seat": 12, "venue": "home"}
    await expect_error(
        give_call(
            org.admin,
            badge_id=badge.id,
            recipient=member("m"),
            custom_data=struct({"seat": "twelve"}),
        ),
        INVALID,
        reason="EXTRA_DATA_TYPE_MISMATCH",
        field="award.custom_data.seat",
    )
    await expect_error(
        give_call(
            org.admin, badge_id=badge.id, recipient=member("m"), custom_data=struct({"row": 1})
        ),
        INVALID,
        reason="UNKNOWN_CUSTOM_FIELD",
        field="award.custom_data.row",
    )


# --- Deleting awarded definitions -----------------------------------------------------------------


async def test_delete_awarded_badge(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=1))
    award = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    await revoke(org.admin, award.id)
    # Revoked awards still keep their badge.
    await expect_error(
        org.admin.badges.DeleteBadge(bpb.DeleteBadgeRequest(id=badge.id)),
        FAILED,
        reason="BADGE_AWARDED",
    )
    assert (await get_award(org.reader, award.id)).badge_id == badge.id
    unused = await make_badge(org, "unused")
    await org.admin.badges.DeleteBadge(bpb.DeleteBadgeRequest(id=unused.id))


async def test_delete_awarded_template(org: Org) -> None:
    template = await make_template(org)
    award = await give(org.admin, badge_template_id=template.id, recipient=member("m"))
    call = templates(org.admin).DeleteBadgeTemplate(
        tpb.DeleteBadgeTemplateRequest(organization_id=org.uuid, id=template.id)
    )
    await expect_error(call, FAILED, reason="BADGE_TEMPLATE_HAS_BADGES")
    await revoke(org.admin, award.id)
    assert (await get_template(org, template.id)).badges_count == 0
    call = templates(org.admin).DeleteBadgeTemplate(
        tpb.DeleteBadgeTemplateRequest(organization_id=org.uuid, id=template.id)
    )
    await expect_error(call, FAILED, reason="BADGE_TEMPLATE_HAS_BADGES")
    assert (await get_award(org.reader, award.id)).state == REVOKED


async def test_delete_awarded_class(org: Org) -> None:
    bc = await make_class(org)
    award = await give(org.admin, badge_class_id=bc.entity_id, recipient=member("m"))
    await revoke(org.admin, award.id)
    got = await expect_error(
        classes(org.admin).DeleteBadgeClass(bcpb.DeleteBadgeClassRequest(id_or_entity_id=bc.id)),
        FAILED,
        reason="BADGE_CLASS_AWARDED",
    )
    assert got.info is not None and got.info.metadata["award_count"] == "1"
    await classes(org.admin).DeleteBadgeClass(
        bcpb.DeleteBadgeClassRequest(id_or_entity_id=bc.id, cascade=True)
    )
    await expect_error(get_award(org.reader, award.id), NOT_FOUND, reason="NOT_FOUND")


# --- Bad input ------------------------------------------------------------------------------------


async def _bad_input_cases(org: Org) -> list[tuple[dict[str, Any], str]]:
    badge = await make_badge(org)
    future = at(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    m = member("m")
    return [
        ({"recipient": m}, "award.badge_id"),
        ({"badge_id": badge.id}, "award.recipient"),
        ({"badge_id": badge.id, "recipient": apb.Recipient()}, "award.recipient"),
        ({"badge_id": badge.id, "recipient": member("  ")}, "award.recipient.member_id"),
        ({"badge_id": badge.id, "recipient": member("x" * 256)}, "award.recipient.member_id"),
        (
            {"badge_id": badge.id, "recipient": apb.Recipient(email="not-an-email")},
            "award.recipient.email",
        ),
        ({"badge_id": badge.id, "recipient": apb.Recipient(email="a@b")}, "award.recipient.email"),
        (
            {"badge_id": badge.id, "recipient": apb.Recipient(url="ftp://x.org")},
            "award.recipient.url",
        ),
        ({"badge_id": badge.id, "recipient": m, "issued_at": future}, "award.issued_at"),
        (
            {"badge_id": badge.id, "recipient": m, "issued_at": Timestamp(seconds=-(10**12))},
            "award.issued_at",
        ),
        ({"badge_id": badge.id, "recipient": m, "narrative": "x" * 10_001}, "award.narrative"),
        ({"badge_id": badge.id, "recipient": m, "evidence": [apb.Evidence()]}, "award.evidence[0]"),
        (
            {"badge_id": badge.id, "recipient": m, "evidence": [apb.Evidence(url="nope")]},
            "award.evidence[0].url",
        ),
        ({"badge_template_id": "not-a-uuid", "recipient": m}, "award.badge_template_id"),
        ({"badge_class_id": "", "recipient": m}, "award.badge_class_id"),
    ]


async def test_bad_input(org: Org) -> None:
    for fields, field in await _bad_input_cases(org):
        await expect_error(give_call(org.admin, **fields), INVALID, field=field)


async def test_unknown_definitions(org: Org, other_org: Org) -> None:
    m = member("m")
    theirs_badge = await make_badge(other_org)
    theirs_template = await make_template(other_org)
    theirs_class = await make_class(other_org)
    for fields in (
        {"badge_id": 10**12},
        {"badge_id": theirs_badge.id},
        {"badge_template_id": "3f1c7c42-3f0b-4d8e-9a55-0b6f4c8b1e01"},
        {"badge_template_id": theirs_template.id},
        {"badge_class_id": "0" * 24},
        {"badge_class_id": "no such thing"},
        {"badge_class_id": theirs_class.entity_id},
        {"badge_class_id": theirs_class.id},
    ):
        await expect_error(
            give_call(org.admin, recipient=m, **fields), NOT_FOUND, reason="NOT_FOUND"
        )


async def test_readers_cannot_write(org: Org) -> None:
    badge = await make_badge(org)
    bc = await make_class(org)
    code = await new_code(org, bc)
    m = member("m")
    stub = awards(org.reader)
    for call in (
        stub.CreateAward(apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=m))),
        stub.BatchCreateAwards(
            apb.BatchCreateAwardsRequest(
                requests=[apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=m))]
            )
        ),
        stub.RedeemClaimCode(
            apb.RedeemClaimCodeRequest(
                id_or_entity_id=bc.entity_id, claim_code=code.code, recipient=m
            )
        ),
        stub.RevokeAward(apb.RevokeAwardRequest(id="0" * 24, reason="x")),
    ):
        await expect_error(call, DENIED, reason="WRITE_REQUIRES_ADMIN")
    listed = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 0
    assert await uses_remaining(org, bc) == 1


async def test_tenancy(org: Org, other_org: Org) -> None:
    badge = await make_badge(org)
    award = await give(org.admin, badge_id=badge.id, recipient=member("m"))
    theirs = awards(other_org.admin)
    await expect_error(
        theirs.GetAward(apb.GetAwardRequest(id=award.id)), NOT_FOUND, reason="NOT_FOUND"
    )
    await expect_error(
        theirs.ListAwards(apb.ListAwardsRequest(badge_id=badge.id)), NOT_FOUND, reason="NOT_FOUND"
    )
    mine = await theirs.ListAwards(apb.ListAwardsRequest(recipient=member("m")))
    assert mine.total_size == 0 and list(mine.awards) == []
    await expect_error(
        theirs.CreateAward(
            apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("m")))
        ),
        NOT_FOUND,
        reason="NOT_FOUND",
    )
