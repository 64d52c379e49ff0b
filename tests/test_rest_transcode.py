"""The transcoded REST routes (http.rest.transcode), on each database: every service's project
routes under /v1/ as grpc-gateway serves them (body, path variables, query parameters nested,
repeated, enums and FieldMasks), replies equal to the gRPC replies of the same calls in proto3
JSON, google.rpc.Status errors with their details and HTTP statuses, keys and roles, and
WatchAwards as newline-delimited JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import (
    award_pb2_grpc,
    badge_pb2_grpc,
    badge_template_pb2_grpc,
    custom_field_pb2_grpc,
    org_meta_pb2_grpc,
)
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import custom_field_pb2 as cfpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.api.badges.v1 import org_meta_pb2 as ompb
from badge_service.http.rest import transcode
from tests.rest_face import Face, face_of
from tests.support import Backend, Client, Org
from tests.test_issuers import classes, issuers

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture(scope="module")
async def rest(backend: Backend) -> AsyncIterator[Face]:
    """A server with the HTTP face on, on the session's database, and an HTTP client."""
    async with face_of(backend) as started:
        yield started


@pytest.fixture
async def org(rest: Face, org: Org) -> AsyncIterator[Org]:
    """The test's org, its gRPC clients calling the server with the HTTP face (whose replies
    name that face's URLs), so both faces' replies are the same server's."""
    port = rest.running.port
    admin_client = Client.connect(port, [("authorization", f"Bearer {org.admin_key}")])
    reader_client = Client.connect(port, [("authorization", f"Bearer {org.reader_key}")])
    try:
        yield replace(org, admin=admin_client, reader=reader_client)
    finally:
        await admin_client.channel.close()
        await reader_client.channel.close()


def admin(org: Org) -> dict[str, str]:
    return {"authorization": f"Bearer {org.admin_key}"}


def reader(org: Org) -> dict[str, str]:
    return {"x-api-key": org.reader_key}


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    return resp.json()


def status_of(resp: httpx.Response, http: int, code: int) -> dict[str, Any]:
    """The Status body of an error answer, after checking its HTTP status and code."""
    assert resp.status_code == http, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def info_of(body: dict[str, Any]) -> dict[str, Any]:
    (info,) = [d for d in body["details"] if d["@type"] == ERROR_INFO]
    return info


def fields_of(body: dict[str, Any]) -> list[str]:
    found = [d for d in body["details"] if d["@type"] == BAD_REQUEST]
    return [v["field"] for d in found for v in d["fieldViolations"]]


def test_only_the_projects_own_bindings_are_served() -> None:
    served = {(b.verb, b.template) for b in transcode.bindings()}
    assert all(path.startswith("/v1/") for _, path in served)
    assert ("GET", "/v1/badges/{id}") in served
    assert ("GET", "/v1/awards:watch") in served
    assert ("POST", "/v1/badgeClasses/{id_or_entity_id}/claimCodes/{claim_code}:redeem") in served
    rpcs = {b.rpc for b in transcode.bindings()}
    every = {f"/{s.full_name}/{m.name}" for s in transcode.services() for m in s.methods}
    assert rpcs == every  # every RPC has a route of the project's own


async def test_custom_fields_crud(rest: Face, org: Org) -> None:
    http = rest.http
    created = ok(
        await http.post(
            "/v1/customFields",
            json={
                "name": "CF dates",
                "isMandatory": False,
                "default_value": "0",
                "dataType": "DATA_TYPE_STRING",
            },
            headers=admin(org),
        )
    )
    stub = org.reader.stub(custom_field_pb2_grpc.CustomFieldServiceStub)
    got = await stub.GetCustomField(cfpb.GetCustomFieldRequest(id=created["id"]))
    assert created == as_json(got)
    assert ok(await http.get(f"/v1/customFields/{created['id']}", headers=reader(org))) == created

    listed = ok(await http.get("/v1/customFields", params={"pageSize": 1}, headers=reader(org)))
    grpc_list = await stub.ListCustomFields(cfpb.ListCustomFieldsRequest(page_size=1))
    assert listed == as_json(grpc_list)

    patched = ok(
        await http.patch(
            f"/v1/customFields/{created['id']}",
            params={"update_mask": "defaultValue"},
            json={"defaultValue": "7", "name": "ignored: not in the mask"},
            headers=admin(org),
        )
    )
    assert (patched["defaultValue"], patched["name"]) == ("7", "CF dates")

    deleted = await http.delete(f"/v1/customFields/{created['id']}", headers=admin(org))
    assert ok(deleted) == {}
    missing = status_of(
        await http.get(f"/v1/customFields/{created['id']}", headers=reader(org)), 404, 5
    )
    assert info_of(missing)["reason"] == "NOT_FOUND"
    assert info_of(missing)["domain"] == "badges.v1"


async def test_org_meta_and_badges(rest: Face, org: Org) -> None:
    http = rest.http
    meta = ok(
        await http.put(
            "/v1/orgMeta",
            json={"tags": [{"key": "Football", "data_type": "DATA_TYPE_STRING"}]},
            headers=admin(org),
        )
    )
    got = await org.reader.stub(org_meta_pb2_grpc.OrgMetaServiceStub).GetOrgMeta(
        ompb.GetOrgMetaRequest()
    )
    assert meta == as_json(got) == ok(await http.get("/v1/orgMeta", headers=reader(org)))

    body = {
        "name": "badge_rest",
        "title": "Game Attendance",
        "badgeStates": [
            {"state": "BADGE_STATE_TYPE_UNEARNED", "order": 1},
            {"state": 3, "order": 2},  # an enum by number
        ],
        "tags": [{"tagName": "Football", "tagId": 1}],
    }
    badge = ok(await http.post("/v1/badges", json=body, headers=admin(org)))
    stub = org.reader.stub(badge_pb2_grpc.BadgeServiceStub)
    assert badge == as_json(await stub.GetBadge(bpb.GetBadgeRequest(id=int(badge["id"]))))
    assert badge["badgeStates"][1]["state"] == "BADGE_STATE_TYPE_EARNED"
    listed = ok(
        await http.get("/v1/badges", params={"page": 1, "page_size": 15}, headers=reader(org))
    )
    assert listed == as_json(await stub.ListBadges(bpb.ListBadgesRequest(page=1, page_size=15)))
    patched = ok(
        await http.patch(
            f"/v1/badges/{badge['id']}?updateMask=title",
            json={"title": "Game Day"},
            headers=admin(org),
        )
    )
    assert (patched["title"], patched["name"]) == ("Game Day", "badge_rest")


async def test_badge_templates_under_the_callers_organisation(rest: Face, org: Org) -> None:
    http = rest.http
    base = f"/v1/organizations/{org.uuid}/badgeTemplates"
    created = ok(
        await http.post(
            base,
            json={"name": "Archery", "state": "BADGE_TEMPLATE_STATE_ACTIVE", "skills": ["Archery"]},
            headers=admin(org),
        )
    )
    stub = org.reader.stub(badge_template_pb2_grpc.BadgeTemplateServiceStub)
    got = await stub.GetBadgeTemplate(
        tpb.GetBadgeTemplateRequest(organization_id=org.uuid, id=created["id"])
    )
    assert created == as_json(got)
    listed = ok(
        await http.get(
            base, params={"filter": "state::active|skills::archery"}, headers=reader(org)
        )
    )
    assert [t["id"] for t in listed["badgeTemplates"]] == [created["id"]]
    archived = ok(await http.post(f"{base}/{created['id']}:archive", headers=admin(org)))
    assert archived["state"] == "BADGE_TEMPLATE_STATE_ARCHIVED"
    # Another organisation's id in the path is NOT_FOUND, as on Credly's own paths.
    other = "00000000-0000-4000-8000-000000000000"
    body = status_of(
        await http.get(f"/v1/organizations/{other}/badgeTemplates", headers=reader(org)), 404, 5
    )
    assert info_of(body)["reason"] == "NOT_FOUND"


async def test_issuers_classes_claim_codes_and_awards(rest: Face, org: Org) -> None:
    http = rest.http
    issuer = ok(
        await http.post(
            "/v1/issuers",
            json={"name": "Faculty", "email": "contact@example.com", "url": "https://example.com"},
            headers=admin(org),
        )
    )
    view = "BADGR_VIEW_OPEN_BADGES_V2"
    by_name = ok(
        await http.get(
            f"/v1/issuers/{issuer['entityId']}", params={"view": view}, headers=reader(org)
        )
    )
    got = await issuers(org.reader).GetIssuer(
        ipb.GetIssuerRequest(id_or_entity_id=issuer["entityId"], view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    assert by_name == as_json(got)
    assert "openBadge" in by_name
    by_number = ok(
        await http.get(
            f"/v1/issuers/{issuer['entityId']}",
            params={"view": str(ipb.BADGR_VIEW_OPEN_BADGES_V2)},
            headers=reader(org),
        )
    )
    assert by_number == by_name

    bc = ok(
        await http.post(
            "/v1/badgeClasses",
            json={
                "issuer": issuer["entityId"],
                "name": "Math Expert",
                "description": "Mastery of Math.",
                "image": "https://example.com/math.png",
                "criteriaNarrative": "Pass the exam.",
                "tags": ["math"],
            },
            headers=admin(org),
        )
    )
    listed = ok(
        await http.get(
            "/v1/badgeClasses", params={"issuer": issuer["entityId"]}, headers=reader(org)
        )
    )
    grpc_list = await classes(org.reader).ListBadgeClasses(
        bcpb.ListBadgeClassesRequest(issuer=issuer["entityId"])
    )
    assert listed == as_json(grpc_list)
    assert [c["entityId"] for c in listed["badgeClasses"]] == [bc["entityId"]]

    codes = ok(
        await http.post(
            f"/v1/badgeClasses/{bc['entityId']}/claimCodes",
            json={"count": 1},
            headers=admin(org),
        )
    )
    (code,) = [c["code"] for c in codes["claimCodes"]]
    redeemed = ok(
        await http.post(
            f"/v1/badgeClasses/{bc['entityId']}/claimCodes/{code}:redeem",
            json={"recipient": {"email": "bob@example.org"}},
            headers=admin(org),
        )
    )
    assert redeemed["badgeClassId"] == bc["entityId"]

    award = ok(
        await http.post(
            "/v1/awards",
            json={"badgeClassId": bc["entityId"], "recipient": {"memberId": "1001"}},
            headers=admin(org),
        )
    )
    stub = org.reader.stub(award_pb2_grpc.AwardServiceStub)
    mine = ok(
        await http.get(
            "/v1/awards",
            params={"recipient.member_id": "1001", "revoked": "false"},
            headers=reader(org),
        )
    )
    grpc_mine = await stub.ListAwards(
        apb.ListAwardsRequest(recipient=apb.Recipient(member_id="1001"), revoked=False)
    )
    assert mine == as_json(grpc_mine)
    assert [a["id"] for a in mine["awards"]] == [award["id"]]
    camel = ok(
        await http.get("/v1/awards", params={"recipient.memberId": "1001"}, headers=reader(org))
    )
    assert camel == mine
    revoked = ok(
        await http.post(
            f"/v1/awards/{award['id']}:revoke", json={"reason": "mistake"}, headers=admin(org)
        )
    )
    assert revoked["state"] == "AWARD_STATE_REVOKED"
    verified = ok(
        await http.post("/v1/awards:verify", json={"assertionId": award["id"]}, headers=reader(org))
    )
    assert verified == as_json(
        await stub.VerifyAward(apb.VerifyAwardRequest(assertion_id=award["id"]))
    )


async def test_errors_are_status_json(rest: Face, org: Org) -> None:
    http = rest.http
    # A rule of the service: the field named in BadRequest and ErrorInfo.
    body = status_of(
        await http.post("/v1/badges", json={"name": "", "title": "x"}, headers=admin(org)),
        400,
        3,
    )
    assert "badge.name" in fields_of(body)
    assert info_of(body)["domain"] == "badges.v1"

    # Decoding: malformed JSON, an unknown body field, a bad query value, an unknown parameter.
    cases = [
        (http.post("/v1/badges", content=b"{nope", headers=admin(org)), "badge"),
        (http.post("/v1/badges", json={"nope": 1}, headers=admin(org)), "badge.nope"),
        (http.get("/v1/badges", params={"page": "abc"}, headers=reader(org)), "page"),
        (http.get("/v1/badges", params={"nope": "1"}, headers=reader(org)), "nope"),
        (http.get("/v1/awards", params={"revoked": "maybe"}, headers=reader(org)), "revoked"),
        (http.get("/v1/badges/x", headers=reader(org)), "id"),
        (http.get("/v1/issuers/a", params={"view": "NOPE"}, headers=reader(org)), "view"),
    ]
    for call, field in cases:
        bad = status_of(await call, 400, 3)
        assert fields_of(bad) == [field], bad
        assert info_of(bad)["reason"] == "INVALID_FIELD"
        assert info_of(bad)["metadata"] == {"field": field}

    anonymous = await http.get("/v1/badges")
    assert info_of(status_of(anonymous, 401, 16))["reason"] == "MISSING_CREDENTIALS"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    denied = status_of(
        await http.post("/v1/badges", json={"name": "r"}, headers=reader(org)), 403, 7
    )
    assert info_of(denied)["reason"] == "WRITE_REQUIRES_ADMIN"
    # A header gRPC cannot carry (not printable ASCII) is refused as a malformed key, not a 500.
    for name in ("authorization", "x-api-key"):
        odd = await http.get(
            "/v1/badges", headers={name.encode(): "Bearer k\u00e9y".encode("latin-1")}
        )
        assert status_of(odd, 401, 16)["message"]
    nowhere = status_of(await http.get("/v1/nowhere", headers=reader(org)), 404, 5)
    assert nowhere["details"] == []
    wrong_verb = await http.put("/v1/badges", headers=admin(org))
    assert status_of(wrong_verb, 405, 12)["details"] == []


async def test_watch_awards_streams_ndjson(rest: Face, org: Org) -> None:
    http = rest.http
    refused = await http.get("/v1/awards:watch")
    assert refused.status_code == 401
    (line,) = refused.text.splitlines()
    assert json.loads(line)["error"]["code"] == 16
    # Refused by a rule of the RPC (resuming after a sequence the org has not reached).
    ahead = await http.get("/v1/awards:watch?afterSequence=999999999", headers=reader(org))
    assert ahead.status_code == 400
    (line,) = ahead.text.splitlines()
    assert json.loads(line)["error"]["code"] == 3

    badge = await org.admin.stub(badge_pb2_grpc.BadgeServiceStub).CreateBadge(
        bpb.CreateBadgeRequest(
            badge=bpb.Badge(
                name="watched",
                title="Watched",
                badge_states=[
                    bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_UNEARNED, order=1),
                    bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=2),
                ],
            )
        )
    )
    async with http.stream("GET", "/v1/awards:watch", headers=reader(org)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = resp.aiter_lines()
        award = await org.admin.stub(award_pb2_grpc.AwardServiceStub).CreateAward(
            apb.CreateAwardRequest(
                award=apb.Award(badge_id=badge.id, recipient=apb.Recipient(member_id="7"))
            )
        )
        # An award of a CrowdTwist badge is two events: the recipient's progress, the award.
        events = [json.loads(await asyncio.wait_for(anext(lines), 10))["result"] for _ in "12"]
    assert [e["type"] for e in events] == ["AWARD_EVENT_TYPE_PROGRESS", "AWARD_EVENT_TYPE_AWARDED"]
    assert events[1]["award"] == as_json(award)
    assert int(events[1]["sequence"]) == int(events[0]["sequence"]) + 1


def test_url_values_as_grpc_gateway_reads_them() -> None:
    template = tpb.BadgeTemplate()
    transcode.assign(template, "skills", ["Archery", "Focus"])  # repeated: repeated keys
    assert list(template.skills) == ["Archery", "Focus"]
    update = bpb.UpdateBadgeRequest()
    transcode.assign(update, "updateMask", ["title,badgeStates, badge_extra_data"])
    assert list(update.update_mask.paths) == ["title", "badge_states", "badge_extra_data"]
    transcode.assign(update, "badge.id", ["9223372036854775807"])
    assert update.badge.id == 2**63 - 1
    listing = apb.ListAwardsRequest()
    for spelling, value in [("t", True), ("FALSE", False), ("1", True)]:
        transcode.assign(listing, "revoked", [spelling])
        assert listing.HasField("revoked") and listing.revoked is value
    codes = bcpb.CreateClaimCodesRequest()
    transcode.assign(codes, "expires_at", ["2030-01-02T03:04:05Z"])
    assert codes.expires_at.seconds == 1893553445
    bad = [
        (bpb.GetBadgeRequest(), "id", ["9223372036854775808"], "id"),
        (bpb.GetBadgeRequest(), "id", ["1", "2"], "id"),
        (apb.ListAwardsRequest(), "recipient.nope", ["x"], "recipient.nope"),
        (apb.ListAwardsRequest(), "revoked", ["yes"], "revoked"),
        (bcpb.CreateClaimCodesRequest(), "expiresAt", ["tomorrow"], "expires_at"),
        (
            tpb.CreateBadgeTemplateRequest(),
            "badge_template.skills.x",
            ["1"],
            "badge_template.skills",
        ),
    ]
    for message, key, values, field in bad:
        with pytest.raises(transcode.BadInput) as caught:
            transcode.assign(message, key, values)
        assert caught.value.field == field, (key, caught.value)
