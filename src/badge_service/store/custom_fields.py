"""Custom field queries. Name uniqueness is the database's unique constraint."""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.custom_fields import CustomField, DataType
from badge_service.domain.errors import NotFound
from badge_service.domain.ids import is_hex_id
from badge_service.store.db import execute_prepared, from_micros, to_micros
from badge_service.store.models import custom_fields as t

RESOURCE = "custom field"


def _from_row(row: Any) -> CustomField:
    return CustomField(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        data_type=DataType(row.data_type),
        is_mandatory=bool(row.is_mandatory),
        default_value=row.default_value,
        is_active=bool(row.is_active),
        created_on=from_micros(row.created_on),
        created_by=row.created_by,
        last_updated_on=from_micros(row.last_updated_on),
        last_updated_by=row.last_updated_by,
    )


def _values(field: CustomField) -> dict[str, Any]:
    assert field.data_type is not None and field.created_on and field.last_updated_on
    return {
        "name": field.name,
        "data_type": field.data_type.value,
        "is_mandatory": field.is_mandatory,
        "default_value": field.default_value,
        "is_active": field.is_active,
        "last_updated_on": to_micros(field.last_updated_on),
        "last_updated_by": field.last_updated_by,
    }


async def insert_field(conn: AsyncConnection, field: CustomField) -> None:
    """Inserts a validated field; ALREADY_EXISTS (740) when the org has the name."""
    assert field.created_on is not None
    values = _values(field) | {
        "id": field.id,
        "org_id": field.org_id,
        "created_on": to_micros(field.created_on),
        "created_by": field.created_by,
    }
    # A taken name is uq_custom_fields_org_id_name: ALREADY_EXISTS (models.VIOLATIONS).
    await conn.execute(insert(t).values(**values))


async def get_field(conn: AsyncConnection, org_id: int, field_id: str) -> CustomField:
    """One field of the org, or NOT_FOUND (at once for what cannot be one of our ids)."""
    if not is_hex_id(field_id):
        raise NotFound(RESOURCE, field_id)
    row = (await conn.execute(select(t).where(t.c.org_id == org_id, t.c.id == field_id))).first()
    if row is None:
        raise NotFound(RESOURCE, field_id)
    return _from_row(row)


def list_fields(
    conn: Connection, org_id: int, *, after: str | None = None, limit: int | None = None
) -> list[CustomField]:
    """The org's fields in id (creation) order, optionally after a keyset position
    (synchronous: async callers use ``conn.run_sync``)."""
    if after is None and limit is None:  # every badge and award write asks this
        return _all_of_org(conn, org_id)
    stmt = select(t).where(t.c.org_id == org_id).order_by(t.c.id)
    if after is not None:
        stmt = stmt.where(t.c.id > after)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_from_row(r) for r in conn.execute(stmt)]


# Built once, so its cache key is too. Run by execute_prepared, which hands over the driver's
# values: the Booleans are selected as the integers SQLite stores (_from_row makes them bools).
_ALL_OF_ORG = (
    select(
        *(type_coerce(c, Integer).label(c.key) if isinstance(c.type, Boolean) else c for c in t.c)
    )
    .where(t.c.org_id == bindparam("org_id"))
    .order_by(t.c.id)
)
_COLUMNS = [c.key for c in t.c]
# Fields built from an org's rows, by org, with the rows they came from.
_FIELDS: OrderedDict[int, tuple[list[tuple[Any, ...]], list[CustomField]]] = OrderedDict()
_FIELDS_MAX = 256
_FIELDS_LOCK = threading.Lock()  # run_write, run_read and the event loop share it


def _all_of_org(conn: Connection, org_id: int) -> list[CustomField]:
    """Every field of the org. The rows are read in the caller's transaction, as always, but
    the fields are built from them only when they differ from the rows last read for the org:
    at CUSTOM_FIELDS_PER_ORG, building them was most of what checking a badge cost."""
    rows = [tuple(r) for r in execute_prepared(conn, _ALL_OF_ORG, {"org_id": org_id})]
    with _FIELDS_LOCK:
        found = _FIELDS.get(org_id)
        if found is not None and found[0] == rows:
            _FIELDS.move_to_end(org_id)
            return list(found[1])
    fields = [_from_row(SimpleNamespace(**dict(zip(_COLUMNS, r, strict=True)))) for r in rows]
    with _FIELDS_LOCK:
        _FIELDS[org_id] = (rows, fields)
        _FIELDS.move_to_end(org_id)
        while len(_FIELDS) > _FIELDS_MAX:
            _FIELDS.popitem(last=False)
    return list(fields)


async def count_fields(conn: AsyncConnection, org_id: int) -> int:
    """How many fields the org has."""
    stmt = select(func.count()).select_from(t).where(t.c.org_id == org_id)
    return int((await conn.execute(stmt)).scalar_one())


async def update_field(conn: AsyncConnection, field: CustomField) -> None:
    """Writes a validated field back; ALREADY_EXISTS (740) when renamed onto a taken name."""
    await conn.execute(
        update(t).where(t.c.org_id == field.org_id, t.c.id == field.id).values(**_values(field))
    )


async def delete_field(conn: AsyncConnection, org_id: int, field_id: str) -> None:
    """Deletes a field, or NOT_FOUND."""
    if not is_hex_id(field_id):
        raise NotFound(RESOURCE, field_id)
    result = await conn.execute(delete(t).where(t.c.org_id == org_id, t.c.id == field_id))
    if result.rowcount == 0:
        raise NotFound(RESOURCE, field_id)


async def kept_id_owner(conn: AsyncConnection, field_id: str) -> int | None:
    """The org of the field with this id, whichever org it is; None when there is none (an
    import keeps a vendor's id only where no other org's field has it)."""
    row = (await conn.execute(select(t.c.org_id).where(t.c.id == field_id))).first()
    return None if row is None else int(row.org_id)
