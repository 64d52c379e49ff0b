"""The interceptor chain, as one server interceptor: authentication, role checks, per-call
structured logging and error mapping.

Doing the three in one wrapper keeps the per-call overhead to one extra coroutine frame. The
wrapped handlers are built once per method and cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from badge_service.domain.auth import Principal
from badge_service.domain.errors import DomainError, InvalidArgument, ShuttingDown
from badge_service.logs import AccessLog, request_id
from badge_service.metrics import Metrics
from badge_service.rpc.auth import set_principal
from badge_service.rpc.errors import status_code, to_status
from badge_service.service.auth import Authenticator

error_log = logging.getLogger("badge_service.error")

# Infrastructure services answer without credentials (health checks, grpcurl list).
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def write_methods(services: list[ServiceDescriptor]) -> dict[str, bool]:
    """For every method, whether it writes: anything not bound to HTTP GET, unless the method
    declares ``idempotency_level = NO_SIDE_EFFECTS`` (a read that needs a request body)."""
    out: dict[str, bool] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            rule = options.Extensions[annotations_pb2.http]
            pure = options.idempotency_level == options.NO_SIDE_EFFECTS
            out[f"/{service.full_name}/{method.name}"] = (
                rule.WhichOneof("pattern") != "get" and not pure
            )
    return out


class _Rejected:
    """A request refused while it was parsed; raised only after the caller is admitted, so
    credentials and roles are still checked first."""

    __slots__ = ("error",)

    def __init__(self, error: DomainError) -> None:
        self.error = error


def _checked(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wraps a request deserializer so that bad bytes become INVALID_ARGUMENT.

    grpc.aio answers UNKNOWN (with the parser's message) when a deserializer raises, and a
    deserializer has no context to abort with. So it returns a _Rejected instead. It also
    refuses NUL characters in strings: PostgreSQL text and jsonb cannot store them, and
    refusing them here keeps both databases alike. Only requests holding a 0x00 byte at all
    are walked.
    """
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            request = deserializer(raw)
        except Exception:  # DecodeError, or whatever else a parser raises on bad bytes
            return _Rejected(
                InvalidArgument(
                    "request",
                    "is not a valid protobuf message of the method's request type",
                    reason="MALFORMED_REQUEST",
                )
            )
        if b"\x00" in raw and isinstance(request, Message):
            where = nul_field(request)
            if where is not None:
                return _Rejected(InvalidArgument(where, "must not contain NUL characters"))
        return request

    return parse


def nul_field(msg: Message, prefix: str = "") -> str | None:
    """The path of the first string in ``msg`` (keys of Structs and maps included) that holds
    a NUL character, or None."""
    kind = msg.DESCRIPTOR.full_name
    if kind == "google.protobuf.Struct":
        for key, value in msg.fields.items():  # type: ignore[attr-defined]
            where = f"{prefix}.{key}" if prefix else key
            if "\x00" in key:
                return where
            found = nul_field(value, where)
            if found is not None:
                return found
        return None
    if kind == "google.protobuf.Value":
        which = msg.WhichOneof("kind")
        if which == "string_value":
            return prefix if "\x00" in msg.string_value else None  # type: ignore[attr-defined]
        if which in ("struct_value", "list_value"):
            return nul_field(getattr(msg, which), prefix)
        return None
    if kind == "google.protobuf.ListValue":
        for i, value in enumerate(msg.values):  # type: ignore[attr-defined]
            found = nul_field(value, f"{prefix}[{i}]")
            if found is not None:
                return found
        return None
    for field, value in msg.ListFields():
        where = f"{prefix}.{field.name}" if prefix else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            inner = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{where}[{key!r}]"
                found = _nul_value(inner, item, f"{where}[{key!r}]")
                if found is not None:
                    return found
        elif field.is_repeated:
            for i, item in enumerate(value):
                found = _nul_value(field, item, f"{where}[{i}]")
                if found is not None:
                    return found
        else:
            found = _nul_value(field, value, where)
            if found is not None:
                return found
    return None


def _nul_value(field: FieldDescriptor, value: Any, where: str) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return where if "\x00" in value else None
    if field.message_type is not None:
        return nul_field(value, where)
    return None


_OK = grpc.StatusCode.OK


class _Outcome:
    __slots__ = ("code", "counted", "echo", "principal", "request_id")

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK
        self.principal: Principal | None = None
        self.counted = False  # admitted, so counted in in_flight until it is logged
        self.request_id: str | None = None
        # The caller sent the request id, which goes back in the initial metadata too (see
        # _admit_known); cleared once sent.
        self.echo = False


# _admit_known and _log, as a method's wrapper calls them (see _wrap).
_Admit = Callable[[str, bool, grpc.aio.ServicerContext, _Outcome], bool]
_Log = Callable[[str, grpc.aio.ServicerContext, _Outcome, float], float]

REQUEST_ID = "x-request-id"
# The metadata of the call being served, set by intercept_service (see there).
call_metadata: contextvars.ContextVar[Any] = contextvars.ContextVar("call_metadata", default=())
# Generated request ids: this process's random prefix and a counter (unique, and cheaper than
# a UUID per call).
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


def _request_id(sent: str | None) -> str:
    """The caller's request id when it is a sane one (1-128 visible ASCII characters), else a
    new one."""
    if sent is not None and 0 < len(sent) <= 128 and sent.isascii() and sent.isprintable():
        if " " not in sent:
            return sent
    return f"{_ID_PREFIX}-{next(_ids):x}"


async def echo_request_id(context: grpc.aio.ServicerContext, outcome: _Outcome) -> None:
    """Sends the caller's own request id back as initial metadata (once)."""
    outcome.echo = False
    await context.send_initial_metadata(((REQUEST_ID, outcome.request_id),))


async def _abort(context: grpc.aio.ServicerContext, status: Any, outcome: _Outcome) -> None:
    """Ends the call with a rich status; its trailers keep the call's request id (a status's
    own trailers replace those set on the context). Returns once the status is sent: see
    _sent_abort."""
    if outcome.echo:
        # A call already over cannot send it; the trailers still carry the id.
        with contextlib.suppress(Exception):
            await echo_request_id(context, outcome)
    if outcome.request_id is not None:
        status = status._replace(
            trailing_metadata=(*status.trailing_metadata, (REQUEST_ID, outcome.request_id))
        )
    try:
        await context.abort_with_status(status)
    except grpc.aio.AbortError as sent:
        _sent_abort(sent)


def _sent_abort(sent: grpc.aio.AbortError) -> None:
    """Drops the AbortError grpc raised once an abort's status went out, and its traceback.

    grpc keeps that same error in the call's state and raises it again when the handler
    returns (and checks it is the same one), so the handler need not let it through. Let
    through, its traceback held the frames it passed, theirs the call's context, and the
    context the call's state: a reference cycle per failed call (about 50 objects, the core
    call among them) that only the garbage collector could free. A flood of unknown keys
    made 6,000 of them a second, and a collection of the oldest generation every few seconds
    that held the loop up to 125 ms."""
    sent.__traceback__ = None
    sent.__context__ = None


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates, authorises, maps errors and logs every call to our services."""

    def __init__(
        self, auth: Authenticator, writes: dict[str, bool], meter: Metrics | None = None
    ) -> None:
        self._auth = auth
        self._writes = writes
        self._meter = meter
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self.failures = 0  # non-OK calls, for the benchmark's correctness check
        self.statuses: dict[str, int] = {}  # calls finished, by status name
        self._access = AccessLog()
        # Calls picked up (refused ones too) and calls admitted but not finished, so that
        # shutdown can wait for quiet; once refusing, new calls are answered UNAVAILABLE.
        self.started = 0
        self.in_flight = 0
        self.refusing = False

    def summarise_log(self, now: float | None) -> None:
        """Writes the access log's summary of UNAUTHENTICATED calls whose window ended (all of
        it when ``now`` is None)."""
        self._access.summarise(now)

    def refuse_new_calls(self) -> None:
        """From now on, every new call to our services is answered UNAVAILABLE (reason
        SERVER_SHUTTING_DOWN) before anything of it runs, so a client may retry it safely."""
        self.refusing = True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Returns the method's handler wrapped with auth, logging and error mapping."""
        method = details.method
        # The call's metadata as gRPC already built it for the interceptors (asked of the
        # context, it is built again, a tuple of namedtuples each time); this runs in the
        # call's own task, so the handler finds it there.
        call_metadata.set(details.invocation_metadata)
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or method.startswith(_OPEN_PREFIXES) or method not in self._writes:
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        is_write = self._writes[method]
        admit_known: _Admit = self._admit_known
        log: _Log = self._log
        # With metrics on, the wrappers count the call at its start and its code and duration
        # at its end, inline (a wrapper function around admit_known and log cost a frame
        # each on every call); with metrics off they are None and nothing here measures.
        started = received = sent = ok = observe = None
        handled: dict[grpc.StatusCode, Callable[[], None]] = {}
        if self._meter is not None:
            meter = self._meter.method(method, _grpc_type(handler))
            started, ok, observe = meter.started.inc, meter.handled["OK"].inc, meter.seconds.observe
            # Keyed by the code itself: the interceptor's outcome holds a grpc.StatusCode.
            handled = {code: meter.handled[code.name].inc for code in grpc.StatusCode}
            if meter.received is not None:  # a server stream's one request
                received = meter.received.inc
            if meter.sent is not None:
                sent = meter.sent.inc
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                outcome = _Outcome()
                start = time.perf_counter()
                if started is not None:
                    started()
                try:
                    if not admit_known(method, is_write, context, outcome):
                        await self._admit(method, is_write, context, outcome)
                    if outcome.echo:
                        await echo_request_id(context, outcome)
                    if isinstance(request, _Rejected):
                        raise request.error
                    return await inner(request, context)
                except BaseException as exc:
                    await self._fail(exc, context, outcome)
                finally:
                    elapsed = log(method, context, outcome, start)
                    if observe is not None:
                        code = outcome.code
                        if code is _OK:
                            ok()  # type: ignore[misc]
                        else:
                            handled[code]()
                        observe(elapsed)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                unary,
                # Only a unary request is one message; a stream's items reach the servicer.
                request_deserializer=_checked(handler.request_deserializer)
                if handler.unary_unary
                else handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        inner_stream = handler.unary_stream or handler.stream_stream

        # A coroutine that writes with context.write(), not an async generator: grpc.aio
        # iterates a generator handler with a bare ``async for`` and never closes it, so after
        # a client's cancel the generator is finalised later by the garbage collector, outside
        # the call's task and after grpc has released the call (its pointer is NULL by then);
        # a finally block that touches the context there (peer(), abort()) crashes the
        # process. Here every step, the servicer's generator closed included, runs inside the
        # call's task while the call is still alive. (grpc/grpc#42295 describes the same gap.)
        # A stream may also be ended from outside by cancelling this task (service.watch drops a
        # watcher blocked in a write so): the generator, closed here, raises its own error.
        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> None:
            outcome = _Outcome()
            start = time.perf_counter()
            if started is not None:
                started()
                if received is not None:
                    received()
            try:
                if not admit_known(method, is_write, context, outcome):
                    await self._admit(method, is_write, context, outcome)
                if isinstance(request, _Rejected):
                    raise request.error
                async with contextlib.aclosing(inner_stream(request, context)) as items:
                    async for item in items:
                        try:
                            await context.write(item)
                        except asyncio.CancelledError:
                            # The call ended while the write was in flight: the client may
                            # well have it (it read it and cancelled before this task went
                            # on), so it counts as sent, as gRPC took it.
                            if sent is not None:
                                sent()
                            raise
                        if sent is not None:
                            sent()
            except BaseException as exc:
                await self._fail(exc, context, outcome)
            finally:
                elapsed = log(method, context, outcome, start)
                if observe is not None:
                    code = outcome.code
                    if code is _OK:
                        ok()  # type: ignore[misc]
                    else:
                        handled[code]()
                    observe(elapsed)

        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            streaming,
            request_deserializer=_checked(handler.request_deserializer)
            if handler.unary_stream
            else handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admit_known(
        self, method: str, is_write: bool, context: grpc.aio.ServicerContext, outcome: _Outcome
    ) -> bool:
        """Admits a caller whose credentials were accepted within the auth cache's lifetime,
        without a coroutine (the usual case); False when _admit must look them up."""
        self.started += 1
        authorization = api_key = sent_id = None
        for key, value in call_metadata.get() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-api-key":
                api_key = value
            elif key == REQUEST_ID:
                sent_id = value
        rid = outcome.request_id = _request_id(sent_id)
        request_id.set(rid)
        # Always in the trailers, which go with the status at no extra cost; in the initial
        # metadata only when the caller sent it (to correlate before the reply ends), since
        # initial metadata of its own costs a send per call: GetBadge fell from 65% to 53%
        # of the baseline when every call sent it.
        context.set_trailing_metadata(((REQUEST_ID, rid),))
        outcome.echo = rid is sent_id
        if self.refusing:
            raise ShuttingDown()
        self.in_flight += 1  # _log, in the same call's finally, counts it out
        outcome.counted = True
        principal = self._auth.accepted(authorization, api_key)
        if principal is None:
            return False
        if is_write:
            principal.require_write(method.rsplit("/", 1)[-1])
        set_principal(principal)
        outcome.principal = principal
        return True

    async def _admit(
        self, method: str, is_write: bool, context: grpc.aio.ServicerContext, outcome: _Outcome
    ) -> None:
        metadata = {k: v for k, v in (call_metadata.get() or ()) if isinstance(v, str)}
        principal = await self._auth.authenticate(metadata)
        if is_write:
            principal.require_write(method.rsplit("/", 1)[-1])
        set_principal(principal)
        outcome.principal = principal

    async def _fail(
        self, exc: BaseException, context: grpc.aio.ServicerContext, outcome: _Outcome
    ) -> None:
        self.failures += 1
        if isinstance(exc, DomainError):
            # Store faults among them (the store unavailable, a transaction rolled back by a
            # conflict) log themselves, rate-limited: an outage fails every call.
            outcome.code = status_code(exc)
            exc.report()
            await _abort(context, to_status(exc), outcome)
            return
        if isinstance(exc, grpc.aio.AbortError):
            outcome.code = context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, asyncio.CancelledError):
            # The client cancelled (or its deadline passed, or the server's grace period
            # ended): grpc has already ended the call, so there is nothing to send.
            outcome.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, grpc.aio.BaseError):
            # grpc refusing to go on with a call that is over: the client went away while we
            # wrote (ExecuteBatchError), the call already has its status (UsageError), or the
            # server stopped. Not a fault of ours, and the call must not be touched again.
            outcome.code = grpc.StatusCode.CANCELLED
            raise exc
        outcome.code = grpc.StatusCode.INTERNAL
        error_log.error("unhandled error", exc_info=exc)
        try:
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        except grpc.aio.AbortError as sent:
            _sent_abort(sent)

    def _log(
        self, method: str, context: grpc.aio.ServicerContext, outcome: _Outcome, start: float
    ) -> float:
        """Writes the call's access line; returns the seconds the call took."""
        elapsed = time.perf_counter() - start
        if outcome.counted:
            self.in_flight -= 1
        code = outcome.code
        # An enum's .name is a Python-level property; most calls are OK.
        name = "OK" if code is _OK else code.name
        self.statuses[name] = self.statuses.get(name, 0) + 1
        principal = outcome.principal
        self._access.write(
            method,
            principal.org_id if principal else None,
            principal.key_id if principal else None,
            name,
            round(elapsed * 1000, 3),
            context.peer(),
            outcome.request_id,
        )
        return elapsed


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    """go-grpc-prometheus's ``grpc_type`` of a handler."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"
