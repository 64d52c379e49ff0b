"""Request ids (AIP-155) in the use cases: a write that carries one runs at most once, its
reply (the transport's encoding, opaque here) stored in its own transaction; a retry gets that
reply (see store/request_ids.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.requests import RequestKey
from badge_service.store import request_ids as store
from badge_service.store.db import Database

T = TypeVar("T")


async def write_once(
    db: Database,
    key: RequestKey | None,
    now: dt.datetime,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    encode: Callable[[T], bytes],
) -> bytes:
    """The reply of a write run as one transaction (Database.run_write): ``encode`` of what
    ``fn(conn, *args)`` returns. With a request id the write runs only the first time the id
    comes, its reply stored in its transaction; a retry gets that reply."""
    if key is None:
        return encode(await db.run_write(fn, *args))
    return await db.run_write(store.once, key, now, fn, args, encode)


async def claim(conn: AsyncConnection, key: RequestKey | None, now: dt.datetime) -> bytes | None:
    """For a write inside ``Database.write()``: None when the write should run (no request
    id, or its first time), else the first call's serialized reply."""
    if key is None:
        return None
    return await conn.run_sync(store.claim, key, now)


async def complete(conn: AsyncConnection, key: RequestKey | None, reply: bytes) -> None:
    """Stores the reply of a write that claimed ``key``, in its transaction (after claim)."""
    if key is not None:
        await conn.run_sync(store.complete, key, reply)
