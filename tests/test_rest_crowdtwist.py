"""CrowdTwist v2.1's badge paths (seed 001) over the HTTP face, on each database: the seed's
badge object and its sample accepted as written, the list's paging object with absolute links
that keep every filter (followed to the next page and back), the seed's paging rules, errors
(400, 401, 403, 404, 409), the ways to pass a key, and tenancy; answers compared with the
gRPC reply of the same operation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import pytest

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.http.rest.crowdtwist import badge_json
from tests.rest_face import Face, face_of
from tests.support import Backend, Org
from tests.test_badges import create, tags, valid_badge

BADGES = "/v2.1/badges"

# Seed 001's sample badge, as written there (its id a string, "badge_states " with a blank).
SEED_BADGE = (
    '{ "id": "123456", "name": "badge_001", "title": "Game Attendance", "badge_states ": [ { '
    '"state": "unearned", "order": 1, "description": "Attend a game to show your fanage", '
    '"image_url": "http://www.imagestorage.com/image" }, { "state": "earned", "order": 2, '
    '"description": "You attended a game, way to go!", "image_url": '
    '"http://www.imagestorage.com/image" } ], "date_start": "2019-05-03T19:01:23.000Z", '
    '"date_end": "2019-05-03T19:01:23.000Z", "display_date_start": '
    '"2019-05-03T19:01:23.000Z", "display_date_end": "2019-05-03T19:01:23.000Z", '
    '"is_enabled": 1, "frequency": { "freq_cap": 1, "freq_period_id": 1, "freq_period_name": '
    '"week", "freq_max": 5 }, "tags": [ { "tag_name": "Football", "tag_id": 1 }, { '
    '"tag_name": "Cricket", "tag_id": 2 } ], "badge_extra_data": { "customer_variable": '
    '"customer data" }, "segment": [ { "name": "Canada Members", "subscription_id": 1043, '
    '"eligibility_type": "inclusion" } ] }'
)
SEED_KEYS = [
    "id",
    "name",
    "title",
    "badge_states",
    "date_start",
    "date_end",
    "display_date_start",
    "display_date_end",
    "is_enabled",
    "frequency",
    "tags",
    "badge_extra_data",
    "segment",
]
SEED_PAGING_KEYS = ["total", "pages", "next_page", "prev_page"]


@pytest.fixture(scope="module")
async def face(backend: Backend) -> AsyncIterator[Face]:
    """A server with the HTTP face on, on the session's database, and an HTTP client."""
    async with face_of(backend) as started:
        yield started


@dataclass
class Seeded:
    """An organisation with 9 badges: i in 0..8, disabled when i % 3 == 0, tag "Even" when
    i is even; ``ids`` in id order."""

    org: Org
    ids: list[int]
    badges: dict[int, pb.Badge]


@pytest.fixture(scope="module")
async def seeded(backend: Backend) -> Seeded:
    org = await backend.new_org()
    made = await asyncio.gather(
        *(
            create(
                org,
                valid_badge(
                    f"b{i}", is_enabled=i % 3 != 0, tags=tags("Even") if i % 2 == 0 else []
                ),
            )
            for i in range(9)
        )
    )
    by_number = {i: b for i, b in enumerate(made)}
    return Seeded(org, sorted(b.id for b in made), by_number)


def key(org: Org) -> dict[str, str]:
    return {"api_key": org.reader_key}


async def test_the_seed_sample_round_trips(face: Face, org: Org) -> None:
    http = face.http
    sample = json.loads(SEED_BADGE)
    created = await http.post(
        BADGES,
        content=SEED_BADGE,
        params={"api_key": org.admin_key},
        headers={"content-type": "application/json"},
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert list(doc) == SEED_KEYS
    assert type(doc["id"]) is int and created.headers["location"] == f"{BADGES}/{doc['id']}"
    # Every field as the sample wrote it (its id is ours; its "badge_states " is badge_states).
    expected = {k.strip(): v for k, v in sample.items()}
    expected["id"] = doc["id"]
    assert doc == expected
    grpc_badge = await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=doc["id"]))
    assert grpc_badge.frequency.freq_period == pb.FREQUENCY_PERIOD_WEEK
    assert [s.state for s in grpc_badge.badge_states] == [
        pb.BADGE_STATE_TYPE_UNEARNED,
        pb.BADGE_STATE_TYPE_EARNED,
    ]
    assert badge_json(grpc_badge) == doc
    # GET by id, with the key as a query parameter, then as headers.
    for params, headers in (
        (key(org), {}),
        ({}, {"x-api-key": org.reader_key}),
        ({}, {"authorization": f"Bearer {org.reader_key}"}),
    ):
        got = await http.get(f"{BADGES}/{doc['id']}", params=params, headers=headers)
        assert got.status_code == 200 and got.json() == doc
    # A second badge of the same name: 409.
    again = await http.post(BADGES, content=SEED_BADGE, params={"api_key": org.admin_key})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == 409
    assert again.json()["error"]["reason"] == "BADGE_NAME_TAKEN"


async def test_update_and_delete(face: Face, org: Org, other_org: Org) -> None:
    http = face.http
    admin = {"api_key": org.admin_key}
    made = await http.post(
        BADGES,
        json={
            "name": "b",
            "title": "B",
            "badge_states": [{"state": "In Progress", "order": 1}, {"state": "earned", "order": 2}],
            "is_enabled": True,
            "segment": [{"name": "Staff", "eligibility_type": "exclusion"}],
        },
        params=admin,
    )
    assert made.status_code == 201, made.text
    badge = made.json()
    assert badge["badge_states"][0] == {
        "state": "in progress",
        "order": 1,
        "description": "",
        "image_url": "",
    }
    assert badge["is_enabled"] == 1 and badge["date_end"] is None
    assert badge["date_start"].endswith("Z") and len(badge["date_start"]) == 24
    assert badge["frequency"] == {
        "freq_cap": None,
        "freq_period_id": None,
        "freq_period_name": None,
        "freq_max": None,
    }
    assert badge["segment"] == [
        {"name": "Staff", "subscription_id": 0, "eligibility_type": "exclusion"}
    ]
    path = f"{BADGES}/{badge['id']}"
    # Only the keys sent change; is_enabled as "0", the period by its name.
    patched = await http.patch(
        path,
        json={"is_enabled": "0", "frequency": {"freq_cap": 2, "freq_period_name": "Month"}},
        params=admin,
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert changed["is_enabled"] == 0 and changed["title"] == "B"
    assert changed["frequency"] == {
        "freq_cap": 2,
        "freq_period_id": 2,
        "freq_period_name": "month",
        "freq_max": None,
    }
    put = await http.put(path, json={"title": "B2", "is_enabled": 1}, params=admin)
    assert (put.json()["title"], put.json()["is_enabled"]) == ("B2", 1)
    grpc_badge = await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=badge["id"]))
    assert badge_json(grpc_badge) == put.json()

    # Another organisation sees nothing of it.
    for method in ("GET", "PATCH", "DELETE"):
        theirs = await http.request(
            method, path, params={"api_key": other_org.admin_key}, json={"title": "x"}
        )
        assert theirs.status_code == 404
        assert theirs.json()["error"]["code"] == 404
    # A reader cannot write.
    reader = await http.delete(path, params=key(org))
    assert reader.status_code == 403
    assert reader.json()["error"]["reason"] == "WRITE_REQUIRES_ADMIN"
    deleted = await http.delete(path, params=admin)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await http.get(path, params=key(org))
    assert gone.status_code == 404
    assert gone.json()["error"]["reason"] == "NOT_FOUND"
    not_a_number = await http.get(f"{BADGES}/abc", params=key(org))
    assert not_a_number.status_code == 404


async def test_errors(face: Face, org: Org) -> None:
    http = face.http
    admin = {"api_key": org.admin_key}
    anonymous = await http.get(BADGES)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == 401
    wrong = await http.get(BADGES, params={"api_key": "ck_not-a-key"})
    assert wrong.status_code == 401
    reader = await http.post(BADGES, json={"name": "x"}, params=key(org))
    assert reader.status_code == 403
    # The RPC's validation, naming the field.
    no_states = await http.post(BADGES, json={"name": "x", "title": "X"}, params=admin)
    assert no_states.status_code == 400
    assert no_states.json()["error"]["field"] == "badge.badge_states"
    odd_state = await http.post(
        BADGES,
        json={"name": "x", "title": "X", "badge_states": [{"state": "done", "order": 1}]},
        params=admin,
    )
    assert odd_state.status_code == 400
    assert odd_state.json()["error"]["field"] == "badge.badge_states[0].state"
    # What cannot be decoded at all is refused here, naming the vendor's field.
    for body, field in (
        ({"name": "x", "is_enabled": "maybe"}, "is_enabled"),
        ({"name": "x", "date_start": "soon"}, "date_start"),
        ({"name": "x", "badge_states": [{"order": "first"}]}, "badge_states[0].order"),
        ({"name": "x", "badge_extra_data": {"n": 10**400}}, "badge_extra_data"),
    ):
        bad = await http.post(BADGES, json=body, params=admin)
        assert bad.status_code == 400
        assert bad.json()["error"]["field"] == field
        assert bad.json()["error"]["reason"] == "INVALID_FIELD"
    for garbage in (b"[1, 2]", b"[" * 100_000):
        refused = await http.post(BADGES, content=garbage, params=admin)
        assert refused.status_code == 400
        assert refused.json()["error"]["reason"] == "INVALID_FIELD"
    bad_filter = await http.get(BADGES, params={**key(org), "is_enabled": "maybe"})
    assert bad_filter.status_code == 400
    assert bad_filter.json()["error"]["field"] == "is_enabled"
    negative = await http.get(BADGES, params={**key(org), "page_size": "-1"})
    assert negative.status_code == 400


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


async def test_list_paging_links_keep_every_filter(face: Face, seeded: Seeded) -> None:
    http = face.http
    org = seeded.org
    # Enabled and "Even": 2, 4, 8.
    expected = sorted(seeded.badges[i].id for i in (2, 4, 8))
    params = {
        "page_size": "2",
        "is_enabled": "1",
        "tag_name": "Even",
        "displayable_at": "2000-01-01T00:00:00Z",
        "api_key": org.reader_key,
    }
    # Displayed from creation on: nothing was displayed in 2000.
    none = await http.get(BADGES, params=params)
    assert none.json() == {
        "paging": {"total": 0, "pages": 0, "next_page": None, "prev_page": None},
        "badges": [],
    }
    params["displayable_at"] = "2999-01-01T00:00:00.000Z"
    params["earnable_at"] = "2999-01-01"
    first = await http.get(BADGES, params=params)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert list(doc) == ["paging", "badges"] and list(doc["paging"]) == SEED_PAGING_KEYS
    assert [b["id"] for b in doc["badges"]] == expected[:2]
    assert (doc["paging"]["total"], doc["paging"]["pages"], doc["paging"]["prev_page"]) == (
        3,
        2,
        None,
    )
    link = doc["paging"]["next_page"]
    assert link.startswith(f"{face.base}{BADGES}?page=2&page_size=2&")
    assert query_of(link) == {
        "page": "2",
        "page_size": "2",
        "is_enabled": "true",
        "tag_name": "Even",
        "earnable_at": "2999-01-01T00:00:00Z",
        "displayable_at": "2999-01-01T00:00:00Z",
        "api_key": org.reader_key,
    }
    # The same page over gRPC.
    grpc_reply = await org.reader.badges.ListBadges(
        pb.ListBadgesRequest(page_size=2, is_enabled=True, tag_name="Even")
    )
    assert [badge_json(b) for b in grpc_reply.badges] == doc["badges"]
    # Followed as they are: the next page, and back.
    second = (await http.get(link)).json()
    assert [b["id"] for b in second["badges"]] == expected[2:]
    assert second["paging"]["next_page"] is None
    back = await http.get(second["paging"]["prev_page"])
    assert back.json() == doc


async def test_list_paging_rules(face: Face, seeded: Seeded) -> None:
    http = face.http
    org = seeded.org
    default = (await http.get(BADGES, params=key(org))).json()
    assert [b["id"] for b in default["badges"]] == seeded.ids
    assert default["paging"] == {"total": 9, "pages": 1, "next_page": None, "prev_page": None}
    # Not a valid page: the first page.
    assert (await http.get(BADGES, params={**key(org), "page": "abc"})).json() == default
    # Larger than 25 is 25; the key as a header leaves it out of the links.
    big = await http.get(
        BADGES, params={"page": "0", "page_size": "100"}, headers={"x-api-key": org.reader_key}
    )
    assert big.json() == {
        "paging": {
            "total": 9,
            "pages": 1,
            "next_page": f"{face.base}{BADGES}?page=1&page_size=25",
            "prev_page": None,
        },
        "badges": [],
    }
    # Past the end: empty, pointing at the last page.
    past = (await http.get(BADGES, params={**key(org), "page": "7", "page_size": "4"})).json()
    assert past["badges"] == []
    assert past["paging"]["pages"] == 3 and past["paging"]["next_page"] is None
    assert query_of(past["paging"]["prev_page"]) == {
        "page": "3",
        "page_size": "4",
        "api_key": org.reader_key,
    }
    last = (await http.get(past["paging"]["prev_page"])).json()
    assert [b["id"] for b in last["badges"]] == seeded.ids[8:]
    huge = (await http.get(BADGES, params={**key(org), "page": str(10**30)})).json()
    assert huge["badges"] == [] and huge["paging"]["prev_page"] is not None
    disabled = (await http.get(BADGES, params={**key(org), "is_enabled": "false"})).json()
    assert [b["id"] for b in disabled["badges"]] == sorted(seeded.badges[i].id for i in (0, 3, 6))
    assert {b["is_enabled"] for b in disabled["badges"]} == {0}
