"""Request ids (AIP-155) at the gRPC edge: the key of a request that carries one."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.requests import RequestKey, check_request_id
from badge_service.store import request_ids as store
from badge_service.store.db import Database

T = TypeVar("T")


def request_key(request: Any, org_id: int) -> RequestKey | None:
    """The request id key of a write request (a message with a ``request_id`` field), or None
    when it carries none. Its fingerprint is the SHA-256 of the request's deterministic
    encoding without the id, so a retry of the same request matches however the client
    ordered its fields."""
    raw_id: str = request.request_id
    if not raw_id:
        return None
    request_id = check_request_id(raw_id)
    request.request_id = ""
    try:
        encoded = request.SerializeToString(deterministic=True)
    finally:
        request.request_id = raw_id
    return RequestKey(org_id, request_id, request.DESCRIPTOR.name, hashlib.sha256(encoded).digest())


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


async def complete(conn: AsyncConnection, key: RequestKey | None, reply: Message) -> None:
    """Stores the reply of a write that claimed ``key``, in its transaction (after claim)."""
    if key is not None:
        await conn.run_sync(store.complete, key, reply.SerializeToString())
