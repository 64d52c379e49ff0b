"""Use cases of badges (CrowdTwist v2.1).

Each badge row keeps its reply (migration 0007): the transport's encoding of the badge without
its id, made by ``render`` and written in the row's own statement. The read paths hand that
stored encoding back as it is, an opaque value (``bytes``), beside the badge's id; a row from
before 0007 holds none and comes as its decoded ``Badge`` instead. The transport's ``reply``
turns either into what it sends (gRPC: the id field in front of the stored bytes), inside the
use case, so that the hottest calls (GetBadge, ListBadges, CreateBadge) cost no coroutine but
the use case's own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from badge_service.domain import paging
from badge_service.domain.badges import (
    LIST_DEFAULT_PAGE_SIZE,
    LIST_MAX_PAGE_SIZE,
    Badge,
    BadgeFilter,
    validate_badge,
)
from badge_service.domain.errors import InvalidArgument, NotFound
from badge_service.domain.requests import RequestKey
from badge_service.service.request_ids import write_once
from badge_service.store import badges as store
from badge_service.store import custom_fields as fields_store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Database, batch_cache

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# What a badge read gives a transport: its stored encoding, or (a row from before migration
# 0007) the decoded badge.
Stored = bytes | Badge
# A transport's encoding of a badge without its id (stored with the row).
Render = Callable[[Badge], bytes]
# A transport's reply for one badge: from its id and what was read or rendered.
Reply = Callable[[int, Stored], R]


class ListReply(Protocol[R_co]):
    """A transport's reply for a page of badges: the rows of the page (id and stored
    encoding), the org's total of matching badges, the page size, CrowdTwist's numbered page
    (None for a page-token page) and the token of the next page ("" on the last)."""

    def __call__(
        self,
        rows: list[tuple[int, Stored]],
        total: int,
        size: int,
        numbered: paging.NumberedPage | None,
        next_page_token: str,
        /,
    ) -> R_co:
        """The reply of the page."""
        ...


_NO_FILTER = BadgeFilter()


def page_size(requested: int) -> int:
    """The size of a ListBadges page: 0 is the default, larger than the maximum is the
    maximum; negative is INVALID_ARGUMENT. (Called as the request is decoded: its check
    comes before the filter's.)"""
    return paging.resolve_page_size(
        requested, default=LIST_DEFAULT_PAGE_SIZE, maximum=LIST_MAX_PAGE_SIZE
    )


def _is_badge_key(after: object) -> bool:
    # bool is an int to Python, and a key outside BIGINT fails in the database.
    return type(after) is int and 0 <= after < 2**63


def _row_id(row: tuple[int, Stored]) -> int:
    return row[0]


async def get_badge(db: Database, org_id: int, badge_id: int, reply: Reply[R]) -> R:
    """``reply`` of one badge of the org: its stored encoding as read (Database.fetch), or a
    row from before migration 0007 decoded."""
    (rows,) = await db.fetch((store.GET_MESSAGE, {"badge_id": badge_id, "org_id": org_id}))
    if not rows:
        raise NotFound(store.RESOURCE, badge_id)
    message: bytes | None = rows[0][0]
    if message is None:  # stored before migration 0007
        return reply(badge_id, await db.run_read(store.get_badge, org_id, badge_id))
    return reply(badge_id, message)


async def list_badges(
    db: Database,
    org_id: int,
    flt: BadgeFilter,
    size: int,
    page: int | None,
    page_token: str,
    reply: ListReply[R],
) -> R:
    """``reply`` of a page of the org's badges in id order, of ``size`` (see page_size):
    CrowdTwist's numbered ``page`` (None: the first) or the page after ``page_token``."""
    fingerprint = paging.filter_fingerprint("badges", flt)
    after: int | None = None
    if page_token:
        if page is not None:
            raise InvalidArgument("page", "cannot be combined with page_token")
        token = paging.resume_after(page_token, fingerprint, _is_badge_key)
        after = token if type(token) is int else None
    found = await _fast_list(db, org_id, flt, size, after, page)
    if found is None:  # filtered, or rows from before migration 0007
        found = await db.run_read(_list, org_id, flt, size, after, page)
    total, rows, numbered = found
    rows, next_token = paging.keyset_page(rows, size, fingerprint, _row_id)
    return reply(rows, total, size, numbered, next_token)


_Found = tuple[int, list[tuple[int, Stored]], paging.NumberedPage | None]


async def _fast_list(
    db: Database, org_id: int, flt: BadgeFilter, size: int, after: int | None, page: int | None
) -> _Found | None:
    """An unfiltered page from the kept count and the stored replies (Database.fetch);
    None when the page is filtered or holds a row without stored bytes."""
    if flt != _NO_FILTER:
        return None
    count = (store.COUNT, {"org_id": org_id})
    numbered = None
    if after is not None:
        query = {"org_id": org_id, "after_id": after, "limit": size + 1}
        counted, rows = await db.fetch(count, (store.PAGE_AFTER, query))
        total = int(counted[0][0]) if counted else 0
    else:
        number = 1 if page is None else page
        if number <= 0:  # an empty page by CrowdTwist's rules: only the count is needed
            (counted,) = await db.fetch(count)
            rows = []
        else:
            query = {"org_id": org_id, "limit": size + 1, "offset": (number - 1) * size}
            counted, rows = await db.fetch(count, (store.PAGE_AT, query))
        total = int(counted[0][0]) if counted else 0
        numbered = paging.numbered_page(page, size, total)
        if not numbered.in_range:
            rows = []
    if any(message is None for _, message in rows):
        return None
    return total, [(int(i), message) for i, message in rows], numbered


def _list(
    conn: Connection,
    org_id: int,
    flt: BadgeFilter,
    size: int,
    after: int | None,
    page: int | None,
) -> _Found:
    # Unfiltered, one row of the org's kept count; filtered, a count of the matches.
    total = store.count_badges(conn, org_id, flt)
    if after is not None:
        rows = store.list_badge_messages(conn, org_id, flt, limit=size + 1, after_id=after)
        return total, rows, None
    numbered = paging.numbered_page(page, size, total)
    rows = []
    if numbered.in_range:
        rows = store.list_badge_messages(conn, org_id, flt, limit=size + 1, offset=numbered.offset)
    return total, rows, numbered


def check_rules(conn: Connection, badge: Badge, now: dt.datetime) -> Badge:
    """``badge`` checked against every create rule and the org's custom fields and meta tags
    (in the write's transaction), normalised as stored; CreateBadge, UpdateBadge and imports."""
    # Writes that share a group commit read the org's definitions once (see batch_cache).
    cache = batch_cache(conn)
    key = ("badge-rules", badge.org_id)
    rules = cache.get(key) if cache is not None else None
    if rules is None:
        rules = (
            fields_store.list_fields(conn, badge.org_id),
            orgs_store.get_tag_rules(conn, badge.org_id),
        )
        if cache is not None:
            cache[key] = rules
    fields, tags = rules
    return validate_badge(badge, now=now, custom_fields=fields, org_tags=tags)


def _create(
    conn: Connection, badge: Badge, now: dt.datetime, render: Render, reply: Reply[bytes]
) -> bytes:
    badge = check_rules(conn, badge, now)
    message = render(badge)
    store.insert_badge(conn, badge, message)
    return reply(badge.id, message)


def create_badge(
    db: Database,
    key: RequestKey | None,
    org_id: int,
    badge: Badge,
    render: Render,
    reply: Reply[bytes],
) -> Awaitable[bytes]:
    """Creates ``badge`` (checked against the org's custom fields and meta tags) with its
    stored encoding ``render(badge)``; the reply is ``reply(id, that encoding)``, or a
    retry's first reply (request id ``key``). A plain function returning the write's
    awaitable (Database.run_write, perhaps in a group commit): no coroutine of its own."""
    now = dt.datetime.now(dt.UTC)
    badge.org_id = org_id
    badge.create_time = badge.update_time = now
    return write_once(db, key, now, _create, (badge, now, render, reply), bytes)


def _update(
    conn: Connection,
    org_id: int,
    badge_id: int,
    merge: Callable[[Badge], Badge],
    now: dt.datetime,
    render: Render,
    reply: Reply[bytes],
) -> bytes:
    existing = store.get_badge(conn, org_id, badge_id)
    badge = merge(existing)
    badge.id, badge.org_id, badge.create_time = existing.id, org_id, existing.create_time
    badge.update_time = now
    badge = check_rules(conn, badge, now)
    message = render(badge)
    store.update_badge(conn, badge, message)
    return reply(badge.id, message)


async def update_badge(
    db: Database,
    org_id: int,
    badge_id: int,
    merge: Callable[[Badge], Badge],
    render: Render,
    reply: Reply[bytes],
) -> bytes:
    """Updates a badge to ``merge(existing)`` (the transport's update, e.g. a field mask; it
    runs in the write's transaction), which must pass every create rule; the reply as
    create_badge's."""
    now = dt.datetime.now(dt.UTC)
    return await db.run_write(_update, org_id, badge_id, merge, now, render, reply)


async def delete_badge(db: Database, org_id: int, badge_id: int) -> None:
    """Deletes a badge of the org (one that was awarded: FAILED_PRECONDITION)."""
    await db.run_write(store.delete_badge, org_id, badge_id)
