"""Builds and runs the grpc.aio server: servicers, interceptor chain, health, reflection,
keepalive and message limits, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from badge_service.api.badges.v1 import (
    badge_pb2,
    badge_pb2_grpc,
    custom_field_pb2,
    custom_field_pb2_grpc,
    org_meta_pb2,
    org_meta_pb2_grpc,
)
from badge_service.config import Settings
from badge_service.rpc.auth import Authenticator
from badge_service.rpc.badges import BadgeServicer
from badge_service.rpc.custom_fields import CustomFieldServicer
from badge_service.rpc.interceptor import ServiceInterceptor, write_methods
from badge_service.rpc.org_meta import OrgMetaServicer
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade

log = logging.getLogger("badge_service.server")

SERVICES = [
    org_meta_pb2.DESCRIPTOR.services_by_name["OrgMetaService"],
    custom_field_pb2.DESCRIPTOR.services_by_name["CustomFieldService"],
    badge_pb2.DESCRIPTOR.services_by_name["BadgeService"],
]
HEALTH_INTERVAL = 5.0


@dataclass
class Running:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    db: Database
    health: health_aio.HealthServicer
    interceptor: ServiceInterceptor
    monitor: asyncio.Task[None]

    async def stop(self, grace: float | None) -> None:
        """Stops accepting calls, lets in-flight calls finish within ``grace``, closes the DB."""
        await self.health.enter_graceful_shutdown()
        self.monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.monitor
        await self.server.stop(grace)
        await self.db.close()


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


async def start(settings: Settings, db: Database | None = None) -> Running:
    """Migrates (unless disabled), builds and starts the server; returns once it listens."""
    db = db or Database(settings.database_url, pool_size=settings.db_pool_size)
    if settings.migrate_on_start:
        await upgrade(db)
    interceptor = ServiceInterceptor(
        Authenticator(db, ttl=settings.auth_cache_seconds), write_methods(SERVICES)
    )
    server = grpc.aio.server(interceptors=[interceptor], options=server_options(settings))
    org_meta_pb2_grpc.add_OrgMetaServiceServicer_to_server(OrgMetaServicer(db), server)
    custom_field_pb2_grpc.add_CustomFieldServiceServicer_to_server(CustomFieldServicer(db), server)
    badge_pb2_grpc.add_BadgeServiceServicer_to_server(BadgeServicer(db), server)
    health = health_aio.HealthServicer()
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
    port = server.add_insecure_port(settings.address)
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.address}")
    await server.start()
    monitor = asyncio.create_task(_watch_store(db, health, ["", *names]))
    log.info("listening", extra={"address": settings.address, "port": port})
    return Running(server, port, db, health, interceptor, monitor)


async def _watch_store(db: Database, health: health_aio.HealthServicer, names: list[str]) -> None:
    """Reports SERVING while the store answers, NOT_SERVING while it does not."""
    serving: bool | None = None
    while True:
        try:
            await asyncio.wait_for(db.ping(), timeout=HEALTH_INTERVAL)
            ok = True
        except Exception:  # any failure to answer means not serving
            ok = False
        if ok != serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in names:
                await health.set(name, status)
            log.info("health", extra={"serving": ok})
            serving = ok
        await asyncio.sleep(HEALTH_INTERVAL if ok else 0.5)


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_period})
    await running.stop(settings.grace_period)
    log.info("stopped")
