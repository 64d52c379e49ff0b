"""Store faults, classified from what the driver reports (store/faults.py), on real drivers:
PostgreSQL SQLSTATEs raised by the server, SQLite result codes raised by SQLite, the pool's
timeout, refused connections; the statement timeout on both databases; a call's deadline
cancelling its statement on the server; and a start on a bad URL or unusable storage ending
with one line, not a traceback.

The faults of a running server under load (a stopped, restarted, frozen or read-only
PostgreSQL, a full disk) are in test_faults_serve.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from badge_service.api.badges.v1 import badge_pb2
from badge_service.config import Settings
from badge_service.server import start
from badge_service.store.db import Database
from badge_service.store.faults import (
    ABORTED,
    STORE_FAULTS,
    UNAVAILABLE,
    Fault,
    StoreUnavailable,
    classify,
)
from tests.support import (
    Backend,
    create_pg_database,
    drop_pg_database,
    expect_error,
    pg_url,
)

BIN = Path(sys.executable).parent / "badge-service"


def badge(i: int, name: str | None = None) -> badge_pb2.Badge:
    """A valid badge named ``name`` (``badge_<i>`` by default)."""
    return badge_pb2.Badge(
        name=name or f"badge_{i}",
        title=f"Badge {i}",
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def pg_database() -> AsyncIterator[str]:
    """A database of the module's own on the shared PostgreSQL server."""
    base = pg_url()
    if base is None:
        pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
    url = await create_pg_database(base)
    try:
        yield url
    finally:
        await drop_pg_database(url)


# --- PostgreSQL: by SQLSTATE, whatever class SQLAlchemy wraps the error in -------------------

PG_STATES = {
    # Availability: connection exceptions, operator intervention (shutting down, starting up,
    # terminated), insufficient resources, system errors, a read-only standby, timeouts.
    "08006": UNAVAILABLE,
    "08001": UNAVAILABLE,
    "57P01": UNAVAILABLE,
    "57P03": UNAVAILABLE,
    "57014": UNAVAILABLE,
    "53100": UNAVAILABLE,
    "53300": UNAVAILABLE,
    "58030": UNAVAILABLE,
    "25006": UNAVAILABLE,
    # Conflicts: the transaction was rolled back whole.
    "40001": ABORTED,
    "40P01": ABORTED,
    # Ours to fix: INTERNAL.
    "23505": None,
    "42P01": None,
    "22P02": None,
    "XX000": None,
}


async def test_postgresql_errors_are_classified_by_sqlstate(pg_database: str) -> None:
    """The server raises each SQLSTATE; whatever SQLAlchemy class wraps it (57P03 is a bare
    DBAPIError, 23505 an IntegrityError), the SQLSTATE decides."""
    db = Database(pg_database)
    try:
        got = {}
        for state in PG_STATES:

            def fail(conn: Connection, state: str = state) -> None:
                conn.exec_driver_sql(
                    f"DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{state}'; END $$"
                )

            with pytest.raises(Exception) as raised:
                await db.run_read(fail)
            # A store fault is raised as its domain error, from the driver's; the rest as is.
            error = raised.value
            assert isinstance(
                error.__cause__ if isinstance(error, STORE_FAULTS) else error, DBAPIError
            )
            fault = classify(error)
            got[state] = fault.code if fault else None
            if fault is not None:
                assert fault.label == f"SQLSTATE {state}"
        assert got == PG_STATES
    finally:
        await db.close()


async def test_a_slow_statement_ends_at_the_statement_timeout(pg_database: str) -> None:
    db = Database(pg_database, statement_timeout=0.2)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await db.run_read(lambda c: c.exec_driver_sql("SELECT pg_sleep(30)").all())
        assert isinstance(raised.value.__cause__, DBAPIError)
        assert classify(raised.value) == Fault(UNAVAILABLE, "SQLSTATE 57014")
        # The connection is fine afterwards.
        assert await db.run_read(lambda c: c.exec_driver_sql("SELECT 1").scalar()) == 1
    finally:
        await db.close()


async def test_a_terminated_connection_is_unavailable(pg_database: str) -> None:
    db = Database(pg_database)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await db.run_read(
                lambda c: c.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())").all()
            )
        assert isinstance(raised.value.__cause__, DBAPIError)
        fault = classify(raised.value)
        assert fault is not None and fault.code == UNAVAILABLE, raised.value
        assert await db.run_read(lambda c: c.exec_driver_sql("SELECT 1").scalar()) == 1
    finally:
        await db.close()


async def test_fetch_recovers_from_a_terminated_pooled_connection(pg_database: str) -> None:
    """fetch runs on asyncpg's own pool: a connection the server ended while idle there fails
    at most one call, as UNAVAILABLE (never INTERNAL), and the next gets a new connection."""
    db = Database(pg_database)
    pid = text("SELECT pg_backend_pid()")
    try:
        ((first,),) = (await db.fetch((pid, {})))[0]
        await db.run_read(lambda c: c.exec_driver_sql(f"SELECT pg_terminate_backend({first})"))
        try:
            await db.fetch((pid, {}))
        except StoreUnavailable as exc:
            assert classify(exc) == Fault(UNAVAILABLE, "connection lost") or (
                classify(exc) == Fault(UNAVAILABLE, "SQLSTATE 57P01")
            ), exc
        ((second,),) = (await db.fetch((pid, {})))[0]
        assert second != first
    finally:
        await db.close()


def test_asyncpg_s_own_connection_errors_are_unavailable() -> None:
    lost = Fault(UNAVAILABLE, "connection lost")
    assert classify(asyncpg.InterfaceError("connection is closed")) == lost
    assert classify(asyncpg.exceptions.ConnectionDoesNotExistError("closed")) == Fault(
        UNAVAILABLE, "SQLSTATE 08003"
    )
    busy = asyncpg.exceptions.InternalClientError("cannot switch to state 12")
    assert classify(busy) == lost


async def test_a_deadlock_is_aborted(pg_database: str) -> None:
    """Two transactions lock two rows in opposite orders: PostgreSQL breaks the deadlock by
    failing one with 40P01, which is ABORTED (retry), never INTERNAL."""
    db = Database(pg_database)
    table = f"dl_{os.getpid()}"
    try:
        async with db.write() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (1), (2)"))
        both = asyncio.Barrier(2)

        async def lock(first: int, second: int) -> None:
            async with db.write() as conn:
                await conn.execute(text(f"SELECT * FROM {table} WHERE id = {first} FOR UPDATE"))
                await both.wait()
                await conn.execute(text(f"SELECT * FROM {table} WHERE id = {second} FOR UPDATE"))

        results = await asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1, results
        assert classify(failed[0]) == Fault(ABORTED, "SQLSTATE 40P01")
    finally:
        async with db.write() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await db.close()


async def test_a_pool_timeout_is_unavailable(pg_database: str) -> None:
    db = Database(pg_database, pool_size=1, connect_timeout=0.2)  # at most 2 connections
    try:
        async with db.engine.connect() as a, db.engine.connect() as b:
            await a.execute(text("SELECT 1"))
            await b.execute(text("SELECT 1"))
            with pytest.raises(Exception) as raised:
                await db.run_read(lambda c: c.exec_driver_sql("SELECT 1").scalar())
        assert classify(raised.value) == Fault(UNAVAILABLE, "pool timeout")
    finally:
        await db.close()


async def test_a_refused_connection_is_unavailable() -> None:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/none")
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await db.run_read(lambda c: c.exec_driver_sql("SELECT 1").scalar())
        assert isinstance(raised.value.__cause__, OSError)
        assert classify(raised.value) == Fault(UNAVAILABLE, "ConnectionRefusedError")
    finally:
        await db.close()


async def test_a_deadline_cancels_the_call_s_statement_on_the_server(
    pg_database: str, tmp_path: Path
) -> None:
    """A call waiting on a lock: with a deadline it ends DEADLINE_EXCEEDED and its statement
    stops waiting on the server at once (the statement timeout, 60 s here, plays no part);
    without one it ends UNAVAILABLE at the statement timeout (0.5 s on a second server)."""
    import asyncpg

    patient = await start(
        Settings(address="127.0.0.1:0", database_url=pg_database, db_statement_timeout=60)
    )
    hasty = await start(
        Settings(
            address="127.0.0.1:0",
            database_url=pg_database,
            db_statement_timeout=0.5,
            migrate_on_start=False,
        )
    )
    backends = [Backend("postgres", pg_database, s, []) for s in (patient, hasty)]
    dsn = make_url(pg_database).set(drivername="postgresql").render_as_string(False)
    locker = await asyncpg.connect(dsn)
    try:
        org = await backends[0].new_org()
        created = await org.admin.badges.CreateBadge(
            badge_pb2.CreateBadgeRequest(badge=badge(0, name="locked"))
        )
        get = badge_pb2.GetBadgeRequest(id=created.id)
        hasty_client = backends[1].client([("authorization", f"Bearer {org.reader_key}")])
        for client in (org.reader, hasty_client):  # keys cached, connections pooled
            assert (await client.badges.GetBadge(get)).name == "locked"

        async def waiting() -> int:
            found = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            return int(found)

        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE badges IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await org.reader.badges.GetBadge(get, timeout=0.5)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Cancelled with the call: far sooner than the 60 s statement timeout would end it.
        for _ in range(200):
            if not await waiting():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the cancelled call's statement still waits on the server after 10 s")

        await expect_error(
            hasty_client.badges.GetBadge(get),
            grpc.StatusCode.UNAVAILABLE,
            reason="STORE_UNAVAILABLE",
        )
        await tx.rollback()
        assert (await org.reader.badges.GetBadge(get)).name == "locked"
    finally:
        await locker.close()
        for b in backends:
            for c in b.clients:
                await c.channel.close()
        await hasty.stop(1)
        await patient.stop(1)


# --- SQLite: by result code -------------------------------------------------------------


@contextmanager
def _sqlite_error() -> Iterator[list[sqlite3.Error]]:
    caught: list[sqlite3.Error] = []
    try:
        yield caught
    except sqlite3.Error as exc:
        caught.append(exc)


def _wrapped(exc: sqlite3.Error) -> BaseException:
    # As SQLAlchemy (and db.py's own fast paths) raise a driver error.
    return DBAPIError.instance("", None, exc, sqlite3.Error)


def test_sqlite_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    path = tmp_path / "codes.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
    conn.execute("INSERT INTO t VALUES ('a', NULL)")
    errors: dict[str, sqlite3.Error] = {}

    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    with _sqlite_error() as caught:
        other.execute("BEGIN IMMEDIATE")
    errors["locked"] = caught[0]
    conn.execute("ROLLBACK")

    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    with _sqlite_error() as caught:
        readonly.execute("INSERT INTO t VALUES ('b', NULL)")
    errors["read-only"] = caught[0]

    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with _sqlite_error() as caught:
        conn.execute("INSERT INTO t VALUES ('c', zeroblob(100000))")
    errors["full"] = caught[0]

    with _sqlite_error() as caught:
        sqlite3.connect(tmp_path / "missing" / "x.db").execute("SELECT 1")
    errors["cannot open"] = caught[0]

    with _sqlite_error() as caught:
        conn.execute("INSERT INTO t VALUES ('a', NULL)")
    errors["constraint"] = caught[0]
    with _sqlite_error() as caught:
        conn.execute("SELECT * FROM missing_table")
    errors["no such table"] = caught[0]

    expected = {
        "locked": Fault(UNAVAILABLE, "SQLITE_BUSY"),
        "read-only": Fault(UNAVAILABLE, "SQLITE_READONLY"),
        "full": Fault(UNAVAILABLE, "SQLITE_FULL"),
        "cannot open": Fault(UNAVAILABLE, "SQLITE_CANTOPEN"),
        "constraint": None,
        "no such table": None,
    }
    assert {k: classify(e) for k, e in errors.items()} == expected
    assert {k: classify(_wrapped(e)) for k, e in errors.items()} == expected
    for c in (conn, other, readonly):
        c.close()


async def test_a_sqlite_write_waits_for_a_lock_no_longer_than_the_statement_timeout(
    tmp_path: Path,
) -> None:
    """Another process holding SQLite's write lock: the write gives up after the statement
    timeout (SQLite's busy timeout) and is UNAVAILABLE, not stuck for 30 s."""
    path = tmp_path / "busy.db"
    db = Database(f"sqlite+aiosqlite:///{path}", statement_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await db.run_write(lambda c: c.exec_driver_sql("CREATE TABLE t (x)"))
        holder.execute("BEGIN IMMEDIATE")
        # (sqlite3's own error: BEGIN IMMEDIATE goes straight to the driver.)
        with pytest.raises(StoreUnavailable) as raised:
            await asyncio.wait_for(
                db.run_write(lambda c: c.exec_driver_sql("INSERT INTO t VALUES (1)")), 20
            )
        assert isinstance(raised.value.__cause__, DBAPIError | sqlite3.Error)
        assert classify(raised.value) == Fault(UNAVAILABLE, "SQLITE_BUSY")
        holder.execute("ROLLBACK")
        await db.run_write(lambda c: c.exec_driver_sql("INSERT INTO t VALUES (1)"))
    finally:
        holder.close()
        await db.close()


# --- Starting: one line, not a traceback ---------------------------------------------------


def _run(
    *args: str, env_url: str | None = None, full_disk: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADGE_SERVICE_")}
    if env_url is not None:
        env["BADGE_SERVICE_DATABASE_URL"] = env_url
    wrapper = [sys.executable, "-c", _FULL_DISK] if full_disk else []
    return subprocess.run(
        [*wrapper, str(BIN), *args], env=env, capture_output=True, text=True, timeout=60
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("url", "line"),
    [
        (
            "not a url",
            "error: --database-url: cannot parse 'not a url' as a database URL (e.g. "
            "sqlite+aiosqlite:///./badges.db or postgresql+asyncpg://user@host:5432/db)",
        ),
        (
            "postgresql+asyncpg://me:s3cret@db:port/x",
            "error: --database-url: bad database URL (invalid literal for int() with base 10: "
            "'port')",
        ),
        (
            "postgres://me:s3cret@db/x",
            "error: --database-url: unsupported database driver 'postgres': use "
            "sqlite+aiosqlite or postgresql+asyncpg",
        ),
        (
            "sqlite:///./badges.db",
            "error: --database-url: unsupported database driver 'sqlite': use "
            "sqlite+aiosqlite or postgresql+asyncpg",
        ),
        (
            "sqlite+aiosqlite://",
            "error: --database-url: a SQLite database must be a file "
            "(e.g. sqlite+aiosqlite:///./badges.db)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_malformed_database_url_is_one_line(command: str, url: str, line: str) -> None:
    result = _run("--database-url", url, command)
    assert _last_line(result) == line
    assert "s3cret" not in result.stderr


def _serve(url: str, *, full_disk: bool = False) -> subprocess.CompletedProcess[str]:
    return _run("serve", "--address", f"127.0.0.1:{_free_port()}", env_url=url, full_disk=full_disk)


def test_starting_where_the_file_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'badges.db'}"
    assert _last_line(_serve(url)) == (
        f"error: cannot use the database {url}: unable to open database file (SQLITE_CANTOPEN)"
    )


# Runs a command with no file allowed to grow (RLIMIT_FSIZE 0; Python ignores SIGXFSZ, so a
# write fails with EFBIG as on a full disk). A wrapper that execs, not Popen's preexec_fn:
# that forks without vfork, and a plain fork of this process runs gRPC's fork handlers.
_FULL_DISK = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY)); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.parametrize("migrated", [False, True])
def test_starting_on_a_full_disk_is_one_line(tmp_path: Path, migrated: bool) -> None:
    """A new database cannot be migrated, and a migrated one (nothing to migrate) fails the
    start's write probe: either way one line."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'badges.db'}"
    if migrated:
        assert _run("migrate", env_url=url).returncode == 0
    line = _last_line(_serve(url, full_disk=True))
    assert line == f"error: cannot use the database {url}: disk I/O error (SQLITE_IOERR)"


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Makes ``path`` read-only: chmod as a user, the immutable attribute as root (who is not
    bound by file modes)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"as root, a read-only file needs chattr +i: {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_starting_on_a_read_only_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "badges.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert _run("migrate", env_url=url).returncode == 0
    with _read_only(path):
        line = _last_line(_serve(url))
        orgs = _last_line(_run("orgs", "create", "Acme", env_url=url))
    expected = (
        f"error: cannot use the database {url}: attempt to write a readonly database "
        "(SQLITE_READONLY)"
    )
    assert line == expected
    assert orgs == expected


def test_starting_without_postgresql_is_one_line() -> None:
    url = f"postgresql+asyncpg://postgres:s3cret@127.0.0.1:{_free_port()}/badges"
    result = _serve(url)
    shown = url.replace("s3cret", "***")
    assert _last_line(result).startswith(f"error: cannot use the database {shown}: ")
    assert _last_line(result).endswith("(ConnectionRefusedError)")
    assert "s3cret" not in result.stderr


async def test_starting_on_a_missing_postgresql_database_is_one_line() -> None:
    base = pg_url()
    if base is None:
        pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
    url = make_url(base).set(database=f"missing_{time.monotonic_ns()}")
    shown = url.render_as_string(hide_password=True)
    result = await asyncio.to_thread(_serve, url.render_as_string(hide_password=False))
    assert _last_line(result) == (
        f'error: cannot use the database {shown}: database "{url.database}" does not exist '
        "(SQLSTATE 3D000)"
    )
