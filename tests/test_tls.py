"""TLS and mTLS on ``badge-service serve`` as a real process, with certificates made at test
time: real grpc channels and grpcurl succeed with the CA (and, under mTLS, a client
certificate) and fail without; a plaintext client is refused on a TLS port; a renewed
certificate is served to new connections after SIGHUP or a change on disk while open
connections go on; bad files and flags exit with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from badge_service.api.badges.v1 import org_meta_pb2, org_meta_pb2_grpc
from tests.certs import Authority, Issued
from tests.test_serve import (
    BIN,
    SERVING,
    START_TIMEOUT,
    ServeProcess,
    free_port,
    json_lines,
    sqlite_url,
)

GRPCURL = BIN.parent / "grpcurl"


@asynccontextmanager
async def tls_serving(
    tmp: Path, *args: str, port: int | None = None
) -> AsyncIterator[ServeProcess]:
    """A started server with ``args`` (TLS flags): it has logged its first health report."""
    server = ServeProcess.spawn(tmp, sqlite_url(tmp), *args, port=port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                pytest.fail(f"serve exited {server.proc.returncode}:\n{server.stderr()}")
            if '"msg": "health"' in server.stderr():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"serve did not start:\n{server.stderr()}")
        yield server
    finally:
        await server.close()


def secure_channel(
    server: ServeProcess, ca: Authority, client: Issued | None = None
) -> grpc.aio.Channel:
    """A TLS channel to the server that trusts ``ca`` (presenting ``client`` if given)."""
    key, cert = client.pem() if client else (None, None)
    creds = grpc.ssl_channel_credentials(ca.pem(), private_key=key, certificate_chain=cert)
    channel = grpc.aio.secure_channel(f"localhost:{server.port}", creds)
    server.channels.append(channel)
    return channel


async def health_status(channel: grpc.aio.Channel) -> int:
    """The overall health status, over ``channel``."""
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    return int(reply.status)


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a health check that must fail (the handshake is refused)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return err.value.code()


def grpcurl(server: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """grpcurl against the server's port."""
    return subprocess.run(
        [str(GRPCURL), *args, f"localhost:{server.port}", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_tls_serves_channels_and_grpcurl_and_refuses_plaintext(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path)
    cert = ca.issue(tmp_path, "server", server=True)
    async with tls_serving(tmp_path, "--tls-cert", str(cert.cert), "--tls-key", str(cert.key)) as s:
        channel = secure_channel(s, ca)
        assert await health_status(channel) == SERVING
        org = s.new_org()
        meta = await org_meta_pb2_grpc.OrgMetaServiceStub(channel).GetOrgMeta(
            org_meta_pb2.GetOrgMetaRequest(),
            metadata=[("authorization", f"Bearer {org['api_key']}")],
        )
        assert meta.org_id == org["org_id"]

        listed = grpcurl(s, "-cacert", str(ca.cert_path))
        assert listed.returncode == 0, listed.stderr
        assert "badges.v1.BadgeService" in listed.stdout.split()
        assert grpcurl(s, "-plaintext").returncode != 0
        # A CA that did not sign the server's certificate is not trusted.
        other = Authority.create(tmp_path, "Other CA")
        assert await refused(secure_channel(s, other)) == grpc.StatusCode.UNAVAILABLE
        insecure = s.channel()
        assert await refused(insecure) == grpc.StatusCode.UNAVAILABLE
        logged = [line for line in json_lines(s.stderr()) if line["msg"] == "listening"]
        assert logged[0]["tls"] == "tls"


async def test_mtls_requires_a_client_certificate_of_the_ca(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path)
    cert = ca.issue(tmp_path, "server", server=True)
    client = ca.issue(tmp_path, "client", server=False)
    stranger = Authority.create(tmp_path, "Stranger CA").issue(tmp_path, "stranger", server=False)
    args = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    async with tls_serving(tmp_path, *args, "--tls-client-ca", str(ca.cert_path)) as s:
        assert await health_status(secure_channel(s, ca, client)) == SERVING
        assert await refused(secure_channel(s, ca)) == grpc.StatusCode.UNAVAILABLE
        assert await refused(secure_channel(s, ca, stranger)) == grpc.StatusCode.UNAVAILABLE
        ok = grpcurl(
            s, "-cacert", str(ca.cert_path), "-cert", str(client.cert), "-key", str(client.key)
        )
        assert ok.returncode == 0, ok.stderr
        assert "grpc.health.v1.Health" in ok.stdout.split()
        assert grpcurl(s, "-cacert", str(ca.cert_path)).returncode != 0
        logged = [line for line in json_lines(s.stderr()) if line["msg"] == "listening"]
        assert logged[0]["tls"] == "mtls"


def replace(issued: Issued, renewed: Issued) -> None:
    """Puts a renewed certificate and key in place of ``issued``'s files, each atomically."""
    for new, old in ((renewed.key, issued.key), (renewed.cert, issued.cert)):
        staged = old.with_suffix(old.suffix + ".new")
        staged.write_bytes(new.read_bytes())
        os.replace(staged, old)


@pytest.mark.parametrize("how", ["sighup", "on change"])
async def test_a_renewed_certificate_is_served_without_dropping_connections(
    tmp_path: Path, how: str
) -> None:
    old_ca = Authority.create(tmp_path, "Old CA")
    new_ca = Authority.create(tmp_path, "New CA")
    live = old_ca.issue(tmp_path, "server", server=True)
    renewed = new_ca.issue(tmp_path, "renewed", server=True)
    async with tls_serving(tmp_path, "--tls-cert", str(live.cert), "--tls-key", str(live.key)) as s:
        before = secure_channel(s, old_ca)
        assert await health_status(before) == SERVING
        replace(live, renewed)
        if how == "sighup":
            s.proc.send_signal(1)  # SIGHUP
        # New connections get the new certificate (once the reload is seen).
        for _ in range(100):
            try:
                if await health_status(secure_channel(s, new_ca)) == SERVING:
                    break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the renewed certificate was never served:\n{s.stderr()}")
        assert await refused(secure_channel(s, old_ca)) == grpc.StatusCode.UNAVAILABLE
        # The connection made before the renewal still works.
        assert await health_status(before) == SERVING
        assert s.proc.poll() is None
        for _ in range(100):  # INFO lines are written in batches
            if "TLS certificate reloaded" in [x["msg"] for x in json_lines(s.stderr())]:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the reload was not logged:\n{s.stderr()}")


def serve_fails(tmp: Path, *args: str) -> str:
    """Runs serve with ``args``; asserts it exits non-zero with one clear line; returns it."""
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp)}
    done = subprocess.run(
        [str(BIN), "serve", "--address", f"127.0.0.1:{free_port()}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_bad_tls_files_and_flags_exit_with_one_line(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path)
    cert = ca.issue(tmp_path, "server", server=True)
    other = ca.issue(tmp_path, "other", server=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    assert str(missing) in serve_fails(
        tmp_path, "--tls-cert", str(missing), "--tls-key", str(cert.key)
    )
    assert str(junk) in serve_fails(tmp_path, "--tls-cert", str(junk), "--tls-key", str(cert.key))
    mismatch = serve_fails(tmp_path, "--tls-cert", str(cert.cert), "--tls-key", str(other.key))
    assert "do not make a usable pair" in mismatch
    assert "go together" in serve_fails(tmp_path, "--tls-cert", str(cert.cert))
    assert "needs --tls-cert" in serve_fails(tmp_path, "--tls-client-ca", str(ca.cert_path))
    bad_ca = serve_fails(
        tmp_path,
        "--tls-cert",
        str(cert.cert),
        "--tls-key",
        str(cert.key),
        "--tls-client-ca",
        str(junk),
    )
    assert str(junk) in bad_ca


async def test_plaintext_beyond_loopback_warns_once(tmp_path: Path) -> None:
    port = free_port()
    # ServeProcess binds 127.0.0.1; this one binds every interface.
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp_path)}
    log = tmp_path / "wide.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            str(BIN), "serve", "--address", f"0.0.0.0:{port}", env=env, stderr=err
        )
    try:
        for _ in range(400):
            if '"msg": "health"' in log.read_text():
                break
            await asyncio.sleep(0.05)
        warnings = [line for line in json_lines(log.read_text()) if line["level"] == "warning"]
        assert [w["msg"] for w in warnings] == [
            "serving plaintext on a non-loopback address: credentials and data cross the "
            "network unencrypted; use --tls-cert and --tls-key"
        ]
    finally:
        proc.kill()
        await proc.wait()
    async with tls_serving(tmp_path) as local:  # loopback: no warning
        assert [x for x in json_lines(local.stderr()) if x["level"] == "warning"] == []
