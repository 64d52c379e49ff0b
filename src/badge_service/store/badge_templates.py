"""Badge template queries: the template rows, their filter terms and the links between
templates; Credly filters, any sort, and keyset or offset pages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Update,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain.awards import template_awarded
from badge_service.domain.badge_templates import (
    RESOURCE,
    Activity,
    Alignment,
    BadgeTemplate,
    Cost,
    Endorsement,
    ExpiryType,
    Level,
    Recommendation,
    RecommendationType,
    TemplateRef,
    TemplateState,
    TimeToEarn,
    TypeCategory,
    Visibility,
    referenced_template_gone,
    slug_candidates,
    slug_taken,
    template_in_use,
)
from badge_service.domain.credly_query import SortKey, SortTerm, TemplateFilter
from badge_service.domain.errors import NotFound
from badge_service.store import awards as awards_store
from badge_service.store.db import from_micros, opt_datetime, opt_micros, to_micros
from badge_service.store.models import badge_template_links as links
from badge_service.store.models import badge_template_terms as terms
from badge_service.store.models import badge_templates as t

REQUIRES = "requires"
RECOMMENDS = "recommends"
SKILL = "skill"
REPORTING_TAG = "reporting_tag"
COLLECTION = "collection"
RECOMMENDATION = "recommendation"

SORT_COLUMNS = {
    SortKey.BADGES_COUNT: t.c.badges_count,
    SortKey.CREATED_AT: t.c.created_at,
    SortKey.NAME: t.c.name_key,
    SortKey.UPDATED_AT: t.c.updated_at,
}

# Scalar settings kept in the doc column, with the enum type to read each back as (or None).
_DOC_SCALARS: dict[str, type[Any] | None] = {
    "visibility": Visibility,
    "allow_duplicate_badges": None,
    "default_expires_at_type": ExpiryType,
    "default_expires_at_date": None,
    "default_expires_in_days": None,
    "earn_this_badge_url": None,
    "enable_earn_this_badge": None,
    "enable_detail_attribute_visibility": None,
    "global_activity_url": None,
    "lock_badge_state": None,
    "send_expiring_badge_notifications": None,
    "settings_enable_related_badges": None,
    "show_badge_lmi": None,
    "show_lmi_jobs": None,
    "show_skill_tag_links": None,
    "record_to_blockchain": None,
    "translatable": None,
    "printing_disabled": None,
    "variants_allowed": None,
    "variant_type": None,
    "variant_name": None,
    "available_locales": None,
    "only_one_skill_required": None,
    "linkedin_share_default_message": None,
    "level": Level,
    "time_to_earn": TimeToEarn,
    "cost": Cost,
    "type_category": TypeCategory,
    "criteria_url_name": None,
    "criteria_url": None,
    "certification": None,
    "image_url": None,
    "skills": None,
    "reporting_tags": None,
    "collection_ids": None,
    "required_badge_template_ids": None,
}


def _doc(b: BadgeTemplate) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name in _DOC_SCALARS:
        value = getattr(b, name)
        doc[name] = value.value if hasattr(value, "value") else value
    doc["alignments"] = [
        {"id": a.id, "name": a.name, "url": a.url, "description": a.description}
        for a in b.alignments
    ]
    doc["recommendations"] = [
        {
            "id": r.id,
            "title": r.title,
            "type": r.type.value if r.type else None,
            "activity_url": r.activity_url,
            "recommended_badge_template_id": r.recommended_badge_template_id,
        }
        for r in b.recommendations
    ]
    doc["activities"] = [
        {
            "id": a.id,
            "title": a.title,
            "activity_type": a.activity_type,
            "activity_url": a.activity_url,
            "required_badge_template_id": a.required_badge_template_id,
        }
        for a in b.activities
    ]
    doc["endorsements"] = [
        {"id": e.id, "name": e.name, "url": e.url, "description": e.description}
        for e in b.endorsements
    ]
    return doc


def _values(b: BadgeTemplate) -> dict[str, Any]:
    assert b.state is not None and b.updated_at is not None
    return {
        "name": b.name,
        "name_key": b.name.lower(),
        "description": b.description,
        "description_key": b.description.lower(),
        "state": b.state.value,
        "public": b.public,
        "vanity_slug": b.vanity_slug,
        "primary_badge_template_id": b.primary_badge_template_id or None,
        "image_id": b.image_id or None,
        "state_updated_at": opt_micros(b.state_updated_at),
        "updated_at": to_micros(b.updated_at),
        "doc": _doc(b),
    }


def from_row(r: Any) -> BadgeTemplate:
    """The domain template of a badge_templates row."""
    doc: dict[str, Any] = r.doc
    scalars: dict[str, Any] = {}
    for name, kind in _DOC_SCALARS.items():
        value = doc.get(name)
        scalars[name] = kind(value) if kind is not None and value is not None else value
    return BadgeTemplate(
        id=r.id,
        org_id=r.org_id,
        name=r.name,
        description=r.description,
        state=TemplateState(r.state),
        public=r.public,
        vanity_slug=r.vanity_slug,
        primary_badge_template_id=r.primary_badge_template_id or "",
        image_id=r.image_id or "",
        badges_count=r.badges_count,
        state_updated_at=opt_datetime(r.state_updated_at),
        created_at=from_micros(r.created_at),
        updated_at=from_micros(r.updated_at),
        alignments=[
            Alignment(a["name"], a["url"], a["description"], a["id"]) for a in doc["alignments"]
        ],
        recommendations=[
            Recommendation(
                RecommendationType(x["type"]),
                x["title"],
                x["activity_url"],
                x["recommended_badge_template_id"],
                x["id"],
            )
            for x in doc["recommendations"]
        ],
        activities=[
            Activity(
                a["title"],
                a["activity_type"],
                a["activity_url"],
                a["required_badge_template_id"],
                a["id"],
            )
            for a in doc["activities"]
        ],
        endorsements=[
            Endorsement(e["name"], e["url"], e["description"], e["id"]) for e in doc["endorsements"]
        ],
        **scalars,
    )


async def _write_children(conn: AsyncConnection, b: BadgeTemplate) -> None:
    rows = [
        *((SKILL, s.lower()) for s in b.skills),
        *((REPORTING_TAG, s.lower()) for s in b.reporting_tags),
        *((COLLECTION, c) for c in b.collection_ids),
        *((RECOMMENDATION, r.id) for r in b.recommendations),
    ]
    # Two labels can lower-case alike only if the domain let them through; the set keeps the
    # primary key safe either way.
    unique = sorted(set(rows))
    if unique:
        await conn.execute(
            insert(terms),
            [{"template_id": b.id, "kind": k, "value": v, "org_id": b.org_id} for k, v in unique],
        )
    edges = {(REQUIRES, rid) for rid in b.requirement_ids()}
    edges.update(
        (RECOMMENDS, r.recommended_badge_template_id)
        for r in b.recommendations
        if r.recommended_badge_template_id
    )
    if edges:
        await conn.execute(
            insert(links),
            [
                {"template_id": b.id, "kind": k, "target_id": target, "org_id": b.org_id}
                for k, target in sorted(edges)
            ],
        )


async def _clear_children(conn: AsyncConnection, template_id: str) -> None:
    await conn.execute(delete(terms).where(terms.c.template_id == template_id))
    await conn.execute(delete(links).where(links.c.template_id == template_id))


async def _slug_owner(conn: AsyncConnection, org_id: int, slug: str) -> str | None:
    row = (
        await conn.execute(select(t.c.id).where(t.c.org_id == org_id, t.c.vanity_slug == slug))
    ).first()
    return None if row is None else str(row.id)


async def _save(conn: AsyncConnection, b: BadgeTemplate, *, creating: bool) -> None:
    # Without a vanity slug, the first free one of slug_candidates is taken. Each try runs in a
    # savepoint, so that a taken slug leaves the transaction usable for the next one; the
    # unique constraint, not a read beforehand, decides what is taken.
    generate = not b.vanity_slug
    candidates = slug_candidates(b.name, b.id) if generate else iter([b.vanity_slug])
    for slug in candidates:
        b.vanity_slug = slug
        values = _values(b)
        if creating:
            assert b.created_at is not None
            values |= {
                "id": b.id,
                "org_id": b.org_id,
                "badges_count": b.badges_count,
                "created_at": to_micros(b.created_at),
            }
            stmt: Insert | Update = insert(t).values(**values)
        else:
            stmt = update(t).where(t.c.id == b.id, t.c.org_id == b.org_id).values(**values)
        try:
            async with conn.begin_nested():
                await conn.execute(stmt)
        except IntegrityError:
            owner = await _slug_owner(conn, b.org_id, slug)
            if owner is None or owner == b.id:
                # Not the slug: the primary template went away since it was checked.
                raise referenced_template_gone() from None
            if not generate:
                raise slug_taken(slug) from None
            continue
        break
    else:
        raise slug_taken(b.vanity_slug)
    if not creating:
        await _clear_children(conn, b.id)
    # A linked template deleted since the check fails a foreign key: CONCURRENT_CHANGE
    # (models.VIOLATIONS).
    await _write_children(conn, b)


async def insert_template(conn: AsyncConnection, b: BadgeTemplate) -> None:
    """Inserts a validated template with its terms and links. Without a vanity slug it gets
    the first free one of slug_candidates; a given slug that is taken is ALREADY_EXISTS."""
    await _save(conn, b, creating=True)


async def get_template(conn: AsyncConnection, org_id: int, template_id: str) -> BadgeTemplate:
    """One template of the org, or NOT_FOUND."""
    row = (await conn.execute(select(t).where(t.c.id == template_id, t.c.org_id == org_id))).first()
    if row is None:
        raise NotFound(RESOURCE, template_id)
    return from_row(row)


async def update_template(conn: AsyncConnection, b: BadgeTemplate) -> None:
    """Writes a validated template back, replacing its terms and links; ALREADY_EXISTS when
    its vanity slug is another template's (an empty slug is made from the name)."""
    await _save(conn, b, creating=False)


async def save_state(conn: AsyncConnection, b: BadgeTemplate) -> None:
    """Writes only the state, its time and updated_at (archive and unarchive)."""
    assert b.state is not None and b.updated_at is not None
    await conn.execute(
        update(t)
        .where(t.c.id == b.id, t.c.org_id == b.org_id)
        .values(
            state=b.state.value,
            state_updated_at=opt_micros(b.state_updated_at),
            updated_at=to_micros(b.updated_at),
        )
    )


@dataclass(frozen=True, slots=True)
class Users:
    """The templates pointing at one template, by how."""

    required_by: list[str]
    recommended_by: list[str]
    variants: list[str]

    def __bool__(self) -> bool:
        return bool(self.required_by or self.recommended_by or self.variants)

    def as_mapping(self) -> dict[str, list[str]]:
        """For error metadata."""
        return {
            "required_by": self.required_by,
            "recommended_by": self.recommended_by,
            "variants": self.variants,
        }


async def users_of(conn: AsyncConnection, org_id: int, template_id: str) -> Users:
    """Which other templates require, recommend or are variants of a template."""
    rows = await conn.execute(
        select(links.c.kind, links.c.template_id)
        .where(links.c.target_id == template_id, links.c.org_id == org_id)
        .order_by(links.c.template_id)
    )
    required_by: list[str] = []
    recommended_by: list[str] = []
    for kind, src in rows:
        (required_by if kind == REQUIRES else recommended_by).append(src)
    variants = await conn.execute(
        select(t.c.id)
        .where(t.c.primary_badge_template_id == template_id, t.c.org_id == org_id)
        .order_by(t.c.id)
    )
    return Users(required_by, recommended_by, [v for (v,) in variants])


async def delete_template(conn: AsyncConnection, org_id: int, template_id: str) -> None:
    """Deletes a template with its terms and links; FAILED_PRECONDITION while other
    templates point at it or it has awards (the foreign keys make this hold under
    concurrency too)."""
    if await awards_store.template_award_count(conn, org_id, template_id):
        raise template_awarded(template_id)
    try:
        async with conn.begin_nested():
            await _clear_children(conn, template_id)
            result = await conn.execute(
                delete(t).where(t.c.id == template_id, t.c.org_id == org_id)
            )
    except IntegrityError:
        # Not a models.VIOLATIONS rule: which error it is, and its metadata (the templates
        # that use this one), take reads in the transaction.
        if await awards_store.template_award_count(conn, org_id, template_id):
            raise template_awarded(template_id) from None
        users = await users_of(conn, org_id, template_id)
        raise template_in_use(template_id, users.as_mapping()) from None
    if result.rowcount == 0:
        raise NotFound(RESOURCE, template_id)


async def has_variants(conn: AsyncConnection, org_id: int, template_id: str) -> bool:
    """Whether other templates name this one as their primary."""
    stmt = select(
        exists().where(t.c.primary_badge_template_id == template_id, t.c.org_id == org_id)
    )
    return bool((await conn.execute(stmt)).scalar())


def _ref(r: Any) -> TemplateRef:
    return TemplateRef(
        id=r.id,
        name=r.name,
        vanity_slug=r.vanity_slug,
        image_url=r.image_url or "",
        state=TemplateState(r.state),
        primary_badge_template_id=r.primary_badge_template_id or "",
        variants_allowed=bool(r.variants_allowed),
    )


# Two values of each named template's document, not the document: a page of templates names
# up to 1,250 others, each document up to BADGE_TEMPLATE_BYTES.
_REF_COLUMNS = (
    t.c.id,
    t.c.name,
    t.c.vanity_slug,
    t.c.doc["image_url"].as_string().label("image_url"),
    t.c.state,
    t.c.primary_badge_template_id,
    t.c.doc["variants_allowed"].as_boolean().label("variants_allowed"),
)


async def refs(conn: AsyncConnection, org_id: int, ids: Iterable[str]) -> dict[str, TemplateRef]:
    """The org's templates among ``ids``, by id (ids of other orgs or none are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    out: dict[str, TemplateRef] = {}
    # Chunks keep the bind parameters well under SQLite's and PostgreSQL's limits.
    for i in range(0, len(wanted), 500):
        rows = await conn.execute(
            select(*_REF_COLUMNS).where(t.c.org_id == org_id, t.c.id.in_(wanted[i : i + 500]))
        )
        out.update((r.id, _ref(r)) for r in rows)
    return out


async def requirement_edges(
    conn: AsyncConnection, org_id: int, start: Iterable[str], reach: int, *, exclude: str
) -> list[tuple[str, str]] | None:
    """The (template, required template) pairs among the org's templates reachable from
    ``start`` by following requirements, for the cycle check of template ``exclude`` (whose
    own stored requirements are not followed: they are being replaced); None when more than
    ``reach`` templates are reachable. One recursive query that stops after ``reach + 1``
    templates, so its cost does not grow with the org's other templates."""
    wanted = sorted(set(start))
    if not wanted:
        return []
    anchor = (
        select(t.c.id.label("id"))
        .where(t.c.org_id == org_id, t.c.id.in_(wanted))
        .cte("reach", recursive=True)
    )
    step = select(links.c.target_id).where(
        links.c.template_id == anchor.c.id,
        links.c.template_id != exclude,
        links.c.org_id == org_id,
        links.c.kind == REQUIRES,
    )
    # UNION, not UNION ALL: a template already reached is not followed again, so a cycle
    # among the stored templates ends the recursion.
    closure = anchor.union(step)
    found = [row[0] for row in await conn.execute(select(closure.c.id).limit(reach + 1))]
    if len(found) > reach:
        return None
    rows = await conn.execute(
        select(links.c.template_id, links.c.target_id).where(
            links.c.org_id == org_id, links.c.kind == REQUIRES, links.c.template_id.in_(found)
        )
    )
    return [(a, b) for a, b in rows]


async def linking_templates(
    conn: AsyncConnection, org_id: int, template_id: str, kind: str, limit: int
) -> list[TemplateRef]:
    """The first ``limit`` of the org's templates that require (REQUIRES) or recommend
    (RECOMMENDS) a template, by name then id."""
    stmt = (
        select(*_REF_COLUMNS)
        .where(
            t.c.org_id == org_id,
            exists().where(
                links.c.template_id == t.c.id,
                links.c.kind == kind,
                links.c.target_id == template_id,
            ),
        )
        .order_by(t.c.name_key, t.c.id)
        .limit(limit)
    )
    return [_ref(r) for r in await conn.execute(stmt)]


async def variants_issue_counts(
    conn: AsyncConnection, org_id: int, ids: Sequence[str]
) -> dict[str, int]:
    """For each of ``ids`` with variants: the badges issued of its variants."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(t.c.primary_badge_template_id, func.sum(t.c.badges_count))
        .where(t.c.org_id == org_id, t.c.primary_badge_template_id.in_(list(ids)))
        .group_by(t.c.primary_badge_template_id)
    )
    return {pid: int(total or 0) for pid, total in rows}


# -- lists ------------------------------------------------------------------------------------


def _like(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _has_term(org_id: int, kind: str, values: Sequence[str]) -> ColumnElement[bool]:
    return exists().where(
        terms.c.org_id == org_id,
        terms.c.kind == kind,
        terms.c.value.in_(list(values)),
        terms.c.template_id == t.c.id,
    )


def _conditions(org_id: int, org_uuid: str, f: TemplateFilter) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = [t.c.org_id == org_id]
    if f.query is not None:
        pattern = _like(f.query)
        cond.append(
            or_(
                t.c.name_key.like(pattern, escape="\\"),
                t.c.description_key.like(pattern, escape="\\"),
            )
        )
    if f.name is not None:
        cond.append(t.c.name_key.like(_like(f.name), escape="\\"))
    if f.name_exact is not None:
        cond.append(t.c.name == f.name_exact)
    if f.public is not None:
        cond.append(t.c.public == f.public)
    if f.states is not None:
        cond.append(t.c.state.in_([s.value for s in f.states]))
    for kind, values in (
        (SKILL, f.skills),
        (REPORTING_TAG, f.reporting_tags),
        (COLLECTION, f.collection_ids),
        (RECOMMENDATION, f.recommendation_ids),
    ):
        if values is not None:
            cond.append(_has_term(org_id, kind, values))
    for column, low, high in (
        (t.c.created_at, f.created_from, f.created_before),
        (t.c.updated_at, f.updated_from, f.updated_before),
    ):
        if low is not None:
            cond.append(column >= to_micros(low))
        if high is not None:
            cond.append(column < to_micros(high))
    # Every template of the org is owned by the org itself.
    if f.owner_ids is not None and org_uuid.lower() not in f.owner_ids:
        cond.append(false())
    return cond


def sort_values(b: BadgeTemplate, sort: Sequence[SortTerm]) -> list[object]:
    """The keyset position of a template under a sort: its sort keys, then its id."""
    values: list[object] = []
    for term in sort:
        if term.key is SortKey.BADGES_COUNT:
            values.append(b.badges_count)
        elif term.key is SortKey.NAME:
            values.append(b.name.lower())
        else:
            stamp = b.created_at if term.key is SortKey.CREATED_AT else b.updated_at
            assert stamp is not None
            values.append(to_micros(stamp))
    values.append(b.id)
    return values


def _after(sort: Sequence[SortTerm], position: Sequence[object]) -> ColumnElement[bool]:
    # Rows strictly after ``position`` in (key1, ..., id) order, each key in its direction:
    # (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ... OR (all keys equal AND id > last id).
    columns = [(SORT_COLUMNS[s.key], s.descending) for s in sort] + [(t.c.id, False)]
    alternatives: list[ColumnElement[bool]] = []
    for i, (column, descending) in enumerate(columns):
        equal = [c == position[j] for j, (c, _) in enumerate(columns[:i])]
        beyond = column < position[i] if descending else column > position[i]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


async def count_templates(
    conn: AsyncConnection, org_id: int, org_uuid: str, f: TemplateFilter
) -> int:
    """How many of the org's templates match the filter."""
    stmt = select(func.count()).select_from(t).where(*_conditions(org_id, org_uuid, f))
    return int((await conn.execute(stmt)).scalar_one())


async def list_templates(
    conn: AsyncConnection,
    org_id: int,
    org_uuid: str,
    f: TemplateFilter,
    sort: Sequence[SortTerm],
    *,
    limit: int,
    after: Sequence[object] | None = None,
    offset: int = 0,
) -> list[BadgeTemplate]:
    """Templates in sort order (then id): after a keyset position (sort_values of the last
    row seen), or at an offset (numbered pages)."""
    order = [SORT_COLUMNS[s.key].desc() if s.descending else SORT_COLUMNS[s.key] for s in sort]
    stmt = select(t).where(*_conditions(org_id, org_uuid, f)).order_by(*order, t.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(_after(sort, after))
    if offset:
        stmt = stmt.offset(offset)
    return [from_row(r) for r in await conn.execute(stmt)]


async def kept_id_owner(conn: AsyncConnection, template_id: str) -> int | None:
    """The org of the template with this id, whichever org it is; None when there is none
    (an import keeps a vendor's UUID only where no other org's template has it)."""
    row = (await conn.execute(select(t.c.org_id).where(t.c.id == template_id))).first()
    return None if row is None else int(row.org_id)
