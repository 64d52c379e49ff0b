"""Serving the HTTP face: uvicorn's server on a socket of ours, in the gRPC server's process
and event loop (no thread, no second loop), started and stopped with it.

uvicorn's ``Server.serve`` is not used: it installs its own SIGTERM/SIGINT handlers, which
would take the signals from the service's shutdown sequence. Its parts are: ``startup`` on
our socket, ``main_loop`` (which refreshes the Date header every second and ends once
``should_exit`` is set) and ``shutdown`` (stop accepting, close idle connections, let the
requests in flight finish within the grace period, then cancel them).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("badge_service.http")


def bind(address: str, *, reuse_port: bool) -> socket.socket:
    """A socket bound (not yet listening) to ``address`` (HOST:PORT, checked already);
    SO_REUSEPORT when worker processes share the port. SystemExit with one line when the
    address cannot be had."""
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SystemExit(f"error: --http-address: cannot listen on {address}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        why = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise SystemExit(f"error: --http-address: cannot listen on {address}: {why}") from None
    return sock


class HttpServer:
    """uvicorn serving ``app`` on ``sock`` on the running event loop."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        self.app = app
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="off",  # the app has no start-up or shut-down work of its own
            log_config=None,  # the service's logging stays as logs.configure made it
            access_log=False,
            proxy_headers=False,  # no proxy is trusted to say who the client is
            server_header=False,
            ws="none",
        )
        config.load()
        self._server = uvicorn.Server(config)
        self._ticks: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listens and serves; returns once the socket accepts connections."""
        # uvicorn's own lines ("Shutting down", "Waiting for connections") say nothing the
        # service does not; its warnings and errors still come through.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        server = self._server
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[self.sock])
        self._ticks = asyncio.create_task(server.main_loop())

    def begin_stop(self, grace: float) -> None:
        """Stops accepting now; requests in flight get ``grace`` seconds (see ``stop``)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace))

    async def stop(self, grace: float) -> None:
        """Stops accepting, lets requests in flight finish within ``grace`` seconds, then
        cancels what is left; returns once every connection is closed."""
        self.begin_stop(grace)
        assert self._stopping is not None
        await self._stopping

    async def _stop(self, grace: float) -> None:
        server = self._server
        server.config.timeout_graceful_shutdown = max(int(grace + 0.999), 1)
        server.should_exit = True
        if self._ticks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        await server.shutdown(sockets=[self.sock])
