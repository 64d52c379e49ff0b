"""Idle WatchAwards watchers for the benchmark: one process holding many streams of one org.

Run as ``python -m bench.watchers PORT KEY STREAMS CHANNELS``. It opens ``STREAMS`` WatchAwards
streams spread over ``CHANNELS`` connections, a hundred at a time, waits until every one has its
initial metadata,
then prints ``{"ready": true, "after": N}`` (N: the sequence they were subscribed after). For
each event, once every stream has received it, it prints ``{"sequence": S, "first": T0,
"last": T1, "streams": STREAMS}`` with the first and last ``time.monotonic()`` of its receipt
(CLOCK_MONOTONIC is one clock for every process of the machine, so the harness compares it with
the time it got the write's reply). A stream that receives an event out of order, twice, or
ends prints ``{"error": ...}`` and the process exits 1. It stops on SIGTERM or when stdin
closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import grpc

from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc

KEY = "x-watch-after-sequence"


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def main(port: int, key: str, streams: int, channels: int) -> int:
    """Opens the streams and reports every event's receipt; returns the exit status."""
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    stubs = [award_pb2_grpc.AwardServiceStub(c) for c in chans]
    metadata = [("authorization", f"Bearer {key}")]
    # Opened a hundred at a time: a burst of thousands of new calls overflows gRPC's queue of
    # calls the server has not picked up yet, which cancels some.
    calls: list[Any] = []
    afters: set[int] = set()
    for first in range(0, streams, 100):
        opened = [
            stubs[i % channels].WatchAwards(award_pb2.WatchAwardsRequest(), metadata=metadata)
            for i in range(first, min(streams, first + 100))
        ]
        for call in opened:
            got = dict(await call.initial_metadata())
            if KEY not in got:
                emit({"error": f"a stream was refused: {await call.code()} {await call.details()}"})
                return 1
            afters.add(int(got[KEY]))
        calls += opened
    if len(afters) != 1:
        emit({"error": f"streams subscribed after different sequences: {sorted(afters)}"})
        return 1
    (after,) = afters
    # sequence -> [streams that have it, first receipt, last receipt]
    seen: dict[int, list[Any]] = {}
    failed = asyncio.Event()

    async def read(call: Any) -> None:
        expected = after + 1
        try:
            async for event in call:
                now = time.monotonic()
                if event.sequence != expected:
                    emit({"error": f"got sequence {event.sequence}, expected {expected}"})
                    failed.set()
                    return
                expected += 1
                entry = seen.get(event.sequence)
                if entry is None:
                    entry = seen[event.sequence] = [0, now, now]
                entry[0] += 1
                entry[2] = now
                if entry[0] == streams:
                    emit(
                        {
                            "sequence": event.sequence,
                            "first": entry[1],
                            "last": entry[2],
                            "streams": streams,
                        }
                    )
                    del seen[event.sequence]
            emit({"error": "a stream ended"})
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                emit({"error": f"a stream failed: {err.code().name} {err.details()}"})
        failed.set()

    readers = [asyncio.create_task(read(call)) for call in calls]
    emit({"ready": True, "after": after})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):  # the harness is gone
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    status = 1 if failed.is_set() and not stop.is_set() else 0
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for w in waiters:
        w.cancel()
    for c in chans:
        await c.close()
    return status


if __name__ == "__main__":
    port, key, streams, channels = sys.argv[1:5]
    sys.exit(asyncio.run(main(int(port), key, int(streams), int(channels))))
