"""The store's one translation point (store/errors.py: the unit of work turns database errors
into domain errors, constraint violations through models.VIOLATIONS) and the guards on the
SQLite data paths (store/db.py): the raw path refuses columns that need a result processor,
and the group commit's cache refuses entries read from a table the batch wrote. Each on the
server's own database (a real SQLite file, a real PostgreSQL database), through every way a
statement reaches it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import pytest
from sqlalchemy import ForeignKeyConstraint, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from badge_service.domain.awards import Recipient, RecipientKind
from badge_service.domain.badges import Badge, BadgeState, BadgeStateType
from badge_service.domain.custom_fields import CustomField, DataType
from badge_service.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from badge_service.domain.ids import new_hex_id
from badge_service.store import badges as badge_store
from badge_service.store import custom_fields as field_store
from badge_service.store import progress as progress_store
from badge_service.store.db import (
    BATCH_READS,
    BatchCacheError,
    PreparedLookup,
    RawPathError,
    batch_cache,
    execute_prepared,
)
from badge_service.store.models import (
    VIOLATIONS,
    awards,
    badges,
    custom_fields,
    metadata,
    org_meta,
)
from tests.support import Backend, Org

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _badge(org: Org, name: str) -> Badge:
    return Badge(
        name=name,
        title="Guarded",
        badge_states=[BadgeState(state=BadgeStateType.EARNED, order=1)],
        date_start=NOW,
        display_date_start=NOW,
        org_id=org.id,
        create_time=NOW,
        update_time=NOW,
    )


def _field(org: Org, name: str) -> CustomField:
    return CustomField(
        name=name,
        data_type=DataType.STRING,
        id=new_hex_id(),
        org_id=org.id,
        created_on=NOW,
        last_updated_on=NOW,
    )


# --- One translation point ---------------------------------------------------------------------


def test_every_translated_violation_names_a_constraint_of_the_models() -> None:
    """A rule keyed by a name no constraint has would never apply: the names are checked
    against the models (which the migrations match), and a DELETE's rule is a foreign key's."""
    constraints = {str(c.name): c for table in metadata.tables.values() for c in table.constraints}
    for name, deleting in VIOLATIONS:
        assert name in constraints, name
        if deleting:
            assert isinstance(constraints[name], ForeignKeyConstraint), name


async def test_a_taken_badge_name_is_translated_on_every_path(backend: Backend, org: Org) -> None:
    """The same violation through run_write (on SQLite the raw driver connection, on
    PostgreSQL asyncpg) and through write() (aiosqlite): ALREADY_EXISTS with the name, raised
    from the driver's IntegrityError."""
    db = backend.db
    name = f"taken_{secrets.token_hex(4)}"
    await db.run_write(badge_store.insert_badge, _badge(org, name), b"")
    with pytest.raises(AlreadyExists) as raised:
        await db.run_write(badge_store.insert_badge, _badge(org, name), b"")
    assert raised.value.reason == "BADGE_NAME_TAKEN"
    assert raised.value.metadata == {"name": name}
    assert isinstance(raised.value.__cause__, IntegrityError)
    with pytest.raises(AlreadyExists) as raised:
        async with db.write() as conn:
            await conn.run_sync(badge_store.insert_badge, _badge(org, name), b"")
    assert raised.value.reason == "BADGE_NAME_TAKEN"


async def test_a_taken_custom_field_name_is_translated(backend: Backend, org: Org) -> None:
    name = f"field_{secrets.token_hex(4)}"
    async with backend.db.write() as conn:
        await field_store.insert_field(conn, _field(org, name))
    with pytest.raises(AlreadyExists) as raised:
        async with backend.db.write() as conn:
            await field_store.insert_field(conn, _field(org, name))
    assert raised.value.reason == "CUSTOM_FIELD_NAME_TAKEN"
    assert raised.value.metadata["name"] == name


async def test_a_foreign_key_is_found_by_the_statement_s_table(backend: Backend, org: Org) -> None:
    """SQLite names no foreign key in its error: the statement's table and verb find it. A
    DELETE of an awarded badge is BADGE_AWARDED, progress of a missing badge NOT_FOUND."""
    db = backend.db
    badge_id = await db.run_write(
        badge_store.insert_badge, _badge(org, f"awarded_{secrets.token_hex(4)}"), b""
    )

    def award(conn: Connection) -> None:
        conn.execute(
            insert(awards).values(
                id=secrets.token_hex(12),
                org_id=org.id,
                kind="badge",
                badge_id=badge_id,
                recipient_key="member_id:m1",
                issued_at=0,
                narrative="",
                evidence=[],
                custom_data={},
                revocation_reason="",
                claim_code="",
                salt="",
                create_time=0,
                created_by=0,
            )
        )

    await db.run_write(award)
    remove = delete(badges).where(
        badges.c.id == bindparam("id"), badges.c.org_id == bindparam("org_id")
    )
    with pytest.raises(FailedPrecondition) as refused:
        await db.run_write(lambda c: c.execute(remove, {"id": badge_id, "org_id": org.id}))
    assert refused.value.reason == "BADGE_AWARDED"
    assert refused.value.metadata == {"badge_id": str(badge_id)}

    missing = _badge(org, "missing")
    missing.id = badge_id + 1_000_000
    recipient = Recipient(RecipientKind.MEMBER_ID, "m1")
    with pytest.raises(NotFound) as gone:
        await db.run_write(
            progress_store.mark_earned, org.id, missing, "member_id:m1", recipient, NOW
        )
    assert gone.value.metadata == {"resource": "badge", "id": str(missing.id)}


async def test_a_violation_the_table_does_not_name_passes_through(
    backend: Backend, org: Org
) -> None:
    """Not every constraint is the client's doing: one the table does not name stays the
    driver's error (INTERNAL at the transport)."""

    def duplicate_meta(conn: Connection) -> None:
        conn.execute(insert(org_meta).values(id=new_hex_id(), org_id=org.id, tags=[]))

    with pytest.raises(IntegrityError):
        await backend.db.run_write(duplicate_meta)


# --- The raw path refuses columns that need a result processor ---------------------------------


async def test_the_raw_path_refuses_columns_that_need_a_result_processor(
    backend: Backend, org: Org
) -> None:
    """fetch and execute_prepared hand over the driver's values. A Boolean (0 or 1 on SQLite)
    or a JSON document (text) selected there would come back unconverted, so the statement is
    refused when it is first prepared, with what to do instead; on PostgreSQL (SQLAlchemy
    converts) the same statements run."""
    db = backend.db
    flags = select(custom_fields.c.is_active).where(custom_fields.c.org_id == bindparam("org_id"))
    tags = select(org_meta.c.tags).where(org_meta.c.org_id == bindparam("org_id"))
    # store.custom_fields read every column so, before it selected the Booleans as integers.
    whole = select(custom_fields).where(custom_fields.c.org_id == bindparam("org_id"))
    params = {"org_id": org.id}
    if backend.name != "sqlite":
        await db.fetch((flags, params), (tags, params), (whole, params))
        return
    for stmt, column in ((flags, "is_active"), (tags, "tags"), (whole, "is_mandatory")):
        with pytest.raises(RawPathError, match=column):
            await db.fetch((stmt, params))
        with pytest.raises(RawPathError, match="result processor"):
            await db.run_read(execute_prepared, stmt, params)
        # Refused again, not cached as if it had been accepted.
        with pytest.raises(RawPathError):
            await db.fetch((stmt, params))
    # PreparedLookup applies the processors itself: the same column comes back a list.
    lookup = PreparedLookup(tags)
    row = await db.run_read(lookup.first, params)
    assert row.tags == []


# --- The batch cache refuses tables the batch writes -------------------------------------------


async def test_the_batch_cache_refuses_a_table_the_batch_wrote(backend: Backend, org: Org) -> None:
    """A group commit's writes share reads of what none of them changes. An entry read from a
    table that a write of the batch changed (through execute_prepared or SQLAlchemy) is
    refused, as is a kind of entry that does not declare its tables."""
    db = backend.db
    name = f"cached_{secrets.token_hex(4)}"

    def after_a_badge(conn: Connection) -> Any:
        # Badges are what batches write; the rules are read from elsewhere.
        cache = batch_cache(conn)
        assert cache is not None
        assert cache.usable(("award-badge", org.id, 1))
        badge_store.insert_badge(conn, _badge(org, name), b"")
        # A kind read from badges is no longer usable (its users read the rows themselves).
        assert not cache.usable(("award-badge", org.id, 1))
        with pytest.raises(BatchCacheError, match="badges"):
            cache.get(("award-badge", org.id, 1))
        with pytest.raises(BatchCacheError, match="BATCH_READS"):
            cache.usable(("undeclared", org.id))
        assert cache.usable(("badge-rules", org.id))
        cache[("badge-rules", org.id)] = "rules"
        return cache.get(("badge-rules", org.id))

    assert await db.run_write(after_a_badge) == "rules"

    def after_org_meta(conn: Connection) -> Any:
        conn.execute(update(org_meta).where(org_meta.c.org_id == org.id).values(tags=[]))
        cache = batch_cache(conn)
        assert cache is not None
        return cache.get(("badge-rules", org.id))

    with pytest.raises(BatchCacheError, match="org_meta"):
        await db.run_write(after_org_meta)

    def after_a_field(conn: Connection) -> Any:
        cache = batch_cache(conn)
        assert cache is not None
        cache[("award-custom-fields", org.id)] = []
        execute_prepared(
            conn,
            insert(custom_fields),
            field_store._values(_field(org, name))
            | {
                "id": new_hex_id(),
                "org_id": org.id,
                "created_on": 0,
                "created_by": 0,
            },
        )
        return cache.get(("award-custom-fields", org.id))

    with pytest.raises(BatchCacheError, match="custom_fields"):
        await db.run_write(after_a_field)

    def undeclared(conn: Connection) -> Any:
        cache = batch_cache(conn)
        assert cache is not None
        return cache.get(("my-own-kind", org.id))

    with pytest.raises(BatchCacheError, match="BATCH_READS"):
        await db.run_write(undeclared)


def test_batch_reads_name_tables_of_the_models() -> None:
    for kind, tables in BATCH_READS.items():
        assert tables <= set(metadata.tables), kind
