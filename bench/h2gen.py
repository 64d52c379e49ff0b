"""A small closed-loop HTTP/2 load generator for gRPC calls whose bodies must differ per request.

h2load sends the same ``-d`` body with every request (it ``pread``s one file from offset 0 for
each stream), so it cannot drive CreateBadge: every badge name must be unique in its org, and a
repeated name is ALREADY_EXISTS after the first call, which measures the error path instead of a
write. This generator writes pre-encoded HTTP/2 frames (``bench.frames``) and changes only a
fixed-width counter inside the pre-serialized body per request, so a request costs a bytes
replace and one ``write``; it parses just the 9-byte frame headers of what comes back.

A call counts as OK when its response carried a DATA frame before the stream ended: gRPC
servers answer a failed call that sent no message with a trailers-only response, so the client
can tell failures apart without decoding HPACK. The harness still checks the server's own count
of non-OK statuses.

Run as ``python -m bench.h2gen SPEC.json``; prints one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench import frames


@dataclass(frozen=True)
class Item:
    """One kind of request in the cycle: its HPACK header block and gRPC body; when
    ``placeholder`` is set, every request replaces it in the body with a fresh counter of the
    same width (so the body's length and framing never change)."""

    header_block: bytes
    body: bytes
    placeholder: bytes | None = None


class Workload:
    """Hands out requests in a fixed cycle of items (e.g. nine reads then one write)."""

    def __init__(self, items: list[Item]) -> None:
        self._cycle = itertools.cycle(items)
        self._counter = itertools.count()

    def next(self) -> tuple[bytes, bytes]:
        """The header block and body of the next request."""
        return self.next_item()[:2]

    def next_item(self) -> tuple[bytes, bytes, bool]:
        """The header block and body of the next request, and whether its body is unique."""
        item = next(self._cycle)
        if item.placeholder is None:
            return item.header_block, item.body, False
        width = len(item.placeholder)
        unique = b"%0*d" % (width, next(self._counter))
        if len(unique) != width:
            raise OverflowError("the unique counter outgrew its placeholder")
        return item.header_block, item.body.replace(item.placeholder, unique), True


@dataclass
class Stats:
    """What the measured window saw."""

    ok: int = 0
    failed: int = 0
    ok_total: int = 0  # every OK call, warm-up and tail included
    unique_ok_total: int = 0  # of those, calls with a unique body (to check stored writes)
    latencies: list[float] = field(default_factory=list)


class _Clock:
    """The measured window: completions between ``start`` and ``end`` count."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.begin = time.perf_counter()
        self.start = self.begin + warmup
        self.end = self.start + duration
        self.issuing = True


class Connection(asyncio.Protocol):
    """One h2c connection keeping ``streams`` calls in flight."""

    def __init__(self, workload: Workload, streams: int, clock: _Clock, stats: Stats) -> None:
        self._workload = workload
        self._streams = streams
        self._clock = clock
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._next_id = 1
        # stream id -> [start time, got DATA, unique body]
        self._inflight: dict[int, list[Any]] = {}
        self._send_window = frames.DEFAULT_WINDOW
        self._received = 0
        self._goaway = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.drained = asyncio.Event()  # set once issuing has stopped and no call is in flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Sends the preface and our settings, then the first calls."""
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(
            frames.PREFACE
            + frames.settings_frame(
                {
                    frames.SETTINGS_ENABLE_PUSH: 0,
                    frames.SETTINGS_INITIAL_WINDOW_SIZE: frames.MAX_WINDOW,
                }
            )
            + frames.window_update(0, frames.MAX_WINDOW - frames.DEFAULT_WINDOW)
        )
        self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        """Counts calls still in flight as failed."""
        self._stats.failed += sum(
            1 for call in self._inflight.values() if call[0] >= self._clock.start
        )
        self._inflight.clear()
        self.drained.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def stop_issuing(self) -> None:
        """Called once the run is over: ``drained`` is set when the last call answers."""
        if not self._inflight:
            self.drained.set()

    def close(self) -> None:
        """Closes the connection (after the run)."""
        if self._transport is not None:
            self._transport.close()

    def _fill(self) -> None:
        if not self._clock.issuing or self._goaway or self._transport is None:
            return
        out = bytearray()
        now = time.perf_counter()
        while len(self._inflight) < self._streams:
            header_block, body, unique = self._workload.next_item()
            if len(body) > self._send_window:
                break  # resumed by the server's WINDOW_UPDATE
            self._send_window -= len(body)
            sid = self._next_id
            self._next_id += 2
            self._inflight[sid] = [now, False, unique]
            out += frames.request_frames(sid, header_block, body)
        if out:
            self._transport.write(out)

    def _finish(self, sid: int, ok: bool) -> None:
        call = self._inflight.pop(sid, None)
        if call is None:
            return
        now = time.perf_counter()
        clock = self._clock
        if ok and call[1]:
            self._stats.ok_total += 1
            self._stats.unique_ok_total += call[2]
        if call[0] >= clock.start and now <= clock.end:
            if ok and call[1]:
                self._stats.ok += 1
                self._stats.latencies.append(now - call[0])
            else:
                self._stats.failed += 1
        if now > clock.end:
            clock.issuing = False
        if not clock.issuing and not self._inflight:
            self.drained.set()

    def data_received(self, data: bytes) -> None:
        """Walks the complete frames received so far."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        replies = bytearray()
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if end - pos - 9 < length:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            sid = struct.unpack_from(">I", buf, pos + 5)[0] & frames.MAX_WINDOW
            body = pos + 9
            pos = body + length
            if kind == frames.DATA:
                self._received += length
                call = self._inflight.get(sid)
                if call is not None and length:
                    call[1] = True
                if flags & frames.END_STREAM:
                    self._finish(sid, True)
            elif kind == frames.HEADERS:
                if flags & frames.END_STREAM:
                    self._finish(sid, True)
            elif kind == frames.RST_STREAM:
                self._finish(sid, False)
            elif kind == frames.SETTINGS:
                if not flags & frames.ACK:
                    for i in range(body, body + length, 6):
                        key, value = struct.unpack_from(">HI", buf, i)
                        if key == frames.SETTINGS_MAX_CONCURRENT_STREAMS:
                            self._streams = min(self._streams, value)
                    replies += frames.h2_frame(frames.SETTINGS, frames.ACK, 0)
            elif kind == frames.PING:
                if not flags & frames.ACK:
                    replies += frames.h2_frame(frames.PING, frames.ACK, 0, bytes(buf[body:pos]))
            elif kind == frames.WINDOW_UPDATE:
                if sid == 0:
                    self._send_window += struct.unpack_from(">I", buf, body)[0] & frames.MAX_WINDOW
            elif kind == frames.GOAWAY:
                self._goaway = True
                last = struct.unpack_from(">I", buf, body)[0] & frames.MAX_WINDOW
                for dead in [s for s in self._inflight if s > last]:
                    self._finish(dead, False)
        del buf[:pos]
        if self._received > 2**30:  # keep the connection window far from empty
            replies += frames.window_update(0, self._received)
            self._received = 0
        if replies and self._transport is not None:
            self._transport.write(replies)
        self._fill()


async def run(
    host: str,
    port: int,
    items: list[Item],
    *,
    connections: int,
    streams: int,
    duration: float,
    warmup: float,
    keep_latencies: bool = False,
) -> dict[str, Any]:
    """Drives the server for ``warmup + duration`` seconds; returns the measured window's
    throughput, latency percentiles and this process's CPU time; with ``keep_latencies``,
    also every measured call's latency in seconds (``latencies``)."""
    loop = asyncio.get_running_loop()
    workload = Workload(items)
    stats = Stats()
    cpu0 = time.process_time()
    clock = _Clock(warmup, duration)
    conns: list[Connection] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: Connection(workload, streams, clock, stats), host, port
        )
        conns.append(proto)
    await asyncio.sleep(max(0.0, clock.end - time.perf_counter()))
    clock.issuing = False
    # Let the calls in flight finish (a closed connection would cancel them on the server).
    for c in conns:
        c.stop_issuing()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.drained.wait() for c in conns)), 10)
    for c in conns:
        c.close()
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), 10)
    result = summarize(stats, duration, time.process_time() - cpu0)
    if keep_latencies:
        result["latencies"] = stats.latencies
    return result


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(stats: Stats, duration: float, cpu_seconds: float) -> dict[str, Any]:
    """Requests/s and latency percentiles (ms) of a finished run."""
    lat = sorted(stats.latencies)
    return {
        "ok": stats.ok,
        "failed": stats.failed,
        "ok_total": stats.ok_total,
        "unique_ok_total": stats.unique_ok_total,
        "rps": stats.ok / duration,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "client_cpu_s": cpu_seconds,
    }


def _items(spec: dict[str, Any]) -> list[Item]:
    authority = f"{spec['host']}:{spec['port']}"
    metadata = [(k, v) for k, v in spec.get("metadata", [])]
    out = []
    for raw in spec["items"]:
        headers = frames.grpc_request_headers(raw["path"], authority, metadata)
        placeholder = raw.get("placeholder")
        out.append(
            Item(
                frames.hpack_block(headers),
                base64.b64decode(raw["body"]),
                base64.b64decode(placeholder) if placeholder else None,
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Reads a JSON spec (host, port, metadata, items, connections, streams, duration, warmup,
    and optionally latencies_out: a file for every measured call's latency) and prints the
    results as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("spec", type=Path)
    args = p.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    coro = run(
        spec["host"],
        int(spec["port"]),
        _items(spec),
        connections=int(spec["connections"]),
        streams=int(spec["streams"]),
        duration=float(spec["duration"]),
        warmup=float(spec["warmup"]),
        keep_latencies=bool(spec.get("latencies_out")),
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    if spec.get("latencies_out"):
        # So that the runs of several generators against several servers at once can be
        # merged into one set of percentiles.
        latencies = result.pop("latencies")
        Path(spec["latencies_out"]).write_text("".join(f"{x:.7f}\n" for x in latencies))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def b64(data: bytes) -> str:
    """Base64 text of bytes, for specs."""
    return base64.b64encode(data).decode()


if __name__ == "__main__":
    main()
