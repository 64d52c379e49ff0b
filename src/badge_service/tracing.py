"""OpenTelemetry traces, opt-in by the standard ``OTEL_*`` environment variables.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or when
an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
the exporter is then ``otlp``), unless ``OTEL_SDK_DISABLED=true``. Everything else is the
SDK's own environment configuration, as ``opentelemetry-instrument`` reads it: exporters are
found by name among the ``opentelemetry_traces_exporter`` entry points (``otlp`` goes to
``otlp_proto_grpc`` or, with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``,
``otlp_proto_http``), and the TracerProvider, the exporters and the batch processor read their
own settings (OTEL_TRACES_SAMPLER and _ARG, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_EXPORTER_OTLP_*, OTEL_BSP_*, OTEL_PROPAGATORS).

Off, nothing of OpenTelemetry is imported or called. On, each call to our services gets a
server span from opentelemetry-instrumentation-grpc's aio server interceptor (ServerSpans
below, which fixes two gaps of it), with the database spans of store/observed.py under it, and
statement spans from opentelemetry-instrumentation-sqlalchemy under those where SQLAlchemy
executes the statement.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc

from badge_service.store.observed import recording

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from sqlalchemy.engine import Engine

SERVICE_NAME = "badge-service"
_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_PROTOCOLS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class TracingError(Exception):
    """Tracing configuration that cannot be used; the message is one line."""


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = environ.get("OTEL_TRACES_EXPORTER")
    if names is not None:
        return any(n.strip() not in ("", "none") for n in names.split(","))
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The entry point names of the exporters asked for (``otlp`` resolved by protocol)."""
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    out = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "otlp":
            if protocol not in _PROTOCOLS:
                raise TracingError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} "
                    f"(use {' or '.join(_PROTOCOLS)})"
                )
            name = _PROTOCOLS[protocol]
        out.append(name)
    return out


def provider_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A TracerProvider exporting as the environment asks, or None when it asks for no
    traces. TracingError names an exporter that is not installed."""
    env = os.environ if environ is None else environ
    if not configured(env):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = _exporters(env)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our default name.
    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": SERVICE_NAME})
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    return provider


def check_tracing_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raises TracingError when the environment asks for an exporter that cannot be had."""
    env = os.environ if environ is None else environ
    if configured(env):
        _exporters(env)


def _exporters(env: Mapping[str, str]) -> list[type[Any]]:
    from opentelemetry.sdk.trace.export import SpanExporter

    out = []
    for name in exporter_names(env):
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise TracingError(
                f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed "
                "(otlp needs opentelemetry-exporter-otlp-proto-grpc, or -http for "
                "http/protobuf)"
            )
        exporter = found[0].load()
        if not (isinstance(exporter, type) and issubclass(exporter, SpanExporter)):
            raise TracingError(f"OTEL_TRACES_EXPORTER: {name!r} is not a trace exporter")
        out.append(exporter)
    return out


# TraceIdRatioBased compares a trace id's low 64 bits with its bound.
_TRACE_ID_LIMIT = (1 << 64) - 1


def _root_rule(sampler: Any) -> tuple[bool | None, int | None]:
    """How the SDK's own samplers decide for a root span (no parent), so that presample can
    decide without calling them: (always this, None), (None, ratio bound), or (None, None) for
    any other sampler, which is asked."""
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        TraceIdRatioBased,
    )

    # ParentBased keeps its root sampler as _root (the SDK has no public accessor); without
    # it, the sampler is asked every time.
    root = getattr(sampler, "_root", None) if isinstance(sampler, ParentBased) else sampler
    if root is ALWAYS_OFF:
        return False, None
    if root is ALWAYS_ON:
        return True, None
    if type(root) is TraceIdRatioBased:
        return None, int(root.bound)
    return None, None


def _presampled_ids(inner: Any) -> Any:
    """``inner`` (the provider's id generator), able to hand the next root span a trace id
    drawn, and sampled on, beforehand (see Tracing.presample)."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class _PresampledIds(IdGenerator):
        """The provider's id generator, able to hand the next root span a trace id drawn (and
        sampled on) beforehand; per thread, so a root span started elsewhere meanwhile cannot take
        it."""

        def __init__(self, inner: IdGenerator) -> None:
            self._inner = inner
            self._next = threading.local()

        def draw(self) -> int:
            """A new trace id, from the wrapped generator."""
            return self._inner.generate_trace_id()

        def use_next(self, trace_id: int) -> None:
            """Makes ``trace_id`` the next root span's (on this thread)."""
            self._next.value = trace_id

        def generate_trace_id(self) -> int:
            """The id set aside by use_next, else a new one."""
            held = getattr(self._next, "value", None)
            if held is not None:
                self._next.value = None
                return int(held)
            return self._inner.generate_trace_id()

        def generate_span_id(self) -> int:
            """A new span id."""
            return self._inner.generate_span_id()

        def is_trace_id_random(self) -> bool:
            """Whether the wrapped generator's trace ids are random (W3C trace context level 2)."""
            check = getattr(self._inner, "is_trace_id_random", None)
            return bool(check()) if callable(check) else False

    return _PresampledIds(inner)


class Tracing:
    """What the server needs from a TracerProvider: the server-span interceptor, a tracer for
    database spans, and statement spans on its engines."""

    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        from badge_service import __version__

        self.provider = provider
        self._owned = owned
        from opentelemetry.sdk.trace.sampling import Decision

        self._drop = Decision.DROP
        self._root = _root_rule(provider.sampler)
        # Before get_tracer: a tracer takes the provider's id generator when it is made.
        self.ids = _presampled_ids(provider.id_generator)
        provider.id_generator = self.ids
        self.tracer: Tracer = provider.get_tracer("badge_service", __version__)
        self._engine_tracers: list[Any] = []

    def presample(self, name: str, kind: Any, attributes: Mapping[str, Any]) -> bool:
        """Whether a root span (no parent context) would be sampled; when it would, the next
        root span gets the trace id this decision was made on. An unsampled call then costs
        the sampler's decision only, not the SDK's span machinery (some 40 Python calls a
        call: about 7% of a GetBadge)."""
        trace_id = self.ids.draw()
        fixed, bound = self._root
        if fixed is not None:
            if not fixed:
                return False
        elif bound is not None:
            if trace_id & _TRACE_ID_LIMIT >= bound:
                return False
        else:
            result = self.provider.sampler.should_sample(None, trace_id, name, kind, attributes)
            if result.decision is self._drop:
                return False
        self.ids.use_next(trace_id)
        return True

    def server_interceptor(self, methods: Collection[str]) -> grpc.aio.ServerInterceptor:
        """The server-span interceptor for ``methods`` (full paths; others, health and
        reflection, are not traced). It goes first in the server's list, so that its span
        covers the whole call and is the parent of everything the call does."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        stock = aio_server_interceptor(tracer_provider=self.provider)
        return _server_spans(stock._tracer, frozenset(methods), self.presample)

    def instrument_engines(self, engines: list[Engine]) -> None:
        """SQLAlchemy statement spans on ``engines`` only (no process-wide patching)."""
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.instrumentation.sqlalchemy.version import __version__ as version
        from opentelemetry.metrics import NoOpMeterProvider

        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", version)
        # EngineTracer also counts pool connections; metrics are Prometheus's job here.
        usage = NoOpMeterProvider().get_meter("badge_service").create_up_down_counter("unused")
        self._engine_tracers += [EngineTracer(tracer, engine, usage) for engine in engines]

    def shutdown(self) -> None:
        """Exports what is still batched (a provider handed in is its owner's to shut)."""
        if self._owned:
            self.provider.shutdown()


def _server_spans(
    tracer: Tracer,
    methods: frozenset[str],
    presample: Callable[[str, Any, Mapping[str, Any]], bool],
) -> grpc.aio.ServerInterceptor:
    from opentelemetry.context import attach, detach
    from opentelemetry.instrumentation.grpc._aio_server import (
        OpenTelemetryAioServerInterceptor,
        _OpenTelemetryAioServicerContext,
    )
    from opentelemetry.instrumentation.grpc._server import _wrap_rpc_behavior
    from opentelemetry.instrumentation.grpc._utilities import _server_status
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from opentelemetry.propagate import extract, get_global_textmap
    from opentelemetry.semconv._incubating.attributes.net_attributes import (
        NET_PEER_IP,
        NET_PEER_NAME,
        NET_PEER_PORT,
    )
    from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
        RPC_GRPC_STATUS_CODE,
        RPC_METHOD,
        RPC_SERVICE,
        RPC_SYSTEM,
    )
    from opentelemetry.trace import Span, SpanKind, set_span_in_context

    from badge_service.rpc.interceptor import call_metadata

    # The metadata keys the configured propagators read (traceparent, tracestate, baggage).
    propagated = frozenset(get_global_textmap().fields)
    carrier: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
        "trace_carrier", default=None
    )

    class _Context(_OpenTelemetryAioServicerContext):
        """The stock span-aware context, which misses ``abort_with_status`` (how the
        interceptor answers every domain error): the span kept code 0 for a NOT_FOUND."""

        async def abort_with_status(self, status: grpc.Status) -> None:
            code = status.code
            self._self_code = code
            self._self_active_span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
            self._self_active_span.set_status(_server_status(code, status.details))
            await self.__wrapped__.abort_with_status(status)

    Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

    class ServerSpans(OpenTelemetryAioServerInterceptor):
        """opentelemetry-instrumentation-grpc's aio server interceptor (its tracer, span name
        and attributes, span-aware context and status mapping), for our services' handlers
        (ServiceInterceptor's), with:

        - streams as coroutines: the stock stream wrapper is an async generator that iterates
          the handler (open-telemetry/opentelemetry-python-contrib#3066), which our streaming
          handlers are not (they write with context.write, see rpc/interceptor.py), and which
          would bring back a generator that grpc.aio never closes;
        - the status of ``abort_with_status`` on the span, and no exception event for an abort
          (it is how a status is sent, not a failure);
        - what an unsampled call costs: one wrapped handler per method (the stock one builds
          one per call), the caller's context extracted only when it sent one, the span
          started without a context manager, and the peer, the user agent and the span-aware
          context only for a span that records (the stock one builds them all first). About
          12 us per unsampled call came down to about 4 (measured in a loop).
        """

        def __init__(self) -> None:
            super().__init__(tracer)  # type: ignore[no-untyped-call]
            self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

        async def intercept_service(
            self,
            continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails,
        ) -> grpc.RpcMethodHandler:
            method = details.method
            # A caller's trace context, read from the metadata gRPC built for the
            # interceptors (the handler runs in this same task and finds it).
            metadata = details.invocation_metadata or ()
            # ServiceInterceptor reads it there too; its intercept_service is skipped below.
            call_metadata.set(metadata)
            sent = None
            for m in metadata:  # a plain loop: no generator for the usual call, which sends none
                if m.key in propagated:
                    sent = {m.key: m.value for m in metadata if m.key in propagated}
                    break
            carrier.set(sent)
            wrapped = self._wrapped.get(method)
            if wrapped is not None:
                # ServiceInterceptor's handler is built once per method too: no need to ask
                # for it again (as it asks no further once it has one). A call's context is
                # fresh, so instrumentation is never suppressed in it: that check is made once,
                # when the method's wrapper is built.
                return wrapped
            handler = await continuation(details)
            if handler is None or method not in methods or not is_instrumentation_enabled():
                return handler
            if wrapped is None:

                def wrap(behavior: Behavior, _req: bool, _resp: bool) -> Behavior:
                    return self._traced(behavior, details)

                wrapped = self._wrapped[method] = _wrap_rpc_behavior(handler, wrap)
            return wrapped

        def _traced(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
            name = details.method
            service, method = name.lstrip("/").split("/", 1)
            # What a sampler is shown; the peer and user agent are added once it records.
            known = {
                RPC_SYSTEM: "grpc",
                RPC_GRPC_STATUS_CODE: _OK,
                RPC_METHOD: method,
                RPC_SERVICE: service,
            }

            async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
                parent = None
                sent = carrier.get()
                if sent:  # a caller's trace context (traceparent, baggage)
                    parent = extract(sent)
                elif not presample(name, SpanKind.SERVER, known):
                    # A root span the sampler drops: nothing of it is made at all.
                    return await behavior(request, context)
                span = tracer.start_span(name, parent, SpanKind.SERVER, known)
                if not span.is_recording():
                    # Not made current: nothing under an unsampled span would record either
                    # (the database spans look for a recording one), and the call makes no
                    # outgoing request that would propagate it.
                    return await behavior(request, context)
                token = attach(set_span_in_context(span, parent))
                flag = recording.set(True)
                try:
                    _describe(span, context)
                    try:
                        return await behavior(request, _Context(context, span))  # type: ignore[no-untyped-call]
                    except grpc.aio.AbortError:
                        raise  # how a status is sent (already on the span), not a failure
                    except asyncio.CancelledError:
                        # The client went away (or its deadline passed): grpc ended the call.
                        span.set_attribute(RPC_GRPC_STATUS_CODE, _CANCELLED)
                        raise
                    except Exception as exc:
                        span.record_exception(exc)
                        raise
                finally:
                    span.end()
                    recording.reset(flag)
                    detach(token)

            return traced

    def _describe(span: Span, context: grpc.aio.ServicerContext) -> None:
        """The stock server span's attributes of the caller: user agent and peer address."""
        for m in context.invocation_metadata() or ():
            if m.key == "user-agent":
                span.set_attribute("rpc.user_agent", m.value)
        peer = context.peer()
        if peer.startswith(("ipv4:", "ipv6:")):
            ip, _, port = peer.split(",")[0].split(":", 1)[1].rpartition(":")
            ip = unquote(ip)
            span.set_attributes({NET_PEER_IP: ip, NET_PEER_PORT: port})
            if ip in ("[::1]", "127.0.0.1"):
                span.set_attribute(NET_PEER_NAME, "localhost")

    return ServerSpans()
