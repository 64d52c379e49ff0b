"""API keys in the database: creating, listing, revoking and rotating them, and what serving
processes read to authenticate (every key, the change epoch, one key by hash).

Every function takes a synchronous Connection and runs in the caller's transaction (the CLI
calls them through ``conn.run_sync``, the server through ``Database.run_read/run_write``).
Each change of a key bumps ``api_key_epoch`` in the same transaction, so a process that sees
the epoch move reloads its keys knowing the change committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from badge_service.domain.auth import ApiKey, Role, hash_api_key, key_prefix, new_api_key
from badge_service.domain.errors import FailedPrecondition, NotFound
from badge_service.store.db import opt_datetime, opt_micros, to_micros
from badge_service.store.models import api_key_epoch, api_keys, orgs

RESOURCE = "API key"

_COLUMNS = (
    api_keys.c.id,
    api_keys.c.org_id,
    api_keys.c.role,
    api_keys.c.key_hash,
    api_keys.c.key_prefix,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
    api_keys.c.rotated_to,
)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=int(row.id),
        org_id=int(row.org_id),
        role=Role(row.role),
        key_hash=row.key_hash,
        prefix=row.key_prefix,
        created_at=opt_datetime(row.created_at),  # type: ignore[arg-type]  # never NULL
        expires_at=opt_datetime(row.expires_at),
        revoked_at=opt_datetime(row.revoked_at),
        last_used_at=opt_datetime(row.last_used_at),
        rotated_to=None if row.rotated_to is None else int(row.rotated_to),
    )


def bump_epoch(conn: Connection) -> None:
    """Marks a change of keys, in the caller's transaction."""
    conn.execute(update(api_key_epoch).values(epoch=api_key_epoch.c.epoch + 1))


_EPOCH = select(api_key_epoch.c.epoch).where(api_key_epoch.c.id == 1)


def epoch(conn: Connection) -> int:
    """How many key changes have committed."""
    return int(conn.execute(_EPOCH).scalar_one())


def all_keys(conn: Connection) -> list[ApiKey]:
    """Every key of every organisation (what a serving process holds in memory)."""
    return [_key(r) for r in conn.execute(select(*_COLUMNS).order_by(api_keys.c.id))]


def find_key(conn: Connection, key_hash: str) -> ApiKey | None:
    """The key with this hash, or None."""
    row = conn.execute(select(*_COLUMNS).where(api_keys.c.key_hash == key_hash)).first()
    return None if row is None else _key(row)


def find_key_by_id(conn: Connection, key_id: int) -> ApiKey | None:
    """The key with this id, or None."""
    row = conn.execute(select(*_COLUMNS).where(api_keys.c.id == key_id)).first()
    return None if row is None else _key(row)


def get_key(conn: Connection, key_id: int) -> ApiKey:
    """A key by id, or NOT_FOUND."""
    found = find_key_by_id(conn, key_id)
    if found is None:
        raise NotFound(RESOURCE, key_id)
    return found


def list_keys(conn: Connection, org_id: int) -> list[ApiKey]:
    """An organisation's keys, oldest first; NOT_FOUND for an unknown organisation."""
    if conn.execute(select(orgs.c.id).where(orgs.c.id == org_id)).first() is None:
        raise NotFound("organisation", org_id)
    rows = conn.execute(
        select(*_COLUMNS).where(api_keys.c.org_id == org_id).order_by(api_keys.c.id)
    )
    return [_key(r) for r in rows]


def create_key(
    conn: Connection,
    org_id: int,
    role: Role,
    now: dt.datetime,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """Creates a key of the organisation; returns it and the key itself (shown once, never
    stored). NOT_FOUND for an unknown organisation."""
    if conn.execute(select(orgs.c.id).where(orgs.c.id == org_id)).first() is None:
        raise NotFound("organisation", org_id)
    # The key embeds its id, so the row comes first with a placeholder (unique, never a
    # SHA-256 hex digest) in place of the hash.
    key_id = int(
        conn.execute(
            insert(api_keys)
            .values(
                org_id=org_id,
                role=role.value,
                key_hash=f"pending-{uuid.uuid4().hex}",
                key_prefix="bsk_",
                created_at=to_micros(now),
                expires_at=opt_micros(expires_at),
            )
            .returning(api_keys.c.id)
        ).scalar_one()
    )
    key = new_api_key(key_id)
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(key_hash=hash_api_key(key), key_prefix=key_prefix(key_id))
    )
    bump_epoch(conn)
    return get_key(conn, key_id), key


def revoke_key(conn: Connection, key_id: int, now: dt.datetime) -> ApiKey:
    """Revokes a key at once; FAILED_PRECONDITION if it already was."""
    key = get_key(conn, key_id)
    if key.revoked_at is not None:
        raise FailedPrecondition(
            f"API key {key_id} was already revoked",
            reason="API_KEY_ALREADY_REVOKED",
            metadata={"id": str(key_id)},
        )
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=to_micros(now)))
    bump_epoch(conn)
    return get_key(conn, key_id)


def rotate_key(
    conn: Connection, key_id: int, grace: dt.timedelta, now: dt.datetime
) -> tuple[ApiKey, ApiKey, str]:
    """Replaces a live key with a new one of the same organisation and role; the old one keeps
    working for ``grace`` (never longer than it would have), then expires. Returns the old
    key, the new one and the new key itself. FAILED_PRECONDITION for a revoked or expired
    key."""
    old = get_key(conn, key_id)
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise FailedPrecondition(
            f"API key {key_id} is {old.state(now).value}; only a live key can be rotated",
            reason="API_KEY_NOT_LIVE",
            metadata={"id": str(key_id), "state": old.state(now).value},
        )
    new, secret = create_key(conn, old.org_id, old.role, now, old.expires_at)
    ends = now + grace
    if old.expires_at is not None:
        ends = min(ends, old.expires_at)
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(expires_at=to_micros(ends), rotated_to=new.id)
    )
    bump_epoch(conn)
    return get_key(conn, key_id), new, secret


_TOUCH = (
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("key_id"),
        func.coalesce(api_keys.c.last_used_at, 0) < bindparam("used_at"),
    )
    .values(last_used_at=bindparam("used_at"))
)


def record_last_use(conn: Connection, used: dict[int, dt.datetime]) -> None:
    """Moves each key's last-use time forward (never back: another process may be ahead).
    Not a key change: the epoch stays."""
    if used:
        conn.execute(
            _TOUCH, [{"key_id": k, "used_at": to_micros(t)} for k, t in sorted(used.items())]
        )
