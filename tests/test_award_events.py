"""AwardService WatchAwards: the org's award, revoke and progress events from the moment of
subscription, in order with strictly increasing sequences, exactly once, never another org's;
concurrent writers; events written through another server (polling); the stream ends when
the client cancels and, with UNAVAILABLE, when the server shuts down."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy.engine import Connection

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.config import Settings
from badge_service.domain.awards import Recipient, RecipientKind
from badge_service.domain.errors import InvalidArgument
from badge_service.server import start
from badge_service.service.watch import hub_of
from badge_service.store import badges as badge_store
from badge_service.store import events
from badge_service.store import progress as progress_store
from tests.support import Backend, Client, Org, details_of
from tests.test_progress import EARNED, IN_PROGRESS, UNEARNED, awards, member, new_badge, record

PROGRESS = apb.AWARD_EVENT_TYPE_PROGRESS
AWARDED = apb.AWARD_EVENT_TYPE_AWARDED
REVOKED = apb.AWARD_EVENT_TYPE_REVOKED
# How long a test waits for an event: generous, for a loaded machine. Tests that must see
# an event arrive without polling set the poll interval to NO_POLL, far beyond it.
READ_TIMEOUT = 30.0
NO_POLL = 3600.0
# The grace period of a shutdown that should find the server quiet at once; it ends with a
# warning, which the test looks for, if an open watch kept it waiting.
DRAIN_LIMIT = 60.0


@dataclass
class Watch:
    """An open WatchAwards stream and the sequence it was subscribed after."""

    call: grpc.aio.UnaryStreamCall
    after: int

    async def take(self, n: int) -> list[apb.AwardEvent]:
        """The next ``n`` events (fails if the stream ends or stalls first)."""
        out: list[apb.AwardEvent] = []
        for _ in range(n):
            event = await asyncio.wait_for(self.call.read(), READ_TIMEOUT)
            assert event is not grpc.aio.EOF, f"stream ended after {len(out)} events"
            out.append(event)
        return out


@asynccontextmanager
async def watching(client: Client, after_sequence: int = 0) -> AsyncIterator[Watch]:
    """Subscribes and waits for the initial metadata, which the server sends once the
    subscription point is fixed; cancels the stream on exit."""
    call = awards(client).WatchAwards(apb.WatchAwardsRequest(after_sequence=after_sequence))
    try:
        metadata = dict(await call.initial_metadata())
        yield Watch(call, int(metadata["x-watch-after-sequence"]))
    finally:
        call.cancel()


def progress_of(events: list[apb.AwardEvent]) -> list[tuple[int, str, int, int]]:
    """(badge, member id, state, order) of progress events."""
    out: list[tuple[int, str, int, int]] = []
    for e in events:
        assert e.type == PROGRESS and not e.HasField("award"), e
        p = e.progress
        out.append((p.badge_id, p.recipient.member_id, p.state, p.order))
    return out


async def test_progress_events_arrive_in_order(org: Org) -> None:
    b1 = await new_badge(org, "b1")
    b2 = await new_badge(org, "b2", [(UNEARNED, 1), (EARNED, 5)])
    async with watching(org.admin) as watch:
        r1 = await record(org, b1, member("m-1"), IN_PROGRESS)
        await record(org, b2, member("m-2"), EARNED)
        await record(org, b1, member("m-1"), EARNED)
        events = await watch.take(3)
    assert [e.sequence for e in events] == [watch.after + 1, watch.after + 2, watch.after + 3]
    assert progress_of(events) == [
        (b1, "m-1", IN_PROGRESS, 2),
        (b2, "m-2", EARNED, 5),
        (b1, "m-1", EARNED, 3),
    ]
    assert events[0].progress == r1
    assert events[0].time == r1.update_time


async def test_events_before_the_subscription_are_not_delivered(org: Org) -> None:
    badge = await new_badge(org, "before")
    await record(org, badge, member("early-1"), IN_PROGRESS)
    await record(org, badge, member("early-2"), EARNED)
    async with watching(org.admin) as watch:
        assert watch.after >= 2
        await record(org, badge, member("late"), IN_PROGRESS)
        (event,) = await watch.take(1)
    assert event.sequence == watch.after + 1
    assert progress_of([event]) == [(badge, "late", IN_PROGRESS, 2)]


async def test_a_reconnect_resumes_after_the_last_sequence_seen(org: Org) -> None:
    badge = await new_badge(org, "resume")
    async with watching(org.admin) as first:
        await record(org, badge, member("m-1"), IN_PROGRESS)
        (seen,) = await first.take(1)
    # Written while no stream is open: a resumed stream still delivers them, in order.
    await record(org, badge, member("m-2"), IN_PROGRESS)
    await record(org, badge, member("m-1"), EARNED)
    async with watching(org.reader, after_sequence=seen.sequence) as second:
        assert second.after == seen.sequence
        missed = await second.take(2)
    assert [e.sequence for e in missed] == [seen.sequence + 1, seen.sequence + 2]
    assert progress_of(missed) == [(badge, "m-2", IN_PROGRESS, 2), (badge, "m-1", EARNED, 3)]


async def test_resuming_beyond_the_current_sequence_is_invalid(org: Org) -> None:
    badge = await new_badge(org, "beyond")
    await record(org, badge, member("m-1"), IN_PROGRESS)
    for bad in (2, -1):
        call = awards(org.admin).WatchAwards(apb.WatchAwardsRequest(after_sequence=bad))
        try:
            await call.read()
        except grpc.aio.AioRpcError as err:
            got = details_of(err)
        else:
            raise AssertionError("expected INVALID_ARGUMENT")
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT
        assert got.bad_request is not None
        assert [v.field for v in got.bad_request.field_violations] == ["after_sequence"]


async def test_a_fresh_org_is_watched_from_sequence_zero(org: Org) -> None:
    badge = await new_badge(org, "fresh")
    async with watching(org.reader) as watch:
        assert watch.after == 0
        await record(org, badge, member("m-1"), EARNED)
        (event,) = await watch.take(1)
    assert event.sequence == 1


async def test_only_moves_are_events(org: Org) -> None:
    badge = await new_badge(org, "moves")
    who = member("m-1")
    async with watching(org.admin) as watch:
        await record(org, badge, who, IN_PROGRESS)
        await record(org, badge, who, IN_PROGRESS)  # no move, no event
        try:
            await record(org, badge, who, UNEARNED)  # refused, no event
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        else:
            raise AssertionError("moving back succeeded")
        await record(org, badge, who, EARNED)
        events = await watch.take(2)
    assert [e.sequence for e in events] == [watch.after + 1, watch.after + 2]
    assert progress_of(events) == [(badge, "m-1", IN_PROGRESS, 2), (badge, "m-1", EARNED, 3)]


async def test_another_orgs_events_never_appear(org: Org, other_org: Org) -> None:
    mine = await new_badge(org, "mine")
    theirs = await new_badge(other_org, "theirs")
    async with watching(org.admin) as watch, watching(other_org.reader) as other:
        for i in range(3):
            await record(other_org, theirs, member(f"t-{i}"), EARNED)
        await record(org, mine, member("me"), IN_PROGRESS)
        (event,) = await watch.take(1)
        other_events = await other.take(3)
        # The other org's next event proves nothing of ours was queued before it.
        await record(other_org, theirs, member("t-last"), EARNED)
        (other_last,) = await other.take(1)
    assert (event.sequence, progress_of([event])) == (
        watch.after + 1,
        [(mine, "me", IN_PROGRESS, 2)],
    )
    assert [e.sequence for e in [*other_events, other_last]] == [
        other.after + i for i in range(1, 5)
    ]
    assert {e.progress.badge_id for e in [*other_events, other_last]} == {theirs}


async def test_award_and_revoke_events_carry_the_award(org: Org) -> None:
    badge = await new_badge(org, "award-me")
    who = member("m-1")
    # Already earned: an award of the badge moves no state, so only award events follow.
    await record(org, badge, who, EARNED)
    stub = awards(org.admin)
    async with watching(org.admin) as watch:
        created = await stub.CreateAward(
            apb.CreateAwardRequest(
                award=apb.Award(badge_id=badge, recipient=who, narrative="Came to the game")
            )
        )
        revoked = await stub.RevokeAward(apb.RevokeAwardRequest(id=created.id, reason="Mistake"))
        events = await watch.take(2)
    assert [(e.sequence, e.type) for e in events] == [
        (watch.after + 1, AWARDED),
        (watch.after + 2, REVOKED),
    ]
    awarded, revoke = events
    assert not awarded.HasField("progress") and not revoke.HasField("progress")
    # The AWARDED event shows the award as created, even when read after the revocation.
    assert awarded.award == created
    assert awarded.award.state == apb.AWARD_STATE_ACTIVE
    assert revoke.award == revoked
    assert (revoke.award.state, revoke.award.revocation_reason) == (
        apb.AWARD_STATE_REVOKED,
        "Mistake",
    )
    assert awarded.time == created.create_time
    assert revoke.time == revoked.revoke_time


async def test_a_batch_of_awards_arrives_in_request_order(org: Org) -> None:
    badge = await new_badge(org, "batch", [(EARNED, 1)])
    people = [member(f"b-{i:02d}") for i in range(30)]
    for who in people:  # earned already: the batch emits award events only
        await record(org, badge, who, EARNED)
    async with watching(org.admin) as watch:
        reply = await awards(org.admin).BatchCreateAwards(
            apb.BatchCreateAwardsRequest(
                requests=[
                    apb.CreateAwardRequest(award=apb.Award(badge_id=badge, recipient=who))
                    for who in people
                ]
            )
        )
        events = await watch.take(len(people))
    ids = [r.award.id for r in reply.results]
    assert all(ids)
    assert [e.sequence for e in events] == [watch.after + i for i in range(1, len(people) + 1)]
    assert [(e.type, e.award.id) for e in events] == [(AWARDED, i) for i in ids]
    assert [e.award.recipient.member_id for e in events] == [p.member_id for p in people]


async def test_concurrent_writers_arrive_once_in_sequence_order(org: Org) -> None:
    badges = [await new_badge(org, f"c{i}") for i in range(4)]
    pairs = [(b, f"m-{j}") for b in badges for j in range(5)]  # 20 distinct moves
    async with watching(org.admin) as watch:
        await asyncio.gather(*(record(org, b, member(m), EARNED) for b, m in pairs))
        events = await watch.take(len(pairs))
        # One more proves no duplicate or late event was queued behind them.
        await record(org, badges[0], member("last"), IN_PROGRESS)
        (last,) = await watch.take(1)
    assert [e.sequence for e in events] == [watch.after + i for i in range(1, 21)]
    got = [(e.progress.badge_id, e.progress.recipient.member_id) for e in events]
    assert sorted(got) == sorted(pairs)
    assert (last.sequence, last.progress.recipient.member_id) == (watch.after + 21, "last")


async def test_two_watchers_see_the_same_stream(org: Org) -> None:
    badge = await new_badge(org, "two")
    async with watching(org.admin) as first:
        await record(org, badge, member("m-0"), EARNED)
        async with watching(org.reader) as second:
            assert second.after == first.after + 1
            await asyncio.gather(*(record(org, badge, member(f"m-{i}"), EARNED) for i in (1, 2)))
            a = await first.take(3)
            b = await second.take(2)
    assert a[1:] == b


async def _quiet(backend: Backend) -> int:
    """Waits (30 s at least) until the server has no call in flight; returns the count."""
    interceptor = backend.running.interceptor
    for _ in range(3000):
        if interceptor.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    return interceptor.in_flight


async def test_cancelling_ends_the_stream_on_the_server(backend: Backend, org: Org) -> None:
    # Earlier tests' cancelled streams may still be winding down on the server.
    assert await _quiet(backend) == 0
    async with watching(org.admin):
        assert backend.running.interceptor.in_flight == 1
    assert await _quiet(backend) == 0


async def test_events_written_through_another_server_arrive(
    backend: Backend, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    """A second server on the same database stands for another worker process: its writes do
    not ring this server's bell, so they arrive by polling. Its shutdown then sends what had
    committed and ends the stream with UNAVAILABLE at once, so the drain does not wait."""
    badge = await new_badge(org, "elsewhere")
    second = await start(
        Settings(address="127.0.0.1:0", database_url=backend.url, log_level="WARNING")
    )
    client = Client.connect(second.port, [("authorization", f"Bearer {org.admin_key}")])
    try:
        async with watching(client) as watch:
            await record(org, badge, member("m-1"), EARNED)  # through the first server
            (event,) = await watch.take(1)
            assert (event.sequence, progress_of([event])) == (
                watch.after + 1,
                [(badge, "m-1", EARNED, 3)],
            )

            # Committed just before the shutdown: still sent, before the stream ends.
            await record(org, badge, member("m-2"), IN_PROGRESS)
            with caplog.at_level(logging.WARNING, logger="badge_service.server"):
                await second.shutdown(0, DRAIN_LIMIT)
            # It found the server quiet at once: the watch, ended by the shutdown, did not
            # keep it waiting out its grace period to be cut off.
            assert "grace period over; cutting off calls in flight" not in caplog.messages
            (flushed,) = await watch.take(1)
            assert (flushed.sequence, progress_of([flushed])) == (
                watch.after + 2,
                [(badge, "m-2", IN_PROGRESS, 2)],
            )
            try:
                extra = await asyncio.wait_for(watch.call.read(), READ_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                got = details_of(err)
            else:
                raise AssertionError(f"the stream went on after shutdown: {extra}")
        assert got.code == grpc.StatusCode.UNAVAILABLE, got
        assert got.info is not None and got.info.reason == "SERVER_SHUTTING_DOWN"
        assert dict(got.info.metadata) == {"last_sequence": str(flushed.sequence)}
    finally:
        await client.channel.close()
        await second.stop(grace=1)


async def test_watching_needs_credentials(backend: Backend) -> None:
    client = backend.client()
    call = awards(client).WatchAwards(apb.WatchAwardsRequest())
    try:
        await call.read()
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("an anonymous watch was accepted")


async def test_awards_and_progress_share_one_stream(org: Org) -> None:
    badge = await new_badge(org, "mixed")
    stub = awards(org.admin)
    async with watching(org.admin) as watch:
        await record(org, badge, member("p"), IN_PROGRESS)
        await record(org, badge, member("a"), EARNED)
        created = await stub.CreateAward(
            apb.CreateAwardRequest(award=apb.Award(badge_id=badge, recipient=member("a")))
        )
        await record(org, badge, member("p"), EARNED)
        events = await watch.take(4)
    assert [e.sequence for e in events] == [watch.after + i for i in (1, 2, 3, 4)]
    assert [e.type for e in events] == [PROGRESS, PROGRESS, AWARDED, PROGRESS]
    assert events[2].award.id == created.id
    assert progress_of([events[0], events[1], events[3]]) == [
        (badge, "p", IN_PROGRESS, 2),
        (badge, "a", EARNED, 3),
        (badge, "p", EARNED, 3),
    ]


async def test_mark_earned_moves_to_earned_once_with_one_event(backend: Backend, org: Org) -> None:
    """store.progress.mark_earned, which an award of a CrowdTwist badge calls in its own
    transaction: it moves the recipient to the earned state, never back, with one event."""
    badge_id = await new_badge(org, "earn")
    who = Recipient(RecipientKind.MEMBER_ID, "m-1")
    await record(org, badge_id, member("m-1"), IN_PROGRESS)
    async with backend.db.read() as conn:
        badge = await conn.run_sync(badge_store.get_badge, org.id, badge_id)
    async with watching(org.admin) as watch:
        now = dt.datetime.now(dt.UTC)
        first = await backend.db.run_write(
            progress_store.mark_earned, org.id, badge, "member_id:m-1", who, now
        )
        again = await backend.db.run_write(
            progress_store.mark_earned, org.id, badge, "member_id:m-1", who, now
        )
        await record(org, badge_id, member("after"), IN_PROGRESS)
        events = await watch.take(2)
    assert (first, again) == (watch.after + 1, None)
    assert progress_of(events) == [
        (badge_id, "m-1", EARNED, 3),
        (badge_id, "after", IN_PROGRESS, 2),
    ]
    listed = await awards(org.reader).ListRecipientBadgeStates(
        apb.ListRecipientBadgeStatesRequest(recipient=member("m-1"))
    )
    assert [(s.state, s.update_time) for s in listed.states] == [(EARNED, events[0].time)]


async def test_a_commit_in_this_process_wakes_the_stream_at_once(
    monkeypatch: pytest.MonkeyPatch, backend: Backend, org: Org
) -> None:
    """Ten write-then-read round trips with polling slowed to NO_POLL: each event arrives
    within READ_TIMEOUT only because its commit woke the stream."""
    monkeypatch.setattr(hub_of(backend.db), "poll_seconds", NO_POLL)
    badge = await new_badge(org, "prompt")
    async with watching(org.admin) as watch:
        for i in range(10):
            await record(org, badge, member(f"m-{i}"), EARNED)
            (event,) = await watch.take(1)
            assert event.sequence == watch.after + i + 1


async def test_append_events_numbers_a_batch_in_order(backend: Backend, org: Org) -> None:
    """store.events.append_events: one sequence bump for many events, in payload order, after
    whatever the org already has, and an empty batch appends nothing."""
    badge = await new_badge(org, "many")
    now = dt.datetime.now(dt.UTC)
    who = {"kind": "member_id", "value": "x"}
    payloads = [
        {"badge_id": badge, "recipient": who, "state": 3, "order": i, "update_time": i}
        for i in range(1, 1202)  # more than one insert chunk
    ]
    async with watching(org.admin) as watch:
        unchanged, last = await backend.db.run_write(_append_twice, org.id, payloads, now)
        got = await watch.take(len(payloads))
    assert (unchanged, last) == (watch.after, watch.after + len(payloads))
    assert [e.sequence for e in got] == [watch.after + i for i in range(1, len(payloads) + 1)]
    assert [e.progress.order for e in got] == list(range(1, 1202))


def _append_twice(
    conn: Connection, org_id: int, payloads: list[dict[str, Any]], now: dt.datetime
) -> tuple[int, int]:
    """An empty append_events, then one "progress" event per payload, in one transaction."""
    unchanged = events.append_events(conn, org_id, [], now)
    items = [("progress", p) for p in payloads]
    return unchanged, events.append_events(conn, org_id, items, now)


# --- Wake-ups of group-committed writes ---------------------------------------------------------
# On SQLite, run_write commits through a second engine in a worker thread, batching the writes
# that queue meanwhile (group commit). These tests slow polling to NO_POLL, so an event arrives
# within READ_TIMEOUT only if the commit rang the bell, and only if it rang after the COMMIT
# (a ring before it would find nothing to read and leave the stream waiting).


async def test_awards_wake_the_stream_without_polling(
    monkeypatch: pytest.MonkeyPatch, backend: Backend, org: Org
) -> None:
    monkeypatch.setattr(hub_of(backend.db), "poll_seconds", NO_POLL)
    badge = await new_badge(org, "woken")
    stub = awards(org.admin)

    def give(member_id: str) -> Any:
        award = apb.Award(badge_id=badge, recipient=member(member_id))
        return stub.CreateAward(apb.CreateAwardRequest(award=award))

    async with watching(org.admin) as watch:
        for i in range(5):
            reply = await give(f"m-{i}")
            progress, awarded = await watch.take(2)
            assert (progress.type, progress.progress.recipient.member_id) == (PROGRESS, f"m-{i}")
            assert (awarded.type, awarded.award.id) == (AWARDED, reply.id)
            assert (progress.sequence, awarded.sequence) == (
                watch.after + 2 * i + 1,
                watch.after + 2 * i + 2,
            )
        # Concurrent awards share group commits; every one of them is delivered, in order.
        replies = await asyncio.gather(*(give(f"c-{i}") for i in range(20)))
        got = await watch.take(40)
    assert [e.sequence for e in got] == [watch.after + 11 + i for i in range(40)]
    assert sorted(e.award.id for e in got if e.type == AWARDED) == sorted(r.id for r in replies)


def _append_progress(
    conn: Connection, org_id: int, badge_id: int, member_id: str, now: dt.datetime, fail: bool
) -> int:
    """Appends one progress event; with ``fail``, raises after it (the write rolls back)."""
    payload = {
        "badge_id": badge_id,
        "recipient": {"kind": "member_id", "value": member_id},
        "state": 3,
        "order": 3,
        "update_time": 0,
    }
    sequence = events.append(conn, org_id, "progress", payload, now)
    if fail:
        raise InvalidArgument("member_id", "rolled back on purpose")
    return sequence


async def test_a_write_rolled_back_in_a_group_commit_does_not_hold_back_the_others(
    monkeypatch: pytest.MonkeyPatch, backend: Backend, org: Org
) -> None:
    """Four writes in one group commit (on SQLite: they queue while db.write() holds the
    write lock), the second failing after its append: it alone rolls back, its sequence is
    reused, the others' events are delivered at once. On PostgreSQL the writes run
    concurrently, each in its own transaction."""
    monkeypatch.setattr(hub_of(backend.db), "poll_seconds", NO_POLL)
    badge = await new_badge(org, "grouped")
    now = dt.datetime.now(dt.UTC)
    db = backend.db
    async with watching(org.admin) as watch:
        async with db.write():
            jobs = [
                asyncio.ensure_future(
                    db.run_write(_append_progress, org.id, badge, f"m-{i}", now, i == 1)
                )
                for i in range(4)
            ]
            await asyncio.sleep(0.05)
            if backend.name == "sqlite":
                assert not any(j.done() for j in jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        got = await watch.take(3)
    assert isinstance(results[1], InvalidArgument)
    sequences = [results[0], results[2], results[3]]
    expected = [watch.after + i for i in (1, 2, 3)]
    assert [e.sequence for e in got] == expected
    by_member = {e.progress.recipient.member_id: e.sequence for e in got}
    assert by_member == dict(zip(("m-0", "m-2", "m-3"), sequences, strict=True))
    if backend.name == "sqlite":  # one transaction, in queue order
        assert sequences == expected
