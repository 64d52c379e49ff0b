"""The watch hub behind WatchAwards (``service.watch``), on SQLite and PostgreSQL: hundreds of idle
watchers cost no reads and one write reaches them all with one read; subscribers that start
(with or without ``after_sequence``) while writes go on get every event exactly once, in order,
also when they are dropped for reading slowly and resume; events written by another server
process reach a server's watchers; a reader that stops reading is dropped
with WATCH_TOO_SLOW and ``last_sequence``, without the hub holding more than its buffer, and
gets every event up to ``last_sequence`` when it reads again; the per-org and per-process caps
answer RESOURCE_EXHAUSTED naming the limit and free the slot when a stream ends."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, badge_pb2
from badge_service.config import Settings
from badge_service.server import Running, start
from badge_service.service.watch import WatchHub, hub_of
from tests.support import Backend, Client, Org, details_of, own_database_url
from tests.test_serve import BIN, json_lines, serving

KEY = "x-watch-after-sequence"
READ_TIMEOUT = 30.0
# A narrative that makes each event about 1 KiB, so that a reader's HTTP/2 window fills soon.
NARRATIVE = "n" * 1000


WAIT = 60.0


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Waits for ``cond`` (checked every 20 ms); fails naming ``what`` after WAIT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def stub(client: Client) -> award_pb2_grpc.AwardServiceStub:
    """The AwardService stub of a client."""
    return client.stub(award_pb2_grpc.AwardServiceStub)


async def earned_badge(client: Client, name: str) -> int:
    """A badge whose only state is earned."""
    badge = await client.badges.CreateBadge(
        badge_pb2.CreateBadgeRequest(
            badge=badge_pb2.Badge(
                name=name,
                title="Watched",
                badge_states=[
                    badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)
                ],
            )
        )
    )
    return badge.id


async def award(client: Client, badge_id: int, members: list[str]) -> list[str]:
    """Awards the badge to each (new) member in one BatchCreateAwards; the keys (see ``key``)
    of the events that makes, in sequence order: each award puts its recipient in the earned
    state (PROGRESS), then AWARDED."""
    reply = await stub(client).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(
            requests=[
                apb.CreateAwardRequest(
                    award=apb.Award(
                        badge_id=badge_id,
                        recipient=apb.Recipient(member_id=m),
                        narrative=NARRATIVE,
                    )
                )
                for m in members
            ]
        )
    )
    ids = [r.award.id for r in reply.results]
    assert all(ids), reply
    return [f"progress:{m}" for m in members] + [f"award:{i}" for i in ids]


def key(event: apb.AwardEvent) -> str:
    """What an event is about: ``award:ID`` or ``progress:MEMBER``."""
    if event.type == apb.AWARD_EVENT_TYPE_PROGRESS:
        return f"progress:{event.progress.recipient.member_id}"
    return f"award:{event.award.id}"


async def subscribed(call: Any) -> int:
    """The sequence a stream was subscribed after (its initial metadata)."""
    return int(dict(await call.initial_metadata())[KEY])


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """Reads a stream to its end; the error it ends with (fails if it ends OK)."""
    try:
        while True:
            event = await asyncio.wait_for(call.read(), READ_TIMEOUT)
            if event is grpc.aio.EOF:
                raise AssertionError("the stream ended OK")
    except grpc.aio.AioRpcError as err:
        return err


@dataclass
class Own:
    """A server of the test's own on the session's database, with its own watch settings."""

    running: Running
    clients: list[Client]

    @property
    def hub(self) -> WatchHub:
        """The server's watch hub."""
        return hub_of(self.running.db)

    def client(self, key: str, options: list[tuple[str, Any]] | None = None) -> Client:
        """A client on its own channel (its own connection)."""
        c = Client.connect(self.running.port, [("authorization", f"Bearer {key}")], options)
        self.clients.append(c)
        return c


@asynccontextmanager
async def own_server(backend: Backend, **watch: Any) -> AsyncIterator[Own]:
    """A second server on the backend's database with ``watch_*`` settings; writes through it
    ring its own hub."""
    settings = Settings(
        address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
        **{f"watch_{k}": v for k, v in watch.items()},
    )
    own = Own(await start(settings), [])
    try:
        yield own
    finally:
        for c in own.clients:
            await c.channel.close()
        await own.running.stop(grace=1)


# --- many idle watchers --------------------------------------------------------------------


async def test_idle_watchers_cost_no_reads_and_one_event_reaches_all_with_one_read(
    backend: Backend, org: Org
) -> None:
    hub = hub_of(backend.db)
    badge = await earned_badge(org.admin, "fan-out")
    clients = [backend.client([("authorization", f"Bearer {org.reader_key}")]) for _ in range(4)]
    watchers = 400
    calls = [
        stub(clients[i % len(clients)]).WatchAwards(apb.WatchAwardsRequest())
        for i in range(watchers)
    ]
    try:
        afters = {await subscribed(call) for call in calls}
        assert len(afters) == 1
        (after,) = afters
        # Idle: the hub wakes once per interval for all of them (and polls, or on PostgreSQL
        # listens for notifications), and reads nothing.
        reads, ticks = hub.reads, hub.ticks
        await wait_until(lambda: hub.ticks >= ticks + 3, "three intervals")
        assert hub.reads == reads
        made = await award(org.admin, badge, ["everyone"])  # two events, one commit

        async def two(call: Any) -> list[tuple[int, str]]:
            events = [await asyncio.wait_for(call.read(), READ_TIMEOUT) for _ in made]
            return [(e.sequence, key(e)) for e in events]

        got = await asyncio.gather(*(two(call) for call in calls))
        assert got == [[(after + 1, made[0]), (after + 2, made[1])]] * watchers
        # Read once for all 400 (a poll that saw the commit before its ring costs one more,
        # empty, read), never once per watcher.
        assert 1 <= hub.reads - reads <= 2
    finally:
        for call in calls:
            call.cancel()
    await wait_until(lambda: hub.watched_orgs() == 0, "every stream to leave")


# --- catching up while writes go on --------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_subscribers_that_join_during_writes_get_every_event_once_in_order(
    backend: Backend, org: Org, seed: int
) -> None:
    """Random interleavings: a writer awards batches of random sizes while subscribers start
    at random moments, some from the present and some from a random past sequence, some reading
    slowly (a buffer of 8 events drops them often; they resume with after_sequence =
    last_sequence) or cancelling and resubscribing at random. Each subscriber's events,
    across its resubscriptions, are exactly every sequence after its first subscription
    point, in order, each the event the writer made at that sequence."""
    rng = random.Random(seed)
    async with own_server(backend, buffer=8) as own:
        admin = own.client(org.admin_key)
        badge = await earned_badge(admin, f"joined-{seed}")
        probe = stub(admin).WatchAwards(apb.WatchAwardsRequest())
        base = await subscribed(probe)
        probe.cancel()
        sizes = [rng.choice([1, 1, 2, 3, 8, 9, 17, 40]) for _ in range(25)]
        final = base + 2 * sum(sizes)
        ids: list[str] = []  # ids[i] is the key of the event of sequence base + 1 + i

        async def writer() -> None:
            for i, n in enumerate(sizes):
                ids.extend(await award(admin, badge, [f"w{seed}-{i}-{j}" for j in range(n)]))
                await asyncio.sleep(rng.random() * 0.01)

        async def subscriber(k: int) -> tuple[int, list[tuple[int, str]]]:
            await asyncio.sleep(rng.random() * 0.3)
            client = own.client(org.reader_key)
            after = rng.choice([0, rng.randint(base, base + len(ids))])
            slow = rng.random() < 0.4
            got: list[tuple[int, str]] = []
            first: int | None = None
            last = after
            while last < final:
                call = stub(client).WatchAwards(apb.WatchAwardsRequest(after_sequence=last))
                start = await subscribed(call)
                assert start == (last or start)
                if first is None:
                    first = start
                last = start
                quit_after = rng.randint(1, 60) if rng.random() < 0.3 else None
                try:
                    while last < final:
                        event = await asyncio.wait_for(call.read(), READ_TIMEOUT)
                        assert event is not grpc.aio.EOF
                        got.append((event.sequence, key(event)))
                        last = event.sequence
                        if slow:
                            await asyncio.sleep(rng.random() * 0.004)
                        if quit_after is not None and len(got) % quit_after == 0:
                            break  # cancel and resubscribe from the last event seen
                except grpc.aio.AioRpcError as err:
                    info = details_of(err)
                    assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
                    assert info.info is not None and info.info.reason == "WATCH_TOO_SLOW"
                    assert dict(info.info.metadata) == {"last_sequence": str(last)}
                finally:
                    call.cancel()
            assert first is not None
            return first, got

        results = await asyncio.gather(writer(), *(subscriber(k) for k in range(12)))
        for first, got in results[1:]:  # type: ignore[misc]
            assert [s for s, _ in got] == list(range(first + 1, final + 1))
            assert [i for _, i in got] == ids[first - base :]
        await wait_until(lambda: own.hub.watched_orgs() == 0, "every stream to leave")
        assert own.hub.streams == 0


# --- slow and stuck readers ----------------------------------------------------------------

# A reader's channel without BDP probing keeps its HTTP/2 window at 64 KiB, so a stream whose
# client does not read blocks the server's write after about 60 events of 1 KiB.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]


async def test_a_reader_that_stops_reading_is_dropped_and_resumes_without_loss(
    backend: Backend, org: Org
) -> None:
    buffer = 16
    async with own_server(backend, buffer=buffer, stall_seconds=3600.0) as own:
        hub = own.hub
        admin = own.client(org.admin_key)
        badge = await earned_badge(admin, "stuck")
        reader = stub(own.client(org.reader_key)).WatchAwards(apb.WatchAwardsRequest())
        stuck_client = own.client(org.reader_key, SMALL_WINDOW)
        stuck = stub(stuck_client).WatchAwards(apb.WatchAwardsRequest())
        after = await subscribed(reader)
        assert await subscribed(stuck) == after
        ids: list[str] = []
        received: list[apb.AwardEvent] = []

        async def read_all(n: int) -> None:
            while len(received) < n:
                event = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
                received.append(event)

        # Batches of 10 until the stuck stream is dropped; the hub's window never holds more
        # than the buffer and one read batch (the one reader paces the reads).
        batches = 0
        while hub.dropped == 0:
            ids += await award(admin, badge, [f"s-{batches}-{j}" for j in range(10)])
            batches += 1
            await read_all(len(ids))
            assert hub.buffered() <= buffer + buffer, hub.buffered()
            assert batches < 200, "the stuck stream was never dropped"
        # Dropped at once: its slot is free although its client has read nothing yet.
        assert hub.streams == 1
        assert [e.sequence for e in received] == list(range(after + 1, after + len(ids) + 1))
        # The stuck client reads again: every event up to last_sequence, in order, then the
        # status naming last_sequence.
        seen: list[apb.AwardEvent] = []
        try:
            while True:
                event = await asyncio.wait_for(stuck.read(), READ_TIMEOUT)
                assert event is not grpc.aio.EOF
                seen.append(event)
        except grpc.aio.AioRpcError as err:
            info = details_of(err)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.info is not None and info.info.reason == "WATCH_TOO_SLOW"
        last = int(info.info.metadata["last_sequence"])
        assert dict(info.info.metadata) == {"last_sequence": str(last)}
        assert [e.sequence for e in seen] == list(range(after + 1, last + 1))
        assert [key(e) for e in seen] == ids[: last - after]
        # It was dropped behind the reader, by more than the buffer.
        assert after + len(ids) - last > buffer
        # Resuming from last_sequence loses nothing.
        resumed = stub(stuck_client).WatchAwards(apb.WatchAwardsRequest(after_sequence=last))
        assert await subscribed(resumed) == last
        rest = [await asyncio.wait_for(resumed.read(), READ_TIMEOUT) for _ in ids[last - after :]]
        assert [key(e) for e in rest] == ids[last - after :]
        resumed.cancel()
        reader.cancel()
        # Once every stream has taken everything, the window is emptied.
        await wait_until(lambda: hub.watched_orgs() == 0, "every stream to leave")
        assert (hub.streams, hub.buffered()) == (0, 0)


async def test_a_lone_stream_blocked_in_a_write_is_dropped_after_the_stall_timeout(
    backend: Backend, org: Org
) -> None:
    """Nobody reads faster than it, so it never falls behind; the stall timeout drops it."""
    async with own_server(backend, buffer=16, stall_seconds=0.5) as own:
        hub = own.hub
        admin = own.client(org.admin_key)
        badge = await earned_badge(admin, "lone")
        stuck = stub(own.client(org.reader_key, SMALL_WINDOW)).WatchAwards(apb.WatchAwardsRequest())
        after = await subscribed(stuck)
        ids = await award(admin, badge, [f"l-{j}" for j in range(200)])
        await wait_until(lambda: hub.dropped == 1, "the stalled stream to be dropped")
        assert hub.streams == 0
        assert hub.buffered() <= 16 + 16
        seen = []
        try:
            while True:
                seen.append(await asyncio.wait_for(stuck.read(), READ_TIMEOUT))
        except grpc.aio.AioRpcError as err:
            info = details_of(err)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.info is not None and info.info.reason == "WATCH_TOO_SLOW"
        last = int(info.info.metadata["last_sequence"])
        assert [e.sequence for e in seen] == list(range(after + 1, last + 1))
        assert [key(e) for e in seen] == ids[: last - after]
        assert last < after + len(ids)  # it was blocked, not done


# --- the caps ------------------------------------------------------------------------------


async def test_streams_are_capped_per_org_and_per_process_and_slots_are_freed(
    backend: Backend, org: Org, other_org: Org
) -> None:
    third = await backend.new_org()
    async with own_server(backend, max_per_org=3, max_streams=5) as own:
        hub = own.hub
        a = stub(own.client(org.reader_key))
        b = stub(own.client(other_org.reader_key))
        c = stub(own.client(third.admin_key))
        mine = [a.WatchAwards(apb.WatchAwardsRequest()) for _ in range(3)]
        for call in mine:
            await subscribed(call)
        err = await failure(a.WatchAwards(apb.WatchAwardsRequest()))
        info = details_of(err)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.info is not None and info.info.reason == "WATCH_STREAMS_PER_ORG_LIMIT"
        assert dict(info.info.metadata) == {"limit": "3"}
        theirs = [b.WatchAwards(apb.WatchAwardsRequest()) for _ in range(2)]
        for call in theirs:
            await subscribed(call)
        err = await failure(c.WatchAwards(apb.WatchAwardsRequest()))
        info = details_of(err)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.info is not None and info.info.reason == "WATCH_STREAMS_PER_PROCESS_LIMIT"
        assert dict(info.info.metadata) == {"limit": "5"}
        assert hub.streams == 5
        # A refused stream took no slot, and one that failed its request frees its slot.
        bad = await failure(a.WatchAwards(apb.WatchAwardsRequest(after_sequence=10**9)))
        assert bad.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # still full: refused first
        # A cancelled stream frees its slot: the org and the process take one more.
        mine[0].cancel()
        await wait_until(lambda: hub.streams == 4, "the cancelled stream's slot")
        again = a.WatchAwards(apb.WatchAwardsRequest())
        await subscribed(again)
        assert hub.streams == 5
        again.cancel()
        theirs[0].cancel()
        await wait_until(lambda: hub.streams == 3, "two more slots")
        # An invalid request gives its slot back too.
        invalid = await failure(c.WatchAwards(apb.WatchAwardsRequest(after_sequence=10**9)))
        assert details_of(invalid).code == grpc.StatusCode.INVALID_ARGUMENT
        assert hub.streams == 3
        ok = c.WatchAwards(apb.WatchAwardsRequest())
        await subscribed(ok)
        assert hub.streams == 4
        for call in [*mine, *theirs, ok]:
            call.cancel()
        await wait_until(lambda: hub.streams == 0, "every slot")


# --- another process, the flags ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own on each backend."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


async def test_another_processs_events_reach_the_watchers_of_this_one(
    tmp_path: Path, database_url: str
) -> None:
    """Two ``serve`` processes on one database: the watchers' server learns of the other's
    commits only by its poll. Its --watch-max-per-org caps the org's streams, and SIGTERM ends
    them with SERVER_SHUTTING_DOWN after everything committed."""
    async with (
        serving(tmp_path, database_url, "--watch-max-per-org", "3") as watched,
        serving(tmp_path, database_url) as other,
    ):
        org = watched.new_org()
        watching = stub(watched.client(org["api_key"]))
        calls = [watching.WatchAwards(apb.WatchAwardsRequest()) for _ in range(3)]
        afters = {await subscribed(call) for call in calls}
        assert len(afters) == 1
        (after,) = afters
        err = await failure(watching.WatchAwards(apb.WatchAwardsRequest()))
        info = details_of(err)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.info is not None and info.info.reason == "WATCH_STREAMS_PER_ORG_LIMIT"
        assert dict(info.info.metadata) == {"limit": "3"}

        writer = other.client(org["api_key"])
        badge = await earned_badge(writer, "elsewhere")
        made = await award(writer, badge, [f"o-{i}" for i in range(5)])
        for call in calls:
            got = [await asyncio.wait_for(call.read(), READ_TIMEOUT) for _ in made]
            assert [(e.sequence, key(e)) for e in got] == [
                (after + 1 + i, k) for i, k in enumerate(made)
            ]

        code, _ = await asyncio.to_thread(watched.signal_and_wait, signal.SIGTERM, 30)
        assert code == 0, watched.stderr()[-4000:]
        for call in calls:
            info = details_of(await failure(call))
            assert info.code == grpc.StatusCode.UNAVAILABLE, info
            assert info.info is not None and info.info.reason == "SERVER_SHUTTING_DOWN"
            assert dict(info.info.metadata) == {"last_sequence": str(after + len(made))}
        statuses = [
            line["status"]
            for line in json_lines(watched.stderr())
            if line.get("method", "").endswith("/WatchAwards")
        ]
        assert sorted(statuses) == ["RESOURCE_EXHAUSTED"] + ["UNAVAILABLE"] * 3


@pytest.mark.parametrize("flag", ["--watch-max-per-org", "--watch-max-streams", "--watch-buffer"])
def test_a_watch_limit_below_one_is_refused_at_start(tmp_path: Path, flag: str) -> None:
    out = subprocess.run(
        [str(BIN), "serve", "--address", "127.0.0.1:0", flag, "0"],
        env={"BADGE_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stderr.strip()) == (1, f"error: {flag} must be at least 1")
