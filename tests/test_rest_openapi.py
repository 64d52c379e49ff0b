"""The OpenAPI 3.1 document of the transcoded routes (http.rest.openapi): it is a valid
document (openapi-spec-validator), it is what /openapi.json serves, and schemathesis, run
against the live server with an admin key on each database, finds no 5xx answer and no
answer outside its documented status codes, media types and schemas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from badge_service.config import Settings
from badge_service.http.rest import openapi
from badge_service.server import Running, start
from tests.support import Backend, Org

# Examples per operation: bounded so both databases together take well under a minute.
EXAMPLES = {"sqlite": 10, "postgres": 5}
# A stream that ends only when the client leaves cannot be fuzzed request by request; its
# answers are tested in test_rest_transcode.
SKIPPED = {("GET", "/v1/awards:watch")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
async def running(backend: Backend) -> AsyncIterator[Running]:
    settings = Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=backend.url,
        log_level="ERROR",
        migrate_on_start=False,
    )
    server = await start(settings)
    try:
        yield server
    finally:
        await server.stop(grace=1)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    get_badge = doc["paths"]["/v1/badges/{id}"]["get"]
    assert get_badge["operationId"] == "BadgeService_GetBadge"
    assert get_badge["parameters"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"},
        }
    ]
    schemas = doc["components"]["schemas"]
    award = schemas["badges.v1.Award"]["properties"]
    assert award["issuedAt"]["type"] == "string" and award["issuedAt"]["format"] == "date-time"
    assert award["state"]["enum"][0] == "AWARD_STATE_UNSPECIFIED"
    assert award["openBadge"] == {"type": "object", "additionalProperties": True, "readOnly": True}
    list_awards = doc["paths"]["/v1/awards"]["get"]["parameters"]
    names = [p["name"] for p in list_awards]
    assert "recipient.memberId" in names and "revoked" in names
    assert doc["paths"]["/v1/badges/{id}"]["patch"]["parameters"][1]["name"] == ("updateMask")
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey", "basic"}
    assert get_badge["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/google.rpc.Status"
    }


async def test_openapi_json_is_served(running: Running) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{running.http_port}", trust_env=False
    ) as http:
        resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == openapi.document()


async def _resources(base_url: str, org: Org) -> dict[str, dict[str, str]]:
    """One resource of each kind, made over the transcoded routes; their path variables by
    the collection of the path."""
    headers = {"authorization": f"Bearer {org.admin_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            resp = await http.post(path, json=body)
            assert resp.status_code == 200, resp.text
            doc: dict[str, Any] = resp.json()
            return doc

        badge = await post(
            "/v1/badges",
            {
                "name": "fuzzed",
                "title": "Fuzzed",
                "badgeStates": [
                    {"state": "BADGE_STATE_TYPE_UNEARNED", "order": 1},
                    {"state": "BADGE_STATE_TYPE_EARNED", "order": 2},
                ],
            },
        )
        field = await post("/v1/customFields", {"name": "fuzzed", "dataType": "DATA_TYPE_STRING"})
        issuer = await post(
            "/v1/issuers", {"name": "Fuzz", "email": "f@example.com", "url": "https://example.com"}
        )
        bc = await post(
            "/v1/badgeClasses",
            {
                "issuer": issuer["entityId"],
                "name": "Fuzz Class",
                "description": "d",
                "image": "https://example.com/f.png",
                "criteriaNarrative": "c",
            },
        )
        codes = await post(f"/v1/badgeClasses/{bc['entityId']}/claimCodes", {"count": 1})
        template = await post(
            f"/v1/organizations/{org.uuid}/badgeTemplates",
            {"name": "Fuzz Template", "state": "BADGE_TEMPLATE_STATE_ACTIVE"},
        )
        award = await post(
            "/v1/awards",
            {"badgeClassId": bc["entityId"], "recipient": {"email": "a@example.org"}},
        )
    return {
        "badges": {"id": badge["id"], "badge_id": badge["id"]},
        "customFields": {"id": field["id"]},
        "issuers": {"id_or_entity_id": issuer["entityId"]},
        "badgeClasses": {
            "id_or_entity_id": bc["entityId"],
            "claim_code": codes["claimCodes"][0]["code"],
        },
        "organizations": {"organization_id": org.uuid, "id": template["id"]},
        "awards": {"id": award["id"]},
    }


def _fuzz(base_url: str, key: str, examples: int, known: dict[str, dict[str, str]]) -> list[str]:
    """Runs schemathesis over every operation; the failures, one line each. Every other
    example names resources that exist (``known``: path variables by the path's collection),
    so the answers of found resources are checked too, not only 404s."""
    schema = schemathesis.openapi.from_dict(openapi.document())
    failures: list[str] = []
    count = [0]
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation schemathesis cannot load: {result.err()!r}")
            continue
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            count[0] += 1
            real = known.get(case.operation.path.split("/")[2].split(":")[0], {})
            if count[0] % 2 == 0 and case.path_parameters:
                for name in case.path_parameters:
                    if name in real:
                        case.path_parameters[name] = real[name]
            case.call_and_validate(
                base_url=base_url,
                headers={"authorization": f"Bearer {key}", "x-api-key": key},
                checks=CHECKS,
                timeout=30,
            )

        try:
            run()
        except Exception as exc:  # every operation's failures, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    return failures


async def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(
    running: Running, backend: Backend, org: Org
) -> None:
    base_url = f"http://127.0.0.1:{running.http_port}"
    known = await _resources(base_url, org)
    # In a thread: the server answers on this event loop while schemathesis calls it.
    failures = await asyncio.to_thread(
        _fuzz, base_url, org.admin_key, EXAMPLES[backend.name], known
    )
    assert failures == [], "\n\n".join(failures)
