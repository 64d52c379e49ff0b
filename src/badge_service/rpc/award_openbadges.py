"""AwardService's Open Badges 2.0 RPCs: BakeAward and VerifyAward (mixed into AwardServicer,
which sets ``_db`` and ``_base``); the use cases are ``service.award_openbadges``."""

from __future__ import annotations

import grpc

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain.awards import AwardState
from badge_service.domain.errors import InvalidArgument
from badge_service.rpc.auth import current_principal
from badge_service.rpc.award_messages import award_to_proto
from badge_service.service import Database, award_openbadges

_STATUS = {
    AwardState.ACTIVE: pb.VERIFICATION_STATUS_VALID,
    AwardState.REVOKED: pb.VERIFICATION_STATUS_REVOKED,
    AwardState.EXPIRED: pb.VERIFICATION_STATUS_EXPIRED,
}


class AwardOpenBadgesMixin:
    """BakeAward and VerifyAward of AwardService."""

    _db: Database
    _base: str

    async def BakeAward(
        self, request: pb.BakeAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.BakedImage:
        """Returns the class image of a badge class award baked with its assertion."""
        who = current_principal()
        if not request.id:
            raise InvalidArgument("id", "is required")
        if request.format not in pb.BakedImageFormat.values():
            raise InvalidArgument("format", f"{request.format} is not a known value")
        baked = await award_openbadges.bake_award(
            self._db,
            who.org_id,
            request.id,
            svg=request.format == pb.BAKED_IMAGE_FORMAT_SVG,
            base_url=self._base,
        )
        return pb.BakedImage(data=baked.data, content_type=baked.content_type)

    async def VerifyAward(
        self, request: pb.VerifyAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyAwardResponse:
        """Verifies an assertion of the caller's org, named by id or hosted URL or carried
        in a baked image: VALID, REVOKED, EXPIRED, or INVALID (unknown, or a baked document
        that does not match the award it names)."""
        who = current_principal()
        which = request.WhichOneof("subject")
        verdict = await award_openbadges.verify_award(
            self._db,
            who.org_id,
            assertion_id=request.assertion_id if which == "assertion_id" else None,
            baked_image=request.baked_image if which == "baked_image" else None,
            base_url=self._base,
        )
        status = pb.VERIFICATION_STATUS_INVALID if verdict.state is None else _STATUS[verdict.state]
        if verdict.award is None:
            return pb.VerifyAwardResponse(status=status, reason=verdict.reason)
        award = award_to_proto(verdict.award, self._base, verdict.class_entity_id, verdict.now)
        return pb.VerifyAwardResponse(status=status, reason=verdict.reason, award=award)
