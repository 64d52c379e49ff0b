"""Badgr queries: issuers, badge classes and their claim codes.

Every query is scoped by the caller's organisation. Deletes that span tables (cascade) run in
the caller's transaction, so they happen whole or not at all; the foreign key from a badge
class to its issuer has no ON DELETE, so the database itself refuses to orphan a class.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.badge_classes import (
    BADGE_CLASS,
    Alignment,
    BadgeClass,
    BadgeClassFilter,
    BadgeClassPreferences,
    Expires,
    ExpiresDuration,
    Ob3Properties,
    PropertyValue,
    badge_class_awarded,
)
from badge_service.domain.claim_codes import CLAIM_CODE, ClaimCode
from badge_service.domain.errors import NotFound
from badge_service.domain.issuers import (
    ISSUER,
    Issuer,
    IssuerPreferences,
    PropertyChoice,
    PropertyDefinition,
    PropertyTarget,
    PropertyType,
    SkillLinking,
    StaffMember,
    StaffRole,
    UserEmail,
    UserProfile,
    issuer_has_badge_classes,
)
from badge_service.domain.lookups import Key
from badge_service.store import awards as awards_store
from badge_service.store.db import from_micros, opt_datetime, opt_micros, to_micros
from badge_service.store.models import badgr_badge_classes as bct
from badge_service.store.models import badgr_claim_codes as cct
from badge_service.store.models import badgr_issuers as it
from badge_service.store.models import badgr_open_badge_aliases

# Attempts at a batch of claim codes before giving up; a collision of ~59-bit random codes
# is already vanishingly rare, two in a row would mean a broken random source.
_CODE_ATTEMPTS = 3


# --- Issuers ----------------------------------------------------------------------------------


def _staff_doc(s: StaffMember) -> dict[str, Any]:
    assert s.role is not None
    p = s.user_profile
    return {
        "role": s.role.value,
        "user": s.user,
        "user_profile": None
        if p is None
        else {
            "entity_id": p.entity_id,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "emails": [
                {"email": e.email, "verified": e.verified, "primary": e.primary} for e in p.emails
            ],
            "url": list(p.url),
            "telephone": list(p.telephone),
            "badgr_domain": p.badgr_domain,
            "agreed_terms_version": p.agreed_terms_version,
            "marketing_opt_in": p.marketing_opt_in,
            "has_password_set": p.has_password_set,
        },
    }


def _staff_of(doc: dict[str, Any]) -> StaffMember:
    p = doc["user_profile"]
    profile = None
    if p is not None:
        profile = UserProfile(
            entity_id=p["entity_id"],
            first_name=p["first_name"],
            last_name=p["last_name"],
            emails=[UserEmail(e["email"], e["verified"], e["primary"]) for e in p["emails"]],
            url=list(p["url"]),
            telephone=list(p["telephone"]),
            badgr_domain=p["badgr_domain"],
            agreed_terms_version=p["agreed_terms_version"],
            marketing_opt_in=p["marketing_opt_in"],
            has_password_set=p["has_password_set"],
        )
    return StaffMember(StaffRole(doc["role"]), doc["user"], profile)


def _issuer_prefs_doc(p: IssuerPreferences) -> dict[str, Any]:
    return {
        "custom_property_definitions": [
            {
                "property_type": d.property_type.value if d.property_type else None,
                "target_entity_type": d.target_entity_type.value if d.target_entity_type else None,
                "property_id": d.property_id,
                "label": d.label,
                "sub_label": d.sub_label,
                "public": d.public,
                "required": d.required,
                "choice_values": [{"id": c.id, "label": c.label} for c in d.choice_values],
            }
            for d in p.custom_property_definitions
        ],
        "default_print_cert_template_id": p.default_print_cert_template_id,
        "enabled_print_cert_template_ids": list(p.enabled_print_cert_template_ids),
    }


def _issuer_prefs_of(doc: dict[str, Any]) -> IssuerPreferences:
    return IssuerPreferences(
        custom_property_definitions=[
            PropertyDefinition(
                property_type=PropertyType(d["property_type"]),
                target_entity_type=PropertyTarget(d["target_entity_type"]),
                property_id=d["property_id"],
                label=d["label"],
                sub_label=d["sub_label"],
                public=d["public"],
                required=d["required"],
                choice_values=[PropertyChoice(c["id"], c["label"]) for c in d["choice_values"]],
            )
            for d in doc["custom_property_definitions"]
        ],
        default_print_cert_template_id=doc["default_print_cert_template_id"],
        enabled_print_cert_template_ids=list(doc["enabled_print_cert_template_ids"]),
    )


def _issuer_values(i: Issuer) -> dict[str, Any]:
    assert i.updated_at is not None
    return {
        "name": i.name,
        "email": i.email,
        "url": i.url,
        "image": i.image,
        "description": i.description,
        "badgr_domain": i.badgr_domain,
        "source": i.source,
        "source_url": i.source_url,
        "image_path": i.image_path,
        "original_json": i.original_json,
        "extensions": i.extensions,
        "staff": [_staff_doc(s) for s in i.staff],
        "skill_linking": {
            "type": i.skill_linking.type,
            "server_uri": i.skill_linking.server_uri,
            "indeed_region": i.skill_linking.indeed_region,
        },
        "preferences": _issuer_prefs_doc(i.preferences),
        "updated_at": to_micros(i.updated_at),
    }


def _issuer_of(r: Any) -> Issuer:
    sl = r.skill_linking
    return Issuer(
        id=r.id,
        org_id=r.org_id,
        entity_id=r.entity_id,
        name=r.name,
        email=r.email,
        url=r.url,
        image=r.image,
        description=r.description,
        badgr_domain=r.badgr_domain,
        source=r.source,
        source_url=r.source_url,
        image_path=r.image_path,
        original_json=r.original_json,
        extensions=r.extensions,
        staff=[_staff_of(s) for s in r.staff],
        skill_linking=SkillLinking(sl["type"], sl["server_uri"], sl["indeed_region"]),
        preferences=_issuer_prefs_of(r.preferences),
        created_by=r.created_by,
        created_at=from_micros(r.created_at),
        updated_at=from_micros(r.updated_at),
    )


def _match(table: Any, org_id: int, key: Key) -> list[ColumnElement[bool]]:
    if key.alias:
        a = badgr_open_badge_aliases
        target = (
            select(a.c.target_id)
            .where(
                a.c.url_sha256 == alias_digest(key.value),
                a.c.org_id == org_id,
                a.c.kind == _ALIAS_KINDS[table.name],
            )
            .scalar_subquery()
        )
        return [table.c.org_id == org_id, table.c.id == target]
    column = table.c.entity_id if key.by_entity_id else table.c.id
    return [table.c.org_id == org_id, column == key.value]


_ALIAS_KINDS = {"badgr_issuers": "issuer", "badgr_badge_classes": "badge_class"}


def alias_digest(url: str) -> str:
    """The key of an openBadgeId alias: the SHA-256 of its URL, in hex."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


async def alias_owner(conn: AsyncConnection, url: str) -> tuple[int, str, str] | None:
    """(org, kind, target id) of an openBadgeId alias, or None."""
    a = badgr_open_badge_aliases
    row = (
        await conn.execute(
            select(a.c.org_id, a.c.kind, a.c.target_id).where(a.c.url_sha256 == alias_digest(url))
        )
    ).first()
    return None if row is None else (int(row.org_id), str(row.kind), str(row.target_id))


async def save_alias(
    conn: AsyncConnection, org_id: int, kind: str, target_id: str, url: str
) -> None:
    """Makes ``url`` name the org's issuer or badge class ``target_id`` (kind ``issuer`` or
    ``badge_class``), replacing what it named before in the org."""
    a = badgr_open_badge_aliases
    digest = alias_digest(url)
    await conn.execute(delete(a).where(a.c.url_sha256 == digest, a.c.org_id == org_id))
    await conn.execute(
        insert(a).values(url_sha256=digest, url=url, org_id=org_id, kind=kind, target_id=target_id)
    )


async def kept_id_owners(
    conn: AsyncConnection, kind: str, id_value: str, entity_id: str
) -> list[tuple[int, str, str]]:
    """(org, id, entity id) of every issuer (kind ``issuer``) or badge class
    (``badge_class``) of any org whose id is ``id_value`` or whose entity id is
    ``entity_id``: an import keeps both only where no other object holds either."""
    table = it if kind == "issuer" else bct
    rows = await conn.execute(
        select(table.c.org_id, table.c.id, table.c.entity_id).where(
            or_(table.c.id == id_value, table.c.entity_id == entity_id)
        )
    )
    return [(int(r.org_id), str(r.id), str(r.entity_id)) for r in rows]


async def insert_issuer(conn: AsyncConnection, issuer: Issuer) -> None:
    """Inserts a validated issuer with its ids set."""
    assert issuer.created_at is not None
    values = _issuer_values(issuer) | {
        "id": issuer.id,
        "org_id": issuer.org_id,
        "entity_id": issuer.entity_id,
        "created_by": issuer.created_by,
        "created_at": to_micros(issuer.created_at),
    }
    await conn.execute(insert(it).values(**values))


async def get_issuer(conn: AsyncConnection, org_id: int, key: Key) -> Issuer:
    """One issuer of the org by id or entity id, or NOT_FOUND."""
    row = (await conn.execute(select(it).where(*_match(it, org_id, key)))).first()
    if row is None:
        raise NotFound(ISSUER, key.value)
    return _issuer_of(row)


async def update_issuer(conn: AsyncConnection, issuer: Issuer) -> None:
    """Writes a validated issuer back."""
    await conn.execute(
        update(it)
        .where(it.c.org_id == issuer.org_id, it.c.id == issuer.id)
        .values(**_issuer_values(issuer))
    )


async def count_issuers(conn: AsyncConnection, org_id: int) -> int:
    """How many issuers the org has."""
    stmt = select(func.count()).select_from(it).where(it.c.org_id == org_id)
    return int((await conn.execute(stmt)).scalar_one())


async def list_issuers(
    conn: AsyncConnection, org_id: int, *, limit: int, after: str | None = None
) -> list[Issuer]:
    """The org's issuers in id (creation) order, after a keyset position."""
    stmt = select(it).where(it.c.org_id == org_id).order_by(it.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(it.c.id > after)
    return [_issuer_of(r) for r in await conn.execute(stmt)]


async def delete_issuer(conn: AsyncConnection, org_id: int, key: Key, *, cascade: bool) -> None:
    """Deletes an issuer, or NOT_FOUND. With badge classes it is FAILED_PRECONDITION unless
    ``cascade``, which deletes the classes (and their claim codes and awards) first."""
    issuer = await get_issuer(conn, org_id, key)
    class_ids = list(
        (
            await conn.execute(
                select(bct.c.id).where(bct.c.org_id == org_id, bct.c.issuer_id == issuer.id)
            )
        ).scalars()
    )
    if class_ids and not cascade:
        raise issuer_has_badge_classes(len(class_ids))
    if class_ids:
        await _delete_classes(conn, org_id, class_ids)
    try:
        await conn.execute(delete(it).where(it.c.org_id == org_id, it.c.id == issuer.id))
    except IntegrityError:
        # A class was created for the issuer after the classes were counted. Not a
        # models.VIOLATIONS rule: the error carries the count, which the statement does not.
        raise issuer_has_badge_classes(len(class_ids) + 1) from None


# --- Awards (issue 4) -------------------------------------------------------------------------


async def count_awards(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> int:
    """How many awards (assertions, live or revoked) the badge classes have;
    delete_badge_class and the issuer cascade refuse (BADGE_CLASS_AWARDED) when it is not 0."""
    return await awards_store.class_award_count(conn, org_id, class_ids)


async def delete_awards(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> None:
    """Deletes the awards of the badge classes (a cascading delete), in the caller's
    transaction."""
    await awards_store.delete_class_awards(conn, org_id, class_ids)


# --- Badge classes ----------------------------------------------------------------------------


def _class_values(b: BadgeClass) -> dict[str, Any]:
    assert b.updated_at is not None
    p = b.preferences
    return {
        "name": b.name,
        "description": b.description,
        "image": b.image,
        "achievement_type": b.achievement_type,
        "criteria_url": b.criteria_url,
        "criteria_narrative": b.criteria_narrative,
        "alignments": [
            {
                "target_name": a.target_name,
                "target_url": a.target_url,
                "target_description": a.target_description,
                "target_framework": a.target_framework,
                "target_code": a.target_code,
                "display_as_skill": a.display_as_skill,
            }
            for a in b.alignments
        ],
        "tags": list(b.tags),
        "expires_amount": b.expires.amount if b.expires.duration else None,
        "expires_duration": b.expires.duration.value if b.expires.duration else None,
        "extensions": b.extensions,
        "source": b.source,
        "source_url": b.source_url,
        "image_path": b.image_path,
        "original_json": b.original_json,
        "archived": b.archived,
        "archived_date": opt_micros(b.archived_date),
        "archival_note": b.archival_note,
        "ob3_properties": {
            "credit_hours": b.ob3_properties.credit_hours,
            "field_of_study": b.ob3_properties.field_of_study,
            "human_code": b.ob3_properties.human_code,
            "specialization": b.ob3_properties.specialization,
        },
        "preferences": {
            "include_on_public_pages": p.include_on_public_pages,
            "custom_property_values": [
                {
                    "property_id": v.property_id,
                    "string_value": v.string_value,
                    "double_value": v.double_value,
                    "array_value": list(v.array_value),
                    "public": v.public,
                }
                for v in p.custom_property_values
            ],
            "enabled_print_cert_template_ids": list(p.enabled_print_cert_template_ids),
            "default_print_cert_template_id": p.default_print_cert_template_id,
        },
        "updated_at": to_micros(b.updated_at),
    }


def class_from_row(r: Any) -> BadgeClass:
    """The domain class of a badge class row joined with its issuer's entity id."""
    ob3, p = r.ob3_properties, r.preferences
    return BadgeClass(
        id=r.id,
        org_id=r.org_id,
        entity_id=r.entity_id,
        issuer_id=r.issuer_id,
        issuer_entity_id=r.issuer_entity_id,
        name=r.name,
        description=r.description,
        image=r.image,
        achievement_type=r.achievement_type,
        criteria_url=r.criteria_url,
        criteria_narrative=r.criteria_narrative,
        alignments=[
            Alignment(
                a["target_name"],
                a["target_url"],
                a["target_description"],
                a["target_framework"],
                a["target_code"],
                a["display_as_skill"],
            )
            for a in r.alignments
        ],
        tags=list(r.tags),
        expires=Expires(r.expires_amount, ExpiresDuration(r.expires_duration))
        if r.expires_duration
        else Expires(),
        extensions=r.extensions,
        source=r.source,
        source_url=r.source_url,
        image_path=r.image_path,
        original_json=r.original_json,
        archived=r.archived,
        archived_date=opt_datetime(r.archived_date),
        archival_note=r.archival_note,
        ob3_properties=Ob3Properties(
            float(ob3["credit_hours"]),
            ob3["field_of_study"],
            ob3["human_code"],
            ob3["specialization"],
        ),
        preferences=BadgeClassPreferences(
            include_on_public_pages=p["include_on_public_pages"],
            custom_property_values=[
                PropertyValue(
                    v["property_id"],
                    v["string_value"],
                    v["double_value"],
                    list(v["array_value"]),
                    v["public"],
                )
                for v in p["custom_property_values"]
            ],
            enabled_print_cert_template_ids=list(p["enabled_print_cert_template_ids"]),
            default_print_cert_template_id=p["default_print_cert_template_id"],
        ),
        created_by=r.created_by,
        created_at=from_micros(r.created_at),
        updated_at=from_micros(r.updated_at),
    )


def _class_select() -> Any:
    return select(bct, it.c.entity_id.label("issuer_entity_id")).join(
        it, it.c.id == bct.c.issuer_id
    )


async def insert_badge_class(conn: AsyncConnection, b: BadgeClass) -> None:
    """Inserts a validated badge class with its ids set; NOT_FOUND when its issuer was
    deleted meanwhile."""
    assert b.created_at is not None
    values = _class_values(b) | {
        "id": b.id,
        "org_id": b.org_id,
        "issuer_id": b.issuer_id,
        "entity_id": b.entity_id,
        "created_by": b.created_by,
        "created_at": to_micros(b.created_at),
    }
    try:
        await conn.execute(insert(bct).values(**values))
    except IntegrityError:
        # The issuer was deleted meanwhile. Not a models.VIOLATIONS rule: the error names the
        # issuer by the entity id the caller used, which the statement does not carry.
        raise NotFound(ISSUER, b.issuer_entity_id) from None


async def get_badge_class(conn: AsyncConnection, org_id: int, key: Key) -> BadgeClass:
    """One badge class of the org by id or entity id, or NOT_FOUND."""
    row = (await conn.execute(_class_select().where(*_match(bct, org_id, key)))).first()
    if row is None:
        raise NotFound(BADGE_CLASS, key.value)
    return class_from_row(row)


async def update_badge_class(conn: AsyncConnection, b: BadgeClass) -> None:
    """Writes a validated badge class back."""
    await conn.execute(
        update(bct).where(bct.c.org_id == b.org_id, bct.c.id == b.id).values(**_class_values(b))
    )


def _class_conditions(org_id: int, flt: BadgeClassFilter) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = [bct.c.org_id == org_id]
    if flt.issuer_id is not None:
        cond.append(bct.c.issuer_id == flt.issuer_id)
    if flt.archived is not None:
        cond.append(bct.c.archived == flt.archived)
    return cond


async def count_badge_classes(conn: AsyncConnection, org_id: int, flt: BadgeClassFilter) -> int:
    """How many of the org's badge classes match the filter."""
    stmt = select(func.count()).select_from(bct).where(*_class_conditions(org_id, flt))
    return int((await conn.execute(stmt)).scalar_one())


async def list_badge_classes(
    conn: AsyncConnection,
    org_id: int,
    flt: BadgeClassFilter,
    *,
    limit: int,
    after: str | None = None,
) -> list[BadgeClass]:
    """Badge classes in id (creation) order, after a keyset position."""
    stmt = _class_select().where(*_class_conditions(org_id, flt)).order_by(bct.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(bct.c.id > after)
    return [class_from_row(r) for r in await conn.execute(stmt)]


async def _delete_classes(conn: AsyncConnection, org_id: int, class_ids: Sequence[str]) -> None:
    await delete_awards(conn, org_id, class_ids)
    await conn.execute(
        delete(cct).where(cct.c.org_id == org_id, cct.c.badge_class_id.in_(class_ids))
    )
    await conn.execute(delete(bct).where(bct.c.org_id == org_id, bct.c.id.in_(class_ids)))


async def delete_badge_class(
    conn: AsyncConnection, org_id: int, key: Key, *, cascade: bool
) -> None:
    """Deletes a badge class and its claim codes, or NOT_FOUND. An awarded class is
    FAILED_PRECONDITION unless ``cascade``, which deletes its awards too."""
    b = await get_badge_class(conn, org_id, key)
    awards = await count_awards(conn, org_id, [b.id])
    if awards and not cascade:
        raise badge_class_awarded(awards)
    await _delete_classes(conn, org_id, [b.id])


# --- Claim codes ------------------------------------------------------------------------------


def _code_of(r: Any) -> ClaimCode:
    return ClaimCode(
        id=r.id,
        org_id=r.org_id,
        badge_class_id=r.badge_class_id,
        code=r.code,
        label=r.label,
        use_limit=r.use_limit,
        uses_remaining=r.uses_remaining,
        expires_at=opt_datetime(r.expires_at),
        created_at=from_micros(r.created_at),
    )


async def insert_claim_codes(
    conn: AsyncConnection, codes: list[ClaimCode], new_code: Callable[[], str]
) -> None:
    """Inserts claim codes. Uniqueness within the class is the database's: on a collision
    (with the class's codes or within the batch) the batch is drawn again with ``new_code``,
    inside a savepoint so the surrounding transaction survives."""
    for attempt in range(_CODE_ATTEMPTS):
        rows = [
            {
                "org_id": c.org_id,
                "badge_class_id": c.badge_class_id,
                "code": c.code,
                "label": c.label,
                "use_limit": c.use_limit,
                "uses_remaining": c.uses_remaining,
                "expires_at": opt_micros(c.expires_at),
                "created_at": to_micros(c.created_at),
            }
            for c in codes
            if c.created_at is not None
        ]
        assert len(rows) == len(codes), "claim codes need created_at"
        try:
            async with conn.begin_nested():
                await conn.execute(insert(cct), rows)
        except IntegrityError:
            if attempt == _CODE_ATTEMPTS - 1:
                raise
            for c in codes:
                c.code = new_code()
            continue
        return


async def count_claim_codes(conn: AsyncConnection, org_id: int, class_id: str) -> int:
    """How many claim codes the badge class has."""
    stmt = (
        select(func.count())
        .select_from(cct)
        .where(cct.c.org_id == org_id, cct.c.badge_class_id == class_id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def list_claim_codes(
    conn: AsyncConnection, org_id: int, class_id: str, *, limit: int, after: int | None = None
) -> list[ClaimCode]:
    """The class's claim codes, oldest first, after a keyset position."""
    stmt = (
        select(cct)
        .where(cct.c.org_id == org_id, cct.c.badge_class_id == class_id)
        .order_by(cct.c.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(cct.c.id > after)
    return [_code_of(r) for r in await conn.execute(stmt)]


async def delete_claim_code(conn: AsyncConnection, org_id: int, class_id: str, code: str) -> None:
    """Deletes one claim code of the class, or NOT_FOUND."""
    result = await conn.execute(
        delete(cct).where(
            cct.c.org_id == org_id, cct.c.badge_class_id == class_id, cct.c.code == code
        )
    )
    if result.rowcount == 0:
        raise NotFound(CLAIM_CODE, code)


# --- Public lookups (hosted Open Badges) --------------------------------------------------
# Entity ids are unique across organisations (a unique column), so the public documents
# find an issuer or class by it alone; nothing here is reachable from the gRPC API, whose
# lookups stay scoped by the caller's org above.


async def get_public_issuer(conn: AsyncConnection, entity_id: str) -> Issuer:
    """The issuer of any organisation with this entity id, or NOT_FOUND."""
    row = (await conn.execute(select(it).where(it.c.entity_id == entity_id))).first()
    if row is None:
        raise NotFound(ISSUER, entity_id)
    return _issuer_of(row)


async def get_public_badge_class(conn: AsyncConnection, entity_id: str) -> BadgeClass:
    """The badge class of any organisation with this entity id, or NOT_FOUND."""
    row = (await conn.execute(_class_select().where(bct.c.entity_id == entity_id))).first()
    if row is None:
        raise NotFound(BADGE_CLASS, entity_id)
    return class_from_row(row)
