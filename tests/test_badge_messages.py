"""Badge replies sent from the stored message bytes (badges.message, migration 0007) equal the
replies built from the row's columns: after CreateBadge and UpdateBadge, on every kind of
ListBadges page, and for rows from before 0007 (message NULL), which still read the same and
get their bytes back on their next update. NOT_FOUND keeps its details on the new read path.

Every comparison is against ``to_proto(store.get_badge(...))``, the reply built from the
columns, read straight from the server's database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from sqlalchemy import select, update

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import common_pb2
from badge_service.rpc import wire
from badge_service.rpc.badges import to_proto
from badge_service.store import badges as store
from badge_service.store.models import badges as badges_table
from tests.support import Backend, ErrorDetails, Org, expect_error
from tests.test_badges import (
    EARNED,
    IN_PROGRESS,
    UNEARNED,
    add_field,
    at,
    create,
    get,
    state,
    struct,
    tags,
    valid_badge,
)
from tests.test_badges import update as update_badge

NOT_FOUND = grpc.StatusCode.NOT_FOUND


def rich_badge(name: str, i: int = 0) -> pb.Badge:
    """A badge with most fields set (timestamps with nanoseconds, which are cut to micros),
    varied by ``i``; extra data fits the fields of with_fields()."""
    return pb.Badge(
        name=name,
        title=f"Title {i} é",
        date_start=at(f"2020-01-0{1 + i % 9}T10:00:00.123456789Z"),
        date_end=at("2040-01-01T00:00:00Z") if i % 2 else None,
        display_date_start=at("2019-12-01T00:00:00.5Z"),
        is_enabled=i % 3 != 0,
        badge_states=[
            state(UNEARNED, 1, f"start {i}", "http://img.example/u.png"),
            *([state(IN_PROGRESS, 2, "halfway")] if i % 2 else []),
            state(EARNED, 3 + i, "done"),
        ],
        frequency=pb.Frequency(freq_cap=1 + i % 4, freq_period=pb.FREQUENCY_PERIOD_WEEK, freq_max=5)
        if i % 2
        else None,
        tags=tags(*(["Even"] if i % 2 == 0 else []), *(["Three"] if i % 3 == 0 else [])),
        segment=[
            pb.Segment(
                name="Canada", subscription_id=1043, eligibility_type=pb.ELIGIBILITY_TYPE_INCLUSION
            )
        ]
        if i % 4 == 1
        else [],
        badge_extra_data=struct({"points": str(10 * i)} if i % 2 else {"vip": "true"}),
    )


async def with_fields(org: Org) -> None:
    """Custom fields whose rules change what is stored (typed values, filled defaults)."""
    await add_field(org, "points", common_pb2.DATA_TYPE_INTEGER, "7")
    await add_field(org, "vip", common_pb2.DATA_TYPE_BOOLEAN, "false")
    await add_field(org, "note", common_pb2.DATA_TYPE_STRING, "n/a")


async def from_columns(backend: Backend, org_id: int, badge_id: int) -> pb.Badge:
    """The reply built from the row's columns, read directly."""
    return to_proto(await backend.db.run_read(store.get_badge, org_id, badge_id))


async def stored_message(backend: Backend, badge_id: int) -> bytes | None:
    """The badge row's message column."""
    async with backend.db.engine.connect() as conn:
        row = (
            await conn.execute(select(badges_table.c.message).where(badges_table.c.id == badge_id))
        ).one()
    return None if row[0] is None else bytes(row[0])


async def set_legacy(backend: Backend, ids: list[int]) -> None:
    """Makes rows look as if written before migration 0007."""
    async with backend.db.write() as conn:
        await conn.execute(
            update(badges_table).where(badges_table.c.id.in_(ids)).values(message=None)
        )
    for badge_id in ids:
        assert await stored_message(backend, badge_id) is None


async def assert_consistent(backend: Backend, org: Org, reply: pb.Badge) -> None:
    """GetBadge, the columns and the stored bytes all give ``reply``."""
    got = await get(org, reply.id)
    assert got == reply
    assert got == await from_columns(backend, org.id, reply.id)
    message = await stored_message(backend, reply.id)
    assert message is not None
    assert pb.Badge.FromString(message).id == 0  # stored without its id
    assert pb.Badge.FromString(wire.varint_field(1, reply.id) + message) == reply


async def list_badges(org: Org, **request: Any) -> pb.ListBadgesResponse:
    return await org.reader.badges.ListBadges(pb.ListBadgesRequest(**request))


async def assert_listed_as_got(org: Org, resp: pb.ListBadgesResponse, ids: list[int]) -> None:
    assert [b.id for b in resp.badges] == ids
    assert list(resp.badges) == [await get(org, i) for i in ids]


# --- Create and update --------------------------------------------------------------------------


async def test_create_and_update_replies_equal_the_columns(backend: Backend, org: Org) -> None:
    await with_fields(org)
    created = [await create(org, rich_badge(f"r{i}", i)) for i in range(4)]
    for reply in created:
        await assert_consistent(backend, org, reply)
    # Defaults were filled in and values typed: the stored bytes are the validated badge,
    # not the request.
    assert created[0].badge_extra_data == struct({"points": 7, "vip": True, "note": "n/a"})
    assert created[1].badge_extra_data == struct({"points": 10, "vip": False, "note": "n/a"})
    assert created[0].date_start == at("2020-01-01T10:00:00.123456Z")

    target = created[1]
    steps: list[tuple[pb.Badge, tuple[str, ...]]] = [
        (pb.Badge(title="Renamed"), ("title",)),
        (pb.Badge(frequency=pb.Frequency(freq_cap=4)), ("frequency.freq_cap",)),
        (
            pb.Badge(frequency=pb.Frequency(freq_period=pb.FREQUENCY_PERIOD_MONTH)),
            ("frequency.freq_period",),
        ),
        (pb.Badge(badge_extra_data=struct({"points": "-3"})), ("badge_extra_data",)),
        (pb.Badge(is_enabled=False, tags=tags("Other")), ("is_enabled", "tags")),
        (pb.Badge(date_end=at("2050-06-01T00:00:00.000000999Z")), ("date_end",)),
        (pb.Badge(), ("segment",)),
        (rich_badge("r1-star", 5), ("*",)),
    ]
    previous = target
    for patch, paths in steps:
        patch.id = target.id
        updated = await update_badge(org, patch, *paths)
        assert updated.id == target.id
        assert updated.create_time == target.create_time
        assert updated.update_time.ToMicroseconds() >= previous.update_time.ToMicroseconds()
        assert updated != previous, paths
        await assert_consistent(backend, org, updated)
        previous = updated
    assert previous.name == "r1-star" and previous.title == "Title 5 é"
    assert previous.frequency.freq_period_name == "week"
    # The other badges were not touched.
    for reply in (created[0], created[2], created[3]):
        await assert_consistent(backend, org, reply)


async def test_concurrent_creates_each_store_their_own_reply(backend: Backend, org: Org) -> None:
    """Creates that share a group commit (SQLite): each gets its own reply or error, and the
    stored bytes of each match its columns."""
    await with_fields(org)
    requests = [
        rich_badge(f"c{i}", i)
        if i % 4 != 3
        else valid_badge(f"c{i}", badge_extra_data=struct({"points": "x"}))
        for i in range(24)
    ]
    requests.append(rich_badge("c0", 1))  # the same name as request 0: one of them wins
    outcomes = await asyncio.gather(*(create(org, r) for r in requests), return_exceptions=True)
    ok = []
    for i, (sent, got) in enumerate(zip(requests, outcomes, strict=True)):
        if i % 4 == 3 and i < 24:
            assert isinstance(got, grpc.aio.AioRpcError)
            assert got.code() == grpc.StatusCode.INVALID_ARGUMENT
        elif isinstance(got, pb.Badge):
            assert (got.name, got.title) == (sent.name, sent.title)
            ok.append(got)
    same_name = [outcomes[0], outcomes[-1]]
    lost = [o for o in same_name if not isinstance(o, pb.Badge)]
    assert len(lost) == 1, same_name
    assert isinstance(lost[0], grpc.aio.AioRpcError)
    assert lost[0].code() == grpc.StatusCode.ALREADY_EXISTS
    for reply in ok:
        await assert_consistent(backend, org, reply)
    listed = await list_badges(org, page_size=25)
    assert sorted(b.id for b in listed.badges) == sorted(b.id for b in ok)
    assert listed.total_size == len(ok) == 18


# --- ListBadges ---------------------------------------------------------------------------------


async def test_every_kind_of_page_equals_get(backend: Backend, org: Org) -> None:
    made = [await create(org, rich_badge(f"l{i:02d}", i)) for i in range(12)]
    ids = [b.id for b in made]
    assert ids == sorted(ids)

    first = await list_badges(org, page_size=5)
    await assert_listed_as_got(org, first, ids[:5])
    assert (first.paging.total, first.paging.pages, first.paging.next_page) == (12, 3, 2)
    default = await list_badges(org)  # 10 a page by default
    await assert_listed_as_got(org, default, ids[:10])
    numbered = await list_badges(org, page=2, page_size=5)
    await assert_listed_as_got(org, numbered, ids[5:10])
    last = await list_badges(org, page=3, page_size=5)
    await assert_listed_as_got(org, last, ids[10:])
    assert not last.paging.HasField("next_page") and last.paging.prev_page == 2
    assert last.next_page_token == ""

    walked: list[int] = []
    token = first.next_page_token
    walked += [b.id for b in first.badges]
    while token:
        page = await list_badges(org, page_size=5, page_token=token)
        await assert_listed_as_got(org, page, ids[len(walked) : len(walked) + 5])
        walked += [b.id for b in page.badges]
        token = page.next_page_token
    assert walked == ids

    enabled = [b.id for b in made if b.is_enabled]
    disabled = [b.id for b in made if not b.is_enabled]
    even = [b.id for b in made if any(t.tag_name == "Even" for t in b.tags)]
    await assert_listed_as_got(
        org, await list_badges(org, is_enabled=False, page_size=25), disabled
    )
    await assert_listed_as_got(org, await list_badges(org, is_enabled=True, page_size=25), enabled)
    await assert_listed_as_got(org, await list_badges(org, tag_name="Even", page_size=25), even)
    page2 = await list_badges(org, tag_name="Even", page=2, page_size=4)
    await assert_listed_as_got(org, page2, even[4:8])
    assert page2.total_size == len(even) == 6
    tokened = await list_badges(org, tag_name="Even", page_size=4)
    after = await list_badges(org, tag_name="Even", page_size=4, page_token=tokened.next_page_token)
    await assert_listed_as_got(org, after, even[4:])

    # Pages past the end and before the start hold no badges on the stored-bytes path either.
    assert list((await list_badges(org, page=9, page_size=5)).badges) == []
    assert list((await list_badges(org, page=0, page_size=5)).badges) == []
    for b in made:
        assert await from_columns(backend, org.id, b.id) == await get(org, b.id)


# --- Rows from before migration 0007 ------------------------------------------------------------


async def test_rows_without_stored_bytes_read_the_same(backend: Backend, org: Org) -> None:
    made = [await create(org, rich_badge(f"g{i}", i)) for i in range(9)]
    ids = [b.id for b in made]
    requests: list[dict[str, Any]] = [
        {"page_size": 3},
        {"page": 2, "page_size": 3},
        {"page": 3, "page_size": 3},
        {"page": 4, "page_size": 3},
        {"page": 0, "page_size": 3},
        {"page_size": 25},
        {"page_size": 4, "is_enabled": True},
        {"page_size": 2, "tag_name": "Even"},
        {"page": 2, "page_size": 2, "tag_name": "Even"},
    ]
    first = await list_badges(org, page_size=3)
    requests.append({"page_size": 3, "page_token": first.next_page_token})
    before_lists = [await list_badges(org, **r) for r in requests]
    before_gets = [await get(org, i) for i in ids]

    # Rows 1, 3 and 4, 5 (all of page 2 of 3) go back to "no stored bytes".
    legacy = [ids[1], ids[3], ids[4], ids[5]]
    await set_legacy(backend, legacy)
    assert [await get(org, i) for i in ids] == before_gets
    for r, before in zip(requests, before_lists, strict=True):
        assert await list_badges(org, **r) == before, r
    for i in ids:
        assert await from_columns(backend, org.id, i) == await get(org, i)

    # An update of a legacy row stores its bytes again; the other legacy rows stay as they were.
    updated = await update_badge(org, pb.Badge(id=ids[3], title="New title"), "title")
    assert updated.title == "New title"
    await assert_consistent(backend, org, updated)
    for i in (ids[1], ids[4], ids[5]):
        assert await stored_message(backend, i) is None
    before_gets[3] = updated
    assert [await get(org, i) for i in ids] == before_gets
    assert list((await list_badges(org, page_size=25)).badges) == before_gets


# --- NOT_FOUND -----------------------------------------------------------------------------------


def not_found_details(got: ErrorDetails, badge_id: int) -> None:
    assert got.code == NOT_FOUND
    assert got.message == f"badge {badge_id} not found"
    assert got.info is not None
    assert (got.info.reason, got.info.domain) == ("NOT_FOUND", "badges.v1")
    assert dict(got.info.metadata) == {"resource": "badge", "id": str(badge_id)}
    assert got.bad_request is None


async def test_not_found_keeps_its_details(backend: Backend, org: Org, other_org: Org) -> None:
    mine = await create(org, rich_badge("mine", 1))
    mine_legacy = await create(org, rich_badge("mine-legacy", 2))
    gone = await create(org, rich_badge("gone", 3))
    await org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=gone.id))
    await set_legacy(backend, [mine_legacy.id])
    for badge_id in (mine.id, mine_legacy.id, gone.id, 987_654_321, 0, -1, 2**63 - 1):
        client = (
            org if badge_id == gone.id or badge_id not in (mine.id, mine_legacy.id) else other_org
        )
        got = await expect_error(
            client.reader.badges.GetBadge(pb.GetBadgeRequest(id=badge_id)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        not_found_details(got, badge_id)
        # The same details as UpdateBadge's, which reads the badge through the columns.
        via_update = await expect_error(
            update_badge(client, pb.Badge(id=badge_id, title="x"), "title"),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        assert via_update == got
    # Neither badge changed for its own org.
    assert await get(org, mine.id) == mine
    assert await get(org, mine_legacy.id) == mine_legacy
