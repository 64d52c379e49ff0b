"""Badge queries: one row per badge, plus badge_tags for the tag filter."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.badges import (
    Badge,
    BadgeFilter,
    BadgeState,
    BadgeStateType,
    BadgeTag,
    EligibilityType,
    Frequency,
    FrequencyPeriod,
    Segment,
    badge_awarded,
    duplicate_name,
)
from badge_service.domain.errors import NotFound
from badge_service.store import awards as awards_store
from badge_service.store.db import from_micros, opt_datetime, opt_micros, to_micros
from badge_service.store.models import badge_tags, org_badge_counts
from badge_service.store.models import badges as t

RESOURCE = "badge"


def _values(b: Badge) -> dict[str, Any]:
    assert b.date_start and b.display_date_start and b.update_time
    return {
        "name": b.name,
        "title": b.title,
        "date_start": to_micros(b.date_start),
        "date_end": opt_micros(b.date_end),
        "display_date_start": to_micros(b.display_date_start),
        "display_date_end": opt_micros(b.display_date_end),
        "is_enabled": b.is_enabled,
        "badge_states": [
            {
                "state": int(s.state) if s.state else 0,
                "order": s.order,
                "description": s.description,
                "image_url": s.image_url,
            }
            for s in b.badge_states
        ],
        "freq_cap": b.frequency.freq_cap,
        "freq_period": int(b.frequency.freq_period) if b.frequency.freq_period else None,
        "freq_max": b.frequency.freq_max,
        "tags": [{"tag_name": g.tag_name, "tag_id": g.tag_id} for g in b.tags],
        "segments": [
            {
                "name": s.name,
                "subscription_id": s.subscription_id,
                "eligibility_type": s.eligibility_type.value if s.eligibility_type else None,
            }
            for s in b.segments
        ],
        "extra_data": b.extra_data,
        "update_time": to_micros(b.update_time),
    }


def _from_row(r: Any) -> Badge:
    return Badge(
        id=r.id,
        org_id=r.org_id,
        name=r.name,
        title=r.title,
        date_start=from_micros(r.date_start),
        date_end=opt_datetime(r.date_end),
        display_date_start=from_micros(r.display_date_start),
        display_date_end=opt_datetime(r.display_date_end),
        is_enabled=r.is_enabled,
        badge_states=[
            BadgeState(BadgeStateType(s["state"]), s["order"], s["description"], s["image_url"])
            for s in r.badge_states
        ],
        frequency=Frequency(
            r.freq_cap,
            FrequencyPeriod(r.freq_period) if r.freq_period else None,
            r.freq_max,
        ),
        tags=[BadgeTag(g["tag_name"], g["tag_id"]) for g in r.tags],
        segments=[
            Segment(s["name"], s["subscription_id"], EligibilityType(s["eligibility_type"]))
            for s in r.segments
        ],
        extra_data=r.extra_data,
        create_time=from_micros(r.create_time),
        update_time=from_micros(r.update_time),
    )


async def _write_tags(conn: AsyncConnection, b: Badge) -> None:
    if b.tags:
        await conn.execute(
            insert(badge_tags),
            [{"badge_id": b.id, "org_id": b.org_id, "tag_name": g.tag_name} for g in b.tags],
        )


async def insert_badge(conn: AsyncConnection, b: Badge) -> int:
    """Inserts a validated badge and returns its id; ALREADY_EXISTS on a taken name."""
    assert b.create_time is not None
    values = _values(b) | {"org_id": b.org_id, "create_time": to_micros(b.create_time)}
    try:
        result = await conn.execute(insert(t).values(**values).returning(t.c.id))
    except IntegrityError:
        raise duplicate_name(b.name) from None
    b.id = int(result.scalar_one())
    await _write_tags(conn, b)
    await _bump_count(conn, b.org_id)
    return b.id


async def _bump_count(conn: AsyncConnection, org_id: int) -> None:
    # One atomic upsert: concurrent creates each add exactly one (PostgreSQL locks the row
    # until the commit, SQLite has one writer), and a failed create rolls it back. Done last so
    # the row lock is held as briefly as the transaction allows.
    c = org_badge_counts
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    await conn.execute(
        dialect.insert(c)
        .values(org_id=org_id, badges=1)
        .on_conflict_do_update(index_elements=[c.c.org_id], set_={"badges": c.c.badges + 1})
    )


async def get_badge(conn: AsyncConnection, org_id: int, badge_id: int) -> Badge:
    """One badge of the org, or NOT_FOUND."""
    row = (await conn.execute(select(t).where(t.c.id == badge_id, t.c.org_id == org_id))).first()
    if row is None:
        raise NotFound(RESOURCE, badge_id)
    return _from_row(row)


async def update_badge(conn: AsyncConnection, b: Badge) -> None:
    """Writes a validated badge back; ALREADY_EXISTS when renamed onto a taken name."""
    try:
        await conn.execute(
            update(t).where(t.c.id == b.id, t.c.org_id == b.org_id).values(**_values(b))
        )
    except IntegrityError:
        raise duplicate_name(b.name) from None
    await conn.execute(delete(badge_tags).where(badge_tags.c.badge_id == b.id))
    await _write_tags(conn, b)


async def delete_badge(conn: AsyncConnection, org_id: int, badge_id: int) -> None:
    """Deletes a badge (its tags cascade), or NOT_FOUND; FAILED_PRECONDITION once it has
    awards (the awards' foreign key keeps that true under concurrency)."""
    if await awards_store.badge_has_awards(conn, org_id, badge_id):
        raise badge_awarded(badge_id)
    await conn.execute(
        delete(badge_tags).where(badge_tags.c.badge_id == badge_id, badge_tags.c.org_id == org_id)
    )
    try:
        result = await conn.execute(delete(t).where(t.c.id == badge_id, t.c.org_id == org_id))
    except IntegrityError:
        # An award of it committed after the check above.
        raise badge_awarded(badge_id) from None
    if result.rowcount == 0:
        raise NotFound(RESOURCE, badge_id)
    # The row exists: insert_badge (or the 0006 backfill) made it when this badge was stored.
    c = org_badge_counts
    await conn.execute(update(c).where(c.c.org_id == org_id).values(badges=c.c.badges - 1))


def _conditions(org_id: int, flt: BadgeFilter) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = [t.c.org_id == org_id]
    if flt.is_enabled is not None:
        cond.append(t.c.is_enabled == flt.is_enabled)
    if flt.tag_name is not None:
        cond.append(
            exists().where(
                badge_tags.c.org_id == org_id,
                badge_tags.c.tag_name == flt.tag_name,
                badge_tags.c.badge_id == t.c.id,
            )
        )
    for at, start, end in (
        (flt.earnable_at, t.c.date_start, t.c.date_end),
        (flt.displayable_at, t.c.display_date_start, t.c.display_date_end),
    ):
        if at is not None:
            micros = to_micros(at)
            cond.append(and_(start <= micros, or_(end.is_(None), end > micros)))
    return cond


async def count_badges(conn: AsyncConnection, org_id: int, flt: BadgeFilter) -> int:
    """How many of the org's badges match the filter. Without filters this reads the org's
    maintained count (one row, whatever the org's size); with any filter it counts the
    matching rows, which costs time in proportion to the org's badges."""
    if flt == _NO_FILTER:
        c = org_badge_counts
        found = (await conn.execute(select(c.c.badges).where(c.c.org_id == org_id))).scalar()
        return int(found or 0)
    stmt = select(func.count()).select_from(t).where(*_conditions(org_id, flt))
    return int((await conn.execute(stmt)).scalar_one())


_NO_FILTER = BadgeFilter()


async def list_badges(
    conn: AsyncConnection,
    org_id: int,
    flt: BadgeFilter,
    *,
    limit: int,
    after_id: int | None = None,
    offset: int = 0,
) -> list[Badge]:
    """Badges in id order: after a keyset position, or at an offset (numbered pages)."""
    stmt = select(t).where(*_conditions(org_id, flt)).order_by(t.c.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(t.c.id > after_id)
    if offset:
        stmt = stmt.offset(offset)
    return [_from_row(r) for r in await conn.execute(stmt)]
