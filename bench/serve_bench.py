"""The service as the benchmark runs it: ``badge_service.server.start`` in this process, plus
a way for the harness to read the interceptor's count of calls by status (h2load never sees
gRPC trailers, so the server's count is the correctness check for a load run).

Prints ``{"port": N, "pid": P}`` once listening; on SIGUSR1 prints ``{"failures": N,
"statuses": {...}}``; on SIGTERM/SIGINT stops and prints the final counts. ``failures`` is the
interceptor's count of non-OK calls; ``statuses`` counts finished calls by status, so the
harness can tell the CANCELLED calls a timed h2load run leaves behind when it stops (at most
one per stream in flight) from real failures. Settings come from BADGE_SERVICE_* like the real
command, so logging (the access log included) and pool sizes are the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

from badge_service import logs
from badge_service.config import Settings
from badge_service.server import freeze_startup, start


async def serve(settings: Settings) -> None:
    """Runs the service until SIGTERM/SIGINT, answering SIGUSR1 with the failure count."""
    running = await start(settings)
    freeze_startup()  # as serve() does
    print(json.dumps({"port": running.port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def report() -> None:
        counts = dict(running.interceptor.statuses)
        print(
            json.dumps({"failures": running.interceptor.failures, "statuses": counts}), flush=True
        )

    loop.add_signal_handler(signal.SIGUSR1, report)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(settings.grace_period)
    report()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.serve_bench --database-url URL [--address A]``."""
    p = argparse.ArgumentParser(description="the service, for the benchmark")
    p.add_argument("--database-url", required=True)
    p.add_argument("--address", default="127.0.0.1:0")
    args = p.parse_args(argv)
    settings = Settings.from_env(
        address=args.address, database_url=args.database_url, migrate_on_start=False
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
