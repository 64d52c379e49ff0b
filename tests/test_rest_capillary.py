"""Capillary's REST paths (seeds 000 and 002) over the HTTP face, on each database: the
``{data, errors, warnings}`` envelope, the seeds' spellings and example bodies as written,
error codes 740/741/742/744, the ways to pass a key, roles and tenancy; each answer compared
with the gRPC reply of the same operation."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.api.badges.v1 import org_meta_pb2 as om
from tests.rest_face import Face, face_of
from tests.support import Backend, Org

ORG_META = "/api_gateway/v1/badges/orgMeta"
CUSTOM_FIELD = "/api_gateway/v1/badges/customField"
HEX24 = re.compile(r"^[0-9a-f]{24}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# Seed 002's example request body, as written there.
SEED_CUSTOM_FIELD = """
{
"name": "CF20 dates",
"isMandatory": false,
"defaultValue": "0",
"dataType": "STRING"
}
"""
# Seed 002's example response: its keys, in its order.
SEED_CUSTOM_FIELD_KEYS = [
    "id",
    "orgId",
    "name",
    "isMandatory",
    "defaultValue",
    "isActive",
    "dataType",
    "createdOn",
    "createdOnISO",
    "createdBy",
    "lastUpdatedOn",
    "lastUpdatedOnISO",
    "lastUpdatedBy",
]
# Seed 000's example response's data, as written there (a client may PUT back what it got).
SEED_ORG_META = """
{
    "id": "652fe2452aa6a339209b359f",
    "orgId": 100458,
    "tags": [
        {
            "key": "custom field 1",
            "dataType": "string",
            "description": "TEST",
            "mandatory": true
        }
    ],
    "createdOn": 1697636933.720000000,
    "createdBy": 75078478,
    "lastUpdatedOn": 1697636933.720000000,
    "lastUpdatedBy": 75078478
}
"""


@pytest.fixture(scope="module")
async def face(backend: Backend) -> AsyncIterator[Face]:
    """A server with the HTTP face on, on the session's database, and an HTTP client."""
    async with face_of(backend) as started:
        yield started


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def basic(org: Org, key: str) -> dict[str, str]:
    """Capillary's Basic authentication: base64(ORG_ID:KEY)."""
    token = base64.b64encode(f"{org.id}:{key}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def epoch(seconds: float, ts: Any) -> bool:
    """Whether Capillary's epoch-seconds float is the Timestamp (to the microsecond)."""
    return abs(seconds - (ts.seconds + ts.nanos / 1e9)) < 1e-6


def error(code: int, message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"code": code, "message": message}], "warnings": []}


# The headers of seed 002's example curl.
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


async def test_org_meta_get_and_put(face: Face, org: Org) -> None:
    http = face.http
    got = await http.get(ORG_META, headers=basic(org, org.reader_key))
    assert got.status_code == 200
    doc = got.json()
    assert list(doc) == ["data", "errors", "warnings"]
    assert doc["errors"] is None and doc["warnings"] is None
    grpc_meta = await org.reader.meta.GetOrgMeta(om.GetOrgMetaRequest())
    data = doc["data"]
    assert list(data) == [
        "id",
        "orgId",
        "tags",
        "createdOn",
        "createdBy",
        "lastUpdatedOn",
        "lastUpdatedBy",
    ]
    assert data["id"] == grpc_meta.id and HEX24.match(data["id"])
    assert data["orgId"] == org.id == grpc_meta.org_id
    assert data["tags"] == []
    assert epoch(data["createdOn"], grpc_meta.created_on)

    # The seed's object PUT back as it is: its read-only fields are ignored.
    put = await http.put(
        ORG_META, content=SEED_ORG_META, headers={**basic(org, org.admin_key), **JSON_HEADERS}
    )
    assert put.status_code == 200, put.text
    doc = put.json()
    assert doc["errors"] is None and doc["warnings"] is None
    tag = {"key": "custom field 1", "dataType": "string", "description": "TEST", "mandatory": True}
    assert doc["data"]["tags"] == [tag]
    assert doc["data"]["id"] == grpc_meta.id and doc["data"]["orgId"] == org.id
    grpc_meta = await org.reader.meta.GetOrgMeta(om.GetOrgMetaRequest())
    assert [t.data_type for t in grpc_meta.tags] == [common_pb2.DATA_TYPE_STRING]
    assert doc["data"]["lastUpdatedBy"] == grpc_meta.last_updated_by != 0
    assert epoch(doc["data"]["lastUpdatedOn"], grpc_meta.last_updated_on)
    assert (await http.get(ORG_META, headers=bearer(org.reader_key))).json()["data"] == doc["data"]

    # Upper case is taken too; 0/1 for mandatory; an empty list removes every tag.
    put = await http.put(
        ORG_META,
        json={"tags": [{"key": "Sport", "dataType": "INTEGER", "mandatory": 0}]},
        headers={"x-api-key": org.admin_key},
    )
    assert put.json()["data"]["tags"] == [
        {"key": "Sport", "dataType": "integer", "description": "", "mandatory": False}
    ]
    cleared = await http.put(ORG_META, json={"tags": []}, headers=bearer(org.admin_key))
    assert cleared.status_code == 200 and cleared.json()["data"]["tags"] == []


async def test_org_meta_errors(face: Face, org: Org) -> None:
    http = face.http
    # A repeated key is the RPC's error, in the envelope with its HTTP status.
    twice = {"key": "a", "dataType": "STRING"}
    bad = await http.put(ORG_META, json={"tags": [twice, twice]}, headers=bearer(org.admin_key))
    assert bad.status_code == 400
    assert bad.json()["data"] is None and bad.json()["errors"][0]["code"] == 400
    # An unknown data type is refused by the RPC, naming the tag.
    odd = await http.put(
        ORG_META, json={"tags": [{"key": "a", "dataType": "FLOAT"}]}, headers=bearer(org.admin_key)
    )
    assert odd.status_code == 400
    assert "org_meta.tags[0].data_type" in odd.json()["errors"][0]["message"]
    reader = await http.put(ORG_META, json={"tags": []}, headers=bearer(org.reader_key))
    assert reader.status_code == 403 and reader.json()["errors"][0]["code"] == 403
    anonymous = await http.get(ORG_META)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.json()["errors"][0]["code"] == 401
    garbage = await http.put(ORG_META, content=b"{not json", headers=bearer(org.admin_key))
    assert garbage.status_code == 400
    assert garbage.json() == error(400, "the body is not JSON")


async def test_custom_field_crud(face: Face, org: Org, other_org: Org) -> None:
    http = face.http
    admin = basic(org, org.admin_key)
    created = await http.post(
        CUSTOM_FIELD, content=SEED_CUSTOM_FIELD, headers={**admin, **JSON_HEADERS}
    )
    assert created.status_code == 200, created.text
    doc = created.json()
    assert list(doc) == ["data", "errors", "warnings"]
    assert doc["errors"] == [] and doc["warnings"] == []
    data = doc["data"]
    assert list(data) == SEED_CUSTOM_FIELD_KEYS
    grpc_field = await org.reader.fields.GetCustomField(cf.GetCustomFieldRequest(id=data["id"]))
    assert HEX24.match(data["id"])
    assert {k: data[k] for k in SEED_CUSTOM_FIELD_KEYS[1:7]} == {
        "orgId": org.id,
        "name": "CF20 dates",
        "isMandatory": False,
        "defaultValue": "0",
        "isActive": True,
        "dataType": "STRING",
    }
    assert ISO.match(data["createdOnISO"]) and data["createdOnISO"] == grpc_field.created_on_iso
    assert data["lastUpdatedOnISO"] == grpc_field.last_updated_on_iso
    assert epoch(data["createdOn"], grpc_field.created_on)
    assert epoch(data["lastUpdatedOn"], grpc_field.last_updated_on)
    created_on = dt.datetime.fromtimestamp(data["createdOn"], dt.UTC)
    assert created_on.strftime("%Y-%m-%dT%H:%M:%SZ") == data["createdOnISO"]
    assert data["createdBy"] == data["lastUpdatedBy"] == grpc_field.created_by != 0

    path = f"{CUSTOM_FIELD}/{data['id']}"
    got = await http.get(path, headers={"x-api-key": org.reader_key})
    assert got.status_code == 200 and got.json() == doc
    listed = await http.get(CUSTOM_FIELD, headers=bearer(org.reader_key))
    assert listed.status_code == 200
    assert listed.json() == {"data": [data], "errors": [], "warnings": []}

    # Only the keys sent change; Capillary's loose forms (0/1, a number) are taken.
    patched = await http.patch(
        path,
        json={"dataType": "integer", "defaultValue": 7, "isMandatory": 1},
        headers=bearer(org.admin_key),
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()["data"]
    assert (changed["name"], changed["dataType"], changed["defaultValue"]) == (
        "CF20 dates",
        "INTEGER",
        "7",
    )
    assert changed["isMandatory"] is True
    assert changed["createdOnISO"] == data["createdOnISO"]
    put = await http.put(path, json={"isActive": False}, headers=bearer(org.admin_key))
    assert put.json()["data"]["isActive"] is False
    assert put.json()["data"]["isMandatory"] is True

    # Another organisation's field is missing to it.
    theirs = await http.get(path, headers=bearer(other_org.admin_key))
    assert theirs.status_code == 404 and theirs.json()["errors"][0]["code"] == 404
    their_delete = await http.delete(path, headers=bearer(other_org.admin_key))
    assert their_delete.status_code == 404
    assert (await http.get(CUSTOM_FIELD, headers=bearer(other_org.reader_key))).json()["data"] == []

    reader = await http.delete(path, headers=bearer(org.reader_key))
    assert reader.status_code == 403
    deleted = await http.delete(path, headers=admin)
    assert deleted.status_code == 200
    assert deleted.json() == {"data": None, "errors": [], "warnings": []}
    gone = await http.get(path, headers=bearer(org.reader_key))
    assert gone.status_code == 404
    assert gone.json()["data"] is None and gone.json()["errors"][0]["code"] == 404


async def test_custom_field_error_codes(face: Face, org: Org) -> None:
    http = face.http
    admin = bearer(org.admin_key)
    first = await http.post(CUSTOM_FIELD, content=SEED_CUSTOM_FIELD, headers=admin)
    assert first.status_code == 200

    async def code_of(body: dict[str, Any]) -> tuple[int, int, str]:
        reply = await http.post(CUSTOM_FIELD, json=body, headers=admin)
        doc = reply.json()
        assert doc["data"] is None and doc["warnings"] == [] and len(doc["errors"]) == 1
        assert list(doc["errors"][0]) == ["code", "message"]
        return reply.status_code, doc["errors"][0]["code"], doc["errors"][0]["message"]

    # 740: the name is taken (case sensitive: another case is a new field).
    duplicate = await code_of({"name": "CF20 dates", "dataType": "STRING"})
    assert duplicate[:2] == (400, 740)
    assert "CF20 dates" in duplicate[2]
    other_case = await http.post(
        CUSTOM_FIELD, json={"name": "cf20 dates", "dataType": "STRING"}, headers=admin
    )
    assert other_case.status_code == 200
    # 741: no data type, a null one, or one Capillary does not have.
    assert (await code_of({"name": "no type"}))[:2] == (400, 741)
    assert (await code_of({"name": "null type", "dataType": None}))[:2] == (400, 741)
    assert (await code_of({"name": "odd type", "dataType": "FLOAT"}))[:2] == (400, 741)
    # 742: mandatory without a default value.
    no_default = {"name": "m", "dataType": "STRING", "isMandatory": True}
    assert (await code_of(no_default))[:2] == (400, 742)
    # 744: a default value that is not a number for an INTEGER field.
    assert (await code_of({"name": "n", "dataType": "INTEGER", "defaultValue": "abc"}))[:2] == (
        400,
        744,
    )
    # The same rules on update.
    field_id = first.json()["data"]["id"]
    renamed = await http.patch(
        f"{CUSTOM_FIELD}/{field_id}", json={"name": "cf20 dates"}, headers=admin
    )
    assert renamed.status_code == 400 and renamed.json()["errors"][0]["code"] == 740
    # Not a Capillary code: the HTTP status is the code.
    assert (await code_of({"dataType": "STRING"}))[:2] == (400, 400)


async def test_custom_field_keys_and_roles(face: Face, org: Org) -> None:
    http = face.http
    body = {"name": "Keyed", "dataType": "BOOLEAN", "defaultValue": True}
    anonymous = await http.post(CUSTOM_FIELD, json=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["code"] == 401
    wrong = await http.get(CUSTOM_FIELD, headers=basic(org, "bsk_not-a-key"))
    assert wrong.status_code == 401
    # A key of the org under another org id in Basic is refused.
    other_id = {"authorization": "Basic " + base64.b64encode(b"999999:x").decode()}
    assert (await http.get(CUSTOM_FIELD, headers=other_id)).status_code == 401
    reader = await http.post(CUSTOM_FIELD, json=body, headers=basic(org, org.reader_key))
    assert reader.status_code == 403
    assert reader.json()["errors"][0]["code"] == 403
    made = await http.post(CUSTOM_FIELD, json=body, headers=basic(org, org.admin_key))
    assert made.status_code == 200 and made.json()["data"]["defaultValue"] == "true"
    # The same field over gRPC.
    listed = await org.reader.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert [f.name for f in listed.custom_fields] == ["Keyed"]
    assert listed.custom_fields[0].data_type == common_pb2.DATA_TYPE_BOOLEAN
