"""badges.v1.BadgeService: CrowdTwist v2.1 badges."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import badge_pb2_grpc as pb_grpc
from badge_service.domain import limits, paging
from badge_service.domain.badges import (
    LIST_DEFAULT_PAGE_SIZE,
    LIST_MAX_PAGE_SIZE,
    Badge,
    BadgeFilter,
    BadgeState,
    BadgeStateType,
    BadgeTag,
    EligibilityType,
    Frequency,
    FrequencyPeriod,
    Segment,
    validate_badge,
)
from badge_service.domain.errors import InvalidArgument, NotFound
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import dict_to_struct, from_ts, merge_update, struct_to_dict, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service.request_ids import write_once
from badge_service.store import badges as store
from badge_service.store import custom_fields as fields_store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Database, batch_cache

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

MUTABLE = frozenset(
    {
        "name",
        "title",
        "date_start",
        "date_end",
        "display_date_start",
        "display_date_end",
        "is_enabled",
        "badge_states",
        "frequency",
        "tags",
        "segment",
        "badge_extra_data",
    }
)

_ELIGIBILITY = {
    pb.ELIGIBILITY_TYPE_INCLUSION: EligibilityType.INCLUSION,
    pb.ELIGIBILITY_TYPE_EXCLUSION: EligibilityType.EXCLUSION,
}
_ELIGIBILITY_BACK = {v: k for k, v in _ELIGIBILITY.items()}


E = TypeVar("E", BadgeStateType, FrequencyPeriod)


def _enum(kind: type[E], number: int, where: str) -> E | None:
    if number == 0:
        return None
    try:
        return kind(number)
    except ValueError:
        raise InvalidArgument(where, f"{number} is not a known value") from None


def from_proto(msg: pb.Badge, prefix: str) -> Badge:
    """The domain badge of a request message (unchecked, but enum numbers known).

    An unset is_enabled is true, on create and when an update mask names it without a value:
    a field cleared by an update takes the default it would have on create.
    """
    states = [
        BadgeState(
            _enum(BadgeStateType, s.state, f"{prefix}.badge_states[{i}].state"),
            s.order,
            s.description,
            s.image_url,
        )
        for i, s in enumerate(msg.badge_states)
    ]
    segments = []
    for i, seg in enumerate(msg.segment):
        kind = _ELIGIBILITY.get(seg.eligibility_type)
        if kind is None and seg.eligibility_type != 0:
            raise InvalidArgument(
                f"{prefix}.segment[{i}].eligibility_type",
                f"{seg.eligibility_type} is not a known value",
            )
        segments.append(Segment(seg.name, seg.subscription_id, kind))
    freq = msg.frequency
    return Badge(
        name=msg.name,
        title=msg.title,
        date_start=from_ts(msg, "date_start", f"{prefix}.date_start"),
        date_end=from_ts(msg, "date_end", f"{prefix}.date_end"),
        display_date_start=from_ts(msg, "display_date_start", f"{prefix}.display_date_start"),
        display_date_end=from_ts(msg, "display_date_end", f"{prefix}.display_date_end"),
        is_enabled=msg.is_enabled if msg.HasField("is_enabled") else True,
        badge_states=states,
        frequency=Frequency(
            freq.freq_cap if freq.HasField("freq_cap") else None,
            _enum(FrequencyPeriod, freq.freq_period, f"{prefix}.frequency.freq_period"),
            freq.freq_max if freq.HasField("freq_max") else None,
        ),
        tags=[BadgeTag(g.tag_name, g.tag_id) for g in msg.tags],
        segments=segments,
        extra_data=struct_to_dict(
            msg.badge_extra_data, f"{prefix}.badge_extra_data", limits.BADGE_EXTRA_DATA_BYTES
        ),
    )


def to_proto(b: Badge) -> pb.Badge:
    """The message of a stored badge."""
    period = b.frequency.freq_period
    return pb.Badge(
        id=b.id,
        name=b.name,
        title=b.title,
        date_start=ts(b.date_start),
        date_end=ts(b.date_end),
        display_date_start=ts(b.display_date_start),
        display_date_end=ts(b.display_date_end),
        is_enabled=b.is_enabled,
        badge_states=[
            pb.BadgeState(
                state=int(s.state) if s.state else 0,  # type: ignore[arg-type]
                order=s.order,
                description=s.description,
                image_url=s.image_url,
            )
            for s in b.badge_states
        ],
        frequency=pb.Frequency(
            freq_cap=b.frequency.freq_cap,
            freq_period=int(period) if period else 0,  # type: ignore[arg-type]
            freq_period_id=int(period) if period else 0,
            freq_period_name=period.label if period else "",
            freq_max=b.frequency.freq_max,
        ),
        tags=[pb.BadgeTag(tag_name=g.tag_name, tag_id=g.tag_id) for g in b.tags],
        segment=[
            pb.Segment(
                name=s.name,
                subscription_id=s.subscription_id,
                eligibility_type=_ELIGIBILITY_BACK[s.eligibility_type] if s.eligibility_type else 0,  # type: ignore[arg-type]
            )
            for s in b.segments
        ],
        badge_extra_data=dict_to_struct(b.extra_data),
        create_time=ts(b.create_time),
        update_time=ts(b.update_time),
    )


_NO_FILTER = BadgeFilter()


def _page_url(page: int | None, size: int) -> str:
    return "" if page is None else f"/v2.1/badges?page={page}&page_size={size}"


def _numbered_paging(numbered: paging.NumberedPage, size: int) -> pb.Paging:
    """CrowdTwist's paging block of a numbered page."""
    return pb.Paging(
        total=numbered.total,
        pages=numbered.pages,
        next_page=numbered.next_page,
        prev_page=numbered.prev_page,
        next_page_url=_page_url(numbered.next_page, size),
        prev_page_url=_page_url(numbered.prev_page, size),
    )


def _with_id(badge_id: int, message: bytes | Badge) -> bytes:
    """The serialized Badge of a stored badge: its stored bytes behind its id (field 1, so
    the result is what SerializeToString gives), or a legacy row's decoded badge rendered."""
    if isinstance(message, Badge):
        return to_proto(message).SerializeToString()
    return wire.varint_field(1, badge_id) + message


def _render(badge: Badge) -> bytes:
    """The bytes stored with a badge: its message without the id (the id is assigned by the
    insert, and reads put it back)."""
    return to_proto(replace(badge, id=0)).SerializeToString()


def _validate(conn: Connection, badge: Badge, now: dt.datetime) -> Badge:
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


def _create(conn: Connection, badge: Badge, now: dt.datetime) -> bytes:
    badge = _validate(conn, badge, now)
    message = _render(badge)
    store.insert_badge(conn, badge, message)
    return _with_id(badge.id, message)


def _update(
    conn: Connection, request: pb.UpdateBadgeRequest, org_id: int, now: dt.datetime
) -> bytes:
    existing = store.get_badge(conn, org_id, request.badge.id)
    merged = merge_update(
        to_proto(existing),
        request.badge,
        request.update_mask,
        prefix="badge",
        mutable=MUTABLE,
    )
    badge = from_proto(merged, "badge")
    badge.id, badge.org_id, badge.create_time = existing.id, org_id, existing.create_time
    badge.update_time = now
    badge = _validate(conn, badge, now)
    message = _render(badge)
    store.update_badge(conn, badge, message)
    return _with_id(badge.id, message)


def _list(
    conn: Connection,
    org_id: int,
    flt: BadgeFilter,
    size: int,
    after: int | None,
    page: int | None,
) -> tuple[int, list[tuple[int, bytes | Badge]], pb.Paging]:
    # Unfiltered, one row of the org's kept count; filtered, a count of the matches.
    total = store.count_badges(conn, org_id, flt)
    if after is not None:
        rows = store.list_badge_messages(conn, org_id, flt, limit=size + 1, after_id=after)
        return total, rows, pb.Paging(total=total, pages=-(-total // size))
    numbered = paging.numbered_page(page, size, total)
    rows = []
    if numbered.in_range:
        rows = store.list_badge_messages(conn, org_id, flt, limit=size + 1, offset=numbered.offset)
    return total, rows, _numbered_paging(numbered, size)


class BadgeServicer(pb_grpc.BadgeServiceServicer):
    """Badges of the caller's organisation.

    Reads and creates answer with serialized bytes (the interceptor passes bytes through):
    each badge's reply is stored with it, so a read sends those bytes instead of decoding the
    row and building a message. Hence the ``type: ignore[override]`` on those methods.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ListBadges(  # type: ignore[override]
        self, request: pb.ListBadgesRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Lists badges in id order, by CrowdTwist page number or by page token."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size, default=LIST_DEFAULT_PAGE_SIZE, maximum=LIST_MAX_PAGE_SIZE
        )
        limits.check_chars(request.tag_name, limits.BADGE_TEXT_CHARS, "tag_name")
        flt = BadgeFilter(
            is_enabled=request.is_enabled if request.HasField("is_enabled") else None,
            tag_name=request.tag_name or None,
            earnable_at=from_ts(request, "earnable_at", "earnable_at"),
            displayable_at=from_ts(request, "displayable_at", "displayable_at"),
        )
        fingerprint = paging.filter_fingerprint("badges", flt)
        after: int | None = None
        if request.page_token:
            if request.HasField("page"):
                raise InvalidArgument("page", "cannot be combined with page_token")
            token = paging.decode_page_token(request.page_token, fingerprint)
            # bool is an int to Python, and a key outside BIGINT fails in the database.
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < 2**63:
                raise InvalidArgument("page_token", "is not a token this service issued")
            after = token
        page = request.page if request.HasField("page") else None
        found = await self._fast_list(who.org_id, flt, size, after, page)
        if found is None:  # filtered, or rows from before migration 0007
            found = await self._db.run_read(_list, who.org_id, flt, size, after, page)
        total, rows, page_info = found
        rows, next_token = paging.keyset_page(rows, size, fingerprint, lambda r: r[0])
        # ListBadgesResponse.badges is field 1: the badges, then the other fields.
        tail = pb.ListBadgesResponse(
            paging=page_info, next_page_token=next_token, total_size=total
        ).SerializeToString()
        return b"".join([*(wire.message_field(1, _with_id(i, m)) for i, m in rows), tail])

    async def _fast_list(
        self, org_id: int, flt: BadgeFilter, size: int, after: int | None, page: int | None
    ) -> tuple[int, list[tuple[int, bytes | Badge]], pb.Paging] | None:
        """An unfiltered page from the kept count and the stored replies (Database.fetch);
        None when the page is filtered or holds a row without stored bytes."""
        if flt != _NO_FILTER:
            return None
        count = (store.COUNT, {"org_id": org_id})
        if after is not None:
            query = {"org_id": org_id, "after_id": after, "limit": size + 1}
            counted, rows = await self._db.fetch(count, (store.PAGE_AFTER, query))
            total = int(counted[0][0]) if counted else 0
            page_info = pb.Paging(total=total, pages=-(-total // size))
        else:
            number = 1 if page is None else page
            if number <= 0:  # an empty page by CrowdTwist's rules: only the count is needed
                (counted,) = await self._db.fetch(count)
                rows = []
            else:
                query = {"org_id": org_id, "limit": size + 1, "offset": (number - 1) * size}
                counted, rows = await self._db.fetch(count, (store.PAGE_AT, query))
            total = int(counted[0][0]) if counted else 0
            numbered = paging.numbered_page(page, size, total)
            if not numbered.in_range:
                rows = []
            page_info = _numbered_paging(numbered, size)
        if any(message is None for _, message in rows):
            return None
        return total, [(int(i), message) for i, message in rows], page_info

    async def GetBadge(  # type: ignore[override]
        self, request: pb.GetBadgeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Returns one badge."""
        who = current_principal()
        (rows,) = await self._db.fetch(
            (store.GET_MESSAGE, {"badge_id": request.id, "org_id": who.org_id})
        )
        if not rows:
            raise NotFound(store.RESOURCE, request.id)
        message: bytes | None = rows[0][0]
        if message is None:  # stored before migration 0007
            badge = await self._db.run_read(store.get_badge, who.org_id, request.id)
            return to_proto(badge).SerializeToString()
        return _with_id(request.id, message)

    async def CreateBadge(  # type: ignore[override]
        self, request: pb.CreateBadgeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates a badge after checking it against custom fields and org meta tags."""
        who = current_principal()
        key = request_key(request, who.org_id)
        badge = from_proto(request.badge, "badge")
        now = dt.datetime.now(dt.UTC)
        badge.org_id = who.org_id
        badge.create_time = badge.update_time = now
        return await write_once(self._db, key, now, _create, (badge, now), bytes)

    async def UpdateBadge(  # type: ignore[override]
        self, request: pb.UpdateBadgeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        now = dt.datetime.now(dt.UTC)
        return await self._db.run_write(_update, request, who.org_id, now)

    async def DeleteBadge(
        self, request: pb.DeleteBadgeRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a badge."""
        who = current_principal()
        await self._db.run_write(store.delete_badge, who.org_id, request.id)
        return empty_pb2.Empty()
