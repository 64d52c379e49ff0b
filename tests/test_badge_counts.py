"""The per-org badge count (org_badge_counts) behind unfiltered ListBadges totals: exact after
concurrent creates, deletes, and writes that fail; filtered totals still count the matches;
and migration 0006 backfills it from the badges already stored.

Every check compares the API's totals with a real count(*) of the org's badge rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, insert, select

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade
from badge_service.store.models import badges, org_badge_counts, orgs
from tests.support import Backend, Org, expect_error, migrate, own_database_url
from tests.test_awards import awards, give, make_badge, member
from tests.test_badges import create, valid_badge


async def stored(backend: Backend, org_id: int) -> tuple[int, int | None]:
    """(count(*) of the org's badge rows, the org's kept count or None without a row)."""
    async with backend.db.engine.connect() as conn:
        rows = (
            await conn.execute(select(func.count()).where(badges.c.org_id == org_id))
        ).scalar_one()
        kept = (
            await conn.execute(
                select(org_badge_counts.c.badges).where(org_badge_counts.c.org_id == org_id)
            )
        ).scalar()
    return int(rows), None if kept is None else int(kept)


async def totals(org: Org, size: int = 10, **filters: Any) -> tuple[int, int, int]:
    """(paging.total, paging.pages, total_size) of ListBadges' first numbered page."""
    resp = await org.reader.badges.ListBadges(pb.ListBadgesRequest(page_size=size, **filters))
    return resp.paging.total, resp.paging.pages, resp.total_size


async def assert_total(backend: Backend, org: Org, expected: int) -> None:
    """The API's unfiltered totals, the kept count and the rows all say ``expected``."""
    assert await totals(org) == (expected, -(-expected // 10), expected)
    assert await stored(backend, org.id) == (expected, expected)


async def test_new_org_has_no_badges_and_no_count_row(backend: Backend, org: Org) -> None:
    assert await totals(org) == (0, 0, 0)
    assert await stored(backend, org.id) == (0, None)


async def test_concurrent_creates_are_all_counted(backend: Backend, org: Org) -> None:
    made = await asyncio.gather(*(create(org, valid_badge(f"c{i:02d}")) for i in range(30)))
    assert len({b.id for b in made}) == 30
    await assert_total(backend, org, 30)
    # The kept total drives CrowdTwist paging: 30 badges in pages of 7 are 5 pages, the last
    # one holding 2, and the page token walk ends after exactly 30.
    resp = await org.reader.badges.ListBadges(pb.ListBadgesRequest(page=5, page_size=7))
    assert (resp.paging.total, resp.paging.pages, len(resp.badges)) == (30, 5, 2)
    assert not resp.paging.HasField("next_page") and resp.paging.prev_page == 4
    seen: list[int] = []
    token = ""
    while True:
        page = await org.reader.badges.ListBadges(
            pb.ListBadgesRequest(page_size=7, page_token=token)
        )
        assert (page.paging.total, page.total_size) == (30, 30)
        seen += [b.id for b in page.badges]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(b.id for b in made)


async def test_failed_creates_do_not_count(backend: Backend, org: Org) -> None:
    await create(org, valid_badge("taken"))
    # Concurrent duplicates: exactly one of them may win, the rest roll back their count.
    results = await asyncio.gather(
        *(create(org, valid_badge("raced")) for _ in range(8)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, pb.Badge)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(wins), len(losses)) == (1, 7)
    assert {e.code() for e in losses} == {grpc.StatusCode.ALREADY_EXISTS}
    await expect_error(
        create(org, valid_badge("taken")), grpc.StatusCode.ALREADY_EXISTS, reason="BADGE_NAME_TAKEN"
    )
    # Invalid badges fail before the store.
    await expect_error(
        create(org, valid_badge("no-states", badge_states=[])), grpc.StatusCode.INVALID_ARGUMENT
    )
    await assert_total(backend, org, 2)


async def test_deletes_are_counted_and_failed_deletes_are_not(backend: Backend, org: Org) -> None:
    made = [await create(org, valid_badge(f"d{i}")) for i in range(5)]
    await org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=made[0].id))
    await assert_total(backend, org, 4)
    await expect_error(
        org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=made[0].id)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    awarded = await make_badge(org, "awarded")
    await give(org.admin, badge_id=awarded.id, recipient=member("m1"))
    await expect_error(
        org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=awarded.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="BADGE_AWARDED",
    )
    await assert_total(backend, org, 5)
    # Creates and deletes at once: 4 deleted, 10 created.
    await asyncio.gather(
        *(org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=b.id)) for b in made[1:]),
        *(create(org, valid_badge(f"e{i}")) for i in range(10)),
    )
    await assert_total(backend, org, 11)


async def test_another_orgs_badges_do_not_count(backend: Backend, org: Org, other_org: Org) -> None:
    await asyncio.gather(*(create(other_org, valid_badge(f"o{i}")) for i in range(3)))
    await create(org, valid_badge("mine"))
    await assert_total(backend, org, 1)
    await assert_total(backend, other_org, 3)
    # A tenant's delete cannot reach (or uncount) another org's badge.
    theirs = (await other_org.reader.badges.ListBadges(pb.ListBadgesRequest())).badges[0]
    await expect_error(
        org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=theirs.id)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    await assert_total(backend, other_org, 3)


async def test_filtered_totals_still_count_the_matches(backend: Backend, org: Org) -> None:
    await asyncio.gather(
        *(create(org, valid_badge(f"f{i}", is_enabled=i % 3 == 0)) for i in range(7))
    )
    assert await totals(org, size=2, is_enabled=True) == (3, 2, 3)
    assert await totals(org, size=2, is_enabled=False) == (4, 2, 4)
    assert await totals(org, size=2, tag_name="none") == (0, 0, 0)
    await assert_total(backend, org, 7)


async def test_award_recipient_states_total_uses_the_count(backend: Backend, org: Org) -> None:
    # ListRecipientBadgeStates shares the unfiltered count.
    await asyncio.gather(*(make_badge(org, f"s{i}") for i in range(4)))
    await assert_total(backend, org, 4)
    resp = await awards(org.reader).ListRecipientBadgeStates(
        apb.ListRecipientBadgeStatesRequest(recipient=member("m1"), page_size=3)
    )
    assert (resp.total_size, len(resp.states)) == (4, 3)


# --- Migration 0006 backfill ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of its own (the migration test downgrades it)."""
    async with own_database_url(request.param, tmp_path) as url:
        db = Database(url)
        try:
            await upgrade(db)
            yield db
        finally:
            await db.close()


async def test_migration_backfills_counts(fresh_db: Database) -> None:
    engine = fresh_db.engine
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    async with engine.begin() as conn:
        org_ids = [
            int(
                (
                    await conn.execute(
                        insert(orgs)
                        .values(
                            uuid=f"00000000-0000-0000-0000-00000000000{i}",
                            name=f"o{i}",
                            created_at=now,
                        )
                        .returning(orgs.c.id)
                    )
                ).scalar_one()
            )
            for i in range(3)
        ]
    async with engine.begin() as conn:
        await conn.run_sync(migrate, "down", "0005")
        tables = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
        assert "org_badge_counts" not in tables
        # Badges stored before 0006: 3 in the first org, 5 in the second, none in the third.
        await conn.execute(
            insert(badges),
            [
                {
                    "org_id": org_id,
                    "name": f"b{i}",
                    "title": "t",
                    "date_start": now,
                    "display_date_start": now,
                    "is_enabled": True,
                    "badge_states": [],
                    "tags": [],
                    "segments": [],
                    "extra_data": {},
                    "create_time": now,
                    "update_time": now,
                }
                for org_id, n in zip(org_ids, (3, 5, 0), strict=True)
                for i in range(n)
            ],
        )
    async with engine.begin() as conn:
        await conn.run_sync(migrate, "up", "head")
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(org_badge_counts.c.org_id, org_badge_counts.c.badges))
        ).all()
    assert sorted((int(o), int(n)) for o, n in rows) == [(org_ids[0], 3), (org_ids[1], 5)]
