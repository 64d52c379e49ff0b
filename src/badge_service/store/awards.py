"""Award queries: awards, the CrowdTwist counters that cap them, Credly duplicates and
counters, Badgr claim code redemption, revocation, per-definition counts and lists.

Every limit is the database's: counters move with one conditional upsert, a duplicate is a
unique key, a claim code use is one conditional UPDATE. Nothing here reads a value, decides in
Python and writes it back, so concurrent awards (in this process or another) cannot pass a
limit.

Functions take a synchronous Connection: they run whole inside ``Database.run_read`` /
``run_write`` (one thread trip on SQLite, group-committed writes), or from async code through
``conn.run_sync``; the three the definition stores call with an AsyncConnection are marked.
Hot statements are built once at module level with named ``bindparam``s: SQLAlchemy computes
a cache key per statement object, which for a statement built per call costs more than running
it. Each award row keeps its serialized reply (``message``, migration 0008).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
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
from badge_service.domain.claim_codes import CLAIM_CODE
from badge_service.domain.errors import NotFound
from badge_service.domain.ids import is_hex_id
from badge_service.store.db import (
    at_commit,
    equal_in_order,
    execute_prepared,
    from_micros,
    in_group_commit,
    opt_datetime,
    opt_micros,
    to_micros,
)
from badge_service.store.models import award_counters as ct
from badge_service.store.models import award_counts as ac
from badge_service.store.models import awards as t
from badge_service.store.models import badge_templates as tt
from badge_service.store.models import badges as bt
from badge_service.store.models import badgr_badge_classes as bct
from badge_service.store.models import badgr_claim_codes as cct

_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}


def _per_dialect(build: Any) -> dict[str, Any]:
    """A statement built once for each dialect (the upserts differ in their import)."""
    return {name: build(dialect) for name, dialect in _DIALECTS.items()}


def _row_values(a: Award, dedupe_key: str | None, message: bytes | None) -> dict[str, Any]:
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
        "message": message,
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


@dataclass(frozen=True, slots=True)
class StoredAward:
    """An award as stored: decoded, and its stored reply bytes (None for awards from before
    migration 0008)."""

    award: Award
    message: bytes | None


def _stored(r: Any) -> StoredAward:
    return StoredAward(_from_row(r), r.message)


_GET = select(t).where(t.c.id == bindparam("id"), t.c.org_id == bindparam("org_id"))


def get_award(conn: Connection, org_id: int, award_id: str) -> Award:
    """One award of the org, or NOT_FOUND (also for ids of another org)."""
    return get_stored_award(conn, org_id, award_id).award


def get_stored_award(conn: Connection, org_id: int, award_id: str) -> StoredAward:
    """get_award with the award's stored reply bytes."""
    if not is_hex_id(award_id):
        raise NotFound(domain.RESOURCE, award_id[:64])
    row = conn.execute(_GET, {"id": award_id, "org_id": org_id}).first()
    if row is None:
        raise NotFound(domain.RESOURCE, award_id)
    return _stored(row)


# --- CrowdTwist counters ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterWant:
    """One request's claim on counters: the slots of ``limits`` (all or none) for one
    recipient of one badge. ``token`` names the request in the answer."""

    token: int
    badge_id: int
    recipient_key: str
    limits: Sequence[CounterLimit]


def take_counters(
    conn: Connection, org_id: int, wants: Sequence[CounterWant]
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
            got = _take_level(conn, org_id, batch, level)
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
            release_counters(conn, w.badge_id, w.recipient_key, periods)
    return refused


def _take_statement(dialect: Any) -> Any:
    ins = dialect.insert(ct)
    return ins.on_conflict_do_update(
        index_elements=[ct.c.badge_id, ct.c.recipient_key, ct.c.period],
        set_={"count": ct.c.count + 1, "cap": ins.excluded.cap},
        where=ct.c.count < ins.excluded.cap,
    ).returning(ct.c.badge_id, ct.c.recipient_key, ct.c.period)


_TAKE = _per_dialect(_take_statement)


def _take_level(
    conn: Connection, org_id: int, wants: Sequence[CounterWant], level: int
) -> set[tuple[int, str, str]]:
    """One slot of limit ``level`` of each want (no counter twice); the counters taken."""
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
    stmt = _TAKE[conn.dialect.name]
    if len(rows) == 1:
        found = execute_prepared(conn, stmt, rows[0])
    else:  # an executemany with RETURNING: SQLAlchemy sends multi-row statements
        found = list(conn.execute(stmt, rows))
    return {(int(b), str(k), str(p)) for b, k, p in found}


_RELEASE = (
    update(ct)
    .where(
        ct.c.badge_id == bindparam("p_badge_id"),
        ct.c.recipient_key == bindparam("p_rkey"),
        ct.c.period.in_(bindparam("p_periods", expanding=True)),
        ct.c.count > 0,
    )
    .values(count=ct.c.count - 1)
)


def release_counters(conn: Connection, badge_id: int, rkey: str, periods: Iterable[str]) -> None:
    """Gives back one slot of each period (never below 0)."""
    periods = list(periods)
    if periods:
        conn.execute(_RELEASE, {"p_badge_id": badge_id, "p_rkey": rkey, "p_periods": periods})


# --- Inserting ------------------------------------------------------------------------------


_INSERT = _per_dialect(lambda d: d.insert(t).on_conflict_do_nothing().returning(t.c.id))


def insert_awards(conn: Connection, rows: Sequence[tuple[Award, str | None, bytes]]) -> set[str]:
    """Inserts awards (each with its Credly dedupe key or None, and its serialized reply
    without the fields that change) and returns the ids inserted. An award whose dedupe key is
    taken (by a live award, or by an earlier row of the same batch) is skipped by ``ON CONFLICT
    DO NOTHING``: its id is missing from the result, and the caller reports it as a
    duplicate."""
    if not rows:
        return set()
    stmt = _INSERT[conn.dialect.name]
    values = [_row_values(a, key, message) for a, key, message in rows]
    if len(values) == 1:
        found = execute_prepared(conn, stmt, values[0])
    else:
        # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs.
        found = list(conn.execute(stmt, values))
    return {str(r[0]) for r in found}


_TEMPLATE_COUNT = (
    update(tt)
    .where(tt.c.id == bindparam("p_template_id"), tt.c.org_id == bindparam("p_org_id"))
    .values(badges_count=tt.c.badges_count + bindparam("p_delta"))
)


def add_template_counts(conn: Connection, org_id: int, deltas: Mapping[str, int]) -> None:
    """Moves badges_count of templates by the deltas, in id order (a fixed lock order, so
    two transactions touching the same templates cannot deadlock on them); in a PostgreSQL
    group commit once for the batch, at its end (db.at_commit), as the award counts are: a
    template's row, locked by each of its awards and revocations until the commit, would
    make the batches of one template queue behind each other whole, and deadlock with a batch
    that revokes an award this one revokes too."""
    for template_id in sorted(deltas):
        delta = deltas[template_id]
        if delta:
            at_commit(conn, ("template-count", org_id, template_id), delta, _add_template_count)


def _add_template_count(conn: Connection, key: tuple[str, int, str], deltas: list[int]) -> None:
    """A template's badges_count move (at_commit): every award and revocation of a batch in
    one."""
    _, org_id, template_id = key
    params = {"p_template_id": template_id, "p_org_id": org_id, "p_delta": sum(deltas)}
    execute_prepared(conn, _TEMPLATE_COUNT, params)


# --- Per-definition counts (ListAwards totals) ------------------------------------------------

BADGE, TEMPLATE, CLASS = "badge", "template", "class"


def definition_of(a: Award) -> tuple[str, str]:
    """The (kind, ref) of the award's definition, as award_counts keys it."""
    if a.badge_id is not None:
        return BADGE, str(a.badge_id)
    if a.badge_template_id is not None:
        return TEMPLATE, a.badge_template_id
    assert a.badge_class_id is not None
    return CLASS, a.badge_class_id


def _count_statement(dialect: Any) -> Any:
    ins = dialect.insert(ac)
    return ins.on_conflict_do_update(
        index_elements=[ac.c.org_id, ac.c.kind, ac.c.ref],
        set_={"awards": ac.c.awards + ins.excluded.awards},
    )


_COUNT_UP = _per_dialect(_count_statement)


def add_award_counts(conn: Connection, org_id: int, added: Mapping[tuple[str, str], int]) -> None:
    """Adds awards created in this transaction to their definitions' counts, with one atomic
    upsert per definition (``awards = awards + n``): concurrent creates each add exactly theirs
    (PostgreSQL locks the row until the commit, SQLite has one writer), and a failed write rolls
    its addition back. Definitions go in key order (a fixed lock order, so concurrent batches
    wait, not deadlock)."""
    if in_group_commit(conn):
        # Added once for the whole batch, at its end (see db.at_commit).
        for (kind, ref), n in added.items():
            if n:
                at_commit(conn, ("award-count", org_id, kind, ref), n, _add_counts)
        return
    rows = [
        {"org_id": org_id, "kind": kind, "ref": ref, "awards": n}
        for (kind, ref), n in sorted(added.items())
        if n
    ]
    if rows:
        execute_prepared(conn, _COUNT_UP[conn.dialect.name], rows[0] if len(rows) == 1 else rows)


def _add_counts(conn: Connection, key: tuple[str, int, str, str], added: list[int]) -> None:
    """A definition's award count bump (at_commit): every award of a group commit in one."""
    _, org_id, kind, ref = key
    params = {"org_id": org_id, "kind": kind, "ref": ref, "awards": sum(added)}
    execute_prepared(conn, _COUNT_UP[conn.dialect.name], params)


# --- Badgr claim codes --------------------------------------------------------------------------


def use_claim_code(
    conn: Connection, org_id: int, class_id: str, code: str, now: dt.datetime
) -> None:
    """Takes one use of a claim code: one ``UPDATE .. SET uses_remaining = uses_remaining - 1
    WHERE uses_remaining > 0 AND not expired``, so each use is taken exactly once however many
    redeem at once. NOT_FOUND for an unknown code; FAILED_PRECONDITION when expired or used up."""
    micros = to_micros(now)
    where = [cct.c.org_id == org_id, cct.c.badge_class_id == class_id, cct.c.code == code]
    result = conn.execute(
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
    row = conn.execute(select(cct.c.expires_at).where(*where)).first()
    failure = domain.claim_code_failure(
        code,
        exists=row is not None,
        expired=row is not None and row.expires_at is not None and row.expires_at <= micros,
    )
    if failure is None:
        raise NotFound(CLAIM_CODE, code)
    raise failure


# --- Revoking -----------------------------------------------------------------------------------


_REVOKE = (
    update(t)
    .where(
        t.c.id == bindparam("p_award_id"),
        t.c.org_id == bindparam("p_org_id"),
        t.c.revoked_at.is_(None),
    )
    .values(revoked_at=bindparam("p_now"), revocation_reason=bindparam("p_reason"), dedupe_key=None)
    .returning(*t.c)
)


def revoke_award(
    conn: Connection, org_id: int, award_id: str, reason: str, now: dt.datetime
) -> StoredAward:
    """Marks an award revoked and frees its Credly dedupe key, with one conditional UPDATE
    (so two revocations cannot both succeed); returns the revoked award. NOT_FOUND, or
    FAILED_PRECONDITION ALREADY_REVOKED."""
    if not is_hex_id(award_id):
        raise NotFound(domain.RESOURCE, award_id[:64])
    params = {
        "p_award_id": award_id,
        "p_org_id": org_id,
        "p_now": to_micros(now),
        "p_reason": reason,
    }
    row = conn.execute(_REVOKE, params).first()
    if row is None:
        get_award(conn, org_id, award_id)  # NOT_FOUND when it does not exist
        raise domain.already_revoked(award_id)
    return _stored(row)


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


def _kept_count_key(flt: AwardFilter) -> tuple[str, str] | None:
    """The award_counts key that holds the filter's total: a definition without the revoked
    and expired filters; None when the matches must be counted."""
    if flt.revoked is not None or flt.expired is not None:
        return None
    if flt.badge_id is not None:
        return BADGE, str(flt.badge_id)
    if flt.badge_template_id is not None:
        return TEMPLATE, flt.badge_template_id
    if flt.badge_class_id is not None:
        return CLASS, flt.badge_class_id
    return None


_KEPT = select(ac.c.awards).where(
    ac.c.org_id == bindparam("org_id"), ac.c.kind == bindparam("kind"), ac.c.ref == bindparam("ref")
)


def count_awards(conn: Connection, org_id: int, flt: AwardFilter, now: dt.datetime) -> int:
    """How many of the org's awards match. A definition's total (no revoked or expired
    filter) is its kept count, one row whatever its size; otherwise the matches are counted,
    which costs time in proportion to them (a recipient's awards, or a definition's)."""
    key = _kept_count_key(flt)
    if key is not None:
        found = conn.execute(_KEPT, {"org_id": org_id, "kind": key[0], "ref": key[1]}).scalar()
        return int(found or 0)
    stmt = select(func.count()).select_from(t).where(*_conditions(org_id, flt, now))
    return int(conn.execute(stmt).scalar_one())


def list_awards(
    conn: Connection,
    org_id: int,
    flt: AwardFilter,
    now: dt.datetime,
    *,
    limit: int,
    after: str | None = None,
) -> list[StoredAward]:
    """Awards oldest first (id order), after a keyset position, with their stored replies."""
    stmt = select(t).where(*_conditions(org_id, flt, now)).order_by(t.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(t.c.id > after)
    return [_stored(r) for r in conn.execute(stmt)]


def class_entity_ids(conn: Connection, class_ids: Iterable[str]) -> dict[str, str]:
    """The entity ids of badge classes by 24-hex id (what award messages show)."""
    ids = sorted(set(class_ids))
    if not ids:
        return {}
    rows = conn.execute(select(bct.c.id, bct.c.entity_id).where(bct.c.id.in_(ids)))
    return {r.id: r.entity_id for r in rows}


# The hot list, as statements built once for Database.fetch (compiled once; on SQLite run on a
# plain sqlite3 connection on the event loop's thread): plain columns and named parameters
# only, and each bounded by an index to a few rows. A definition's page: its existence in the
# org (NOT_FOUND otherwise), its kept count, and its awards after a keyset position (after =
# "" for the first page) through the (definition, id) index.
#
# The page has no ``awards.org_id`` condition, on purpose: for another org's definition such a
# condition would match no row, and the index walk would read every award of that definition
# looking for one (all of them, on the event loop). A definition's id is unique across orgs and
# its awards are all of its org, so the page reads at most ``limit`` rows, and the caller
# answers NOT_FOUND (from the existence check in the same snapshot) before using any of them.
PAGE_COLUMNS = (
    t.c.id,
    t.c.kind,
    t.c.message,
    t.c.expires_at,
    t.c.revoked_at,
    t.c.revocation_reason,
)
"""The columns of a page row: id, kind, message, expires_at, revoked_at, revocation_reason."""


@dataclass(frozen=True, slots=True)
class DefinitionPage:
    """The statements of one kind of definition's page: ``exists`` (org_id, ref), ``count``
    (org_id, ref_text: the ref as text), ``first`` (ref, limit) and ``page`` (ref, after,
    limit); the pages only to be used once ``exists`` found the definition in the same
    snapshot."""

    exists: Select[Any]
    count: Select[Any]
    first: Select[Any]
    page: Select[Any]


def _definition_page(kind: str, table: Any, column: Any) -> DefinitionPage:
    ref: Any = bindparam("ref")
    org: Any = bindparam("org_id")
    return DefinitionPage(
        exists=select(table.c.id).where(table.c.id == ref, table.c.org_id == org),
        count=select(ac.c.awards).where(
            ac.c.org_id == org, ac.c.kind == literal(kind), ac.c.ref == bindparam("ref_text")
        ),
        # The first page starts at the definition's first award: a range, not an equality,
        # so PostgreSQL walks the (definition, id) index from there rather than the primary
        # key from the oldest award of all (see db.equal_in_order). A later page starts at
        # its token's award, where either index finds the next rows at once.
        first=select(*PAGE_COLUMNS)
        .where(equal_in_order(column, ref))
        .order_by(column, t.c.id)
        .limit(bindparam("limit")),
        page=select(*PAGE_COLUMNS)
        .where(column == ref, t.c.id > bindparam("after"))
        .order_by(t.c.id)
        .limit(bindparam("limit")),
    )


PAGES = {
    BADGE: _definition_page(BADGE, bt, t.c.badge_id),
    TEMPLATE: _definition_page(TEMPLATE, tt, t.c.badge_template_id),
    CLASS: _definition_page(CLASS, bct, t.c.badge_class_id),
}
"""The page statements of each kind of definition (a class by its 24-hex id)."""

CLASS_ID_OF_ENTITY_ID = select(bct.c.id).where(
    bct.c.entity_id == bindparam("ref"), bct.c.org_id == bindparam("org_id")
)
"""A badge class's 24-hex id by its entity id: ref, org_id."""


# --- Definition deletes -------------------------------------------------------------------------


def badge_has_awards(conn: Connection, org_id: int, badge_id: int) -> bool:
    """Whether any award (live or revoked) is of the badge (synchronous: called by the badge
    store inside its transaction)."""
    stmt = select(exists().where(t.c.badge_id == badge_id, t.c.org_id == org_id))
    return bool(conn.execute(stmt).scalar())


async def template_award_count(conn: AsyncConnection, org_id: int, template_id: str) -> int:
    """How many awards (live or revoked) are of the template (async: the template store's
    delete calls it)."""
    stmt = (
        select(func.count())
        .select_from(t)
        .where(t.c.badge_template_id == template_id, t.c.org_id == org_id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def class_award_count(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> int:
    """How many awards (live or revoked) the badge classes have (async: the Badgr store's
    deletes call it)."""
    if not class_ids:
        return 0
    stmt = (
        select(func.count())
        .select_from(t)
        .where(t.c.org_id == org_id, t.c.badge_class_id.in_(list(class_ids)))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def delete_class_awards(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> None:
    """Deletes every award of the badge classes (a cascading class delete), and their kept
    counts (async: the Badgr store's deletes call it)."""
    if class_ids:
        ids = list(class_ids)
        await conn.execute(delete(t).where(t.c.org_id == org_id, t.c.badge_class_id.in_(ids)))
        await conn.execute(
            delete(ac).where(ac.c.org_id == org_id, ac.c.kind == CLASS, ac.c.ref.in_(ids))
        )


# --- Award events (added by the events helper: WatchAwards loads a batch of events' awards) ----


def get_awards(conn: Connection, org_id: int, award_ids: Iterable[str]) -> dict[str, Award]:
    """The org's awards with these ids, by id (ids not found are absent)."""
    ids = sorted({i for i in award_ids if is_hex_id(i)})
    out: dict[str, Award] = {}
    # Chunks keep the IN list well under both databases' bound-parameter limits.
    for start in range(0, len(ids), 1_000):
        chunk = ids[start : start + 1_000]
        rows = conn.execute(select(t).where(t.c.org_id == org_id, t.c.id.in_(chunk)))
        out.update((r.id, _from_row(r)) for r in rows)
    return out


# --- Public lookups (hosted Open Badges) --------------------------------------------------

_GET_PUBLIC = select(t).where(t.c.id == bindparam("id"))


def get_public_award(conn: Connection, award_id: str) -> Award:
    """The award of any organisation with this id (award ids are unique across orgs), or
    NOT_FOUND. For hosted verification only: every gRPC lookup is get_award, by org."""
    if not is_hex_id(award_id):
        raise NotFound(domain.RESOURCE, award_id[:64])
    row = conn.execute(_GET_PUBLIC, {"id": award_id}).first()
    if row is None:
        raise NotFound(domain.RESOURCE, award_id)
    return _from_row(row)


def revoked_issuer_awards(conn: Connection, org_id: int, issuer_id: str) -> list[Award]:
    """The revoked awards of every badge class of an issuer of the org, by id."""
    stmt = (
        select(t)
        .join(bct, bct.c.id == t.c.badge_class_id)
        .where(t.c.org_id == org_id, bct.c.issuer_id == issuer_id, t.c.revoked_at.is_not(None))
        .order_by(t.c.id)
    )
    return [_from_row(r) for r in conn.execute(stmt)]
