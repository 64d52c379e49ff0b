"""Use cases of Badgr badge classes and their claim codes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from badge_service.domain import limits, paging
from badge_service.domain.badge_classes import (
    BADGE_CLASS,
    BadgeClass,
    BadgeClassFilter,
    apply_archival,
    badge_class_archived,
    validate_badge_class,
)
from badge_service.domain.claim_codes import (
    CLAIM_CODES_DEFAULT_PAGE_SIZE,
    ClaimCode,
    claim_code_of,
    new_claim_code,
    validate_claim_code_batch,
)
from badge_service.domain.ids import new_entity_id, new_hex_id
from badge_service.domain.issuers import ISSUER
from badge_service.domain.lookups import Key, key_of_id_or_entity_id
from badge_service.domain.requests import RequestKey
from badge_service.service import recent, request_ids
from badge_service.service.pages import Page
from badge_service.store import badgr as store
from badge_service.store.db import Database


def class_key(value: str) -> Key:
    """The key of a badge class named by its id or entityId (the claim code RPCs'
    ``id_or_entity_id``)."""
    return key_of_id_or_entity_id(value, "id_or_entity_id", BADGE_CLASS)


def _is_code_key(after: object) -> bool:
    # bool is an int too; the range keeps the value within BIGINT.
    return type(after) is int and 0 <= after < 2**63


async def list_badge_classes(
    db: Database,
    org_id: int,
    page_size: int,
    page_token: str,
    *,
    issuer: str,
    archived: bool | None,
) -> Page[BadgeClass]:
    """The org's badge classes oldest first, of the issuer named by id or entityId (all
    with ""), archived or not (either with None); a keyset page of ``page_size``."""
    size = paging.resolve_page_size(
        page_size, default=limits.BADGE_CLASSES_PAGE, maximum=limits.BADGE_CLASSES_PAGE
    )
    issuer_key = key_of_id_or_entity_id(issuer, "issuer", ISSUER) if issuer else None
    async with db.read() as conn:
        issuer_id = None
        if issuer_key is not None:
            issuer_id = (await store.get_issuer(conn, org_id, issuer_key)).id
        flt = BadgeClassFilter(issuer_id=issuer_id, archived=archived)
        fingerprint = paging.filter_fingerprint("badgr_badge_classes", flt)
        after = paging.after_hex_id(page_token, fingerprint)
        total = await store.count_badge_classes(conn, org_id, flt)
        rows = await store.list_badge_classes(conn, org_id, flt, limit=size + 1, after=after)
    rows, token = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
    return Page(rows, token, total)


async def get_badge_class(db: Database, org_id: int, key: Key) -> BadgeClass:
    """One badge class of the org."""
    async with db.read() as conn:
        return await store.get_badge_class(conn, org_id, key)


async def create_badge_class(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    key_id: int,
    issuer_key: Key,
    badge_class: BadgeClass,
    measure: Callable[[BadgeClass], int],
    encode: Callable[[BadgeClass], bytes],
) -> bytes:
    """Creates ``badge_class`` (checked here against its issuer's property definitions, and
    its size as ``measure`` counts it) under the org's issuer ``issuer_key``; its reply is
    ``encode`` of the stored class, or a retry's first reply (request id ``key``)."""
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        first = await request_ids.claim(conn, key, now)
        if first is not None:
            return first
        issuer = await store.get_issuer(conn, org_id, issuer_key)
        bc = validate_badge_class(
            badge_class, definitions=issuer.preferences.custom_property_definitions
        )
        bc.id, bc.entity_id = new_hex_id(), new_entity_id()
        bc.org_id, bc.created_by = org_id, str(key_id)
        bc.issuer_id, bc.issuer_entity_id = issuer.id, issuer.entity_id
        bc.created_at = bc.updated_at = now
        apply_archival(bc, None, now)
        # As stored and returned (the transport's measure), so that a full page fits a reply.
        limits.check_bytes(measure(bc), limits.BADGE_CLASS_BYTES, "badge_class", "as stored")
        await store.insert_badge_class(conn, bc)
        reply = encode(bc)
        await request_ids.complete(conn, key, reply)
    return reply


async def update_badge_class(
    db: Database,
    org_id: int,
    key: Key,
    merge: Callable[[BadgeClass], BadgeClass],
    measure: Callable[[BadgeClass], int],
) -> BadgeClass:
    """Updates a badge class to ``merge(existing)`` (the transport's update, e.g. a field
    mask), which must pass every create rule."""
    now = dt.datetime.now(dt.UTC)
    try:
        async with db.write() as conn:
            existing = await store.get_badge_class(conn, org_id, key)
            merged = merge(existing)
            issuer = await store.get_issuer(conn, org_id, Key(False, existing.issuer_id))
            bc = validate_badge_class(
                merged, definitions=issuer.preferences.custom_property_definitions
            )
            bc.id, bc.entity_id, bc.org_id = existing.id, existing.entity_id, existing.org_id
            bc.issuer_id, bc.issuer_entity_id = existing.issuer_id, existing.issuer_entity_id
            bc.created_by, bc.created_at = existing.created_by, existing.created_at
            bc.updated_at = now
            apply_archival(bc, existing, now)
            # As stored and returned (the transport's measure), so that a full page fits a reply.
            limits.check_bytes(measure(bc), limits.BADGE_CLASS_BYTES, "badge_class", "as stored")
            await store.update_badge_class(conn, bc)
        return bc
    finally:
        # Its public documents show the change at once in this process.
        recent.forget_all(db)


async def delete_badge_class(db: Database, org_id: int, key: Key, *, cascade: bool) -> None:
    """Deletes a badge class with its claim codes; an awarded one only with ``cascade``."""
    try:
        async with db.write() as conn:
            await store.delete_badge_class(conn, org_id, key, cascade=cascade)
    finally:
        # Its public documents show the change at once in this process.
        recent.forget_all(db)


async def create_claim_codes(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    badge_class: Key,
    count: int,
    label: str,
    use_limit: int | None,
    expires_at: dt.datetime | None,
    encode: Callable[[list[ClaimCode], str], bytes],
) -> bytes:
    """Creates ``count`` claim codes (or one) for a badge class that is not archived; the
    reply is ``encode(codes, class entityId)``, or a retry's first reply."""
    now = dt.datetime.now(dt.UTC)
    batch = validate_claim_code_batch(count, label, use_limit, expires_at, now=now)
    async with db.write() as conn:
        first = await request_ids.claim(conn, key, now)
        if first is not None:
            return first
        bc = await store.get_badge_class(conn, org_id, badge_class)
        if bc.archived:
            raise badge_class_archived()
        codes = [
            ClaimCode(
                code=new_claim_code(),
                badge_class_id=bc.id,
                label=batch.label,
                use_limit=batch.use_limit,
                uses_remaining=batch.use_limit,
                expires_at=batch.expires_at,
                created_at=now,
                org_id=org_id,
            )
            for _ in range(batch.count)
        ]
        await store.insert_claim_codes(conn, codes, new_claim_code)
        reply = encode(codes, bc.entity_id)
        await request_ids.complete(conn, key, reply)
    return reply


async def list_claim_codes(
    db: Database, org_id: int, badge_class: Key, page_size: int, page_token: str
) -> tuple[Page[ClaimCode], str]:
    """The claim codes of a badge class oldest first, a keyset page of ``page_size``, and
    the class's entityId."""
    size = paging.resolve_page_size(
        page_size, default=CLAIM_CODES_DEFAULT_PAGE_SIZE, maximum=limits.CLAIM_CODES_PAGE
    )
    async with db.read() as conn:
        bc = await store.get_badge_class(conn, org_id, badge_class)
        fingerprint = paging.filter_fingerprint("badgr_claim_codes", bc.id)
        after = paging.resume_after(page_token, fingerprint, _is_code_key)
        total = await store.count_claim_codes(conn, org_id, bc.id)
        rows = await store.list_claim_codes(
            conn, org_id, bc.id, limit=size + 1, after=after if isinstance(after, int) else None
        )
    rows, token = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
    return Page(rows, token, total), bc.entity_id


async def delete_claim_code(db: Database, org_id: int, badge_class: Key, code: str) -> None:
    """Deletes one claim code of a badge class."""
    code = claim_code_of(code, "claim_code")
    async with db.write() as conn:
        bc = await store.get_badge_class(conn, org_id, badge_class)
        await store.delete_claim_code(conn, org_id, bc.id, code)
