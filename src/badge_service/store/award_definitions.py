"""The definitions an award names (a CrowdTwist badge, a Credly template, a Badgr class), read
synchronously inside the award's own transaction (``Database.run_write`` / ``run_read``).

The definition stores' own lookups build their statement per call, and two of them take an
AsyncConnection. These run statements built once through ``execute_prepared`` (on SQLite,
SQLAlchemy's execution of even a cached select costs several times the lookup; an award reads
its badge in every CreateAward) and decode rows with the owning store's row decoder, so a
definition reads the same whichever path loaded it.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.engine import Connection

from badge_service.domain.badge_templates import RESOURCE as TEMPLATE
from badge_service.domain.badge_templates import BadgeTemplate
from badge_service.domain.badges import Badge
from badge_service.domain.badgr import BADGE_CLASS, BadgeClass, Key
from badge_service.domain.errors import NotFound
from badge_service.store import badge_templates as templates_store
from badge_service.store import badges as badges_store
from badge_service.store import badgr as badgr_store
from badge_service.store.db import execute_prepared
from badge_service.store.models import badge_templates as tt
from badge_service.store.models import badges as bt
from badge_service.store.models import badgr_badge_classes as bct
from badge_service.store.models import badgr_issuers as it


class _Lookup:
    """A select built once that finds at most one row, run through execute_prepared.

    execute_prepared gives the driver's values on SQLite (JSON as text, booleans as 0/1), so
    this applies the columns' own SQLAlchemy result processors (computed once) and gives the
    row attribute access, as ``conn.execute`` would; elsewhere execute_prepared is
    ``conn.execute``, whose rows are already processed.
    """

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self._columns = list(stmt.selected_columns)
        self._row = namedtuple("_Row", [c.key for c in self._columns])  # type: ignore[misc]
        self._processors: list[Callable[[Any], Any] | None] | None = None

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The row, or None."""
        rows = execute_prepared(conn, self.stmt, params)
        if not rows:
            return None
        if conn.dialect.name != "sqlite":
            return rows[0]
        processors = self._processors
        if processors is None:
            dialect = conn.dialect
            processors = self._processors = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in self._columns
            ]
        return self._row(
            *(
                v if p is None or v is None else p(v)
                for p, v in zip(processors, rows[0], strict=True)
            )
        )


# The stored reply bytes (badges.message) are not needed to award a badge.
_BADGE = _Lookup(
    select(*(c for c in bt.c if c.key != "message")).where(
        bt.c.id == bindparam("id"), bt.c.org_id == bindparam("org_id")
    )
)
_TEMPLATE = _Lookup(
    select(tt).where(tt.c.id == bindparam("id"), tt.c.org_id == bindparam("org_id"))
)
# As the Badgr store reads a class: with its issuer's entity id.
_CLASS = select(bct, it.c.entity_id.label("issuer_entity_id")).join(it, it.c.id == bct.c.issuer_id)
_CLASS_BY_ID = _Lookup(
    _CLASS.where(bct.c.id == bindparam("ref"), bct.c.org_id == bindparam("org_id"))
)
_CLASS_BY_ENTITY_ID = _Lookup(
    _CLASS.where(bct.c.entity_id == bindparam("ref"), bct.c.org_id == bindparam("org_id"))
)


def badge(conn: Connection, org_id: int, badge_id: int) -> Badge:
    """A badge of the org, or NOT_FOUND (as the badge store's get_badge)."""
    row = _BADGE.first(conn, {"id": badge_id, "org_id": org_id})
    if row is None:
        raise NotFound(badges_store.RESOURCE, badge_id)
    return badges_store._from_row(row)


def template(conn: Connection, org_id: int, template_id: str) -> BadgeTemplate:
    """A template of the org, or NOT_FOUND (as the template store's get_template)."""
    row = _TEMPLATE.first(conn, {"id": template_id, "org_id": org_id})
    if row is None:
        raise NotFound(TEMPLATE, template_id)
    return templates_store._from_row(row)


def badge_class(conn: Connection, org_id: int, key: Key) -> BadgeClass:
    """A class of the org by id or entity id, or NOT_FOUND (as the Badgr store's
    get_badge_class)."""
    stmt = _CLASS_BY_ENTITY_ID if key.by_entity_id else _CLASS_BY_ID
    row = stmt.first(conn, {"ref": key.value, "org_id": org_id})
    if row is None:
        raise NotFound(BADGE_CLASS, key.value)
    return badgr_store._class_of(row)
