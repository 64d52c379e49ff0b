"""The REST routes' in-process gateway (http.rest.gateway): calls reach this process's RPCs
over its private Unix socket with the caller's credentials, failures keep their status and
details, the socket's directory is private and goes with the server, and under mTLS the
gateway still gets in (the public port's TLS does not apply to it)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import grpc
import pytest

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.config import Settings
from badge_service.http.rest.gateway import Gateway, RpcFailure
from badge_service.server import start
from tests.certs import Authority
from tests.support import Backend, Org
from tests.test_badges import valid_badge

GET_BADGE = "/badges.v1.BadgeService/GetBadge"
CREATE_BADGE = "/badges.v1.BadgeService/CreateBadge"


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


async def test_calls_reach_the_rpcs_with_the_callers_key(backend: Backend, org: Org) -> None:
    settings = Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
    )
    running = await start(settings)
    gateway = running.gateway
    assert gateway is not None and running.gateway_socket is not None
    directory = running.gateway_socket.directory
    try:
        mode = (await asyncio.to_thread(os.stat, directory)).st_mode
        assert stat.S_IMODE(mode) == 0o700
        created = await gateway.call(
            CREATE_BADGE,
            pb.CreateBadgeRequest(badge=valid_badge(name="via-gateway")),
            pb.Badge,
            bearer(org.admin_key),
        )
        got = await gateway.call(
            GET_BADGE, pb.GetBadgeRequest(id=created.id), pb.Badge, bearer(org.reader_key)
        )
        assert got == created

        with pytest.raises(RpcFailure) as missing:
            await gateway.call(
                GET_BADGE,
                pb.GetBadgeRequest(id=created.id + 10**6),
                pb.Badge,
                bearer(org.reader_key),
            )
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert missing.value.reason == "NOT_FOUND"
        assert missing.value.metadata["resource"] == "badge"

        with pytest.raises(RpcFailure) as bad:
            await gateway.call(
                CREATE_BADGE,
                pb.CreateBadgeRequest(badge=valid_badge(name="")),
                pb.Badge,
                bearer(org.admin_key),
            )
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in bad.value.violations] == ["badge.name"]

        with pytest.raises(RpcFailure) as reader_writes:
            await gateway.call(
                CREATE_BADGE,
                pb.CreateBadgeRequest(badge=valid_badge(name="reader")),
                pb.Badge,
                bearer(org.reader_key),
            )
        assert reader_writes.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert reader_writes.value.reason == "WRITE_REQUIRES_ADMIN"

        with pytest.raises(RpcFailure) as anonymous:
            await gateway.call(GET_BADGE, pb.GetBadgeRequest(id=created.id), pb.Badge)
        assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(grace=1)
    assert not await asyncio.to_thread(os.path.exists, directory)


async def test_the_gateway_gets_in_under_mtls(backend: Backend, org: Org, tmp_path: Path) -> None:
    ca = Authority.create(tmp_path)
    cert = ca.issue(tmp_path, "server", server=True)
    settings = Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
        tls_cert=str(cert.cert),
        tls_key=str(cert.key),
        tls_client_ca=str(ca.cert_path),
    )
    running = await start(settings)
    try:
        gateway = running.gateway
        assert isinstance(gateway, Gateway)
        with pytest.raises(RpcFailure) as missing:
            await gateway.call(
                GET_BADGE, pb.GetBadgeRequest(id=1), pb.Badge, bearer(org.reader_key)
            )
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        await running.stop(grace=1)
