"""``badge-service serve`` as a real process: health, reflection, graceful shutdown on SIGTERM
and SIGINT, JSON access logs without keys, a taken address, and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from badge_service.api.badges.v1 import badge_pb2, common_pb2, org_meta_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.server import SERVICES
from tests.support import Client, create_pg_database, drop_pg_database, expect_error, pg_url

BIN = Path(sys.executable).parent / "badge-service"
SERVING = health_pb2.HealthCheckResponse.SERVING
START_TIMEOUT = 60.0
GRACE = 5.0
# A grace period no shutdown here should come near, and a wait for the exit that is generous
# for a loaded machine yet far shorter: a server that waited out its grace instead of exiting
# once idle fails the wait instead of passing slowly.
LONG_GRACE = 600.0
EXIT_TIMEOUT = 120.0


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    """A ``badge-service serve`` subprocess with its stderr captured in a file."""

    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    stderr_path: Path
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @classmethod
    def spawn(cls, tmp: Path, database_url: str, *args: str, port: int | None = None) -> Any:
        """Starts the server on ``port`` (a free one by default); does not wait for it."""
        port = port or free_port()
        env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": database_url}
        stderr_path = tmp / f"serve-{port}-{time.monotonic_ns()}.log"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [str(BIN), "serve", "--address", f"127.0.0.1:{port}", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return cls(proc, port, env, stderr_path)

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text()

    def channel(self) -> grpc.aio.Channel:
        """A new channel to the server, closed by close_channels()."""
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(ch)
        return ch

    def client(self, key: str) -> Client:
        """Stubs that send ``key`` as a bearer token."""
        c = Client.connect(self.port, [("authorization", f"Bearer {key}")])
        self.channels.append(c.channel)
        return c

    async def wait_serving(self) -> None:
        """Polls the health service until the server reports SERVING."""
        health = health_pb2_grpc.HealthStub(self.channel())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited {self.proc.returncode}:\n{self.stderr()}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
        pytest.fail(f"serve did not report SERVING within {START_TIMEOUT}s:\n{self.stderr()}")

    def new_org(self) -> dict[str, Any]:
        """An organisation and admin key made by the CLI on the server's database."""
        out = subprocess.run(
            [str(BIN), "orgs", "create", f"org-{time.monotonic_ns()}", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        org: dict[str, Any] = json.loads(out)
        return org

    def signal_and_wait(self, sig: signal.Signals, timeout: float) -> tuple[int, float]:
        """Sends ``sig``; returns the exit status and the seconds the process took to exit
        (for messages: tests bound the exit by ``timeout``, never by the time it took)."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {timeout}s after {sig.name}:\n{self.stderr()}")
        return code, time.monotonic() - began

    async def close(self) -> None:
        """Closes channels and kills the process if it is still running."""
        for ch in self.channels:
            await ch.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@asynccontextmanager
async def serving(tmp: Path, database_url: str, *args: str) -> AsyncIterator[ServeProcess]:
    """A started server that reports SERVING; killed on exit if still running."""
    server = ServeProcess.spawn(tmp, database_url, *args)
    try:
        await server.wait_serving()
        yield server
    finally:
        await server.close()


def sqlite_url(tmp: Path) -> str:
    """A fresh SQLite database file under ``tmp``."""
    return f"sqlite+aiosqlite:///{tmp / 'serve.db'}"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stderr line parsed as JSON (fails on a line that is not)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
    return out


def _badge(i: int) -> badge_pb2.Badge:
    return badge_pb2.Badge(
        name=f"badge_{i:03d}",
        title=f"Badge {i}",
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
    )


async def test_health_and_reflection(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        channel = server.channel()
        health = health_pb2_grpc.HealthStub(channel)
        for s in SERVICES:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=s.full_name))
            assert reply.status == SERVING, s.full_name

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="badges.v1.BadgeService"),
        ]
        replies = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
        listed = {s.name for s in replies[0].list_services_response.service}
        assert listed == {
            *(s.full_name for s in SERVICES),
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert {
            "badges.v1.OrgMetaService",
            "badges.v1.CustomFieldService",
            "badges.v1.BadgeService",
        } <= listed
        files = replies[1].file_descriptor_response.file_descriptor_proto
        assert files, replies[1]


def call_start(line: dict[str, Any]) -> float:
    """When an access-logged call began, in seconds since the epoch (its line is stamped at
    the end, with milliseconds)."""
    return log_time(line) - line["duration_ms"] / 1000


def log_time(line: dict[str, Any]) -> float:
    """A log line's ``ts`` in seconds since the epoch."""
    return dt.datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


# Log stamps have milliseconds; a call that began within this of the signal is either side.
STAMP_SLACK = 0.002


async def test_sigterm_drains_calls_in_flight(tmp_path: Path) -> None:
    """Calls admitted before SIGTERM finish OK; the rest of a burst is refused UNAVAILABLE
    (never started), none is cut off CANCELLED, and the server then exits 0."""
    async with serving(tmp_path, sqlite_url(tmp_path), "--grace-period", str(GRACE)) as server:
        org = server.new_org()
        badges = server.client(org["api_key"]).badges
        for i in range(25):
            await badges.CreateBadge(badge_pb2.CreateBadgeRequest(badge=_badge(i)))

        first = asyncio.Event()

        async def list_page() -> badge_pb2.ListBadgesResponse | grpc.aio.AioRpcError:
            try:
                return await badges.ListBadges(
                    badge_pb2.ListBadgesRequest(page_size=25), timeout=GRACE + 5
                )
            except grpc.aio.AioRpcError as err:
                return err
            finally:
                first.set()

        calls = [asyncio.create_task(list_page()) for _ in range(300)]
        await first.wait()  # the server is busy with the burst
        server.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls)
        code = await asyncio.to_thread(server.proc.wait, GRACE + 5)

        ok = [r for r in results if isinstance(r, badge_pb2.ListBadgesResponse)]
        failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert [f.code() for f in failed if f.code() != grpc.StatusCode.UNAVAILABLE] == []
        assert ok, "the calls in flight at the signal were not drained"
        assert all(len(r.badges) == 25 and r.paging.total == 25 for r in ok)
        assert code == 0, server.stderr()

        # Stopped means stopped: no new connection, and the port is free.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(server.channel()).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        lines = json_lines(server.stderr())
        msgs = [line["msg"] for line in lines]
        assert msgs.index("shutting down") < msgs.index("stopped")
        assert "grace period over; cutting off calls in flight" not in msgs
        signalled = log_time(lines[msgs.index("shutting down")])
        logged = [line for line in lines if line.get("method", "").endswith("/ListBadges")]
        # Every call of the burst reached the servicer layer: served, or refused unstarted;
        # none was left queued in gRPC's core to be cut off at the stop.
        assert len(logged) == len(results)
        assert sorted(line["status"] for line in logged) == sorted(
            "OK" if isinstance(r, badge_pb2.ListBadgesResponse) else "UNAVAILABLE" for r in results
        )
        for line in logged:
            began = call_start(line)
            if began < signalled - STAMP_SLACK:
                assert line["status"] == "OK", line  # admitted before: drained, not cut off
            elif began > signalled + STAMP_SLACK:
                assert line["status"] == "UNAVAILABLE", line  # after: refused


async def test_sigint_exits_cleanly(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path), "--grace-period", str(LONG_GRACE)) as server:
        org = server.new_org()
        meta = await server.client(org["api_key"]).meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())
        assert meta.org_id == org["org_id"]
        # Idle, it exits at once rather than waiting out its grace period.
        code, _ = server.signal_and_wait(signal.SIGINT, EXIT_TIMEOUT)
        assert code == 0, server.stderr()
        msgs = [line["msg"] for line in json_lines(server.stderr())]
        assert msgs[-2:] == ["shutting down", "stopped"]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


async def test_logs_are_json_with_the_call_and_never_the_key(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        org = server.new_org()
        key = org["api_key"]
        client = server.client(key)
        await client.fields.CreateCustomField(
            cf.CreateCustomFieldRequest(
                custom_field=cf.CustomField(name="Size", data_type=common_pb2.DATA_TYPE_STRING)
            )
        )
        await expect_error(
            client.badges.GetBadge(badge_pb2.GetBadgeRequest(id=987654)),
            grpc.StatusCode.NOT_FOUND,
            reason="NOT_FOUND",
        )
        wrong_key = key[:-6] + "XXXXXX"
        await expect_error(
            server.client(wrong_key).meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
            reason="INVALID_API_KEY",
        )
        code, _ = server.signal_and_wait(signal.SIGTERM, EXIT_TIMEOUT)
        assert code == 0

    text = server.stderr()
    assert key not in text
    assert wrong_key not in text
    calls = [line for line in json_lines(text) if "method" in line]
    summary = [(c["method"], c["org"], c["status"]) for c in calls]
    assert summary == [
        ("/badges.v1.CustomFieldService/CreateCustomField", org["org_id"], "OK"),
        ("/badges.v1.BadgeService/GetBadge", org["org_id"], "NOT_FOUND"),
        ("/badges.v1.OrgMetaService/GetOrgMeta", None, "UNAUTHENTICATED"),
    ]
    for c in calls:
        assert isinstance(c["duration_ms"], int | float) and c["duration_ms"] >= 0
        assert c["level"] == "info"
    assert calls[0]["key"] == org["key_id"]


async def test_an_address_in_use_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with serving(tmp_path, url) as first:
        # gRPC sets SO_REUSEPORT by default, which would let this second server share the port
        # and take half the connections; with one worker the server turns it off.
        second = ServeProcess.spawn(tmp_path, url, port=first.port)
        try:
            code = await asyncio.to_thread(second.proc.wait, START_TIMEOUT)
        finally:
            await second.close()
        assert code != 0
        err = second.stderr()
        assert f"error: cannot listen on 127.0.0.1:{first.port}" in err
        assert "Traceback" not in err
        reply = await health_pb2_grpc.HealthStub(first.channel()).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
        assert reply.status == SERVING
        assert first.proc.poll() is None


async def test_serve_on_postgresql(tmp_path: Path) -> None:
    base = pg_url()
    if base is None:
        pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
    url = await create_pg_database(base)
    try:
        async with serving(tmp_path, url, "--grace-period", str(LONG_GRACE)) as server:
            org = server.new_org()
            client = server.client(org["api_key"])
            created = await client.fields.CreateCustomField(
                cf.CreateCustomFieldRequest(
                    custom_field=cf.CustomField(
                        name="Level", data_type=common_pb2.DATA_TYPE_INTEGER, default_value="3"
                    )
                )
            )
            got = await client.fields.GetCustomField(cf.GetCustomFieldRequest(id=created.id))
            assert (got.name, got.default_value, got.org_id) == ("Level", "3", org["org_id"])
            await expect_error(
                client.fields.CreateCustomField(
                    cf.CreateCustomFieldRequest(
                        custom_field=cf.CustomField(
                            name="Level", data_type=common_pb2.DATA_TYPE_STRING
                        )
                    )
                ),
                grpc.StatusCode.ALREADY_EXISTS,
                reason="CUSTOM_FIELD_NAME_TAKEN",
                vendor_code=740,
            )
            code, _ = server.signal_and_wait(signal.SIGTERM, EXIT_TIMEOUT)
            assert code == 0, server.stderr()
    finally:
        await drop_pg_database(url)
