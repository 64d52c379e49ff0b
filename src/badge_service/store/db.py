"""The database handle: engine set-up for SQLite and PostgreSQL and the unit of work.

Every RPC runs in one transaction: ``async with db.read() as conn`` or ``db.write()``; a read
of exactly one statement may use ``db.read(snapshot=False)``, which on SQLite runs it without
an explicit BEGIN (fewer round trips to the driver's thread).
On SQLite, write transactions start with ``BEGIN IMMEDIATE`` (so two writers never deadlock
upgrading read locks) and are serialised in-process by a lock (so they queue on the event loop
rather than in SQLite's sleep-and-retry busy handler); ``busy_timeout`` still covers writers in
other processes. WAL lets reads run beside a write; ``synchronous=FULL`` makes every
acknowledged commit durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

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


class Database:
    """One engine and the transaction boundaries of the service."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            # Every transaction is ended by read()/write() (or by Connection.close()), so the
            # pool's unconditional rollback on return is a wasted round trip to the aiosqlite
            # thread; _configure_sqlite rolls back only when SQLite reports one still open.
            kwargs["pool_reset_on_return"] = None
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (one consistent snapshot on both databases).

        ``snapshot=False`` is for blocks that run exactly one statement: on SQLite it skips the
        explicit BEGIN, as a lone SELECT in autocommit mode is already atomic and consistent
        (WAL), which saves round trips to the driver thread. PostgreSQL ignores it.
        """
        if snapshot or not self.is_sqlite:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        async with self.engine.connect() as conn:
            # Set on the sync connection directly: the option does no I/O, and the async
            # wrapper would spend a greenlet switch on it.
            conn.sync_connection.execution_options(sqlite_begin="")  # type: ignore[union-attr]
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block exits without an error."""
        if self._write_lock is None:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    async def ping(self) -> None:
        """Raises unless the database answers."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling issues BEGIN late and never BEGIN IMMEDIATE, so the
    # driver is put in autocommit mode and SQLAlchemy's begin event emits the BEGIN itself.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        if begin:  # "" is read(snapshot=False): the one statement runs in autocommit mode
            conn.exec_driver_sql(begin)

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
