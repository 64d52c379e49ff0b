"""The ``badge-service`` console script, run as a subprocess on a real database: organisations,
API keys (usable against a server, stored only as hashes), migrate and errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from badge_service.api.badges.v1 import common_pb2, org_meta_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.config import Settings
from badge_service.server import start
from badge_service.store.db import Database
from tests.support import Client, expect_error, own_database_url

BIN = Path(sys.executable).parent / "badge-service"


@dataclass
class Db:
    """A fresh database for the CLI: its URL, and the SQLite file when it is one."""

    kind: str
    url: str
    path: Path | None


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    async with own_database_url(request.param, tmp_path) as url:
        path = tmp_path / "own.db" if request.param == "sqlite" else None
        yield Db(request.param, url, path)


def cli(db: Db, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script with the database in the environment."""
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": db.url}
    result = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    return result


def test_the_console_script_is_installed() -> None:
    assert BIN.exists(), f"{BIN} is missing: pip install -e . (make install)"


def test_orgs_create_prints_the_org_and_an_admin_key(db: Db) -> None:
    out = cli(db, "orgs", "create", "Acme").stdout
    org_id = re.search(r"^org_id:\s+(\d+)$", out, re.MULTILINE)
    org_uuid = re.search(r"^org_uuid:\s+(\S+)$", out, re.MULTILINE)
    key = re.search(r"^api_key:\s+(bsk_\S+)\s+\(role admin;", out, re.MULTILINE)
    assert org_id and org_uuid and key, out
    assert re.search(r"^name:\s+Acme$", out, re.MULTILINE), out
    assert str(uuid.UUID(org_uuid.group(1))) == org_uuid.group(1)
    assert len(key.group(1)) >= 40

    listed = cli(db, "orgs", "list").stdout.splitlines()
    assert listed == [f"{org_id.group(1)}\t{org_uuid.group(1)}\tAcme"]


def test_json_output_and_reader_keys(db: Db) -> None:
    first = json.loads(cli(db, "orgs", "create", "Acme", "--json").stdout)
    assert set(first) == {"org_id", "org_uuid", "name", "key_id", "role", "api_key"}
    assert first["name"] == "Acme" and first["role"] == "admin"
    assert isinstance(first["org_id"], int) and isinstance(first["key_id"], int)
    assert first["api_key"].startswith("bsk_")
    second = json.loads(cli(db, "orgs", "create", "Beta Ltd", "--json").stdout)
    assert second["org_id"] != first["org_id"]
    assert second["api_key"] != first["api_key"]

    reader = json.loads(
        cli(
            db, "keys", "create", "--org", str(first["org_id"]), "--role", "reader", "--json"
        ).stdout
    )
    assert reader["org_id"] == first["org_id"]
    assert reader["role"] == "reader"
    assert reader["key_id"] not in (first["key_id"], second["key_id"])
    assert reader["api_key"].startswith("bsk_")
    assert reader["api_key"] not in (first["api_key"], second["api_key"])

    listed = json.loads(cli(db, "orgs", "list", "--json").stdout)
    assert listed == [
        {"org_id": first["org_id"], "org_uuid": first["org_uuid"], "name": "Acme"},
        {"org_id": second["org_id"], "org_uuid": second["org_uuid"], "name": "Beta Ltd"},
    ]


def test_keys_create_for_an_unknown_org_fails_clearly(db: Db) -> None:
    cli(db, "migrate")
    result = cli(db, "keys", "create", "--org", "424242", "--json", check=False)
    assert result.returncode == 1
    assert result.stdout == ""  # no key is shown for an org that does not exist
    assert result.stderr.strip() == "error: organisation 424242 not found"
    assert "Traceback" not in result.stderr


def test_keys_create_rejects_an_unknown_role(db: Db) -> None:
    result = cli(db, "keys", "create", "--org", "1", "--role", "owner", check=False)
    assert result.returncode == 2
    assert "invalid choice: 'owner'" in result.stderr
    assert result.stdout == ""


async def test_migrate_creates_the_schema(db: Db) -> None:
    result = cli(db, "migrate")
    assert result.stdout.startswith("migrated ")
    again = cli(db, "migrate")  # idempotent
    assert again.stdout == result.stdout
    database = Database(db.url)
    try:
        async with database.read() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            orgs = (await conn.execute(text("SELECT count(*) FROM orgs"))).scalar_one()
    finally:
        await database.close()
    assert len(version) == 1 and version[0][0]
    assert orgs == 0


async def test_cli_keys_work_against_a_server(db: Db) -> None:
    admin = json.loads(cli(db, "orgs", "create", "Acme", "--json").stdout)
    org_id = admin["org_id"]
    reader = json.loads(
        cli(db, "keys", "create", "--org", str(org_id), "--role", "reader", "--json").stdout
    )
    running = await start(Settings(address="127.0.0.1:0", database_url=db.url, log_level="ERROR"))
    clients: list[Client] = []

    def client(metadata: list[tuple[str, str]]) -> Client:
        c = Client.connect(running.port, metadata)
        clients.append(c)
        return c

    try:
        as_admin = client([("authorization", f"Bearer {admin['api_key']}")])
        as_reader = client([("x-api-key", reader["api_key"])])
        meta = await as_admin.meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())
        assert meta.org_id == org_id
        meta = await as_reader.meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest())
        assert meta.org_id == org_id
        created = await as_admin.fields.CreateCustomField(
            cf.CreateCustomFieldRequest(
                custom_field=cf.CustomField(name="Size", data_type=common_pb2.DATA_TYPE_STRING)
            )
        )
        assert created.org_id == org_id
        assert created.created_by == admin["key_id"]
        await expect_error(
            as_reader.fields.CreateCustomField(
                cf.CreateCustomFieldRequest(
                    custom_field=cf.CustomField(name="Y", data_type=common_pb2.DATA_TYPE_STRING)
                )
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            reason="WRITE_REQUIRES_ADMIN",
        )
        # Basic auth carries ORG_ID:KEY, as Capillary's does; another org id is refused.
        basic = _basic(org_id, admin["api_key"])
        got = await client([("authorization", basic)]).fields.GetCustomField(
            cf.GetCustomFieldRequest(id=created.id)
        )
        assert got.name == "Size"
        await expect_error(
            client([("authorization", _basic(org_id + 1, admin["api_key"]))]).meta.GetOrgMeta(
                org_meta_pb2.GetOrgMetaRequest()
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            reason="INVALID_API_KEY",
        )
    finally:
        for c in clients:
            await c.channel.close()
        await running.stop(grace=1)


def _basic(org_id: int, key: str) -> str:
    return "Basic " + base64.b64encode(f"{org_id}:{key}".encode()).decode()


async def test_keys_are_stored_only_as_hashes(db: Db) -> None:
    admin = json.loads(cli(db, "orgs", "create", "Acme", "--json").stdout)
    reader = json.loads(
        cli(
            db, "keys", "create", "--org", str(admin["org_id"]), "--role", "reader", "--json"
        ).stdout
    )
    keys = [admin["api_key"], reader["api_key"]]
    digests = [hashlib.sha256(k.encode()).hexdigest() for k in keys]
    if db.path is not None:
        # Every byte SQLite wrote (the main file and any WAL left behind).
        raw = b"".join(p.read_bytes() for p in sorted(db.path.parent.glob(db.path.name + "*")))
        for key, digest in zip(keys, digests, strict=True):
            assert digest.encode() in raw  # the right file: the hash is there
            assert key.encode() not in raw
        with sqlite3.connect(db.path) as conn:
            rows = conn.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
    else:
        database = Database(db.url)
        try:
            async with database.read() as conn:
                rows = [
                    tuple(r)
                    for r in (await conn.execute(text("SELECT * FROM api_keys ORDER BY id")))
                ]
        finally:
            await database.close()
    assert len(rows) == 2
    for row, key, digest in zip(rows, keys, digests, strict=True):
        assert digest in row
        for value in row:
            assert key not in str(value)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--address", "nonsense"], "is not HOST:PORT"),
        (["serve", "--address", "127.0.0.1:99999"], "is not HOST:PORT"),
        (["serve", "--address", "no-such-host.invalid:50051"], "cannot resolve host"),
        (["serve", "--log-level", "LOUD"], "--log-level"),
        (["serve", "--grace-period", "-1"], "must not be negative"),
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--public-base-url", "notaurl"], "public base URL"),
        (["serve", "--log-format", "xml"], "--log-format"),
        (["serve", "--database-url", "bogus://x"], "unsupported database driver"),
        (["orgs", "create"], "required: name"),
        (["keys", "create", "--org", "abc"], "invalid int value"),
        (["keys", "list", "--org", "5"], "organisation 5 not found"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_exits_with_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    done = subprocess.run(
        [str(BIN), *args],
        env={
            **os.environ,
            "BADGE_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert says in lines[0], lines[0]


def test_an_address_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(BIN), "serve", "--address", f"127.0.0.1:{port}"],
            env={
                **os.environ,
                "BADGE_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: the address is in use"
