"""Credly's REST paths (seed 003) over the HTTP face, on each database: the seed's requests as
written, its envelope and every attribute spelling of its samples, 50 a page with absolute
page URLs that keep filter and sort, filter and sort syntax, writes (create, PUT/PATCH,
archive, unarchive, delete), Credly's error bodies and statuses, its Basic authentication,
roles and tenancy (another org's templates and organization_id are 404)."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from tests.rest_face import Face, face_of, org_on
from tests.support import Backend, Org
from tests.test_badge_templates import create, full_template, templates

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Every attribute of a template in the seed's list sample, in its order.
SEED_LIST_KEYS = [
    "primary_badge_template_id", "variant_name", "id", "allow_duplicate_badges", "description",
    "default_expires_at", "default_expires_at_date", "default_expires_at_type",
    "earn_this_badge_url", "enable_earn_this_badge", "enable_detail_attribute_visibility",
    "global_activity_url", "lock_badge_state", "name", "state", "public", "badges_count",
    "recipient_type", "send_expiring_badge_notifications", "settings_enable_related_badges",
    "show_badge_lmi", "show_lmi_jobs", "show_skill_tag_links", "vanity_slug",
    "record_to_blockchain", "translatable", "printing_disabled", "visibility",
    "variants_allowed", "variant_type", "allow_delete", "allow_archive", "available_locales",
    "only_one_skill_required", "linkedin_share_default_message", "level", "time_to_earn",
    "cost", "type_category", "criteria_url_name", "criteria_url", "certification",
    "state_updated_at", "created_at", "updated_at", "show_template_settings",
    "get_issue_count", "get_variants_issue_count", "image", "image_url", "url", "owner",
    "alignments", "recommendations", "required_badge_templates", "badge_template_activities",
    "skills", "endorsements", "reporting_tags",
]  # fmt: skip
SEED_SINGLE_KEYS = [*SEED_LIST_KEYS, "recommending_templates", "criterion_for"]
SEED_OWNER_KEYS = [
    "type", "id", "name", "enable_blockchain", "url", "vanity_url", "vanity_slug", "verified",
    "viewable",
]  # fmt: skip
# The seed's first template, as a client would send it back to create one (what the service
# computes is ignored; the badge activity's required template is left out: it names a template
# of Credly's sample organisation).
SEED_TEMPLATE: dict[str, Any] = {
    "primary_badge_template_id": None,
    "variant_name": None,
    "id": "f3d60253-ee6a-4965-be4e-1878aaf9706c",
    "allow_duplicate_badges": True,
    "description": "Dynamically deliver go forward e-tailers",
    "default_expires_at": None,
    "default_expires_at_date": None,
    "default_expires_at_type": None,
    "earn_this_badge_url": None,
    "enable_earn_this_badge": False,
    "enable_detail_attribute_visibility": True,
    "global_activity_url": "https://www.example.com/foo",
    "lock_badge_state": False,
    "name": "Badge Template 1",
    "state": "active",
    "public": True,
    "badges_count": 0,
    "recipient_type": "User",
    "send_expiring_badge_notifications": False,
    "settings_enable_related_badges": True,
    "show_badge_lmi": False,
    "show_lmi_jobs": False,
    "show_skill_tag_links": True,
    "vanity_slug": "badge-template-1",
    "record_to_blockchain": None,
    "translatable": False,
    "printing_disabled": False,
    "visibility": "public",
    "variants_allowed": False,
    "variant_type": None,
    "allow_delete": True,
    "allow_archive": False,
    "available_locales": [],
    "only_one_skill_required": False,
    "linkedin_share_default_message": "View my verified achievement from @Org_Name.",
    "level": None,
    "time_to_earn": None,
    "cost": None,
    "type_category": None,
    "criteria_url_name": None,
    "criteria_url": None,
    "certification": True,
    "state_updated_at": None,
    "created_at": "2014-04-01T14:41:00.000Z",
    "updated_at": "2014-04-01T14:41:00.000Z",
    "show_template_settings": False,
    "get_issue_count": 0,
    "get_variants_issue_count": 0,
    "image": {
        "id": "83ee9a9d-e5d9-4c27-9387-5eba09ffb898",
        "url": "/system/test/images/83ee9a9d-e5d9-4c27-9387-5eba09ffb898/fake-600x600.png",
    },
    "image_url": "https://cdn.example.com/path/to/image.png",
    "url": "https://www.credly.com/org/organization-1/badge/badge-template-1",
    "owner": {"type": "Organization", "id": "3978643a-fbf7-423c-865e-d011dd2428d8"},
    "alignments": [
        {
            "id": "0e2705ac-7dae-4919-8657-88e1093f9839",
            "name": "Alignment 2",
            "url": "http://www.example.com/alignment",
            "description": "Self-enabling cohesive task-force",
        }
    ],
    "recommendations": [
        {
            "id": "bd2b6738-a30d-44db-b6b8-fa63d1efc4d6",
            "title": "Recommendation Title",
            "type": "information",
            "activity_url": "http://www.example.com/recommendation",
        }
    ],
    "required_badge_templates": [],
    "badge_template_activities": [
        {
            "id": "b24165ec-be6c-433b-b3da-51b6f2fda88d",
            "title": "Kickboxing Activity",
            "activity_type": "Schedule / Registration",
            "activity_url": "http://www.example.com/awesomepage",
            "required_badge_template_id": None,
        }
    ],
    "skills": ["Skill 1", "Skill 2", "Skill 3"],
    "endorsements": [],
    "reporting_tags": ["expert", "retail"],
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


def path(org: Org, rest: str = "") -> str:
    return f"/organizations/{org.uuid}/badge_templates{rest}"


def assert_error(response: httpx.Response, status: int, code: str, *attributes: str) -> None:
    """Credly's error body: ``{data: {message, errors, code}, metadata: {}}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"data", "metadata"} and body["metadata"] == {}, body
    assert body["data"]["code"] == code, body
    assert isinstance(body["data"]["message"], str) and body["data"]["message"], body
    assert [e["attribute"] for e in body["data"]["errors"]] == list(attributes), body


async def test_the_seed_template_round_trips(face: Face, here: Org) -> None:
    http = face.http
    created = await http.post(path(here), json=SEED_TEMPLATE, headers=auth(here.admin_key))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["metadata"] == {}
    data = body["data"]
    assert list(data) == [*SEED_SINGLE_KEYS, "default_expires_in_days", "collection_ids"]
    assert UUID_RE.match(data["id"]) and data["id"] != SEED_TEMPLATE["id"]
    for key in (
        "primary_badge_template_id", "variant_name", "default_expires_at",
        "default_expires_at_date", "default_expires_at_type", "earn_this_badge_url",
        "record_to_blockchain", "variant_type", "level", "time_to_earn", "cost",
        "type_category", "criteria_url_name", "criteria_url", "state_updated_at",
    ):  # fmt: skip
        assert data[key] is None, key
    for key in (
        "allow_duplicate_badges", "description", "enable_earn_this_badge",
        "enable_detail_attribute_visibility", "global_activity_url", "lock_badge_state", "name",
        "state", "public", "badges_count", "recipient_type", "send_expiring_badge_notifications",
        "settings_enable_related_badges", "show_badge_lmi", "show_lmi_jobs",
        "show_skill_tag_links", "vanity_slug", "translatable", "printing_disabled",
        "visibility", "variants_allowed", "available_locales", "only_one_skill_required",
        "linkedin_share_default_message", "certification", "get_issue_count",
        "get_variants_issue_count", "image_url", "alignments", "skills", "endorsements",
        "reporting_tags", "required_badge_templates",
    ):  # fmt: skip
        assert data[key] == SEED_TEMPLATE[key], key
    assert data["allow_delete"] is True and data["allow_archive"] is True
    assert data["show_template_settings"] is True
    assert DATE_RE.match(data["created_at"]) and DATE_RE.match(data["updated_at"])
    assert set(data["image"]) == {"id", "url"} and UUID_RE.match(data["image"]["id"])
    assert list(data["owner"]) == SEED_OWNER_KEYS
    assert data["owner"]["id"] == here.uuid and data["owner"]["type"] == "Organization"
    assert data["recommendations"] == [
        {**SEED_TEMPLATE["recommendations"][0], "id": data["recommendations"][0]["id"]}
    ]
    assert data["badge_template_activities"] == [
        {
            **SEED_TEMPLATE["badge_template_activities"][0],
            "id": data["badge_template_activities"][0]["id"],
        }
    ]
    assert data["recommending_templates"] == [] and data["criterion_for"] == []

    # The seed's single-template request, as written; and the same template over gRPC.
    got = await http.get(path(here, f"/{data['id']}"), headers=auth(here.reader_key))
    assert got.status_code == 200 and got.json() == body
    over_grpc = await templates(here.reader).GetBadgeTemplate(
        pb.GetBadgeTemplateRequest(organization_id=here.uuid, id=data["id"])
    )
    assert over_grpc.name == data["name"] and over_grpc.url == data["url"]
    assert over_grpc.owner.url == data["owner"]["url"]
    assert over_grpc.image.id == data["image"]["id"]

    # The seed's list request, as written: the list's items lack the single-only attributes.
    listed = await http.get(path(here), headers=auth(here.reader_key))
    assert listed.status_code == 200
    page = listed.json()
    assert list(page) == ["data", "metadata"]
    assert page["metadata"] == {
        "count": 1,
        "current_page": 1,
        "total_count": 1,
        "total_pages": 1,
        "per": 50,
        "previous_page_url": None,
        "next_page_url": None,
    }
    (item,) = page["data"]
    assert list(item) == [k for k in data if k not in ("recommending_templates", "criterion_for")]
    assert item["show_template_settings"] is False
    assert {k: v for k, v in item.items() if k != "show_template_settings"} == {
        k: v
        for k, v in data.items()
        if k not in ("recommending_templates", "criterion_for", "show_template_settings")
    }


async def test_every_attribute_spelling(face: Face, here: Org) -> None:
    """Enums in Credly's words, references with names and URLs, the badge recommendation's
    seed spelling ``recommended_badg_template_url``, required templates and criterion_for."""
    full = await create(here, full_template("Full"))
    target = await create(here, name="Target", state=pb.BADGE_TEMPLATE_STATE_ACTIVE)
    linked = await create(
        here,
        pb.BadgeTemplate(
            name="Linked",
            recommendations=[
                pb.BadgeTemplateRecommendation(
                    type=pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE,
                    recommended_badge_template_id=target.id,
                )
            ],
            badge_template_activities=[
                pb.BadgeTemplateActivity(title="Earn it", required_badge_template_id=target.id)
            ],
            required_badge_templates=[pb.BadgeTemplateReference(id=target.id)],
        ),
    )
    r = await face.http.get(path(here, f"/{full.id}"), headers=auth(here.reader_key))
    data = r.json()["data"]
    assert (data["state"], data["visibility"], data["default_expires_at_type"]) == (
        "active",
        "private",
        "date",
    )
    assert (data["level"], data["time_to_earn"], data["cost"], data["type_category"]) == (
        "Advanced",
        "Weeks",
        "Paid",
        "Certification",
    )
    assert data["default_expires_at_date"] == "2031-12-31"
    assert data["default_expires_at"] == "2031-12-31T00:00:00.000Z"
    assert data["record_to_blockchain"] is False and data["public"] is False
    assert data["collection_ids"] == [full.collection_ids[0]]

    r = await face.http.get(path(here, f"/{linked.id}"), headers=auth(here.reader_key))
    data = r.json()["data"]
    (rec,) = data["recommendations"]
    assert rec == {
        "id": linked.recommendations[0].id,
        "title": "Target",
        "type": "badge",
        "recommended_badge_template_id": target.id,
        "recommended_badge_template_name": "Target",
        "recommended_badg_template_url": target.url,
    }
    (act,) = data["badge_template_activities"]
    assert act == {
        "id": linked.badge_template_activities[0].id,
        "title": "Earn it",
        "activity_type": "Badge",
        "activity_url": None,
        "required_badge_template_id": target.id,
        "required_badge_template_name": "Target",
        "required_badge_template_url": target.url,
    }
    (req,) = data["required_badge_templates"]
    assert req == {
        "id": target.id,
        "name": "Target",
        "vanity_slug": target.vanity_slug,
        "url": target.url,
        "image_url": "",
        "state": "active",
    }
    r = await face.http.get(path(here, f"/{target.id}"), headers=auth(here.reader_key))
    data = r.json()["data"]
    assert [t["id"] for t in data["recommending_templates"]] == [linked.id]
    assert [t["id"] for t in data["criterion_for"]] == [linked.id]


async def test_pages_of_50_with_links_that_keep_filter_and_sort(face: Face, here: Org) -> None:
    await asyncio.gather(
        *(
            create(here, name=f"Archery {i:02d}", state=pb.BADGE_TEMPLATE_STATE_ACTIVE)
            for i in range(52)
        )
    )
    await create(here, name="Archery draft")
    await create(here, name="Fencing", state=pb.BADGE_TEMPLATE_STATE_ACTIVE)
    http = face.http
    query = {"filter": "state::active|query::archery", "sort": "-name"}
    first = await http.get(path(here), params=query, headers=auth(here.reader_key))
    assert first.status_code == 200, first.text
    meta = first.json()["metadata"]
    names = [t["name"] for t in first.json()["data"]]
    assert names == [f"Archery {i:02d}" for i in range(51, 1, -1)]
    next_url = meta.pop("next_page_url")
    assert meta == {
        "count": 50,
        "current_page": 1,
        "total_count": 52,
        "total_pages": 2,
        "per": 50,
        "previous_page_url": None,
    }
    parts = urlsplit(next_url)
    assert f"{parts.scheme}://{parts.netloc}" == face.base
    assert parts.path == path(here)
    assert parse_qs(parts.query) == {
        "filter": ["state::active|query::archery"],
        "sort": ["-name"],
        "page": ["2"],
    }
    # The seed's syntax unencoded in the URL, as a client may write it.
    raw = await http.get(
        f"{path(here)}?filter=state::active|query::archery&sort=-name",
        headers=auth(here.reader_key),
    )
    assert raw.json() == first.json()
    # The link is followed as a client follows it: as it is.
    second = await http.get(next_url, headers=auth(here.reader_key))
    body = second.json()
    assert [t["name"] for t in body["data"]] == ["Archery 01", "Archery 00"]
    assert body["metadata"]["count"] == 2 and body["metadata"]["current_page"] == 2
    assert body["metadata"]["next_page_url"] is None
    back = await http.get(body["metadata"]["previous_page_url"], headers=auth(here.reader_key))
    assert back.json() == first.json()
    # Past the end: nothing, and the way back to the last page.
    past = await http.get(path(here), params={**query, "page": "5"}, headers=auth(here.reader_key))
    assert past.json()["data"] == [] and parse_qs(
        urlsplit(past.json()["metadata"]["previous_page_url"]).query
    )["page"] == ["2"]
    # Filters and sorts as Credly writes them, answered as over gRPC.
    for flt, sort in (
        ('name::"Fencing"', ""),
        ("state::draft", "name"),
        ("", "badges_count|-created_at"),
    ):
        r = await http.get(
            path(here), params={"filter": flt, "sort": sort}, headers=auth(here.reader_key)
        )
        assert r.status_code == 200, r.text
        over_grpc = await templates(here.reader).ListBadgeTemplates(
            pb.ListBadgeTemplatesRequest(organization_id=here.uuid, filter=flt, sort=sort)
        )
        assert [t["id"] for t in r.json()["data"]] == [t.id for t in over_grpc.badge_templates]
        assert r.json()["metadata"]["total_count"] == over_grpc.metadata.total_count


@pytest.mark.parametrize(
    ("query", "attribute", "code"),
    [
        ({"filter": "colour::red"}, "filter", "INVALID_FILTER"),
        ({"filter": "state"}, "filter", "INVALID_FILTER"),
        ({"filter": "created_at_min::yesterday"}, "filter", "INVALID_FILTER"),
        ({"sort": "popularity"}, "sort", "INVALID_SORT"),
        ({"page": "-1"}, "page", None),
    ],
)
async def test_bad_queries_are_400(
    face: Face, here: Org, query: dict[str, str], attribute: str, code: str | None
) -> None:
    r = await face.http.get(path(here), params=query, headers=auth(here.reader_key))
    assert r.status_code == 400, r.text
    data = r.json()["data"]
    if code is not None:
        assert data["code"] == code
    assert [e["attribute"] for e in data["errors"]] == [attribute]
    r = await face.http.get(path(here), params={"page": "two"}, headers=auth(here.reader_key))
    assert_error(r, 400, "INVALID_REQUEST")


async def test_writes(face: Face, here: Org) -> None:
    http, admin = face.http, auth(here.admin_key)
    # Wrapped in badge_template, as some Credly clients send it; draft by default.
    r = await http.post(path(here), json={"badge_template": {"name": "Draft one"}}, headers=admin)
    assert r.status_code == 201, r.text
    tid = r.json()["data"]["id"]
    assert r.json()["data"]["state"] == "draft"
    # PUT names only what changes; null clears; the rest stays.
    r = await http.put(
        path(here, f"/{tid}"),
        json={"description": "Now described", "skills": ["Archery"], "state": "active"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["name"], data["description"], data["skills"], data["state"]) == (
        "Draft one",
        "Now described",
        ["Archery"],
        "active",
    )
    r = await http.patch(path(here, f"/{tid}"), json={"description": None}, headers=admin)
    assert r.json()["data"]["description"] == "" and r.json()["data"]["skills"] == ["Archery"]
    # Sending back what was read changes nothing it cannot change.
    r = await http.put(path(here, f"/{tid}"), json=r.json()["data"], headers=admin)
    assert r.status_code == 200, r.text
    r = await http.post(path(here, f"/{tid}/archive"), headers=admin)
    assert r.status_code == 200 and r.json()["data"]["state"] == "archived"
    assert DATE_RE.match(r.json()["data"]["state_updated_at"])
    assert_error(
        await http.post(path(here, f"/{tid}/archive"), headers=admin),
        409,
        "INVALID_STATE_TRANSITION",
    )
    r = await http.put(path(here, f"/{tid}/unarchive"), headers=admin)
    assert r.status_code == 200 and r.json()["data"]["state"] == "active"
    r = await http.delete(path(here, f"/{tid}"), headers=admin)
    assert r.status_code == 200 and r.json() == {"data": {}, "metadata": {}}
    assert_error(await http.get(path(here, f"/{tid}"), headers=admin), 404, "NOT_FOUND")


async def test_credly_errors(face: Face, here: Org) -> None:
    http, admin = face.http, auth(here.admin_key)
    r = await http.post(path(here), json={"name": ""}, headers=admin)
    assert_error(r, 422, "INVALID_FIELD", "name")
    r = await http.post(
        path(here),
        json={"name": "Needs", "required_badge_templates": [{"id": str(uuid.uuid4())}]},
        headers=admin,
    )
    assert r.status_code == 422 and r.json()["data"]["code"] == "UNKNOWN_BADGE_TEMPLATE"
    await create(here, name="Slugged", vanity_slug="slugged")
    r = await http.post(path(here), json={"name": "Again", "vanity_slug": "slugged"}, headers=admin)
    assert_error(r, 409, "VANITY_SLUG_TAKEN")
    assert_error(
        await http.post(path(here), content=b"{nope", headers=admin), 400, "INVALID_REQUEST"
    )
    r = await http.post(path(here), json={"name": "X", "skills": "not a list"}, headers=admin)
    assert_error(r, 400, "INVALID_REQUEST")
    r = await http.post(path(here), json={"name": "X", "state": "retired"}, headers=admin)
    assert_error(r, 400, "INVALID_REQUEST")
    assert_error(await http.get(path(here, f"/{uuid.uuid4()}"), headers=admin), 404, "NOT_FOUND")
    # A path id that is not a UUID names nothing: 404, with the RPC's reason.
    r = await http.get(path(here, "/not-a-uuid"), headers=admin)
    assert_error(r, 404, "INVALID_FIELD", "id")
    r = await http.put(path(here, "/not-a-uuid"), json={"name": "x"}, headers=admin)
    assert_error(r, 404, "INVALID_FIELD", "id")


async def test_keys_roles_and_tenancy(face: Face, here: Org, other_org: Org) -> None:
    http = face.http
    mine = await create(here, name="Mine")
    theirs = await create(other_org, name="Theirs")
    # Credly's Basic authentication: the token as user name, no password; and ours.
    token = base64.b64encode(f"{here.reader_key}:".encode()).decode()
    r = await http.get(path(here, f"/{mine.id}"), headers={"authorization": f"Basic {token}"})
    assert r.status_code == 200 and r.json()["data"]["id"] == mine.id
    ours = base64.b64encode(f"{here.id}:{here.reader_key}".encode()).decode()
    r = await http.get(path(here), headers={"authorization": f"Basic {ours}"})
    assert r.status_code == 200
    r = await http.get(path(here), headers={"x-api-key": here.reader_key})
    assert r.status_code == 200

    r = await http.get(path(here))
    assert_error(r, 401, "MISSING_CREDENTIALS")
    assert r.headers["www-authenticate"].startswith("Basic")
    assert_error(await http.get(path(here), headers=auth("bsk_1_wrong")), 401, "INVALID_API_KEY")
    reader = auth(here.reader_key)
    for method, url in (
        ("POST", path(here)),
        ("PUT", path(here, f"/{mine.id}")),
        ("DELETE", path(here, f"/{mine.id}")),
        ("POST", path(here, f"/{mine.id}/archive")),
    ):
        r = await http.request(method, url, json={"name": "Nope"}, headers=reader)
        assert_error(r, 403, "WRITE_REQUIRES_ADMIN")
    # Another org's template, and another org's organization_id, are 404.
    admin = auth(here.admin_key)
    for method in ("GET", "PUT", "DELETE"):
        r = await http.request(
            method, path(here, f"/{theirs.id}"), json={"name": "x"}, headers=admin
        )
        assert_error(r, 404, "NOT_FOUND")
    assert_error(
        await http.post(path(here, f"/{theirs.id}/unarchive"), headers=admin), 404, "NOT_FOUND"
    )
    for url in (path(other_org), path(other_org, f"/{theirs.id}")):
        assert_error(await http.get(url, headers=admin), 404, "NOT_FOUND")
    assert_error(
        await http.post(path(other_org), json={"name": "x"}, headers=admin), 404, "NOT_FOUND"
    )
    r = await http.get(f"/organizations/{uuid.uuid4()}/badge_templates", headers=admin)
    assert_error(r, 404, "NOT_FOUND")
