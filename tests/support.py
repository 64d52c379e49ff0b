"""Test helpers: a running server per database, organisations with keys, authenticated stubs,
and assertions on rich error details."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from alembic import command
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy.engine import Connection, make_url

from badge_service.api.badges.v1 import (
    badge_pb2_grpc,
    custom_field_pb2_grpc,
    org_meta_pb2_grpc,
)
from badge_service.domain.auth import Role
from badge_service.server import Running
from badge_service.store import keys, orgs
from badge_service.store.db import Database
from badge_service.store.migrate import alembic_config

PG_ENV = "BADGE_SERVICE_TEST_PG_URL"
S = TypeVar("S")


class _AddsMetadata:
    """Adds fixed metadata (credentials) to every call of a channel."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        merged = list(details.metadata or []) + self._metadata
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*merged),
            details.credentials,
            details.wait_for_ready,
        )


# Two objects, one per kind of call: grpc.aio files an interceptor under the first kind it is
# an instance of (unary-unary) and no other, so one object for both never saw a stream.
class _Metadata(_AddsMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    """Credentials on unary calls."""

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamMetadata(_AddsMetadata, grpc.aio.UnaryStreamClientInterceptor):
    """Credentials on server-streaming calls."""

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


@dataclass
class Client:
    """Stubs of every service on one channel that sends one set of credentials."""

    channel: grpc.aio.Channel
    badges: badge_pb2_grpc.BadgeServiceStub
    fields: custom_field_pb2_grpc.CustomFieldServiceStub
    meta: org_meta_pb2_grpc.OrgMetaServiceStub

    def stub(self, stub_class: type[S]) -> S:
        """Any service's stub on this client's channel (and credentials)."""
        # Generated stubs share no base class to bound S with; each takes the channel.
        return stub_class(self.channel)  # type: ignore[call-arg]

    @classmethod
    def connect(
        cls,
        port: int,
        metadata: list[tuple[str, str]] | None = None,
        options: list[tuple[str, Any]] | None = None,
        *,
        target: str | None = None,
    ) -> Client:
        """A client for the server on ``port`` (or on a gRPC ``target``) that sends
        ``metadata`` on every call (with channel ``options``)."""
        interceptors = [_Metadata(metadata), _StreamMetadata(metadata)] if metadata else None
        channel = grpc.aio.insecure_channel(
            target or f"127.0.0.1:{port}", options=options, interceptors=interceptors
        )
        return cls(
            channel,
            badge_pb2_grpc.BadgeServiceStub(channel),
            custom_field_pb2_grpc.CustomFieldServiceStub(channel),
            org_meta_pb2_grpc.OrgMetaServiceStub(channel),
        )


@dataclass
class Org:
    """An organisation with an admin and a reader key and clients for both."""

    id: int
    uuid: str
    admin_key: str
    reader_key: str
    admin: Client
    reader: Client


@dataclass
class Backend:
    """A running server on one database."""

    name: str
    url: str
    running: Running
    clients: list[Client]

    @property
    def port(self) -> int:
        """The server's ephemeral port."""
        return self.running.port

    @property
    def db(self) -> Database:
        """The server's database handle (for test set-up only)."""
        return self.running.db

    def client(
        self,
        metadata: list[tuple[str, str]] | None = None,
        options: list[tuple[str, int]] | None = None,
    ) -> Client:
        """A client on its own channel, closed when the session ends."""
        c = Client.connect(self.port, metadata, options)
        self.clients.append(c)
        return c

    async def new_org(self, name: str | None = None) -> Org:
        """Creates an organisation with fresh keys, as ``badge-service orgs create`` does."""
        now = dt.datetime.now(dt.UTC)
        async with self.db.write() as conn:
            org = await orgs.create_org(conn, name or f"org-{uuid.uuid4().hex[:8]}", now)
            _, admin_key = await conn.run_sync(keys.create_key, org.id, Role.ADMIN, now)
            _, reader_key = await conn.run_sync(keys.create_key, org.id, Role.READER, now)
        return Org(
            org.id,
            org.uuid,
            admin_key,
            reader_key,
            self.client([("authorization", f"Bearer {admin_key}")]),
            self.client([("authorization", f"Bearer {reader_key}")]),
        )


def pg_url() -> str | None:
    """The PostgreSQL URL tests may use, or None."""
    return os.environ.get(PG_ENV) or None


async def create_pg_database(base_url: str) -> str:
    """Creates a fresh database on the server of ``base_url``; returns its URL."""
    import asyncpg

    url = make_url(base_url)
    name = f"badge_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(db_url: str) -> None:
    """Drops a database made by create_pg_database."""
    import asyncpg

    url = make_url(db_url)
    conn = await asyncpg.connect(_asyncpg_dsn(url.set(database="postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def own_database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database of its own: a SQLite file in ``tmp_path``, or a PostgreSQL
    database created for the caller and dropped afterwards (skips without
    BADGE_SERVICE_TEST_PG_URL)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
        return
    base = pg_url()
    if base is None:
        pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
    url = await create_pg_database(base)
    try:
        yield url
    finally:
        await drop_pg_database(url)


def migrate(conn: Connection, direction: str, target: str) -> None:
    """Runs Alembic on a sync connection (``await conn.run_sync(migrate, "down", "0005")``)."""
    cfg = alembic_config(conn)
    if direction == "down":
        command.downgrade(cfg, target)
    else:
        command.upgrade(cfg, target)


def _asyncpg_dsn(url: Any) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class ErrorDetails:
    """The decoded google.rpc.Status details of a failed call."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None


def store_log(caplog: pytest.LogCaptureFixture) -> list[tuple[str, object, object]]:
    """The store's fault log lines a test captured, with the fields a plain capture leaves
    out (the fault's label and the driver's words): for an assertion's message."""
    return [
        (r.getMessage(), getattr(r, "fault", None), getattr(r, "error", None))
        for r in caplog.records
        if r.name == "badge_service.store"
    ]


def details_of(err: grpc.aio.AioRpcError) -> ErrorDetails:
    """Decodes ErrorInfo and BadRequest from a failed call's trailers."""
    info = bad = None
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_msg in status.details:
                if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_msg.Unpack(info)
                elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    any_msg.Unpack(bad)
    return ErrorDetails(err.code(), err.details() or "", info, bad)


async def expect_error(
    call: Any,
    code: grpc.StatusCode,
    *,
    reason: str | None = None,
    vendor_code: int | None = None,
    field: str | None = None,
) -> ErrorDetails:
    """Awaits ``call`` and asserts it failed with ``code`` (and reason, vendor code, field)."""
    try:
        result = await call
    except grpc.aio.AioRpcError as err:
        got = details_of(err)
    else:
        raise AssertionError(f"expected {code.name}, got a reply: {result}")
    assert got.code == code, f"expected {code.name}, got {got.code.name}: {got.message}"
    if reason is not None:
        assert got.info is not None and got.info.reason == reason, got
    if code not in (grpc.StatusCode.UNAUTHENTICATED,):
        assert got.info is not None and got.info.domain == "badges.v1", got
    if vendor_code is not None:
        assert got.info is not None and got.info.metadata.get("code") == str(vendor_code), got
    if field is not None:
        assert got.bad_request is not None, got
        assert [v.field for v in got.bad_request.field_violations] == [field], got
    return got


Factory = Callable[..., Any]


class Over(str):
    """An expected field that is refused for being over a documented limit: reason
    LIMIT_EXCEEDED rather than the test's usual one (``reason_for``)."""


def reason_for(field: str, usual: str = "INVALID_FIELD") -> str:
    """The reason a parametrized bad-field case expects: LIMIT_EXCEEDED for an ``Over``."""
    return "LIMIT_EXCEEDED" if isinstance(field, Over) else usual
