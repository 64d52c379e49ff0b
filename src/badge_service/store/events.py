"""The award event log: per-organisation sequence numbers, appends and reads, and the bell that
wakes watchers in this process once an append has committed.

Ordering: ``append`` bumps the org's row of ``org_event_sequences`` with an atomic
``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` inside the caller's transaction. On PostgreSQL
that row stays locked until the writer commits, so a second writer of the same org waits and
its (higher) sequence commits after the first. An org's events therefore become visible in
sequence order, and a reader that asks for "sequence > last seen" never skips one. (SQLite
serialises every write.) Callers append as the last statement of their transaction so that
the lock is held only for the commit.

Waking: this process's watch hub (``service.watch``) listens to the engine's :class:`EventBell`.
``append`` marks the pooled connection with the org it appended for; when the connection goes
back to the pool (after the commit or rollback) the pool's ``checkin`` event rings the bell with
those orgs. On SQLite, ``Database.run_write`` commits through a second engine
(``Database.sync_engine``) in a worker thread; ``share_bell`` makes its checkins ring the same
bell, handed to the event loop. The hub also polls ``last_sequences``, which covers events
written by other processes (``serve --workers``).

The functions take a synchronous Connection: they run inside ``Database.run_write`` /
``run_read``, or from async code through ``conn.run_sync``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from badge_service.store.db import at_commit, execute_prepared, from_micros, to_micros
from badge_service.store.models import award_events, org_event_sequences

EventKind = Literal["awarded", "revoked", "progress"]
KINDS: frozenset[str] = frozenset({"awarded", "revoked", "progress"})

# Key in the pooled connection's info dict: the orgs this connection appended events for.
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
    """Tells this process's listeners (the watch hub) of one database that events committed;
    closed when the server shuts down.

    A ring names the orgs whose events committed, or None when it cannot tell (then any org
    may have new events). A spurious ring costs the listener a query, a missing one a poll
    interval.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[frozenset[int] | None], None]] = []
        self.generation = 0
        self.closed = False

    def listen(self, listener: Callable[[frozenset[int] | None], None]) -> None:
        """Calls ``listener(orgs)`` on the event loop's thread at every ring."""
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[frozenset[int] | None], None]) -> None:
        """Stops calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def ring(self, orgs: frozenset[int] | None = None) -> None:
        """Tells every listener that events of ``orgs`` (None: of any org) committed."""
        self.generation += 1
        for listener in list(self._listeners):
            listener(orgs)

    def close(self) -> None:
        """Marks the bell closed and rings it, so that listeners end their watch streams."""
        self.closed = True
        self.ring(None)


@dataclass(slots=True)
class _Target:
    """What a checkin of one engine's marked connection rings, and from which loop."""

    bell: EventBell
    # None: checkins come on the bell's own loop thread. Otherwise rings are handed to it.
    loop: asyncio.AbstractEventLoop | None


_targets: weakref.WeakKeyDictionary[Engine, _Target] = weakref.WeakKeyDictionary()


def bell(engine: AsyncEngine) -> EventBell:
    """The bell of ``engine`` (one per engine, created with its pool listener on first use)."""
    return _target_of(engine.sync_engine).bell


def _target_of(sync: Engine) -> _Target:
    found = _targets.get(sync)
    if found is None:
        found = _targets[sync] = _Target(EventBell(), None)
        _listen(sync)
    return found


def share_bell(engine: AsyncEngine, other: Engine) -> None:
    """Makes appends committed through ``other`` (another engine on the same database, such as
    ``Database.sync_engine``, whose connections run in worker threads) ring ``engine``'s bell.
    Call it on the event loop the bell's watchers run on: a ring from another thread is handed
    to that loop."""
    target = _Target(bell(engine), asyncio.get_running_loop())
    if other not in _targets:
        _listen(other)
    _targets[other] = target


def _listen(sync: Engine) -> None:
    # The checkin event runs when a connection returns to the pool, which is after its
    # transaction committed (or rolled back: a spurious ring is harmless). Ringing from
    # append() itself would wake watchers before the commit, and they would find nothing.
    # The target is looked up at each checkin, so share_bell may change it at any time.
    engine_ref = weakref.ref(sync)

    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        orgs = record.info.pop(_RING_MARK, None) if record is not None else None
        if not orgs:
            return
        engine = engine_ref()
        target = _targets.get(engine) if engine is not None else None
        if target is None:
            return
        rung = frozenset(orgs)
        if target.loop is None:
            target.bell.ring(rung)
            return
        # A group commit's COMMIT (and this checkin) runs in a worker thread, and asyncio
        # futures may only be resolved on their loop's thread.
        try:
            target.loop.call_soon_threadsafe(target.bell.ring, rung)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            pass

    event.listen(sync.pool, "checkin", on_checkin)


def _mark(conn: Connection, org_id: int) -> None:
    """Marks the pooled connection so that its return to the pool rings the bell for
    ``org_id``. The mark is set after the statements: a job of a group commit rolled back to
    its savepoint leaves its org in the mark, which costs a spurious ring, never a missing
    one."""
    _target_of(conn.engine)  # the pool listener must exist before the connection returns
    info = conn.connection.info
    orgs = info.get(_RING_MARK)
    if orgs is None:
        info[_RING_MARK] = {org_id}
    else:
        orgs.add(org_id)


def _sequence_statement(dialect: Any) -> Any:
    # INSERT .. ON CONFLICT DO UPDATE .. RETURNING: the org's first event makes the row; the
    # row lock (PostgreSQL) is held to the commit, which orders an org's commits by sequence.
    t = org_event_sequences
    ins = dialect.insert(t)
    return ins.on_conflict_do_update(
        index_elements=[t.c.org_id],
        set_={"last_sequence": t.c.last_sequence + ins.excluded.last_sequence},
    ).returning(t.c.last_sequence)


# Statements built once (SQLAlchemy's per-call cost of a statement built per call exceeds what
# the database spends on it); run with execute_prepared.
_BUMP = {"sqlite": _sequence_statement(sqlite), "postgresql": _sequence_statement(postgresql)}
_INSERT = award_events.insert()
_LAST = select(org_event_sequences.c.last_sequence).where(
    org_event_sequences.c.org_id == bindparam("org_id")
)
_LASTS = select(org_event_sequences.c.org_id, org_event_sequences.c.last_sequence).where(
    org_event_sequences.c.org_id.in_(bindparam("org_ids", expanding=True))
)
# Orgs per query of last_sequences: well under SQLite's limit of bound parameters.
_LASTS_CHUNK = 1000
_AFTER = (
    select(
        award_events.c.sequence, award_events.c.type, award_events.c.payload, award_events.c.time
    )
    .where(
        award_events.c.org_id == bindparam("org_id"), award_events.c.sequence > bindparam("after")
    )
    .order_by(award_events.c.sequence)
    .limit(bindparam("limit"))
)


def append(
    conn: Connection, org_id: int, kind: str, payload: dict[str, Any], now: dt.datetime
) -> int:
    """Appends an event to the org's log inside the caller's transaction; returns its
    sequence. ``kind`` is "awarded", "revoked" or "progress". Call it last in the transaction:
    it holds the org's sequence row lock until the commit."""
    return append_events(conn, org_id, [(kind, payload)], now)


def append_events(
    conn: Connection,
    org_id: int,
    items: Sequence[tuple[str, dict[str, Any]]],
    now: dt.datetime,
) -> int:
    """Appends one event per (kind, payload), in order, with one sequence bump and one
    executemany of the rows (a batch of thousands of awards would otherwise pay a round trip
    per event); returns the last sequence (the org's current one when ``items`` is empty).
    Call it last in the transaction: it holds the org's sequence row lock until the commit."""
    for kind, _ in items:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
    if not items:
        return last_sequence(conn, org_id)
    n = len(items)
    ((last,),) = execute_prepared(
        conn, _BUMP[conn.dialect.name], {"org_id": org_id, "last_sequence": n}
    )
    first, micros = int(last) - n + 1, to_micros(now)
    rows = [
        {"org_id": org_id, "sequence": first + i, "type": kind, "payload": p, "time": micros}
        for i, (kind, p) in enumerate(items)
    ]
    execute_prepared(conn, _INSERT, rows[0] if n == 1 else rows)
    _mark(conn, org_id)
    return int(last)


def append_events_at_commit(
    conn: Connection,
    org_id: int,
    items: Sequence[tuple[str, dict[str, Any]]],
    now: dt.datetime,
) -> None:
    """append_events, its sequence not needed: in a PostgreSQL group commit the events of the
    batch's writes are appended together at its end (db.at_commit), so that the org's
    sequence row is locked from there to the COMMIT only, not from the batch's first write
    of the org; they keep the order of the writes and, within one, of ``items``."""
    for kind, _ in items:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
    if items:
        at_commit(conn, ("events", org_id), (list(items), now), _append_batch)


def _append_batch(
    conn: Connection,
    key: tuple[str, int],
    appended: list[tuple[list[tuple[str, dict[str, Any]]], dt.datetime]],
) -> None:
    """The events of a group commit's writes of one org (at_commit), in their order, each
    with its write's time."""
    _, org_id = key
    if len(appended) == 1:
        items, now = appended[0]
        append_events(conn, org_id, items, now)
        return
    n = sum(len(items) for items, _ in appended)
    ((last,),) = execute_prepared(
        conn, _BUMP[conn.dialect.name], {"org_id": org_id, "last_sequence": n}
    )
    sequence = int(last) - n
    rows = []
    for items, now in appended:
        micros = to_micros(now)
        for kind, payload in items:
            sequence += 1
            rows.append(
                {
                    "org_id": org_id,
                    "sequence": sequence,
                    "type": kind,
                    "payload": payload,
                    "time": micros,
                }
            )
    execute_prepared(conn, _INSERT, rows)
    _mark(conn, org_id)


def last_sequence(conn: Connection, org_id: int) -> int:
    """The org's last committed sequence (0 before its first event)."""
    found = conn.execute(_LAST, {"org_id": org_id}).scalar()
    return int(found or 0)


def last_sequences(conn: Connection, org_ids: Iterable[int]) -> dict[int, int]:
    """The last committed sequence of each of ``org_ids`` that has had an event (one query
    per thousand orgs): what the watch hub polls for other processes' events."""
    ids = sorted(set(org_ids))
    out: dict[int, int] = {}
    for i in range(0, len(ids), _LASTS_CHUNK):
        rows = conn.execute(_LASTS, {"org_ids": ids[i : i + _LASTS_CHUNK]})
        out.update((int(org), int(last)) for org, last in rows)
    return out


def read_after(conn: Connection, org_id: int, after: int, *, limit: int) -> Sequence[StoredEvent]:
    """The org's events with sequence > ``after``, in sequence order, at most ``limit``."""
    rows = conn.execute(_AFTER, {"org_id": org_id, "after": after, "limit": limit})
    return [
        StoredEvent(org_id, int(r.sequence), r.type, dict(r.payload), from_micros(r.time))
        for r in rows
    ]
