"""badges.v1.BadgeService: CrowdTwist v2.1 badges."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace
from functools import partial
from typing import TypeVar
from urllib.parse import urlencode

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.domain import limits, paging
from badge_service.domain.badges import (
    Badge,
    BadgeFilter,
    BadgeState,
    BadgeStateType,
    BadgeTag,
    EligibilityType,
    Frequency,
    FrequencyPeriod,
    Segment,
)
from badge_service.domain.errors import InvalidArgument
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import dict_to_struct, from_ts, merge_update, struct_to_dict, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service import badges
from badge_service.service.db import Database

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


def filter_query(request: pb.ListBadgesRequest) -> str:
    """The request's filters as the tail of a page URL (``&is_enabled=true&tag_name=...``),
    in field order; empty without filters. A page link must keep them: the next page of a
    filtered list is a page of the same filtered list."""
    found: list[tuple[str, str]] = []
    if request.HasField("is_enabled"):
        found.append(("is_enabled", "true" if request.is_enabled else "false"))
    if request.tag_name:
        found.append(("tag_name", request.tag_name))
    if request.HasField("earnable_at"):
        found.append(("earnable_at", request.earnable_at.ToJsonString()))
    if request.HasField("displayable_at"):
        found.append(("displayable_at", request.displayable_at.ToJsonString()))
    return "&" + urlencode(found) if found else ""


def _page_url(page: int | None, size: int, filters: str) -> str:
    return "" if page is None else f"/v2.1/badges?page={page}&page_size={size}{filters}"


def _numbered_paging(numbered: paging.NumberedPage, size: int, filters: str) -> pb.Paging:
    """CrowdTwist's paging block of a numbered page; its URLs keep the request's filters
    (``filters``, from filter_query) and name the page size in effect."""
    return pb.Paging(
        total=numbered.total,
        pages=numbered.pages,
        next_page=numbered.next_page,
        prev_page=numbered.prev_page,
        next_page_url=_page_url(numbered.next_page, size, filters),
        prev_page_url=_page_url(numbered.prev_page, size, filters),
    )


_ID = pb.Badge.ID_FIELD_NUMBER
_BADGES = pb.ListBadgesResponse.BADGES_FIELD_NUMBER


def _with_id(badge_id: int, message: bytes | Badge) -> bytes:
    """The serialized Badge of a stored badge: its stored bytes behind its id (the id field
    first, so the result is what SerializeToString gives), or a legacy row's decoded badge
    rendered."""
    if isinstance(message, Badge):
        return to_proto(message).SerializeToString()
    return wire.varint_field(_ID, badge_id) + message


def render(badge: Badge) -> bytes:
    """The bytes stored with a badge: its message without the id (the id is assigned by the
    insert, and reads put it back)."""
    return to_proto(replace(badge, id=0)).SerializeToString()


_render = render


def _list_reply(
    rows: list[tuple[int, bytes | Badge]],
    total: int,
    size: int,
    numbered: paging.NumberedPage | None,
    next_page_token: str,
    filters: str = "",
) -> bytes:
    """A serialized ListBadgesResponse: each badge's stored bytes as an item of ``badges``,
    then the other fields serialized (a message's fields may come in any order). ``filters``
    is the request's filter_query, kept by the page URLs."""
    page_info = (
        pb.Paging(total=total, pages=-(-total // size))
        if numbered is None
        else _numbered_paging(numbered, size, filters)
    )
    tail = pb.ListBadgesResponse(
        paging=page_info, next_page_token=next_page_token, total_size=total
    ).SerializeToString()
    return b"".join([*(wire.message_field(_BADGES, _with_id(i, m)) for i, m in rows), tail])


class BadgeServicer:
    """badges.v1.BadgeService: badges of the caller's organisation.

    Every method but DeleteBadge answers with serialized bytes (``wire.serialized``; the
    servicer is registered with ``wire.add_servicer``): each badge's reply is stored with it,
    so a read sends those bytes instead of decoding the row and building a message.

    GetBadge, ListBadges and CreateBadge, the hottest calls, are plain functions that decode
    the request and return their use case's coroutine: every call to our services passes
    through the interceptor (rpc.interceptor), which awaits what a handler returns, so these
    cost no coroutine of the servicer's own.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @wire.serialized(pb.ListBadgesResponse)
    def ListBadges(
        self, request: pb.ListBadgesRequest, context: grpc.aio.ServicerContext
    ) -> Awaitable[bytes]:
        """Lists badges in id order, by CrowdTwist page number or by page token."""
        who = current_principal()
        size = badges.page_size(request.page_size)
        limits.check_chars(request.tag_name, limits.BADGE_TEXT_CHARS, "tag_name")
        flt = BadgeFilter(
            is_enabled=request.is_enabled if request.HasField("is_enabled") else None,
            tag_name=request.tag_name or None,
            earnable_at=from_ts(request, "earnable_at", "earnable_at"),
            displayable_at=from_ts(request, "displayable_at", "displayable_at"),
        )
        page = request.page if request.HasField("page") else None
        filters = filter_query(request)
        # The common unfiltered call keeps the plain function (no partial per call).
        reply = partial(_list_reply, filters=filters) if filters else _list_reply
        return badges.list_badges(self._db, who.org_id, flt, size, page, request.page_token, reply)

    @wire.serialized(pb.Badge)
    def GetBadge(
        self, request: pb.GetBadgeRequest, context: grpc.aio.ServicerContext
    ) -> Awaitable[bytes]:
        """Returns one badge."""
        return badges.get_badge(self._db, current_principal().org_id, request.id, _with_id)

    @wire.serialized(pb.Badge)
    def CreateBadge(
        self, request: pb.CreateBadgeRequest, context: grpc.aio.ServicerContext
    ) -> Awaitable[bytes]:
        """Creates a badge after checking it against custom fields and org meta tags."""
        who = current_principal()
        key = request_key(request, who.org_id)
        badge = from_proto(request.badge, "badge")
        return badges.create_badge(self._db, key, who.org_id, badge, _render, _with_id)

    @wire.serialized(pb.Badge)
    async def UpdateBadge(
        self, request: pb.UpdateBadgeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Updates the masked fields; the result must pass every create rule."""

        def merge(existing: Badge) -> Badge:
            merged = merge_update(
                to_proto(existing),
                request.badge,
                request.update_mask,
                prefix="badge",
                mutable=MUTABLE,
            )
            return from_proto(merged, "badge")

        org_id = current_principal().org_id
        return await badges.update_badge(
            self._db, org_id, request.badge.id, merge, _render, _with_id
        )

    async def DeleteBadge(
        self, request: pb.DeleteBadgeRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a badge."""
        await badges.delete_badge(self._db, current_principal().org_id, request.id)
        return empty_pb2.Empty()
