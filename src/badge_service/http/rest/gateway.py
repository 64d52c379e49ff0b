"""An in-process gRPC gateway: REST handlers call the RPCs over a private channel to this
process's own gRPC server, as grpc-gateway or Envoy's transcoder would over the network.

The server listens for it on a Unix socket in a directory only this user can open
(``PrivateSocket``), without TLS: the channel never leaves the host, and under mTLS the
gateway needs no client certificate. Callers' credentials are forwarded as the metadata the
gRPC path reads (``authorization``, ``x-api-key``), so a key, its role and its organisation are
checked by the same interceptor as a gRPC caller's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import Request

M = TypeVar("M", bound=Message)
Metadata = Sequence[tuple[str, str]]

# Headers a gRPC caller would send as metadata, forwarded as they are.
FORWARDED = ("authorization", "x-api-key", "x-request-id", "traceparent", "tracestate")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
# What an unsendable credential header is replaced with: values the server refuses.
_CREDENTIALS = {"authorization": "Malformed", "x-api-key": "malformed"}


class PrivateSocket:
    """A ``unix:`` address in a fresh 0700 directory (``mkdtemp``), removed by ``remove``."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="badge-service-")
        self.address = f"unix:{os.path.join(self.directory, 'grpc.sock')}"

    def remove(self) -> None:
        """Removes the directory and the socket in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


class RpcFailure(Exception):
    """A call that ended with a non-OK status: the code, the message and, when the server sent
    one, the ``google.rpc.Status`` with its details (``ErrorInfo``, ``BadRequest``)."""

    def __init__(self, code: grpc.StatusCode, message: str, status: status_pb2.Status) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> RpcFailure:
        """The failure of a finished call, its details read from the trailers."""
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
        for key, value in error.trailing_metadata() or ():
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                with contextlib.suppress(Exception):
                    status = status_pb2.Status.FromString(value)
        return cls(error.code(), error.details() or "", status)

    @property
    def info(self) -> error_details_pb2.ErrorInfo | None:
        """The ``ErrorInfo`` detail, when there is one."""
        for detail in self.status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
        return None

    @property
    def reason(self) -> str:
        """``ErrorInfo.reason`` (e.g. ``CUSTOM_FIELD_NAME_TAKEN``), or empty."""
        info = self.info
        return "" if info is None else info.reason

    @property
    def metadata(self) -> dict[str, str]:
        """``ErrorInfo.metadata`` (e.g. ``{"code": "740", "field": "name"}``)."""
        info = self.info
        return {} if info is None else dict(info.metadata)

    @property
    def violations(self) -> list[tuple[str, str]]:
        """``BadRequest`` field violations as (field, description)."""
        found: list[tuple[str, str]] = []
        for detail in self.status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found.extend((v.field, v.description) for v in bad.field_violations)
        return found


def metadata_of(request: Request, api_key: str | None = None) -> list[tuple[str, str]]:
    """The metadata a gRPC caller would have sent: the forwarded headers, and ``api_key`` (a
    vendor's query parameter) as ``x-api-key`` when no header carries a key."""
    headers = request.headers
    found = []
    for name in FORWARDED:
        if name not in headers:
            continue
        value = headers[name]
        if not _PRINTABLE.fullmatch(value):
            # gRPC metadata values are printable ASCII; the channel refuses the whole call
            # otherwise. Such a credential can never be valid: it goes on as one the server
            # refuses as it refuses any malformed one (UNAUTHENTICATED); other headers are
            # left out, as a gRPC client could not have sent them either.
            if name in _CREDENTIALS:
                found.append((name, _CREDENTIALS[name]))
            continue
        found.append((name, value))
    if api_key and "authorization" not in headers and "x-api-key" not in headers:
        found.append(("x-api-key", api_key))
    return found


class Gateway:
    """Calls this process's RPCs over the private channel at ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: grpc.aio.Channel | None = None
        self._unary: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, opened on first use (on the serving event loop)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target,
                # Replies are bounded by the server's own limits, not the client default 4 MiB.
                options=[("grpc.max_receive_message_length", -1)],
            )
        return self._channel

    async def call(
        self,
        method: str,
        request: Message,
        reply: type[M],
        metadata: Metadata = (),
        seconds: float | None = None,
    ) -> M:
        """The reply of the unary RPC ``method`` (``/package.Service/Method``), within
        ``seconds`` when given (the call's deadline); RpcFailure when it ends with a non-OK
        status."""
        stub = self._unary.get(method)
        if stub is None:
            stub = self.channel.unary_unary(method)  # bytes in, bytes out
            self._unary[method] = stub
        try:
            data = await stub(
                request.SerializeToString(), metadata=tuple(metadata), timeout=seconds
            )
        except grpc.aio.AioRpcError as error:
            raise RpcFailure.of(error) from None
        return reply.FromString(data)

    async def stream(
        self,
        method: str,
        request: Message,
        reply: type[M],
        metadata: Metadata = (),
        seconds: float | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[M]:
        """The replies of the server-streaming RPC ``method``; RpcFailure when it ends with a
        non-OK status (before or after some replies). ``on_open`` is called once the server
        has accepted the call (its initial metadata arrived and the call goes on), so a
        caller can tell a call that was refused from one that has no reply yet."""
        stub = self._streams.get(method)
        if stub is None:
            stub = self.channel.unary_stream(method)
            self._streams[method] = stub
        call = stub(request.SerializeToString(), metadata=tuple(metadata), timeout=seconds)
        try:
            if on_open is not None:
                # A refused call ends without initial metadata of its own (trailers only).
                initial = await call.initial_metadata()
                if initial and not call.done():
                    on_open()
            async for data in call:
                yield reply.FromString(data)
        except grpc.aio.AioRpcError as error:
            raise RpcFailure.of(error) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Closes the channel (calls in flight are cancelled)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
