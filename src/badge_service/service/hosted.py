"""Use cases of hosted Open Badges 2.0: the public documents a verifier, backpack or browser
fetches from the URLs the service writes into every assertion, with no key.

These are the only lookups that cross organisations: an award id, an issuer's and a badge
class's entity id are unique across all of them (unique columns), and the documents they
name are public by design (Open Badges hosted verification). Each answers only what the
documents show; every other read stays scoped by the caller's org.

What they read is kept for a few seconds in the process (service/recent.py, per database): public
documents are fetched again and again (a popular badge's page, backpacks refreshing) and
change rarely, and a verifier may be told to cache them for a minute anyway. A revocation in
this process drops its award at once (``recent.forget_award``); one made in another process is
seen here within RECENT_SECONDS, which the public Cache-Control's max-age leaves room for, so that
a revocation reaches every verifier within a minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from badge_service.domain import openbadges
from badge_service.domain.awards import RESOURCE as AWARD
from badge_service.domain.awards import Award, AwardKind, AwardState
from badge_service.domain.badge_classes import BADGE_CLASS, BadgeClass
from badge_service.domain.errors import NotFound, echo
from badge_service.domain.ids import is_entity_id, is_hex_id
from badge_service.domain.issuers import ISSUER
from badge_service.service.award_openbadges import BakedImage, badge_class_of, bake
from badge_service.service.recent import reads as _reads
from badge_service.store import awards as award_store
from badge_service.store import badgr as badgr_store
from badge_service.store.db import Database


@dataclass(frozen=True, slots=True)
class HostedAssertion:
    """An assertion as its hosted URL shows it: the award's state at ``now``, and the
    document (the full Assertion, or for a revoked one the spec's short revoked form)."""

    state: AwardState
    document: dict[str, Any]
    award: Award
    badge_class: BadgeClass


def _entity_id(value: str, resource: str) -> str:
    if not is_entity_id(value):
        raise NotFound(resource, echo(value))
    return value


async def issuer_profile(db: Database, entity_id: str, base_url: str) -> dict[str, Any]:
    """The Open Badges Profile of the issuer with this entity id (any org), or NOT_FOUND."""
    entity_id = _entity_id(entity_id, ISSUER)

    async def load() -> Any:
        async with db.read() as conn:
            return await badgr_store.get_public_issuer(conn, entity_id)

    issuer = await _reads(db).issuers.fetch(entity_id, load)
    return openbadges.open_badges_issuer(issuer, base_url)


async def badge_class(db: Database, entity_id: str) -> BadgeClass:
    """The badge class with this entity id (any org), or NOT_FOUND."""
    entity_id = _entity_id(entity_id, BADGE_CLASS)

    async def load() -> BadgeClass:
        async with db.read() as conn:
            return await badgr_store.get_public_badge_class(conn, entity_id)

    return await _reads(db).badge_classes.fetch(entity_id, load)


async def badge_class_document(db: Database, entity_id: str, base_url: str) -> dict[str, Any]:
    """The Open Badges BadgeClass with this entity id (any org), or NOT_FOUND."""
    return openbadges.open_badges_badge_class(await badge_class(db, entity_id), base_url)


async def revocation_list(db: Database, entity_id: str, base_url: str) -> dict[str, Any]:
    """The RevocationList of the issuer with this entity id (any org): every revoked
    assertion of its badge classes, by id; NOT_FOUND for an unknown issuer."""
    entity_id = _entity_id(entity_id, ISSUER)
    async with db.read() as conn:
        issuer = await badgr_store.get_public_issuer(conn, entity_id)
        revoked = await conn.run_sync(award_store.revoked_issuer_awards, issuer.org_id, issuer.id)
    return openbadges.revocation_list(base_url, issuer.entity_id, revoked)


async def class_award(db: Database, award_id: str) -> tuple[Award, BadgeClass]:
    """The badge class award with this id (any org) and its class. NOT_FOUND for an id that
    names nothing, or an award that is not an Open Badges assertion (not of a class).

    While the recent reads keep it, every call answers the same tuple (the same object): what
    is derived from it may be kept as long as it is the one answered."""
    if not is_hex_id(award_id):
        raise NotFound(AWARD, echo(award_id))

    async def load() -> tuple[Award, BadgeClass]:
        async with db.read() as conn:
            award = await conn.run_sync(award_store.get_public_award, award_id)
            if award.kind is not AwardKind.CLASS:
                raise NotFound(AWARD, award_id)
            return award, await badge_class_of(conn, award)

    return await _reads(db).awards.fetch(award_id, load)


async def assertion(db: Database, award_id: str, base_url: str) -> HostedAssertion:
    """The hosted Assertion of the badge class award with this id (any org), judged now:
    active and expired ones in full (an expired one with its ``expires``), a revoked one in
    the short revoked form; NOT_FOUND for anything else."""
    return assertion_of(await class_award(db, award_id), base_url)


def assertion_of(found: tuple[Award, BadgeClass], base_url: str) -> HostedAssertion:
    """The hosted Assertion of a badge class award and its class (as class_award gives them),
    judged now. Its document depends on them alone, not on the time: an expired assertion's
    is its active one, which names its ``expires``."""
    award, bc = found
    state = award.state(dt.datetime.now(dt.UTC))
    if state is AwardState.REVOKED:
        doc = openbadges.revoked_assertion(award, base_url)
    else:
        doc = openbadges.assertion(award, base_url=base_url, class_entity_id=bc.entity_id)
    return HostedAssertion(state, doc, award, bc)


async def baked_assertion(
    db: Database, award_id: str, base_url: str, *, svg: bool
) -> tuple[HostedAssertion, BakedImage | None]:
    """The hosted assertion as ``assertion`` gives it, and, unless it is revoked, the class
    image of the award baked with its Assertion (SVG, or else PNG)."""
    hosted = await assertion(db, award_id, base_url)
    if hosted.state is AwardState.REVOKED:
        return hosted, None
    return hosted, await bake(hosted.badge_class, hosted.document, svg)
