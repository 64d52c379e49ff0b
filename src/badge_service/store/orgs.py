"""Organisations and their org meta (their API keys: store/keys.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, cast, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.custom_fields import DataType
from badge_service.domain.errors import AlreadyExists, NotFound
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


async def create_org(
    conn: AsyncConnection,
    name: str,
    now: dt.datetime,
    org_uuid: str | None = None,
    org_id: int | None = None,
) -> Org:
    """Creates an organisation with its (empty) org meta. ``org_uuid`` and ``org_id`` keep
    ids it had elsewhere (Credly's organisation UUID, Capillary's ``orgId``), else it gets new
    ones; an id another organisation has is ALREADY_EXISTS."""
    if org_uuid is None:
        org_uuid = str(uuid.uuid4())
    elif (await conn.execute(select(orgs.c.id).where(orgs.c.uuid == org_uuid))).first():
        raise _taken("UUID", org_uuid)
    values: dict[str, object] = {"uuid": org_uuid, "name": name, "created_at": to_micros(now)}
    if org_id is not None:
        if (await conn.execute(select(orgs.c.id).where(orgs.c.id == org_id))).first():
            raise _taken("id", str(org_id))
        values["id"] = org_id
        if conn.dialect.name == "postgresql":
            # The sequence does not see an explicit id: moved past it first (forward only), so
            # an organisation created later cannot take it.
            await conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('orgs', 'id'), GREATEST(CAST(:id AS "
                    "BIGINT), nextval(pg_get_serial_sequence('orgs', 'id'))))"
                ),
                {"id": org_id},
            )
    result = await conn.execute(insert(orgs).values(**values).returning(orgs.c.id))
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


def _taken(what: str, value: str) -> AlreadyExists:
    return AlreadyExists(
        f"organisation {what} {value} is already taken",
        reason="KEPT_ID_TAKEN",
        metadata={"resource": "organisation", "id": value},
    )


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


# The stored tags as text (the database writes jsonb out; no JSON is decoded here).
_TAGS_TEXT_OF_ORG = PreparedLookup(
    select(cast(org_meta.c.tags, Text).label("tags")).where(
        org_meta.c.org_id == bindparam("org_id")
    )
)
# Rules decoded from an org's tags, by org, with a digest of the text they came from.
_RULES: OrderedDict[int, tuple[bytes, TagRules]] = OrderedDict()
_RULES_MAX = 1024
_RULES_LOCK = threading.Lock()  # run_write, run_read and the event loop share it


def get_tag_rules(conn: Connection, org_id: int) -> TagRules:
    """What a badge's tags are checked against (every badge create and update reads it): the
    keys and the mandatory ones.

    Decoding an org's tags (up to ORG_META_TAGS_PER_ORG) took most of a badge write's time at
    that quota, on the SQLite writer thread or PostgreSQL's event loop, which every org
    shares. So the rules are kept per org with a digest of the stored text they came from:
    the text is read in this transaction as always and its digest compared, so a change by any
    process is seen at once, and only a changed list is decoded again."""
    row = _TAGS_TEXT_OF_ORG.first(conn, {"org_id": org_id})
    if row is None:
        raise NotFound("org meta of organisation", org_id)
    text: str = row.tags
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    with _RULES_LOCK:
        found = _RULES.get(org_id)
        if found is not None and found[0] == digest:
            _RULES.move_to_end(org_id)
            return found[1]
    tags: list[dict[str, object]] = json.loads(text)
    rules = TagRules(
        frozenset(str(t["key"]) for t in tags),
        tuple(str(t["key"]) for t in tags if t.get("mandatory")),
    )
    with _RULES_LOCK:
        _RULES[org_id] = (digest, rules)
        _RULES.move_to_end(org_id)
        while len(_RULES) > _RULES_MAX:
            _RULES.popitem(last=False)
    return rules


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


async def org_meta_owner(conn: AsyncConnection, meta_id: str) -> int | None:
    """The org whose org meta has this id, or None (an import keeps Capillary's id)."""
    row = (await conn.execute(select(org_meta.c.org_id).where(org_meta.c.id == meta_id))).first()
    return None if row is None else int(row.org_id)


async def set_org_meta_id(conn: AsyncConnection, org_id: int, meta_id: str) -> None:
    """Gives the org's meta the id it had at Capillary (an import)."""
    await conn.execute(update(org_meta).where(org_meta.c.org_id == org_id).values(id=meta_id))
