"""Award queries: awards, the CrowdTwist counters that cap them, Credly duplicates and
counters, Badgr claim code redemption, revocation and lists.

Every limit is the database's: counters move with one conditional upsert, a duplicate is a
unique key, a claim code use is one conditional UPDATE. Nothing here reads a value, decides in
Python and writes it back, so concurrent awards (in this process or another) cannot pass a
limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain import awards as domain
from badge_service.domain.awards import (
    Award,
    AwardFilter,
    AwardKind,
    CounterLimit,
    Evidence,
    parse_recipient_key,
)
from badge_service.domain.badgr import CLAIM_CODE
from badge_service.domain.errors import NotFound
from badge_service.domain.ids import is_hex_id
from badge_service.store import events
from badge_service.store.db import from_micros, opt_datetime, opt_micros, to_micros
from badge_service.store.models import award_counters as ct
from badge_service.store.models import awards as t
from badge_service.store.models import badge_templates as tt
from badge_service.store.models import badgr_badge_classes as bct
from badge_service.store.models import badgr_claim_codes as cct


def _dialect(conn: AsyncConnection) -> Any:
    return sqlite if conn.dialect.name == "sqlite" else postgresql


def _row_values(a: Award, dedupe_key: str | None) -> dict[str, Any]:
    assert a.issued_at is not None and a.create_time is not None
    return {
        "id": a.id,
        "org_id": a.org_id,
        "kind": a.kind.value,
        "badge_id": a.badge_id,
        "badge_template_id": a.badge_template_id,
        "badge_class_id": a.badge_class_id,
        "recipient_key": a.recipient_key,
        "issued_at": to_micros(a.issued_at),
        "narrative": a.narrative,
        "evidence": [{"url": e.url, "narrative": e.narrative} for e in a.evidence],
        "custom_data": a.custom_data,
        "expires_at": opt_micros(a.expires_at),
        "revoked_at": opt_micros(a.revoked_at),
        "revocation_reason": a.revocation_reason,
        "claim_code": a.claim_code,
        "salt": a.salt,
        "dedupe_key": dedupe_key,
        "create_time": to_micros(a.create_time),
        "created_by": a.created_by,
    }


def _from_row(r: Any) -> Award:
    return Award(
        kind=AwardKind(r.kind),
        recipient=parse_recipient_key(r.recipient_key),
        badge_id=r.badge_id,
        badge_template_id=r.badge_template_id,
        badge_class_id=r.badge_class_id,
        issued_at=from_micros(r.issued_at),
        narrative=r.narrative,
        evidence=[Evidence(e.get("url", ""), e.get("narrative", "")) for e in r.evidence],
        custom_data=dict(r.custom_data),
        expires_at=opt_datetime(r.expires_at),
        revoked_at=opt_datetime(r.revoked_at),
        revocation_reason=r.revocation_reason,
        claim_code=r.claim_code,
        salt=r.salt,
        id=r.id,
        org_id=r.org_id,
        create_time=from_micros(r.create_time),
        created_by=r.created_by,
    )


async def get_award(conn: AsyncConnection, org_id: int, award_id: str) -> Award:
    """One award of the org, or NOT_FOUND (also for ids of another org)."""
    if not is_hex_id(award_id):
        raise NotFound(domain.RESOURCE, award_id[:64])
    row = (await conn.execute(select(t).where(t.c.id == award_id, t.c.org_id == org_id))).first()
    if row is None:
        raise NotFound(domain.RESOURCE, award_id)
    return _from_row(row)


# --- CrowdTwist counters ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterWant:
    """One request's claim on counters: the slots of ``limits`` (all or none) for one
    recipient of one badge. ``token`` names the request in the answer."""

    token: int
    badge_id: int
    recipient_key: str
    limits: Sequence[CounterLimit]


async def take_counters(
    conn: AsyncConnection, org_id: int, wants: Sequence[CounterWant]
) -> dict[int, CounterLimit]:
    """Takes the counter slots of every want that fits, in order; returns the wants refused,
    by token, with the first limit that was full. A refused want holds no slot.

    A slot is taken by ``INSERT .. ON CONFLICT DO UPDATE SET count = count + 1 WHERE count <
    cap RETURNING``: the row lock (PostgreSQL) or the write lock (SQLite) makes the check and
    the increment one step, so concurrent awards cannot both take the last slot. Wants go in
    rounds: the n-th want of each (badge, recipient) in round n. A round never names a counter
    twice, so each of its levels (freq_max, then freq_cap) is one multi-row statement (cheap
    for a batch of 10,000 recipients), and within one recipient earlier wants come first.
    """
    groups: dict[tuple[int, str], list[CounterWant]] = {}
    for want in wants:
        if want.limits:
            groups.setdefault((want.badge_id, want.recipient_key), []).append(want)
    refused: dict[int, CounterLimit] = {}
    # Counters found full. They stay full to the end of the transaction (the failed upsert
    # still locks the row on PostgreSQL; SQLite writers are serialised), so later wants of
    # them are refused without asking again.
    full: set[tuple[int, str, str]] = set()
    # Keys in a fixed order in every transaction, so concurrent batches wait, not deadlock.
    ordered = [groups[k] for k in sorted(groups)]
    depth = max((len(g) for g in ordered), default=0)
    for n in range(depth):
        alive = []
        for g in ordered:
            if len(g) <= n:
                continue
            w = g[n]
            # A want with a counter already known full is refused before taking any slot.
            known = [x for x in w.limits if (w.badge_id, w.recipient_key, x.period) in full]
            if known:
                refused[w.token] = known[0]
            else:
                alive.append(w)
        if not alive:
            continue
        taken: dict[int, list[str]] = {w.token: [] for w in alive}
        levels = max(len(w.limits) for w in alive)
        for level in range(levels):
            batch = [w for w in alive if w.token not in refused and len(w.limits) > level]
            if not batch:
                continue
            got = await _take_level(conn, org_id, batch, level)
            for w in batch:
                limit = w.limits[level]
                key = (w.badge_id, w.recipient_key, limit.period)
                if key in got:
                    taken[w.token].append(limit.period)
                else:
                    refused[w.token] = limit
                    full.add(key)
        undo = [(w, taken[w.token]) for w in alive if w.token in refused and taken[w.token]]
        for w, periods in undo:
            await release_counters(conn, w.badge_id, w.recipient_key, periods)
    return refused


async def _take_level(
    conn: AsyncConnection, org_id: int, wants: Sequence[CounterWant], level: int
) -> set[tuple[int, str, str]]:
    """One slot of limit ``level`` of each want (no counter twice); the counters taken."""
    t_ = ct
    ins = _dialect(conn).insert(t_)
    stmt = ins.on_conflict_do_update(
        index_elements=[t_.c.badge_id, t_.c.recipient_key, t_.c.period],
        set_={"count": t_.c.count + 1, "cap": ins.excluded.cap},
        where=t_.c.count < ins.excluded.cap,
    ).returning(t_.c.badge_id, t_.c.recipient_key, t_.c.period)
    rows = [
        {
            "badge_id": w.badge_id,
            "recipient_key": w.recipient_key,
            "period": w.limits[level].period,
            "org_id": org_id,
            "count": 1,
            "cap": w.limits[level].limit,
        }
        for w in wants
    ]
    if len(rows) == 1:
        # One row: a plain execute (executemany's batching buys nothing here).
        result = await conn.execute(stmt.values(**rows[0]))
    else:
        result = await conn.execute(stmt, rows)
    return {(r.badge_id, r.recipient_key, r.period) for r in result}


async def release_counters(
    conn: AsyncConnection, badge_id: int, rkey: str, periods: Iterable[str]
) -> None:
    """Gives back one slot of each period (never below 0)."""
    periods = list(periods)
    if not periods:
        return
    await conn.execute(
        update(ct)
        .where(
            ct.c.badge_id == badge_id,
            ct.c.recipient_key == rkey,
            ct.c.period.in_(periods),
            ct.c.count > 0,
        )
        .values(count=ct.c.count - 1)
    )


# --- Inserting ------------------------------------------------------------------------------


async def insert_awards(
    conn: AsyncConnection, rows: Sequence[tuple[Award, str | None]]
) -> set[str]:
    """Inserts awards (each with its Credly dedupe key or None) in multi-row statements and
    returns the ids inserted. An award whose dedupe key is taken (by a live award, or by an
    earlier row of the same batch) is skipped by ``ON CONFLICT DO NOTHING``: its id is missing
    from the result, and the caller reports it as a duplicate."""
    if not rows:
        return set()
    # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs of
    # one cached statement (a statement built with .values(list) would be compiled afresh
    # for every call, which costs more than the database's work).
    stmt = _dialect(conn).insert(t).on_conflict_do_nothing().returning(t.c.id)
    result = await conn.execute(stmt, [_row_values(a, key) for a, key in rows])
    return set(result.scalars())


async def add_template_counts(conn: AsyncConnection, org_id: int, deltas: dict[str, int]) -> None:
    """Moves badges_count of templates by the deltas, in id order (a fixed lock order, so
    two batches touching the same templates cannot deadlock)."""
    for template_id in sorted(deltas):
        delta = deltas[template_id]
        if delta:
            await conn.execute(
                update(tt)
                .where(tt.c.id == template_id, tt.c.org_id == org_id)
                .values(badges_count=tt.c.badges_count + delta)
            )


async def append_award_events(
    conn: AsyncConnection, org_id: int, kind: str, award_ids: Sequence[str], now: dt.datetime
) -> None:
    """Appends one event per award, in order, as the last statements of the transaction."""
    if award_ids:
        await events.append_many(conn, org_id, kind, [{"award_id": i} for i in award_ids], now)


# --- Badgr claim codes --------------------------------------------------------------------------


async def use_claim_code(
    conn: AsyncConnection, org_id: int, class_id: str, code: str, now: dt.datetime
) -> None:
    """Takes one use of a claim code: one ``UPDATE .. SET uses_remaining = uses_remaining - 1
    WHERE uses_remaining > 0 AND not expired``, so each use is taken exactly once however many
    redeem at once. NOT_FOUND for an unknown code; FAILED_PRECONDITION when expired or used up."""
    micros = to_micros(now)
    where = [cct.c.org_id == org_id, cct.c.badge_class_id == class_id, cct.c.code == code]
    result = await conn.execute(
        update(cct)
        .where(
            *where,
            cct.c.uses_remaining > 0,
            or_(cct.c.expires_at.is_(None), cct.c.expires_at > micros),
        )
        .values(uses_remaining=cct.c.uses_remaining - 1)
        .returning(cct.c.id)
    )
    if result.first() is not None:
        return
    row = (await conn.execute(select(cct.c.expires_at).where(*where))).first()
    failure = domain.claim_code_failure(
        code,
        exists=row is not None,
        expired=row is not None and row.expires_at is not None and row.expires_at <= micros,
    )
    if failure is None:
        raise NotFound(CLAIM_CODE, code)
    raise failure


# --- Revoking -----------------------------------------------------------------------------------


async def revoke_award(
    conn: AsyncConnection, org_id: int, award_id: str, reason: str, now: dt.datetime
) -> Award:
    """Marks an award revoked and frees its Credly dedupe key, with one conditional UPDATE
    (so two revocations cannot both succeed). NOT_FOUND, or FAILED_PRECONDITION
    ALREADY_REVOKED."""
    if not is_hex_id(award_id):
        raise NotFound(domain.RESOURCE, award_id[:64])
    row = (
        await conn.execute(
            update(t)
            .where(t.c.id == award_id, t.c.org_id == org_id, t.c.revoked_at.is_(None))
            .values(revoked_at=to_micros(now), revocation_reason=reason, dedupe_key=None)
            .returning(*t.c)
        )
    ).first()
    if row is None:
        await get_award(conn, org_id, award_id)  # NOT_FOUND when it does not exist
        raise domain.already_revoked(award_id)
    return _from_row(row)


# --- Lists ----------------------------------------------------------------------------------------


def _conditions(org_id: int, flt: AwardFilter, now: dt.datetime) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = [t.c.org_id == org_id]
    if flt.badge_id is not None:
        cond.append(t.c.badge_id == flt.badge_id)
    if flt.badge_template_id is not None:
        cond.append(t.c.badge_template_id == flt.badge_template_id)
    if flt.badge_class_id is not None:
        cond.append(t.c.badge_class_id == flt.badge_class_id)
    if flt.recipient_key is not None:
        cond.append(t.c.recipient_key == flt.recipient_key)
    if flt.revoked is not None:
        cond.append(t.c.revoked_at.is_not(None) if flt.revoked else t.c.revoked_at.is_(None))
    if flt.expired is not None:
        micros = to_micros(now)
        if flt.expired:
            cond.append(and_(t.c.expires_at.is_not(None), t.c.expires_at <= micros))
        else:
            cond.append(or_(t.c.expires_at.is_(None), t.c.expires_at > micros))
    return cond


async def count_awards(
    conn: AsyncConnection, org_id: int, flt: AwardFilter, now: dt.datetime
) -> int:
    """How many of the org's awards match."""
    stmt = select(func.count()).select_from(t).where(*_conditions(org_id, flt, now))
    return int((await conn.execute(stmt)).scalar_one())


async def list_awards(
    conn: AsyncConnection,
    org_id: int,
    flt: AwardFilter,
    now: dt.datetime,
    *,
    limit: int,
    after: str | None = None,
) -> list[Award]:
    """Awards oldest first (id order), after a keyset position."""
    stmt = select(t).where(*_conditions(org_id, flt, now)).order_by(t.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(t.c.id > after)
    return [_from_row(r) for r in await conn.execute(stmt)]


async def class_entity_ids(conn: AsyncConnection, class_ids: Iterable[str]) -> dict[str, str]:
    """The entity ids of badge classes by 24-hex id (what award messages show)."""
    ids = sorted(set(class_ids))
    if not ids:
        return {}
    rows = await conn.execute(select(bct.c.id, bct.c.entity_id).where(bct.c.id.in_(ids)))
    return {r.id: r.entity_id for r in rows}


# --- Definition deletes -------------------------------------------------------------------------


def badge_has_awards(conn: Connection, org_id: int, badge_id: int) -> bool:
    """Whether any award (live or revoked) is of the badge (synchronous: called by the badge
    store inside its transaction)."""
    stmt = select(exists().where(t.c.badge_id == badge_id, t.c.org_id == org_id))
    return bool(conn.execute(stmt).scalar())


async def template_award_count(conn: AsyncConnection, org_id: int, template_id: str) -> int:
    """How many awards (live or revoked) are of the template."""
    stmt = (
        select(func.count())
        .select_from(t)
        .where(t.c.badge_template_id == template_id, t.c.org_id == org_id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def class_award_count(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> int:
    """How many awards (live or revoked) the badge classes have."""
    if not class_ids:
        return 0
    stmt = (
        select(func.count())
        .select_from(t)
        .where(t.c.org_id == org_id, t.c.badge_class_id.in_(list(class_ids)))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def delete_class_awards(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> None:
    """Deletes every award of the badge classes (a cascading class delete)."""
    if class_ids:
        await conn.execute(
            delete(t).where(t.c.org_id == org_id, t.c.badge_class_id.in_(list(class_ids)))
        )


# --- Award events (added by the events helper: WatchAwards loads a batch of events' awards) ----


async def get_awards(
    conn: AsyncConnection, org_id: int, award_ids: Iterable[str]
) -> dict[str, Award]:
    """The org's awards with these ids, by id (ids not found are absent)."""
    ids = sorted({i for i in award_ids if is_hex_id(i)})
    out: dict[str, Award] = {}
    # Chunks keep the IN list well under both databases' bound-parameter limits.
    for start in range(0, len(ids), 1_000):
        chunk = ids[start : start + 1_000]
        rows = await conn.execute(select(t).where(t.c.org_id == org_id, t.c.id.in_(chunk)))
        out.update((r.id, _from_row(r)) for r in rows)
    return out
