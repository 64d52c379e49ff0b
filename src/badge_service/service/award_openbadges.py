"""Open Badges 2.0 of awards: BakeAward, VerifyAward and the Assertion GetAward shows with
view AWARD_VIEW_OPEN_BADGES_V2.

Baked images start from the badge class's own image when it is a ``data:`` URI of the
requested format (PNG or SVG) that parses; otherwise (an http(s) image, another format, or
one that does not parse) from a generated placeholder, because the service never fetches
remote URLs. Images larger than ``_INLINE_MAX`` are baked or parsed in a worker thread, off the
event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.domain import baking, limits, openbadges
from badge_service.domain.awards import Award, AwardKind, AwardState
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.errors import InvalidArgument, NotFound
from badge_service.domain.lookups import Key
from badge_service.store import awards as award_store
from badge_service.store import badgr as badgr_store
from badge_service.store.db import Database

# Images larger than this are parsed in a worker thread rather than on the event loop.
_INLINE_MAX = 64 * 1024
_PNG_DATA = "data:image/png;base64,"
_SVG_DATA = "data:image/svg+xml;base64,"


@dataclass(frozen=True, slots=True)
class BakedImage:
    """An image baked with an assertion, and its content type."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Verification:
    """VerifyAward's verdict: the award's state (None: INVALID), why, and the award it names
    when that is the org's own (with its class's entity id), judged at ``now``."""

    state: AwardState | None
    reason: str
    award: Award | None = None
    class_entity_id: str = ""
    now: dt.datetime | None = None


async def badge_class_of(conn: AsyncConnection, award: Award) -> BadgeClass:
    """The badge class of a class award, read in the caller's transaction."""
    assert award.badge_class_id is not None
    return await badgr_store.get_badge_class(conn, award.org_id, Key(False, award.badge_class_id))


def _assertion(award: Award, bc: BadgeClass, base_url: str) -> dict[str, Any]:
    return openbadges.assertion(award, base_url=base_url, class_entity_id=bc.entity_id)


async def assertion_of(conn: AsyncConnection, award: Award, base_url: str) -> dict[str, Any] | None:
    """The Open Badges 2.0 Assertion of a badge class award, read in the caller's
    transaction; None for other awards."""
    if award.kind is not AwardKind.CLASS:
        return None
    bc = await badge_class_of(conn, award)
    return _assertion(award, bc, base_url)


def _data_image(image: str, prefix: str) -> bytes | None:
    if not image.startswith(prefix):
        return None
    try:
        return base64.b64decode(image[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return None


def bake_class_image(bc: BadgeClass, award_doc: dict[str, Any], svg: bool) -> BakedImage:
    """The class image (or a placeholder), SVG or else PNG, baked with the assertion
    document."""
    text = openbadges.to_json(award_doc)
    if svg:
        source = _data_image(bc.image, _SVG_DATA)
        baked: str | None = None
        if source is not None:
            try:
                baked = baking.bake_svg(baking.decode_svg(source), text, award_doc["id"])
            except InvalidArgument:
                baked = None  # the stored class image is not an SVG we can bake; use ours
        if baked is None:
            baked = baking.bake_svg(baking.placeholder_svg(bc.name), text, award_doc["id"])
        return BakedImage(baked.encode("utf-8"), baking.SVG_CONTENT_TYPE)
    source = _data_image(bc.image, _PNG_DATA)
    png: bytes | None = None
    if source is not None:
        try:
            png = baking.bake_png(source, text)
        except InvalidArgument:
            png = None
    if png is None:
        png = baking.bake_png(baking.placeholder_png(), text)
    return BakedImage(png, baking.PNG_CONTENT_TYPE)


async def bake_award(
    db: Database, org_id: int, award_id: str, *, svg: bool, base_url: str
) -> BakedImage:
    """The class image of a badge class award baked with its assertion (hosted under
    ``base_url``): SVG, or else PNG."""
    async with db.read() as conn:
        award = await conn.run_sync(award_store.get_award, org_id, award_id)
        if award.kind is not AwardKind.CLASS:
            raise openbadges.not_an_open_badge(award)
        bc = await badge_class_of(conn, award)
    return await bake(bc, _assertion(award, bc, base_url), svg)


async def bake(bc: BadgeClass, award_doc: dict[str, Any], svg: bool) -> BakedImage:
    """bake_class_image, in a worker thread when the class image is large."""
    if len(bc.image) > _INLINE_MAX:
        return await asyncio.to_thread(bake_class_image, bc, award_doc, svg)
    return bake_class_image(bc, award_doc, svg)


def _extract(image: bytes) -> str | None:
    """The assertion text a client's baked image carries (INVALID_ARGUMENT if the bytes are
    not a PNG or an SVG we accept)."""
    if not image:
        raise InvalidArgument(baking.IMAGE_FIELD, "is required (a baked PNG or SVG)")
    if baking.is_png(image):
        return baking.extract_png(image)
    return baking.extract_svg(baking.decode_svg(image))


async def verify_award(
    db: Database,
    org_id: int,
    *,
    assertion_id: str | None,
    baked_image: bytes | None,
    base_url: str,
) -> Verification:
    """Verifies an assertion of the org, named by id or hosted URL (``assertion_id``) or
    carried in a baked image: its state, or INVALID (unknown, or a baked document that does
    not match the award it names). One of the two is given (else INVALID_ARGUMENT)."""
    presented: dict[str, Any] | None = None
    if assertion_id is not None:
        if not assertion_id.strip():
            raise InvalidArgument("assertion_id", "is required")
        # An id or our hosted URL of one: never longer than a URL.
        limits.check_url(assertion_id, "assertion_id")
        ref = assertion_id
    elif baked_image is not None:
        # Parsing megabytes takes a noticeable slice of CPU: keep it off the event loop.
        if len(baked_image) > _INLINE_MAX:
            text = await asyncio.to_thread(_extract, baked_image)
        else:
            text = _extract(baked_image)
        if text is None:
            return Verification(None, "the image carries no Open Badges assertion")
        embedded = openbadges.parse_embedded(text)
        if embedded is None:
            return Verification(
                None, "the image's openbadges data is neither an assertion nor a URL"
            )
        if isinstance(embedded, dict):
            presented = embedded
            found = embedded.get("id")
            ref = found if isinstance(found, str) else ""
        else:
            ref = embedded
    else:
        raise InvalidArgument("assertion_id", "one of assertion_id or baked_image is required")
    award_id = openbadges.award_id_of(ref, base_url)
    if award_id is None:
        return Verification(None, "not an assertion id or hosted URL of this service")
    async with db.read() as conn:
        try:
            award = await conn.run_sync(award_store.get_award, org_id, award_id)
        except NotFound:
            return Verification(None, f"no assertion {award_id} in the caller's organisation")
        bc = await badge_class_of(conn, award) if award.kind is AwardKind.CLASS else None
    now = dt.datetime.now(dt.UTC)
    entity_id = bc.entity_id if bc is not None else ""
    if presented is not None:
        # The award named is the org's own, so the verdict shows it beside the refusal.
        if bc is None:
            return Verification(
                None,
                f"award {award_id} is not an Open Badges assertion",
                award,
                entity_id,
                now,
            )
        wrong = openbadges.mismatch(presented, _assertion(award, bc, base_url))
        if wrong is not None:
            return Verification(
                None,
                f"the baked assertion does not match award {award_id} ({wrong})",
                award,
                entity_id,
                now,
            )
    state = award.state(now)
    reason = openbadges.VERDICT_REASONS[state]
    if state is AwardState.REVOKED and award.revocation_reason:
        reason = f"{reason}: {award.revocation_reason}"
    return Verification(state, reason, award, entity_id, now)
