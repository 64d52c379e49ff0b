"""Use cases of Badgr issuers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from badge_service.domain import limits, paging
from badge_service.domain.ids import new_entity_id, new_hex_id
from badge_service.domain.issuers import Issuer, validate_issuer
from badge_service.domain.lookups import Key
from badge_service.domain.requests import RequestKey
from badge_service.service import recent, request_ids
from badge_service.service.pages import Page
from badge_service.store import badgr as store
from badge_service.store.db import Database


async def list_issuers(db: Database, org_id: int, page_size: int, page_token: str) -> Page[Issuer]:
    """The org's issuers oldest first, a keyset page of ``page_size`` (0: the default)."""
    size = paging.resolve_page_size(
        page_size, default=limits.ISSUERS_PAGE, maximum=limits.ISSUERS_PAGE
    )
    fingerprint = paging.filter_fingerprint("badgr_issuers")
    after = paging.after_hex_id(page_token, fingerprint)
    async with db.read() as conn:
        total = await store.count_issuers(conn, org_id)
        rows = await store.list_issuers(conn, org_id, limit=size + 1, after=after)
    rows, token = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
    return Page(rows, token, total)


async def get_issuer(db: Database, org_id: int, key: Key) -> Issuer:
    """One issuer of the org, by id or entityId."""
    async with db.read() as conn:
        return await store.get_issuer(conn, org_id, key)


async def create_issuer(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    key_id: int,
    issuer: Issuer,
    measure: Callable[[Issuer], int],
    encode: Callable[[Issuer], bytes],
) -> bytes:
    """Creates ``issuer`` (checked here, and its size as ``measure`` counts it) for the org
    of the caller's key ``key_id``; its reply is ``encode`` of the stored issuer, or a
    retry's first reply (request id ``key``)."""
    issuer = validate_issuer(issuer)
    now = dt.datetime.now(dt.UTC)
    issuer.id, issuer.entity_id = new_hex_id(), new_entity_id()
    issuer.org_id, issuer.created_by = org_id, str(key_id)
    issuer.created_at = issuer.updated_at = now
    # As stored and returned (the transport's measure), so that a full page fits a reply.
    limits.check_bytes(measure(issuer), limits.ISSUER_BYTES, "issuer", "as stored")
    reply = encode(issuer)
    async with db.write() as conn:
        first = await request_ids.claim(conn, key, now)
        if first is not None:
            return first
        await store.insert_issuer(conn, issuer)
        await request_ids.complete(conn, key, reply)
    return reply


async def update_issuer(
    db: Database,
    org_id: int,
    key: Key,
    merge: Callable[[Issuer], Issuer],
    measure: Callable[[Issuer], int],
) -> Issuer:
    """Updates an issuer to ``merge(existing)`` (the transport's update, e.g. a field mask),
    which must pass every create rule."""
    try:
        async with db.write() as conn:
            existing = await store.get_issuer(conn, org_id, key)
            issuer = validate_issuer(merge(existing))
            issuer.id, issuer.entity_id, issuer.org_id = (
                existing.id,
                existing.entity_id,
                existing.org_id,
            )
            issuer.created_by, issuer.created_at = existing.created_by, existing.created_at
            issuer.updated_at = dt.datetime.now(dt.UTC)
            # As stored and returned (the transport's measure), so that a full page fits a reply.
            limits.check_bytes(measure(issuer), limits.ISSUER_BYTES, "issuer", "as stored")
            await store.update_issuer(conn, issuer)
        return issuer
    finally:
        # Its public documents show the change at once in this process.
        recent.forget_all(db)


async def delete_issuer(db: Database, org_id: int, key: Key, *, cascade: bool) -> None:
    """Deletes an issuer; one with badge classes only with ``cascade``."""
    try:
        async with db.write() as conn:
            await store.delete_issuer(conn, org_id, key, cascade=cascade)
    finally:
        # Its public documents show the change at once in this process.
        recent.forget_all(db)
