"""The HTTP baseline: a bare Starlette app on uvicorn, served exactly as the service serves its
HTTP face (``badge_service.http.server.HttpServer``: the same uvicorn settings, in the process's
own event loop, uvloop where installed, and whatever HTTP parser uvicorn picks, httptools when
installed, else h11), answering fixed bodies and doing nothing else. Its throughput is the
ceiling for that HTTP stack on this machine, the yardstick of the HTTP face's rows, as
``bench.baseline`` is for gRPC.

One route per benchmarked path, each answering the body the harness recorded from the service
for that path (so both servers send the same bytes), with its status and media type, as a
handler of any app would: a new ``Response`` per request. No middleware, no other header.

Run as ``python -m bench.http_baseline REPLIES.json``, where REPLIES.json is ``{"/path":
{"status": 200, "media_type": "...", "body": base64}}``; prints ``{"port": N, "pid": P,
"http": "H11Protocol"}`` once listening (the protocol class uvicorn picked), ``{"calls": N}`` on
SIGUSR1 (so the harness can work out CPU per request), stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from badge_service.http.server import HttpServer, bind

Handler = Callable[[Request], Awaitable[Response]]


class Calls:
    """How many requests the baseline answered."""

    count = 0


def protocol() -> str:
    """The HTTP/1.1 implementation uvicorn's default ("auto") picks here, as for the service:
    ``HttpToolsProtocol`` when httptools is installed, else ``H11Protocol``."""
    return AutoHTTPProtocol.__name__


def _handler(body: bytes, status: int, media_type: str) -> Handler:
    async def handle(request: Request) -> Response:
        Calls.count += 1
        return Response(body, status, media_type=media_type)

    return handle


def app(replies: dict[str, Any]) -> Starlette:
    """A route per path of ``replies``, each answering its fixed body."""
    return Starlette(
        routes=[
            Route(
                path,
                _handler(base64.b64decode(spec["body"]), int(spec["status"]), spec["media_type"]),
                methods=["GET"],
            )
            for path, spec in replies.items()
        ]
    )


async def serve(replies: dict[str, Any], address: str) -> None:
    """Serves until SIGTERM/SIGINT."""
    server = HttpServer(app(replies), bind(address, reuse_port=False))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps({"calls": Calls.count}), flush=True)
    )
    # Only now: the harness may send SIGUSR1 as soon as it reads this line.
    print(json.dumps({"port": server.port, "pid": os.getpid(), "http": protocol()}), flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.http_baseline REPLIES.json [--address HOST:PORT]``."""
    p = argparse.ArgumentParser(description="the benchmark's bare HTTP baseline")
    p.add_argument("replies", type=Path)
    p.add_argument("--address", default="127.0.0.1:0")
    args = p.parse_args(argv)
    replies = json.loads(args.replies.read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(serve(replies, args.address))
    else:
        uvloop.run(serve(replies, args.address))


if __name__ == "__main__":
    main()
