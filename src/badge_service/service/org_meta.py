"""Use cases of an organisation's meta tags (Capillary org meta)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from badge_service.domain.org_meta import OrgMeta, OrgMetaTag, validate_tags
from badge_service.store import orgs as store
from badge_service.store.db import Database


async def get_org_meta(db: Database, org_id: int) -> OrgMeta:
    """The org meta of ``org_id``."""
    async with db.read(snapshot=False) as conn:  # one SELECT
        return await conn.run_sync(store.get_org_meta, org_id)


async def update_org_meta(
    db: Database,
    org_id: int,
    key_id: int,
    merge: Callable[[OrgMeta], list[OrgMetaTag]],
) -> OrgMeta:
    """Replaces the tags with ``merge(existing)`` (the transport's update of the stored org
    meta, e.g. a field mask), once they pass the tag rules; ``key_id`` is the caller's key."""
    async with db.write() as conn:
        existing = await conn.run_sync(store.get_org_meta, org_id)
        tags = merge(existing)
        validate_tags(tags)
        now = dt.datetime.now(dt.UTC)
        await store.save_org_meta_tags(conn, org_id, tags, key_id, now)
        existing.tags = tags
        existing.last_updated_on = now
        existing.last_updated_by = key_id
    return existing
