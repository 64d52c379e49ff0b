"""The baseline server: grpc.aio with the service's server options, answering the benchmarked
RPCs with prebuilt replies and doing no other work. Its throughput is the ceiling for Python
gRPC on this machine, the yardstick every service row is compared with.

Handlers take and return raw bytes (no (de)serializers), so a call costs only what gRPC itself
costs. Replies are the serialized replies of the real service for the same requests, recorded by
the harness, so both servers send the same bytes; a request the harness did not record (a
CreateBadge with a fresh name, a CreateAward to a fresh recipient) gets the method's default
reply. Any method of any service works, as long as the replies file names it.

Run as ``python -m bench.baseline REPLIES.json``; prints ``{"port": N}`` once listening,
``{"calls": N}`` on SIGUSR1 (so the harness can work out CPU per call), stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from badge_service.config import Settings
from badge_service.server import server_options

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class Calls:
    """How many calls the baseline answered."""

    count = 0


def _handler(default: bytes, by_request: dict[bytes, bytes]) -> Handler:
    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        Calls.count += 1
        return by_request.get(request, default)

    return handle


def handlers(replies: dict[str, Any]) -> list[grpc.GenericRpcHandler]:
    """Generic handlers for ``{"/pkg.Service/Method": {"default": b64, "by_request":
    {b64 request: b64 reply}}}``."""
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, spec in replies.items():
        service, method = path.strip("/").split("/")
        by_request = {
            base64.b64decode(k): base64.b64decode(v) for k, v in spec["by_request"].items()
        }
        services.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
            _handler(base64.b64decode(spec["default"]), by_request)
        )
    return [grpc.method_handlers_generic_handler(s, m) for s, m in services.items()]


async def serve(replies: dict[str, Any], address: str) -> None:
    """Serves until SIGTERM/SIGINT."""
    server = grpc.aio.server(options=server_options(Settings(address=address, workers=1)))
    server.add_generic_rpc_handlers(handlers(replies))
    port = server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps({"calls": Calls.count}), flush=True)
    )
    # Only now: the harness may send SIGUSR1 as soon as it reads this line.
    print(json.dumps({"port": port}), flush=True)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.baseline REPLIES.json [--address HOST:PORT]``."""
    p = argparse.ArgumentParser(description="the benchmark's baseline gRPC server")
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
