"""Builds and runs the grpc.aio server: servicers, interceptor chain, health, reflection,
keepalive and message limits, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from badge_service import metrics
from badge_service.api.badges.v1 import (
    award_pb2,
    badge_class_pb2,
    badge_pb2,
    badge_template_pb2,
    custom_field_pb2,
    issuer_pb2,
    org_meta_pb2,
    org_meta_pb2_grpc,
)
from badge_service.config import Settings
from badge_service.domain import requests
from badge_service.metrics import MetricsError
from badge_service.rpc import wire
from badge_service.rpc.awards import AwardServicer
from badge_service.rpc.badge_classes import BadgeClassServicer
from badge_service.rpc.badge_templates import BadgeTemplateServicer
from badge_service.rpc.badges import BadgeServicer
from badge_service.rpc.custom_fields import CustomFieldServicer
from badge_service.rpc.interceptor import ServiceInterceptor, write_methods
from badge_service.rpc.issuers import IssuerServicer
from badge_service.rpc.org_meta import OrgMetaServicer
from badge_service.service.auth import Authenticator
from badge_service.service.watch import WatchLimits
from badge_service.store import events, faults, request_ids
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade
from badge_service.tls import CertificateReloader, TlsError, TlsFiles, is_loopback
from badge_service.tracing import (
    Tracing,
    TracingError,
    check_tracing_environment,
    provider_from_environment,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from badge_service.http.rest.gateway import Gateway, PrivateSocket
    from badge_service.http.server import HttpServer

log = logging.getLogger("badge_service.server")

SERVICES = [
    org_meta_pb2.DESCRIPTOR.services_by_name["OrgMetaService"],
    custom_field_pb2.DESCRIPTOR.services_by_name["CustomFieldService"],
    badge_pb2.DESCRIPTOR.services_by_name["BadgeService"],
    issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"],
    badge_class_pb2.DESCRIPTOR.services_by_name["BadgeClassService"],
    badge_template_pb2.DESCRIPTOR.services_by_name["BadgeTemplateService"],
    award_pb2.DESCRIPTOR.services_by_name["AwardService"],
]
# The health monitor probes the store this often while it answers, and RETRY_INTERVAL apart
# while it does not; a call that fails as unavailable wakes it at once, but probes stay at
# least PROBE_GAP apart. With db.PROBE_TIMEOUT this puts NOT_SERVING within about 2 s of a
# store that stops answering, and at once after one that refuses.
HEALTH_INTERVAL = 1.0
RETRY_INTERVAL = 0.5
PROBE_GAP = 0.25
# How often request ids past their retention are deleted.
PURGE_INTERVAL = 600.0
# Shutdown: how often to look for quiet, and how long no call must have been picked up.
DRAIN_POLL = 0.05
QUIET = 0.5


class Health(health_aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 with Watch streams that end when the server stops taking calls.

    The stock Watch never returns, and gRPC's graceful stop waits for every open call, so one
    client doing client-side health checking (a channel's healthCheckConfig keeps a Watch
    open) would hold every shutdown for the whole grace period.
    """

    def __init__(self) -> None:
        super().__init__()
        self._closed = asyncio.Event()
        # What Check answers for the whole server (""), kept for the HTTP face's /readyz.
        self.serving = False
        self._draining = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        """Sets a service's status (the whole server's too, for ``serving``)."""
        await super().set(service, status)
        if service == "" and not self._draining:
            self.serving = status == health_pb2.HealthCheckResponse.SERVING

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for good: the server is draining."""
        self._draining, self.serving = True, False
        await super().enter_graceful_shutdown()

    def close_watches(self) -> None:
        """Ends every Watch stream with UNAVAILABLE (they have already seen NOT_SERVING)."""
        self._closed.set()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Streams the service's status until the client leaves or the server stops."""
        # The stock Watch runs in a task of its own so that it can be raced with the close;
        # it is always finished before this call's task ends, so the call is never touched
        # after gRPC has let go of it.
        inner = asyncio.ensure_future(super().Watch(request, context))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({inner, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not inner.done():
                inner.cancel()
            await asyncio.gather(inner, closed, return_exceptions=True)
        if not self._closed.is_set():
            inner.result()  # the stock Watch's own error, if it had one
            return
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")


@dataclass
class Running:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    db: Database
    health: Health
    interceptor: ServiceInterceptor
    monitor: asyncio.Task[None]
    housekeeping: asyncio.Task[None]
    auth: Authenticator
    tls: CertificateReloader | None = None
    metrics_endpoint: metrics.Endpoint | None = None
    tracing: Tracing | None = None
    http: HttpServer | None = None
    gateway: Gateway | None = None
    gateway_socket: PrivateSocket | None = None

    @property
    def http_port(self) -> int | None:
        """The HTTP face's port, when it is on."""
        return None if self.http is None else self.http.port

    async def shutdown(self, drain_delay: float, grace: float) -> None:
        """SIGTERM's sequence: health NOT_SERVING at once; new calls still served for
        ``drain_delay`` seconds (so load balancers see NOT_SERVING first); then new calls are
        refused UNAVAILABLE without being started, watch streams end, and the calls already
        admitted get ``grace`` seconds to finish before the server stops.

        gRPC's core hands calls to the event loop one at a time, and its shutdown cuts off
        (CANCELLED) every call still queued in it. So the server stops only once no admitted
        call runs and none has been picked up for QUIET seconds: by then the queue is empty
        and every call that arrived was either served or refused. A client that keeps
        sending through the grace period has its queued calls cut off at the end; none of
        those has started either.
        """
        interceptor = self.interceptor
        if drain_delay > 0:
            await self.health.enter_graceful_shutdown()
            await asyncio.sleep(drain_delay)
            interceptor.refuse_new_calls()
        else:
            # Refused first: a client that sees NOT_SERVING and calls again must be refused.
            interceptor.refuse_new_calls()
            await self.health.enter_graceful_shutdown()
        if self.http is not None:
            # HTTP stops accepting when gRPC starts refusing; its requests share the grace.
            self.http.begin_stop(grace)
        # Watch streams never finish on their own: end them now (SERVER_SHUTTING_DOWN).
        events.bell(self.db.engine).close()
        self.health.close_watches()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        seen, quiet_since = -1, loop.time()
        while True:
            now = loop.time()
            if interceptor.in_flight or interceptor.started != seen:
                seen, quiet_since = interceptor.started, now
            elif now - quiet_since >= QUIET:
                break
            if now >= deadline:
                log.warning(
                    "grace period over; cutting off calls in flight",
                    extra={"in_flight": interceptor.in_flight},
                )
                break
            await asyncio.sleep(DRAIN_POLL)
        await self.stop(max(deadline - loop.time(), 0.0))

    def reload(self) -> None:
        """SIGHUP: re-read the TLS certificate, key and client CA at the next handshake."""
        if self.tls is None:
            log.info("SIGHUP: nothing to reload (no TLS)")
            return
        self.tls.request_reload()
        log.info("SIGHUP: TLS files are re-read at the next connection")

    async def stop(self, grace: float | None) -> None:
        """Stops accepting calls, lets in-flight calls finish within ``grace``, closes the DB."""
        await self.health.enter_graceful_shutdown()
        events.bell(self.db.engine).close()
        self.health.close_watches()
        for task in (self.monitor, self.housekeeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.http is None:
            await self.server.stop(grace)
        else:
            await asyncio.gather(
                self.server.stop(grace), self.http.stop(grace if grace is not None else 0.0)
            )
        if self.gateway is not None:
            await self.gateway.close()
        if self.gateway_socket is not None:
            self.gateway_socket.remove()
        await self.auth.stop()
        self.interceptor.summarise_log(None)
        await self.db.close()
        _close_observers(self.metrics_endpoint, self.tracing)


def _close_observers(endpoint: metrics.Endpoint | None, tracing: Tracing | None) -> None:
    if endpoint is not None:
        endpoint.close()
    if tracing is not None:
        tracing.shutdown()  # exports the spans still batched


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments: message limits, keepalive, and SO_REUSEPORT only for --workers."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # gRPC turns SO_REUSEPORT on by default, which lets a second server silently share
        # the port; only worker processes should.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


async def start(
    settings: Settings,
    db: Database | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Running:
    """Migrates (unless disabled), builds and starts the server; returns once it listens.

    Metrics are served on ``settings.metrics_address`` when it is set (a worker of ``serve
    --workers`` has them on without an address: its parent serves them). Traces follow the
    OTEL_* environment, or go to ``tracer_provider`` when one is given (tests). A ``db``
    handed in is used as it is, so its calls are not measured or traced.
    """
    endpoint: metrics.Endpoint | None = None
    tracing: Tracing | None = None
    try:
        if settings.metrics_address:
            endpoint = metrics.serve(settings.metrics_address)
            log.info(
                "metrics listening",
                extra={"address": settings.metrics_address, "port": endpoint.port},
            )
        if tracer_provider is None:
            tracer_provider = provider_from_environment()
            owned = True
        else:
            owned = False
        if tracer_provider is not None:
            tracing = Tracing(tracer_provider, owned=owned)
    except (MetricsError, TracingError) as exc:
        _close_observers(endpoint, tracing)
        raise SystemExit(f"error: {exc}") from None
    try:
        return await _start(settings, db, metrics.active(), endpoint, tracing)
    except BaseException:
        _close_observers(endpoint, tracing)
        raise


async def _start(
    settings: Settings,
    db: Database | None,
    meter: metrics.Metrics | None,
    endpoint: metrics.Endpoint | None,
    tracing: Tracing | None,
) -> Running:
    if db is None:
        options = {
            "pool_size": settings.db_pool_size,
            "listen_url": settings.db_listen_url,
            "statement_timeout": settings.db_statement_timeout,
            "connect_timeout": settings.db_connect_timeout,
            "statement_cache_size": settings.db_statement_cache,
        }
        if meter is None and tracing is None:
            db = Database(settings.database_url, **options)  # type: ignore[arg-type]
        else:
            from badge_service.store.observed import ObservedDatabase

            tracer = tracing.tracer if tracing is not None else None
            db = ObservedDatabase(settings.database_url, meter=meter, tracer=tracer, **options)
            if tracing is not None:
                tracing.instrument_engines(
                    [e for e in (db.engine.sync_engine, db.sync_engine) if e is not None]
                )
    try:
        # Storage that cannot be written (read-only, full) stops the start, with one line.
        await db.probe(write=True)
        if settings.migrate_on_start:
            await upgrade(db)
    except Exception as exc:
        line = faults.unusable(settings.database_url, exc)
        if line is None:
            raise
        await db.close()
        raise SystemExit(line) from None
    http_sock: socket.socket | None = None
    try:
        if settings.http_address:
            from badge_service.http.server import bind

            http_sock = bind(settings.http_address, reuse_port=settings.workers > 1)
        base_url = settings.public_base(None if http_sock is None else http_sock.getsockname()[1])
        return await _serve_on(settings, db, meter, tracing, endpoint, http_sock, base_url)
    except BaseException:
        if http_sock is not None:
            http_sock.close()
        raise


async def _serve_on(
    settings: Settings,
    db: Database,
    meter: metrics.Metrics | None,
    tracing: Tracing | None,
    endpoint: metrics.Endpoint | None,
    http_sock: socket.socket | None,
    base_url: str,
) -> Running:
    auth = Authenticator(db, refresh=settings.auth_refresh_seconds)
    writes = write_methods(SERVICES)
    if meter is not None:
        meter.register(SERVICES)
    interceptor = ServiceInterceptor(auth, writes, meter)
    interceptors: list[grpc.aio.ServerInterceptor] = [interceptor]
    if tracing is not None:
        # First: its server span covers the whole call, and is current while it runs.
        interceptors.insert(0, tracing.server_interceptor(writes))
    server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
    org_meta_pb2_grpc.add_OrgMetaServiceServicer_to_server(OrgMetaServicer(db), server)
    # Servicers with methods that answer with serialized bytes (see rpc.wire.add_servicer).
    wire.add_servicer(
        server,
        custom_field_pb2.DESCRIPTOR.services_by_name["CustomFieldService"],
        CustomFieldServicer(db),
    )
    wire.add_servicer(
        server, badge_pb2.DESCRIPTOR.services_by_name["BadgeService"], BadgeServicer(db)
    )
    wire.add_servicer(
        server,
        issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"],
        IssuerServicer(db, base_url),
    )
    wire.add_servicer(
        server,
        badge_class_pb2.DESCRIPTOR.services_by_name["BadgeClassService"],
        BadgeClassServicer(db, base_url),
    )
    wire.add_servicer(
        server,
        badge_template_pb2.DESCRIPTOR.services_by_name["BadgeTemplateService"],
        BadgeTemplateServicer(db, base_url),
    )
    wire.add_servicer(
        server,
        award_pb2.DESCRIPTOR.services_by_name["AwardService"],
        AwardServicer(db, base_url, WatchLimits.of(settings)),
    )
    health = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [s.full_name for s in SERVICES]
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.reflection:
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    try:
        tls = _tls(settings)
    except TlsError as exc:
        await db.close()
        raise SystemExit(f"error: {exc}") from None
    try:
        if tls is None:
            port = server.add_insecure_port(settings.address)
        else:
            port = server.add_secure_port(settings.address, tls.credentials())
    except RuntimeError:  # grpcio >= 1.60 raises where older versions returned 0
        port = 0
    if port == 0:
        await db.close()
        raise SystemExit(
            f"error: cannot listen on {settings.address}: the address is in use or not available"
        )
    http = gateway = gateway_socket = None
    if http_sock is not None:
        from badge_service.http.rest.gateway import Gateway, PrivateSocket

        # The REST routes' private way in (see http.rest.gateway): plaintext on a Unix socket
        # only this user can reach, whatever TLS the public port asks for.
        gateway_socket = PrivateSocket()
        try:
            server.add_insecure_port(gateway_socket.address)
            gateway = Gateway(gateway_socket.address)
            http = _http_server(db, base_url, health, http_sock, gateway)
        except BaseException:
            gateway_socket.remove()
            await db.close()
            raise
    await auth.start()
    await server.start()
    if http is not None:
        await http.start()
        log.info(
            "http listening",
            extra={"address": settings.http_address, "port": http.port, "public_base": base_url},
        )
    monitor = asyncio.create_task(_watch_store(db, health, ["", *names]))
    housekeeping = asyncio.create_task(_housekeeping(db, interceptor))
    log.info(
        "listening",
        extra={"address": settings.address, "port": port, "tls": _tls_mode(settings)},
    )
    if tls is None and not is_loopback(settings.address):
        log.warning(
            "serving plaintext on a non-loopback address: credentials and data cross the "
            "network unencrypted; use --tls-cert and --tls-key",
            extra={"address": settings.address},
        )
    return Running(
        server,
        port,
        db,
        health,
        interceptor,
        monitor,
        housekeeping,
        auth,
        tls,
        endpoint,
        tracing,
        http,
        gateway,
        gateway_socket,
    )


def _http_server(
    db: Database, base_url: str, health: Health, sock: socket.socket, gateway: Gateway
) -> HttpServer:
    """The HTTP face on ``sock``; imported only when it is on, so gRPC alone loads none of
    Starlette or uvicorn."""
    from badge_service.http.app import build_app
    from badge_service.http.server import HttpServer
    from badge_service.rpc.issuers import base_url_of

    app = build_app(db, base_url_of(base_url), lambda: health.serving, gateway)
    return HttpServer(app, sock)


def _tls(settings: Settings) -> CertificateReloader | None:
    """The TLS credentials the settings ask for, or None for plaintext."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise TlsError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise TlsError("--tls-cert and --tls-key go together")
    return CertificateReloader(
        TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    )


def _tls_mode(settings: Settings) -> str:
    if settings.tls_client_ca:
        return "mtls"
    return "tls" if settings.tls_cert else "plaintext"


async def _housekeeping(db: Database, interceptor: ServiceInterceptor) -> None:
    """Every second: the access log's summary of UNAUTHENTICATED calls once its window ends.
    Every PURGE_INTERVAL: forgets request ids older than their retention, in small batches."""
    loop = asyncio.get_running_loop()
    purge_at = loop.time() + PURGE_INTERVAL
    while True:
        await asyncio.sleep(1.0)
        interceptor.summarise_log(time.monotonic())
        if loop.time() < purge_at:
            continue
        purge_at = loop.time() + PURGE_INTERVAL
        try:
            cutoff = dt.datetime.now(dt.UTC) - requests.RETENTION
            while await db.run_write(request_ids.purge, cutoff) == request_ids.PURGE_BATCH:
                pass
        except Exception as exc:  # the store may be down; the next round tries again
            log.warning("could not purge old request ids", extra={"error": str(exc)})


async def _watch_store(db: Database, health: health_aio.HealthServicer, names: list[str]) -> None:
    """Reports SERVING while the store answers, NOT_SERVING while it does not.

    The probe reads; it also commits a write that changes nothing when a call has just failed
    as unavailable and while the store is down, since a store that only reads (a full disk,
    a read-only file or standby) has failed too. Every state change is logged once.
    """
    serving: bool | None = None
    seen = db.faults
    while True:
        write = seen.suspect or serving is not True
        seen.suspect = False
        try:
            await db.probe(write=write)
            problem: BaseException | None = None
        except Exception as exc:  # any failure to answer means not serving
            problem = exc
        ok = problem is None
        if ok != serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in names:
                await health.set(name, status)
            if problem is None:
                log.info("health", extra={"serving": True})
            else:
                fault = faults.classify(problem)
                log.warning(
                    "health",
                    extra={
                        "serving": False,
                        "fault": fault.label if fault else type(problem).__name__,
                        "error": faults.describe(problem),
                    },
                )
            serving = ok
        seen.serving = ok
        await asyncio.sleep(PROBE_GAP)
        await seen.wait((HEALTH_INTERVAL if ok else RETRY_INTERVAL) - PROBE_GAP)


def freeze_startup() -> None:
    """Moves everything made so far out of the garbage collector's generations (call it once
    the server has started). Modules, the generated descriptors and, when on, OpenTelemetry's
    and prometheus-client's objects live as long as the process; frozen, they are not walked
    again by every full collection. Measured with metrics on, GetBadge rose from about 94.8%
    to 96.3% of metrics off (bench smoke). Not in ``start``: a test process starts many
    servers and must be able to free them."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = await start(settings)
    freeze_startup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads the TLS files (new connections get the renewed certificate; open ones
    # keep theirs). Handled even without TLS: its default action would end the process.
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    await stop.wait()
    log.info(
        "shutting down",
        extra={"drain_delay_seconds": settings.drain_delay, "grace_seconds": settings.grace_period},
    )
    await running.shutdown(settings.drain_delay, settings.grace_period)
    log.info("stopped")


def serve_workers(settings: Settings) -> int:
    """Runs ``settings.workers`` server processes on one port (SO_REUSEPORT) until SIGTERM or
    SIGINT; returns the exit status (0 when every worker stopped cleanly).

    The parent migrates once, so workers never race on migrations, then spawns the workers
    (spawn, not fork: a forked gRPC or event-loop state is unsafe). Each worker has its own
    event loop and database pool; the kernel spreads new connections across them. The parent
    forwards SIGTERM/SIGINT to every worker and waits for them to drain. If a worker dies on
    its own, the parent stops the rest and fails, so a supervisor can restart the service.
    """
    try:
        _tls(settings)  # a bad file stops here with one line, not once per worker
        check_tracing_environment()  # so does a trace exporter that is not installed
    except (TlsError, TracingError) as exc:
        raise SystemExit(f"error: {exc}") from None
    metrics_dir = None
    if settings.metrics_address:
        metrics_dir = tempfile.mkdtemp(prefix="badge-service-metrics-")
        try:
            exit_code = _serve_workers(settings, metrics_dir)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return exit_code
    return _serve_workers(settings, None)


def _serve_workers(settings: Settings, metrics_dir: str | None) -> int:
    endpoint = None
    if metrics_dir is not None:
        try:
            endpoint = metrics.serve_multiprocess(settings.metrics_address, metrics_dir)
        except MetricsError as exc:
            raise SystemExit(f"error: {exc}") from None
        # Multiprocess mode: spawned workers inherit the variable, so prometheus-client in
        # each of them keeps its values in files there, which this process sums per scrape.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        log.info(
            "metrics listening",
            extra={
                "address": settings.metrics_address,
                "port": endpoint.port,
                "multiprocess_dir": metrics_dir,
            },
        )
    try:
        if settings.migrate_on_start:
            asyncio.run(_migrate_once(settings))
        return _run_workers(settings, metrics_dir)
    finally:
        if endpoint is not None:
            endpoint.close()
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def _run_workers(settings: Settings, metrics_dir: str | None) -> int:
    # A port of 0 would give every worker its own ephemeral port; pick one for all of them and
    # keep a bound (never listening) SO_REUSEPORT socket on it so nothing else takes it.
    address, reserved = _reserve_port(settings.address)
    http_address, http_reserved = "", None
    if settings.http_address:
        http_address, http_reserved = _reserve_port(settings.http_address)
    # Workers count into the parent's endpoint; they serve none of their own. They all write
    # the same public base URL (the HTTP port they share, when it was 0).
    child = replace(
        settings,
        address=address,
        http_address=http_address,
        public_base_url=settings.public_base(
            int(http_address.rpartition(":")[2]) if http_address else None
        ),
        migrate_on_start=False,
        metrics_address="",
    )
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(
            target=_worker_main, args=(child, metrics_dir is not None), name=f"badge-service-{i}"
        )
        for i in range(settings.workers)
    ]
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGTERM)

    def reload_all(signum: int, frame: FrameType | None) -> None:
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload_all)
    failed = False
    try:
        for w in workers:
            w.start()
        if stopping:  # a signal arrived while some workers were not started yet
            stop_all()
        log.info(
            "workers started",
            extra={"address": address, "workers": [w.pid for w in workers]},
        )
        pending = list(workers)
        while pending:
            ready = multiprocessing.connection.wait([w.sentinel for w in pending])
            for w in [w for w in pending if w.sentinel in ready]:
                w.join()
                pending.remove(w)
                if metrics_dir is not None and w.pid is not None:
                    metrics.worker_exited(w.pid, metrics_dir)  # its open streams are gone
                # A worker told to stop before it installed its handler dies of the SIGTERM.
                clean = w.exitcode == 0 or (stopping and w.exitcode == -signal.SIGTERM)
                if not clean:
                    failed = True
                    log.error("worker exited", extra={"pid": w.pid, "exitcode": w.exitcode})
                if not stopping:
                    failed = True
                    stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in (reserved, http_reserved):
            if sock is not None:
                sock.close()
    log.info("stopped", extra={"workers": len(workers)})
    return 1 if failed else 0


async def _migrate_once(settings: Settings) -> None:
    db = Database(
        settings.database_url,
        statement_timeout=settings.db_statement_timeout,
        connect_timeout=settings.db_connect_timeout,
        statement_cache_size=settings.db_statement_cache,
    )
    try:
        await db.probe(write=True)
        await upgrade(db)
    finally:
        await db.close()


def _reserve_port(address: str) -> tuple[str, socket.socket | None]:
    """``address`` with a concrete port, and the socket holding it when the port was 0."""
    host, _, port = address.rpartition(":")
    if port != "0":
        return address, None
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bare or "0.0.0.0", 0))
    return f"{host}:{sock.getsockname()[1]}", sock


def _worker_main(settings: Settings, metrics_on: bool = False) -> None:
    """One worker process: its own event loop (uvloop where installed) and database pool;
    with ``metrics_on``, metrics counted into the parent's multiprocess directory."""
    from badge_service import logs

    logs.configure(settings.log_level, settings.log_format)
    if metrics_on:
        metrics.enable()

    async def run() -> None:
        # If the parent dies without stopping us (e.g. SIGKILL), stop gracefully rather than
        # serve on as an orphan: its sentinel becomes readable when it exits.
        parent = multiprocessing.parent_process()
        loop = asyncio.get_running_loop()
        if parent is not None:
            sentinel = parent.sentinel

            def parent_gone() -> None:
                loop.remove_reader(sentinel)
                os.kill(os.getpid(), signal.SIGTERM)

            loop.add_reader(sentinel, parent_gone)
        await serve(settings)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(run())
    else:
        uvloop.run(run())
