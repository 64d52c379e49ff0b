"""The service as the benchmark runs it: ``badge_service.server.start`` in this process, plus
a way for the harness to read the interceptor's count of calls by status (h2load never sees
gRPC trailers, so the server's count is the correctness check for a load run).

Prints ``{"port": N, "pid": P}`` once listening; on SIGUSR1 prints ``{"failures": N,
"statuses": {...}}``; on SIGTERM/SIGINT stops and prints the final counts. ``failures`` is the
interceptor's count of non-OK calls; ``statuses`` counts finished calls by status, so the
harness can tell the CANCELLED calls a timed h2load run leaves behind when it stops (at most
one per stream in flight) from real failures. Settings come from BADGE_SERVICE_* like the real
command, so logging (the access log included) and pool sizes are the defaults.

With ``--http-address`` the HTTP face serves too (as ``serve --http-address``): the first line
adds ``"http_port"``, and each counts line adds ``"http"``, the HTTP requests answered by status
code (from the face's access log records; status 0: the client left before an answer began),
so the harness checks HTTP load runs the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections import Counter

from badge_service import logs
from badge_service.config import Settings
from badge_service.server import freeze_startup, start


class HttpStatuses(logging.Handler):
    """Counts the HTTP face's access log records by status code (gRPC calls log on the same
    logger under another message, and are counted by the interceptor instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[int] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """One HTTP request answered (or left by its client: status 0)."""
        if record.msg == "http":
            self.counts[int(getattr(record, "status", 0))] += 1


async def serve(settings: Settings) -> None:
    """Runs the service until SIGTERM/SIGINT, answering SIGUSR1 with the failure count."""
    http = HttpStatuses()
    if settings.http_address:
        logging.getLogger("badge_service.access").addHandler(http)
    running = await start(settings)
    freeze_startup()  # as serve() does
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def report() -> None:
        counts = dict(running.interceptor.statuses)
        line = {"failures": running.interceptor.failures, "statuses": counts}
        if settings.http_address:
            line["http"] = {str(code): n for code, n in http.counts.items()}
        print(json.dumps(line), flush=True)

    # Before the first line: the harness may send SIGUSR1 as soon as it reads it, and the
    # signal's default action would end the process.
    loop.add_signal_handler(signal.SIGUSR1, report)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    first: dict[str, object] = {"port": running.port, "pid": os.getpid()}
    if running.http_port is not None:
        first["http_port"] = running.http_port
    print(json.dumps(first), flush=True)
    await stop.wait()
    await running.stop(settings.grace_period)
    report()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.serve_bench --database-url URL [--address A]
    [--http-address H]``."""
    p = argparse.ArgumentParser(description="the service, for the benchmark")
    p.add_argument("--database-url", required=True)
    p.add_argument("--address", default="127.0.0.1:0")
    p.add_argument("--http-address", help="serve the HTTP face too (127.0.0.1:0: any port)")
    args = p.parse_args(argv)
    settings = Settings.from_env(
        address=args.address,
        database_url=args.database_url,
        migrate_on_start=False,
        http_address=args.http_address,
    )
    logs.configure(settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
