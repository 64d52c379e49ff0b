"""The database handle: engine set-up for SQLite and PostgreSQL and the unit of work.

Every RPC runs in one transaction, in one of two forms:

- ``await db.run_read(fn, *args)`` / ``await db.run_write(fn, *args)`` run a synchronous
  function ``fn(conn: Connection, *args)`` as the whole transaction. On SQLite the function runs
  in one trip to a thread (a plain ``sqlite3`` connection through SQLAlchemy's sync engine),
  instead of a trip per driver call as aiosqlite makes. On PostgreSQL the function runs
  through ``AsyncConnection.run_sync`` on asyncpg (in a greenlet, on the event loop). Writes
  are group-committed on both (below). Hot paths use this form.
- ``async with db.read() as conn`` / ``db.write()`` yield an AsyncConnection for code written
  with ``await``; a read of exactly one statement may use ``db.read(snapshot=False)``, which on
  SQLite runs it without an explicit BEGIN. Such code can call the synchronous store functions
  with ``await conn.run_sync(fn, *args)``.

On SQLite, write transactions start with ``BEGIN IMMEDIATE`` (so two writers never deadlock
upgrading read locks) and are serialised in-process by a lock (so they queue on the event loop
rather than in SQLite's sleep-and-retry busy handler); ``busy_timeout`` still covers writers in
other processes. WAL lets reads run beside a write; ``synchronous=FULL`` makes every
acknowledged commit durable.

Group commit (SQLite, ``run_write``): writes that arrive while a commit is in progress queue,
and the next transaction runs all of them, each inside its own SAVEPOINT, then commits once. A
function that raises is rolled back to its savepoint alone and its caller gets the error; the
others commit. Every caller is answered only after the COMMIT (one fsync for the batch)
returns, so an acknowledged write is durable, and a failed COMMIT fails every caller of the
batch. A write whose caller was cancelled before its batch started is skipped.

Group commit on PostgreSQL (``run_write``, ``_pg_batch``). The same contract, with what differs:

- Up to ``writers`` batches run at once (``_PG_WRITERS``, at most the pool size), each on a
  connection of its own (a small engine
  of its own, in driver autocommit mode: the batch sends BEGIN, its savepoints and COMMIT
  straight to asyncpg). A batch's statements are round trips one after another, so a single
  connection would leave the server and this process waiting on each other. A committer takes
  an equal share of the queue with the writers not running a batch (itself included): all of
  it while the others are busy, a part when callers answered together write again at once.
  At most ``_PG_GROUP_COMMIT_MAX`` writes a batch: each is a subtransaction, and past 64 in one
  transaction every other session's snapshots slow down (the subxid cache overflows).
- A write's statements run by ``execute_prepared`` go straight to the batch's asyncpg
  connection (prepared once per connection by asyncpg's statement cache, SQLAlchemy's bind
  processors applied, errors raised as SQLAlchemy raises them); anything else runs through
  SQLAlchemy on the same connection and transaction. One SAVEPOINT per write (the previous
  write's RELEASE sent with it in one simple query); a lone write needs none.
- The rows every write of an org updates (its badge count, its award counts, its templates'
  badge counts, its event sequence) are written through ``at_commit``: once for the batch,
  after its last write, in sorted key order, just before COMMIT. Taken inside each write,
  their row locks would be held from the batch's first write of the org to its COMMIT, and
  batches of one org would queue whole behind each other; taken at the end, batches overlap
  up to there, and the fixed order means two batches never deadlock on them. An org's events
  still commit in sequence order (the sequence row is locked from the bump to the COMMIT).
- A write that fails is rolled back to its savepoint (its locks too) and its caller gets its
  error. One that lost a deadlock or serialization conflict (40P01, 40001) rolls back the
  whole batch, so that the transaction it conflicted with gets every lock the batch held at
  once, and the batch runs again in a later one, up to ``_PG_RETRIES`` tries of the write that
  lost; so does a whole batch whose tail or COMMIT lost one.
  Any other failure of BEGIN, a savepoint, a ROLLBACK, the tail or COMMIT fails every caller
  of the batch, and the connection is dropped rather than pooled (its transaction may still
  be open).
- Bounds: the statement timeout is set on the writers' connections as on the pool's, and
  asyncpg's own timer (``command_timeout``, statement plus connect timeout) ends every
  statement of a batch against a frozen server; waiting for a writer connection takes at most
  the connect timeout. A caller's cancellation (its deadline) does not reach a batch that is
  running, as it does not on SQLite.

Failures and time limits: every failure of a database call is shown to ``self.faults``
(store/faults.py), which wakes the health monitor when the store looks unavailable. On
PostgreSQL each connection has ``statement_timeout`` set (a slow statement fails on the server,
SQLSTATE 57014), connecting and waiting for a pooled connection take at most the connect
timeout, and every call's database work (every statement, in a group commit) is bounded by
both together (a frozen server answers nothing, so only a timer on our side can end the
wait). On SQLite the statement timeout is the
busy timeout (the wait for another writer's lock). A call's own gRPC deadline needs nothing
here: grpc.aio cancels the call's task when it passes, and the cancellation reaches the
driver (asyncpg then asks the server to cancel the statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy import ColumnElement, Select, and_, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_only

from badge_service.store import errors
from badge_service.store.faults import StoreFaults
from badge_service.store.faults import classify as faults_classify

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_micros(value: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> dt.datetime:
    """The aware UTC datetime of integer microseconds since the epoch."""
    return _EPOCH + dt.timedelta(microseconds=value)


def opt_micros(value: dt.datetime | None) -> int | None:
    """to_micros, passing None through."""
    return None if value is None else to_micros(value)


def opt_datetime(value: int | None) -> dt.datetime | None:
    """from_micros, passing None through."""
    return None if value is None else from_micros(value)


T = TypeVar("T")
P = ParamSpec("P")

# Threads that run SQLite read transactions. sqlite3 lets go of the GIL while SQLite works, so a
# few let a slow read (a filtered count) run beside quick ones; more would only contend.
_SQLITE_READERS = 4
# At most this many writes share one group commit, bounding the time a batch holds the lock.
_GROUP_COMMIT_MAX = 256
# On PostgreSQL fewer: each write of a batch is a subtransaction, and past 64 of them (the
# server's PGPROC_MAX_CACHED_SUBXIDS) every other session's snapshot must look subtransactions
# up in pg_subtrans, a known cliff.
_PG_GROUP_COMMIT_MAX = 60
# Group commits in flight at once on PostgreSQL, each on a connection of its own: a batch's
# statements are round trips one after another, so one connection alone would leave the
# server and this process waiting on each other. The rows every write of an org updates are
# taken at each batch's end (at_commit), so batches of one org overlap up to there.
_PG_WRITERS = 4
# How often a write that lost a deadlock or a serialization conflict inside a batch is run
# again (in a later batch) before its caller gets the error.
_PG_RETRIES = 3


class DatabaseURLError(ValueError):
    """A database URL the service cannot use; the message says why, in one line."""


_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_URL_EXAMPLES = "sqlite+aiosqlite:///./badges.db or postgresql+asyncpg://user@host:5432/db"


def parse_database_url(url: str) -> URL:
    """The parsed URL, or DatabaseURLError naming what is wrong with it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The credentials of a URL that cannot be parsed are not echoed.
        shown = re.sub(r"(?<=://)[^@/]*(?=@)", "***", url)
        raise DatabaseURLError(
            f"cannot parse {shown!r} as a database URL (e.g. {_URL_EXAMPLES})"
        ) from None
    except ValueError as exc:  # e.g. a port that is not a number
        raise DatabaseURLError(f"bad database URL ({exc})") from None
    driver = parsed.drivername
    if driver not in _DRIVERS:
        raise DatabaseURLError(
            f"unsupported database driver {driver!r}: use {' or '.join(_DRIVERS)}"
        )
    for option in ("prepared_statement_cache_size", "prepared_statement_name_func"):
        if option in parsed.query:
            # Set on one path only it would mix the caches (statement_options).
            raise DatabaseURLError(
                f"{option} in the URL is not used: set BADGE_SERVICE_DB_STATEMENT_CACHE "
                "(0 behind PgBouncer in transaction mode) instead"
            )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseURLError(
            "a SQLite database must be a file (e.g. sqlite+aiosqlite:///./badges.db)"
        )
    return parsed


# The health probe's bound on a read (a frozen server answers nothing).
PROBE_TIMEOUT = 1.0
_SCHEMA_VERSION = text("PRAGMA schema_version")


def _touch_header(conn: Connection) -> None:
    """Rewrites the SQLite header's user_version with its own value: a committed write that
    changes nothing, so it fails where any write would (a full disk, a read-only file, I/O
    errors). An UPDATE to equal values would not do: SQLite skips writing an unchanged row."""
    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
    conn.exec_driver_sql(f"PRAGMA user_version = {version}")


@dataclass(slots=True)
class _Job(Generic[T]):
    """A queued write: the function, its arguments and the caller's future."""

    fn: Callable[..., T]
    args: tuple[Any, ...]
    future: asyncio.Future[T]
    tries: int = 0  # PostgreSQL: runs lost to a deadlock or serialization conflict so far


class Database:
    """One engine and the transaction boundaries of the service."""

    # Told each group commit's number of writes (ObservedDatabase sets it for metrics).
    _group_commits: Callable[[int], None] | None = None

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        statement_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        statement_cache_size: int = 100,
        listen_url: str = "",
    ) -> None:
        self.url = parse_database_url(url)
        # Where connect_direct(listen=True) goes (store.notify): PgBouncer in transaction mode
        # cannot LISTEN, so a deployment behind one names the server itself here.
        self.listen_url = parse_database_url(listen_url) if listen_url else self.url
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.faults = StoreFaults()
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        # Pool wait and connect, then statements each within statement_timeout on the server.
        self._bound: float | None = None
        self._probe_conn: Any = None  # asyncpg.Connection of the health probe (PostgreSQL)
        self._pg_pool: Any = None  # asyncpg.Pool of fetch (PostgreSQL), see _open_pg_pool
        self._pg_pool_lock = asyncio.Lock()
        self.pool_size = pool_size
        # Statements kept prepared under a name per connection, on every PostgreSQL path; 0
        # behind PgBouncer in transaction mode (see statement_options).
        self.statement_cache_size = statement_cache_size
        # Whether this process may LISTEN (store.notify): through a transaction-mode pooler
        # (what a statement cache of 0 is for) a LISTEN would be lost unheard, so then only a
        # listen URL of its own (the server itself) turns it on; else the watch hub polls.
        self.can_listen = bool(listen_url) or statement_cache_size > 0
        # Run by close(), first: what holds a connection of its own (store.notify's listener).
        self._closers: list[Callable[[], Awaitable[None]]] = []
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": statement_timeout}
            # Every transaction is ended by read()/write() (or by Connection.close()), so the
            # pool's unconditional rollback on return is a wasted round trip to the aiosqlite
            # thread; _configure_sqlite rolls back only when SQLite reports one still open.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=False,
                pool_timeout=connect_timeout,
                connect_args={
                    "timeout": connect_timeout,
                    "server_settings": {"statement_timeout": _millis(statement_timeout)},
                    **statement_options(statement_cache_size),
                },
            )
            self._bound = statement_timeout + connect_timeout
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        errors.listen(self.engine.sync_engine)
        # PostgreSQL's group commit (run_write) on connections of its own, in autocommit mode
        # at the driver: the batch sends BEGIN, its savepoints and COMMIT itself (see
        # _pg_batch), so SQLAlchemy's lazily started transaction must stay out of the way.
        self._pg_writers: AsyncEngine | None = None
        # PostgreSQL's group commits at once (each holds a connection of its own).
        self.writers = max(1, min(_PG_WRITERS, pool_size))
        if not self.is_sqlite:
            self._pg_writers = create_async_engine(
                self.url,
                isolation_level="AUTOCOMMIT",
                pool_size=self.writers,
                max_overflow=0,
                pool_pre_ping=False,
                pool_timeout=connect_timeout,
                connect_args={
                    "timeout": connect_timeout,
                    # asyncpg's own timer on every statement of a batch (raw or through
                    # SQLAlchemy): a frozen server answers nothing, so the server's
                    # statement_timeout alone would not end the wait.
                    "command_timeout": statement_timeout + connect_timeout,
                    **statement_options(statement_cache_size),
                    "server_settings": {
                        "statement_timeout": _millis(statement_timeout),
                        "application_name": "badge-service",
                    },
                },
            )
            errors.listen(self._pg_writers.sync_engine)
            _note_batch_writes(self._pg_writers.sync_engine)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self.sync_engine: Engine | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._queue: list[_Job[Any]] = []
        self._committer: asyncio.Task[None] | None = None  # SQLite's one committer
        self._pg_committers: set[asyncio.Task[None]] = set()  # PostgreSQL's (writers)
        self._pg_running = 0  # of them, those running a batch now
        self._raw: sqlite3.Connection | None = None
        if self.is_sqlite:
            busy_ms = _millis(statement_timeout)
            _configure_sqlite(self.engine, busy_ms)
            # The same file through the stdlib driver, for run_read/run_write: a connection
            # moves between the pool's threads, never used by two at once.
            self.sync_engine = create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                connect_args={"timeout": statement_timeout, "check_same_thread": False},
                pool_size=_SQLITE_READERS + 1,
                max_overflow=0,
            )
            _configure_sqlite_connections(self.sync_engine, raw_begin=True, busy_ms=busy_ms)
            errors.listen(self.sync_engine)
            _note_batch_writes(self.sync_engine)

            @event.listens_for(self.sync_engine, "reset")
            def _on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
                # The pool skips its rollback when SQLAlchemy believes the transaction ended,
                # which a failed COMMIT can leave open; asking SQLite costs nothing.
                if not state.terminate_only and dbapi_conn.in_transaction:
                    dbapi_conn.rollback()

            self._readers = ThreadPoolExecutor(_SQLITE_READERS, thread_name_prefix="sqlite-read")
            # One writer thread: SQLite has one writer anyway.
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")

    @property
    def batch_engine(self) -> Engine | None:
        """The engine whose connections commit run_write's group commits (SQLite's sync
        engine, PostgreSQL's writers), whose commits of events must ring the same bell as
        ``engine``'s (store.events.share_bell)."""
        if self.sync_engine is not None:
            return self.sync_engine
        return None if self._pg_writers is None else self._pg_writers.sync_engine

    async def run_read(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Runs ``fn(conn, *args)`` as one read-only transaction (one consistent snapshot on
        both databases) and returns its result."""
        try:
            if self._readers is None:
                async with (
                    asyncio.timeout(self._bound),
                    self.engine.connect() as conn,
                    conn.begin(),
                ):
                    return await conn.run_sync(fn, *args, **kwargs)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._readers, self._sqlite_read, fn, args, kwargs)
        except Exception as exc:
            raise self._failed(exc)  # noqa: B904 - translate sets the cause

    def _failed(self, exc: Exception) -> Exception:
        """What a unit of work raises for ``exc``, which failed it: the store's health hears of
        it, and store/errors.py translates it (a domain error, or ``exc`` itself)."""
        self.faults.note(exc)
        return errors.translate(exc)

    async def fetch(
        self, *queries: tuple[Executable, Mapping[str, Any]]
    ) -> list[Sequence[Sequence[Any]]]:
        """Runs each (statement, parameters) in one read snapshot and returns each one's rows
        as tuples of the driver's values (no SQLAlchemy type processing: select plain columns).

        For the hottest reads only, and only statements an index bounds to a few rows (a
        primary-key lookup, a keyset or short offset page): on SQLite they run on the event
        loop's own thread through a plain sqlite3 connection, since such a statement costs a
        few microseconds there, against some 60 through SQLAlchemy and over 100 more for the
        trip to a thread and back. Statements must use named ``bindparam``s only; each is
        compiled once. On PostgreSQL they run on asyncpg directly, outside SQLAlchemy (whose
        async layer cost several times the driver's own work per call): a pool of its own
        (``_open_pg_pool``), each statement prepared once per connection by asyncpg's
        statement cache, its rows asyncpg's Records; several statements in one read-only
        REPEATABLE READ transaction, one snapshot as on SQLite.
        """
        if not self.is_sqlite:
            try:
                async with asyncio.timeout(self._bound):
                    pool = self._pg_pool or await self._open_pg_pool()
                    conn = await pool.acquire()
                    try:
                        rows = await _pg_fetch(conn, self.engine.dialect, queries)
                    except BaseException as exc:
                        if not isinstance(exc, asyncio.CancelledError):
                            conn.terminate()  # failed: not to be used again
                        # A cancelled call (its deadline, or the bound above): asyncpg has
                        # asked the server to cancel the statement; the release waits for
                        # that, but not without bound (a frozen server), then drops it.
                        with contextlib.suppress(Exception):
                            await pool.release(conn, timeout=_CANCEL_WAIT)
                        raise
                    await pool.release(conn)
                    return rows
            except Exception as exc:
                error = _sqlalchemy_error(self.engine.dialect, exc, str(queries[0][0]), None)
                raise self._failed(error)  # noqa: B904
        try:
            raw = self._raw or self._open_raw()
            if len(queries) == 1:
                return [self._raw_rows(raw, *queries[0])]
            # Deferred BEGIN: the snapshot is taken at the first read, so the statements
            # agree with each other (WAL).
            raw.execute("BEGIN")
            try:
                return [self._raw_rows(raw, stmt, params) for stmt, params in queries]
            finally:
                if raw.in_transaction:  # not after an error that already ended it
                    raw.execute("COMMIT")
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
                # As SQLAlchemy would raise it, then as every unit of work raises it.
                error = DBAPIError.instance("", None, exc, sqlite3.Error)
                error.__cause__, error.__suppress_context__ = exc, True  # raise ... from exc
                raise self._failed(error)  # noqa: B904 - its cause is set above
        # SQLite is locked against readers (another process's recovery or exclusive lock):
        # the loop's connection never waits (busy_timeout 0), a reader thread does.
        return await self.run_read(_fetch_rows, queries)

    def _raw_rows(
        self, raw: sqlite3.Connection, stmt: Executable, params: Mapping[str, Any]
    ) -> list[Any]:
        assert self.sync_engine is not None
        sql, values = _prepared(stmt, self.sync_engine.dialect, params).bind(params)
        return raw.execute(sql, values).fetchall()

    def _open_raw(self) -> sqlite3.Connection:
        path = self.url.database
        assert path
        # timeout=0: on the event loop's thread a busy database must fail fast, not sleep.
        raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        raw.execute("PRAGMA query_only=1")  # this connection never writes
        self._raw = raw
        return raw

    def _sqlite_read(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        assert self.sync_engine is not None
        with self.sync_engine.connect() as conn, conn.begin():
            return fn(conn, *args, **kwargs)

    async def run_write(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Runs ``fn(conn, *args)`` as a read-write transaction and returns its result once
        the transaction has committed; an error from ``fn`` rolls its work back and is raised.
        On SQLite it may share a group commit with other writes (see the module docstring)."""
        try:
            loop = asyncio.get_running_loop()
            call = fn if not kwargs else _bind_kwargs(fn, kwargs)
            job: _Job[T] = _Job(call, args, loop.create_future())
            self._queue.append(job)
            if self.is_sqlite:
                if self._committer is None:
                    self._committer = loop.create_task(self._commit_queued())
            elif len(self._pg_committers) < self.writers:
                committer = loop.create_task(self._commit_queued_pg())
                self._pg_committers.add(committer)
                # Also when it is cancelled before it ever ran (then its finally does not run).
                committer.add_done_callback(self._pg_committers.discard)
            return await job.future
        except Exception as exc:
            raise self._failed(exc)  # noqa: B904 - translate sets the cause

    async def _commit_queued(self) -> None:
        """Commits queued writes in batches until the queue is empty."""
        assert self._write_lock is not None
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                async with self._write_lock:
                    # Taken under the lock: writes that queued while write() held it join.
                    batch = [j for j in self._queue[:_GROUP_COMMIT_MAX] if not j.future.done()]
                    del self._queue[:_GROUP_COMMIT_MAX]
                    if not batch:
                        continue
                    if self._group_commits is not None:
                        self._group_commits(len(batch))
                    try:
                        outcomes = await asyncio.shield(
                            loop.run_in_executor(self._writer, _commit_batch, self, batch)
                        )
                    except asyncio.CancelledError:  # the loop is going away
                        for job in batch:
                            job.future.cancel()
                        raise
                    except BaseException as exc:  # BEGIN or COMMIT failed: nothing landed
                        error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                        for job in batch:
                            if not job.future.done():
                                job.future.set_exception(error)
                        if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt
                            raise
                        continue
                for job, (ok, value) in zip(batch, outcomes, strict=True):
                    if job.future.done():
                        continue
                    if ok:
                        job.future.set_result(value)
                    else:
                        job.future.set_exception(value)
        finally:
            self._committer = None
            for job in self._queue:  # only when cancelled (shutdown)
                if not job.future.done():
                    job.future.cancel()
            self._queue.clear()

    async def _commit_queued_pg(self) -> None:
        """Commits queued writes in batches until the queue is empty (PostgreSQL: up to
        ``writers`` of these run at once, each a batch at a time on a connection of its own)."""
        try:
            while self._queue:
                # A share of what is queued for each writer free to take some (this one
                # included), so that writes arriving together (the callers of the last batch
                # writing again) spread over the writers; all of it while the others are busy.
                free = self.writers - self._pg_running
                take = min(_PG_GROUP_COMMIT_MAX, -(-len(self._queue) // max(1, free)))
                batch = [j for j in self._queue[:take] if not j.future.done()]
                del self._queue[:take]
                if not batch:
                    continue
                if self._group_commits is not None:
                    self._group_commits(len(batch))
                self._pg_running += 1
                try:
                    outcomes = await asyncio.shield(self._run_pg_batch(batch))
                except asyncio.CancelledError:  # the loop is going away
                    for job in batch:
                        job.future.cancel()
                    raise
                except _LostConflict as lost:  # rolled back whole: all of it runs again
                    self._run_again(batch, lost.error, lost.job)
                    continue
                except Exception as exc:  # BEGIN, its tail or COMMIT failed: nothing landed
                    if _sqlstate(exc) in _PG_CONFLICTS:  # lost a conflict: runs again whole
                        self._run_again(batch, exc, None)
                    else:
                        for job in batch:
                            if not job.future.done():
                                job.future.set_exception(exc)
                    continue
                finally:
                    self._pg_running -= 1
                again = []
                for job, (ok, value) in zip(batch, outcomes, strict=True):
                    if job.future.done():
                        continue
                    if ok:
                        job.future.set_result(value)
                    elif value is _RETRY:
                        again.append(job)
                    else:
                        job.future.set_exception(value)
                self._queue[:0] = again  # first in the next batch
        except asyncio.CancelledError:  # shutdown
            for job in self._queue:
                if not job.future.done():
                    job.future.cancel()
            self._queue.clear()
            raise
        finally:
            # At once, with no await since the queue was found empty: a write queued after
            # this must see a free place and start a committer.
            self._pg_committers.discard(asyncio.current_task())

    def _run_again(self, batch: list[_Job[Any]], error: Exception, loser: _Job[Any] | None) -> None:
        """Queues the writes of a batch that was rolled back whole first, to run again: the
        write that lost a conflict (``loser``; every one when None) counts a try, and gets
        ``error`` instead once it has none left."""
        again = []
        for job in batch:
            if job.future.done():
                continue
            if loser is None or job is loser:
                if job.tries >= _PG_RETRIES:
                    job.future.set_exception(error)
                    continue
                job.tries += 1
            again.append(job)
        self._queue[:0] = again

    async def _run_pg_batch(self, batch: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        """Runs a batch of writes in one PostgreSQL transaction (_pg_batch) on a writer
        connection; a connection left in an unknown state is dropped, not pooled again."""
        assert self._pg_writers is not None
        async with self._pg_writers.connect() as conn:
            try:
                return await conn.run_sync(_pg_batch, batch)
            except _LostConflict:  # rolled back: the connection is fine
                raise
            except BaseException:
                # The batch's transaction may still be open on the server (a cancel, a lost
                # connection, a failed ROLLBACK): SQLAlchemy, in autocommit mode, would not
                # roll it back, so the connection goes.
                await conn.invalidate()
                raise

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (one consistent snapshot on both databases).

        ``snapshot=False`` is for blocks that run exactly one statement: on SQLite it skips the
        explicit BEGIN, as a lone SELECT in autocommit mode is already atomic and consistent
        (WAL), which saves round trips to the driver thread. PostgreSQL ignores it.
        """
        try:
            if snapshot or not self.is_sqlite:
                async with (
                    asyncio.timeout(self._bound),
                    self.engine.connect() as conn,
                    conn.begin(),
                ):
                    yield conn
                return
            async with self.engine.connect() as conn:
                # Set on the sync connection directly: the option does no I/O, and the async
                # wrapper would spend a greenlet switch on it.
                conn.sync_connection.execution_options(sqlite_begin="")  # type: ignore[union-attr]
                async with conn.begin():
                    yield conn
        except Exception as exc:
            raise self._failed(exc)  # noqa: B904 - translate sets the cause

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block exits without an error."""
        try:
            if self._write_lock is None:
                async with (
                    asyncio.timeout(self._bound),
                    self.engine.connect() as conn,
                    conn.begin(),
                ):
                    yield conn
                return
            async with self._write_lock, self.engine.connect() as conn:
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                async with conn.begin():
                    yield conn
        except Exception as exc:
            raise self._failed(exc)  # noqa: B904 - translate sets the cause

    async def probe(self, *, write: bool) -> None:
        """Raises unless the store answers a read within PROBE_TIMEOUT and, with ``write``,
        would take a write: on SQLite it commits one that changes nothing (within the
        statement timeout), on PostgreSQL it asks whether transactions are read-only.

        For the health monitor and the start. It needs no table, so it may run before the
        migrations. On PostgreSQL it uses a connection of its own, outside the pool, so that
        a pool exhausted by a burst of calls is not taken for a failed store.
        """
        if self.is_sqlite:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.fetch((_SCHEMA_VERSION, {}))  # reads the file's header
            if write:
                async with asyncio.timeout(self.statement_timeout):
                    await self.run_write(_touch_header)
            return
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                conn = self._probe_conn
                if conn is None or conn.is_closed():
                    conn = self._probe_conn = await self._connect_probe()
                read_only = await conn.fetchval("SHOW transaction_read_only")
        except BaseException:
            self._drop_probe()
            raise
        if write and read_only == "on":
            # Every write would be refused: a standby, or default_transaction_read_only set
            # (as some operators do on a full disk).
            import asyncpg

            raise asyncpg.exceptions.ReadOnlySQLTransactionError(
                "the database only allows read-only transactions"
            )

    async def _open_pg_pool(self) -> Any:
        """The asyncpg pool of fetch (PostgreSQL), opened on first use: connections are made
        as calls need them, up to the pool size, each with the statement timeout."""
        async with self._pg_pool_lock:
            if self._pg_pool is None:
                import asyncpg

                _, params = self.engine.dialect.create_connect_args(self.url)
                for key in ("prepared_statement_cache_size", "prepared_statement_name_func"):
                    params.pop(key, None)
                self._pg_pool = await asyncpg.create_pool(
                    **params,
                    min_size=0,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    statement_cache_size=self.statement_cache_size,
                    # An idle connection is closed after a minute, as the server may have
                    # been restarted under it meanwhile.
                    max_inactive_connection_lifetime=60.0,
                    reset=_no_reset,
                    server_settings={
                        "statement_timeout": _millis(self.statement_timeout),
                        "application_name": "badge-service",
                    },
                )
            return self._pg_pool

    async def _connect_probe(self) -> Any:
        return await self.connect_direct("badge-service health", within=PROBE_TIMEOUT)

    async def connect_direct(
        self, application_name: str, *, within: float, listen: bool = False
    ) -> Any:
        """A plain asyncpg connection of its own, outside the pool (PostgreSQL only), with
        the pool's statement timeout and no statement cache; the caller closes it. With
        ``listen``, to ``listen_url``."""
        import asyncpg

        url = self.listen_url if listen else self.url
        _, params = self.engine.dialect.create_connect_args(url)
        for key in ("prepared_statement_cache_size", "prepared_statement_name_func"):
            params.pop(key, None)
        return await asyncpg.connect(
            **params,
            timeout=within,
            # Also bounds asyncpg's cancel request after a probe timed out on a frozen server.
            command_timeout=self.statement_timeout,
            statement_cache_size=0,
            server_settings={
                "statement_timeout": _millis(self.statement_timeout),
                "application_name": application_name,
            },
        )

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Has ``close()`` await ``closer()`` first (for what holds a connection of its own)."""
        self._closers.append(closer)

    def _drop_probe(self) -> None:
        conn, self._probe_conn = self._probe_conn, None
        if conn is not None:
            conn.terminate()  # no round trip: the server may be the one that hangs

    async def close(self) -> None:
        """Finishes queued writes and closes every pooled connection."""
        closers, self._closers = self._closers, []
        for closer in closers:
            await closer()
        if self._committer is not None:
            await asyncio.wait([self._committer])
        while self._pg_committers:
            await asyncio.wait(list(self._pg_committers))
        self._drop_probe()
        if self._pg_pool is not None:
            pool, self._pg_pool = self._pg_pool, None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await pool.close()
            except (TimeoutError, OSError):
                pool.terminate()  # the server does not answer: drop the connections
        await self.engine.dispose()
        if self._pg_writers is not None:
            await self._pg_writers.dispose()
        for pool in (self._readers, self._writer):
            if pool is not None:
                pool.shutdown(wait=True)
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        if self._raw is not None:
            self._raw.close()
            self._raw = None


def statement_options(cache_size: int) -> dict[str, int]:
    """The connect arguments of a SQLAlchemy asyncpg engine that keep ``cache_size``
    statements prepared per connection; both caches always together.

    SQLAlchemy's dialect prepares every statement itself and keeps the prepared objects
    (``prepared_statement_cache_size``); asyncpg names them ``__asyncpg_stmt_N__`` while its
    own cache (``statement_cache_size``) is on, and uses the unnamed statement while it is off.
    With 0 for both, each statement is parsed unnamed and run at once on the same server
    connection (asyncpg sends its Parse with a Flush, not a Sync, so a pooler in transaction
    mode cannot hand the connection to another client in between), and no name outlives its
    statement, so nothing can be missing or clash on a pooler's shared server connections.
    Mixed, they must never be: SQLAlchemy would keep and reuse an unnamed statement that the
    next one has replaced on the server."""
    return {"prepared_statement_cache_size": cache_size, "statement_cache_size": cache_size}


def _millis(seconds: float) -> str:
    """Seconds as whole milliseconds, as PostgreSQL settings and SQLite's busy timeout take
    them (at least 1: 0 would mean no limit)."""
    return str(max(1, round(seconds * 1000)))


def _bind_kwargs(fn: Callable[..., T], kwargs: dict[str, Any]) -> Callable[..., T]:
    def call(conn: Connection, *args: Any) -> T:
        return fn(conn, *args, **kwargs)

    return call


def equal_in_order(column: Any, org: Any) -> ColumnElement[bool]:
    """``column = org`` written as a range, for queries ordered by (column, id).

    With an equality PostgreSQL drops the column from the ORDER BY and may walk the primary
    key in id order, filtering by org: cheap by its estimate when the org holds most rows, but
    an org whose ids come after everyone else's means skipping all of theirs first (measured:
    110,000 rows and 9-27 ms for a page of 25). A range keeps (column, id) the order to
    produce, which only the (column, id) index gives without a sort. SQLite uses that index
    either way.
    """
    return and_(column >= org, column <= org)


_SQLITE_BUSY = 5  # SQLITE_BUSY; extended codes (BUSY_RECOVERY, ...) share the low byte


async def _pg_fetch(
    conn: Any, dialect: Any, queries: Sequence[tuple[Executable, Mapping[str, Any]]]
) -> list[Sequence[Sequence[Any]]]:
    """fetch()'s statements on an asyncpg connection."""
    if len(queries) == 1:
        # One statement is its own snapshot: without BEGIN and COMMIT it is one round trip to
        # the server instead of three.
        stmt, params = queries[0]
        sql, values = _prepared(stmt, dialect, params).bind(params)
        return [await conn.fetch(sql, *values)]
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = []
        for stmt, params in queries:
            sql, values = _prepared(stmt, dialect, params).bind(params)
            found.append(await conn.fetch(sql, *values))
        return found


# How long a cancelled fetch waits for the server to confirm its statement's cancellation
# before it drops the connection.
_CANCEL_WAIT = 1.0


def _sqlalchemy_error(
    dialect: Any, exc: Exception, sql: str, params: Mapping[str, Any] | None
) -> Exception:
    """An asyncpg error of a statement run straight on the driver (fetch, a batch's
    execute_prepared) as SQLAlchemy raises the same error (ProgrammingError, IntegrityError,
    ...: SQLAlchemy's own asyncpg mapping), with what errors.translate reads, so that every
    path fails alike; anything else as it is."""
    import asyncpg

    unmapped: Exception = exc
    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return unmapped
    dbapi = dialect.loaded_dbapi
    for kind in type(exc).__mro__:
        adapted = dbapi._asyncpg_error_translate.get(kind)
        if adapted is not None:
            translated = adapted(exc.args[0] if exc.args else str(exc), exc)
            translated.__cause__ = exc
            return errors.raw_error(translated, sql, params, dbapi.Error)
    return unmapped


async def _no_reset(conn: Any) -> None:
    """The pool's reset of a connection given back: nothing, since fetch changes no session
    state (asyncpg's default runs RESET ALL and more, a round trip per call; an open
    transaction is still rolled back before this is called)."""


def _fetch_rows(
    conn: Connection, queries: Sequence[tuple[Executable, Mapping[str, Any]]]
) -> list[Sequence[Sequence[Any]]]:
    """fetch()'s statements in a run_read transaction (its fallback when SQLite is busy)."""
    return [execute_prepared(conn, stmt, params) for stmt, params in queries]


class RawPathError(TypeError):
    """A statement the raw SQLite path cannot run faithfully, refused when it is first
    prepared: a bug of the code that built it, never a fault of the store."""


# Statements whose callers apply the columns' result processors to the rows themselves
# (PreparedLookup); every other statement on the raw path must select plain columns.
_PROCESSES_ITS_ROWS: set[Executable] = set()


def _check_plain_columns(stmt: Executable, compiled: Any, dialect: Any) -> None:
    """Refuses a statement that selects (or returns) a column whose type SQLAlchemy converts
    on the way out for SQLite (a result processor: DateTime, Boolean, JSON, Enum, Numeric...):
    the raw path hands over the driver's values, so such a column would come back unconverted
    (a bool as 0 or 1, a JSON document as text), unlike through SQLAlchemy or on PostgreSQL."""
    if stmt in _PROCESSES_ITS_ROWS:
        return
    needing = [
        f"{entry.keyname} ({entry.type!r})"
        for entry in getattr(compiled, "_result_columns", ())
        if entry.type.dialect_impl(dialect).result_processor(dialect, None) is not None
    ]
    if needing:
        raise RawPathError(
            f"{compiled.string!r} selects {', '.join(needing)}, whose values SQLAlchemy "
            "converts on the way out (a result processor), which the raw SQLite path does not: "
            "they would come back as the driver gives them. Select the stored value instead "
            "(type_coerce(column, Integer) for a Boolean, a Micros integer for a time) and "
            "convert it in the store function, or read through PreparedLookup or conn.execute."
        )


class _Prepared:
    """A statement compiled once for a dialect with a positional paramstyle: its SQL, for
    each placeholder the parameter's name, default and bind processor (SQLAlchemy's own, so a
    JSON column is serialised as SQLAlchemy would), and the table it writes (None for a read).

    Compiling checks the statement's columns (_check_plain_columns), so a statement the raw
    path would answer wrongly fails the first time it runs, on every path, not per call."""

    __slots__ = ("binds", "dialect_name", "sql", "writes")

    def __init__(self, stmt: Executable, dialect: Any, keys: tuple[str, ...] | None) -> None:
        self.dialect_name: str = dialect.name
        compiled = stmt.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(keys) if keys is not None else None
        )
        _check_plain_columns(stmt, compiled, dialect)
        self.sql: str = compiled.string
        self.writes: str | None = _written_table(stmt)
        binds = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            default = _REQUIRED if bind.required else compiled.params.get(name)
            binds.append((name, default, processor))
        self.binds: list[tuple[str, Any, Callable[[Any], Any] | None]] = binds

    def bind(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its positional values for ``params``; a parameter without a value is
        an error, as SQLAlchemy makes it."""
        values = []
        for name, default, processor in self.binds:
            value = params[name] if name in params else default
            if value is _REQUIRED:
                raise StatementError(
                    f"A value is required for bind parameter {name!r}", self.sql, None, None
                )
            values.append(processor(value) if processor is not None else value)
        return self.sql, values


_REQUIRED = object()


_PREPARED: dict[tuple[Executable, str, tuple[str, ...] | None], _Prepared] = {}
_PREPARED_SELECTS: dict[Executable, _Prepared] = {}


def _prepared(stmt: Executable, dialect: Any, params: Mapping[str, Any]) -> _Prepared:
    found = _PREPARED_SELECTS.get(stmt)
    if found is not None and found.dialect_name == dialect.name:
        return found
    # An INSERT's columns are the parameters given, as when SQLAlchemy runs it.
    keys = tuple(params) if getattr(stmt, "is_insert", False) else None
    found = _PREPARED.get((stmt, dialect.name, keys))
    if found is None:
        found = _PREPARED[(stmt, dialect.name, keys)] = _Prepared(stmt, dialect, keys)
        if keys is None:  # the hot reads: one lookup by the statement alone
            _PREPARED_SELECTS[stmt] = found
    return found


def execute_prepared(
    conn: Connection, stmt: Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> list[Any]:
    """Runs a statement built once (named ``bindparam``s; an INSERT with the parameters as its
    columns) and returns its rows, [] when it returns none; a sequence of parameter dicts runs
    it once per dict (no rows returned).

    On SQLite it goes straight to the sqlite3 connection under ``conn``, in ``conn``'s
    transaction: SQLAlchemy's execution of a cached statement costs several times what SQLite
    spends running it, and the group-committed writes run a few per call. Driver errors are
    raised as SQLAlchemy would raise them (IntegrityError, OperationalError, ...). Elsewhere
    (PostgreSQL, or SQLite through aiosqlite inside ``db.write()``) it is ``conn.execute``.
    """
    raw = _raw_sqlite(conn)
    if raw is None:
        pg = _pg_batch_of(conn)
        if pg is not None:
            return _pg_execute(conn, pg, stmt, params)
        result = conn.execute(stmt, params)
        return list(result.all()) if result.returns_rows else []
    if isinstance(params, Mapping):
        prepared = _prepared(stmt, conn.dialect, params)
        if prepared.writes is not None:  # for the batch's cache; inline, as on every write
            batch = _BATCHES.get(raw)
            if batch is not None:
                batch.written.add(prepared.writes)
        sql, values = prepared.bind(params)
        try:
            return list(raw.execute(sql, values).fetchall())
        except sqlite3.Error as exc:
            raise errors.raw_error(exc, sql, params) from exc
    if params:
        prepared = _prepared(stmt, conn.dialect, params[0])
        if prepared.writes is not None:
            batch = _BATCHES.get(raw)
            if batch is not None:
                batch.written.add(prepared.writes)
        try:
            raw.executemany(prepared.sql, [prepared.bind(p)[1] for p in params])
        except sqlite3.Error as exc:
            raise errors.raw_error(exc, prepared.sql, None) from exc
    return []


def _raw_sqlite(conn: Connection) -> sqlite3.Connection | None:
    """The stdlib sqlite3 connection under ``conn``; None on PostgreSQL, or on SQLite through
    aiosqlite (``db.write()``), where statements go through SQLAlchemy."""
    raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
    return raw if isinstance(raw, sqlite3.Connection) else None


class PreparedLookup:
    """A select built once that finds at most one row, run through execute_prepared, with
    the row as ``conn.execute`` would give it (the columns' result processors applied, JSON
    decoded, attribute access) whichever way it ran."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        _PROCESSES_ITS_ROWS.add(stmt)  # first() applies the result processors
        self._columns = list(stmt.selected_columns)
        self._row = namedtuple("_Row", [c.key for c in self._columns])  # type: ignore[misc]
        # By dialect name: the result processors of each.
        self._processors: dict[str, list[Callable[[Any], Any] | None]] = {}

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The row, or None."""
        raw = _raw_sqlite(conn) is not None or _pg_batch_of(conn) is not None
        rows = execute_prepared(conn, self.stmt, params)
        if not rows:
            return None
        if not raw:  # SQLAlchemy ran it: already processed
            return rows[0]
        dialect = conn.dialect
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = self._processors[dialect.name] = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in self._columns
            ]
        return self._row(
            *(
                v if p is None or v is None else p(v)
                for p, v in zip(processors, rows[0], strict=True)
            )
        )


_BATCH_CACHE = "badge_service.batch_cache"

# What each kind of batch_cache entry (the first item of its key) is read from. An entry is
# served only while no write of the batch has touched one of its tables.
BATCH_READS: dict[str, frozenset[str]] = {
    # service/awards.py _Definitions.fields: store.custom_fields.list_fields.
    "award-custom-fields": frozenset({"custom_fields"}),
    # service/badges.py: list_fields and store.orgs.get_tag_rules.
    "badge-rules": frozenset({"custom_fields", "org_meta"}),
    # service/awards.py _Definitions.badge: store.award_definitions.badge (a badge awarded).
    "award-badge": frozenset({"badges"}),
}


class BatchCacheError(RuntimeError):
    """A batch_cache entry asked for after a write of the same batch changed a table it is
    read from, or of a kind BATCH_READS does not declare: a bug of the caller."""


class BatchCache:
    """The cache of one group commit (see batch_cache): ``get`` and ``cache[key] = value``
    as a dict's, for keys whose first item is a kind of entry BATCH_READS declares; both
    refuse (BatchCacheError) once a write of the batch touched a table the kind is read from.
    ``written`` is every table the batch's writes touched so far (recorded by the statements
    themselves: execute_prepared, and SQLAlchemy's execution of the batch's engine)."""

    __slots__ = ("_entries", "written")

    def __init__(self) -> None:
        self._entries: dict[Any, Any] = {}
        self.written: set[str] = set()

    def _check(self, key: Any) -> None:
        kind = key[0] if isinstance(key, tuple) and key else key
        reads = BATCH_READS.get(kind) if isinstance(kind, str) else None
        if reads is None:
            raise BatchCacheError(
                f"batch_cache key {key!r}: its first item must name a kind of entry that "
                f"BATCH_READS (store/db.py) declares with the tables it is read from"
            )
        stale = reads & self.written
        if stale:
            raise BatchCacheError(
                f"batch_cache entry {key!r} is read from {', '.join(sorted(stale))}, which a "
                "write of this group commit changed: it cannot be shared between the batch's "
                "writes; read it in each write instead"
            )

    def get(self, key: Any) -> Any:
        """The entry, or None."""
        self._check(key)
        return self._entries.get(key)

    def usable(self, key: Any) -> bool:
        """Whether an entry of ``key``'s kind may be read or kept now (no write of the batch
        touched a table it is read from): for kinds whose tables the batch's writes may
        change, which read the rows themselves once it did. A kind BATCH_READS does not
        declare is still an error."""
        try:
            self._check(key)
        except BatchCacheError:
            kind = key[0] if isinstance(key, tuple) and key else key
            if isinstance(kind, str) and kind in BATCH_READS:
                return False
            raise
        return True

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check(key)
        self._entries[key] = value


# The batch each writer connection is in, by its sqlite3 connection: execute_prepared has the
# driver's connection in hand, and a dict lookup is cheaper than SQLAlchemy's conn.info.
_BATCHES: dict[sqlite3.Connection, BatchCache] = {}


def _written_table(stmt: Any) -> str | None:
    """The table an INSERT, UPDATE or DELETE writes; None for anything else."""
    if not getattr(stmt, "is_dml", False):
        return None
    table = getattr(stmt, "table", None)
    name = getattr(table, "name", None)
    return name if isinstance(name, str) else None


def batch_cache(conn: Connection) -> BatchCache | None:
    """A cache that lives for one group commit, for reads its writes would each repeat (an
    org's validation rules); None outside a group commit.

    Only rows no write of a batch changes may be kept in it, and that is checked: each kind
    of entry declares the tables it is read from (BATCH_READS), and the cache refuses an entry
    once a write of the batch touched one of them (BatchCacheError). The writes that
    group-commit (``run_write``) change badges and awards, not the definitions they are
    checked against, which change only through ``Database.write()``, never in a batch.

    On PostgreSQL another transaction may change those rows while a batch runs (nothing like
    SQLite's BEGIN IMMEDIATE keeps it out), so an entry may be older than the write that
    uses it. Still each write is checked against rows as they were at some moment between
    its call and its reply, as without the cache: a batch is formed before it starts, so the
    entry is read after every write of the batch was asked for; and under READ COMMITTED a
    write reading the rows itself could as well meet a change committed just after its read.
    """
    found: BatchCache | None = conn.info.get(_BATCH_CACHE)
    return found


def _commit_batch(db: Database, batch: list[_Job[Any]]) -> list[tuple[bool, Any]]:
    """Runs a batch of writes in one SQLite transaction (in the writer thread); returns each
    job's (ok, result or exception). Raises when BEGIN or COMMIT fails."""
    assert db.sync_engine is not None
    with db.sync_engine.connect() as conn:
        conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        conn.info[_BATCH_CACHE] = _BATCHES[raw] = BatchCache()
        try:
            return _run_batch(conn, raw, batch)
        finally:
            del conn.info[_BATCH_CACHE]
            del _BATCHES[raw]


def _run_batch(
    conn: Connection, raw: sqlite3.Connection, batch: list[_Job[Any]]
) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    tx = conn.begin()
    try:
        if len(batch) == 1:  # alone, the transaction is the savepoint
            job = batch[0]
            try:
                outcomes.append((True, job.fn(conn, *job.args)))
            except Exception as exc:
                tx.rollback()
                return [(False, exc)]
        else:
            # Savepoints straight on the driver: SQLAlchemy's nested transactions cost more
            # than the writes they wrap, and nothing else here needs to know of them.
            for job in batch:
                raw.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, job.fn(conn, *job.args)))
                except Exception as exc:
                    raw.execute("ROLLBACK TO job")
                    outcomes.append((False, exc))
                raw.execute("RELEASE job")
        tx.commit()
    except BaseException:
        if tx.is_active:
            tx.rollback()
        elif raw.in_transaction:
            # A COMMIT that fails can leave SQLite's transaction open while SQLAlchemy
            # counts it ended; the connection must not return to the pool inside it.
            raw.rollback()
        raise
    return outcomes


# Marks a job that lost a deadlock or serialization conflict (rolled back) and is to run
# again in a later batch.
_RETRY = object()


class _LostConflict(Exception):
    """A job of a batch lost a conflict (``error``): the batch was rolled back whole, and its
    jobs are to run again, the job that lost counting a try."""

    def __init__(self, job: _Job[Any], error: Exception) -> None:
        super().__init__(str(error))
        self.job = job
        self.error = error


# SQLSTATEs of a conflict with another transaction that running again resolves.
_PG_CONFLICTS = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

Flush = Callable[[Connection, Any, list[Any]], None]


class _PgBatch:
    """A PostgreSQL group commit in progress: the asyncpg connection its statements go to,
    and its tail (at_commit): by key, the flush and the values of the writes that succeeded;
    ``pending`` holds the running write's until it succeeds."""

    __slots__ = ("cache", "pending", "raw", "tail")

    def __init__(self, raw: Any, cache: BatchCache) -> None:
        self.raw = raw
        self.cache = cache
        self.tail: dict[Any, tuple[Flush, list[Any]]] = {}
        self.pending: list[tuple[Any, Any, Flush]] = []

    def keep_pending(self) -> None:
        for key, value, flush in self.pending:
            found = self.tail.get(key)
            if found is None:
                self.tail[key] = (flush, [value])
            else:
                found[1].append(value)
        self.pending.clear()


# Each writer connection's batch while it runs one, by the SQLAlchemy adapter of the driver's
# connection: execute_prepared's raw path (_pg_execute) and at_commit look it up.
_PG_BATCHES: dict[Any, _PgBatch] = {}


def at_commit(conn: Connection, key: Any, value: Any, flush: Flush) -> None:
    """Has ``flush(conn, key, values)`` write ``value``: at once (``values`` is
    ``[value]``), or, in a PostgreSQL group commit, once for the whole batch after its last
    write and just before its COMMIT, with the values of every write of the batch that
    succeeded (in their order); the batch's keys are flushed in sorted order.

    For the rows every write of an org updates (its counts, its event sequence): a row lock
    taken in a write is held until the batch commits, so batches on several connections would
    queue behind one another's whole batch; taken in the tail, only behind the tail and the
    COMMIT, and always in the same order (no deadlock between batches). Only for what no
    later statement of the same transaction reads, and whose flush cannot fail on a write's
    account (a failed tail fails the whole batch). Keys of one kind must compare with each
    other (tuples with the kind's name first)."""
    batch = _pg_batch_of(conn)
    if batch is None:
        flush(conn, key, [value])
    else:
        batch.pending.append((key, value, flush))


def in_group_commit(conn: Connection) -> bool:
    """Whether ``conn`` runs a PostgreSQL group commit, whose writes at_commit defers."""
    return _pg_batch_of(conn) is not None


def _pg_batch(conn: Connection, batch: list[_Job[Any]]) -> list[tuple[bool, Any]]:
    """Runs a batch of writes in one PostgreSQL transaction (in a greenlet of run_sync, on a
    writer connection in driver autocommit mode) and returns each job's (ok, result or
    exception, or _RETRY). Raises when BEGIN, a savepoint, a ROLLBACK, the tail (at_commit)
    or COMMIT fails: then nothing of the batch is committed.

    Transaction control goes straight to asyncpg: BEGIN with the first SAVEPOINT, then one
    round trip per further job (the RELEASE of the previous job's savepoint and the next
    SAVEPOINT in one simple query), the tail (at_commit), COMMIT. A job's statements run by
    execute_prepared go straight to asyncpg as well."""
    adapter = conn.connection.dbapi_connection
    raw = conn.connection.driver_connection
    outcomes: list[tuple[bool, Any]] = []
    savepoints = len(batch) > 1  # alone, the transaction is the savepoint
    # The first savepoint in BEGIN's round trip (a simple query may hold several statements).
    _pg_control(conn, raw, "BEGIN; SAVEPOINT job" if savepoints else "BEGIN")
    cache = conn.info[_BATCH_CACHE] = BatchCache()
    state = _PG_BATCHES[adapter] = _PgBatch(raw, cache)
    try:
        # "fresh": a savepoint "job" is set with no work since; "used": one is set and the last
        # job's work (kept) is after it.
        fresh, used = savepoints, False
        for job in batch:
            if job.future.done():  # its caller was cancelled before it started
                outcomes.append((False, None))
                continue
            if savepoints and not fresh:
                sql = "RELEASE SAVEPOINT job; SAVEPOINT job" if used else "SAVEPOINT job"
                _pg_control(conn, raw, sql)
            fresh, used = False, True
            try:
                outcomes.append((True, job.fn(conn, *job.args)))
            except Exception as exc:
                state.pending.clear()
                if not savepoints:
                    _pg_control(conn, raw, "ROLLBACK")
                    return [_failed_job(job, exc)]
                if _sqlstate(exc) in _PG_CONFLICTS:
                    # Lost a deadlock: the whole batch goes, and every lock it holds with it.
                    # Rolled back to its savepoint alone, the job would leave the batch's
                    # other locks to the transaction it deadlocked with, which would wait on
                    # them to the batch's end, or meet the next job that takes what it holds
                    # (a row every write of the batch updates) in a new deadlock, a second
                    # (deadlock_timeout) each, until its statement timeout.
                    _pg_control(conn, raw, "ROLLBACK")
                    raise _LostConflict(job, exc) from exc
                # Undoes this job alone (its locks too); fails when the connection is gone.
                _pg_control(conn, raw, "ROLLBACK TO SAVEPOINT job")
                fresh, used = True, False
                outcomes.append(_failed_job(job, exc))
            else:
                state.keep_pending()
        for key in sorted(state.tail):
            flush, values = state.tail[key]
            flush(conn, key, values)
        _pg_control(conn, raw, "COMMIT")
    finally:
        del _PG_BATCHES[adapter]
        del conn.info[_BATCH_CACHE]
    return outcomes


def _pg_control(conn: Connection, raw: Any, sql: str) -> None:
    """A transaction control statement of a batch, its error as SQLAlchemy raises it."""
    try:
        await_only(raw.execute(sql))
    except Exception as exc:
        error = _sqlalchemy_error(conn.dialect, exc, sql, None)
        if error is exc:
            raise
        raise error  # noqa: B904 - raw_error sets the cause


def _failed_job(job: _Job[Any], exc: Exception) -> tuple[bool, Any]:
    """A failed job's outcome: its error, or _RETRY when it lost a conflict with another
    transaction (a deadlock, which batches make likelier) and has tries left."""
    if job.tries < _PG_RETRIES and _sqlstate(exc) in _PG_CONFLICTS:
        job.tries += 1
        return (False, _RETRY)
    return (False, exc)


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error however wrapped (SQLAlchemy's, the adapter's,
    asyncpg's), else None."""
    link: BaseException | None = exc
    for _ in range(4):
        if link is None:
            return None
        code = getattr(link, "sqlstate", None)
        if isinstance(code, str):
            return code
        link = getattr(link, "orig", None) or link.__cause__
    return None


def _pg_batch_of(conn: Connection) -> _PgBatch | None:
    """The PostgreSQL batch ``conn`` runs, else None."""
    if not _PG_BATCHES:
        return None
    return _PG_BATCHES.get(conn.connection.dbapi_connection)


def _pg_execute(
    conn: Connection,
    batch: _PgBatch,
    stmt: Executable,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[Any]:
    """execute_prepared on a batch's asyncpg connection: asyncpg prepares each statement once
    per connection (its statement cache); its errors are raised as SQLAlchemy raises them."""
    raw = batch.raw
    many = not isinstance(params, Mapping)
    if not isinstance(params, Mapping) and len(params) == 1:
        params = params[0]  # asyncpg's executemany costs more than one statement
    if isinstance(params, Mapping):
        prepared = _prepared(stmt, conn.dialect, params)
        if prepared.writes is not None:
            batch.cache.written.add(prepared.writes)
        sql, values = prepared.bind(params)
        try:
            rows = await_only(raw.fetch(sql, *values))
            return [] if many else list(rows)
        except Exception as exc:
            error = _sqlalchemy_error(conn.dialect, exc, sql, params)
            if error is exc:
                raise
            raise error  # noqa: B904 - raw_error sets the cause
    if not params:
        return []
    prepared = _prepared(stmt, conn.dialect, params[0])
    if prepared.writes is not None:
        batch.cache.written.add(prepared.writes)
    try:
        await_only(raw.executemany(prepared.sql, [prepared.bind(p)[1] for p in params]))
    except Exception as exc:
        error = _sqlalchemy_error(conn.dialect, exc, prepared.sql, None)
        if error is exc:
            raise
        raise error  # noqa: B904 - raw_error sets the cause
    return []


def _note_batch_writes(engine: Engine) -> None:
    """Has a group commit's writes through SQLAlchemy on ``engine`` noted in its cache
    (execute_prepared notes its own)."""

    @event.listens_for(engine, "before_execute")
    def _on_execute(conn: Connection, stmt: Any, *_args: Any) -> None:
        # conn.info is only looked at for an INSERT, UPDATE or DELETE.
        if getattr(stmt, "is_dml", False):
            batch = conn.info.get(_BATCH_CACHE)
            table = _written_table(stmt)
            if batch is not None and table is not None:
                batch.written.add(table)


def _configure_sqlite_connections(engine: Engine, *, raw_begin: bool, busy_ms: str) -> None:
    # pysqlite's own transaction handling issues BEGIN late and never BEGIN IMMEDIATE, so the
    # driver is put in autocommit mode and SQLAlchemy's begin event emits the BEGIN itself.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        if begin:  # "" is read(snapshot=False): the one statement runs in autocommit mode
            if raw_begin:
                # Straight to sqlite3: SQLAlchemy's execution context would cost as much
                # as the statement the transaction is for.
                conn.connection.dbapi_connection.execute(begin)  # type: ignore[union-attr]
            else:
                conn.exec_driver_sql(begin)


def _configure_sqlite(engine: AsyncEngine, busy_ms: str) -> None:
    _configure_sqlite_connections(engine.sync_engine, raw_begin=False, busy_ms=busy_ms)

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
        # pool_reset_on_return is off; this keeps its guarantee (no transaction left open in a
        # pooled connection, e.g. after a failed COMMIT) at no cost in the usual case, since
        # asking SQLite whether a transaction is open needs no trip to the driver thread.
        if state.asyncio_safe and not state.terminate_only and _in_transaction(dbapi_conn):
            dbapi_conn.rollback()

    # sqlite3's commit() and rollback() do nothing outside a transaction, yet through aiosqlite
    # each still costs a round trip to its thread; a read(snapshot=False) ends that way. So ask
    # SQLite first, on this engine's dialect only.
    dialect = engine.sync_engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _commit(dbapi_conn: Any) -> None:
        if _in_transaction(dbapi_conn):
            do_commit(dbapi_conn)

    def _rollback(dbapi_conn: Any) -> None:
        if _in_transaction(dbapi_conn):
            do_rollback(dbapi_conn)

    dialect.do_commit = _commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = _rollback  # type: ignore[method-assign,assignment]


def _in_transaction(dbapi_conn: Any) -> bool:
    """Whether SQLite has a transaction open on a pooled connection, asked without a trip to
    aiosqlite's thread; False once the connection is closed."""
    try:
        return bool(dbapi_conn.driver_connection.in_transaction)
    except ValueError:  # aiosqlite: no active connection
        return False


# --- Chunked writes (badge-service import) ----------------------------------------------------

SyncJob = Callable[[Connection], Any]
AsyncJob = Callable[[AsyncConnection], Awaitable[Any]]


class Chunks:
    """Many writes in few transactions, each write in its own SAVEPOINT: a write that raises
    is rolled back alone and reported, the others stay (the way the SQLite group commit runs
    a batch, for one caller's long list of writes: an import).

    ``run(jobs)`` runs a chunk of jobs in the open transaction (beginning one if none is open)
    and returns each one's ``(True, result)`` or ``(False, error)``, the error translated as
    every unit of work translates it; a store fault (the database unavailable) is raised
    instead, since it fails every job. ``commit()`` ends the transaction; ``close()`` rolls
    back whatever is not committed. So an import commits after each chunk, and an
    all-or-nothing or dry run runs every chunk in one transaction and commits at the end, or
    never.

    Jobs are synchronous functions of a ``Connection`` (``sync=True``: on SQLite in the
    writer thread on the stdlib driver, one trip per chunk; on PostgreSQL through
    ``run_sync``), or coroutine functions of an ``AsyncConnection`` (``sync=False``), for
    use cases written with ``await``. On SQLite the transaction holds the write lock (the
    process's, and SQLite's own from ``BEGIN IMMEDIATE``) until it ends: other processes'
    writes wait for it (up to their busy timeout), so a chunk is kept short.
    """

    def __init__(self, db: Database, *, sync: bool) -> None:
        self._db = db
        self._sync = sync
        self._conn: Any = None  # Connection (SQLite, sync) or AsyncConnection
        self._tx: Any = None
        self._locked = False

    async def _lock(self) -> None:
        if self._db._write_lock is not None and not self._locked:
            await self._db._write_lock.acquire()
            self._locked = True

    async def _begin(self) -> None:
        """Opens the transaction on the async engine (PostgreSQL, or SQLite's async jobs)."""
        db = self._db
        await self._lock()
        try:
            conn = await db.engine.connect()
            try:
                if db.is_sqlite:
                    await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                await conn.begin()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        except BaseException:
            self._unlock()
            raise

    def _open_sqlite(self) -> Connection:
        assert self._db.sync_engine is not None
        conn = self._db.sync_engine.connect()
        try:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            self._tx = conn.begin()
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            # The chunk's badge writes read the org's rules once, as a group commit's do.
            conn.info[_BATCH_CACHE] = _BATCHES[raw] = BatchCache()
        except BaseException:
            conn.close()
            raise
        return conn

    def _unlock(self) -> None:
        if self._locked and self._db._write_lock is not None:
            self._db._write_lock.release()
        self._locked = False

    async def run(
        self, jobs: Sequence[Callable[..., Any]], *, commit: bool = False
    ) -> list[tuple[bool, Any]]:
        """Each job in its own savepoint of the open transaction, in order; with ``commit``
        the transaction is committed after them (on SQLite in the same trip to the writer
        thread: one handover for the chunk's writes and its fsync)."""
        try:
            if self._db.is_sqlite and self._sync:
                # One trip to the writer thread: BEGIN (when none is open), the jobs, COMMIT.
                await self._lock()
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(
                    self._db._writer, self._run_sqlite, jobs, commit
                )
                if commit:
                    self._unlock()
                return outcomes
            if self._conn is None:
                await self._begin()
            if self._sync:
                outcomes = await self._conn.run_sync(_savepoint_each, jobs)
            else:
                outcomes = []
                for job in jobs:
                    savepoint = await self._conn.begin_nested()
                    try:
                        value = await job(self._conn)
                    except Exception as exc:
                        await savepoint.rollback()
                        outcomes.append((False, exc))
                    else:
                        await savepoint.commit()
                        outcomes.append((True, value))
            outcomes = _translated(outcomes)
        except Exception as exc:
            await self.close()
            raise self._db._failed(exc)  # noqa: B904 - translate sets the cause
        if commit:
            await self.commit()
        return outcomes

    def _run_sqlite(self, jobs: Sequence[SyncJob], commit: bool) -> list[tuple[bool, Any]]:
        """run() in SQLite's writer thread; the connection is given back once committed (or
        when anything fails: the caller closes)."""
        if self._conn is None:
            self._conn = self._open_sqlite()
        outcomes = _translated(_savepoint_each_raw(self._conn, jobs))
        if commit:
            self._end_sqlite(True)
        return outcomes

    async def commit(self) -> None:
        """Commits the open transaction (if any)."""
        if self._conn is None:
            self._unlock()
            return
        try:
            if self._db.is_sqlite and self._sync:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._db._writer, self._end_sqlite, True)
            else:
                await self._conn.commit()
                await self._conn.close()
        except Exception as exc:
            await self.close()
            raise self._db._failed(exc)  # noqa: B904 - translate sets the cause
        self._conn = None
        self._unlock()

    def _end_sqlite(self, commit: bool) -> None:
        conn: Connection = self._conn
        raw = conn.connection.dbapi_connection
        try:
            if commit:
                self._tx.commit()
            else:
                self._tx.rollback()
        finally:
            conn.info.pop(_BATCH_CACHE, None)
            if isinstance(raw, sqlite3.Connection):
                _BATCHES.pop(raw, None)
                if raw.in_transaction:
                    raw.rollback()  # a failed COMMIT may leave it open
            conn.close()
            self._conn = None

    async def close(self) -> None:
        """Rolls back what is not committed and gives the connection back."""
        conn, self._conn = self._conn, None
        try:
            if conn is None:
                return
            if self._db.is_sqlite and self._sync:
                self._conn = conn
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._db._writer, self._end_sqlite, False)
            else:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                await conn.close()
        finally:
            self._unlock()


def _savepoint_each_raw(conn: Connection, jobs: Sequence[SyncJob]) -> list[tuple[bool, Any]]:
    """Chunks.run on SQLite's writer thread: savepoints straight on the driver, as the group
    commit sets them (SQLAlchemy's nested transactions cost more than a badge's insert)."""
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        raw.execute("SAVEPOINT job")
        try:
            outcomes.append((True, job(conn)))
        except Exception as exc:
            raw.execute("ROLLBACK TO job")
            outcomes.append((False, exc))
        raw.execute("RELEASE job")
    return outcomes


def _savepoint_each(conn: Connection, jobs: Sequence[SyncJob]) -> list[tuple[bool, Any]]:
    """Chunks.run through run_sync (PostgreSQL): a nested transaction per job."""
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        savepoint = conn.begin_nested()
        try:
            value = job(conn)
        except Exception as exc:
            savepoint.rollback()
            outcomes.append((False, exc))
        else:
            savepoint.commit()
            outcomes.append((True, value))
    return outcomes


def _translated(outcomes: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """Each failed job's error as every unit of work translates it; a store fault (the
    database unavailable) is raised instead: it is no job's own failure, and it fails them all."""
    out: list[tuple[bool, Any]] = []
    for ok, value in outcomes:
        if not ok:
            value = errors.translate(value)
            if faults_classify(value) is not None:
                raise value
        out.append((ok, value))
    return out
