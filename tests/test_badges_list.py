"""ListBadges: CrowdTwist's numbered paging with its exact edge cases, keyset paging with
page tokens, and the filters (with totals that follow them).

One organisation of 23 badges is seeded once per database and only read here; tests that
need other data make their own organisation.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from badge_service.api.badges.v1 import badge_pb2 as pb
from tests.support import Backend, Org, expect_error
from tests.test_badges import create, tags, valid_badge

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SEEDED = 23
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def at(value: dt.datetime) -> Timestamp:
    """A Timestamp of an aware datetime."""
    out = Timestamp()
    out.FromDatetime(value)
    return out


def days(n: int) -> Timestamp:
    """T0 plus ``n`` days."""
    return at(T0 + dt.timedelta(days=n))


def seed_badge(i: int) -> pb.Badge:
    """Badge number ``i`` of the seed.

    - disabled when i % 3 == 0 (0, 3, ..., 21: 8 badges), else enabled (15);
    - tag "Even" when i is even (12), tag "Five" when i % 5 == 0 (5);
    - earnable from T0+i days until T0+i+5 days, or forever when i % 4 == 3;
    - displayed from T0 until T0+i+1 days for i < 10, forever for i >= 10.
    """
    names = (["Even"] if i % 2 == 0 else []) + (["Five"] if i % 5 == 0 else [])
    return valid_badge(
        f"b{i:02d}",
        title=f"Badge {i}",
        is_enabled=i % 3 != 0,
        tags=tags(*names),
        date_start=days(i),
        date_end=None if i % 4 == 3 else days(i + 5),
        display_date_start=days(0),
        display_date_end=days(i + 1) if i < 10 else None,
    )


@dataclass
class Seeded:
    """The seeded organisation and its badges by seed number."""

    org: Org
    badges: list[pb.Badge]

    @property
    def ids(self) -> list[int]:
        """Every badge id, in id order."""
        return sorted(b.id for b in self.badges)

    def ids_of(self, numbers: list[int]) -> list[int]:
        """The ids of some seed numbers, in id order."""
        return sorted(self.badges[i].id for i in numbers)


@pytest.fixture(scope="module")
async def seeded(backend: Backend) -> Seeded:
    """23 badges in a fresh organisation, created concurrently (so id order is not seed
    order, and the tests must not assume it is)."""
    org = await backend.new_org()
    made = await asyncio.gather(*(create(org, seed_badge(i)) for i in range(SEEDED)))
    return Seeded(org, list(made))


async def page(org: Org, **request: Any) -> pb.ListBadgesResponse:
    """One ListBadges call with the org's reader key."""
    return await org.reader.badges.ListBadges(pb.ListBadgesRequest(**request))


def ids(reply: pb.ListBadgesResponse) -> list[int]:
    """The badge ids of a reply, in reply order."""
    return [b.id for b in reply.badges]


def url(number: int, size: int) -> str:
    """CrowdTwist's page URL path."""
    return f"/v2.1/badges?page={number}&page_size={size}"


# --- Numbered pages ------------------------------------------------------------------------


async def test_no_page_is_the_first_page_of_ten(seeded: Seeded) -> None:
    reply = await page(seeded.org)
    assert ids(reply) == seeded.ids[:10]
    assert reply.total_size == SEEDED
    assert reply.paging == pb.Paging(total=SEEDED, pages=3, next_page=2, next_page_url=url(2, 10))
    assert not reply.paging.HasField("prev_page")
    assert reply.next_page_token != ""
    # Page 1 asked for by number is the same page.
    assert await page(seeded.org, page=1) == reply
    # Every badge comes whole, as GetBadge returns it.
    first = reply.badges[0]
    assert first == await seeded.org.reader.badges.GetBadge(pb.GetBadgeRequest(id=first.id))


async def test_middle_and_last_pages(seeded: Seeded) -> None:
    second = await page(seeded.org, page=2)
    assert ids(second) == seeded.ids[10:20]
    assert second.paging == pb.Paging(
        total=SEEDED,
        pages=3,
        next_page=3,
        prev_page=1,
        next_page_url=url(3, 10),
        prev_page_url=url(1, 10),
    )
    last = await page(seeded.org, page=3, page_size=10)
    assert ids(last) == seeded.ids[20:]
    assert len(last.badges) == 3
    assert last.paging == pb.Paging(total=SEEDED, pages=3, prev_page=2, prev_page_url=url(2, 10))
    assert not last.paging.HasField("next_page")
    assert last.next_page_token == ""
    assert last.total_size == SEEDED


@pytest.mark.parametrize("number", [0, -1, -100])
async def test_page_zero_or_less_is_empty_and_points_at_page_one(
    seeded: Seeded, number: int
) -> None:
    for size, effective, pages in ((0, 10, 3), (5, 5, 5), (26, 25, 1)):
        reply = await page(seeded.org, page=number, page_size=size)
        assert list(reply.badges) == []
        assert reply.paging == pb.Paging(
            total=SEEDED, pages=pages, next_page=1, next_page_url=url(1, effective)
        )
        assert not reply.paging.HasField("prev_page")
        assert reply.next_page_token == ""
        assert reply.total_size == SEEDED


@pytest.mark.parametrize("number", [4, 5, 1000])
async def test_page_past_the_end_is_empty_and_points_at_the_last_page(
    seeded: Seeded, number: int
) -> None:
    reply = await page(seeded.org, page=number)
    assert list(reply.badges) == []
    assert reply.paging == pb.Paging(total=SEEDED, pages=3, prev_page=3, prev_page_url=url(3, 10))
    assert not reply.paging.HasField("next_page")
    assert reply.next_page_token == ""
    assert reply.total_size == SEEDED


async def test_page_size_is_clamped_to_25(seeded: Seeded) -> None:
    for size in (25, 26, 1000):
        reply = await page(seeded.org, page_size=size)
        assert ids(reply) == seeded.ids
        assert reply.paging == pb.Paging(total=SEEDED, pages=1)
        assert reply.next_page_token == ""
    # Past the end of a clamped size points back with the clamped size.
    beyond = await page(seeded.org, page=2, page_size=26)
    assert list(beyond.badges) == []
    assert beyond.paging == pb.Paging(total=SEEDED, pages=1, prev_page=1, prev_page_url=url(1, 25))


async def test_small_pages_cover_every_badge_once(seeded: Seeded) -> None:
    for size in (1, 5, 7, 23, 24):
        pages = -(-SEEDED // size)
        replies = await asyncio.gather(
            *(page(seeded.org, page=n, page_size=size) for n in range(1, pages + 1))
        )
        seen = [i for r in replies for i in ids(r)]
        assert seen == seeded.ids, size
        assert {r.paging.pages for r in replies} == {pages}
        assert len(replies[-1].badges) == SEEDED - (pages - 1) * size


async def test_negative_page_size_is_invalid(seeded: Seeded) -> None:
    await expect_error(page(seeded.org, page_size=-1), INVALID, field="page_size")


async def test_an_org_without_badges(org: Org) -> None:
    for request in ({}, {"page": 1}, {"page_size": 25}):
        reply = await page(org, **request)
        assert list(reply.badges) == []
        assert reply.paging == pb.Paging(total=0, pages=0)
        assert not reply.paging.HasField("next_page")
        assert not reply.paging.HasField("prev_page")
        assert reply.next_page_token == "" and reply.total_size == 0
    # Page 2 of nothing has no last page to point back at; page 0 still points at page 1.
    assert (await page(org, page=2)).paging == pb.Paging(total=0, pages=0)
    assert (await page(org, page=0)).paging == pb.Paging(
        total=0, pages=0, next_page=1, next_page_url=url(1, 10)
    )


async def test_exactly_one_full_page(org: Org) -> None:
    await asyncio.gather(*(create(org, valid_badge(f"p{i}")) for i in range(10)))
    reply = await page(org)
    assert len(reply.badges) == 10
    assert reply.paging == pb.Paging(total=10, pages=1)
    assert reply.next_page_token == ""
    assert (await page(org, page=2)).paging == pb.Paging(
        total=10, pages=1, prev_page=1, prev_page_url=url(1, 10)
    )


# --- Page tokens -----------------------------------------------------------------------------


async def walk(org: Org, **request: Any) -> list[pb.ListBadgesResponse]:
    """Every page by next_page_token, starting with no token."""
    replies = [await page(org, **request)]
    while replies[-1].next_page_token:
        replies.append(await page(org, page_token=replies[-1].next_page_token, **request))
        assert len(replies) <= SEEDED + 1, "the tokens never end"
    return replies


async def test_page_tokens_visit_every_badge_once_in_id_order(seeded: Seeded) -> None:
    for size in (1, 7, 10, 25):
        replies = await walk(seeded.org, page_size=size)
        assert [i for r in replies for i in ids(r)] == seeded.ids, size
        assert len(replies) == -(-SEEDED // size)
        assert {r.total_size for r in replies} == {SEEDED}
        for r in replies[1:]:
            assert (r.paging.total, r.paging.pages) == (SEEDED, -(-SEEDED // size))
            assert not r.paging.HasField("next_page") and not r.paging.HasField("prev_page")


async def test_a_numbered_page_token_continues_after_that_page(seeded: Seeded) -> None:
    second = await page(seeded.org, page=2, page_size=5)
    after = await page(seeded.org, page_size=5, page_token=second.next_page_token)
    assert ids(after) == seeded.ids[10:15]


async def test_page_tokens_with_a_filter(seeded: Seeded) -> None:
    enabled = [i for i in range(SEEDED) if i % 3 != 0]
    replies = await walk(seeded.org, page_size=4, is_enabled=True)
    assert [i for r in replies for i in ids(r)] == seeded.ids_of(enabled)
    assert {r.total_size for r in replies} == {15}


async def test_a_token_only_works_with_its_own_filters(seeded: Seeded) -> None:
    first = await page(seeded.org, page_size=5, tag_name="Even")
    assert first.next_page_token
    for other in (
        {},
        {"tag_name": "Five"},
        {"tag_name": "Even", "is_enabled": True},
        {"tag_name": "Even", "earnable_at": days(3)},
        {"tag_name": "Even", "displayable_at": days(3)},
    ):
        await expect_error(
            page(seeded.org, page_size=5, page_token=first.next_page_token, **other),
            INVALID,
            field="page_token",
        )
    # The page size may change between calls; the filters may not.
    rest = await page(seeded.org, page_size=25, tag_name="Even", page_token=first.next_page_token)
    assert len(rest.badges) == 7


@pytest.mark.parametrize("token", ["garbage", "!!!", "e30", "bnVsbA", "W10"])
async def test_a_garbage_token_is_invalid(seeded: Seeded, token: str) -> None:
    await expect_error(page(seeded.org, page_token=token), INVALID, field="page_token")


def tampered(token: str, after: object) -> str:
    """A real token whose resume key is replaced (as a client poking at it would)."""
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data["a"] = after
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("after", ["12", 1.5, True, None, [1], 2**63, -(2**63) - 1])
async def test_a_tampered_token_is_invalid(seeded: Seeded, after: object) -> None:
    real = (await page(seeded.org, page_size=5)).next_page_token
    await expect_error(
        page(seeded.org, page_size=5, page_token=tampered(real, after)),
        INVALID,
        field="page_token",
    )


async def test_page_and_page_token_together_are_invalid(seeded: Seeded) -> None:
    token = (await page(seeded.org)).next_page_token
    for number in (1, 2, 0):
        await expect_error(page(seeded.org, page=number, page_token=token), INVALID, field="page")


async def test_a_token_of_another_org_shows_nothing_of_it(seeded: Seeded, other_org: Org) -> None:
    token = (await page(seeded.org, page_size=1)).next_page_token
    reply = await page(other_org, page_size=1, page_token=token)
    assert list(reply.badges) == [] and reply.total_size == 0


# --- Filters ---------------------------------------------------------------------------------

FILTERS: list[tuple[str, dict[str, Any], list[int]]] = [
    ("enabled", {"is_enabled": True}, [i for i in range(SEEDED) if i % 3 != 0]),
    ("disabled", {"is_enabled": False}, [0, 3, 6, 9, 12, 15, 18, 21]),
    ("tag-even", {"tag_name": "Even"}, list(range(0, SEEDED, 2))),
    ("tag-five", {"tag_name": "Five"}, [0, 5, 10, 15, 20]),
    ("tag-unknown", {"tag_name": "Nope"}, []),
    # Tag names match exactly.
    ("tag-case", {"tag_name": "even"}, []),
    ("enabled-and-even", {"is_enabled": True, "tag_name": "Even"}, [2, 4, 8, 10, 14, 16, 20, 22]),
    # date_start <= T0+10d < date_end: starts 0..10, ends after day 10 (i >= 6) or never
    # (3 and 7); badge 5 ends exactly at T0+10d and badge 10 starts exactly then.
    ("earnable", {"earnable_at": days(10)}, [3, 6, 7, 8, 9, 10]),
    ("earnable-before-all", {"earnable_at": days(-1)}, []),
    # Far in the future only the never-ending windows are open.
    ("earnable-late", {"earnable_at": days(1000)}, [3, 7, 11, 15, 19]),
    # Displayed from T0; badges 0..9 stop at T0+(i+1)d, so 4 stops exactly at T0+5d.
    ("displayable", {"displayable_at": days(5)}, list(range(5, SEEDED))),
    ("displayable-at-start", {"displayable_at": days(0)}, list(range(SEEDED))),
    ("displayable-before", {"displayable_at": at(T0 - dt.timedelta(microseconds=1))}, []),
    (
        "everything",
        {
            "is_enabled": True,
            "tag_name": "Even",
            "earnable_at": days(10),
            "displayable_at": days(5),
        },
        [8, 10],
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [pytest.param(r, e, id=i) for i, r, e in FILTERS]
)
async def test_filters(seeded: Seeded, request_: dict[str, Any], expected: list[int]) -> None:
    reply = await page(seeded.org, page_size=25, **request_)
    assert ids(reply) == seeded.ids_of(expected)
    assert reply.total_size == reply.paging.total == len(expected)
    assert reply.paging.pages == (1 if expected else 0)


async def test_filtered_numbered_pages_count_the_filtered_badges(seeded: Seeded) -> None:
    even = seeded.ids_of(list(range(0, SEEDED, 2)))
    last = await page(seeded.org, tag_name="Even", page=3, page_size=5)
    assert ids(last) == even[10:]
    assert last.paging == pb.Paging(
        total=12, pages=3, prev_page=2, prev_page_url=url(2, 5) + "&tag_name=Even"
    )
    beyond = await page(seeded.org, tag_name="Even", page=4, page_size=5)
    assert list(beyond.badges) == []
    assert beyond.paging.prev_page == 3
    disabled = await page(seeded.org, is_enabled=False, page_size=3, page=2)
    assert ids(disabled) == seeded.ids_of([0, 3, 6, 9, 12, 15, 18, 21])[3:6]
    assert disabled.paging == pb.Paging(
        total=8,
        pages=3,
        next_page=3,
        prev_page=1,
        next_page_url=url(3, 3) + "&is_enabled=false",
        prev_page_url=url(1, 3) + "&is_enabled=false",
    )


def request_of(page_url: str) -> pb.ListBadgesRequest:
    """The ListBadgesRequest a page URL path names (as the HTTP face decodes it)."""
    path, _, query = page_url.partition("?")
    assert path == "/v2.1/badges"
    request = pb.ListBadgesRequest()
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        if name in ("page", "page_size"):
            setattr(request, name, int(value))
        elif name == "is_enabled":
            request.is_enabled = {"true": True, "false": False}[value]
        elif name == "tag_name":
            request.tag_name = value
        else:
            getattr(request, name).FromJsonString(value)
    return request


async def test_page_urls_keep_every_filter(seeded: Seeded) -> None:
    # Every filter at once, with a tag name that needs escaping and a timestamp with a
    # fraction: the links name the same list, so following them walks its pages.
    org = seeded.org
    odd = "Even & odd/?=#"
    filters: dict[str, Any] = {
        "is_enabled": True,
        "tag_name": "Even",
        "earnable_at": days(10),
        "displayable_at": days(5),
    }
    first = await page(org, page=1, page_size=1, **filters)
    expected = seeded.ids_of([8, 10])
    assert ids(first) == expected[:1]
    tail = (
        "&is_enabled=true&tag_name=Even&earnable_at=2030-01-11T00%3A00%3A00Z"
        "&displayable_at=2030-01-06T00%3A00%3A00Z"
    )
    assert first.paging == pb.Paging(
        total=2, pages=2, next_page=2, next_page_url=f"/v2.1/badges?page=2&page_size=1{tail}"
    )
    second = await org.reader.badges.ListBadges(request_of(first.paging.next_page_url))
    assert ids(second) == expected[1:]
    assert second.paging.prev_page_url == f"/v2.1/badges?page=1&page_size=1{tail}"
    back = await org.reader.badges.ListBadges(request_of(second.paging.prev_page_url))
    assert back == first
    # Escaping and fractions survive the round trip.
    odd_reply = await page(
        org,
        page=0,
        tag_name=odd,
        displayable_at=at(T0 + dt.timedelta(microseconds=250_000)),
    )
    assert odd_reply.paging.next_page_url == (
        "/v2.1/badges?page=1&page_size=10&tag_name=Even+%26+odd%2F%3F%3D%23"
        "&displayable_at=2030-01-01T00%3A00%3A00.250Z"
    )
    again = request_of(odd_reply.paging.next_page_url)
    assert again.tag_name == odd
    assert again.displayable_at == at(T0 + dt.timedelta(microseconds=250_000))
