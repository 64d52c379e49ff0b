"""The API key lifecycle: ``keys create --expires-in``, ``keys list``, ``keys revoke`` and
``keys rotate`` through the real CLI; revocation, rotation and expiry reaching every serving
process of one database without a restart; no part of a secret stored in clear; unknown keys
refused without flooding the database; repeated UNAUTHENTICATED calls summarised in the log.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from badge_service.api.badges.v1 import org_meta_pb2
from badge_service.domain.auth import KEY_PREFIX, Role, key_id_of, new_api_key
from badge_service.store import keys
from badge_service.store.models import api_keys
from tests.support import Backend, Org, details_of, own_database_url
from tests.test_serve import BIN, GRACE, ServeProcess, json_lines, serving

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own on each backend."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


def cli(url: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``badge-service ARGS`` on the database; asserts it succeeded (or, with ok=False,
    that it failed with one ``error:`` line and no traceback)."""
    done = subprocess.run(
        [str(BIN), *args],
        env={**os.environ, "BADGE_SERVICE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr, done.stderr
        assert [line for line in done.stderr.splitlines() if line] == [done.stderr.strip()], (
            done.stderr
        )
        assert done.stderr.startswith("error: "), done.stderr
    return done


def cli_json(url: str, *args: str) -> Any:
    """A CLI command's --json output."""
    return json.loads(cli(url, *args, "--json").stdout)


def when(text: str) -> dt.datetime:
    """A listing's ISO time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_cli_lifecycle(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    org = cli_json(url, "orgs", "create", "Acme")
    admin = org["api_key"]
    assert admin.startswith(f"bsk_{org['key_id']}_")
    made = cli_json(
        url,
        "keys",
        "create",
        "--org",
        str(org["org_id"]),
        "--role",
        "reader",
        "--expires-in",
        "90d",
    )
    assert (made["role"], made["state"], made["prefix"]) == (
        "reader",
        "active",
        f"bsk_{made['key_id']}_",
    )
    left = when(made["expires"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=89, hours=23) < left <= dt.timedelta(days=90)

    listed = cli_json(url, "keys", "list", "--org", str(org["org_id"]))
    assert [(k["key_id"], k["role"], k["state"]) for k in listed] == [
        (org["key_id"], "admin", "active"),
        (made["key_id"], "reader", "active"),
    ]
    assert set(listed[0]) >= {"key_id", "role", "prefix", "created", "last_used", "expires"}
    text = cli(url, "keys", "list", "--org", str(org["org_id"])).stdout
    assert text.splitlines()[0].split() == [
        "key_id",
        "role",
        "prefix",
        "created",
        "last_used",
        "expires",
        "state",
    ]
    for secret in (admin, made["api_key"]):
        assert secret not in text and secret[-20:] not in json.dumps(listed)

    rotated = cli_json(url, "keys", "rotate", str(org["key_id"]), "--grace", "1h")
    assert rotated["role"] == "admin" and rotated["api_key"] != admin
    old = rotated["replaces"]
    assert (old["key_id"], old["state"], old["rotated_to"]) == (
        org["key_id"],
        "rotated",
        rotated["key_id"],
    )
    grace = when(old["expires"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < grace <= dt.timedelta(hours=1)

    revoked = cli_json(url, "keys", "revoke", str(made["key_id"]))
    assert revoked["state"] == "revoked"

    # Bad input: one line, non-zero.
    assert "already revoked" in cli(url, "keys", "revoke", str(made["key_id"]), ok=False).stderr
    assert "not found" in cli(url, "keys", "revoke", "999", ok=False).stderr
    assert "not found" in cli(url, "keys", "list", "--org", "999", ok=False).stderr
    assert "not found" in cli(url, "keys", "create", "--org", "999", ok=False).stderr
    assert "revoked" in cli(url, "keys", "rotate", str(made["key_id"]), ok=False).stderr
    bad = cli(url, "keys", "create", "--org", "1", "--expires-in", "9x", ok=False)
    assert "--expires-in" in bad.stderr
    assert "invalid int" in cli(url, "keys", "revoke", "one", ok=False).stderr


async def test_no_part_of_a_secret_is_stored(backend: Backend, org: Org) -> None:
    engine = create_async_engine(backend.url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(api_keys))).all()
    finally:
        await engine.dispose()
    stored = json.dumps([[str(v) for v in r] for r in rows])
    for key in (org.admin_key, org.reader_key):
        secret = key.split("_", 2)[2]
        pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
        assert not [p for p in pieces if p in stored], key
        (row,) = [r for r in rows if r.id == key_id_of(key)]
        assert row.key_prefix == f"bsk_{row.id}_"


async def call_with(server: ServeProcess, key: str) -> grpc.StatusCode | str:
    """OK, or the reason of the UNAUTHENTICATED failure."""
    try:
        await server.client(key).meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest(), timeout=10)
    except grpc.aio.AioRpcError as err:
        got = details_of(err)
        assert got.code == UNAUTHENTICATED, got
        assert got.info is not None
        return got.info.reason
    return grpc.StatusCode.OK


async def until(servers: list[ServeProcess], key: str, want: str) -> None:
    """Waits (at most 20 s) until every server refuses ``key`` with reason ``want``."""
    for _ in range(400):
        got = [await call_with(s, key) for s in servers]
        if got == [want] * len(servers):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {got}, wanted {want} everywhere")


async def test_revocation_rotation_and_expiry_reach_every_process(
    tmp_path: Path, database_url: str
) -> None:
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(serving(tmp_path, database_url)) for _ in range(2)
        ]
        org = servers[0].new_org()
        url, org_id = database_url, str(org["org_id"])
        doomed = cli_json(url, "keys", "create", "--org", org_id)["api_key"]
        old = cli_json(url, "keys", "create", "--org", org_id)
        for s in servers:  # new keys work at once, on every process
            for key in (doomed, old["api_key"]):
                assert await call_with(s, key) == grpc.StatusCode.OK

        cli(url, "keys", "revoke", str(key_id_of(doomed)))
        await until(servers, doomed, "API_KEY_REVOKED")

        # Long enough for the checks within it on a busy machine; the waits below are short.
        rotated = cli_json(url, "keys", "rotate", str(old["key_id"]), "--grace", "8s")
        short = cli_json(url, "keys", "create", "--org", org_id, "--expires-in", "8s")["api_key"]
        for s in servers:
            assert await call_with(s, rotated["api_key"]) == grpc.StatusCode.OK
            assert await call_with(s, old["api_key"]) == grpc.StatusCode.OK  # in its grace
            assert await call_with(s, short) == grpc.StatusCode.OK
        await until(servers, old["api_key"], "API_KEY_EXPIRED")
        await until(servers, short, "API_KEY_EXPIRED")
        for s in servers:
            assert await call_with(s, rotated["api_key"]) == grpc.StatusCode.OK
            code, _ = await asyncio.to_thread(s.signal_and_wait, signal.SIGTERM, GRACE + 10)
            assert code == 0

    # Last use is written as the servers stop.
    listed = {k["key_id"]: k for k in cli_json(url, "keys", "list", "--org", org_id)}
    used = listed[rotated["key_id"]]["last_used"]
    assert used is not None
    assert dt.datetime.now(dt.UTC) - when(used) < dt.timedelta(minutes=5)


async def test_unknown_keys_are_refused_without_flooding_the_database(
    backend: Backend, org: Org
) -> None:
    auth = backend.running.auth

    def stub(key: str) -> Any:
        return backend.client([("authorization", f"Bearer {key}")]).meta

    known_id = key_id_of(org.admin_key)
    assert known_id is not None
    await stub(org.admin_key).GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())  # known from here
    before = auth.lookups
    # A known id with another secret: refused from memory.
    for _ in range(50):
        wrong = f"bsk_{known_id}_{secrets.token_urlsafe(32)}"
        got = details_of(await _failure(stub(wrong).GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())))
        assert got.info is not None and got.info.reason == "INVALID_API_KEY"
    assert auth.lookups == before
    # Keys that cannot exist: ids far above any loaded, keys of the older shape (no longer
    # made, all loaded): refused from memory too.
    hopeless = [new_api_key(10**12 + i) for i in range(200)]
    hopeless += [KEY_PREFIX + secrets.token_urlsafe(32) for _ in range(200)]
    await asyncio.gather(
        *(_failure(stub(key).GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())) for key in hopeless)
    )
    assert auth.lookups == before
    # Ids just above the highest loaded may be keys made since the last reload: looked up, at
    # most lookups_per_second (100) a second, however many come.
    began = time.monotonic()
    top = auth._max_id
    maybe = [new_api_key(top + 1 + i) for i in range(800)]
    await asyncio.gather(
        *(_failure(stub(key).GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())) for key in maybe)
    )
    elapsed = time.monotonic() - began
    assert 0 < auth.lookups - before <= 100 * (elapsed + 1), (auth.lookups - before, elapsed)
    # A key created a moment ago (before any reload) still works: it is looked up.
    async with backend.db.write() as conn:
        _, fresh = await conn.run_sync(
            keys.create_key, org.id, Role.READER, dt.datetime.now(dt.UTC)
        )
    await asyncio.sleep(1.1)  # the lookup budget refills
    reply = await stub(fresh).GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())
    assert reply.org_id == org.id


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == UNAUTHENTICATED, err
        return err
    raise AssertionError("a bad key was accepted")


async def test_an_unauthenticated_flood_is_summarised_in_the_log(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}"
    async with serving(tmp_path, url) as server:
        org = server.new_org()
        good = server.client(org["api_key"]).meta
        for i in range(300):
            bad = server.client(new_api_key(10**12 + i)).meta
            await _failure(bad.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest()))
            if i % 100 == 0:
                await good.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, GRACE + 10)
        assert code == 0
    lines = json_lines(server.stderr())
    refused = [x for x in lines if x.get("msg") == "rpc" and x["status"] == "UNAUTHENTICATED"]
    summaries = [x for x in lines if x["msg"] == "unauthenticated calls not logged one by one"]
    served = [x for x in lines if x.get("msg") == "rpc" and x["status"] == "OK"]
    assert len(served) == 3  # a legitimate caller's lines are all there
    assert len(refused) + sum(s["count"] for s in summaries) == 300
    assert len(refused) <= 2 and summaries, (len(refused), summaries)
    assert list(summaries[-1]["top_peers"]) == ["ipv4:127.0.0.1"]
