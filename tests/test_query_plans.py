"""Numbered pages walk the (org_id, id) index from the org's first badge, also for an org
whose ids come after everyone else's: with a plain equality PostgreSQL would walk the primary
key and skip every other org's rows first (db.equal_in_order)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.badges import BadgeFilter
from badge_service.store import badges as store
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade
from badge_service.store.models import badges
from tests.support import own_database_url

EARLY, LATE = 3_000, 30_000  # the late org holds most rows, all with the highest ids


@pytest.fixture(params=["sqlite", "postgres"])
async def skewed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """Two orgs: an early one, then a late one with ten times its badges."""
    async with own_database_url(request.param, tmp_path) as url:
        db = Database(url)
        try:
            await upgrade(db)
            async with db.engine.begin() as conn:
                for org, count in ((1, EARLY), (2, LATE)):
                    await conn.execute(
                        text(
                            "INSERT INTO orgs (id, uuid, name, created_at) "
                            "VALUES (:id, :uuid, :name, 0)"
                        ),
                        {
                            "id": org,
                            "uuid": f"00000000-0000-0000-0000-00000000000{org}",
                            "name": f"o{org}",
                        },
                    )
                    await conn.execute(
                        badges.insert(),
                        [
                            {
                                "org_id": org,
                                "name": f"b{i}",
                                "title": "t",
                                "date_start": 0,
                                "display_date_start": 0,
                                "is_enabled": True,
                                "badge_states": [],
                                "tags": [],
                                "segments": [],
                                "extra_data": {},
                                "create_time": 0,
                                "update_time": 0,
                                "message": b"\x12\x01x",
                            }
                            for i in range(count)
                        ],
                    )
            async with db.engine.connect() as conn:
                if db.is_sqlite:
                    await conn.execute(text("ANALYZE"))
                else:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("ANALYZE badges"))
            yield db
        finally:
            await db.close()


async def _plan(conn: AsyncConnection, stmt: Any, params: dict[str, Any]) -> str:
    """The database's plan for ``stmt`` with these parameter values, as text."""
    compiled = stmt.compile(dialect=conn.dialect)
    values = tuple(params.get(name, compiled.params.get(name)) for name in compiled.positiontup)
    prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    rows = (await conn.exec_driver_sql(prefix + compiled.string, values)).all()
    return "\n".join(str(r[-1]) for r in rows)


async def test_numbered_pages_walk_the_org_index(skewed: Database) -> None:
    params = {"org_id": 2, "limit": 26, "offset": 0}
    async with skewed.engine.connect() as conn:
        plan = await _plan(conn, store.PAGE_AT, params)
        filtered = await _plan(
            conn, store._page(select(badges.c.id), 2, BadgeFilter(is_enabled=True), 26, None, 0), {}
        )
    for found in (plan, filtered):
        assert "ix_badges_org_id_id" in found, found
        assert "pk_badges" not in found, found


async def test_the_late_orgs_first_page_is_its_own_first_badges(skewed: Database) -> None:
    (rows,) = await skewed.fetch((store.PAGE_AT, {"org_id": 2, "limit": 3, "offset": 0}))
    assert [r[0] for r in rows] == [EARLY + 1, EARLY + 2, EARLY + 3]


async def test_a_plain_equality_would_walk_the_primary_key_on_postgresql(
    skewed: Database,
) -> None:
    """Why equal_in_order exists: the same page with ``org_id = :org`` on this layout."""
    if skewed.is_sqlite:
        pytest.skip("SQLite's planner takes the org index either way")
    plain = (
        select(badges.c.id)
        .where(badges.c.org_id == bindparam("org_id"))
        .order_by(badges.c.id)
        .limit(bindparam("limit"))
    )
    async with skewed.engine.connect() as conn:
        plan = await _plan(conn, plain, {"org_id": 2, "limit": 26})
    assert "pk_badges" in plan, plan
