"""``badge-service serve`` under load while its database fails, and after it recovers.

PostgreSQL: a private cluster (tests/private_pg.py; never the shared server) is stopped and
started again (fast shutdown, and an immediate one as in a crash), frozen with SIGSTOP and
continued, and made read-only. SQLite: the disk fills (RLIMIT_FSIZE set on the running server:
every write to a file fails with EFBIG, as on a full disk) and empties again.

Throughout: no call ends INTERNAL or UNKNOWN (only OK, UNAVAILABLE, and DEADLINE_EXCEEDED for
a call that set a deadline), calls without a deadline end within the server's own timeouts,
health goes NOT_SERVING while the store fails and SERVING once it is back, with the same
server process; every acknowledged write is stored; and the log holds a few warning lines, no
traceback per failed call.

The load's calls set no deadline on purpose: the server's timeouts must end them. The test
bounds its waits generously (the health monitor's target is 2 s), so a loaded machine does
not fail it, while a server that holds calls for the pool's 30 s or keeps SERVING does.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from badge_service.api.badges.v1 import badge_pb2
from badge_service.store.faults import LOG_INTERVAL
from tests.private_pg import PrivateCluster, private_cluster
from tests.support import Client, details_of
from tests.test_serve import BIN, ServeProcess, free_port, json_lines

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Generous bounds on waits for the server to notice a fault or a recovery.
NOTICE = 15.0
# The server's own limits in these tests: small, so that calls held by a hung database end
# soon (the defaults are 5 s and 2 s).
TIMEOUT_ARGS = ("--db-statement-timeout", "1", "--db-connect-timeout", "1")
ALLOWED = {"OK", "UNAVAILABLE"}


def _badge(name: str) -> badge_pb2.Badge:
    return badge_pb2.Badge(
        name=name,
        title=name,
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
    )


async def _health(server: ServeProcess) -> int | None:
    """The server's overall health status, or None when it does not answer."""
    stub = health_pb2_grpc.HealthStub(server.channel())
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def wait_health(server: ServeProcess, status: int, within: float = NOTICE) -> None:
    """Waits until health reports ``status``; fails after ``within`` seconds."""
    stub = health_pb2_grpc.HealthStub(server.channel())
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = (await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status
        except grpc.aio.AioRpcError as err:
            seen = err.code()
        if seen == status:
            return
        await asyncio.sleep(0.05)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    pytest.fail(f"health not {name} within {within}s (last {seen}):\n{server.stderr()[-3000:]}")


@dataclass
class Load:
    """Tasks calling GetBadge and CreateBadge in a loop, without deadlines, recording every
    outcome by (method, status) and the id of every acknowledged create."""

    client: Client
    badge_id: int
    prefix: str
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    created: list[int] = field(default_factory=list)
    _stop: bool = False

    async def _loop(self, i: int) -> None:
        n = 0
        while not self._stop:
            n += 1
            write = n % 2 == 0
            method = "CreateBadge" if write else "GetBadge"
            try:
                if write:
                    reply = await self.client.badges.CreateBadge(
                        badge_pb2.CreateBadgeRequest(badge=_badge(f"{self.prefix}-{i}-{n}"))
                    )
                    self.created.append(reply.id)
                else:
                    await self.client.badges.GetBadge(badge_pb2.GetBadgeRequest(id=self.badge_id))
                code = "OK"
            except grpc.aio.AioRpcError as err:
                got = details_of(err)
                code = got.code.name
                if code == "UNAVAILABLE":  # the store's, with the reason clients may act on
                    assert got.info is not None and got.info.reason == "STORE_UNAVAILABLE", got
                await asyncio.sleep(0.02)  # a failing store fails fast: do not spin
            self.outcomes[(method, code)] += 1

    def count(self, method: str | None = None, code: str | None = None) -> int:
        """Outcomes so far of ``method`` (any when None) with status ``code`` (any)."""
        return sum(
            n
            for (m, c), n in self.outcomes.items()
            if (method is None or m == method) and (code is None or c == code)
        )

    async def until(self, what: str, done: Callable[[], bool], within: float = NOTICE) -> None:
        """Waits until ``done()``; fails after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {within}s: {what}; outcomes {dict(self.outcomes)}")
            await asyncio.sleep(0.05)

    async def more(self, method: str, code: str, n: int, within: float = NOTICE) -> None:
        """Waits for ``n`` more outcomes of ``method`` with status ``code``."""
        target = self.count(method, code) + n
        await self.until(f"{n} more {method} {code}", lambda: self.count(method, code) >= target)


@asynccontextmanager
async def load(server: ServeProcess, org: dict[str, Any], tasks: int = 6) -> AsyncIterator[Load]:
    """A running Load on ``server``; stopped (every call finished) on exit."""
    admin = server.client(org["api_key"])
    first = await admin.badges.CreateBadge(
        badge_pb2.CreateBadgeRequest(badge=_badge(f"seed-{time.monotonic_ns()}"))
    )
    running = Load(admin, first.id, f"load-{time.monotonic_ns()}")
    workers = [asyncio.create_task(running._loop(i)) for i in range(tasks)]
    try:
        await running.more("GetBadge", "OK", 10)
        await running.more("CreateBadge", "OK", 10)
        yield running
    finally:
        running._stop = True
        # Calls without deadlines: the server's timeouts must end them.
        done, pending = await asyncio.wait(workers, timeout=60)
        for task in pending:
            task.cancel()
        assert not pending, f"calls still running 60 s after the load stopped: {running.outcomes}"
        for task in done:
            task.result()


async def check_stored(server: ServeProcess, org: dict[str, Any], ids: list[int]) -> None:
    """Every acknowledged create is readable."""
    badges = server.client(org["api_key"]).badges
    for badge_id in ids:
        got = await badges.GetBadge(badge_pb2.GetBadgeRequest(id=badge_id), timeout=10)
        assert got.id == badge_id


def check_log(text: str, seconds: float, *, fresh: bool) -> list[dict[str, Any]]:
    """The server's log lines: JSON, no error and no traceback, and at most one warning per
    kind of store fault per LOG_INTERVAL (at least one when the server is ``fresh``: a
    server that failed the same way in the last interval logs nothing new); returns them."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    assert [line for line in lines if "exc" in line] == []
    statuses = {line["status"] for line in lines if "status" in line}
    assert statuses <= {"OK", "UNAVAILABLE", "CANCELLED"}, statuses
    faults = Counter(line["fault"] for line in lines if line["msg"] == "store unavailable")
    assert faults or not fresh, "no store fault was logged"
    limit = math.ceil(seconds / LOG_INTERVAL) + 1
    assert all(n <= limit for n in faults.values()), (faults, limit)
    return lines


def health_changes(lines: list[dict[str, Any]]) -> list[bool]:
    """The health monitor's logged changes, True for SERVING."""
    return [line["serving"] for line in lines if line["msg"] == "health"]


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass
class PgService:
    """A private PostgreSQL cluster, a server on it and an organisation."""

    cluster: PrivateCluster
    server: ServeProcess
    org: dict[str, Any]
    pid: int


@pytest.fixture(scope="module")
async def pg_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PgService]:
    tmp = tmp_path_factory.mktemp("pg-faults")
    with private_cluster(tmp) as cluster:
        server = ServeProcess.spawn(tmp, cluster.url, *TIMEOUT_ARGS)
        try:
            await server.wait_serving()
            org = await asyncio.to_thread(server.new_org)
            yield PgService(cluster, server, org, server.proc.pid)
        finally:
            await server.close()


@asynccontextmanager
async def pg_fault(pg: PgService) -> AsyncIterator[tuple[Load, Callable[[], str]]]:
    """Load on the server from a healthy start; afterwards the cluster runs again, health is
    SERVING, the same process serves, no call failed but as allowed, every acknowledged write
    is stored and the log is clean. Yields the load and a function returning the log lines
    written since."""
    pg.cluster.thaw()
    if pg.cluster.proc is None or pg.cluster.proc.poll() is not None:
        await asyncio.to_thread(pg.cluster.start)
    await wait_health(pg.server, SERVING)
    offset = len(pg.server.stderr())
    began = time.monotonic()

    def log_since() -> str:
        return pg.server.stderr()[offset:]

    async with load(pg.server, pg.org) as running:
        yield running, log_since
        await wait_health(pg.server, SERVING)
        await running.more("GetBadge", "OK", 5)
        await running.more("CreateBadge", "OK", 5)
    assert pg.server.proc.poll() is None and pg.server.proc.pid == pg.pid
    assert {code for _, code in running.outcomes} <= ALLOWED, running.outcomes
    await check_stored(pg.server, pg.org, running.created)
    lines = check_log(log_since(), time.monotonic() - began, fresh=False)
    assert health_changes(lines) == [False, True], health_changes(lines)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_stopped_and_started_again(pg_service: PgService, mode: str) -> None:
    """``fast`` is an operator's stop (sessions terminated, "shutting down" to new ones);
    ``immediate`` is as a crash (recovery at the next start: "starting up")."""
    async with pg_fault(pg_service) as (running, _):
        await asyncio.to_thread(pg_service.cluster.stop, mode)
        await wait_health(pg_service.server, NOT_SERVING)
        await running.more("GetBadge", "UNAVAILABLE", 10)
        await running.more("CreateBadge", "UNAVAILABLE", 10)
        await asyncio.to_thread(pg_service.cluster.start)


async def test_postgresql_frozen_and_continued(pg_service: PgService) -> None:
    """SIGSTOP on every PostgreSQL process: connections stay open and nothing answers. Calls
    without a deadline end UNAVAILABLE at the server's timeouts, one with a deadline ends
    DEADLINE_EXCEEDED at it; after SIGCONT everything works again."""
    async with pg_fault(pg_service) as (running, _):
        pg_service.cluster.freeze()
        try:
            await wait_health(pg_service.server, NOT_SERVING)
            await running.more("GetBadge", "UNAVAILABLE", 3)
            await running.more("CreateBadge", "UNAVAILABLE", 3)
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await running.client.badges.GetBadge(
                    badge_pb2.GetBadgeRequest(id=running.badge_id), timeout=0.5
                )
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            pg_service.cluster.thaw()


async def test_postgresql_read_only(pg_service: PgService) -> None:
    """Every transaction read-only (as on a standby): reads go on, writes are UNAVAILABLE, and
    health is NOT_SERVING until writes are allowed again."""
    import asyncpg

    dsn = make_url(pg_service.cluster.url).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        async with pg_fault(pg_service) as (running, _):
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")
            await wait_health(pg_service.server, NOT_SERVING)
            await running.more("CreateBadge", "UNAVAILABLE", 10)
            await running.more("GetBadge", "OK", 10)
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
        assert running.count("GetBadge", "UNAVAILABLE") == 0, running.outcomes
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


# --- SQLite --------------------------------------------------------------------------------


def _spawn_piped(tmp: Path, url: str) -> ServeProcess:
    """A server whose stderr is a pipe copied to a file by a thread: a file size limit put on
    the server must not stop its log."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADGE_SERVICE_")}
    env["BADGE_SERVICE_DATABASE_URL"] = url
    stderr_path = tmp / f"serve-{port}.log"
    proc = subprocess.Popen(
        [str(BIN), "serve", "--address", f"127.0.0.1:{port}", *TIMEOUT_ARGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def copy() -> None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        with stderr_path.open("wb") as out:
            for chunk in iter(lambda: os.read(fd, 65536), b""):
                out.write(chunk)
                out.flush()

    threading.Thread(target=copy, daemon=True).start()
    stderr_path.touch()
    return ServeProcess(proc, port, env, stderr_path)


async def test_sqlite_disk_full_and_freed(tmp_path: Path) -> None:
    """No file of the server may grow past one byte: writes fail (SQLite: disk I/O error or
    database full), health is NOT_SERVING although reads go on, and once the limit is lifted
    writes and health come back, in the same process."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'full.db'}"
    server = _spawn_piped(tmp_path, url)
    pid = server.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    try:
        await server.wait_serving()
        org = await asyncio.to_thread(server.new_org)
        began = time.monotonic()
        async with load(server, org) as running:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
            try:
                await wait_health(server, NOT_SERVING)
                await running.more("CreateBadge", "UNAVAILABLE", 20)
                await running.more("GetBadge", "OK", 20)  # reads go on
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
            await wait_health(server, SERVING)
            await running.more("CreateBadge", "OK", 10)
        assert server.proc.poll() is None
        assert {code for _, code in running.outcomes} <= ALLOWED, running.outcomes
        assert running.count("GetBadge", "UNAVAILABLE") == 0, running.outcomes
        await check_stored(server, org, running.created)
        # The recovery's INFO line may be written up to 0.2 s after health answers SERVING.
        for _ in range(100):
            if health_changes(json_lines(server.stderr())) == [True, False, True]:
                break
            await asyncio.sleep(0.05)
        lines = check_log(server.stderr(), time.monotonic() - began, fresh=True)
        assert health_changes(lines) == [True, False, True], health_changes(lines)
        failed = running.count("CreateBadge", "UNAVAILABLE")
        logged = sum(1 for line in lines if line["msg"] == "store unavailable")
        assert failed > 3 * logged, (failed, logged)
    finally:
        await server.close()
