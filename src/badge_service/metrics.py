"""Prometheus metrics (``serve --metrics-address HOST:PORT``), off unless asked for.

The gRPC server metrics carry the names and labels of go-grpc-prometheus (and
py-grpc-prometheus), so existing dashboards work unchanged: ``grpc_server_started_total``,
``grpc_server_handled_total`` (with ``grpc_code`` spelt as Go spells a code: ``OK``,
``NotFound``, ``Canceled``), the ``grpc_server_handling_seconds`` histogram and, for streams,
``grpc_server_msg_received_total`` / ``grpc_server_msg_sent_total``. The service's own are
named ``badge_service_*``.

Cost: with metrics off nothing here is called on a call's path (the interceptor builds its
wrappers without them, the store is a plain ``Database``). With metrics on, every label child
a call needs is bound once per method, so a call costs a few increments and observations,
never a ``.labels()`` lookup. In one process the per-call series (started, handled, handling
seconds, database seconds) are tallied in plain Python numbers (``Tally``, ``TallyHistogram``)
and added to their prometheus-client children when the endpoint is scraped: a
prometheus-client increment takes a lock and three calls, which cost about 5% of a GetBadge;
a tally costs one small call (measured with callgrind).

``--workers N``: prometheus-client's multiprocess mode. The parent points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before it spawns the workers, every worker's
values go to memory-mapped files there, and the parent alone serves the endpoint, which sums
them (the watch-stream gauge over live workers only). The parent removes the directory when
it exits.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor
    from prometheus_client import CollectorRegistry

# grpc.StatusCode names as Go's codes.Code.String() spells them (go-grpc-prometheus's labels).
GRPC_CODE_NAMES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}
# Go's default buckets (.005 to 10 s) with finer ones below 5 ms, where most calls end.
HANDLING_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# A primary-key read on SQLite takes a few microseconds.
DB_BUCKETS = (0.0001, 0.00025, *HANDLING_BUCKETS)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Database's transaction boundaries, as the db metric's ``operation`` label names them.
DB_OPERATIONS = ("fetch", "run_read", "run_write", "read", "write")
AWARD_KINDS = ("badge", "template", "class")
CAP_REASONS = ("FREQUENCY_CAP_REACHED", "FREQUENCY_MAX_REACHED")

Observe = Callable[[float], None]


class MetricsError(Exception):
    """A metrics endpoint that cannot be served; the message is one line for the operator."""


class Tally:
    """A counter child fed in plain Python on the event loop's thread; ``flush`` (at a scrape,
    on the scraping thread) adds to the child what was counted since the last flush. Only
    the loop writes ``n`` and only a flush (under the metrics' lock) reads it, so nothing
    is lost between the two threads."""

    __slots__ = ("_child", "_flushed", "n")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.n = 0
        self._flushed = 0

    def inc(self, amount: int = 1) -> None:
        """Counts ``amount`` more."""
        self.n += amount

    def flush(self) -> None:
        """Adds what is new to the prometheus-client child."""
        n = self.n
        if n != self._flushed:
            self._child.inc(n - self._flushed)
            self._flushed = n


class TallyHistogram:
    """A histogram child fed in plain Python (as Tally): per-bucket counts (not cumulative,
    as prometheus-client keeps them) and the sum, added to the child's own values at a flush.
    That reaches into the child's ``_buckets`` and ``_sum``, prometheus-client's storage of
    a histogram since 0.4; tests/test_metrics.py checks the exposed buckets against observed
    values, so a change there fails a test rather than a dashboard."""

    __slots__ = ("_bounds", "_child", "_flushed", "_flushed_sum", "counts", "sum")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self._child = child
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self._flushed = [0] * (len(bounds) + 1)
        self._flushed_sum = 0.0

    def observe(self, value: float) -> None:
        """Observes ``value`` (a bucket's bound is inclusive, as prometheus-client's)."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def flush(self) -> None:
        """Adds what is new to the prometheus-client child."""
        buckets = self._child._buckets
        flushed = self._flushed
        for i, n in enumerate(self.counts):
            if n != flushed[i]:
                buckets[i].inc(n - flushed[i])
                flushed[i] = n
        total = self.sum
        if total != self._flushed_sum:
            self._child._sum.inc(total - self._flushed_sum)
            self._flushed_sum = total


class MethodMetrics:
    """The label children of one gRPC method, bound once (see ServiceInterceptor._wrap)."""

    __slots__ = ("handled", "received", "seconds", "sent", "started")

    def __init__(self, metrics: Metrics, service: str, method: str, grpc_type: str) -> None:
        labels = (grpc_type, service, method)
        self.started: Any = metrics.tally(metrics.started.labels(*labels))
        # By grpc.StatusCode name; every code is bound up front, as go-grpc-prometheus does,
        # so each series exists (at 0) before its first call.
        self.handled: dict[str, Any] = {
            name: metrics.tally(metrics.handled.labels(*labels, go))
            for name, go in GRPC_CODE_NAMES.items()
        }
        self.seconds: Any = metrics.tally_histogram(
            metrics.handling.labels(*labels), HANDLING_BUCKETS
        )
        streams = grpc_type != "unary"
        self.received: Any = metrics.received.labels(*labels) if streams else None
        self.sent: Any = metrics.sent.labels(*labels) if streams else None


class Metrics:
    """Every metric of one process, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry()
        r = self.registry
        # Workers (multiprocess mode) write every value to a shared file that the parent
        # reads at a scrape without asking them: there, counts go to the children at once.
        self.buffered = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
        self._tallies: list[Tally | TallyHistogram] = []
        self._flush_lock = threading.Lock()
        # First in the registry, so a scrape flushes before it reads.
        r.register(_Flusher(self))
        # process_* (CPU, memory, open fds) and python_info, as the default registry has them;
        # read at scrape time only. (A --workers parent serves the workers' sums instead.)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        # Help texts are go-grpc-prometheus's.
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            rpc,
            registry=r,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*rpc, "grpc_code"],
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            rpc,
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            rpc,
            registry=r,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            rpc,
            registry=r,
        )
        db_seconds = Histogram(
            "badge_service_db_seconds",
            "Seconds a database call took (a transaction, or a batch of reads by fetch), by "
            "the Database method that ran it; background work (health probes, key refresh) "
            "included.",
            ["operation"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db: dict[str, Observe] = {
            op: self.tally_histogram(db_seconds.labels(op), DB_BUCKETS).observe
            for op in DB_OPERATIONS
        }
        self.group_commit: Observe = Histogram(
            "badge_service_group_commit_writes",
            "Writes committed together in one group commit (one transaction, one COMMIT).",
            buckets=BATCH_BUCKETS,
            registry=r,
        ).observe
        self.watch_streams = Gauge(
            "badge_service_watch_streams",
            "WatchAwards streams open now.",
            multiprocess_mode="livesum",
            registry=r,
        )
        issued = Counter(
            "badge_service_awards_issued_total",
            "Awards created (committed), by kind: badge (CrowdTwist), template (Credly), "
            "class (Badgr).",
            ["kind"],
            registry=r,
        )
        self.issued: dict[str, Any] = {kind: issued.labels(kind) for kind in AWARD_KINDS}
        refused = Counter(
            "badge_service_award_cap_refusals_total",
            "Awards refused because the recipient reached a badge's frequency cap or maximum.",
            ["reason"],
            registry=r,
        )
        self.refused: dict[str, Any] = {reason: refused.labels(reason) for reason in CAP_REASONS}
        self._methods: dict[str, MethodMetrics] = {}

    def tally(self, child: Any) -> Any:
        """``child``, or a Tally that feeds it when this process buffers (see Tally)."""
        if not self.buffered:
            return child
        tally = Tally(child)
        self._tallies.append(tally)
        return tally

    def tally_histogram(self, child: Any, bounds: tuple[float, ...]) -> Any:
        """``child``, or a TallyHistogram that feeds it when this process buffers."""
        if not self.buffered:
            return child
        tally = TallyHistogram(child, bounds)
        self._tallies.append(tally)
        return tally

    def flush(self) -> None:
        """Adds every tally's new counts to its prometheus-client child (before a scrape)."""
        with self._flush_lock:
            for tally in self._tallies:
                tally.flush()

    def method(self, full_method: str, grpc_type: str) -> MethodMetrics:
        """The bound children of ``/package.Service/Method`` (made on first use)."""
        found = self._methods.get(full_method)
        if found is None:
            service, _, name = full_method.lstrip("/").rpartition("/")
            found = self._methods[full_method] = MethodMetrics(self, service, name, grpc_type)
        return found

    def register(self, services: Iterable[ServiceDescriptor]) -> None:
        """Binds every method of ``services`` now, so that each series is there (at 0) from
        the first scrape, not from its method's first call."""
        for service in services:
            for m in service.methods:
                self.method(f"/{service.full_name}/{m.name}", grpc_type(m))

    def count_awards(self, issued: Mapping[str, int], refused: Mapping[str, int]) -> None:
        """Adds a write's outcome: awards created by kind, refusals by reason."""
        for kind, n in issued.items():
            self.issued[kind].inc(n)
        for reason, n in refused.items():
            self.refused[reason].inc(n)


class _Flusher:
    """A collector that yields nothing: collected first, it flushes the tallies."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Any]:
        """Flushes; the registry's other collectors then read current values."""
        self._metrics.flush()
        return ()


def grpc_type(method: Any) -> str:
    """go-grpc-prometheus's ``grpc_type`` of a method descriptor."""
    if method.client_streaming:
        return "bidi_stream" if method.server_streaming else "client_stream"
    return "server_stream" if method.server_streaming else "unary"


_active: Metrics | None = None


def enable() -> Metrics:
    """Turns metrics on for this process (once; later calls return the same)."""
    global _active
    if _active is None:
        import prometheus_client

        # Counters' and histograms' *_created series: neither go-grpc-prometheus nor the
        # multiprocess mode has them, and they would double the series to scrape.
        prometheus_client.disable_created_metrics()
        _active = Metrics()
    return _active


def active() -> Metrics | None:
    """This process's metrics, or None when they are off."""
    return _active


def watch_opened() -> None:
    """A WatchAwards stream was opened (for the open-streams gauge)."""
    if _active is not None:
        _active.watch_streams.inc()


def watch_closed() -> None:
    """A WatchAwards stream ended, however it ended."""
    if _active is not None:
        _active.watch_streams.dec()


_ADDRESS = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); MetricsError when malformed."""
    m = _ADDRESS.match(text)
    port = int(m.group("port")) if m else -1
    if m is None or not 0 <= port <= 65535:
        raise MetricsError(
            f"--metrics-address: expected HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}"
        )
    return m.group("v6") or m.group("host"), port


class Endpoint:
    """The HTTP endpoint Prometheus scrapes (``/metrics``, or any path), served by
    prometheus-client's WSGI server in a daemon thread."""

    def __init__(self, address: str, registry: CollectorRegistry) -> None:
        from prometheus_client import start_http_server

        host, port = parse_address(address)
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, socket.gaierror):
                reason = f"unknown host {host!r}"
            raise MetricsError(f"cannot serve metrics on {address}: {reason}") from None
        self.address = address
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        """Stops serving and frees the port."""
        self._server.shutdown()
        self._server.server_close()


def serve(address: str) -> Endpoint:
    """Turns metrics on and serves this process's metrics on ``address``."""
    return Endpoint(address, enable().registry)


def serve_multiprocess(address: str, directory: str) -> Endpoint:
    """Serves the sum of every worker's metrics, read from ``directory`` at each scrape."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return Endpoint(address, registry)


def worker_exited(pid: int, directory: str) -> None:
    """Drops an exited worker's live gauge values (its counters stay in the sums)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)
