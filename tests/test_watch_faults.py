"""Hostile WatchAwards clients against ``badge-service serve`` as a real process, on SQLite and
PostgreSQL: cancelling a stream at any point, many watchers cancelled during a fan-out, a
watcher that never reads and then vanishes, and SIGTERM whose grace period ends during a
fan-out. The process must stay up (or exit 0 on SIGTERM), log each such stream as CANCELLED or
UNAVAILABLE, and never log an unhandled error.

Each of these killed the process with SIGSEGV once: grpc.aio never closes an async-generator
handler after a cancel, and the generator's finally ran after grpc had released the call.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, badge_pb2
from tests.support import own_database_url
from tests.test_serve import BIN, SERVING, ServeProcess, json_lines, serving

BACKLOG = 300  # events in the org before the watchers start


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own on each backend."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


def reader_key(server: ServeProcess, org_id: int) -> str:
    """A reader key of the org, made by the CLI."""
    out = subprocess.run(
        [str(BIN), "keys", "create", "--org", str(org_id), "--role", "reader", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    key: str = json.loads(out)["api_key"]
    return key


async def award_many(server: ServeProcess, admin_key: str, n: int, first: int = 0) -> None:
    """``n`` awards of one new badge, in one batch: ``n`` AWARDED events."""
    client = server.client(admin_key)
    badge = await client.badges.CreateBadge(
        badge_pb2.CreateBadgeRequest(
            badge=badge_pb2.Badge(
                name=f"watched_{first}",
                title="Watched",
                badge_states=[
                    badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)
                ],
            )
        )
    )
    awards = client.stub(award_pb2_grpc.AwardServiceStub)
    reply = await awards.BatchCreateAwards(
        apb.BatchCreateAwardsRequest(
            requests=[
                apb.CreateAwardRequest(
                    award=apb.Award(
                        badge_id=badge.id, recipient=apb.Recipient(member_id=f"m{first + i}")
                    )
                )
                for i in range(n)
            ]
        )
    )
    assert [r.WhichOneof("result") for r in reply.results] == ["award"] * n


async def assert_alive(server: ServeProcess) -> None:
    """The process runs and answers health checks."""
    assert server.proc.poll() is None, server.stderr()
    reply = await health_pb2_grpc.HealthStub(server.channel()).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert reply.status == SERVING


def watch_statuses(server: ServeProcess) -> list[str]:
    """The access-log status of every WatchAwards call so far."""
    return [
        line["status"]
        for line in json_lines(server.stderr())
        if line.get("method", "").endswith("/WatchAwards")
    ]


def assert_no_errors_logged(server: ServeProcess) -> None:
    """No line above INFO other than the expected shutdown warnings, and no traceback."""
    text = server.stderr()
    assert "Traceback" not in text, text[-4000:]
    bad = [line for line in json_lines(text) if line["level"] in ("error", "critical")]
    assert bad == [], bad


async def wait_for_statuses(server: ServeProcess, n: int) -> list[str]:
    """The WatchAwards statuses once ``n`` calls are logged (the log is written in batches)."""
    for _ in range(300):
        got = watch_statuses(server)
        if len(got) >= n:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {watch_statuses(server)} logged:\n{server.stderr()[-4000:]}")


async def test_cancel_after_five_messages_with_a_reader_key(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url) as server:
        org = server.new_org()
        await award_many(server, org["api_key"], BACKLOG)
        reader = server.client(reader_key(server, org["org_id"]))
        stub = reader.stub(award_pb2_grpc.AwardServiceStub)
        for _ in range(3):  # every time, not once
            call = stub.WatchAwards(apb.WatchAwardsRequest(after_sequence=1))
            got = [await call.read() for _ in range(5)]
            assert [e.sequence for e in got] == [2, 3, 4, 5, 6]
            call.cancel()
            await asyncio.sleep(0.2)  # let the server finish the cancelled call
            await assert_alive(server)
        assert await wait_for_statuses(server, 3) == ["CANCELLED"] * 3
        assert_no_errors_logged(server)


async def test_watchers_cancelled_at_random_points_during_a_fan_out(
    tmp_path: Path, database_url: str
) -> None:
    rng = random.Random(20261207)
    watchers = 200
    async with serving(tmp_path, database_url) as server:
        org = server.new_org()
        await award_many(server, org["api_key"], 20)
        key = reader_key(server, org["org_id"])
        # A few channels, as real clients multiplex many streams on one connection.
        stubs = [server.client(key).stub(award_pb2_grpc.AwardServiceStub) for _ in range(4)]
        calls = []
        for i in range(watchers):
            call = stubs[i % len(stubs)].WatchAwards(apb.WatchAwardsRequest())
            calls.append(call)
        for call in calls:
            await call.initial_metadata()  # subscribed: the fan-out below reaches every one

        async def read_then_cancel(call: Any, n: int, delay: float) -> None:
            for _ in range(n):
                await call.read()
            await asyncio.sleep(delay)
            call.cancel()

        fan_out = asyncio.create_task(award_many(server, org["api_key"], BACKLOG, first=1000))
        await asyncio.gather(
            *(read_then_cancel(call, rng.randrange(0, 40), rng.random() * 0.05) for call in calls)
        )
        await fan_out
        await assert_alive(server)
        assert await wait_for_statuses(server, watchers) == ["CANCELLED"] * watchers
        assert_no_errors_logged(server)


CLIENT = """
import asyncio, sys
import grpc
from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc

async def main():
    channel = grpc.aio.insecure_channel(sys.argv[1])
    stub = award_pb2_grpc.AwardServiceStub(channel)
    calls = [
        stub.WatchAwards(
            award_pb2.WatchAwardsRequest(after_sequence=1),
            metadata=[("authorization", "Bearer " + sys.argv[2])],
        )
        for _ in range(int(sys.argv[3]))
    ]
    for call in calls:
        await call.initial_metadata()
    print("subscribed", flush=True)
    await asyncio.sleep(3600)  # never reads

asyncio.run(main())
"""


async def test_a_watcher_that_never_reads_then_vanishes(tmp_path: Path, database_url: str) -> None:
    async with serving(tmp_path, database_url) as server:
        org = server.new_org()
        await award_many(server, org["api_key"], BACKLOG)
        key = reader_key(server, org["org_id"])
        streams = 20
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            f"127.0.0.1:{server.port}",
            key,
            str(streams),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert client.stdout is not None
            line = await asyncio.wait_for(client.stdout.readline(), 60)
            assert line == b"subscribed\n"
            # More events while nobody reads: the server's writes back up behind flow control.
            await award_many(server, org["api_key"], BACKLOG, first=1000)
        finally:
            client.kill()  # the connection drops with the streams blocked mid-write
            await client.wait()
        assert await wait_for_statuses(server, streams) == ["CANCELLED"] * streams
        await assert_alive(server)
        assert_no_errors_logged(server)


async def test_sigterm_whose_grace_period_ends_during_a_fan_out(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, "--grace-period", "1") as server:
        org = server.new_org()
        await award_many(server, org["api_key"], BACKLOG)
        key = reader_key(server, org["org_id"])
        # Watchers that never read: their streams are blocked mid-write when the grace period
        # ends, so the server must cut them off.
        stub = server.client(key).stub(award_pb2_grpc.AwardServiceStub)
        blocked = [stub.WatchAwards(apb.WatchAwardsRequest(after_sequence=1)) for _ in range(50)]
        for call in blocked:
            await call.initial_metadata()
        fan_out = asyncio.create_task(award_many(server, org["api_key"], BACKLOG, first=1000))
        await asyncio.sleep(0.05)
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, 30)
        fan_out.cancel()
        await asyncio.gather(fan_out, return_exceptions=True)
        assert code == 0, server.stderr()[-4000:]
        statuses = watch_statuses(server)
        assert len(statuses) == 50
        assert set(statuses) <= {"CANCELLED", "UNAVAILABLE"}, statuses
        text = server.stderr()
        assert "Traceback" not in text, text[-4000:]
        assert [line for line in json_lines(text) if line["level"] == "error"] == []
