"""The benchmark's unauthenticated flood: calls at a fixed rate, each with a new random API key.

Issue 11's flood is about 1,200 calls a second from somewhere else. Sent from a grpc.aio client
on this same 2-core machine, the generator itself took about half a core (a grpc.aio call costs
the client about as much as the server), so the legitimate caller's p50 measured the two
processes fighting over the cores as much as what a refused call costs the service. This
generator writes pre-encoded HTTP/2 frames as bench/h2gen.py does: each key is a fixed-width
random token put in place of a placeholder in a pre-built HPACK block (literal fields, so the
bytes are the header's own), so a call costs a ``replace`` and part of one ``write``.

Half of the keys have the id-bearing shape (``bsk_<id>_<secret>``, with ids no key has), half
the older shape (``bsk_<secret>``). A call answered with a message counts as ``ok`` (a key was
served: must stay 0); one answered without (a trailers-only status: gRPC's answer to a refused
call) counts as ``refused``. Which status it was is the server's to count (the harness reads
the service's counts by status).

Run as ``python -m bench.flood SPEC.json`` (host, port, path, body (base64), rate, streams,
duration); prints one JSON object: ok, refused, the rate of answers and the client's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench import frames, h2gen

_SECRET = "S" * 43  # secrets.token_urlsafe(32) is 43 characters
_ID = "9" * 16  # fixed-width ids, far above any key's
_SECRET_BYTES, _ID_BYTES = _SECRET.encode(), _ID.encode()


class RandomKeys(h2gen.Workload):
    """Requests for one method whose ``authorization`` header holds a new random key each,
    alternating the two key shapes."""

    def __init__(self, path: str, authority: str, body: bytes) -> None:
        super().__init__([])
        self._body = body
        self._blocks = [
            frames.hpack_block(
                frames.grpc_request_headers(path, authority, [("authorization", f"Bearer {key}")])
            )
            for key in (f"bsk_{_ID}_{_SECRET}", f"bsk_{_SECRET}")
        ]
        self._ids = itertools.count(10**15)
        self._shape = itertools.cycle((0, 1))

    def next_item(self) -> tuple[bytes, bytes, bool]:
        """The header block (with a fresh key) and body of the next request."""
        shape = next(self._shape)
        block = self._blocks[shape].replace(_SECRET_BYTES, secrets.token_urlsafe(32).encode())
        if shape == 0:
            block = block.replace(_ID_BYTES, b"%016d" % next(self._ids))
        return block, self._body, False


class PacedConnection(h2gen.Connection):
    """An h2gen connection that sends its n-th call at n / ``rate`` seconds (at most
    ``streams`` in flight), instead of a new call as each one ends."""

    def __init__(
        self,
        workload: h2gen.Workload,
        streams: int,
        clock: h2gen._Clock,
        stats: h2gen.Stats,
        rate: float,
    ) -> None:
        super().__init__(workload, streams, clock, stats)
        self._rate = rate
        self.sent = 0

    def _fill(self) -> None:
        clock = self._clock
        if not clock.issuing or self._goaway or self._transport is None:
            return
        now = time.perf_counter()
        due = int((now - clock.begin) * self._rate) + 1 - self.sent
        out = bytearray()
        while due > 0 and len(self._inflight) < self._streams:
            header_block, body, _ = self._workload.next_item()
            sid = self._next_id
            self._next_id += 2
            self._inflight[sid] = [now, False, False]
            out += frames.request_frames(sid, header_block, body)
            due -= 1
            self.sent += 1
        if out:
            self._transport.write(out)

    def tick(self) -> None:
        """Sends the calls that have come due (called by the run's timer)."""
        self._fill()


async def run(
    host: str, port: int, path: str, body: bytes, *, rate: float, streams: int, duration: float
) -> dict[str, Any]:
    """Floods for ``duration`` seconds; the counts, the rate of answers and the CPU used."""
    loop = asyncio.get_running_loop()
    stats = h2gen.Stats()
    cpu0 = time.process_time()
    clock = h2gen._Clock(0.0, duration)
    workload = RandomKeys(path, f"{host}:{port}", body)
    _, conn = await loop.create_connection(
        lambda: PacedConnection(workload, streams, clock, stats, rate), host, port
    )
    tick = min(0.005, 1 / rate)
    while time.perf_counter() < clock.end:
        conn.tick()
        await asyncio.sleep(tick)
    clock.issuing = False
    conn.stop_issuing()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(conn.drained.wait(), 10)
    conn.close()
    await asyncio.wait_for(conn.closed, 10)
    answered = stats.ok + stats.failed
    return {
        "ok": stats.ok,
        "refused": stats.failed,
        "sent": conn.sent,
        "rps": answered / duration,
        "client_cpu_s": time.process_time() - cpu0,
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.flood SPEC.json``."""
    p = argparse.ArgumentParser(description="the benchmark's unauthenticated flood")
    p.add_argument("spec", type=Path)
    args = p.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    coro = run(
        spec.get("host", "127.0.0.1"),
        int(spec["port"]),
        spec["path"],
        base64.b64decode(spec["body"]),
        rate=float(spec["rate"]),
        streams=int(spec["streams"]),
        duration=float(spec["duration"]),
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
