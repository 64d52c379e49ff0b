"""PostgreSQL LISTEN/NOTIFY for award events: how one process learns at once that another
(``serve --workers``, another host) committed events, so that its watch hub need not poll.

Each process holds one connection of its own (outside the pool, opened on first need: the
first commit of events, or the first watch stream) that both sends and listens:

- Sending: the process's event bell (``store.events``) rings after each commit of events,
  with their orgs. Those orgs are gathered and sent as one ``pg_notify`` on CHANNEL (payload:
  the org ids, comma-separated), at most one statement in flight, after a short pause that
  lets a burst of commits share it. The notification goes out *after* the commit, never
  inside the writing transaction: PostgreSQL serialises the commits of every transaction
  that notifies on one cluster-wide lock held through its commit (``PreCommit_Notify`` in
  async.c), so a NOTIFY in each award's transaction would queue all award commits behind one
  another; here only the process's one small notify transaction takes it.
- Listening: ``LISTEN`` on CHANNEL; a notification wakes the listeners (the hub) with the
  orgs named. Notifications this connection sent itself are skipped (the bell already woke
  this process). A notification is only a wake-up: the hub reads the org's events from the
  table in sequence order, so nothing is lost or reordered by it.

A notification may still be missed: a process that dies between its commit and its notify,
or a listening connection lost for a while. So the hub keeps a slow poll while it listens,
the usual one while it does not, and on every (re)connection its listeners are woken for
every org (``None``), which covers whatever was committed while it was not listening.

The connection is checked every CHECK_EVERY seconds (a statement, bounded by PROBE_TIMEOUT)
so that a silently dead one is found; lost, it is reconnected after a backoff (RETRY_FIRST
doubling to RETRY_MAX). Its failures are classified as every store fault is
(``store.faults.classify``): a store fault is logged rate-limited and wakes the health
monitor; anything else is a bug of ours, logged with its traceback; either way it reconnects.

It must reach PostgreSQL directly (or through a pooler in session mode): through PgBouncer in
transaction mode a LISTEN is lost as soon as the server connection is handed to another
client. So it goes to ``Database.listen_url`` (``BADGE_SERVICE_DB_LISTEN_URL``, by default the
database URL). A process whose statement cache is off (``BADGE_SERVICE_DB_STATEMENT_CACHE=0``,
what such a pooler needs) has no notices unless a listen URL is set (``Database.can_listen``):
its hub polls instead, and the start logs that once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import weakref
from collections.abc import Callable
from typing import Any

from badge_service.store.db import PROBE_TIMEOUT, Database
from badge_service.store.events import EventBell
from badge_service.store.faults import classify, describe, log_fault

log = logging.getLogger("badge_service.watch")

CHANNEL = "badge_service_award_events"
# A NOTIFY payload must be shorter than 8000 bytes.
PAYLOAD_LIMIT = 7900
# Pause after a first ring before sending, so a burst of commits shares one notify.
GATHER_SECONDS = 0.005
# How often the connection is checked while nothing is sent on it.
CHECK_EVERY = 5.0
# Reconnection backoff: the first wait, doubled per failure up to the last.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0

_NOTIFY = "SELECT pg_notify($1, $2)"

Wake = Callable[[frozenset[int] | None], None]

_notices: weakref.WeakKeyDictionary[Database, EventNotices] = weakref.WeakKeyDictionary()
# Databases told (logged) that they poll instead of listening.
_polling: weakref.WeakSet[Database] = weakref.WeakSet()


def notices_of(db: Database, bell: EventBell) -> EventNotices | None:
    """The notices of ``db`` for this process (one connection per process and database);
    None when ``db`` must not LISTEN through its URL (a pooler in transaction mode would lose
    the LISTEN without a word, so the hub would wait on notifications that never come)."""
    if not db.can_listen:
        if db not in _polling:
            _polling.add(db)
            log.warning(
                "LISTEN/NOTIFY is off: the statement cache is 0 (a pooler in transaction "
                "mode) and BADGE_SERVICE_DB_LISTEN_URL is not set, so WatchAwards polls for "
                "other processes' events; set it to PostgreSQL itself to be notified at once",
                extra={"channel": CHANNEL},
            )
        return None
    found = _notices.get(db)
    if found is None:
        found = _notices[db] = EventNotices(db, bell)
    return found


def notices_for(db: Database) -> EventNotices | None:
    """The notices of ``db`` in this process, if it has any (for tests and the benchmark)."""
    return _notices.get(db)


def payload_chunks(orgs: set[int]) -> list[str]:
    """The org ids as NOTIFY payloads, comma-separated, each under PAYLOAD_LIMIT bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for org in sorted(orgs):
        text = str(org)
        if current and size + len(text) + 1 > PAYLOAD_LIMIT:
            out.append(",".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        out.append(",".join(current))
    return out


def parse_payload(payload: str) -> frozenset[int] | None:
    """The orgs a payload names; None (any org) when it cannot be read."""
    try:
        return frozenset(int(part) for part in payload.split(","))
    except ValueError:
        return None


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    """A termination listener that sets ``event``."""
    return lambda _conn: event.set()


class EventNotices:
    """This process's LISTEN/NOTIFY connection for one database; see the module docstring.

    ``listening`` says whether notifications are being received now (the hub polls slowly
    while it is true). Listeners added with ``listen`` are called on the event loop with the
    orgs a notification names, and with None when listening starts or stops.
    """

    def __init__(self, db: Database, bell: EventBell) -> None:
        self._db = db
        self._bell = bell
        self._listeners: list[Wake] = []
        self._pending: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._signal: asyncio.Event | None = None
        self._pid = 0
        self.listening = False
        self.closed = False
        # Counters, for tests and the benchmark.
        self.connects = 0
        self.sent = 0
        self.received = 0
        self.failures = 0
        self.last_fault = ""  # the label of the last failure's store fault ("" for a bug)
        bell.listen(self._on_ring)
        db.on_close(self.close)

    @property
    def server_pid(self) -> int:
        """The PostgreSQL backend process of the connection (0 before the first)."""
        return self._pid

    def listen(self, wake: Wake) -> None:
        """Calls ``wake(orgs)`` for every notification of another connection, and
        ``wake(None)`` when listening starts or stops; opens the connection if needed."""
        self._listeners.append(wake)
        self.start()

    def start(self) -> None:
        """Opens the connection (in the background) unless it is open or closed for good."""
        if self._task is None and not self.closed:
            self._signal = asyncio.Event()
            # A context of its own: the connection serves the process, not the call that
            # happened to need it first.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="event-notices", context=contextvars.Context()
            )

    def _on_ring(self, orgs: frozenset[int] | None) -> None:
        if self._bell.closed:
            # Shutting down: what is pending is sent, then the connection closes.
            self.closed = True
            if self._signal is not None:
                self._signal.set()
            return
        if orgs is None:
            return  # not a commit of events
        self._pending.update(orgs)
        if self._task is None:
            self.start()
        elif self._signal is not None:
            self._signal.set()

    def _wake(self, orgs: frozenset[int] | None) -> None:
        for wake in list(self._listeners):
            try:
                wake(orgs)
            except Exception:  # a bug of the listener: the others still hear
                log.exception("event notice listener failed")

    def _on_notice(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        if pid == self._pid:
            return  # sent by this process: its bell already rang
        self.received += 1
        self._wake(parse_payload(payload))

    async def close(self) -> None:
        """Stops listening and closes the connection (Database.close calls it)."""
        self.closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        delay = RETRY_FIRST
        try:
            while not self.closed:
                conn: Any = None
                try:
                    conn = await self._db.connect_direct(
                        "badge-service events", within=self._db.connect_timeout, listen=True
                    )
                    lost = asyncio.Event()
                    conn.add_termination_listener(_setter(lost))
                    await conn.add_listener(CHANNEL, self._on_notice)
                    self._pid = conn.get_server_pid()
                    self.connects += 1
                    self.listening = True
                    delay = RETRY_FIRST
                    log.info(
                        "watch hub listening for notifications",
                        extra={"channel": CHANNEL, "server_pid": self._pid},
                    )
                    self._wake(None)  # what committed while not listening
                    await self._serve(conn, lost)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(exc)
                finally:
                    if self.listening:
                        self.listening = False
                        if not self.closed:
                            log.warning(
                                "watch hub stopped listening for notifications; polling "
                                "until it reconnects",
                                extra={"channel": CHANNEL},
                            )
                        self._wake(None)  # the hub polls at its usual rate again
                    if conn is not None:
                        conn.terminate()  # no round trip: the server may be what hangs
                if self.closed:
                    break
                # Jittered, so that every process of a restarted server does not come at once.
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RETRY_MAX)
        finally:
            self.listening = False

    async def _serve(self, conn: Any, lost: asyncio.Event) -> None:
        """Sends what the bell gathered and checks the connection, until it is lost (raises)
        or the process shuts down (returns)."""
        signal = self._signal
        assert signal is not None
        while True:
            if not self._pending and not self.closed:
                signal.clear()
                waiter = asyncio.ensure_future(signal.wait())
                gone = asyncio.ensure_future(lost.wait())
                try:
                    await asyncio.wait(
                        [waiter, gone], timeout=CHECK_EVERY, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waiter.cancel()
                    gone.cancel()
            if lost.is_set():
                raise ConnectionError("the notification connection was closed")
            if self._pending:
                await asyncio.sleep(GATHER_SECONDS)
                orgs, self._pending = self._pending, set()
                try:
                    for payload in payload_chunks(orgs):
                        await asyncio.wait_for(
                            conn.execute(_NOTIFY, CHANNEL, payload), PROBE_TIMEOUT
                        )
                        self.sent += 1
                except BaseException:
                    self._pending |= orgs  # sent again once reconnected
                    raise
            elif self.closed:
                return
            else:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), PROBE_TIMEOUT)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        fault = classify(exc)
        self.last_fault = "" if fault is None else fault.label
        if fault is None:
            log.error(
                "watch notification connection failed; reconnecting",
                exc_info=exc,
                extra={"error": describe(exc)},
            )
            return
        self._db.faults.note(exc)
        log_fault(fault, exc)
