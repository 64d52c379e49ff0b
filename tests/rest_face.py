"""A server with the HTTP face on, for the vendor REST tests: module-scoped, on the session's
database, with an httpx client; and an org whose gRPC clients call that server (so its
replies name the face's URLs, as the REST answers do)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx

from badge_service.config import Settings
from badge_service.server import Running, start
from tests.support import Backend, Client, Org


@dataclass
class Face:
    """The server, an HTTP client on it, and its base URL."""

    running: Running
    http: httpx.AsyncClient
    base: str


@contextlib.asynccontextmanager
async def face_of(backend: Backend) -> AsyncIterator[Face]:
    """Starts a server with the HTTP face on ``backend``'s database."""
    settings = Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
    )
    running = await start(settings)
    assert running.http_port is not None
    base = f"http://127.0.0.1:{running.http_port}"
    http = httpx.AsyncClient(base_url=base, trust_env=False, timeout=30)
    try:
        yield Face(running, http, base)
    finally:
        await http.aclose()
        await running.stop(grace=1)


@contextlib.asynccontextmanager
async def org_on(face: Face, org: Org) -> AsyncIterator[Org]:
    """``org`` with its admin and reader gRPC clients on ``face``'s server."""
    admin = Client.connect(face.running.port, [("authorization", f"Bearer {org.admin_key}")])
    reader = Client.connect(face.running.port, [("authorization", f"Bearer {org.reader_key}")])
    try:
        yield replace(org, admin=admin, reader=reader)
    finally:
        await admin.channel.close()
        await reader.channel.close()
