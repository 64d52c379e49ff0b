"""Organisations and their org meta (their API keys: store/keys.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.custom_fields import DataType
from badge_service.domain.errors import NotFound
from badge_service.domain.ids import new_hex_id
from badge_service.domain.org_meta import OrgMeta, OrgMetaTag, TagRules
from badge_service.store.db import PreparedLookup, from_micros, to_micros
from badge_service.store.models import org_meta, orgs


@dataclass(frozen=True, slots=True)
class Org:
    """An organisation: integer id (Capillary, CrowdTwist), UUID (Credly) and name."""

    id: int
    uuid: str
    name: str


async def create_org(conn: AsyncConnection, name: str, now: dt.datetime) -> Org:
    """Creates an organisation with its (empty) org meta."""
    org_uuid = str(uuid.uuid4())
    result = await conn.execute(
        insert(orgs)
        .values(uuid=org_uuid, name=name, created_at=to_micros(now))
        .returning(orgs.c.id)
    )
    org_id = int(result.scalar_one())
    await conn.execute(
        insert(org_meta).values(
            id=new_hex_id(),
            org_id=org_id,
            tags=[],
            created_on=to_micros(now),
            created_by=0,
            last_updated_on=to_micros(now),
            last_updated_by=0,
        )
    )
    return Org(org_id, org_uuid, name)


async def get_org(conn: AsyncConnection, org_id: int) -> Org:
    """An organisation by id, or NOT_FOUND."""
    row = (await conn.execute(select(orgs).where(orgs.c.id == org_id))).first()
    if row is None:
        raise NotFound("organisation", org_id)
    return Org(row.id, row.uuid, row.name)


async def lock_org(conn: AsyncConnection, org_id: int) -> None:
    """Holds the organisation's row until the transaction ends (PostgreSQL, SELECT ... FOR
    UPDATE), so that writes checking one of the org's quotas run one at a time and cannot
    both pass it; SQLite has one writer at a time already."""
    await conn.execute(select(orgs.c.id).where(orgs.c.id == org_id).with_for_update())


async def list_orgs(conn: AsyncConnection) -> list[Org]:
    """Every organisation, by id."""
    rows = await conn.execute(select(orgs).order_by(orgs.c.id))
    return [Org(r.id, r.uuid, r.name) for r in rows]


def _tags_from_json(raw: list[dict[str, object]]) -> list[OrgMetaTag]:
    return [
        OrgMetaTag(
            key=str(t["key"]),
            data_type=DataType(str(t["data_type"])),
            description=str(t.get("description", "")),
            mandatory=bool(t.get("mandatory", False)),
        )
        for t in raw
    ]


# Built once (every badge create and update reads it), so its cache key is too.
_META_OF_ORG = select(org_meta).where(org_meta.c.org_id == bindparam("org_id"))


def get_org_meta(conn: Connection, org_id: int) -> OrgMeta:
    """The org meta of an organisation (every org has one); synchronous (async callers use
    ``conn.run_sync``)."""
    row = conn.execute(_META_OF_ORG, {"org_id": org_id}).first()
    if row is None:
        raise NotFound("org meta of organisation", org_id)
    return OrgMeta(
        id=row.id,
        org_id=row.org_id,
        tags=_tags_from_json(row.tags),
        created_on=from_micros(row.created_on),
        created_by=row.created_by,
        last_updated_on=from_micros(row.last_updated_on),
        last_updated_by=row.last_updated_by,
    )


_TAGS_OF_ORG = PreparedLookup(
    select(org_meta.c.tags).where(org_meta.c.org_id == bindparam("org_id"))
)


def get_tag_rules(conn: Connection, org_id: int) -> TagRules:
    """What a badge's tags are checked against (every badge create and update reads it): the
    keys and the mandatory ones, read from the stored tags without building each tag."""
    row = _TAGS_OF_ORG.first(conn, {"org_id": org_id})
    if row is None:
        raise NotFound("org meta of organisation", org_id)
    tags: list[dict[str, object]] = row.tags
    return TagRules(
        frozenset(str(t["key"]) for t in tags),
        tuple(str(t["key"]) for t in tags if t.get("mandatory")),
    )


async def save_org_meta_tags(
    conn: AsyncConnection, org_id: int, tags: list[OrgMetaTag], by: int, now: dt.datetime
) -> None:
    """Replaces the tags of an org's meta."""
    await conn.execute(
        update(org_meta)
        .where(org_meta.c.org_id == org_id)
        .values(
            tags=[
                {
                    "key": t.key,
                    "data_type": t.data_type.value if t.data_type else None,
                    "description": t.description,
                    "mandatory": t.mandatory,
                }
                for t in tags
            ],
            last_updated_on=to_micros(now),
            last_updated_by=by,
        )
    )
