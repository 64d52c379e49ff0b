"""SIGTERM against ``badge-service serve`` as a real process under write load, on SQLite and
PostgreSQL: every acknowledged write is stored, nothing refused was started, no call that
began after the signal is answered OK, and ``--drain-delay`` keeps serving while health
already says NOT_SERVING."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from badge_service.api.badges.v1 import badge_pb2
from badge_service.store.models import badges
from tests.support import details_of, own_database_url
from tests.test_serve import STAMP_SLACK, call_start, json_lines, log_time, serving

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRACE = 10.0
WRITERS = 16


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own on each backend."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


def new_badge(name: str) -> badge_pb2.Badge:
    """A minimal valid CrowdTwist badge."""
    return badge_pb2.Badge(
        name=name,
        title=name,
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
    )


async def stored_badges(url: str, org_id: int) -> dict[int, str]:
    """The org's badges as stored (id -> name), read straight from the database."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(badges.c.id, badges.c.name).where(badges.c.org_id == org_id)
            )
            return {int(r.id): r.name for r in rows}
    finally:
        await engine.dispose()


async def test_sigterm_under_write_load_loses_and_invents_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url, "--grace-period", str(GRACE)) as server:
        org = server.new_org()
        stub = server.client(org["api_key"]).badges
        acknowledged: dict[int, str] = {}
        refused: list[grpc.aio.AioRpcError] = []
        enough = asyncio.Event()

        async def writer(w: int) -> None:
            # Each writer keeps writing until the server turns it away, as a client would.
            i = 0
            while True:
                name = f"w{w}_{i}"
                try:
                    badge = await stub.CreateBadge(
                        badge_pb2.CreateBadgeRequest(badge=new_badge(name)), timeout=GRACE + 10
                    )
                except grpc.aio.AioRpcError as err:
                    refused.append(err)
                    return
                acknowledged[badge.id] = name
                if len(acknowledged) >= 200:
                    enough.set()
                i += 1

        writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        await enough.wait()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*writers)
        code = await asyncio.to_thread(server.proc.wait, GRACE + 10)
        assert code == 0, server.stderr()[-4000:]

    # Every writer was turned away with UNAVAILABLE: refused by the draining server
    # (SERVER_SHUTTING_DOWN) or, once it had stopped, by the closed port.
    assert len(refused) == WRITERS
    for err in refused:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        got = details_of(err)
        assert got.info is None or got.info.reason == "SERVER_SHUTTING_DOWN", got
    # Acknowledged is stored, and nothing refused was stored.
    assert await stored_badges(database_url, org["org_id"]) == acknowledged

    lines = json_lines(server.stderr())
    msgs = [line["msg"] for line in lines]
    signalled = log_time(lines[msgs.index("shutting down")])
    created = [line for line in lines if line.get("method", "").endswith("/CreateBadge")]
    assert sum(line["status"] == "OK" for line in created) == len(acknowledged)
    started_after = [line for line in created if call_start(line) > signalled + STAMP_SLACK]
    assert started_after, "no call reached the server after the signal: the test proves nothing"
    assert {line["status"] for line in started_after} == {"UNAVAILABLE"}


async def test_drain_delay_serves_while_health_says_not_serving(
    tmp_path: Path, database_url: str
) -> None:
    delay = 3.0
    async with serving(
        tmp_path, database_url, "--drain-delay", str(delay), "--grace-period", "5"
    ) as server:
        org = server.new_org()
        stub = server.client(org["api_key"]).badges
        health = health_pb2_grpc.HealthStub(server.channel())
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        server.proc.send_signal(signal.SIGTERM)
        assert (await watch.read()).status == NOT_SERVING
        # Still served: load balancers get the delay to stop sending.
        made = await stub.CreateBadge(badge_pb2.CreateBadgeRequest(badge=new_badge("late")))
        assert made.name == "late"
        # Then refused, unstarted, until the process exits.
        i = 0
        while True:
            try:
                await stub.CreateBadge(
                    badge_pb2.CreateBadgeRequest(badge=new_badge(f"after_{i}")), timeout=5
                )
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                break
            i += 1
            await asyncio.sleep(0.05)
        # The health watch ends too, rather than holding the stop for the grace period.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        code = await asyncio.to_thread(server.proc.wait, 30)
        assert code == 0, server.stderr()[-4000:]
        lines = json_lines(server.stderr())
        assert "grace period over; cutting off calls in flight" not in [x["msg"] for x in lines]

    names = set((await stored_badges(database_url, org["org_id"])).values())
    assert names == {"late", *(f"after_{n}" for n in range(i))}
    shutting = [line for line in lines if line["msg"] == "shutting down"]
    assert shutting[0]["drain_delay_seconds"] == delay
