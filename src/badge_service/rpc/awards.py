"""badges.v1.AwardService: awarding CrowdTwist badges, Credly templates and Badgr classes.

This module serves CreateAward, BatchCreateAwards, RedeemClaimCode, GetAward, ListAwards and
RevokeAward; the Open Badges RPCs come from AwardOpenBadgesMixin and the event and progress
RPCs from AwardEventsMixin. Each decodes its request, calls one use case of
``service.awards`` (or ``award_events``, ``award_openbadges``) and encodes the result; the
messages are ``rpc.award_messages``, whose ``AwardReplies`` the use cases encode replies with.
"""

from __future__ import annotations

import datetime as dt

import grpc

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain import limits
from badge_service.domain.awards import Award, AwardKind
from badge_service.domain.errors import DomainError, InvalidArgument
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.award_events import AwardEventsMixin
from badge_service.rpc.award_messages import (
    AwardReplies,
    award_from_proto,
    award_to_proto,
    evidence_from_proto,
    recipient_from_proto,
)
from badge_service.rpc.award_openbadges import AwardOpenBadgesMixin
from badge_service.rpc.convert import dict_to_struct
from badge_service.rpc.issuers import base_url_of
from badge_service.rpc.request_ids import request_key
from badge_service.service import Database, award_events, awards
from badge_service.service.watch import WatchLimits


class AwardServicer(AwardEventsMixin, AwardOpenBadgesMixin):
    """Awards of the caller's organisation (registered by ``rpc.wire.add_servicer``).

    The create, list and revoke RPCs answer with serialized bytes (``wire.serialized``): each
    award's reply is stored with it (migration 0008), and a reply is those bytes plus the
    fields that change; WatchAwards yields the bytes the watch hub serialized once for every
    stream.
    """

    def __init__(
        self, db: Database, public_base_url: str, watch: WatchLimits | None = None
    ) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)
        self._replies = AwardReplies(self._base)
        self._hub = award_events.watch_hub(db, watch or WatchLimits(), self._replies.events)

    # --- creating ----------------------------------------------------------------------------

    @wire.serialized(pb.Award)
    async def CreateAward(
        self, request: pb.CreateAwardRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards a definition to a recipient, or says which rule refused it."""
        who = current_principal()
        key = request_key(request, who.org_id)
        now = dt.datetime.now(dt.UTC)
        award = award_from_proto(request.award, "award")
        return await awards.create_award(
            self._db, self._replies, key, who.org_id, who.key_id, award, now
        )

    @wire.serialized(pb.BatchCreateAwardsResponse)
    async def BatchCreateAwards(
        self, request: pb.BatchCreateAwardsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards every request that passes its rules, in one transaction; one result per
        request, in order."""
        who = current_principal()
        key = request_key(request, who.org_id)
        if not request.requests:
            raise InvalidArgument("requests", "must have at least one request")
        limits.check_items(request.requests, limits.BATCH_AWARDS, "requests", "requests")
        now = dt.datetime.now(dt.UTC)
        items: list[Award | DomainError] = []
        prefixes: list[str] = []
        for i, req in enumerate(request.requests):
            if req.request_id:
                # One id for the whole batch: it is written in one transaction.
                raise InvalidArgument(
                    f"requests[{i}].request_id",
                    "must be empty inside a batch; set the batch's own request_id",
                )
            prefix = f"requests[{i}].award"
            prefixes.append(prefix)
            try:
                items.append(award_from_proto(req.award, prefix))
            except DomainError as err:
                items.append(err)
        return await awards.create_awards(
            self._db, self._replies, key, who.org_id, who.key_id, items, prefixes, now
        )

    @wire.serialized(pb.Award)
    async def RedeemClaimCode(
        self, request: pb.RedeemClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Takes one use of a claim code and awards its badge class, both or neither."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        now = dt.datetime.now(dt.UTC)
        award = Award(
            kind=AwardKind.CLASS,
            recipient=recipient_from_proto(  # type: ignore[arg-type]  # checked by the use case
                request.recipient if request.HasField("recipient") else None
            ),
            narrative=request.narrative,
            evidence=evidence_from_proto(request.evidence),
        )
        return await awards.redeem_claim_code(
            self._db,
            self._replies,
            request_id,
            who.org_id,
            who.key_id,
            request.id_or_entity_id,
            request.claim_code,
            award,
            now,
        )

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
        found = await awards.get_award(
            self._db,
            who.org_id,
            request.id,
            open_badge=request.view == pb.AWARD_VIEW_OPEN_BADGES_V2,
            base_url=self._base,
        )
        out = award_to_proto(found.award, self._base, found.class_entity_id)
        if found.assertion is not None:
            out.open_badge.CopyFrom(dict_to_struct(found.assertion))
        return out

    @wire.serialized(pb.ListAwardsResponse)
    async def ListAwards(
        self, request: pb.ListAwardsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards of one definition or one recipient, oldest first, by page token."""
        who = current_principal()
        which = request.WhichOneof("subject")
        ref = (
            recipient_from_proto(request.recipient)
            if which == "recipient"
            else getattr(request, which)
            if which is not None
            else None
        )
        return await awards.list_awards(
            self._db,
            self._replies,
            who.org_id,
            which,
            ref,
            revoked=request.revoked if request.HasField("revoked") else None,
            expired=request.expired if request.HasField("expired") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    # --- revoking ------------------------------------------------------------------------------

    @wire.serialized(pb.Award)
    async def RevokeAward(
        self, request: pb.RevokeAwardRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Revokes an award with a reason; it stays readable, marked revoked. Its Credly
        template counts one badge fewer and its CrowdTwist caps give its slot back."""
        who = current_principal()
        key = request_key(request, who.org_id)
        if not request.id:
            raise InvalidArgument("id", "is required")
        now = dt.datetime.now(dt.UTC)
        return await awards.revoke_award(
            self._db, self._replies, key, who.org_id, request.id, request.reason, now
        )
