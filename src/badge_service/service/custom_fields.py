"""Use cases of custom fields (Capillary): an organisation's extra badge fields."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from badge_service.domain import limits, paging
from badge_service.domain.custom_fields import CustomField, check_org_fields, validate_custom_field
from badge_service.domain.ids import new_hex_id
from badge_service.domain.requests import RequestKey
from badge_service.service import request_ids
from badge_service.service.pages import Page
from badge_service.store import custom_fields as store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Database

LIST_DEFAULT = 50


async def create_custom_field(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    key_id: int,
    field: CustomField,
    encode: Callable[[CustomField], bytes],
) -> bytes:
    """Creates ``field`` (checked here) for the org of the caller's key ``key_id``; its
    reply is ``encode`` of the stored field, or a retry's first reply (request id ``key``).
    740/741/742/744 as Capillary; RESOURCE_EXHAUSTED past the org's quotas."""
    field = validate_custom_field(field)
    now = dt.datetime.now(dt.UTC)
    field.id = new_hex_id()
    field.org_id = org_id
    field.created_on = field.last_updated_on = now
    field.created_by = field.last_updated_by = key_id
    async with db.write() as conn:
        first = await request_ids.claim(conn, key, now)
        if first is not None:
            return first
        # Under the org's lock, so concurrent creates cannot pass the quotas together.
        await orgs_store.lock_org(conn, org_id)
        fields = await conn.run_sync(store.list_fields, org_id)
        check_org_fields([*fields, field])
        await store.insert_field(conn, field)
        reply = encode(field)
        await request_ids.complete(conn, key, reply)
    return reply


async def get_custom_field(db: Database, org_id: int, field_id: str) -> CustomField:
    """One field of the org."""
    async with db.read(snapshot=False) as conn:  # one SELECT
        return await store.get_field(conn, org_id, field_id)


async def list_custom_fields(
    db: Database, org_id: int, page_size: int, page_token: str
) -> Page[CustomField]:
    """The org's fields oldest first, a keyset page of ``page_size`` (0: the default)."""
    size = paging.resolve_page_size(
        page_size, default=LIST_DEFAULT, maximum=limits.CUSTOM_FIELDS_PAGE
    )
    fingerprint = paging.filter_fingerprint("custom_fields")
    after = paging.after_hex_id(page_token, fingerprint)
    async with db.read() as conn:
        total = await store.count_fields(conn, org_id)
        fields = await conn.run_sync(store.list_fields, org_id, after=after, limit=size + 1)
    fields, token = paging.keyset_page(fields, size, fingerprint, lambda r: r.id)
    return Page(fields, token, total)


async def update_custom_field(
    db: Database,
    org_id: int,
    key_id: int,
    field_id: str,
    merge: Callable[[CustomField], CustomField],
) -> CustomField:
    """Updates a field to ``merge(existing)`` (the transport's update, e.g. a field mask),
    which must pass every create rule and the org's quotas."""
    async with db.write() as conn:
        existing = await store.get_field(conn, org_id, field_id)
        field = validate_custom_field(merge(existing))
        field.id, field.org_id = existing.id, existing.org_id
        field.created_on, field.created_by = existing.created_on, existing.created_by
        field.last_updated_on = dt.datetime.now(dt.UTC)
        field.last_updated_by = key_id
        await orgs_store.lock_org(conn, org_id)
        fields = await conn.run_sync(store.list_fields, org_id)
        check_org_fields([field if f.id == field.id else f for f in fields])
        await store.update_field(conn, field)
    return field


async def delete_custom_field(db: Database, org_id: int, field_id: str) -> None:
    """Deletes a field of the org."""
    async with db.write() as conn:
        await store.delete_field(conn, org_id, field_id)
