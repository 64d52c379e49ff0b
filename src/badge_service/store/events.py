"""The award event log: per-organisation sequence numbers, appends and reads, and the bell that
wakes watchers in this process once an append has committed.

Ordering: ``append`` bumps the org's row of ``org_event_sequences`` with an atomic
``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` inside the caller's transaction. On PostgreSQL
that row stays locked until the writer commits, so a second writer of the same org waits and
its (higher) sequence commits after the first. An org's events therefore become visible in
sequence order, and a reader that asks for "sequence > last seen" never skips one. (SQLite
serialises every write.) Callers append as the last statement of their transaction so that
the lock is held only for the commit.

Waking: a watcher in this process waits on the engine's :class:`EventBell`. ``append`` marks
the pooled connection; when the connection goes back to the pool (after the commit or
rollback) the pool's ``checkin`` event rings the bell. Watchers also poll, which covers events
written by other processes (``serve --workers``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from badge_service.store.db import from_micros, to_micros
from badge_service.store.models import award_events, org_event_sequences

EventKind = Literal["awarded", "revoked", "progress"]
KINDS: frozenset[str] = frozenset({"awarded", "revoked", "progress"})

# Key in the pooled connection's info dict: "this connection appended an event".
_RING_MARK = "badge_service.events.ring"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of an org's log."""

    org_id: int
    sequence: int
    kind: str
    payload: dict[str, Any]
    time: dt.datetime


class EventBell:
    """Wakes this process's watchers of one database; closed when the server shuts down.

    ``generation`` counts rings: a watcher notes it before reading the log and waits with
    ``since=`` that value, so a ring that came while it was reading is not lost.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.generation = 0
        self.closed = False

    def ring(self) -> None:
        """Wakes every waiter (they re-read the log; a spurious ring costs one query)."""
        self.generation += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Marks the bell closed and wakes every waiter, so that watch streams end."""
        self.closed = True
        self.ring()

    async def wait(self, seconds: float, *, since: int | None = None) -> None:
        """Returns when the bell rings (or has rung since generation ``since``), or after
        ``seconds``, whichever is first."""
        if self.closed or (since is not None and since != self.generation):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, seconds)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)


_bells: weakref.WeakKeyDictionary[Engine, EventBell] = weakref.WeakKeyDictionary()


def bell(engine: AsyncEngine) -> EventBell:
    """The bell of ``engine`` (one per engine, created with its pool listener on first use)."""
    sync = engine.sync_engine
    found = _bells.get(sync)
    if found is None:
        found = _bells[sync] = EventBell()
        _listen(sync, found)
    return found


def _listen(sync: Engine, target: EventBell) -> None:
    # The checkin event runs when a connection returns to the pool, which is after its
    # transaction committed (or rolled back: a spurious ring is harmless). Ringing from
    # append() itself would wake watchers before the commit, and they would find nothing.
    ref = weakref.ref(target)

    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.info.pop(_RING_MARK, False):
            found = ref()
            if found is not None:
                found.ring()

    event.listen(sync.pool, "checkin", on_checkin)


async def append(
    conn: AsyncConnection, org_id: int, kind: str, payload: dict[str, Any], now: dt.datetime
) -> int:
    """Appends an event to the org's log inside the caller's transaction; returns its
    sequence. ``kind`` is "awarded", "revoked" or "progress". Call it last in the transaction:
    it holds the org's sequence row lock until the commit."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    bell(conn.engine)  # make sure the pool listener exists before the connection returns
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    t = org_event_sequences
    stmt = (
        dialect.insert(t)
        .values(org_id=org_id, last_sequence=1)
        .on_conflict_do_update(
            index_elements=[t.c.org_id], set_={"last_sequence": t.c.last_sequence + 1}
        )
        .returning(t.c.last_sequence)
    )
    sequence = int((await conn.execute(stmt)).scalar_one())
    await conn.execute(
        award_events.insert().values(
            org_id=org_id, sequence=sequence, type=kind, payload=payload, time=to_micros(now)
        )
    )
    (await conn.get_raw_connection()).info[_RING_MARK] = True
    return sequence


async def last_sequence(conn: AsyncConnection, org_id: int) -> int:
    """The org's last committed sequence (0 before its first event)."""
    t = org_event_sequences
    found = (await conn.execute(select(t.c.last_sequence).where(t.c.org_id == org_id))).scalar()
    return int(found or 0)


async def read_after(
    conn: AsyncConnection, org_id: int, after: int, *, limit: int
) -> Sequence[StoredEvent]:
    """The org's events with sequence > ``after``, in sequence order, at most ``limit``."""
    t = award_events
    rows = await conn.execute(
        select(t.c.sequence, t.c.type, t.c.payload, t.c.time)
        .where(t.c.org_id == org_id, t.c.sequence > after)
        .order_by(t.c.sequence)
        .limit(limit)
    )
    return [
        StoredEvent(org_id, int(r.sequence), r.type, dict(r.payload), from_micros(r.time))
        for r in rows
    ]


async def append_many(
    conn: AsyncConnection,
    org_id: int,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    now: dt.datetime,
) -> int:
    """Appends one event per payload, in order, with one sequence bump and multi-row inserts
    (a batch of thousands of awards would otherwise pay a round trip per event); returns the
    last sequence (the org's current one when ``payloads`` is empty). Same ordering and
    locking as append(): call it last in the transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    if not payloads:
        return await last_sequence(conn, org_id)
    bell(conn.engine)
    n = len(payloads)
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    t = org_event_sequences
    stmt = (
        dialect.insert(t)
        .values(org_id=org_id, last_sequence=n)
        .on_conflict_do_update(
            index_elements=[t.c.org_id], set_={"last_sequence": t.c.last_sequence + n}
        )
        .returning(t.c.last_sequence)
    )
    last = int((await conn.execute(stmt)).scalar_one())
    first, micros = last - n + 1, to_micros(now)
    rows = [
        {"org_id": org_id, "sequence": first + i, "type": kind, "payload": p, "time": micros}
        for i, p in enumerate(payloads)
    ]
    # Five columns a row: 500 rows stay under SQLite's and asyncpg's bound-parameter limits.
    for start in range(0, n, 500):
        await conn.execute(award_events.insert(), rows[start : start + 500])
    (await conn.get_raw_connection()).info[_RING_MARK] = True
    return last
