"""Recipient badge states: atomic forward-only progress, and the progress events it emits.

A state moves with one conditional upsert, ``INSERT .. ON CONFLICT DO UPDATE .. WHERE
stored.state < new.state RETURNING``: of concurrent calls for one recipient and badge, each
either moves the state forward or changes nothing, and the row (locked by the upsert on
PostgreSQL) is read back in the same transaction to tell "already there" from "backwards".
Every move appends a "progress" event as the transaction's last statement.

Functions take a synchronous Connection: they run inside ``Database.run_write`` /
``run_read`` (the award's own transaction), or from async code through ``conn.run_sync``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from badge_service.domain.awards import Recipient, RecipientKind
from badge_service.domain.badges import Badge, BadgeStateType
from badge_service.domain.progress import (
    RecipientBadgeState,
    badge_state,
    earned_state,
    order_of,
    progress_backwards,
)
from badge_service.store import events
from badge_service.store.db import execute_prepared, from_micros, to_micros
from badge_service.store.models import recipient_badge_states as t


def recipient_doc(recipient: Recipient) -> dict[str, str]:
    """The JSON form of a recipient (in rows and event payloads)."""
    return {"kind": recipient.kind.value, "value": recipient.value}


def recipient_from_doc(doc: dict[str, Any]) -> Recipient:
    """The recipient of recipient_doc()."""
    return Recipient(RecipientKind(doc["kind"]), str(doc["value"]))


def state_payload(s: RecipientBadgeState) -> dict[str, Any]:
    """The payload of a "progress" event: the state reached."""
    assert s.update_time is not None
    return {
        "badge_id": s.badge_id,
        "recipient": recipient_doc(s.recipient),
        "state": int(s.state),
        "order": s.order,
        "update_time": to_micros(s.update_time),
    }


def state_from_payload(payload: dict[str, Any]) -> RecipientBadgeState:
    """The state a "progress" event carries."""
    return RecipientBadgeState(
        badge_id=int(payload["badge_id"]),
        recipient=recipient_from_doc(payload["recipient"]),
        state=BadgeStateType(payload["state"]),
        order=int(payload["order"]),
        update_time=from_micros(int(payload["update_time"])),
    )


def _forward_upsert(dialect: Any) -> Any:
    """Inserts states, or moves existing ones forward only (``WHERE stored < new``); returns
    the (badge_id, recipient_key) of each row written. Rows must name distinct pairs."""
    ins = dialect.insert(t)
    new = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[t.c.org_id, t.c.badge_id, t.c.recipient_key],
        set_={
            "state": new.state,
            "order": new.order,
            "recipient": new.recipient,
            "update_time": new.update_time,
        },
        where=t.c.state < new.state,
    ).returning(t.c.badge_id, t.c.recipient_key)


# Built once per dialect: a statement built per call costs SQLAlchemy a cache key computation
# that exceeds the database's work. One row runs through execute_prepared; many through an
# executemany with RETURNING (SQLAlchemy's "insertmanyvalues": multi-row statements).
_UPSERT = {"sqlite": _forward_upsert(sqlite), "postgresql": _forward_upsert(postgresql)}
_CURRENT = select(t).where(
    t.c.org_id == bindparam("org_id"),
    t.c.badge_id == bindparam("badge_id"),
    t.c.recipient_key == bindparam("recipient_key"),
)


def _upsert(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """Runs the forward upsert for rows naming distinct pairs; the pairs written."""
    stmt = _UPSERT[conn.dialect.name]
    if len(rows) == 1:
        found = execute_prepared(conn, stmt, rows[0])
    else:
        found = list(conn.execute(stmt, rows))
    return {(int(badge_id), str(key)) for badge_id, key in found}


def _row(
    org_id: int,
    badge: Badge,
    recipient_key: str,
    recipient: Recipient,
    state: BadgeStateType,
    order: int,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "badge_id": badge.id,
        "recipient_key": recipient_key,
        "recipient": recipient_doc(recipient),
        "state": int(state),
        "order": order,
        "update_time": to_micros(now),
    }


def _advance(
    conn: Connection,
    org_id: int,
    badge: Badge,
    recipient_key: str,
    recipient: Recipient,
    state: BadgeStateType,
    order: int,
    now: dt.datetime,
) -> RecipientBadgeState | None:
    """Moves the state forward to ``state``; the new state, or None if it did not move."""
    row = _row(org_id, badge, recipient_key, recipient, state, order, now)
    # A badge deleted after it was read fails the foreign key: NOT_FOUND (models.VIOLATIONS).
    moved = _upsert(conn, [row])
    if not moved:
        return None
    return RecipientBadgeState(badge.id, recipient, state, order, now)


def _current(
    conn: Connection, org_id: int, badge: Badge, recipient_key: str
) -> RecipientBadgeState | None:
    params = {"org_id": org_id, "badge_id": badge.id, "recipient_key": recipient_key}
    row = conn.execute(_CURRENT, params).first()
    return None if row is None else _from_row(row, badge)


def _from_row(row: Any, badge: Badge) -> RecipientBadgeState:
    kind = BadgeStateType(row.state)
    return RecipientBadgeState(
        badge_id=row.badge_id,
        recipient=recipient_from_doc(row.recipient),
        state=kind,
        order=order_of(badge, kind, row.order),
        update_time=from_micros(row.update_time),
    )


def record_progress(
    conn: Connection,
    org_id: int,
    badge: Badge,
    recipient_key: str,
    recipient: Recipient,
    state: BadgeStateType,
    now: dt.datetime,
) -> tuple[RecipientBadgeState, bool]:
    """Records that the recipient reached ``state`` on ``badge`` (of ``org_id``, already
    loaded in this transaction). Returns the recipient's state and whether it moved (a move
    appends a "progress" event). The current state again is a no-op; a state before the
    current one is FAILED_PRECONDITION (PROGRESS_BACKWARDS); a state the badge lacks is
    INVALID_ARGUMENT."""
    target = badge_state(badge, state)
    moved = _advance(conn, org_id, badge, recipient_key, recipient, state, target.order, now)
    if moved is not None:
        # At the batch's end in a group commit, as an award's events are (see
        # events.append_events_at_commit).
        events.append_events_at_commit(conn, org_id, [("progress", state_payload(moved))], now)
        return moved, True
    current = _current(conn, org_id, badge, recipient_key)
    # The upsert changed nothing, so a row exists with a state at or past the one asked for.
    assert current is not None
    if current.state > state:
        raise progress_backwards(badge.id, current.state, state)
    return current, False


def mark_earned(
    conn: Connection,
    org_id: int,
    badge: Badge,
    recipient_key: str,
    recipient: Recipient,
    now: dt.datetime,
) -> int | None:
    """Moves the recipient to the badge's earned state, as an award of the badge does; never
    back. Appends a "progress" event when the state moved and returns its sequence (None when
    the recipient was already earned). Call it in the award's transaction."""
    earned = earned_state(badge)
    assert earned.state is not None
    moved = _advance(conn, org_id, badge, recipient_key, recipient, earned.state, earned.order, now)
    if moved is None:
        return None
    return events.append(conn, org_id, "progress", state_payload(moved), now)


# Rows per multi-row upsert: 7 parameters a row stays well under SQLite's variable limit.
_CHUNK = 500


def mark_earned_many(
    conn: Connection,
    org_id: int,
    items: Sequence[tuple[Badge, str, Recipient]],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """mark_earned for many (badge, recipient key, recipient) pairs, each pair at most once,
    with multi-row conditional upserts; returns the payloads of the "progress" events due, in
    ``items`` order, for the recipients whose state moved. The caller appends them (with its
    own events, in one sequence bump) as the last statement of the transaction. A batch of
    thousands of awards would otherwise pay two round trips per recipient."""
    moved: set[tuple[int, str]] = set()
    # Rows in (badge, recipient) order: a fixed lock order, so concurrent batches on
    # PostgreSQL wait for each other rather than deadlock. Events keep ``items`` order.
    ordered = sorted(items, key=lambda item: (item[0].id, item[1]))
    for start in range(0, len(ordered), _CHUNK):
        rows = []
        for badge, key, recipient in ordered[start : start + _CHUNK]:
            earned = earned_state(badge)
            assert earned.state is not None
            rows.append(_row(org_id, badge, key, recipient, earned.state, earned.order, now))
        moved |= _upsert(conn, rows)
    payloads = []
    for badge, key, recipient in items:
        if (badge.id, key) in moved:
            earned = earned_state(badge)
            assert earned.state is not None
            state = RecipientBadgeState(badge.id, recipient, earned.state, earned.order, now)
            payloads.append(state_payload(state))
    return payloads


def states_of(
    conn: Connection, org_id: int, recipient_key: str, badges: Sequence[Badge]
) -> dict[int, RecipientBadgeState]:
    """The recorded states of a recipient on these badges, by badge id (absent: nothing
    recorded)."""
    if not badges:
        return {}
    by_id = {b.id: b for b in badges}
    rows = conn.execute(
        select(t).where(
            t.c.org_id == org_id,
            t.c.recipient_key == recipient_key,
            t.c.badge_id.in_(list(by_id)),
        )
    )
    return {r.badge_id: _from_row(r, by_id[r.badge_id]) for r in rows}
