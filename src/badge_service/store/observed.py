"""The Database, measured (Prometheus) and traced (OpenTelemetry).

The server uses this subclass only when metrics or traces are on, so that a plain
``Database`` carries no check of either on its paths. Each transaction boundary (``fetch``,
``run_read``, ``run_write``, ``read()``, ``write()``) is timed into
``badge_service_db_seconds{operation}`` and, when the call that makes it is traced (its server
span is recording), gets a span of its own, started on the event loop around the awaited work,
so it is a child of the call's server span whichever thread then runs the transaction.

Work outside a traced call (health probes, the key refresh, an unsampled call) gets no span,
and OpenTelemetry instrumentation is suppressed for it, so the SQLAlchemy statement spans
(tracing.instrument_engines) never start a trace of their own. Those statement spans come only
from statements SQLAlchemy executes; the hot paths run prebuilt statements on the driver
(execute_prepared, fetch on SQLite) and have none. SQLite transactions run in threads, which
asyncio does not hand the caller's context: a traced call's functions take it with them.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from badge_service.domain.errors import DomainError
from badge_service.metrics import DB_OPERATIONS, Metrics
from badge_service.store.db import Database
from badge_service.store.faults import STORE_FAULTS

# Whether the call being served has a recording server span (set by tracing.ServerSpans): a
# flag of our own, which the hottest database read checks for the price of one lookup
# (OpenTelemetry's own current-span lookup costs several calls). Here, not in tracing, so
# the store imports nothing of the transport that tracing wraps.
recording: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "badge_service_recording", default=False
)

T = TypeVar("T")
P = ParamSpec("P")


class _Call:
    """One database call: its timer, and its span (or the suppression of instrumentation)
    while it runs. Lean, as it wraps every database call: a span's attributes are made only
    for a span that records."""

    __slots__ = ("_db", "_fn", "_operation", "_span", "_start", "_token")

    def __init__(self, db: ObservedDatabase, operation: str, fn: Any = None) -> None:
        self._db = db
        self._operation = operation
        self._fn = fn
        self._span: trace.Span | None = None
        self._token: object = None

    def __enter__(self) -> _Call:
        db = self._db
        if db._tracer is not None:
            if trace.get_current_span().is_recording():
                attributes = {"db.system.name": db._system}
                if self._fn is not None:
                    fn = self._fn
                    attributes["code.function.name"] = f"{fn.__module__}.{fn.__qualname__}"
                span = self._span = db._tracer.start_span(
                    f"Database.{self._operation}", kind=SpanKind.CLIENT, attributes=attributes
                )
                self._token = otel_context.attach(trace.set_span_in_context(span))
            elif self._operation in db._suppressed:
                self._token = otel_context.attach(
                    otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True)
                )
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timer = self._db._timers.get(self._operation)
        if timer is not None:
            timer(time.perf_counter() - self._start)
        span = self._span
        if span is not None:
            # A domain error (a refused award, a missing row) is the call's answer, not a
            # database failure: the transaction did what it was asked and rolled back.
            # A store fault is raised as a domain error (store/errors.py); the span shows the
            # driver's error it stands for.
            failure = exc.__cause__ if isinstance(exc, STORE_FAULTS) else exc
            if isinstance(failure, Exception) and not isinstance(failure, DomainError):
                span.record_exception(failure)
                span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))
            elif isinstance(exc, asyncio.CancelledError):
                span.set_attribute("badge_service.cancelled", True)
            span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]


class ObservedDatabase(Database):
    """A Database whose transaction boundaries are timed and traced."""

    def __init__(self, url: str, *, meter: Metrics | None, tracer: Tracer | None, **kw: Any):
        super().__init__(url, **kw)
        self._timers: Mapping[str, Callable[[float], None]] = meter.db if meter else {}
        if meter is not None:
            self._group_commits = meter.group_commit
        self._tracer = tracer
        self._system = "sqlite" if self.is_sqlite else "postgresql"
        # Where SQLAlchemy may execute a statement (and so start a statement span) when the
        # call is not traced. fetch on SQLite runs on the driver alone: nothing to suppress.
        self._suppressed = frozenset(
            op for op in DB_OPERATIONS if not (op == "fetch" and self.is_sqlite)
        )
        # Nothing to time, and no statement to suppress spans of: fetch needs its wrapper
        # only inside a traced call.
        self._bare_fetch = meter is None and "fetch" not in self._suppressed
        self._fetch_timer = (
            self._timers.get("fetch")
            if "fetch" not in self._suppressed and tracer is None
            else None
        )

    def _call(self, operation: str, fn: Callable[..., Any] | None = None) -> _Call:
        return _Call(self, operation, fn)

    def _carried(self, fn: Callable[Concatenate[Connection, P], T]) -> Any:
        """``fn``, run in the caller's OpenTelemetry context when it runs in a SQLite thread
        (run_in_executor does not copy contextvars), so that statement spans find their
        parent, and instrumentation stays suppressed for work outside a traced call."""
        if self._tracer is None or not self.is_sqlite:
            return fn
        carried = otel_context.get_current()

        def in_context(conn: Connection, *args: Any, **kwargs: Any) -> T:
            token = otel_context.attach(carried)
            try:
                return fn(conn, *args, **kwargs)
            finally:
                otel_context.detach(token)

        return in_context

    async def fetch(
        self, *queries: tuple[Executable, Mapping[str, Any]]
    ) -> list[Sequence[Sequence[Any]]]:
        """Database.fetch, timed and traced."""
        if not recording.get():
            if self._bare_fetch:
                # The hottest read, untimed and in an untraced call: nothing to do around it.
                return await super().fetch(*queries)
            timer = self._fetch_timer
            if timer is not None:
                # Timed only (metrics on, no span to start or suppress): inline, since a
                # _Call costs an object and two method calls on every read.
                start = time.perf_counter()
                try:
                    return await super().fetch(*queries)
                finally:
                    timer(time.perf_counter() - start)
        with self._call("fetch"):
            return await super().fetch(*queries)

    async def run_read(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Database.run_read, timed and traced."""
        with self._call("run_read", fn):
            result: T = await super().run_read(self._carried(fn), *args, **kwargs)
            return result

    async def run_write(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Database.run_write, timed and traced (a group commit's wait included)."""
        with self._call("run_write", fn):
            result: T = await super().run_write(self._carried(fn), *args, **kwargs)
            return result

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[AsyncConnection]:
        """Database.read, timed and traced (the block's own work included)."""
        with self._call("read"):
            async with super().read(snapshot=snapshot) as conn:
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """Database.write, timed and traced (the block's own work included)."""
        with self._call("write"):
            async with super().write() as conn:
                yield conn
