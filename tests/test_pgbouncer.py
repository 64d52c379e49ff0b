"""The service behind a real PgBouncer in transaction mode (docs/deploy.md, "PgBouncer").

A PgBouncer of the test's own (the Debian package's binary, on an ephemeral port, a config in
a temporary directory: trust authentication, ``pool_mode = transaction``, a few server
connections for many clients) in front of the shared PostgreSQL. With the statement cache off
(``db_statement_cache=0``) reads, writes and bursts of concurrent calls from several clients
all succeed while the service's pools share those few server connections, migrations and the
CLI's own set-up run through it, and LISTEN/NOTIFY is off (the hub polls). With the cache on,
named prepared statements go astray between server connections; the calls that fail say
UNAVAILABLE (never INTERNAL or UNKNOWN), and the log names the setting to change.

It skips without BADGE_SERVICE_TEST_PG_URL, and without the ``pgbouncer`` binary unless
PostgreSQL is required (BADGE_SERVICE_REQUIRE_PG=1, as in CI, which installs it: ``.ci/run``):
then a missing binary fails the test, since the deployment it stands for would go untested.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.config import Settings
from badge_service.server import start
from badge_service.service.watch import hub_of
from badge_service.store import events, notify
from badge_service.store.faults import PREPARED_HINT
from tests.private_pg import _free_port
from tests.require_pg import required
from tests.support import (
    Backend,
    Client,
    Org,
    _asyncpg_dsn,
    create_pg_database,
    details_of,
    drop_pg_database,
    pg_url,
)

# Server connections PgBouncer keeps per database and user: far fewer than the service's
# pools open (up to 10 + 10 + 10 client connections per process), so they are shared.
SERVER_CONNECTIONS = 3
CLIENTS = 5  # channels, each its own HTTP/2 connection to the server
BURST = 50  # concurrent calls, spread over the clients


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


@dataclass
class Bouncer:
    """A running PgBouncer and the URL of the test database through it."""

    proc: subprocess.Popen[bytes]
    root: Path
    url: str  # through PgBouncer
    direct_url: str  # the same database, straight to PostgreSQL

    @property
    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _start_bouncer(root: Path, direct_url: str) -> Bouncer:
    """Starts PgBouncer on a free port in transaction mode in front of ``direct_url``'s
    server, and waits until it accepts connections."""
    binary = _binary()
    assert binary is not None
    server = make_url(direct_url)
    user = server.username or "postgres"
    port = _free_port()
    (root / "users.txt").write_text(f'"{user}" ""\n')
    (root / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {root / 'users.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_CONNECTIONS}",
                "max_client_conn = 500",
                # The service asks for statement_timeout at connect (docs/deploy.md).
                "ignore_startup_parameters = statement_timeout",
                "log_connections = 0",
                "log_disconnections = 0",
                f"logfile = {root / 'pgbouncer.log'}",
                f"pidfile = {root / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    run_as: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        account = pwd.getpwnam("postgres")
        for path in (root, *root.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        run_as = [f"--user={account.pw_name}"]
    proc = subprocess.Popen(
        [binary, *run_as, str(root / "pgbouncer.ini")],
        # Not a pipe: PgBouncer logs to stderr as well as to its logfile, and would block
        # on a full pipe nobody reads (every call then waits on it).
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    through = server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    bouncer = Bouncer(proc, root, through, direct_url)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            pytest.fail(f"pgbouncer exited with {proc.returncode}: {bouncer.log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return bouncer
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"pgbouncer did not listen within 20 s: {bouncer.log}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def bouncer_root() -> Iterator[Path]:
    """A directory PgBouncer can read as the user it runs as (pytest's are root's only)."""
    base = pg_url()
    if base is None:
        pytest.skip(
            "PgBouncer tests need BADGE_SERVICE_TEST_PG_URL "
            "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
        )
    if _binary() is None:
        why = "the pgbouncer binary is not installed (apt-get install pgbouncer)"
        if required():
            pytest.fail(f"BADGE_SERVICE_REQUIRE_PG is set and {why}")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="badge-pgbouncer-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def bouncer(bouncer_root: Path) -> AsyncIterator[Bouncer]:
    """PgBouncer in transaction mode in front of a fresh, empty database."""
    base = pg_url()
    assert base is not None
    direct = await create_pg_database(base)
    running = _start_bouncer(bouncer_root, direct)
    try:
        yield running
    finally:
        running.proc.terminate()
        try:
            running.proc.wait(10)
        except subprocess.TimeoutExpired:
            running.proc.kill()
        await drop_pg_database(direct)


@pytest.fixture(scope="module")
async def uncached(bouncer: Bouncer) -> AsyncIterator[Backend]:
    """A server through PgBouncer with the statement cache off; it migrates the empty
    database at start, through PgBouncer."""
    settings = Settings(
        address="127.0.0.1:0",
        database_url=bouncer.url,
        db_statement_cache=0,
        log_level="WARNING",
    )
    running = await start(settings)
    backend = Backend("pgbouncer", bouncer.url, running, [])
    try:
        yield backend
    finally:
        for c in backend.clients:
            await c.channel.close()
        await running.stop(grace=1)


async def _server_connections(bouncer: Bouncer) -> int:
    """How many PostgreSQL backends serve the test database now (asked directly)."""
    url = make_url(bouncer.direct_url)
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
        return count
    finally:
        await conn.close()


def _badge(name: str) -> pb.CreateBadgeRequest:
    return pb.CreateBadgeRequest(
        badge=pb.Badge(
            name=name,
            title=name,
            badge_states=[pb.BadgeState(state=pb.BADGE_STATE_TYPE_EARNED, order=1)],
        )
    )


async def _burst(
    clients: list[Client], existing: list[int], tag: str
) -> list[pb.Badge | grpc.aio.AioRpcError]:
    """BURST concurrent calls over ``clients``: half GetBadge of ``existing``, half
    CreateBadge; each call's reply, or its AioRpcError."""

    async def one(i: int) -> pb.Badge | grpc.aio.AioRpcError:
        client = clients[i % len(clients)]
        try:
            if i % 2:
                return await client.badges.GetBadge(
                    pb.GetBadgeRequest(id=existing[i % len(existing)])
                )
            return await client.badges.CreateBadge(_badge(f"{tag}-{i}"))
        except grpc.aio.AioRpcError as err:
            return err

    return await asyncio.gather(*(one(i) for i in range(BURST)))


async def _org_clients(backend: Backend) -> tuple[Org, list[Client]]:
    org = await backend.new_org()
    auth = [("authorization", f"Bearer {org.admin_key}")]
    return org, [backend.client(auth) for _ in range(CLIENTS)]


async def test_reads_writes_and_bursts_work_with_the_statement_cache_off(
    uncached: Backend, bouncer: Bouncer
) -> None:
    org, clients = await _org_clients(uncached)
    first = await org.admin.badges.CreateBadge(_badge("first"))
    got = await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=first.id))
    assert (got.id, got.name) == (first.id, "first")
    existing = [first.id]
    for round_ in range(4):
        replies = await _burst(clients, existing, f"r{round_}")
        failed = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
        assert failed == [], [(e.code(), e.details()) for e in failed]
        badges = [r for r in replies if isinstance(r, pb.Badge)]
        assert len(badges) == BURST
        for reply in badges[1::2]:  # the GetBadge calls
            assert reply.id in existing
        existing += [r.id for r in badges[0::2]]  # the CreateBadge calls
        # The pools' many client connections shared PgBouncer's few server connections.
        assert await _server_connections(bouncer) <= SERVER_CONNECTIONS
    listed = await org.reader.badges.ListBadges(pb.ListBadgesRequest(page_size=10))
    assert listed.total_size == 1 + 4 * BURST // 2
    assert [b.id for b in listed.badges] == sorted(existing)[:10]
    # Every badge read back (GetBadge: the raw asyncpg pool, unnamed statements too).
    gets = await asyncio.gather(
        *(org.reader.badges.GetBadge(pb.GetBadgeRequest(id=i)) for i in existing)
    )
    assert [g.id for g in gets] == existing


async def test_listen_is_off_and_the_hub_polls(
    uncached: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Through transaction mode a LISTEN would be lost unheard: no notification connection
    is opened, and the hub polls (its usual 0.5 s)."""
    assert not uncached.db.can_listen
    assert notify.notices_for(uncached.db) is None
    assert not hub_of(uncached.db).listening
    # Logged once per Database, at the first hub (here a second one: already told).
    with caplog.at_level(logging.WARNING, logger="badge_service.watch"):
        assert notify.notices_of(uncached.db, events.bell(uncached.db.engine)) is None
    assert caplog.records == []


async def test_with_the_cache_on_failures_are_unavailable_and_the_log_says_why(
    uncached: Backend, bouncer: Bouncer, caplog: pytest.LogCaptureFixture
) -> None:
    """The default cache (100) through transaction mode: named statements prepared on one
    server connection are looked for on another, or clash with another client's. Calls that
    fail say UNAVAILABLE, STORE_UNAVAILABLE (the statement never ran: a retry is safe); none
    says INTERNAL or UNKNOWN; the log names the setting."""
    org, _ = await _org_clients(uncached)  # made through the uncached server: migrated
    first = await org.admin.badges.CreateBadge(_badge("cached-first"))
    settings = Settings(
        address="127.0.0.1:0",
        database_url=bouncer.url,
        migrate_on_start=False,
        log_level="WARNING",
    )
    running = await start(settings)
    cached = Backend("pgbouncer-cached", bouncer.url, running, [])
    auth = [("authorization", f"Bearer {org.admin_key}")]
    clients = [cached.client(auth) for _ in range(CLIENTS)]
    # The uncached server keeps PgBouncer's server connections busy too, so that the cached
    # server's connections are handed different ones.
    others = [uncached.client(auth) for _ in range(CLIENTS)]
    codes: dict[str, int] = {}
    try:
        with caplog.at_level(logging.WARNING, logger="badge_service.store"):
            for round_ in range(6):
                replies, beside = await asyncio.gather(
                    _burst(clients, [first.id], f"c{round_}"),
                    _burst(others, [first.id], f"u{round_}"),
                )
                # Unnamed statements only: the other server's names cannot touch them.
                assert not [r for r in beside if isinstance(r, grpc.aio.AioRpcError)]
                for reply in replies:
                    if isinstance(reply, grpc.aio.AioRpcError):
                        got = details_of(reply)
                        assert got.code == grpc.StatusCode.UNAVAILABLE, (got.code, got.message)
                        assert got.info is not None and got.info.reason == "STORE_UNAVAILABLE"
                        codes["UNAVAILABLE"] = codes.get("UNAVAILABLE", 0) + 1
                    else:
                        codes["OK"] = codes.get("OK", 0) + 1
    finally:
        for c in cached.clients:
            await c.channel.close()
        await running.stop(grace=1)
    assert codes.get("UNAVAILABLE", 0) > 0, codes
    hinted = [r for r in caplog.records if getattr(r, "hint", "") == PREPARED_HINT]
    assert hinted, [(r.getMessage(), r.__dict__.get("error")) for r in caplog.records]
    assert {getattr(r, "fault", "") for r in hinted} <= {"SQLSTATE 26000", "SQLSTATE 42P05"}


def test_the_url_does_not_take_a_cache_option_of_its_own() -> None:
    """Set in the URL, SQLAlchemy's cache would differ from asyncpg's (a kept unnamed
    statement replaced under it); the setting sets both."""
    from badge_service.store.db import DatabaseURLError, parse_database_url

    for option in ("prepared_statement_cache_size=0", "prepared_statement_name_func=f"):
        with pytest.raises(DatabaseURLError, match="BADGE_SERVICE_DB_STATEMENT_CACHE"):
            parse_database_url(f"postgresql+asyncpg://u@127.0.0.1:6432/db?{option}")


def test_a_negative_statement_cache_is_refused() -> None:
    from badge_service.cli import main

    with pytest.raises(SystemExit, match="--db-statement-cache must be 0 or more"):
        main(["serve", "--db-statement-cache", "-1"])
