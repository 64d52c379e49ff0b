"""The definitions an award names (a CrowdTwist badge, a Credly template, a Badgr class), read
synchronously inside the award's own transaction (``Database.run_write`` / ``run_read``).

The template and Badgr stores' own lookups take an AsyncConnection and build their statement
per call. These run statements built once (``db.PreparedLookup``: on SQLite, SQLAlchemy's
execution of even a cached select costs several times the lookup) and decode rows with the
owning store's row decoder, so a definition reads the same whichever path loaded it. Badges
come from the badge store's own (synchronous, prebuilt) get_badge.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from badge_service.domain.badge_classes import BADGE_CLASS, BadgeClass
from badge_service.domain.badge_templates import RESOURCE as TEMPLATE
from badge_service.domain.badge_templates import BadgeTemplate
from badge_service.domain.badges import Badge
from badge_service.domain.errors import NotFound
from badge_service.domain.lookups import Key
from badge_service.store import badge_templates as templates_store
from badge_service.store import badges as badges_store
from badge_service.store import badgr as badgr_store
from badge_service.store.db import PreparedLookup
from badge_service.store.models import badge_templates as tt
from badge_service.store.models import badgr_badge_classes as bct
from badge_service.store.models import badgr_issuers as it

_TEMPLATE = PreparedLookup(
    select(tt).where(tt.c.id == bindparam("id"), tt.c.org_id == bindparam("org_id"))
)
# As the Badgr store reads a class: with its issuer's entity id.
_CLASS = select(bct, it.c.entity_id.label("issuer_entity_id")).join(it, it.c.id == bct.c.issuer_id)
_CLASS_BY_ID = PreparedLookup(
    _CLASS.where(bct.c.id == bindparam("ref"), bct.c.org_id == bindparam("org_id"))
)
_CLASS_BY_ENTITY_ID = PreparedLookup(
    _CLASS.where(bct.c.entity_id == bindparam("ref"), bct.c.org_id == bindparam("org_id"))
)


def badge(conn: Connection, org_id: int, badge_id: int) -> Badge:
    """A badge of the org, or NOT_FOUND (the badge store's get_badge)."""
    return badges_store.get_badge(conn, org_id, badge_id)


def template(conn: Connection, org_id: int, template_id: str) -> BadgeTemplate:
    """A template of the org, or NOT_FOUND (as the template store's get_template)."""
    row = _TEMPLATE.first(conn, {"id": template_id, "org_id": org_id})
    if row is None:
        raise NotFound(TEMPLATE, template_id)
    return templates_store.from_row(row)


def badge_class(conn: Connection, org_id: int, key: Key) -> BadgeClass:
    """A class of the org by id or entity id, or NOT_FOUND (as the Badgr store's
    get_badge_class)."""
    stmt = _CLASS_BY_ENTITY_ID if key.by_entity_id else _CLASS_BY_ID
    row = stmt.first(conn, {"ref": key.value, "org_id": org_id})
    if row is None:
        raise NotFound(BADGE_CLASS, key.value)
    return badgr_store.class_from_row(row)
