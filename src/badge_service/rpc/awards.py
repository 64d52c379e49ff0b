"""badges.v1.AwardService: awarding CrowdTwist badges, Credly templates and Badgr classes.

This module serves CreateAward, BatchCreateAwards, RedeemClaimCode, GetAward, ListAwards and
RevokeAward; the Open Badges RPCs come from AwardOpenBadgesMixin and the event and progress
RPCs from AwardEventsMixin. One code path creates awards for all three create RPCs: a single
award is a batch of one that raises its error instead of reporting it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.api.badges.v1 import award_pb2_grpc as pb_grpc
from badge_service.domain import awards as domain
from badge_service.domain import badgr, openbadges, paging
from badge_service.domain.awards import (
    Award,
    AwardFilter,
    AwardKind,
    AwardState,
    Evidence,
    Recipient,
    RecipientKind,
)
from badge_service.domain.badge_templates import BadgeTemplate, parse_template_id
from badge_service.domain.badges import Badge
from badge_service.domain.badgr import BadgeClass
from badge_service.domain.custom_fields import CustomField, check_extra_data
from badge_service.domain.errors import DomainError, InvalidArgument
from badge_service.domain.ids import is_hex_id, new_hex_id
from badge_service.rpc.auth import current_principal
from badge_service.rpc.award_events import AwardEventsMixin, recipient_to_proto
from badge_service.rpc.award_openbadges import AwardOpenBadgesMixin, open_badge_struct
from badge_service.rpc.convert import dict_to_struct, from_ts, struct_to_dict, ts
from badge_service.rpc.errors import to_status_proto
from badge_service.rpc.issuers import base_url_of
from badge_service.store import awards as store
from badge_service.store import badge_templates as templates_store
from badge_service.store import badges as badges_store
from badge_service.store import badgr as badgr_store
from badge_service.store import custom_fields as fields_store
from badge_service.store import progress as progress_store
from badge_service.store.db import Database

T = TypeVar("T")

_STATES = {
    AwardState.ACTIVE: pb.AWARD_STATE_ACTIVE,
    AwardState.REVOKED: pb.AWARD_STATE_REVOKED,
    AwardState.EXPIRED: pb.AWARD_STATE_EXPIRED,
}


def recipient_from_proto(msg: pb.Recipient | None) -> Recipient | None:
    """The domain recipient of a message; None when no identity is set."""
    if msg is None:
        return None
    which = msg.WhichOneof("identity")
    if which is None:
        return None
    return Recipient(RecipientKind(which), getattr(msg, which))


def award_to_proto(
    award: Award, base_url: str, class_entity_id: str = "", now: dt.datetime | None = None
) -> pb.Award:
    """The message of a stored award. A badge class award names its class by entity id
    (``class_entity_id``) and carries its assertion's verification URL."""
    now = now or dt.datetime.now(dt.UTC)
    msg = pb.Award(
        id=award.id,
        recipient=recipient_to_proto(award.recipient),
        issued_at=ts(award.issued_at),
        narrative=award.narrative,
        evidence=[pb.Evidence(url=e.url, narrative=e.narrative) for e in award.evidence],
        custom_data=dict_to_struct(award.custom_data),
        expires_at=ts(award.expires_at),
        state=_STATES[award.state(now)],
        revocation_reason=award.revocation_reason,
        revoke_time=ts(award.revoked_at),
        claim_code=award.claim_code,
        create_time=ts(award.create_time),
        created_by=award.created_by,
    )
    if award.kind is AwardKind.BADGE:
        assert award.badge_id is not None
        msg.badge_id = award.badge_id
    elif award.kind is AwardKind.TEMPLATE:
        assert award.badge_template_id is not None
        msg.badge_template_id = award.badge_template_id
    else:
        msg.badge_class_id = class_entity_id or award.badge_class_id or ""
        msg.open_badge_id = openbadges.assertion_url(base_url, award.id)
    return msg


def _evidence(items: Sequence[pb.Evidence]) -> list[Evidence]:
    return [Evidence(e.url, e.narrative) for e in items]


def award_from_proto(msg: pb.Award, prefix: str) -> Award:
    """The domain award a create request asks for (unchecked). badge_class_id holds the
    class reference as given (id or entity id) until the class is looked up."""
    which = msg.WhichOneof("definition")
    if which is None:
        raise domain.no_definition(f"{prefix}.badge_id")
    recipient = recipient_from_proto(msg.recipient if msg.HasField("recipient") else None)
    award = Award(
        kind=AwardKind.BADGE,
        recipient=recipient,  # type: ignore[arg-type]  # checked by check_details
        issued_at=from_ts(msg, "issued_at", f"{prefix}.issued_at"),
        narrative=msg.narrative,
        evidence=_evidence(msg.evidence),
        custom_data=struct_to_dict(msg.custom_data, f"{prefix}.custom_data"),
    )
    if which == "badge_id":
        award.badge_id = msg.badge_id
    elif which == "badge_template_id":
        award.kind = AwardKind.TEMPLATE
        award.badge_template_id = parse_template_id(
            msg.badge_template_id, f"{prefix}.badge_template_id"
        )
    else:
        award.kind = AwardKind.CLASS
        if not msg.badge_class_id:
            raise InvalidArgument(f"{prefix}.badge_class_id", "is required")
        award.badge_class_id = msg.badge_class_id
    return award


@dataclass(slots=True)
class _Prepared:
    """An award that passed its definition's rules; it still needs its counter slots
    (``limits``, CrowdTwist) and a free dedupe key (Credly) to be inserted."""

    index: int
    award: Award
    dedupe_key: str | None
    limits: list[domain.CounterLimit] = field(default_factory=list)


class _Definitions:
    """The definitions and custom fields a batch needs, each read once per call."""

    def __init__(self, conn: AsyncConnection, org_id: int) -> None:
        self._conn = conn
        self._org_id = org_id
        self._fields: list[CustomField] | None = None
        self._badges: dict[int, Badge | DomainError] = {}
        self._templates: dict[str, BadgeTemplate | DomainError] = {}
        self._classes: dict[str, BadgeClass | DomainError] = {}

    async def fields(self) -> list[CustomField]:
        """The org's custom fields."""
        if self._fields is None:
            self._fields = await self._conn.run_sync(fields_store.list_fields, self._org_id)
        return self._fields

    async def badge(self, badge_id: int) -> Badge:
        """A badge of the org, or its NOT_FOUND."""
        if badge_id not in self._badges:
            try:
                self._badges[badge_id] = await self._conn.run_sync(
                    badges_store.get_badge, self._org_id, badge_id
                )
            except DomainError as err:
                self._badges[badge_id] = err
        return _or_raise(self._badges[badge_id])

    async def template(self, template_id: str) -> BadgeTemplate:
        """A template of the org, or its NOT_FOUND."""
        if template_id not in self._templates:
            try:
                self._templates[template_id] = await templates_store.get_template(
                    self._conn, self._org_id, template_id
                )
            except DomainError as err:
                self._templates[template_id] = err
        return _or_raise(self._templates[template_id])

    async def badge_class(self, ref: str, where: str) -> BadgeClass:
        """A class of the org by id or entity id, or its NOT_FOUND."""
        if ref not in self._classes:
            try:
                key = badgr.key_of_id_or_entity_id(ref, where, badgr.BADGE_CLASS)
                self._classes[ref] = await badgr_store.get_badge_class(
                    self._conn, self._org_id, key
                )
            except DomainError as err:
                self._classes[ref] = err
        return _or_raise(self._classes[ref])


def _or_raise(value: T | DomainError) -> T:
    # Lookups are cached with their outcome, so a batch naming one missing definition
    # 10,000 times asks the database once.
    if isinstance(value, DomainError):
        raise value
    return value


class AwardServicer(AwardEventsMixin, AwardOpenBadgesMixin, pb_grpc.AwardServiceServicer):
    """Awards of the caller's organisation."""

    def __init__(self, db: Database, public_base_url: str) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)

    # --- creating ----------------------------------------------------------------------------

    async def _prepare(
        self,
        defs: _Definitions,
        index: int,
        award: Award,
        prefix: str,
        now: dt.datetime,
    ) -> _Prepared:
        """Checks one award against its definition's rules and fills in what the definition
        decides (expiry, the class's id, the counters a badge award needs a slot of)."""
        domain.check_details(award, now=now, prefix=prefix)
        assert award.issued_at is not None
        rkey = award.recipient_key
        dedupe_key: str | None = None
        badge: Badge | None = None
        if award.kind is AwardKind.BADGE:
            assert award.badge_id is not None
            badge = await defs.badge(award.badge_id)
            domain.check_badge_earnable(badge, award.issued_at)
        elif award.kind is AwardKind.TEMPLATE:
            assert award.badge_template_id is not None
            template = await defs.template(award.badge_template_id)
            domain.check_template_awardable(template)
            award.expires_at = domain.template_expiry(template, award.issued_at)
            dedupe_key = domain.dedupe_key(template, rkey)
        else:
            assert award.badge_class_id is not None
            badge_class = await defs.badge_class(award.badge_class_id, f"{prefix}.badge_class_id")
            domain.check_class_awardable(badge_class)
            award.badge_class_id = badge_class.id
            award.expires_at = domain.class_expiry(badge_class, award.issued_at)
        award.custom_data = check_extra_data(
            award.custom_data,
            await defs.fields(),
            f"{prefix}.custom_data" if prefix else "custom_data",
        )
        limits = [] if badge is None else domain.badge_limits(badge, award.issued_at)
        return _Prepared(index, award, dedupe_key, limits)

    async def _create(
        self,
        conn: AsyncConnection,
        org_id: int,
        items: Sequence[Award | DomainError],
        prefixes: Sequence[str],
        now: dt.datetime,
    ) -> list[Award | DomainError]:
        """Creates the awards that pass their rules, in one transaction, and returns one
        result per item in order: the award, or why it was refused."""
        defs = _Definitions(conn, org_id)
        results: list[Award | DomainError] = list(items)
        prepared: list[_Prepared] = []
        for i, item in enumerate(items):
            if isinstance(item, DomainError):
                continue
            try:
                prepared.append(await self._prepare(defs, i, item, prefixes[i], now))
            except DomainError as err:
                results[i] = err
        # Counter slots last, so that a request refused for another reason takes none.
        refused = await store.take_counters(
            conn,
            org_id,
            [
                store.CounterWant(p.index, p.award.badge_id or 0, p.award.recipient_key, p.limits)
                for p in prepared
                if p.limits
            ],
        )
        for p in prepared:
            if p.index in refused:
                results[p.index] = domain.limit_reached(p.award.badge_id or 0, refused[p.index])
        prepared = [p for p in prepared if p.index not in refused]
        # Inserted in dedupe key order for the same reason (a unique index entry is locked).
        inserted = await store.insert_awards(
            conn,
            [
                (p.award, p.dedupe_key)
                for p in sorted(prepared, key=lambda p: (p.dedupe_key or "", p.index))
            ],
        )
        template_deltas: dict[str, int] = {}
        created: list[str] = []
        for p in prepared:
            a = p.award
            if a.id not in inserted:
                # Only a Credly dedupe key makes an insert skip a row.
                assert a.badge_template_id is not None
                results[p.index] = domain.duplicate_award(a.badge_template_id, a.recipient_key)
                continue
            if a.badge_template_id is not None:
                template_deltas[a.badge_template_id] = (
                    template_deltas.get(a.badge_template_id, 0) + 1
                )
            created.append(a.id)
        await store.add_template_counts(conn, org_id, template_deltas)
        # An award of a CrowdTwist badge puts its recipient in the badge's earned state (one
        # PROGRESS event when the state moves), before the AWARDED events.
        seen: set[tuple[int, str]] = set()
        earned: list[tuple[Badge, str, Recipient]] = []
        for p in prepared:
            a = p.award
            if a.badge_id is None or a.id not in inserted:
                continue
            if (a.badge_id, a.recipient_key) not in seen:
                seen.add((a.badge_id, a.recipient_key))
                earned.append((await defs.badge(a.badge_id), a.recipient_key, a.recipient))
        await progress_store.mark_earned_many(conn, org_id, earned, now)
        await store.append_award_events(conn, org_id, "awarded", created, now)
        return results

    def _new_award(self, award: Award, org_id: int, key_id: int, now: dt.datetime) -> Award:
        award.id = new_hex_id()
        award.org_id = org_id
        award.created_by = key_id
        award.create_time = now
        return award

    async def _to_protos(self, conn: AsyncConnection, awards: Sequence[Award]) -> list[pb.Award]:
        entity_ids = await store.class_entity_ids(
            conn, [a.badge_class_id for a in awards if a.badge_class_id]
        )
        now = dt.datetime.now(dt.UTC)
        return [
            award_to_proto(a, self._base, entity_ids.get(a.badge_class_id or "", ""), now)
            for a in awards
        ]

    async def CreateAward(
        self, request: pb.CreateAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.Award:
        """Awards a definition to a recipient, or says which rule refused it."""
        who = current_principal()
        now = dt.datetime.now(dt.UTC)
        award = self._new_award(
            award_from_proto(request.award, "award"), who.org_id, who.key_id, now
        )
        async with self._db.write() as conn:
            (result,) = await self._create(conn, who.org_id, [award], ["award"], now)
            if isinstance(result, DomainError):
                raise result
            (out,) = await self._to_protos(conn, [result])
        return out

    async def BatchCreateAwards(
        self, request: pb.BatchCreateAwardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchCreateAwardsResponse:
        """Awards every request that passes its rules, in one transaction; one result per
        request, in order."""
        who = current_principal()
        if not request.requests:
            raise InvalidArgument("requests", "must have at least one request")
        if len(request.requests) > domain.BATCH_MAX:
            raise InvalidArgument("requests", f"must have at most {domain.BATCH_MAX} requests")
        now = dt.datetime.now(dt.UTC)
        items: list[Award | DomainError] = []
        prefixes: list[str] = []
        for i, req in enumerate(request.requests):
            prefix = f"requests[{i}].award"
            prefixes.append(prefix)
            try:
                items.append(
                    self._new_award(
                        award_from_proto(req.award, prefix), who.org_id, who.key_id, now
                    )
                )
            except DomainError as err:
                items.append(err)
        async with self._db.write() as conn:
            results = await self._create(conn, who.org_id, items, prefixes, now)
            created = [r for r in results if isinstance(r, Award)]
            protos = iter(await self._to_protos(conn, created))
        out = pb.BatchCreateAwardsResponse()
        for r in results:
            if isinstance(r, DomainError):
                out.results.add(error=to_status_proto(r))
            else:
                out.results.add(award=next(protos))
        return out

    async def RedeemClaimCode(
        self, request: pb.RedeemClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Award:
        """Takes one use of a claim code and awards its badge class, both or neither."""
        who = current_principal()
        now = dt.datetime.now(dt.UTC)
        key = badgr.key_of_id_or_entity_id(
            request.id_or_entity_id, "id_or_entity_id", badgr.BADGE_CLASS
        )
        code = badgr.claim_code_of(request.claim_code, "claim_code")
        award = Award(
            kind=AwardKind.CLASS,
            recipient=recipient_from_proto(  # type: ignore[arg-type]
                request.recipient if request.HasField("recipient") else None
            ),
            narrative=request.narrative,
            evidence=_evidence(request.evidence),
            claim_code=code,
        )
        self._new_award(award, who.org_id, who.key_id, now)
        # The recipient and details are checked before a use is taken.
        domain.check_details(award, now=now, prefix="")
        async with self._db.write() as conn:
            badge_class = await badgr_store.get_badge_class(conn, who.org_id, key)
            domain.check_class_awardable(badge_class)
            await store.use_claim_code(conn, who.org_id, badge_class.id, code, now)
            award.badge_class_id = badge_class.id
            (result,) = await self._create(conn, who.org_id, [award], [""], now)
            if isinstance(result, DomainError):
                raise result
            (out,) = await self._to_protos(conn, [result])
        return out

    # --- reading -----------------------------------------------------------------------------

    async def GetAward(
        self, request: pb.GetAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.Award:
        """Returns one award; with AWARD_VIEW_OPEN_BADGES_V2 a class award carries its
        Open Badges 2.0 Assertion."""
        who = current_principal()
        if not request.id:
            raise InvalidArgument("id", "is required")
        if request.view not in (pb.AWARD_VIEW_UNSPECIFIED, pb.AWARD_VIEW_OPEN_BADGES_V2):
            raise InvalidArgument("view", f"{request.view} is not a known value")
        async with self._db.read() as conn:
            award = await store.get_award(conn, who.org_id, request.id)
            (out,) = await self._to_protos(conn, [award])
            if request.view == pb.AWARD_VIEW_OPEN_BADGES_V2:
                doc = await open_badge_struct(conn, award, self._base)
                if doc is not None:
                    out.open_badge.CopyFrom(doc)
        return out

    async def _filter(
        self, conn: AsyncConnection, org_id: int, request: pb.ListAwardsRequest
    ) -> AwardFilter:
        which = request.WhichOneof("subject")
        revoked = request.revoked if request.HasField("revoked") else None
        expired = request.expired if request.HasField("expired") else None
        if which is None:
            raise InvalidArgument(
                "badge_id",
                "one of badge_id, badge_template_id, badge_class_id or recipient is required",
            )
        if which == "badge_id":
            await conn.run_sync(badges_store.get_badge, org_id, request.badge_id)
            return AwardFilter(badge_id=request.badge_id, revoked=revoked, expired=expired)
        if which == "badge_template_id":
            template_id = parse_template_id(request.badge_template_id, "badge_template_id")
            await templates_store.get_template(conn, org_id, template_id)
            return AwardFilter(badge_template_id=template_id, revoked=revoked, expired=expired)
        if which == "badge_class_id":
            key = badgr.key_of_id_or_entity_id(
                request.badge_class_id, "badge_class_id", badgr.BADGE_CLASS
            )
            badge_class = await badgr_store.get_badge_class(conn, org_id, key)
            return AwardFilter(badge_class_id=badge_class.id, revoked=revoked, expired=expired)
        recipient = domain.check_recipient(recipient_from_proto(request.recipient), "recipient")
        return AwardFilter(
            recipient_key=domain.recipient_key(recipient), revoked=revoked, expired=expired
        )

    async def ListAwards(
        self, request: pb.ListAwardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAwardsResponse:
        """Awards of one definition or one recipient, oldest first, by page token."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size,
            default=domain.LIST_DEFAULT_PAGE_SIZE,
            maximum=domain.LIST_MAX_PAGE_SIZE,
        )
        now = dt.datetime.now(dt.UTC)
        async with self._db.read() as conn:
            flt = await self._filter(conn, who.org_id, request)
            fingerprint = paging.filter_fingerprint("awards", flt)
            after: str | None = None
            if request.page_token:
                token = paging.decode_page_token(request.page_token, fingerprint)
                if not isinstance(token, str) or not is_hex_id(token):
                    raise InvalidArgument("page_token", "is not a token this service issued")
                after = token
            total = await store.count_awards(conn, who.org_id, flt, now)
            rows = await store.list_awards(conn, who.org_id, flt, now, limit=size + 1, after=after)
            page, next_token = paging.keyset_page(rows, size, fingerprint, lambda a: a.id)
            awards = await self._to_protos(conn, page)
        return pb.ListAwardsResponse(awards=awards, next_page_token=next_token, total_size=total)

    # --- revoking ------------------------------------------------------------------------------

    async def RevokeAward(
        self, request: pb.RevokeAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.Award:
        """Revokes an award with a reason; it stays readable, marked revoked. Its Credly
        template counts one badge fewer and its CrowdTwist caps give its slot back."""
        who = current_principal()
        if not request.id:
            raise InvalidArgument("id", "is required")
        reason = domain.check_revocation_reason(request.reason)
        now = dt.datetime.now(dt.UTC)
        async with self._db.write() as conn:
            award = await store.revoke_award(conn, who.org_id, request.id, reason, now)
            if award.badge_template_id is not None:
                await store.add_template_counts(conn, who.org_id, {award.badge_template_id: -1})
            if award.badge_id is not None:
                badge = await conn.run_sync(badges_store.get_badge, who.org_id, award.badge_id)
                assert award.issued_at is not None
                periods = [x.period for x in domain.badge_limits(badge, award.issued_at)]
                await store.release_counters(conn, badge.id, award.recipient_key, periods)
            (out,) = await self._to_protos(conn, [award])
            await store.append_award_events(conn, who.org_id, "revoked", [award.id], now)
        return out
