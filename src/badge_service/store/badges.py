"""Badge queries: one row per badge, plus badge_tags for the tag filter.

Functions take a synchronous Connection: they run whole inside ``Database.run_read`` /
``run_write`` (one thread trip on SQLite), or from async code through ``conn.run_sync``.
Each row also keeps its serialized reply (``message``, see migration 0007), which the read
paths return instead of the decoded row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

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
)
from badge_service.domain.errors import NotFound
from badge_service.store import awards as awards_store
from badge_service.store.db import (
    PreparedLookup,
    at_commit,
    equal_in_order,
    execute_prepared,
    from_micros,
    opt_datetime,
    opt_micros,
    to_micros,
)
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


def from_row(r: Any) -> Badge:
    """The domain badge of a badges row."""
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


# Write statements built once: SQLAlchemy computes a statement's cache key per statement
# object, which for an insert built with .values(...) per call cost more than running it.
_INSERT = insert(t).returning(t.c.id)
_INSERT_TAG = insert(badge_tags)


def _bump_statement(dialect: Any) -> Any:
    c = org_badge_counts
    ins = dialect.insert(c).values(org_id=bindparam("org_id"), badges=bindparam("n"))
    return ins.on_conflict_do_update(
        index_elements=[c.c.org_id], set_={"badges": c.c.badges + ins.excluded.badges}
    )


def _add_badges(conn: Connection, key: tuple[str, int], added: list[int]) -> None:
    """The org's badge count bump (at_commit): every create of a group commit in one."""
    _, org_id = key
    params = {"org_id": org_id, "n": sum(added)}
    execute_prepared(conn, _BUMP[conn.dialect.name], params)


_BUMP = {"sqlite": _bump_statement(sqlite), "postgresql": _bump_statement(postgresql)}


def _write_tags(conn: Connection, b: Badge) -> None:
    if b.tags:
        execute_prepared(
            conn,
            _INSERT_TAG,
            [{"badge_id": b.id, "org_id": b.org_id, "tag_name": g.tag_name} for g in b.tags],
        )


def insert_badge(conn: Connection, b: Badge, message: bytes) -> int:
    """Inserts a validated badge and returns its id; ALREADY_EXISTS on a taken name.
    ``message`` is the badge's serialized reply without its id. A badge with an id (an
    imported one, see kept_id_owner) is stored under that id; else the database gives one."""
    assert b.create_time is not None
    values = _values(b) | {
        "org_id": b.org_id,
        "create_time": to_micros(b.create_time),
        "message": message,
    }
    if b.id:
        values["id"] = b.id
    # A taken name is uq_badges_org_id_name: ALREADY_EXISTS (models.VIOLATIONS).
    ((new_id,),) = execute_prepared(conn, _INSERT, values)
    b.id = int(new_id)
    _write_tags(conn, b)
    # One atomic upsert: concurrent creates each add exactly theirs (PostgreSQL locks the row
    # until the commit, SQLite has one writer), and a failed create rolls it back. Done last,
    # and in a PostgreSQL group commit once for the batch at its end, so that the row lock is
    # held as briefly as the transaction allows.
    at_commit(conn, ("badge-count", b.org_id), 1, _add_badges)
    return b.id


_OWNER = select(t.c.org_id).where(t.c.id == bindparam("id"))


def kept_id_owner(conn: Connection, badge_id: int) -> int | None:
    """The org of the badge with this id, whichever org it is; None when there is none (an
    import keeps a vendor's id only where no other org's badge has it)."""
    rows = execute_prepared(conn, _OWNER, {"id": badge_id})
    return int(rows[0][0]) if rows else None


def reserve_ids(conn: Connection, highest: int) -> None:
    """Makes ids the database gives from now on larger than ``highest`` (kept ids inserted as
    they are). PostgreSQL's sequence does not see explicit ids: it is moved past them before
    they are inserted, so a badge created meanwhile cannot take one; a sequence only moves
    forward, and the value nextval takes is a gap at most. SQLite's AUTOINCREMENT keeps its
    counter at the largest id inserted by itself."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        text(
            "SELECT setval(pg_get_serial_sequence('badges', 'id'), "
            "GREATEST(CAST(:highest AS BIGINT), nextval(pg_get_serial_sequence('badges', 'id'))))"
        ),
        {"highest": highest},
    )


# Built once (every award of a badge reads it); the stored reply bytes are not needed.
_GET = PreparedLookup(
    select(*(c for c in t.c if c.key != "message")).where(
        t.c.id == bindparam("id"), t.c.org_id == bindparam("org_id")
    )
)


def get_badge(conn: Connection, org_id: int, badge_id: int) -> Badge:
    """One badge of the org, or NOT_FOUND."""
    row = _GET.first(conn, {"id": badge_id, "org_id": org_id})
    if row is None:
        raise NotFound(RESOURCE, badge_id)
    return from_row(row)


# The hot reads, as statements built once for Database.fetch (which compiles each once, and on
# SQLite runs it on a plain sqlite3 connection): plain columns and named parameters only.
GET_MESSAGE = select(t.c.message).where(
    t.c.id == bindparam("badge_id"), t.c.org_id == bindparam("org_id")
)
"""The badge's stored reply bytes (NULL before migration 0007): badge_id, org_id."""

COUNT = select(org_badge_counts.c.badges).where(org_badge_counts.c.org_id == bindparam("org_id"))
"""The org's kept badge count (no row before its first badge): org_id."""


# A keyset page starts at its token's badge, where either index finds the next rows at once;
# a numbered page counts from the org's first badge, so it walks the org's index in order
# (db.equal_in_order), never the primary key from the oldest badge of all.
PAGE_AFTER = (
    select(t.c.id, t.c.message)
    .where(t.c.org_id == bindparam("org_id"), t.c.id > bindparam("after_id"))
    .order_by(t.c.id)
    .limit(bindparam("limit"))
)
"""Unfiltered ids and stored replies after a keyset position: org_id, after_id, limit."""

PAGE_AT = (
    select(t.c.id, t.c.message)
    .where(equal_in_order(t.c.org_id, bindparam("org_id")))
    .order_by(t.c.org_id, t.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
"""Unfiltered ids and stored replies of a numbered page: org_id, limit, offset."""


def update_badge(conn: Connection, b: Badge, message: bytes) -> None:
    """Writes a validated badge back, with its serialized reply without its id;
    ALREADY_EXISTS when renamed onto a taken name."""
    conn.execute(
        update(t)
        .where(t.c.id == b.id, t.c.org_id == b.org_id)
        .values(**_values(b), message=message)
    )
    conn.execute(delete(badge_tags).where(badge_tags.c.badge_id == b.id))
    _write_tags(conn, b)


_DELETE = delete(t).where(t.c.id == bindparam("id"), t.c.org_id == bindparam("org_id"))


def delete_badge(conn: Connection, org_id: int, badge_id: int) -> None:
    """Deletes a badge (its tags cascade), or NOT_FOUND; FAILED_PRECONDITION once it has
    awards (the awards' foreign key keeps that true under concurrency)."""
    if awards_store.badge_has_awards(conn, org_id, badge_id):
        raise badge_awarded(badge_id)
    conn.execute(
        delete(badge_tags).where(badge_tags.c.badge_id == badge_id, badge_tags.c.org_id == org_id)
    )
    # An award of it committed after the check above fails the awards' foreign key:
    # badge_awarded (models.VIOLATIONS, from the "id" parameter).
    result = conn.execute(_DELETE, {"id": badge_id, "org_id": org_id})
    if result.rowcount == 0:
        raise NotFound(RESOURCE, badge_id)
    # The row exists: insert_badge (or the 0006 backfill) made it when this badge was stored.
    c = org_badge_counts
    conn.execute(update(c).where(c.c.org_id == org_id).values(badges=c.c.badges - 1))


def _conditions(
    org_id: int, flt: BadgeFilter, *, ordered: bool = False
) -> list[ColumnElement[bool]]:
    org = equal_in_order(t.c.org_id, org_id) if ordered else t.c.org_id == org_id
    cond: list[ColumnElement[bool]] = [org]
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


def count_badges(conn: Connection, org_id: int, flt: BadgeFilter) -> int:
    """How many of the org's badges match the filter. Without filters this reads the org's
    maintained count (one row, whatever the org's size); with any filter it counts the
    matching rows, which costs time in proportion to the org's badges."""
    if flt == _NO_FILTER:
        c = org_badge_counts
        found = (conn.execute(select(c.c.badges).where(c.c.org_id == org_id))).scalar()
        return int(found or 0)
    stmt = select(func.count()).select_from(t).where(*_conditions(org_id, flt))
    return int((conn.execute(stmt)).scalar_one())


_NO_FILTER = BadgeFilter()


def list_badges(
    conn: Connection,
    org_id: int,
    flt: BadgeFilter,
    *,
    limit: int,
    after_id: int | None = None,
    offset: int = 0,
) -> list[Badge]:
    """Badges in id order: after a keyset position, or at an offset (numbered pages)."""
    stmt = _page(select(t), org_id, flt, limit, after_id, offset)
    return [from_row(r) for r in conn.execute(stmt)]


def _page(
    stmt: Select[Any], org_id: int, flt: BadgeFilter, limit: int, after_id: int | None, offset: int
) -> Select[Any]:
    if after_id is None:  # from the org's first badge: its index, in order (PAGE_AT)
        stmt = stmt.where(*_conditions(org_id, flt, ordered=True))
        stmt = stmt.order_by(t.c.org_id, t.c.id).limit(limit)
    else:
        stmt = stmt.where(*_conditions(org_id, flt)).order_by(t.c.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(t.c.id > after_id)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def list_badge_messages(
    conn: Connection,
    org_id: int,
    flt: BadgeFilter,
    *,
    limit: int,
    after_id: int | None = None,
    offset: int = 0,
) -> list[tuple[int, bytes | Badge]]:
    """list_badges as (id, stored reply bytes without the id); a row without stored bytes
    (from before migration 0007) comes as its decoded badge instead."""
    rows = conn.execute(_page(select(t.c.id, t.c.message), org_id, flt, limit, after_id, offset))
    out: list[tuple[int, bytes | Badge]] = [(int(r[0]), r[1]) for r in rows]
    missing = [badge_id for badge_id, message in out if message is None]
    if missing:
        full = {
            b.id: b
            for b in (
                from_row(r)
                for r in conn.execute(select(t).where(t.c.org_id == org_id, t.c.id.in_(missing)))
            )
        }
        out = [(i, full[i] if m is None else m) for i, m in out]
    return out
