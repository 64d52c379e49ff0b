"""AwardService RecordProgress and ListRecipientBadgeStates (CrowdTwist badge progress): states
move forward by order and never back, the same state again is a no-op, unknown states and
badges are refused, tenancy and roles hold, concurrent calls stay consistent, and the list
shows every badge of the org (first state where nothing is recorded) with keyset paging."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.domain.awards import Recipient, RecipientKind
from badge_service.domain.badges import BadgeStateType
from badge_service.domain.errors import NotFound
from badge_service.store import badges as badge_store
from badge_service.store import progress as progress_store
from tests.support import Backend, Client, Org, expect_error

UNEARNED = pb.BADGE_STATE_TYPE_UNEARNED
IN_PROGRESS = pb.BADGE_STATE_TYPE_IN_PROGRESS
EARNED = pb.BADGE_STATE_TYPE_EARNED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def awards(client: Client) -> award_pb2_grpc.AwardServiceStub:
    """The AwardService stub of a client."""
    return client.stub(award_pb2_grpc.AwardServiceStub)


async def new_badge(
    org: Org, name: str, states: list[tuple[pb.BadgeStateType.ValueType, int]] | None = None
) -> int:
    """Creates a badge with the given (state, order) pairs (default: all three, 1..3)."""
    pairs = states or [(UNEARNED, 1), (IN_PROGRESS, 2), (EARNED, 3)]
    badge = await org.admin.badges.CreateBadge(
        pb.CreateBadgeRequest(
            badge=pb.Badge(
                name=name,
                title=name,
                badge_states=[pb.BadgeState(state=s, order=o) for s, o in pairs],
            )
        )
    )
    return badge.id


def member(value: str) -> apb.Recipient:
    """A recipient by member id."""
    return apb.Recipient(member_id=value)


async def record(
    org: Org, badge_id: int, recipient: apb.Recipient, state: pb.BadgeStateType.ValueType
) -> apb.RecipientBadgeState:
    """RecordProgress as the org's admin."""
    return await awards(org.admin).RecordProgress(
        apb.RecordProgressRequest(badge_id=badge_id, recipient=recipient, state=state)
    )


async def states(
    org: Org, recipient: apb.Recipient, **kw: object
) -> apb.ListRecipientBadgeStatesResponse:
    """ListRecipientBadgeStates as the org's reader."""
    return await awards(org.reader).ListRecipientBadgeStates(
        apb.ListRecipientBadgeStatesRequest(recipient=recipient, **kw)  # type: ignore[arg-type]
    )


async def test_progress_moves_forward_through_the_states(org: Org) -> None:
    badge = await new_badge(org, "attend")
    who = member("m-1")
    first = await record(org, badge, who, IN_PROGRESS)
    assert (first.badge_id, first.recipient, first.state, first.order) == (
        badge,
        who,
        IN_PROGRESS,
        2,
    )
    assert first.HasField("update_time")
    second = await record(org, badge, who, EARNED)
    assert (second.state, second.order) == (EARNED, 3)
    assert second.update_time.ToMicroseconds() >= first.update_time.ToMicroseconds()
    listed = await states(org, who)
    assert [(s.badge_id, s.state, s.order) for s in listed.states] == [(badge, EARNED, 3)]
    assert listed.states[0].update_time == second.update_time


async def test_a_state_may_be_skipped(org: Org) -> None:
    badge = await new_badge(org, "skip")
    got = await record(org, badge, member("m-1"), EARNED)
    assert (got.state, got.order) == (EARNED, 3)


async def test_progress_never_moves_back(org: Org) -> None:
    badge = await new_badge(org, "back")
    who = member("m-1")
    earned = await record(org, badge, who, EARNED)
    for state in (IN_PROGRESS, UNEARNED):
        got = await expect_error(
            record(org, badge, who, state),
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="PROGRESS_BACKWARDS",
        )
        assert got.info is not None
        assert dict(got.info.metadata) == {
            "badge_id": str(badge),
            "current_state": "EARNED",
            "requested_state": pb.BadgeStateType.Name(state).removeprefix("BADGE_STATE_TYPE_"),
        }
    listed = await states(org, who)
    assert [(s.state, s.update_time) for s in listed.states] == [(EARNED, earned.update_time)]


async def test_the_same_state_again_changes_nothing(org: Org) -> None:
    badge = await new_badge(org, "again")
    who = member("m-1")
    first = await record(org, badge, who, IN_PROGRESS)
    await asyncio.sleep(0.002)
    again = await record(org, badge, who, IN_PROGRESS)
    assert again == first  # same state, order and update_time: nothing was written


async def test_recording_the_first_state_records_it(org: Org) -> None:
    badge = await new_badge(org, "first")
    who = member("m-1")
    before = await states(org, who)
    assert not before.states[0].HasField("update_time")
    got = await record(org, badge, who, UNEARNED)
    assert (got.state, got.order) == (UNEARNED, 1) and got.HasField("update_time")
    after = await states(org, who)
    assert after.states[0].update_time == got.update_time


async def test_a_state_the_badge_does_not_have_is_invalid(org: Org) -> None:
    badge = await new_badge(org, "two", [(UNEARNED, 1), (EARNED, 2)])
    got = await expect_error(record(org, badge, member("m-1"), IN_PROGRESS), INVALID, field="state")
    assert "'in progress' is not a state of badge" in got.message
    await expect_error(record(org, badge, member("m-1"), 0), INVALID, field="state")  # type: ignore[arg-type]
    await expect_error(record(org, badge, member("m-1"), 42), INVALID, field="state")  # type: ignore[arg-type]


async def test_the_recipient_is_required_and_checked(org: Org) -> None:
    badge = await new_badge(org, "who")
    await expect_error(record(org, badge, apb.Recipient(), EARNED), INVALID, field="recipient")
    await expect_error(
        record(org, badge, apb.Recipient(email="not an email"), EARNED),
        INVALID,
        reason="INVALID_EMAIL",
        field="recipient.email",
    )
    await expect_error(
        record(org, badge, apb.Recipient(url="ftp://x"), EARNED), INVALID, field="recipient.url"
    )


async def test_an_email_recipient_is_one_person_whatever_the_case(org: Org) -> None:
    badge = await new_badge(org, "mail")
    got = await record(org, badge, apb.Recipient(email="  Ann@Example.COM "), IN_PROGRESS)
    assert got.recipient == apb.Recipient(email="ann@example.com")
    listed = await states(org, apb.Recipient(email="ann@EXAMPLE.com"))
    assert [(s.state, s.recipient.email) for s in listed.states] == [
        (IN_PROGRESS, "ann@example.com")
    ]
    await expect_error(
        record(org, badge, apb.Recipient(email="ANN@example.com"), UNEARNED),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROGRESS_BACKWARDS",
    )


async def test_unknown_and_other_orgs_badges_are_not_found(org: Org, other_org: Org) -> None:
    theirs = await new_badge(other_org, "theirs")
    for badge_id in (theirs, 999_999_999, 0):
        await expect_error(
            record(org, badge_id, member("m-1"), EARNED),
            grpc.StatusCode.NOT_FOUND,
            reason="NOT_FOUND",
        )
    # Nothing was recorded for the other org's badge.
    listed = await states(other_org, member("m-1"))
    assert [s.HasField("update_time") for s in listed.states] == [False]


async def test_a_reader_cannot_record_progress_but_can_list(org: Org) -> None:
    badge = await new_badge(org, "ro")
    await expect_error(
        awards(org.reader).RecordProgress(
            apb.RecordProgressRequest(badge_id=badge, recipient=member("m-1"), state=EARNED)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = await states(org, member("m-1"))
    assert [(s.badge_id, s.state, s.HasField("update_time")) for s in listed.states] == [
        (badge, UNEARNED, False)
    ]


async def test_concurrent_progress_ends_in_the_furthest_state(org: Org) -> None:
    badge = await new_badge(org, "race")
    who = member("m-race")
    wanted = [IN_PROGRESS, EARNED] * 10

    async def one(state: pb.BadgeStateType.ValueType) -> apb.RecipientBadgeState | str:
        try:
            return await record(org, badge, who, state)
        except grpc.aio.AioRpcError as err:
            return err.code().name

    results = await asyncio.gather(*(one(s) for s in wanted))
    for state, result in zip(wanted, results, strict=True):
        if isinstance(result, str):
            # Only a step back can fail: IN_PROGRESS after EARNED was recorded.
            assert (state, result) == (IN_PROGRESS, "FAILED_PRECONDITION")
        else:
            assert result.state == state
    assert all(not isinstance(r, str) for r in results[1::2])  # EARNED always succeeds
    listed = await states(org, who)
    assert [s.state for s in listed.states] == [EARNED]


async def test_list_shows_every_badge_with_the_first_state_by_default(
    org: Org, other_org: Org
) -> None:
    await new_badge(other_org, "not-mine")
    a = await new_badge(org, "a")
    # Listed out of order: the first state is the one of the lowest order.
    b = await new_badge(org, "b", [(EARNED, 9), (IN_PROGRESS, 4), (UNEARNED, 2)])
    c = await new_badge(org, "c", [(EARNED, 1)])
    who = member("m-1")
    recorded = await record(org, b, who, IN_PROGRESS)
    await record(org, a, member("someone-else"), EARNED)
    listed = await states(org, who)
    assert listed.total_size == 3 and listed.next_page_token == ""
    assert [(s.badge_id, s.state, s.order, s.recipient) for s in listed.states] == [
        (a, UNEARNED, 1, who),
        (b, IN_PROGRESS, 4, who),
        (c, EARNED, 1, who),
    ]
    assert [s.HasField("update_time") for s in listed.states] == [False, True, False]
    assert listed.states[1].update_time == recorded.update_time


async def test_list_pages_by_badge_id(org: Org) -> None:
    ids = [await new_badge(org, f"p{i}") for i in range(5)]
    who = apb.Recipient(url="https://example.com/people/1")
    await record(org, ids[3], who, EARNED)
    page1 = await states(org, who, page_size=2)
    assert [s.badge_id for s in page1.states] == ids[:2] and page1.total_size == 5
    page2 = await states(org, who, page_size=2, page_token=page1.next_page_token)
    assert [(s.badge_id, s.state) for s in page2.states] == [(ids[2], UNEARNED), (ids[3], EARNED)]
    page3 = await states(org, who, page_size=2, page_token=page2.next_page_token)
    assert [s.badge_id for s in page3.states] == ids[4:] and page3.next_page_token == ""
    assert page3.total_size == 5
    exact = await states(org, who, page_size=5)
    assert len(exact.states) == 5 and exact.next_page_token == ""


async def test_list_paging_errors(org: Org) -> None:
    for i in range(3):
        await new_badge(org, f"e{i}")
    page = await states(org, member("m-1"), page_size=1)
    # A token belongs to its recipient.
    await expect_error(
        states(org, member("m-2"), page_token=page.next_page_token), INVALID, field="page_token"
    )
    await expect_error(
        states(org, member("m-1"), page_token="garbage!"), INVALID, field="page_token"
    )
    await expect_error(states(org, member("m-1"), page_size=-1), INVALID, field="page_size")
    await expect_error(
        awards(org.reader).ListRecipientBadgeStates(apb.ListRecipientBadgeStatesRequest()),
        INVALID,
        field="recipient",
    )


async def test_list_of_an_org_without_badges_is_empty(org: Org) -> None:
    listed = await states(org, member("m-1"))
    assert (list(listed.states), listed.next_page_token, listed.total_size) == ([], "", 0)


async def test_progress_on_a_badge_deleted_meanwhile_is_not_found(
    backend: Backend, org: Org
) -> None:
    """A badge deleted between the read and the write (here: read, then deleted through the
    API) is NOT_FOUND, not an integrity error."""
    badge_id = await new_badge(org, "gone")
    async with backend.db.read() as conn:
        badge = await conn.run_sync(badge_store.get_badge, org.id, badge_id)
    await org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=badge_id))
    who = Recipient(RecipientKind.MEMBER_ID, "m-1")
    with pytest.raises(NotFound) as raised:
        await backend.db.run_write(
            progress_store.record_progress,
            org.id,
            badge,
            "member_id:m-1",
            who,
            BadgeStateType.EARNED,
            dt.datetime.now(dt.UTC),
        )
    assert raised.value.metadata == {"resource": "badge", "id": str(badge_id)}


async def test_an_award_of_a_badge_puts_its_recipient_in_the_earned_state(org: Org) -> None:
    badge_id = await new_badge(org, "awarded")
    untouched = await new_badge(org, "untouched")
    await record(org, badge_id, member("m-1"), IN_PROGRESS)
    await awards(org.admin).CreateAward(
        apb.CreateAwardRequest(award=apb.Award(badge_id=badge_id, recipient=member("m-1")))
    )
    listed = await states(org, member("m-1"))
    by_badge = {s.badge_id: (s.state, s.order) for s in listed.states}
    assert by_badge == {badge_id: (EARNED, 3), untouched: (UNEARNED, 1)}
    # A later progress record cannot move an earned recipient back.
    await expect_error(
        record(org, badge_id, member("m-1"), IN_PROGRESS),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="PROGRESS_BACKWARDS",
    )


async def test_a_batch_of_badge_awards_marks_every_recipient_earned(org: Org) -> None:
    badge_id = await new_badge(org, "batched")
    people = [member(f"b-{i}") for i in range(5)]
    await record(org, badge_id, people[0], IN_PROGRESS)
    requests = [
        apb.CreateAwardRequest(award=apb.Award(badge_id=badge_id, recipient=p))
        for p in [*people, people[1]]  # one recipient twice: one state row, one move
    ]
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=requests)
    )
    assert all(r.HasField("award") for r in reply.results)
    for p in people:
        (state,) = (await states(org, p)).states
        assert (state.badge_id, state.state, state.order) == (badge_id, EARNED, 3)
