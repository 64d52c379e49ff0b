"""badges.v1.BadgeClassService: Badgr v2 badge classes and their claim codes."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import badge_class_pb2 as pb
from badge_service.domain.badge_classes import (
    BADGE_CLASS,
    ENTITY_TYPE_BADGE_CLASS,
    Alignment,
    BadgeClass,
    BadgeClassPreferences,
    Expires,
    ExpiresDuration,
    Ob3Properties,
    PropertyValue,
)
from badge_service.domain.claim_codes import ClaimCode
from badge_service.domain.issuers import ISSUER
from badge_service.domain.lookups import Key, key_of_id_or_entity_id
from badge_service.domain.openbadges import (
    BADGE_CLASSES_PATH,
    ISSUERS_PATH,
    open_badge_id,
    open_badges_badge_class,
)
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import dict_to_struct, from_ts, merge_update, stored_size, ts
from badge_service.rpc.issuers import (
    base_url_of,
    enum_of,
    lookup_key,
    resource_key,
    struct_of,
    wants_open_badges,
)
from badge_service.rpc.request_ids import request_key
from badge_service.service import badge_classes
from badge_service.service.db import Database

MUTABLE = frozenset(
    {
        "name",
        "image",
        "description",
        "achievement_type",
        "criteria_url",
        "criteria_narrative",
        "alignments",
        "tags",
        "expires",
        "extensions",
        "source",
        "source_url",
        "image_path",
        "original_json",
        "archived",
        "archival_note",
        "ob3_properties",
        "preferences",
    }
)

_DURATIONS = {
    pb.EXPIRES_DURATION_DAYS: ExpiresDuration.DAYS,
    pb.EXPIRES_DURATION_WEEKS: ExpiresDuration.WEEKS,
    pb.EXPIRES_DURATION_MONTHS: ExpiresDuration.MONTHS,
    pb.EXPIRES_DURATION_YEARS: ExpiresDuration.YEARS,
}
_DURATIONS_BACK = {v: k for k, v in _DURATIONS.items()}


def from_proto(msg: pb.BadgeClass, prefix: str) -> BadgeClass:
    """The domain badge class of a request message (unchecked; the issuer is resolved by the
    caller)."""
    prefs = msg.preferences
    return BadgeClass(
        name=msg.name,
        description=msg.description,
        image=msg.image,
        achievement_type=msg.achievement_type,
        criteria_url=msg.criteria_url,
        criteria_narrative=msg.criteria_narrative,
        alignments=[
            Alignment(
                a.target_name,
                a.target_url,
                a.target_description,
                a.target_framework,
                a.target_code,
                a.display_as_skill,
            )
            for a in msg.alignments
        ],
        tags=list(msg.tags),
        expires=Expires(
            msg.expires.amount,
            enum_of(_DURATIONS, msg.expires.duration, f"{prefix}.expires.duration"),
        ),
        extensions=struct_of(msg.extensions, f"{prefix}.extensions"),
        source=msg.source,
        source_url=msg.source_url,
        image_path=msg.image_path,
        original_json=msg.original_json,
        archived=msg.archived,
        archival_note=msg.archival_note,
        ob3_properties=Ob3Properties(
            msg.ob3_properties.credit_hours,
            msg.ob3_properties.field_of_study,
            msg.ob3_properties.human_code,
            msg.ob3_properties.specialization,
        ),
        preferences=BadgeClassPreferences(
            include_on_public_pages=prefs.include_on_public_pages
            if prefs.HasField("include_on_public_pages")
            else True,
            custom_property_values=[
                PropertyValue(
                    v.property_id,
                    v.string_value,
                    v.double_value if v.HasField("double_value") else None,
                    list(v.array_value),
                    v.public,
                )
                for v in prefs.custom_property_values
            ],
            enabled_print_cert_template_ids=list(prefs.enabled_print_cert_template_ids),
            default_print_cert_template_id=prefs.default_print_cert_template_id,
        ),
    )


def to_proto(b: BadgeClass, base_url: str) -> pb.BadgeClass:
    """The message of a stored badge class."""
    p = b.preferences
    return pb.BadgeClass(
        id=b.id,
        entity_type=ENTITY_TYPE_BADGE_CLASS,
        entity_id=b.entity_id,
        open_badge_id=open_badge_id(base_url, BADGE_CLASSES_PATH, b.entity_id),
        source_url=b.source_url,
        original_json=b.original_json,
        created_at=ts(b.created_at),
        created_by=b.created_by,
        issuer=b.issuer_entity_id,
        issuer_open_badge_id=open_badge_id(base_url, ISSUERS_PATH, b.issuer_entity_id),
        name=b.name,
        image=b.image,
        description=b.description,
        achievement_type=b.achievement_type,
        criteria_url=b.criteria_url,
        criteria_narrative=b.criteria_narrative,
        alignments=[
            pb.Alignment(
                target_name=a.target_name,
                target_url=a.target_url,
                target_description=a.target_description,
                target_framework=a.target_framework,
                target_code=a.target_code,
                display_as_skill=a.display_as_skill,
            )
            for a in b.alignments
        ],
        tags=b.tags,
        expires=pb.Expires(
            amount=b.expires.amount,
            duration=_DURATIONS_BACK[b.expires.duration] if b.expires.duration else 0,  # type: ignore[arg-type]
        ),
        extensions=dict_to_struct(b.extensions),
        source=b.source,
        image_path=b.image_path,
        archived=b.archived,
        archived_date=ts(b.archived_date),
        archival_note=b.archival_note,
        ob3_properties=pb.Ob3Properties(
            credit_hours=b.ob3_properties.credit_hours,
            field_of_study=b.ob3_properties.field_of_study,
            human_code=b.ob3_properties.human_code,
            specialization=b.ob3_properties.specialization,
        ),
        preferences=pb.BadgeClassPreferences(
            include_on_public_pages=p.include_on_public_pages,
            custom_property_values=[
                pb.CustomPropertyValue(
                    property_id=v.property_id,
                    string_value=v.string_value,
                    double_value=v.double_value,
                    array_value=v.array_value,
                    public=v.public,
                )
                for v in p.custom_property_values
            ],
            enabled_print_cert_template_ids=p.enabled_print_cert_template_ids,
            default_print_cert_template_id=p.default_print_cert_template_id,
        ),
        updated_at=ts(b.updated_at),
    )


def code_to_proto(c: ClaimCode, class_entity_id: str) -> pb.ClaimCode:
    """The message of a stored claim code."""
    return pb.ClaimCode(
        code=c.code,
        badge_class=class_entity_id,
        label=c.label,
        use_limit=c.use_limit,
        uses_remaining=c.uses_remaining,
        expires_at=ts(c.expires_at),
        created_at=ts(c.created_at),
    )


class BadgeClassServicer:
    """badges.v1.BadgeClassService: Badgr badge classes of the caller's organisation, and
    their claim codes (registered with ``wire.add_servicer``: the creates answer with their
    replies serialized, which is what a retry with the request id gets)."""

    def __init__(self, db: Database, public_base_url: str) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)

    def _key(self, request: pb.GetBadgeClassRequest | pb.DeleteBadgeClassRequest) -> Key:
        return lookup_key(
            request,
            "badge_class_open_badge_id_base64",
            base_url=self._base,
            kind=BADGE_CLASSES_PATH,
            resource=BADGE_CLASS,
        )

    def _measure(self, bc: BadgeClass) -> int:
        return stored_size(to_proto(bc, self._base))

    def _encode(self, bc: BadgeClass) -> bytes:
        return to_proto(bc, self._base).SerializeToString()

    async def ListBadgeClasses(
        self, request: pb.ListBadgeClassesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBadgeClassesResponse:
        """Lists badge classes oldest first, by issuer and archived, with keyset paging."""
        page = await badge_classes.list_badge_classes(
            self._db,
            current_principal().org_id,
            request.page_size,
            request.page_token,
            issuer=request.issuer,
            archived=request.archived if request.HasField("archived") else None,
        )
        return pb.ListBadgeClassesResponse(
            badge_classes=[to_proto(b, self._base) for b in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def GetBadgeClass(
        self, request: pb.GetBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeClass:
        """Returns one badge class, with its Open Badges 2.0 BadgeClass when asked."""
        who = current_principal()
        key = self._key(request)
        ob2 = wants_open_badges(request.view)
        bc = await badge_classes.get_badge_class(self._db, who.org_id, key)
        out = to_proto(bc, self._base)
        if ob2:
            out.open_badge.CopyFrom(dict_to_struct(open_badges_badge_class(bc, self._base)))
        return out

    @wire.serialized(pb.BadgeClass)
    async def CreateBadgeClass(
        self, request: pb.CreateBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates a badge class of one of the caller's issuers."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        issuer_key = key_of_id_or_entity_id(
            request.badge_class.issuer, "badge_class.issuer", ISSUER
        )
        bc = from_proto(request.badge_class, "badge_class")
        return await badge_classes.create_badge_class(
            self._db,
            request_id,
            who.org_id,
            who.key_id,
            issuer_key,
            bc,
            self._measure,
            self._encode,
        )

    async def UpdateBadgeClass(
        self, request: pb.UpdateBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeClass:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        msg = request.badge_class
        key = resource_key(msg.id, msg.entity_id, "badge_class", BADGE_CLASS)

        def merge(existing: BadgeClass) -> BadgeClass:
            merged = merge_update(
                to_proto(existing, self._base),
                msg,
                request.update_mask,
                prefix="badge_class",
                mutable=MUTABLE,
            )
            return from_proto(merged, "badge_class")

        bc = await badge_classes.update_badge_class(self._db, who.org_id, key, merge, self._measure)
        return to_proto(bc, self._base)

    async def DeleteBadgeClass(
        self, request: pb.DeleteBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a badge class with its claim codes; an awarded one only with cascade."""
        who = current_principal()
        key = self._key(request)
        await badge_classes.delete_badge_class(self._db, who.org_id, key, cascade=request.cascade)
        return empty_pb2.Empty()

    @wire.serialized(pb.CreateClaimCodesResponse)
    async def CreateClaimCodes(
        self, request: pb.CreateClaimCodesRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates one claim code, or a batch, for a badge class that is not archived."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        key = badge_classes.class_key(request.id_or_entity_id)
        return await badge_classes.create_claim_codes(
            self._db,
            request_id,
            who.org_id,
            key,
            request.count,
            request.label,
            request.use_limit if request.HasField("use_limit") else None,
            from_ts(request, "expires_at", "expires_at"),
            _encode_codes,
        )

    async def ListClaimCodes(
        self, request: pb.ListClaimCodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListClaimCodesResponse:
        """Lists the claim codes of a badge class, oldest first, with keyset paging."""
        who = current_principal()
        key = badge_classes.class_key(request.id_or_entity_id)
        page, class_entity_id = await badge_classes.list_claim_codes(
            self._db, who.org_id, key, request.page_size, request.page_token
        )
        return pb.ListClaimCodesResponse(
            claim_codes=[code_to_proto(c, class_entity_id) for c in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def DeleteClaimCode(
        self, request: pb.DeleteClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes one claim code of a badge class."""
        who = current_principal()
        key = badge_classes.class_key(request.id_or_entity_id)
        await badge_classes.delete_claim_code(self._db, who.org_id, key, request.claim_code)
        return empty_pb2.Empty()


def _encode_codes(codes: list[ClaimCode], class_entity_id: str) -> bytes:
    reply = pb.CreateClaimCodesResponse(
        claim_codes=[code_to_proto(c, class_entity_id) for c in codes]
    )
    return reply.SerializeToString()
