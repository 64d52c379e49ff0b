"""The watch hub: one per server process and database, it feeds every open WatchAwards stream
from memory, so that an idle stream costs nothing and the cost of an event does not grow with
the number of streams beyond handing each one the same bytes. It sits below the transports:
events reach it already encoded by the transport that made the hub (``service.award_events``
wires it), and a transport's stream (``rpc.award_events.WatchAwards``) only takes from it.

What it reads: for each organisation that has streams (a *feed*), the org's new events, once,
in batches of at most ``BATCH``, each encoded once. It learns that there are some from the
event bell (``store.events``: commits in this process ring it with their orgs, at once) and from
one poll per ``poll_seconds`` of the watched orgs' last sequences (commits of other processes:
``serve --workers``, another server on the same database). With no stream open, the hub has no
task and reads nothing.

On PostgreSQL other processes' commits also arrive as notifications (``store.notify``: LISTEN/
NOTIFY on one connection per process), which wake the hub for their orgs at once. While it
listens, the hub polls only every ``fallback_seconds`` (for a notification that never came: a
process that died between its commit and its notify); while it does not (the connection is
lost and being reconnected), every ``poll_seconds`` again. A notification is only a wake-up:
events are always read from the table, in sequence order.

The window: a feed keeps the events it has read and not every stream has taken yet; each stream
has a position in it. The hub reads more for an org only when one of its streams has taken
everything (the fastest stream paces reading, so a burst of thousands of events, such as one
BatchCreateAwards, is read batch by batch as it is sent). A stream that falls more than
``buffer`` events behind the end of the window is dropped with RESOURCE_EXHAUSTED, reason
``WATCH_TOO_SLOW`` and ``last_sequence`` (the last event it was sent): a slow reader never
makes the window grow. A stream blocked in one write for ``stall_seconds`` is dropped the same
way, so a stuck reader alone in its org does not keep its slot forever either.

Catching up: a stream that starts before the window (``after_sequence``) reads its backlog from
the database itself, in batches, and moves to the window once its last sequence is inside it;
it skips any event it has already sent, so it joins the live feed without gap or duplicate.

Dropping a stream blocked in a write (on gRPC ``context.write``: a client that does not read
keeps the write waiting on HTTP/2 flow control, and the servicer's generator is not resumed
meanwhile): the hub never waits on a stream. It cancels the stream's task, which is the call's
own task (``Subscription.task``). The CancelledError arrives at the interceptor's
``await context.write(item)``, inside that task while the call is alive; the interceptor closes
the servicer's generator there, and the generator (``WatchAwards``) raises the drop's error
instead, which the interceptor sends as the call's status. gRPC queues the status behind the
message being written: a client that reads again gets every event up to ``last_sequence``, then
the status. The hub forgets the stream at once (its slot and its place in the window are
freed); nothing touches the call after its task has ended.

Limits: at most ``max_per_org`` open streams per organisation and ``max_streams`` per process;
one more is RESOURCE_EXHAUSTED (``WATCH_STREAMS_PER_ORG_LIMIT`` /
``WATCH_STREAMS_PER_PROCESS_LIMIT``, metadata ``limit``). A stream's slot is freed however it
ends (``leave`` runs in the stream's ``finally``, and a drop frees it at once).
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from badge_service.domain.errors import DomainError

if TYPE_CHECKING:
    from badge_service.config import Settings
    from badge_service.store.db import Database
    from badge_service.store.events import EventBell

log = logging.getLogger("badge_service.watch")

# Events read per query, by the hub and by a stream catching up.
BATCH = 200
# Window events a stream takes per step (one list, then one write each).
TAKE = 64
# A failing poll or read is logged at most once per this many seconds.
WARN_EVERY = 30.0

# An event as streams send it: (sequence, the event as the transport encoded it: on gRPC a
# serialized badges.v1.AwardEvent).
Event = tuple[int, bytes]
# Reads an org's events after a sequence, at most ``limit`` of them, in sequence order.
Fetch = Callable[[int, int, int], Awaitable[Sequence[Event]]]
# The last committed sequence of each org asked for (orgs without events may be left out).
Heads = Callable[[Collection[int]], Awaitable[dict[int, int]]]


class Notices(Protocol):
    """Other processes' commits of events, as they happen (``store.notify.EventNotices``)."""

    @property
    def listening(self) -> bool:
        """Whether notifications are being received now."""

    def listen(self, wake: Callable[[frozenset[int] | None], None]) -> None:
        """Calls ``wake(orgs)`` when another process committed events of ``orgs``, and
        ``wake(None)`` when listening starts or stops (any org may have new events)."""


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """How many streams may be open, how far one may fall behind, how often to poll."""

    max_per_org: int = 1000
    max_streams: int = 10_000
    buffer: int = 1000
    poll_seconds: float = 0.5
    stall_seconds: float = 30.0
    # Polling while notifications arrive (PostgreSQL LISTEN/NOTIFY), for one that was lost.
    fallback_seconds: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> WatchLimits:
        """The limits the settings give (``watch_*``)."""
        return cls(
            max_per_org=settings.watch_max_per_org,
            max_streams=settings.watch_max_streams,
            buffer=settings.watch_buffer,
            poll_seconds=settings.watch_poll_seconds,
            stall_seconds=settings.watch_stall_seconds,
            fallback_seconds=settings.watch_fallback_seconds,
        )


class ServerShuttingDown(DomainError):
    """The server is stopping; the watch stream ends and the client should resubscribe."""

    code = "UNAVAILABLE"

    def __init__(self, last_sequence: int) -> None:
        super().__init__(
            "the server is shutting down; resubscribe to keep watching",
            reason="SERVER_SHUTTING_DOWN",
            metadata={"last_sequence": str(last_sequence)},
        )


class WatchTooSlow(DomainError):
    """The stream fell too far behind (or stopped reading) and was dropped; the client
    resubscribes with ``after_sequence`` = ``last_sequence`` and loses nothing."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, last_sequence: int, why: str) -> None:
        super().__init__(
            f"the stream was dropped: {why}; resubscribe with after_sequence={last_sequence}",
            reason="WATCH_TOO_SLOW",
            metadata={"last_sequence": str(last_sequence)},
        )


class WatchLimitReached(DomainError):
    """Too many streams are open: for the org, or in this server process."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, scope: str, limit: int) -> None:
        where = "the organisation" if scope == "ORG" else "this server process"
        super().__init__(
            f"{where} already has {limit} open WatchAwards streams, the limit; "
            "close one or retry later",
            reason=f"WATCH_STREAMS_PER_{scope}_LIMIT",
            metadata={"limit": str(limit)},
        )


class Subscription:
    """One open stream: its org, its place, and how it ends."""

    __slots__ = ("error", "feed", "last", "open", "org_id", "pos", "task", "waiter", "write_since")

    def __init__(self, org_id: int, task: asyncio.Task[object] | None) -> None:
        self.org_id = org_id
        # The call's task, which the stream runs in; cancelled to end a blocked write.
        self.task = task
        self.feed: _Feed | None = None
        self.last = 0  # the sequence of the last event handed to a write
        self.pos: int | None = None  # absolute index in the feed's window; None: catching up
        self.error: DomainError | None = None  # why the hub dropped the stream
        self.waiter: asyncio.Future[None] | None = None
        self.write_since = 0.0  # loop time the current write began; 0.0: not in a write
        self.open = True


@dataclass(eq=False, slots=True)
class _Feed:
    """An org's window: the events read and not yet taken by every stream, in order."""

    org_id: int
    head: int  # the last sequence read (or known to be committed when the feed began)
    base: int  # every event at or below it has left the window (or never entered it)
    start: int = 0  # absolute index of the window's first event
    seqs: list[int] = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)
    dirty: bool = False  # events after head may be committed
    rung: int = 0  # counts dirty marks, so a mark during a read is not lost
    final: int | None = None  # at shutdown: the sequence the streams end at
    subs: set[Subscription] = field(default_factory=set)
    waiting: set[Subscription] = field(default_factory=set)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_hubs: weakref.WeakKeyDictionary[Database, WatchHub] = weakref.WeakKeyDictionary()


def hub_of(db: Database) -> WatchHub:
    """The hub serving watch streams on ``db`` (for tests and the benchmark)."""
    return _hubs[db]


class WatchHub:
    """Feeds this process's watch streams on one database; see the module docstring."""

    def __init__(
        self,
        bell: EventBell,
        fetch: Fetch,
        heads: Heads,
        limits: WatchLimits,
        db: Database | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.limits = limits
        # Read at every wait, so a test may slow polling down on a running server.
        self.poll_seconds = limits.poll_seconds
        self.fallback_seconds = limits.fallback_seconds
        self._notices = notices
        self._notices_on = False
        self._bell = bell
        self._fetch = fetch
        self._heads = heads
        self._batch = max(1, min(BATCH, limits.buffer))
        self._feeds: dict[int, _Feed] = {}
        self._per_org: dict[int, int] = {}
        self._ready: dict[int, _Feed] = {}
        self._writing: set[Subscription] = set()
        self._kicker: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = -WARN_EVERY
        self.closing = False
        # Counters, for tests and the benchmark.
        self.streams = 0
        self.dropped = 0
        self.reads = 0
        self.polls = 0
        self.ticks = 0
        bell.listen(self._on_ring)
        if db is not None:
            _hubs[db] = self

    # --- what a stream calls --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the server is shutting down (no new stream is taken)."""
        return self.closing or self._bell.closed

    def open(self, org_id: int) -> Subscription:
        """Takes a slot for a new stream of ``org_id`` (RESOURCE_EXHAUSTED past a limit); the
        stream must call ``leave`` however it ends."""
        n = self._per_org.get(org_id, 0)
        if n >= self.limits.max_per_org:
            raise WatchLimitReached("ORG", self.limits.max_per_org)
        if self.streams >= self.limits.max_streams:
            raise WatchLimitReached("PROCESS", self.limits.max_streams)
        self._per_org[org_id] = n + 1
        self.streams += 1
        return Subscription(org_id, asyncio.current_task())

    def join(self, sub: Subscription, start: int, current: int) -> None:
        """Starts delivering to ``sub`` every event after ``start``; ``current`` is the org's
        last sequence, read after ``open``."""
        feed = self._feeds.get(sub.org_id)
        if feed is None:
            feed = self._feeds[sub.org_id] = _Feed(sub.org_id, head=current, base=current)
        elif current > feed.head:
            self._mark_dirty(feed)  # another process's events the next poll would find
        feed.subs.add(sub)
        sub.feed = feed
        sub.last = start
        if start >= feed.base:
            sub.pos = feed.start + bisect.bisect_right(feed.seqs, start)
        if not self._notices_on and self._notices is not None:
            self._notices_on = True
            self._notices.listen(self._on_notice)
        if self._task is None:
            # In a context of its own: a task copies its creator's, and the hub serves every
            # stream for the process's life, not the call that happened to start it (its reads
            # were children of that call's trace span, its log lines had its request id).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="watch-hub", context=contextvars.Context()
            )

    async def next(self, sub: Subscription) -> Sequence[Event]:
        """The stream's next events, in sequence order, none it was sent before; waits for
        new ones. Raises the drop's error, or ServerShuttingDown once the server stops and the
        stream has everything committed by then."""
        feed = sub.feed
        assert feed is not None
        while True:
            if sub.error is not None:
                raise sub.error
            if sub.pos is None:
                if sub.last >= feed.base:
                    sub.pos = feed.start + bisect.bisect_right(feed.seqs, sub.last)
                    continue
                # Behind the window: the backlog comes from the database, read by this stream.
                got = await self._fetch(sub.org_id, sub.last, self._batch)
                if sub.error is not None:
                    raise sub.error
                if got:
                    return got
                continue
            i = sub.pos - feed.start
            if i < 0:  # never left behind without a drop; read the database if it were
                sub.pos = None
                continue
            seqs = feed.seqs
            n = len(seqs)
            # After a catch-up the window may still hold events this stream has sent.
            while i < n and seqs[i] <= sub.last:
                i += 1
            if i < n:
                j = min(n, i + TAKE)
                sub.pos = feed.start + j
                return list(zip(seqs[i:j], feed.items[i:j], strict=True))
            sub.pos = feed.start + n
            if self.closing and feed.final is not None and feed.head >= feed.final:
                raise ServerShuttingDown(sub.last)
            await self._wait(sub, feed)

    def writing(self, sub: Subscription, sequence: int) -> None:
        """Notes that the stream hands ``sequence`` to a write (raises the drop's error if the
        stream was dropped meanwhile)."""
        if sub.error is not None:
            raise sub.error
        sub.last = sequence
        sub.write_since = asyncio.get_running_loop().time()
        self._writing.add(sub)

    def written(self, sub: Subscription) -> None:
        """Notes that the stream's write finished."""
        sub.write_since = 0.0
        self._writing.discard(sub)

    def leave(self, sub: Subscription) -> None:
        """Frees the stream's slot and its place in the window (idempotent)."""
        if not sub.open:
            return
        sub.open = False
        n = self._per_org.get(sub.org_id, 0) - 1
        if n > 0:
            self._per_org[sub.org_id] = n
        else:
            self._per_org.pop(sub.org_id, None)
        self.streams -= 1
        self._writing.discard(sub)
        feed = sub.feed
        sub.pos = None
        if feed is None:
            return
        feed.subs.discard(sub)
        feed.waiting.discard(sub)
        if not feed.subs and self._feeds.get(feed.org_id) is feed:
            del self._feeds[feed.org_id]
            self._ready.pop(feed.org_id, None)
            if not self._feeds:
                self._kick()  # the hub's task ends

    # --- what tests and the benchmark read ------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether other processes' commits wake the hub as they happen (PostgreSQL
        LISTEN/NOTIFY), so that it polls only every ``fallback_seconds``."""
        return self._notices is not None and self._notices.listening

    def buffered(self) -> int:
        """Events held in every window."""
        return sum(len(f.items) for f in self._feeds.values())

    def watched_orgs(self) -> int:
        """Organisations with an open stream."""
        return len(self._feeds)

    # --- the hub ----------------------------------------------------------------------------

    def _drop(self, sub: Subscription, why: str) -> None:
        """Ends a stream with WATCH_TOO_SLOW without waiting on it: its slot and place are
        freed now; a write it is blocked in is interrupted by cancelling its task."""
        if not sub.open:
            return
        sub.error = WatchTooSlow(sub.last, why)
        blocked = sub.write_since != 0.0
        waiter = sub.waiter
        self.dropped += 1
        self.leave(sub)
        log.info(
            "watch stream dropped",
            extra={"org": sub.org_id, "last_sequence": sub.last, "why": why},
        )
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if blocked and sub.task is not None and not sub.task.done():
            sub.task.cancel()

    async def _wait(self, sub: Subscription, feed: _Feed) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sub.waiter = fut
        feed.waiting.add(sub)
        if feed.dirty:
            self._want(feed)
        try:
            await fut
        finally:
            sub.waiter = None
            feed.waiting.discard(sub)

    def _want(self, feed: _Feed) -> None:
        if feed.org_id not in self._ready:
            self._ready[feed.org_id] = feed
            self._kick()

    def _mark_dirty(self, feed: _Feed) -> None:
        feed.dirty = True
        feed.rung += 1
        if feed.waiting:
            self._want(feed)

    def _on_ring(self, orgs: frozenset[int] | None) -> None:
        if self._bell.closed and not self.closing:
            self._kick()
        if not self._feeds:
            return
        if orgs is None:
            for feed in list(self._feeds.values()):
                self._mark_dirty(feed)
            return
        for org in orgs:
            found = self._feeds.get(org)
            if found is not None:
                self._mark_dirty(found)

    def _on_notice(self, orgs: frozenset[int] | None) -> None:
        # None: listening started or stopped, so any org may have events no notification
        # named (committed while nothing listened); every feed is read once.
        if not self._bell.closed:
            self._on_ring(orgs)

    def _kick(self) -> None:
        kicker = self._kicker
        if kicker is not None and not kicker.done():
            kicker.set_result(None)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._kicker = fut
        timer = loop.call_later(seconds, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._kicker = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        polled = ticked = loop.time()
        try:
            while self._feeds:
                try:
                    if self._bell.closed and not self.closing:
                        await self._begin_close()
                        continue
                    if not self._ready:
                        await self._sleep(ticked + self.poll_seconds - loop.time())
                    now = loop.time()
                    if now >= ticked + self.poll_seconds:
                        # Notified of other processes' commits, the hub polls for them only
                        # as a fallback; it still ticks every poll_seconds (no I/O).
                        if not self.listening or now >= polled + self.fallback_seconds:
                            await self._poll()
                            polled = loop.time()
                        ticked = loop.time()
                        self.ticks += 1
                        self._tick(ticked)
                    while self._ready:
                        org, feed = next(iter(self._ready.items()))
                        del self._ready[org]
                        if self._feeds.get(org) is feed:
                            await self._read(feed)
                except Exception:  # a bug of ours: keep the streams fed, say so loudly
                    log.exception("watch hub iteration failed")
                    await asyncio.sleep(self.poll_seconds)
        finally:
            self._task = None

    async def _read(self, feed: _Feed) -> None:
        rung, after = feed.rung, feed.head
        try:
            got = await self._fetch(feed.org_id, after, self._batch)
        except Exception as exc:  # the store failing: the next poll retries
            self._failed("read", exc)
            return
        self.reads += 1
        if self._feeds.get(feed.org_id) is not feed or feed.head != after:
            return
        if got:
            self._append(feed, got)
        if len(got) < self._batch and feed.rung == rung:
            feed.dirty = False
        elif feed.waiting:
            self._want(feed)

    def _append(self, feed: _Feed, got: Sequence[Event]) -> None:
        for seq, data in got:
            feed.seqs.append(seq)
            feed.items.append(data)
        feed.head = got[-1][0]
        if len(feed.items) > self.limits.buffer:
            self._trim(feed, drop=True)
        waiting, feed.waiting = feed.waiting, set()
        for sub in waiting:
            if sub.waiter is not None and not sub.waiter.done():
                sub.waiter.set_result(None)

    def _trim(self, feed: _Feed, *, drop: bool) -> None:
        """Forgets the events every stream in the window has taken; with ``drop``, first
        drops the streams more than ``buffer`` events behind the window's end."""
        end = feed.start + len(feed.items)
        keep = end
        for sub in list(feed.subs):
            if sub.pos is None:
                continue
            if drop and end - sub.pos > self.limits.buffer:
                self._drop(sub, f"it fell more than {self.limits.buffer} events behind")
                continue
            keep = min(keep, sub.pos)
        cut = keep - feed.start
        if cut > 0:
            feed.base = max(feed.base, feed.seqs[cut - 1])
            del feed.seqs[:cut]
            del feed.items[:cut]
            feed.start = keep

    def _tick(self, now: float) -> None:
        """Once per poll: frees what every stream has taken, retries reads that failed, and
        drops streams blocked in one write for too long."""
        for feed in list(self._feeds.values()):
            if feed.items:
                self._trim(feed, drop=len(feed.items) > self.limits.buffer)
            if feed.dirty and feed.waiting:
                self._want(feed)
        stall = self.limits.stall_seconds
        for sub in [s for s in self._writing if now - s.write_since > stall]:
            self._drop(sub, f"it did not take an event for {stall:g} s")

    async def _poll(self) -> None:
        try:
            heads = await self._heads(list(self._feeds))
        except Exception as exc:  # the store failing: the next poll retries
            self._failed("poll", exc)
            return
        self.polls += 1
        for org, head in heads.items():
            feed = self._feeds.get(org)
            if feed is not None and head > feed.head:
                self._mark_dirty(feed)

    async def _begin_close(self) -> None:
        """Shutdown: every stream gets what had committed when it began, then
        SERVER_SHUTTING_DOWN."""
        self.closing = True
        try:
            heads = await self._heads(list(self._feeds))
        except Exception:  # the store failing: the streams end with what was read
            heads = {}
        for feed in list(self._feeds.values()):
            feed.final = max(heads.get(feed.org_id, 0), feed.head)
            if feed.final > feed.head:
                self._mark_dirty(feed)
            waiting, feed.waiting = feed.waiting, set()
            for sub in waiting:  # those with everything end now; the others wait for a read
                if sub.waiter is not None and not sub.waiter.done():
                    sub.waiter.set_result(None)

    def _failed(self, what: str, exc: Exception) -> None:
        now = asyncio.get_running_loop().time()
        if self.closing or now - self._warned < WARN_EVERY:
            log.debug("watch hub %s failed: %s", what, exc)
            return
        self._warned = now
        log.warning(
            "watch hub %s failed; retrying every poll", what, extra={"error": repr(exc)[:300]}
        )
