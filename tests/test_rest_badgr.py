"""Badgr v2's REST paths (seed 004) over the HTTP face, on each database: the seed's requests
as written (every id form: idOrEntityId, openBadgeId base64, ref), its envelope and every
field spelling of its samples, the seed's 204 deletes (claim codes too), creates and updates,
lists and their pages, claim codes and redeeming them, Badgr's failure envelope with its
fieldErrors, bearer keys, roles and tenancy (another org's objects are 404)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from tests.rest_face import Face, face_of, org_on
from tests.support import Backend, Org
from tests.test_issuers import (
    classes,
    create_class,
    create_issuer,
    issuers,
    seed_issuer,
    small_class,
)

DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENVELOPE_KEYS = [
    "status", "result", "timestamp", "validationErrors", "nonFieldErrors", "fieldErrors",
    "errorCode", "warnings", "latestTermsVersion",
]  # fmt: skip
SEED_ISSUER_KEYS = [
    "id", "entityType", "entityId", "openBadgeId", "createdAt", "name", "image", "email",
    "description", "url", "staff", "badgrDomain", "createdBy", "organizationId", "extensions",
    "source", "sourceUrl", "imagePath", "originalJson", "badgeSkillLinkingPreferences",
    "preferences",
]  # fmt: skip
SEED_CLASS_KEYS = [
    "id", "entityType", "entityId", "openBadgeId", "sourceUrl", "originalJson", "createdAt",
    "createdBy", "issuer", "issuerOpenBadgeId", "name", "image", "description",
    "achievementType", "criteriaUrl", "criteriaNarrative", "alignments", "tags", "expires",
    "extensions", "source", "imagePath", "archived", "archivedDate", "archivalNote",
    "ob3Properties", "preferences",
]  # fmt: skip
# The seed's badge class as a client sends it (its issuer and property ids replaced by ours).
SEED_CLASS: dict[str, Any] = {
    "sourceUrl": "https://example.com/badge-classes/1",
    "originalJson": "{}",
    "name": "Math Expert",
    "image": "https://api.badgr.io/public/badges/iOMWsaF1QbmMCofM54JlUg/image",
    "description": "This badge is awarded to students who have demonstrated mastery of Math.",
    "achievementType": "Course",
    "criteriaUrl": "https://example.com/badge-classes/1/criteria",
    "criteriaNarrative": "text",
    "alignments": [
        {
            "targetName": "text",
            "targetUrl": "https://example.com/target",
            "targetDescription": "text",
            "targetFramework": "text",
            "targetCode": "text",
            "displayAsSkill": True,
        }
    ],
    "tags": ["text"],
    "expires": {"amount": 30, "duration": "days"},
    "extensions": {"ANY_ADDITIONAL_PROPERTY": {}},
    "source": "local",
    "imagePath": "uploads/badges/badgeclass-lY1LJ6K4RqG7ThGLYvWNng.png",
    "archived": False,
    "archivalNote": "text",
    "ob3Properties": {
        "creditHours": 36,
        "fieldOfStudy": "Research",
        "humanCode": "R1",
        "specialization": "Computer Science Research",
    },
    "preferences": {
        "includeOnPublicPages": True,
        "customPropertyValues": [
            {"propertyId": "66bf8231d88b51901d49d637", "stringValue": "Course", "public": True}
        ],
        "enabledPrintCertTemplateIds": ["61e9d238c5afe622816febb3"],
        "defaultPrintCertTemplateId": "61e9d238c5afe622816febb3",
    },
}


@pytest.fixture(scope="module")
async def face(backend: Backend) -> AsyncIterator[Face]:
    """A server with the HTTP face on the session's database."""
    async with face_of(backend) as f:
        yield f


@pytest.fixture
async def here(face: Face, org: Org) -> AsyncIterator[Org]:
    """The test's org, its gRPC clients on the face's server (whose URLs its replies name)."""
    async with org_on(face, org) as o:
        yield o


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ok(response: httpx.Response, status: int = 200) -> list[Any]:
    """The result of a successful answer, its envelope checked."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ENVELOPE_KEYS, body
    assert body["status"] == {"success": True, "description": "ok"}
    assert DATE_RE.match(body["timestamp"])
    assert body["fieldErrors"] == {} and body["validationErrors"] == []
    assert body["nonFieldErrors"] == [] and body["errorCode"] is None
    result: list[Any] = body["result"]
    return result


def failed(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Badgr's failure envelope."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert list(body) == ENVELOPE_KEYS, body
    assert body["status"]["success"] is False and body["status"]["description"]
    assert body["result"] == [] and body["errorCode"] == code, body
    return body


def as_badgr(msg: Any) -> dict[str, Any]:
    """A message as a Badgr client would send it (camelCase proto3 JSON, Badgr's enum words)."""
    doc = json_format.MessageToDict(msg)
    for staff in doc.get("staff", []):
        staff["role"] = staff["role"].removeprefix("ISSUER_STAFF_ROLE_").lower()
    for d in doc.get("preferences", {}).get("customPropertyDefinitions", []):
        d["propertyType"] = d["propertyType"].removeprefix("CUSTOM_PROPERTY_TYPE_")
        d["targetEntityType"] = d["targetEntityType"].removeprefix("CUSTOM_PROPERTY_TARGET_")
    return doc


async def test_the_seed_issuer_and_class(face: Face, here: Org) -> None:
    http, admin, reader = face.http, auth(here.admin_key), auth(here.reader_key)
    (issuer,) = ok(await http.post("/v2/issuers", json=as_badgr(seed_issuer()), headers=admin), 201)
    assert list(issuer) == [*SEED_ISSUER_KEYS, "updatedAt"]
    assert issuer["entityType"] == "Issuer" and DATE_RE.match(issuer["createdAt"])
    assert issuer["openBadgeId"] == f"{face.base}/public/issuers/{issuer['entityId']}"
    staff = issuer["staff"][0]
    assert staff["role"] == "staff" and staff["user"] == "Hey7J-GRSJeu6FNnHQwNyw"
    assert list(staff["userProfile"]) == [
        "entityType", "entityId", "firstName", "lastName", "emails", "url", "telephone",
        "badgrDomain", "agreedTermsVersion", "marketingOptIn", "hasPasswordSet",
    ]  # fmt: skip
    assert staff["userProfile"]["emails"] == [
        {"email": "Jane.Doe@example.com", "verified": True, "primary": True}
    ]
    assert issuer["badgeSkillLinkingPreferences"] == {
        "type": "TALENT_NEURON",
        "serverUri": "https://example.com/",
        "indeedRegion": "us",
    }
    definition = issuer["preferences"]["customPropertyDefinitions"][0]
    assert (definition["propertyType"], definition["targetEntityType"]) == (
        "STRING_CHOICE",
        "BADGE_CLASS",
    )
    assert list(definition) == [
        "propertyType", "targetEntityType", "propertyId", "label", "subLabel", "public",
        "required", "choiceValues",
    ]  # fmt: skip
    # The same issuer over gRPC, field for field.
    over_grpc = await issuers(here.reader).GetIssuer(
        ipb.GetIssuerRequest(id_or_entity_id=issuer["id"])
    )
    assert issuer["extensions"] == json_format.MessageToDict(over_grpc.extensions)
    assert (issuer["id"], issuer["createdBy"], issuer["organizationId"]) == (
        over_grpc.id,
        over_grpc.created_by,
        over_grpc.organization_id,
    )

    # Every id form of the seed's GETs, as written.
    for url in (
        f"/v2/issuers/{issuer['id']}",
        f"/v2/issuers/{issuer['entityId']}",
        f"/v2/issuers/openBadgeId/{b64(issuer['openBadgeId'])}",
        f"/v2/issuers/ref/{b64(issuer['openBadgeId'])}",
        f"/v2/issuers/ref/{issuer['entityId']}",
        f"/v2/issuers/ref/{issuer['openBadgeId']}",  # a URL: the rest of the path
        f"/v2/issuers/openBadgeId/{b64(issuer['openBadgeId']).replace('=', '%3D')}",
    ):
        got = ok(await http.get(url, headers=reader))
        assert got == [issuer], url

    body = {**SEED_CLASS, "issuer": issuer["entityId"]}
    (bc,) = ok(await http.post("/v2/badgeclasses", json=body, headers=admin), 201)
    assert list(bc) == [*SEED_CLASS_KEYS, "updatedAt"]
    for key, value in SEED_CLASS.items():
        if key != "preferences":
            assert bc[key] == value, key
    (value,) = SEED_CLASS["preferences"]["customPropertyValues"]
    assert bc["preferences"] == {
        **SEED_CLASS["preferences"],
        "customPropertyValues": [
            {"propertyId": value["propertyId"], "stringValue": "Course", "doubleValue": None,
             "arrayValue": [], "public": True}
        ],
    }  # fmt: skip
    assert bc["entityType"] == "BadgeClass" and bc["archivedDate"] is None
    assert bc["issuer"] == issuer["entityId"]
    assert bc["issuerOpenBadgeId"] == issuer["openBadgeId"]
    assert bc["openBadgeId"] == f"{face.base}/public/badges/{bc['entityId']}"
    for url in (
        f"/v2/badgeclasses/{bc['id']}",
        f"/v2/badgeclasses/{bc['entityId']}",
        f"/v2/badgeclasses/openBadgeId/{b64(bc['openBadgeId'])}",
        f"/v2/badgeclasses/ref/{b64(bc['openBadgeId'])}",
        f"/v2/badgeclasses/ref/{bc['id']}",
    ):
        assert ok(await http.get(url, headers=reader)) == [bc], url
    over_grpc_class = await classes(here.reader).GetBadgeClass(
        bcpb.GetBadgeClassRequest(id_or_entity_id=bc["entityId"])
    )
    assert bc["createdBy"] == over_grpc_class.created_by
    # The issuer's classes, by path and by query; archived filters.
    for url in (
        f"/v2/issuers/{issuer['entityId']}/badgeclasses",
        f"/v2/badgeclasses?issuer={issuer['id']}",
    ):
        assert [c["entityId"] for c in ok(await http.get(url, headers=reader))] == [bc["entityId"]]
    assert ok(await http.get("/v2/badgeclasses?archived=true", headers=reader)) == []


async def test_deletes_are_204_by_every_id_form(face: Face, here: Org) -> None:
    http, admin, reader = face.http, auth(here.admin_key), auth(here.reader_key)
    made = [await create_issuer(here.admin) for _ in range(3)]
    for issuer, url in zip(
        made,
        (
            "/v2/issuers/{id}",
            "/v2/issuers/openBadgeId/{b64}",
            "/v2/issuers/ref/{b64}",
        ),
        strict=True,
    ):
        url = url.format(id=issuer.entity_id, b64=b64(issuer.open_badge_id))
        r = await http.delete(url, headers=admin)
        assert r.status_code == 204 and r.content == b"", r.text
        failed(await http.get(f"/v2/issuers/{issuer.id}", headers=reader), 404, "NOT_FOUND")
        failed(await http.delete(url, headers=admin), 404, "NOT_FOUND")

    issuer = await create_issuer(here.admin)
    bcs = [await create_class(here.admin, small_class(issuer.entity_id, f"C{i}")) for i in range(3)]
    for bc, url in zip(
        bcs,
        (
            "/v2/badgeclasses/{id}",
            "/v2/badgeclasses/openBadgeId/{b64}",
            "/v2/badgeclasses/ref/{ref}",
        ),
        strict=True,
    ):
        url = url.format(id=bc.id, b64=b64(bc.open_badge_id), ref=bc.entity_id)
        r = await http.delete(url, headers=admin)
        assert r.status_code == 204 and r.content == b""
        failed(await http.get(f"/v2/badgeclasses/{bc.id}", headers=reader), 404, "NOT_FOUND")
    # An issuer with badge classes needs cascade, as over gRPC.
    await create_class(here.admin, small_class(issuer.entity_id, "Kept"))
    r = await http.delete(f"/v2/issuers/{issuer.entity_id}", headers=admin)
    body = failed(r, 400, "ISSUER_HAS_BADGE_CLASSES")
    assert body["nonFieldErrors"] == [body["status"]["description"]]
    r = await http.delete(f"/v2/issuers/{issuer.entity_id}?cascade=true", headers=admin)
    assert r.status_code == 204


async def test_claim_codes(face: Face, here: Org) -> None:
    http, admin, reader = face.http, auth(here.admin_key), auth(here.reader_key)
    issuer = await create_issuer(here.admin)
    bc = await create_class(here.admin, small_class(issuer.entity_id))
    base = f"/v2/badgeclasses/{bc.entity_id}/claim-codes"
    codes = ok(
        await http.post(
            base, json={"count": 3, "label": "Conference Event", "useLimit": 2}, headers=admin
        ),
        201,
    )
    assert len(codes) == 3
    assert list(codes[0]) == [
        "code", "badgeClass", "label", "useLimit", "usesRemaining", "expiresAt", "createdAt",
    ]  # fmt: skip
    assert codes[0]["badgeClass"] == bc.entity_id and codes[0]["useLimit"] == 2
    assert codes[0]["expiresAt"] is None and DATE_RE.match(codes[0]["createdAt"])
    (one,) = ok(await http.post(base, headers=admin), 201)  # no body: one code
    assert one["useLimit"] == 1
    listed = ok(await http.get(base, headers=reader))
    assert [c["code"] for c in listed] == [c["code"] for c in [*codes, one]]
    # Pages of num, the rest named by the Link header, followed as it is.
    r = await http.get(base, params={"num": 3}, headers=reader)
    assert [c["code"] for c in ok(r)] == [c["code"] for c in codes]
    link = re.fullmatch(r'<(.+)>; rel="next"', r.headers["link"])
    assert link is not None
    r = await http.get(link.group(1), headers=reader)
    assert [c["code"] for c in ok(r)] == [one["code"]] and "link" not in r.headers

    # Redeem (AwardService.RedeemClaimCode at the Badgr path): an award of the class.
    (award,) = ok(
        await http.post(
            f"{base}/{codes[0]['code'].lower()}/redeem",
            json={"recipient": {"email": "alice@example.org"}, "narrative": "Came by"},
            headers=admin,
        ),
        201,
    )
    assert award["badgeClassId"] == bc.entity_id and award["claimCode"] == codes[0]["code"]
    assert award["state"] == "active" and award["recipient"] == {"email": "alice@example.org"}
    assert award["openBadgeId"].startswith(f"{face.base}/public/assertions/")
    assert "badgeId" not in award and "badgeTemplateId" not in award
    left = {c["code"]: c["usesRemaining"] for c in ok(await http.get(base, headers=reader))}
    assert left[codes[0]["code"]] == 1
    r = await http.post(f"{base}/{codes[0]['code']}/redeem", json={}, headers=admin)
    body = failed(r, 400, "INVALID_FIELD")
    assert list(body["fieldErrors"]) == ["recipient"]
    assert body["validationErrors"] == [f"recipient: {body['fieldErrors']['recipient'][0]}"]

    # The seed's claim code DELETE: 204, then 404.
    r = await http.delete(f"{base}/{codes[1]['code']}", headers=admin)
    assert r.status_code == 204 and r.content == b""
    failed(await http.delete(f"{base}/{codes[1]['code']}", headers=admin), 404, "NOT_FOUND")
    # Claim codes for an archived class are refused, as over gRPC.
    r = await http.put(f"/v2/badgeclasses/{bc.id}", json={"archived": True}, headers=admin)
    (archived,) = ok(r)
    assert archived["archived"] is True and DATE_RE.match(archived["archivedDate"])
    failed(await http.post(base, json={}, headers=admin), 400, "BADGE_CLASS_ARCHIVED")


async def test_updates_and_lists(face: Face, here: Org) -> None:
    http, admin, reader = face.http, auth(here.admin_key), auth(here.reader_key)
    made = [await create_issuer(here.admin) for _ in range(3)]
    (issuer,) = ok(
        await http.put(
            f"/v2/issuers/{made[0].entity_id}",
            json={
                "name": "Renamed",
                "staff": [{"role": "owner", "user": "Hey7J-GRSJeu6FNnHQwNyw"}],
            },
            headers=admin,
        )
    )
    assert issuer["name"] == "Renamed" and issuer["staff"][0]["role"] == "owner"
    assert issuer["email"] == made[0].email
    # Sending back what was read (ids, dates and all) changes nothing it cannot change.
    (again,) = ok(await http.patch(f"/v2/issuers/{made[0].id}", json=issuer, headers=admin))
    assert {k: v for k, v in again.items() if k != "updatedAt"} == {
        k: v for k, v in issuer.items() if k != "updatedAt"
    }
    # The path names what is updated, whatever ids the body echoes.
    (other,) = ok(
        await http.put(
            f"/v2/issuers/{made[1].entity_id}",
            json={**issuer, "name": "Second"},
            headers=admin,
        )
    )
    assert (other["entityId"], other["name"]) == (made[1].entity_id, "Second")
    got = await issuers(here.reader).GetIssuer(ipb.GetIssuerRequest(id_or_entity_id=made[0].id))
    assert got.name == "Renamed"
    bc = await create_class(here.admin, small_class(made[0].entity_id))
    (changed,) = ok(
        await http.patch(
            f"/v2/badgeclasses/{bc.entity_id}",
            json={"expires": {"amount": 2, "duration": "weeks"}, "tags": ["a", "b"]},
            headers=admin,
        )
    )
    assert changed["expires"] == {"amount": 2, "duration": "weeks"} and changed["tags"] == [
        "a",
        "b",
    ]
    # Lists: every issuer without num; a page of num with the rest in Link.
    listed = ok(await http.get("/v2/issuers", headers=reader))
    assert [i["entityId"] for i in listed] == [i.entity_id for i in made]
    r = await http.get("/v2/issuers", params={"num": 2}, headers=reader)
    assert len(ok(r)) == 2 and "cursor=" in r.headers["link"]


async def test_badgr_failures(face: Face, here: Org) -> None:
    http, admin = face.http, auth(here.admin_key)
    r = await http.post(
        "/v2/issuers", json={"name": "No email", "url": "https://example.com"}, headers=admin
    )
    body = failed(r, 400, "INVALID_FIELD")
    assert list(body["fieldErrors"]) == ["email"] and body["nonFieldErrors"] == []
    issuer = await create_issuer(here.admin)
    r = await http.post(
        f"/v2/issuers/{issuer.entity_id}/badgeclasses",
        json={
            "name": "X",
            "image": "https://example.com/x.png",
            "description": "d",
            "criteriaUrl": "ftp://x",
        },
        headers=admin,
    )
    assert list(failed(r, 400, "INVALID_FIELD")["fieldErrors"]) == ["criteriaUrl"]
    r = await http.get("/v2/issuers/openBadgeId/bm90IGEgdXJs", headers=admin)  # "not a url"
    assert failed(r, 400, "INVALID_FIELD")["fieldErrors"]
    failed(
        await http.get(
            "/v2/issuers/openBadgeId/" + b64("https://elsewhere.example/x"), headers=admin
        ),
        404,
        "NOT_FOUND",
    )
    failed(
        await http.get("/v2/badgeclasses/ZZZZZZZZZZZZZZZZZZZZZZ", headers=admin), 404, "NOT_FOUND"
    )
    failed(await http.post("/v2/issuers", content=b"[1]", headers=admin), 400, "INVALID_REQUEST")
    r = await http.post(
        "/v2/issuers",
        json={
            "name": "N",
            "email": "a@example.com",
            "url": "https://example.com",
            "staff": [{"role": "boss", "user": "u"}],
        },
        headers=admin,
    )
    failed(r, 400, "INVALID_REQUEST")


async def test_keys_roles_and_tenancy(face: Face, here: Org, other_org: Org) -> None:
    http = face.http
    theirs = await create_issuer(other_org.admin)
    their_class = await create_class(other_org.admin, small_class(theirs.entity_id))
    mine = await create_issuer(here.admin)
    r = await http.get("/v2/issuers")
    failed(r, 401, "MISSING_CREDENTIALS")
    assert r.headers["www-authenticate"].startswith("Bearer")
    failed(await http.get("/v2/issuers", headers=auth("bsk_1_wrong")), 401, "INVALID_API_KEY")
    reader = auth(here.reader_key)
    for method, url in (
        ("POST", "/v2/issuers"),
        ("PUT", f"/v2/issuers/{mine.entity_id}"),
        ("DELETE", f"/v2/issuers/{mine.entity_id}"),
        ("POST", "/v2/badgeclasses"),
        ("POST", f"/v2/issuers/{mine.entity_id}/badgeclasses"),
    ):
        r = await http.request(method, url, json={"name": "Nope"}, headers=reader)
        failed(r, 403, "WRITE_REQUIRES_ADMIN")
    admin = auth(here.admin_key)
    for method, url in (
        ("GET", f"/v2/issuers/{theirs.entity_id}"),
        ("GET", f"/v2/issuers/openBadgeId/{b64(theirs.open_badge_id)}"),
        ("DELETE", f"/v2/issuers/ref/{theirs.id}"),
        ("PUT", f"/v2/issuers/{theirs.id}"),
        ("GET", f"/v2/issuers/{theirs.entity_id}/badgeclasses"),
        ("GET", f"/v2/badgeclasses/{their_class.entity_id}"),
        ("DELETE", f"/v2/badgeclasses/ref/{b64(their_class.open_badge_id)}"),
        ("GET", f"/v2/badgeclasses/{their_class.id}/claim-codes"),
        ("POST", f"/v2/badgeclasses/{their_class.id}/claim-codes"),
    ):
        r = await http.request(method, url, json={"name": "x"}, headers=admin)
        failed(r, 404, "NOT_FOUND")
    assert ok(await http.get(f"/v2/issuers/{theirs.entity_id}", headers=auth(other_org.reader_key)))
