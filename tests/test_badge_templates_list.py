"""ListBadgeTemplates: every Credly filter key and sort key with exact results, Credly's numbered
pages (50 a page) with their metadata and edge cases, and keyset paging with page tokens
across sorts and filters.

Two organisations are seeded once per database and only read here: SEVEN templates with
hand-picked values for the filters and sorts, and 51 generated ones for paging.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import update

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from badge_service.domain import paging
from badge_service.domain.credly_query import parse_filter
from badge_service.store.db import to_micros
from badge_service.store.models import badge_templates
from tests.support import Backend, Org, Over, expect_error, reason_for
from tests.test_badge_templates import archive, create, templates

INVALID = grpc.StatusCode.INVALID_ARGUMENT
C1 = "11111111-1111-4111-8111-111111111111"
C2 = "22222222-2222-4222-8222-222222222222"
SHARED_REC = "33333333-3333-4333-8333-333333333333"
ADV_REC = "44444444-4444-4444-8444-444444444444"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> dt.datetime:
    """An aware UTC datetime."""
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=dt.UTC)


@dataclass
class Row:
    """What the seed sets of one template, to compute expected orders."""

    name: str
    count: int
    created: dt.datetime
    updated: dt.datetime
    id: str = ""


async def set_rows(backend: Backend, rows: list[Row]) -> None:
    """Writes seed times and counts directly (the API stamps the time of the call)."""
    async with backend.db.write() as conn:
        for r in rows:
            await conn.execute(
                update(badge_templates)
                .where(badge_templates.c.id == r.id)
                .values(
                    created_at=to_micros(r.created),
                    updated_at=to_micros(r.updated),
                    badges_count=r.count,
                )
            )


@dataclass
class Seven:
    """The filter/sort organisation: its templates by short name."""

    org: Org
    rows: dict[str, Row]

    def ids(self, *names: str) -> set[str]:
        """Ids of the named templates."""
        return {self.rows[n].id for n in names}


SEVEN_SPECS: dict[str, dict[str, Any]] = {
    "archery": {
        "fields": {
            "name": "Archery Basics",
            "description": "Learn to shoot arrows",
            "state": pb.BADGE_TEMPLATE_STATE_ACTIVE,
            "skills": ["Archery", "Focus"],
            "reporting_tags": ["expert", "retail"],
            "collection_ids": [C1],
        },
        "row": Row("Archery Basics", 5, utc(2024, 1, 10, 12), utc(2024, 3, 1)),
    },
    "adv": {
        "fields": {
            "name": "archery advanced",
            "description": "Precision_100% guaranteed",
            "public": False,
            "skills": ["archery"],
            "reporting_tags": ["novice"],
            "collection_ids": [C1, C2],
        },
        "row": Row("archery advanced", 5, utc(2024, 1, 10, 12), utc(2024, 2, 15)),
    },
    "boxing": {
        "fields": {
            "name": "Boxing",
            "description": "kickboxing and more",
            "state": pb.BADGE_TEMPLATE_STATE_ACTIVE,
            "skills": ["Fitness"],
            "reporting_tags": ["retail"],
        },
        "row": Row("Boxing", 0, utc(2024, 2, 1), utc(2024, 2, 1)),
    },
    "cycling": {
        "fields": {
            "name": "Cycling 100%",
            "state": pb.BADGE_TEMPLATE_STATE_ACTIVE,
            "skills": ["Fitness", "Endurance"],
            "collection_ids": [C2],
        },
        "row": Row("Cycling 100%", 12, utc(2024, 2, 29, 23, 59, 59, 999999), utc(2024, 4, 1)),
    },
    "unicode": {
        "fields": {"name": "Ünïcode Ärchery", "skills": ["ÜBER"]},
        "row": Row(
            "Ünïcode Ärchery",
            1,
            utc(2023, 12, 31, 23, 59, 59, 999999),
            utc(2023, 12, 31, 23, 59, 59, 999999),
        ),
    },
    "pro": {
        "fields": {
            "name": "Cycling_Pro",
            "description": "The pro_level",
            "public": False,
            "state": pb.BADGE_TEMPLATE_STATE_ACTIVE,
        },
        "row": Row("Cycling_Pro", 3, utc(2024, 3, 1), utc(2024, 3, 2)),
    },
    "boxday": {
        "fields": {"name": "Boxing Day", "state": pb.BADGE_TEMPLATE_STATE_ACTIVE},
        "row": Row("Boxing Day", 0, utc(2024, 3, 5), utc(2024, 3, 5)),
    },
}


@pytest.fixture(scope="module")
async def seven(backend: Backend) -> Seven:
    org = await backend.new_org()
    rows: dict[str, Row] = {}
    for key, spec in SEVEN_SPECS.items():
        created = await create(org, pb.BadgeTemplate(**spec["fields"]))
        rows[key] = Row(**{**spec["row"].__dict__, "id": created.id})
    # Recommendations: archery and boxing share one; adv recommends archery (as a badge).
    info = pb.BadgeTemplateRecommendation(
        id=SHARED_REC,
        type=pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_INFORMATION,
        title="More",
        activity_url="https://more.example",
    )
    for key in ("archery", "boxing"):
        await templates(org.admin).UpdateBadgeTemplate(
            pb.UpdateBadgeTemplateRequest(
                organization_id=org.uuid,
                badge_template=pb.BadgeTemplate(id=rows[key].id, recommendations=[info]),
            )
        )
    await templates(org.admin).UpdateBadgeTemplate(
        pb.UpdateBadgeTemplateRequest(
            organization_id=org.uuid,
            badge_template=pb.BadgeTemplate(
                id=rows["adv"].id,
                recommendations=[
                    pb.BadgeTemplateRecommendation(
                        id=ADV_REC,
                        type=pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE,
                        recommended_badge_template_id=rows["archery"].id,
                    )
                ],
            ),
        )
    )
    await archive(org, rows["cycling"].id)
    await set_rows(backend, list(rows.values()))
    return Seven(org, rows)


async def listed(org: Org, **request: Any) -> pb.ListBadgeTemplatesResponse:
    """ListBadgeTemplates as the org's reader."""
    return await templates(org.reader).ListBadgeTemplates(
        pb.ListBadgeTemplatesRequest(organization_id=org.uuid, **request)
    )


def other_uuid() -> str:
    """A UUID no organisation has."""
    return str(uuid.uuid4())


FILTER_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("", tuple(SEVEN_SPECS)),
    # query: partial, case-insensitive, name or description.
    ("query::archery", ("archery", "adv")),
    ("query::ÄRCHERY", ("unicode",)),
    ("query::kickbox", ("boxing",)),
    ("query::box", ("boxing", "boxday")),
    ("query::  ARROWS  ", ("archery",)),
    # LIKE wildcards are literal: "%" and "_" match only themselves.
    ("query::%", ("adv", "cycling")),
    ("query::g_d", ()),
    ("query::g_p", ("pro",)),
    ("query::o_l", ("pro",)),
    # name: partial and case-insensitive, or exact (case and all) in double quotes.
    ("name::ARCHERY", ("archery", "adv")),
    ("name::box", ("boxing", "boxday")),
    ("name::kick", ()),
    ('name::"Boxing"', ("boxing",)),
    ('name::"boxing"', ()),
    ('name::"Boxing Day"', ("boxday",)),
    ("name::_", ("pro",)),
    # public
    ("public::false", ("adv", "pro")),
    ("public::TRUE", ("archery", "boxing", "cycling", "unicode", "boxday")),
    # reporting_tags, skills: any of, ignoring case.
    ("reporting_tags::retail", ("archery", "boxing")),
    ("reporting_tags::EXPERT, novice", ("archery", "adv")),
    ("reporting_tags::none", ()),
    ("skills::fitness", ("boxing", "cycling")),
    ("skills::archery,über", ("archery", "adv", "unicode")),
    ("skills::Endurance,Focus", ("cycling", "archery")),
    # recommendation_ids: any of.
    (f"recommendation_ids::{SHARED_REC}", ("archery", "boxing")),
    (f"recommendation_ids::{ADV_REC.upper()}", ("adv",)),
    (f"recommendation_ids::{SHARED_REC},{ADV_REC}", ("archery", "boxing", "adv")),
    # state: comma list.
    ("state::active", ("archery", "boxing", "pro", "boxday")),
    ("state::draft,archived", ("adv", "unicode", "cycling")),
    ("state::archived", ("cycling",)),
    # Dates: UTC days, both ends inclusive.
    ("created_at_min::2024-02-01", ("boxing", "cycling", "pro", "boxday")),
    ("created_at_max::2024-02-29", ("unicode", "archery", "adv", "boxing", "cycling")),
    ("created_at_min::2024-03-01", ("pro", "boxday")),
    ("created_at_max::2023-12-31", ("unicode",)),
    ("created_at_min::2024-01-10|created_at_max::2024-01-10", ("archery", "adv")),
    ("created_at_min::2024-03-02|created_at_max::2024-03-01", ()),
    ("created_at_max::9999-12-31", tuple(SEVEN_SPECS)),
    ("created_at_min::0001-01-01", tuple(SEVEN_SPECS)),
    ("updated_at_min::2024-03-01", ("archery", "cycling", "pro", "boxday")),
    ("updated_at_max::2024-02-15", ("adv", "boxing", "unicode")),
    ("updated_at_min::2024-03-02|updated_at_max::2024-03-05", ("pro", "boxday")),
    # collection_id: any of.
    (f"collection_id::{C1}", ("archery", "adv")),
    (f"collection_id::{C2},{C1}", ("archery", "adv", "cycling")),
    ("collection_id::not-a-uuid", ()),
    # Combinations narrow.
    ("state::active|query::archery", ("archery",)),
    ("skills::fitness|public::true|state::archived", ("cycling",)),
    (" state :: active | name :: box ", ("boxing", "boxday")),
]


@pytest.mark.parametrize(
    ("flt", "expected"), FILTER_CASES, ids=[c[0] or "none" for c in FILTER_CASES]
)
async def test_filter(seven: Seven, flt: str, expected: tuple[str, ...]) -> None:
    got = await listed(seven.org, filter=flt)
    assert {t.id for t in got.badge_templates} == seven.ids(*expected)
    assert got.total_size == got.metadata.total_count == len(expected)
    assert got.metadata.count == len(expected)


async def test_filter_owner_id(seven: Seven) -> None:
    everything = seven.ids(*SEVEN_SPECS)
    for value, expected in (
        (seven.org.uuid, everything),
        (seven.org.uuid.upper(), everything),
        (other_uuid(), set()),
        (f"{other_uuid()},{seven.org.uuid}", everything),
    ):
        got = await listed(seven.org, filter=f"owner_id::{value}")
        assert {t.id for t in got.badge_templates} == expected
        assert got.total_size == len(expected)


@pytest.mark.parametrize(
    ("flt", "named"),
    [
        ("colour::red", "'colour'"),
        ("state", "'state'"),
        ("state::active|", "''"),
        ("::active", "'::active'"),
        ("state::", "'state'"),
        ("state::active|state::draft", "'state'"),
        ("state::pending", "'state'"),
        ("state::active,pending", "'state'"),
        ("public::yes", "'public'"),
        ("public::", "'public'"),
        ("created_at_min::2024-13-01", "'created_at_min'"),
        ("created_at_max::2024-02-30", "'created_at_max'"),
        ("updated_at_min::2024-1-1", "'updated_at_min'"),
        ("updated_at_max::yesterday", "'updated_at_max'"),
        ("skills::, ,", "'skills'"),
        ("skills::" + ",".join(f"s{i}" for i in range(101)), Over("'skills'")),
        ("query::a\x00b", "NUL"),
        ("query::" + "q" * 4100, Over("4096")),
    ],
)
async def test_bad_filter(seven: Seven, flt: str, named: str) -> None:
    # NUL characters are refused before the servicer (for any string field), with the generic
    # reason; the parser's own check stays for direct callers.
    reason = "INVALID_FIELD" if "\x00" in flt else reason_for(named, "INVALID_FILTER")
    err = await expect_error(listed(seven.org, filter=flt), INVALID, reason=reason, field="filter")
    assert err.bad_request is not None
    assert named in err.bad_request.field_violations[0].description


def expected_order(rows: list[Row], sort: str) -> list[str]:
    """Ids in the order a sort gives: its keys, then id ascending."""
    out = sorted(rows, key=lambda r: r.id)
    keys = {
        "name": lambda r: r.name.lower(),
        "badges_count": lambda r: r.count,
        "created_at": lambda r: r.created,
        "updated_at": lambda r: r.updated,
    }
    terms = [t for t in (sort or "-created_at").split("|")]
    # Stable sorts, least significant key first; reverse=True keeps ties in id order.
    for term in reversed(terms):
        out.sort(key=keys[term.lstrip("-")], reverse=term.startswith("-"))
    return [r.id for r in out]


SORTS = [
    "",
    "name",
    "-name",
    "badges_count",
    "-badges_count",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "badges_count|-name",
    "-badges_count|created_at",
    "created_at|name|-updated_at|badges_count",
]


@pytest.mark.parametrize("sort", SORTS, ids=[s or "default" for s in SORTS])
async def test_sort(seven: Seven, sort: str) -> None:
    got = await listed(seven.org, sort=sort)
    assert [t.id for t in got.badge_templates] == expected_order(list(seven.rows.values()), sort)


async def test_sort_orders_by_hand(seven: Seven) -> None:
    # The expected orders above are computed; these two are written out.
    by_name = await listed(seven.org, sort="name")
    assert [t.name for t in by_name.badge_templates] == [
        "archery advanced",
        "Archery Basics",
        "Boxing",
        "Boxing Day",
        "Cycling 100%",
        "Cycling_Pro",
        "Ünïcode Ärchery",
    ]
    by_count = await listed(seven.org, sort="-badges_count|name")
    assert [(t.badges_count, t.name) for t in by_count.badge_templates] == [
        (12, "Cycling 100%"),
        (5, "archery advanced"),
        (5, "Archery Basics"),
        (3, "Cycling_Pro"),
        (1, "Ünïcode Ärchery"),
        (0, "Boxing"),
        (0, "Boxing Day"),
    ]
    # A filter and a sort together.
    got = await listed(seven.org, filter="state::active", sort="-updated_at")
    assert [t.name for t in got.badge_templates] == [
        "Boxing Day",
        "Cycling_Pro",
        "Archery Basics",
        "Boxing",
    ]


@pytest.mark.parametrize(
    "sort", ["colour", "name|name", "name|-name", "-", "name|", "--name", "name,created_at"]
)
async def test_bad_sort(seven: Seven, sort: str) -> None:
    await expect_error(listed(seven.org, sort=sort), INVALID, reason="INVALID_SORT", field="sort")


async def test_list_shows_references_and_counts(seven: Seven) -> None:
    got = await listed(seven.org, filter=f"recommendation_ids::{ADV_REC}")
    [adv] = got.badge_templates
    [rec] = adv.recommendations
    assert rec.recommended_badge_template_id == seven.rows["archery"].id
    assert rec.recommended_badge_template_name == "Archery Basics"
    assert rec.title == "Archery Basics"
    assert adv.show_template_settings is False
    assert adv.badges_count == adv.get_issue_count == 5
    # Get-only fields stay empty in lists.
    archery = await listed(seven.org, filter='name::"Archery Basics"')
    assert list(archery.badge_templates[0].recommending_templates) == []


# -- paging -----------------------------------------------------------------------------------

PAGED = 51
BASE = utc(2025, 1, 1)


@dataclass
class Paged:
    """The paging organisation: 51 templates, #50 a draft, the rest active."""

    org: Org
    rows: list[Row]


@pytest.fixture(scope="module")
async def paged(backend: Backend) -> Paged:
    org = await backend.new_org()
    rows = []
    for i in range(PAGED):
        # Repeats in every sort key, so the id tiebreak is exercised throughout.
        name = f"Template {i % 20:02d}" if i % 2 else f"template {i % 20:02d}"
        created = await create(
            org,
            pb.BadgeTemplate(
                name=name,
                state=pb.BADGE_TEMPLATE_STATE_DRAFT if i == 50 else pb.BADGE_TEMPLATE_STATE_ACTIVE,
            ),
        )
        rows.append(
            Row(
                name,
                i % 3,
                BASE + dt.timedelta(days=i % 7),
                BASE + dt.timedelta(hours=i % 4),
                created.id,
            )
        )
    await set_rows(backend, rows)
    return Paged(org, rows)


def url(org: Org, query: str) -> str:
    """A page URL of the org."""
    return f"/organizations/{org.uuid}/badge_templates?{query}"


async def test_numbered_pages(paged: Paged) -> None:
    org = paged.org
    order = expected_order(paged.rows, "")
    first = await listed(org)
    assert [t.id for t in first.badge_templates] == order[:50]
    assert first.metadata == pb.BadgeTemplatePageMetadata(
        count=50,
        current_page=1,
        total_count=51,
        total_pages=2,
        per=50,
        previous_page_url="",
        next_page_url=url(org, "page=2"),
    )
    assert first.total_size == 51 and first.next_page_token
    # Page 0 is the first page.
    assert await listed(org, page=0) == first
    assert (await listed(org, page=1)).badge_templates == first.badge_templates
    second = await listed(org, page=2)
    assert [t.id for t in second.badge_templates] == order[50:]
    assert second.metadata == pb.BadgeTemplatePageMetadata(
        count=1,
        current_page=2,
        total_count=51,
        total_pages=2,
        per=50,
        previous_page_url=url(org, "page=1"),
        next_page_url="",
    )
    assert second.next_page_token == ""
    # Past the end: no templates, pointing back at the last page.
    for page in (3, 2**31 - 1):
        past = await listed(org, page=page)
        assert list(past.badge_templates) == []
        assert past.metadata == pb.BadgeTemplatePageMetadata(
            count=0,
            current_page=page,
            total_count=51,
            total_pages=2,
            per=50,
            previous_page_url=url(org, "page=2"),
            next_page_url="",
        )
        assert past.next_page_token == ""
    for page in (-1, -(2**31)):
        await expect_error(listed(org, page=page), INVALID, field="page")


async def test_exactly_one_full_page(paged: Paged) -> None:
    got = await listed(paged.org, filter="state::active", sort="name")
    assert len(got.badge_templates) == 50
    assert got.metadata == pb.BadgeTemplatePageMetadata(
        count=50, current_page=1, total_count=50, total_pages=1, per=50
    )
    assert got.next_page_token == ""
    drafts = await listed(paged.org, filter="state::draft")
    assert [t.id for t in drafts.badge_templates] == [paged.rows[50].id]


async def test_page_size_and_urls(paged: Paged) -> None:
    org = paged.org
    got = await listed(org, filter="state::active", sort="-name", page=2, page_size=20)
    assert [t.id for t in got.badge_templates] == expected_order(paged.rows[:50], "-name")[20:40]
    q = "filter=state%3A%3Aactive&sort=-name"
    assert got.metadata == pb.BadgeTemplatePageMetadata(
        count=20,
        current_page=2,
        total_count=50,
        total_pages=3,
        per=20,
        previous_page_url=url(org, f"{q}&page=1&page_size=20"),
        next_page_url=url(org, f"{q}&page=3&page_size=20"),
    )
    # Larger than 50 is clamped; negative is refused.
    clamped = await listed(org, page_size=1000)
    assert clamped.metadata.per == 50 and len(clamped.badge_templates) == 50
    await expect_error(listed(org, page_size=-1), INVALID, field="page_size")


async def test_empty_organisation(org: Org) -> None:
    got = await listed(org)
    assert list(got.badge_templates) == [] and got.next_page_token == ""
    assert got.metadata == pb.BadgeTemplatePageMetadata(
        count=0, current_page=1, total_count=0, total_pages=0, per=50
    )
    past = await listed(org, page=2)
    assert past.metadata.previous_page_url == "" and past.metadata.next_page_url == ""


async def walk(org: Org, **request: Any) -> list[str]:
    """Every id a page-token walk returns, checking each page's metadata."""
    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        got = await listed(org, page_token=token, **request)
        assert got.metadata.count == len(got.badge_templates)
        # The first page is numbered page 1; token pages have no number.
        assert got.metadata.current_page == (0 if token else 1)
        ids += [t.id for t in got.badge_templates]
        token = got.next_page_token
        pages += 1
        assert pages < 100
        if not token:
            return ids


@pytest.mark.parametrize("sort", SORTS, ids=[s or "default" for s in SORTS])
async def test_page_tokens_follow_any_sort(paged: Paged, sort: str) -> None:
    expected = expected_order(paged.rows, sort)
    assert await walk(paged.org, sort=sort, page_size=8) == expected
    # The same as numbered pages of the same size.
    numbered: list[str] = []
    for page in range(1, 8):
        got = await listed(paged.org, sort=sort, page=page, page_size=8)
        numbered += [t.id for t in got.badge_templates]
    assert numbered == expected


async def test_page_tokens_with_a_filter(paged: Paged) -> None:
    ids = await walk(paged.org, filter="state::active", sort="name", page_size=20)
    assert ids == expected_order(paged.rows[:50], "name")
    # A token from a numbered page continues after it.
    first = await listed(paged.org, sort="badges_count", page_size=10)
    rest = await walk(paged.org, sort="badges_count", page_size=10)
    assert [t.id for t in first.badge_templates] == rest[:10]
    after = await listed(
        paged.org, sort="badges_count", page_size=41, page_token=first.next_page_token
    )
    assert [t.id for t in after.badge_templates] == rest[10:]
    assert after.next_page_token == ""


async def test_page_token_misuse(paged: Paged, seven: Seven) -> None:
    org = paged.org
    token = (await listed(org, sort="name", page_size=5)).next_page_token
    for request, field in (
        ({"sort": "-name"}, "page_token"),
        ({"sort": "name", "filter": "state::active"}, "page_token"),
        ({"sort": "name", "page": 2}, "page"),
        ({"sort": "name", "page_token": "!!!"}, "page_token"),
        ({"sort": "name", "page_token": "e30"}, "page_token"),
    ):
        request.setdefault("page_token", token)
        await expect_error(listed(org, **request), INVALID, field=field)
    # Another organisation's token is refused too.
    await expect_error(
        listed(seven.org, sort="name", page_token=token), INVALID, field="page_token"
    )
    # Tokens whose fingerprint matches but whose position is forged.
    fingerprint = paging.filter_fingerprint("badge_templates", org.uuid, parse_filter(""), "name")
    for position in (
        ["a", "b", "c"],
        [5, str(uuid.uuid4())],
        ["x\x00", str(uuid.uuid4())],
        ["x", 2**70],
        ["x" * 5000, "y"],
        {"a": 1},
    ):
        forged = paging.encode_page_token(position, fingerprint)
        await expect_error(listed(org, sort="name", page_token=forged), INVALID, field="page_token")
    # A well-formed position is fine, even if no row has it.
    ok = paging.encode_page_token(
        ["template 05", "00000000-0000-0000-0000-000000000000"], fingerprint
    )
    got = await listed(org, sort="name", page_token=ok, page_size=50)
    assert [t.id for t in got.badge_templates] == [
        r.id
        for r in sorted(paged.rows, key=lambda r: (r.name.lower(), r.id))
        if r.name.lower() >= "template 05"
    ]
