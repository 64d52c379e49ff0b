"""The contract and everything generated from it stay in step: generated code, the REST mapping
document, buf lint, http annotations on every RPC, and migrations against the models."""

from __future__ import annotations

import difflib
import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from sqlalchemy.engine import Connection

from badge_service.store.db import Database
from badge_service.store.migrate import upgrade
from badge_service.store.models import metadata
from tests.support import own_database_url

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "src" / "badge_service" / "api"
MAPPING = ROOT / "docs" / "rest-mapping.md"
OPENAPI = ROOT / "docs" / "openapi.json"
BUF = ROOT / "node_modules" / ".bin" / "buf"
SEED_SERVICES = {
    "badges.v1.OrgMetaService",
    "badges.v1.CustomFieldService",
    "badges.v1.BadgeService",
}


def _load_tool(name: str) -> ModuleType:
    """Imports tools/<name>.py (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mapping_tool() -> ModuleType:
    return _load_tool("gen_rest_mapping")


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".py", ".pyi", ".binpb")
    }


def test_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "api"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--out", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    fresh, committed = _generated_files(out), _generated_files(API)
    assert len(fresh) >= 8, f"gen_protos.py produced only {sorted(fresh)}"
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    stale = sorted(name for name in set(fresh) & set(committed) if fresh[name] != committed[name])
    assert not missing, f"src/badge_service/api lacks {missing}: run make protos"
    assert not extra, f"src/badge_service/api has files no proto generates {extra}: run make protos"
    assert not stale, f"src/badge_service/api/{stale[0]} is stale (of {stale}): run make protos"


def assert_current(path: Path, expected: str) -> None:
    """Fails, with the start of the diff, unless the generated file ``path`` (relative to the
    repository) holds ``expected``."""
    current = path.read_text() if path.exists() else ""
    if current != expected:
        name = str(path.relative_to(ROOT))
        lines = difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True), name, "generated"
        )
        pytest.fail(f"{name} is stale: run make docs\n{''.join(list(lines)[:40])}")


def test_rest_mapping_is_current(mapping_tool: ModuleType) -> None:
    assert_current(MAPPING, mapping_tool.render())


def test_openapi_document_is_current() -> None:
    from badge_service.http.rest import openapi

    assert_current(OPENAPI, openapi.render())


def test_rest_mapping_is_deterministic(mapping_tool: ModuleType) -> None:
    assert mapping_tool.render() == mapping_tool.render()


def test_buf_lint_passes() -> None:
    if not BUF.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{BUF} is missing on CI: run npm ci (make dev)")
        pytest.skip(f"{BUF} is missing: run npm ci (make dev) to lint the contract")
    result = subprocess.run(
        [str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"


def test_buf_builds_from_protos_and_third_party_alone(tmp_path: Path) -> None:
    if not BUF.exists():
        pytest.skip(f"{BUF} is missing: run make dev")
    out = tmp_path / "image.binpb"
    result = subprocess.run(
        [str(BUF), "build", "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"buf build failed:\n{result.stdout}{result.stderr}"
    image = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    names = {f.name for f in image.file}
    assert {"badges/v1/award.proto", "google/rpc/error_details.proto"} <= names
    assert "grpc/health/v1/health.proto" in names


def test_a_client_generates_from_protos_and_third_party_alone(tmp_path: Path) -> None:
    """What a client in another language does: protoc with protos/ and third_party/ as its
    only include paths (plus the well-known types every protoc has) over the contract, the
    error details and the health protocol."""
    from grpc_tools import protoc

    wkt = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    out = tmp_path / "set.binpb"
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{ROOT / 'third_party' / 'googleapis'}",
        f"-I{ROOT / 'third_party' / 'grpc'}",
        f"-I{wkt}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *files,
        "google/rpc/error_details.proto",
        "grpc/health/v1/health.proto",
    ]
    assert protoc.main(args) == 0
    assert out.read_bytes() == (API / "descriptor_set.binpb").read_bytes()


def test_vendored_health_proto_is_the_served_protocol(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2

    committed = descriptor_pb2.FileDescriptorSet.FromString(
        (API / "descriptor_set.binpb").read_bytes()
    )
    (ours,) = [f for f in committed.file if f.name == "grpc/health/v1/health.proto"]
    served = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(served)
    served.name = ours.name  # the package files it under grpc_health/
    # protoc fills in json_name in a descriptor set; a module's descriptor leaves it out.
    stack = list(ours.message_type)
    while stack:
        message = stack.pop()
        for field in message.field:
            field.ClearField("json_name")
        stack.extend(message.nested_type)
    assert ours == served


def test_the_descriptor_set_serves_grpcurl_without_reflection() -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    result = subprocess.run(
        [str(grpcurl), "-protoset", str(API / "descriptor_set.binpb"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert {"badges.v1.AwardService", "grpc.health.v1.Health"} <= listed


def test_every_rpc_has_an_http_annotation(mapping_tool: ModuleType) -> None:
    services = mapping_tool.services()
    assert SEED_SERVICES <= {s.full_name for s in services}
    unannotated = [
        f"/{s.full_name}/{m.name}"
        for s in services
        for m in s.methods
        if m.GetOptions().Extensions[annotations_pb2.http].WhichOneof("pattern") is None
    ]
    assert unannotated == []


def test_services_served_are_the_contract(mapping_tool: ModuleType) -> None:
    from badge_service.server import SERVICES

    assert {s.full_name for s in SERVICES} == {s.full_name for s in mapping_tool.services()}


def test_seed_paths_are_mapped(mapping_tool: ModuleType) -> None:
    routes = {
        (route.verb, route.path): f"/{s.full_name}/{m.name}"
        for s in mapping_tool.services()
        for m in s.methods
        for route in mapping_tool.routes(m)
    }
    seeds = {
        ("GET", "/api_gateway/v1/badges/orgMeta"): "/badges.v1.OrgMetaService/GetOrgMeta",
        ("POST", "/api_gateway/v1/badges/customField"): (
            "/badges.v1.CustomFieldService/CreateCustomField"
        ),
        ("GET", "/v2.1/badges"): "/badges.v1.BadgeService/ListBadges",
    }
    for (verb, path), method in seeds.items():
        assert routes.get((verb, path)) == method, (verb, path)
    text = MAPPING.read_text()
    for (verb, path), method in seeds.items():
        assert f"| {verb} | `{path}` | `{method}` |" in text, (verb, path)


def test_rest_mapping_fields(mapping_tool: ModuleType) -> None:
    # The field split a transcoder applies: path, then body, the rest from the query.
    by_method = {
        f"{s.name}/{m.name}": (m, mapping_tool.routes(m)[0])
        for s in mapping_tool.services()
        for m in s.methods
    }
    m, route = by_method["CustomFieldService/UpdateCustomField"]
    assert (route.verb, route.body) == ("PATCH", "custom_field")
    assert mapping_tool.path_fields(route) == ["custom_field.id"]
    assert mapping_tool.query_fields(m, route) == ["update_mask"]
    m, route = by_method["BadgeService/ListBadges"]
    assert mapping_tool.path_fields(route) == []
    assert mapping_tool.query_fields(m, route)[:3] == ["page", "page_size", "page_token"]
    m, route = by_method["BadgeService/GetBadge"]
    assert (mapping_tool.path_fields(route), mapping_tool.query_fields(m, route)) == (["id"], [])


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with own_database_url(request.param, tmp_path) as url:
        yield url


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_migrations_match_models(fresh_url: str) -> None:
    db = Database(fresh_url)
    try:
        await upgrade(db)
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            tables = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    finally:
        await db.close()
    assert set(metadata.tables) <= tables
    assert diff == [], f"migrations differ from store/models.py: {diff}"


def test_readme_protoc_line_builds_the_committed_set(tmp_path: Path) -> None:
    """README's client protoc command, run as written (grpc_tools' protoc stands in for
    protoc, with the well-known types every protoc has), gives the committed descriptor set."""
    from grpc_tools import protoc

    from tests.test_readme import block_starting

    (line,) = [x for x in block_starting("protoc ").splitlines() if x.startswith("protoc ")]
    argv = line.split()
    wkt = Path(protoc.__file__).parent / "_proto"
    out = tmp_path / "badges.binpb"
    args = [a.replace("=badges.binpb", f"={out}") for a in argv[1:]]
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        assert protoc.main(["protoc", *args, f"-I{wkt}"]) == 0
    finally:
        os.chdir(cwd)
    assert out.read_bytes() == (API / "descriptor_set.binpb").read_bytes()
