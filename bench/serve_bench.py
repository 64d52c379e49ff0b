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
code (the face's access middleware counts them; status 0: the client left before an answer began),
so the harness checks HTTP load runs the same way.
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
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def report() -> None:
        counts = dict(running.interceptor.statuses)
        line = {"failures": running.interceptor.failures, "statuses": counts}
        if running.http is not None:
            # The face's access middleware counts requests by status code (0: the client
            # left before an answer began), as the interceptor counts calls.
            from badge_service.http.access import AccessLog  # only with the face on

            access = running.http.app
            assert isinstance(access, AccessLog)
            line["http"] = {str(code): n for code, n in access.statuses.items()}
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
