"""Use cases of Credly badge templates.

Credly names the organisation in every path (``organization_id``): each use case checks it is
the caller's before anything else, so another organisation's id fails like one that does not
exist. A reply shows a template with the templates it points at (and, alone, those pointing at
it), read in the same transaction: the use cases return those together (``TemplateView``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain import limits, paging
from badge_service.domain.badge_templates import (
    PAGE_SIZE,
    PREFIX,
    BadgeTemplate,
    Owner,
    TemplateRef,
    apply_state_change,
    archive,
    check_organization,
    new_uuid,
    org_slug,
    parse_template_id,
    template_has_badges,
    template_in_use,
    unarchive,
    validate_template,
)
from badge_service.domain.credly_query import (
    check_position,
    page_url,
    parse_filter,
    parse_sort,
    sort_text,
)
from badge_service.domain.errors import InvalidArgument, LimitExceeded
from badge_service.domain.requests import RequestKey
from badge_service.service import request_ids
from badge_service.store import badge_templates as store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Database

# Most organisations whose owner a process keeps (then it starts again).
_OWNERS_KEPT = 10_000


class Owners:
    """The organisations that own templates, as replies show them (UUID, name, URLs under
    the public base URL). An organisation's UUID and name never change, so one read per org
    and process will do: a transport keeps one of these for its life."""

    def __init__(self, public_base_url: str) -> None:
        self._base_url = public_base_url.rstrip("/")
        self._owners: dict[int, Owner] = {}

    async def checked(self, conn: AsyncConnection, org_id: int, organization_id: str) -> Owner:
        """The caller's organisation, once ``organization_id`` is checked to be it."""
        owner = self._owners.get(org_id)
        if owner is None:
            org = await orgs_store.get_org(conn, org_id)
            owner = Owner(org.uuid, org.name, org_slug(org.name, org.uuid), self._base_url)
            if len(self._owners) >= _OWNERS_KEPT:
                self._owners.clear()
            self._owners[org_id] = owner
        check_organization(organization_id, owner.id)
        return owner


@dataclass(frozen=True, slots=True)
class TemplateView:
    """One template as a reply about it alone shows it: its owner, the templates it names
    (``refs``), its variants' issue count, and (Get only) the first templates recommending
    it and requiring it."""

    template: BadgeTemplate
    owner: Owner
    refs: Mapping[str, TemplateRef]
    variants_issued: int = 0
    recommending: Sequence[TemplateRef] = ()
    criterion_for: Sequence[TemplateRef] = ()


@dataclass(frozen=True, slots=True)
class TemplatePage:
    """A page of templates with what their replies show: the templates they name, the
    variants' issue counts, and Credly's page metadata (``numbered`` and the neighbours' URLs
    for a numbered page, None for a page token's)."""

    templates: list[BadgeTemplate]
    owner: Owner
    refs: Mapping[str, TemplateRef]
    variants_issued: Mapping[str, int]
    total: int
    size: int
    next_page_token: str
    numbered: paging.NumberedPage | None = None
    previous_page_url: str = ""
    next_page_url: str = ""


async def _view(
    conn: AsyncConnection, b: BadgeTemplate, owner: Owner, *, with_users: bool = False
) -> TemplateView:
    refs = await store.refs(conn, b.org_id, b.referenced_ids())
    issued = await store.variants_issue_counts(conn, b.org_id, [b.id])
    recommending: list[TemplateRef] = []
    criterion_for: list[TemplateRef] = []
    if with_users:
        # Any number of templates may name this one: the reply shows the first ones.
        most = limits.BADGE_TEMPLATE_RELATED
        recommending = await store.linking_templates(conn, b.org_id, b.id, store.RECOMMENDS, most)
        criterion_for = await store.linking_templates(conn, b.org_id, b.id, store.REQUIRES, most)
    return TemplateView(b, owner, refs, issued.get(b.id, 0), recommending, criterion_for)


async def check_rules(
    conn: AsyncConnection,
    b: BadgeTemplate,
    owner: Owner,
    measure: Callable[[BadgeTemplate, Owner], int],
    *,
    creating: bool,
) -> BadgeTemplate:
    """``b`` checked against every rule (the templates it names, its requirement reach, its
    variants, its size as ``measure`` counts it), normalised as stored; create, update and
    imports."""
    refs = await store.refs(conn, b.org_id, b.referenced_ids())
    edges: list[tuple[str, str]] | None = []
    if b.requirement_ids():
        reach = limits.BADGE_TEMPLATE_REQUIREMENT_REACH
        edges = await store.requirement_edges(
            conn, b.org_id, b.requirement_ids(), reach, exclude=b.id
        )
        if edges is None:
            raise LimitExceeded(
                f"{PREFIX}.required_badge_templates",
                f"reaches more than {reach} templates through their own requirements",
                reach.name,
                reach,
            )
    variants = False if creating else await store.has_variants(conn, b.org_id, b.id)
    b = validate_template(b, refs=refs, requirement_edges=edges or [], has_variants=variants)
    # Its own fields as stored (references to other templates render apart, each bounded).
    limits.check_bytes(measure(b, owner), limits.BADGE_TEMPLATE_BYTES, PREFIX, "as stored")
    return b


async def list_badge_templates(
    db: Database,
    org_id: int,
    organization_id: str,
    *,
    filter_query: str,
    sort_query: str,
    page: int,
    page_size: int,
    page_token: str,
    owners: Owners,
) -> TemplatePage:
    """Templates by Credly ``filter`` and ``sort`` query texts, by page number (0: the
    first) or page token."""
    flt = parse_filter(filter_query)
    sort = parse_sort(sort_query)
    if page < 0:
        raise InvalidArgument("page", "must be at least 1 (0 means the first page)")
    size = paging.resolve_page_size(page_size, default=PAGE_SIZE, maximum=PAGE_SIZE)
    after: list[object] | None = None
    numbered = None
    previous_url = next_url = ""
    async with db.read() as conn:
        owner = await owners.checked(conn, org_id, organization_id)
        fingerprint = paging.filter_fingerprint("badge_templates", owner.id, flt, sort_text(sort))
        if page_token:
            if page:
                raise InvalidArgument("page", "cannot be combined with page_token")
            after = check_position(paging.resume_after(page_token, fingerprint), sort)
        total = await store.count_templates(conn, org_id, owner.id, flt)
        rows: list[BadgeTemplate] = []
        if after is not None:
            rows = await store.list_templates(
                conn, org_id, owner.id, flt, sort, limit=size + 1, after=after
            )
        else:
            numbered = paging.numbered_page(page or None, size, total)
            if numbered.in_range:
                rows = await store.list_templates(
                    conn, org_id, owner.id, flt, sort, limit=size + 1, offset=numbered.offset
                )

            def url(number: int | None) -> str:
                return page_url(
                    owner.id,
                    number,
                    filter_text=filter_query,
                    sort=sort_query,
                    per=size,
                    default_per=PAGE_SIZE,
                )

            previous_url = url(numbered.prev_page)
            next_url = url(numbered.next_page)
        rows, next_token = paging.keyset_page(
            rows, size, fingerprint, lambda r: store.sort_values(r, sort)
        )
        ids: set[str] = set()
        for b in rows:
            ids |= b.referenced_ids()
        refs = await store.refs(conn, org_id, ids)
        issued = await store.variants_issue_counts(
            conn, org_id, [b.id for b in rows if b.variants_allowed]
        )
    return TemplatePage(
        rows, owner, refs, issued, total, size, next_token, numbered, previous_url, next_url
    )


async def get_badge_template(
    db: Database, org_id: int, organization_id: str, template_id: str, owners: Owners
) -> TemplateView:
    """One template with the templates recommending it and those it is a criterion for."""
    async with db.read() as conn:
        owner = await owners.checked(conn, org_id, organization_id)
        b = await store.get_template(conn, org_id, parse_template_id(template_id))
        return await _view(conn, b, owner, with_users=True)


async def create_badge_template(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    organization_id: str,
    decode: Callable[[], BadgeTemplate],
    owners: Owners,
    measure: Callable[[BadgeTemplate, Owner], int],
    encode: Callable[[TemplateView], bytes],
) -> bytes:
    """Creates the template ``decode()`` gives (draft unless asked for active); the reply is
    ``encode`` of it, or a retry's first reply (request id ``key``). ``decode`` runs once the
    organisation is checked (and the request id is new), as the checks always ran: a wrong
    organization_id is NOT_FOUND whatever the template holds. ``measure`` is the size of a
    template's own fields as stored (BADGE_TEMPLATE_BYTES)."""
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        owner = await owners.checked(conn, org_id, organization_id)
        first = await request_ids.claim(conn, key, now)
        if first is not None:
            return first
        b = decode()
        b.id, b.org_id = new_uuid(), org_id
        b.created_at = b.updated_at = now
        b.image_id = new_uuid() if b.image_url else ""
        apply_state_change(b, None, now)
        b = await check_rules(conn, b, owner, measure, creating=True)
        await store.insert_template(conn, b)
        reply = encode(await _view(conn, b, owner))
        await request_ids.complete(conn, key, reply)
        return reply


async def update_badge_template(
    db: Database,
    org_id: int,
    organization_id: str,
    template_id: str,
    merge: Callable[[BadgeTemplate, Owner], BadgeTemplate],
    owners: Owners,
    measure: Callable[[BadgeTemplate, Owner], int],
) -> TemplateView:
    """Updates a template to ``merge(existing, owner)`` (the transport's update, e.g. a field
    mask), which must pass every create rule."""
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        owner = await owners.checked(conn, org_id, organization_id)
        existing = await store.get_template(
            conn, org_id, parse_template_id(template_id, f"{PREFIX}.id")
        )
        b = merge(existing, owner)
        b.id, b.org_id = existing.id, existing.org_id
        b.badges_count, b.created_at = existing.badges_count, existing.created_at
        b.state_updated_at, b.updated_at = existing.state_updated_at, now
        # A new image gets a new id; the same URL keeps its image.
        if b.image_url == existing.image_url:
            b.image_id = existing.image_id
        else:
            b.image_id = new_uuid() if b.image_url else ""
        apply_state_change(b, existing.state, now)
        b = await check_rules(conn, b, owner, measure, creating=False)
        await store.update_template(conn, b)
        return await _view(conn, b, owner)


async def delete_badge_template(
    db: Database, org_id: int, organization_id: str, template_id: str, owners: Owners
) -> None:
    """Deletes a template no badge was issued of and no other template points at."""
    async with db.write() as conn:
        await owners.checked(conn, org_id, organization_id)
        template_id = parse_template_id(template_id)
        existing = await store.get_template(conn, org_id, template_id)
        if not existing.allow_delete:
            raise template_has_badges(existing)
        users = await store.users_of(conn, org_id, template_id)
        if users:
            raise template_in_use(template_id, users.as_mapping())
        await store.delete_template(conn, org_id, template_id)


async def change_state(
    db: Database,
    org_id: int,
    organization_id: str,
    template_id: str,
    owners: Owners,
    *,
    unarchiving: bool,
) -> TemplateView:
    """Archives an active template, or (``unarchiving``) makes an archived one active."""
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        owner = await owners.checked(conn, org_id, organization_id)
        b = await store.get_template(conn, org_id, parse_template_id(template_id))
        (unarchive if unarchiving else archive)(b, now)
        await store.save_state(conn, b)
        return await _view(conn, b, owner)
