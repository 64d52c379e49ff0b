"""The HTTP face's access log: one line per request on ``badge_service.access`` (msg "http":
method, path, status, duration, peer, request id), as the gRPC interceptor writes one per
call, and the request id back in the ``x-request-id`` response header.

An ASGI middleware around the whole app, so that every answer is logged, routing's 404s and
405s included. No key is ever sent to these routes, and the query string is left out.
"""

from __future__ import annotations

import itertools
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from badge_service import logs

REQUEST_ID = b"x-request-id"
# Generated request ids: this process's random prefix and a counter, as the gRPC side does.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def request_id(sent: bytes | None) -> str:
    """The client's request id when it is a sane one (1-128 visible ASCII characters, no
    space), else a new one."""
    if sent is not None and 0 < len(sent) <= 128:
        text = sent.decode("latin-1")
        if text.isascii() and text.isprintable() and " " not in text:
            return text
    return f"{_ID_PREFIX}-h{next(_ids):x}"


class AccessLog:
    """Logs each HTTP request once its answer has started (its status is known), and counts
    the requests answered by status code (0: the client left before an answer began)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._log = logs.AccessLog()
        self.statuses: dict[int, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request through the app, then logs it."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        sent = dict(scope["headers"]).get(REQUEST_ID)
        rid = request_id(sent)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID, rid.encode())]
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            client = scope.get("client")
            self._log.write_http(
                scope["method"],
                scope["path"][:256],
                status,
                round((time.perf_counter() - start) * 1000, 3),
                f"{client[0]}:{client[1]}" if client else "",
                rid,
            )
