"""Open Badges 2.0 for AwardService: BakeAward, VerifyAward and the Assertion GetAward
shows with view AWARD_VIEW_OPEN_BADGES_V2.

Baked images start from the badge class's own image when it is a ``data:`` URI of the
requested format (PNG or SVG) that parses; otherwise (an http(s) image, another format, or
one that does not parse) from a generated placeholder, because the service never fetches
remote URLs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain import baking, limits, openbadges
from badge_service.domain.awards import Award, AwardKind, AwardState
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.errors import InvalidArgument, NotFound
from badge_service.domain.lookups import Key
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import dict_to_struct
from badge_service.store import awards as award_store
from badge_service.store import badgr as badgr_store

if TYPE_CHECKING:
    from badge_service.store.db import Database

# Images larger than this are parsed in a worker thread rather than on the event loop.
_INLINE_MAX = 64 * 1024
_PNG_DATA = "data:image/png;base64,"
_SVG_DATA = "data:image/svg+xml;base64,"

_STATUS = {
    AwardState.ACTIVE: pb.VERIFICATION_STATUS_VALID,
    AwardState.REVOKED: pb.VERIFICATION_STATUS_REVOKED,
    AwardState.EXPIRED: pb.VERIFICATION_STATUS_EXPIRED,
}


async def _badge_class(conn: AsyncConnection, award: Award) -> BadgeClass:
    assert award.badge_class_id is not None
    return await badgr_store.get_badge_class(conn, award.org_id, Key(False, award.badge_class_id))


def _assertion(award: Award, bc: BadgeClass, base_url: str) -> dict[str, Any]:
    return openbadges.assertion(award, base_url=base_url, class_entity_id=bc.entity_id)


async def open_badge_struct(
    conn: AsyncConnection, award: Award, base_url: str
) -> struct_pb2.Struct | None:
    """The Open Badges 2.0 Assertion of a badge class award; None for other awards."""
    if award.kind is not AwardKind.CLASS:
        return None
    bc = await _badge_class(conn, award)
    return dict_to_struct(_assertion(award, bc, base_url))


def _data_image(image: str, prefix: str) -> bytes | None:
    if not image.startswith(prefix):
        return None
    try:
        return base64.b64decode(image[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return None


def bake_class_image(bc: BadgeClass, award_doc: dict[str, Any], fmt: int) -> pb.BakedImage:
    """The class image (or a placeholder) of ``fmt`` baked with the assertion document."""
    text = openbadges.to_json(award_doc)
    if fmt == pb.BAKED_IMAGE_FORMAT_SVG:
        source = _data_image(bc.image, _SVG_DATA)
        svg: str | None = None
        if source is not None:
            try:
                svg = baking.bake_svg(baking.decode_svg(source), text, award_doc["id"])
            except InvalidArgument:
                svg = None  # the stored class image is not an SVG we can bake; use ours
        if svg is None:
            svg = baking.bake_svg(baking.placeholder_svg(bc.name), text, award_doc["id"])
        return pb.BakedImage(data=svg.encode("utf-8"), content_type=baking.SVG_CONTENT_TYPE)
    source = _data_image(bc.image, _PNG_DATA)
    png: bytes | None = None
    if source is not None:
        try:
            png = baking.bake_png(source, text)
        except InvalidArgument:
            png = None
    if png is None:
        png = baking.bake_png(baking.placeholder_png(), text)
    return pb.BakedImage(data=png, content_type=baking.PNG_CONTENT_TYPE)


def _extract(image: bytes) -> str | None:
    """The assertion text a client's baked image carries (INVALID_ARGUMENT if the bytes are
    not a PNG or an SVG we accept)."""
    if not image:
        raise InvalidArgument(baking.IMAGE_FIELD, "is required (a baked PNG or SVG)")
    if baking.is_png(image):
        return baking.extract_png(image)
    return baking.extract_svg(baking.decode_svg(image))


def _invalid(reason: str) -> pb.VerifyAwardResponse:
    return pb.VerifyAwardResponse(status=pb.VERIFICATION_STATUS_INVALID, reason=reason)


class AwardOpenBadgesMixin:
    """BakeAward and VerifyAward of AwardService (mixed into AwardServicer, which sets
    ``_db`` and ``_base``)."""

    _db: Database
    _base: str

    async def _get_award(self, conn: AsyncConnection, org_id: int, award_id: str) -> Award:
        return await conn.run_sync(award_store.get_award, org_id, award_id)

    async def BakeAward(
        self, request: pb.BakeAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.BakedImage:
        """Returns the class image of a badge class award baked with its assertion."""
        who = current_principal()
        if not request.id:
            raise InvalidArgument("id", "is required")
        if request.format not in pb.BakedImageFormat.values():
            raise InvalidArgument("format", f"{request.format} is not a known value")
        async with self._db.read() as conn:
            award = await self._get_award(conn, who.org_id, request.id)
            if award.kind is not AwardKind.CLASS:
                raise openbadges.not_an_open_badge(award)
            bc = await _badge_class(conn, award)
        doc = _assertion(award, bc, self._base)
        if len(bc.image) > _INLINE_MAX:
            return await asyncio.to_thread(bake_class_image, bc, doc, request.format)
        return bake_class_image(bc, doc, request.format)

    async def VerifyAward(
        self, request: pb.VerifyAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyAwardResponse:
        """Verifies an assertion of the caller's org, named by id or hosted URL or carried
        in a baked image: VALID, REVOKED, EXPIRED, or INVALID (unknown, or a baked document
        that does not match the award it names)."""
        who = current_principal()
        which = request.WhichOneof("subject")
        presented: dict[str, Any] | None = None
        if which == "assertion_id":
            if not request.assertion_id.strip():
                raise InvalidArgument("assertion_id", "is required")
            # An id or our hosted URL of one: never longer than a URL.
            limits.check_url(request.assertion_id, "assertion_id")
            ref = request.assertion_id
        elif which == "baked_image":
            image = request.baked_image
            # Parsing megabytes takes a noticeable slice of CPU: keep it off the event loop.
            if len(image) > _INLINE_MAX:
                text = await asyncio.to_thread(_extract, image)
            else:
                text = _extract(image)
            if text is None:
                return _invalid("the image carries no Open Badges assertion")
            embedded = openbadges.parse_embedded(text)
            if embedded is None:
                return _invalid("the image's openbadges data is neither an assertion nor a URL")
            if isinstance(embedded, dict):
                presented = embedded
                found = embedded.get("id")
                ref = found if isinstance(found, str) else ""
            else:
                ref = embedded
        else:
            raise InvalidArgument("assertion_id", "one of assertion_id or baked_image is required")
        award_id = openbadges.award_id_of(ref, self._base)
        if award_id is None:
            return _invalid("not an assertion id or hosted URL of this service")
        async with self._db.read() as conn:
            try:
                award = await self._get_award(conn, who.org_id, award_id)
            except NotFound:
                return _invalid(f"no assertion {award_id} in the caller's organisation")
            bc = await _badge_class(conn, award) if award.kind is AwardKind.CLASS else None
        now = dt.datetime.now(dt.UTC)
        out = _award_proto(award, self._base, bc, now)
        if presented is not None:
            # The award named is the org's own, so the verdict shows it beside the refusal.
            if bc is None:
                return pb.VerifyAwardResponse(
                    status=pb.VERIFICATION_STATUS_INVALID,
                    reason=f"award {award_id} is not an Open Badges assertion",
                    award=out,
                )
            wrong = openbadges.mismatch(presented, _assertion(award, bc, self._base))
            if wrong is not None:
                return pb.VerifyAwardResponse(
                    status=pb.VERIFICATION_STATUS_INVALID,
                    reason=f"the baked assertion does not match award {award_id} ({wrong})",
                    award=out,
                )
        state = award.state(now)
        reason = openbadges.VERDICT_REASONS[state]
        if state is AwardState.REVOKED and award.revocation_reason:
            reason = f"{reason}: {award.revocation_reason}"
        return pb.VerifyAwardResponse(status=_STATUS[state], reason=reason, award=out)


def _award_proto(award: Award, base_url: str, bc: BadgeClass | None, now: dt.datetime) -> pb.Award:
    # rpc.awards imports this module for the mixin, so its converter is imported late.
    from badge_service.rpc.awards import award_to_proto

    return award_to_proto(award, base_url, bc.entity_id if bc is not None else "", now)
