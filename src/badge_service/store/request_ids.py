"""Request ids (AIP-155) in the database: a write that carries one claims its id in its own
transaction and stores its reply there, so the id is taken exactly when the write commits.

``once(conn, key, fn, args, encode)`` runs a write at most once per key: when the key is
already stored it returns the first reply (or raises REQUEST_ID_REUSED for a different
request) without running ``fn``. Concurrent calls with one key are safe on both databases: the
claim is an ``INSERT .. ON CONFLICT DO NOTHING`` on the (org, request id) key, which on
PostgreSQL waits for a concurrent claimant's transaction to end and then sees its row; SQLite
runs writes one at a time (a group commit's writes each see the ones before them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from badge_service.domain.requests import RequestKey, request_id_reused
from badge_service.store.db import execute_prepared, to_micros
from badge_service.store.models import request_ids

T = TypeVar("T")

# Rows deleted per purge statement, so that a purge never holds the write lock for long.
PURGE_BATCH = 5_000


def _claim_statement(dialect: Any) -> Any:
    t = request_ids
    return (
        dialect.insert(t)
        .on_conflict_do_nothing(index_elements=[t.c.org_id, t.c.request_id])
        .returning(t.c.org_id)
    )


# Built once (see db.execute_prepared).
_CLAIM = {"sqlite": _claim_statement(sqlite), "postgresql": _claim_statement(postgresql)}
_FIRST = select(request_ids.c.request, request_ids.c.fingerprint, request_ids.c.reply).where(
    request_ids.c.org_id == bindparam("org_id"),
    request_ids.c.request_id == bindparam("request_id"),
)
_COMPLETE = (
    update(request_ids)
    .where(
        request_ids.c.org_id == bindparam("key_org_id"),
        request_ids.c.request_id == bindparam("key_request_id"),
    )
    .values(reply=bindparam("new_reply"))
)


def claim(conn: Connection, key: RequestKey, now: dt.datetime) -> bytes | None:
    """Takes ``key`` for this transaction's write and returns None; or, when it was taken
    before, the first call's reply (REQUEST_ID_REUSED if that was a different request)."""
    params = {
        "org_id": key.org_id,
        "request_id": key.request_id,
        "request": key.request,
        "fingerprint": key.fingerprint,
        "reply": None,
        "created_at": to_micros(now),
    }
    if execute_prepared(conn, _CLAIM[conn.dialect.name], params):
        return None
    rows = execute_prepared(conn, _FIRST, {"org_id": key.org_id, "request_id": key.request_id})
    request, fingerprint, reply = rows[0]
    if request != key.request or bytes(fingerprint) != key.fingerprint:
        raise request_id_reused(key, request)
    # Stored in the claimant's transaction before its commit, so a committed row has it.
    assert reply is not None
    return bytes(reply)


def complete(conn: Connection, key: RequestKey, reply: bytes) -> None:
    """Stores the reply of the write that claimed ``key``, in that write's transaction."""
    execute_prepared(
        conn,
        _COMPLETE,
        {"key_org_id": key.org_id, "key_request_id": key.request_id, "new_reply": reply},
    )


def once(
    conn: Connection,
    key: RequestKey,
    now: dt.datetime,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    encode: Callable[[T], bytes],
) -> bytes:
    """``encode(fn(conn, *args))``, the write's reply, run and stored only the first time
    ``key`` comes (run it as the whole transaction: Database.run_write); later, the stored
    reply."""
    first = claim(conn, key, now)
    if first is not None:
        return first
    reply = encode(fn(conn, *args))
    complete(conn, key, reply)
    return reply


def purge(conn: Connection, before: dt.datetime) -> int:
    """Deletes up to PURGE_BATCH ids stored before ``before``; returns how many."""
    t = request_ids
    old = (
        select(t.c.org_id, t.c.request_id)
        .where(t.c.created_at < to_micros(before))
        .limit(PURGE_BATCH)
    )
    doomed = conn.execute(old).all()
    if not doomed:
        return 0
    by_org: dict[int, list[str]] = {}
    for org_id, request_id in doomed:
        by_org.setdefault(int(org_id), []).append(request_id)
    for org_id, ids in by_org.items():
        conn.execute(delete(t).where(t.c.org_id == org_id, t.c.request_id.in_(ids)))
    return len(doomed)
