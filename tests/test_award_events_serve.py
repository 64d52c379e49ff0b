"""WatchAwards against ``badge-service serve`` as a real process: SIGTERM ends an open watch
stream with UNAVAILABLE at once, so the drain is not held up by it and the process exits
cleanly without waiting out its (long) grace period."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc
from tests.support import details_of
from tests.test_serve import EXIT_TIMEOUT, LONG_GRACE, json_lines, serving, sqlite_url


async def test_sigterm_ends_watch_streams_and_exits_promptly(tmp_path: Path) -> None:
    args = ("--grace-period", str(LONG_GRACE))
    async with serving(tmp_path, sqlite_url(tmp_path), *args) as server:
        org = server.new_org()
        stub = server.client(org["api_key"]).stub(award_pb2_grpc.AwardServiceStub)
        calls = [stub.WatchAwards(apb.WatchAwardsRequest()) for _ in range(3)]
        for call in calls:
            assert dict(await call.initial_metadata())["x-watch-after-sequence"] == "0"
        # The shutdown waits up to its grace period for calls in flight; open watches must
        # not count, so the process exits long before that (EXIT_TIMEOUT is far below it).
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, EXIT_TIMEOUT)
        assert code == 0, server.stderr()
        for call in calls:
            try:
                event = await asyncio.wait_for(call.read(), 30)
            except grpc.aio.AioRpcError as err:
                got = details_of(err)
            else:
                raise AssertionError(f"the stream went on after SIGTERM: {event}")
            assert got.code == grpc.StatusCode.UNAVAILABLE, got
            assert got.info is not None and got.info.reason == "SERVER_SHUTTING_DOWN"
            assert dict(got.info.metadata) == {"last_sequence": "0"}
        logged = [
            line
            for line in json_lines(server.stderr())
            if line.get("method", "").endswith("/WatchAwards")
        ]
        assert [line["status"] for line in logged] == ["UNAVAILABLE"] * 3
