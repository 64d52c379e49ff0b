"""BatchCreateAwards: one result per request in order, each request succeeding or failing on
its own (with the status a single call would have had), limits applied in request order within
the batch, and 10,000 awards in one call (timed)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import grpc
from google.rpc import error_details_pb2, status_pb2

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from tests.support import Org, expect_error
from tests.test_awards import (
    ACTIVE,
    at,
    awards,
    get_template,
    make_badge,
    make_class,
    make_template,
    member,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def error_of(status: status_pb2.Status) -> tuple[str, str, tuple[str, ...]]:
    """(code name, ErrorInfo reason, BadRequest fields) of a per-request error."""
    reason, fields = "", ()
    # The message a single call would have carried is there too.
    assert status.message
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "badges.v1"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = tuple(v.field for v in bad.field_violations)
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    return code.name, reason, fields


def req(**fields: object) -> apb.CreateAwardRequest:
    """One request of a batch."""
    return apb.CreateAwardRequest(award=apb.Award(**fields))  # type: ignore[arg-type]


async def test_batch_mixes_successes_and_failures(org: Org, other_org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=1))
    template = await make_template(org)
    draft = await make_template(org, "Draft", state=1)
    bc = await make_class(org)
    theirs = await make_badge(other_org)
    requests = [
        req(badge_id=badge.id, recipient=member("a")),  # 0 ok
        req(badge_id=badge.id, recipient=member("a")),  # 1 capped by 0
        req(badge_template_id=template.id, recipient=member("a")),  # 2 ok
        req(badge_template_id=template.id, recipient=member("a")),  # 3 duplicate of 2
        req(badge_class_id=bc.entity_id, recipient=apb.Recipient(email="bad")),  # 4 bad email
        req(recipient=member("a")),  # 5 no definition
        req(badge_id=theirs.id, recipient=member("a")),  # 6 another org's badge
        req(badge_template_id=draft.id, recipient=member("a")),  # 7 draft
        req(badge_class_id=bc.id, recipient=member("b")),  # 8 ok
        req(badge_id=badge.id, recipient=member("b")),  # 9 ok (own count)
    ]
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=requests)
    )
    assert len(reply.results) == 10
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == [
        "award",
        "error",
        "award",
        "error",
        "error",
        "error",
        "error",
        "error",
        "award",
        "award",
    ]
    errors = {i: error_of(r.error) for i, r in enumerate(reply.results) if r.HasField("error")}
    assert errors == {
        1: ("FAILED_PRECONDITION", "FREQUENCY_MAX_REACHED", ()),
        3: ("ALREADY_EXISTS", "AWARD_DUPLICATE", ()),
        4: ("INVALID_ARGUMENT", "INVALID_EMAIL", ("requests[4].award.recipient.email",)),
        5: ("INVALID_ARGUMENT", "INVALID_FIELD", ("requests[5].award.badge_id",)),
        6: ("NOT_FOUND", "NOT_FOUND", ()),
        7: ("FAILED_PRECONDITION", "TEMPLATE_NOT_ACTIVE", ()),
    }
    made = [r.award for r in reply.results if r.HasField("award")]
    assert [a.recipient.member_id for a in made] == ["a", "a", "b", "b"]
    assert made[0].badge_id == badge.id and made[1].badge_template_id == template.id
    assert made[2].badge_class_id == bc.entity_id and made[3].badge_id == badge.id
    assert all(a.state == ACTIVE for a in made)
    # Each reply is what GetAward shows, and ids are in request (creation) order.
    for a in made:
        assert await awards(org.reader).GetAward(apb.GetAwardRequest(id=a.id)) == a
    assert [a.id for a in made] == sorted(a.id for a in made)
    assert (await get_template(org, template.id)).badges_count == 1


async def test_batch_request_limits(org: Org) -> None:
    badge = await make_badge(org)
    stub = awards(org.admin)
    await expect_error(
        stub.BatchCreateAwards(apb.BatchCreateAwardsRequest()), INVALID, field="requests"
    )
    too_many = [req(badge_id=badge.id, recipient=member("a"))] * 1_001
    await expect_error(
        stub.BatchCreateAwards(apb.BatchCreateAwardsRequest(requests=too_many)),
        INVALID,
        reason="LIMIT_EXCEEDED",
        field="requests",
    )
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 0


async def test_batch_of_1000_the_most_one_call_takes(org: Org) -> None:
    template = await make_template(org)
    bc = await make_class(org)
    # Half to a Credly template (dedupe keys, badges_count), half to a Badgr class.
    requests = [
        req(badge_template_id=template.id, recipient=member(f"t{i}"))
        if i % 2 == 0
        else req(badge_class_id=bc.entity_id, recipient=apb.Recipient(email=f"c{i}@example.com"))
        for i in range(1_000)
    ]
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=requests), timeout=600
    )
    assert len(reply.results) == 1_000
    assert all(r.HasField("award") for r in reply.results)
    assert [r.award.recipient.member_id for r in reply.results[:4:2]] == ["t0", "t2"]
    assert reply.results[999].award.recipient.email == "c999@example.com"
    assert len({r.award.id for r in reply.results}) == 1_000
    assert (await get_template(org, template.id)).badges_count == 500
    listed = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(badge_class_id=bc.id, page_size=1)
    )
    assert listed.total_size == 500


async def test_batch_of_capped_awards_counts_in_order(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=3))
    requests = [req(badge_id=badge.id, recipient=member(f"m{i % 10}")) for i in range(100)]
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=requests)
    )
    # The first three requests of each recipient win.
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["award"] * 30 + ["error"] * 70
    reasons = Counter(error_of(r.error)[1] for r in reply.results if r.HasField("error"))
    assert reasons == Counter({"FREQUENCY_MAX_REACHED": 70})


async def test_batch_with_cap_and_max_gives_back_slots(org: Org) -> None:
    # freq_max 3 in total, at most 2 a week: a request refused by the weekly cap must not
    # keep the freq_max slot it took first.
    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    monday = today - dt.timedelta(days=today.weekday() + 14)
    week1, week2 = at(monday + dt.timedelta(days=1)), at(monday + dt.timedelta(days=8))
    badge = await make_badge(
        org,
        date_start=at(monday - dt.timedelta(days=1)),
        frequency=bpb.Frequency(freq_cap=2, freq_period=bpb.FREQUENCY_PERIOD_WEEK, freq_max=3),
    )
    issued = [week1, week1, week1, week1, week2, week2]
    requests = [req(badge_id=badge.id, recipient=member("m"), issued_at=i) for i in issued]
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=requests)
    )
    outcome = ["ok" if r.HasField("award") else error_of(r.error)[1] for r in reply.results]
    assert outcome == [
        "ok",
        "ok",
        "FREQUENCY_CAP_REACHED",
        "FREQUENCY_CAP_REACHED",
        "ok",
        "FREQUENCY_MAX_REACHED",
    ]
    # The counters are exact afterwards: a single award is refused by freq_max too.
    await expect_error(
        awards(org.admin).CreateAward(req(badge_id=badge.id, recipient=member("m"))),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="FREQUENCY_MAX_REACHED",
    )
