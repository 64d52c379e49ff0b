"""badges.v1.BadgeClassService: Badgr v2 badge classes and their claim codes."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import badge_class_pb2 as pb
from badge_service.api.badges.v1 import badge_class_pb2_grpc as pb_grpc
from badge_service.domain import (
    badge_classes,
    claim_codes,
    ids,
    issuers,
    limits,
    lookups,
    openbadges,
    paging,
)
from badge_service.domain.badge_classes import (
    Alignment,
    BadgeClass,
    BadgeClassFilter,
    BadgeClassPreferences,
    Expires,
    ExpiresDuration,
    Ob3Properties,
    PropertyValue,
)
from badge_service.domain.claim_codes import ClaimCode
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.ids import new_hex_id
from badge_service.domain.lookups import Key
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import (
    check_stored_size,
    dict_to_struct,
    from_ts,
    merge_update,
    ts,
)
from badge_service.rpc.issuers import (
    after_hex_id,
    base_url_of,
    enum_of,
    lookup_key,
    resource_key,
    struct_of,
    wants_open_badges,
)
from badge_service.rpc.request_ids import request_key
from badge_service.service import request_ids
from badge_service.store import badgr as store
from badge_service.store.db import Database

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
        entity_type=badge_classes.ENTITY_TYPE_BADGE_CLASS,
        entity_id=b.entity_id,
        open_badge_id=openbadges.open_badge_id(
            base_url, openbadges.BADGE_CLASSES_PATH, b.entity_id
        ),
        source_url=b.source_url,
        original_json=b.original_json,
        created_at=ts(b.created_at),
        created_by=b.created_by,
        issuer=b.issuer_entity_id,
        issuer_open_badge_id=openbadges.open_badge_id(
            base_url, openbadges.ISSUERS_PATH, b.issuer_entity_id
        ),
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


def _class_key(value: str) -> Key:
    return lookups.key_of_id_or_entity_id(value, "id_or_entity_id", badge_classes.BADGE_CLASS)


class BadgeClassServicer(pb_grpc.BadgeClassServiceServicer):
    """Badgr badge classes of the caller's organisation, and their claim codes."""

    def __init__(self, db: Database, public_base_url: str) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)

    def _key(self, request: pb.GetBadgeClassRequest | pb.DeleteBadgeClassRequest) -> Key:
        return lookup_key(
            request,
            "badge_class_open_badge_id_base64",
            base_url=self._base,
            kind=openbadges.BADGE_CLASSES_PATH,
            resource=badge_classes.BADGE_CLASS,
        )

    async def ListBadgeClasses(
        self, request: pb.ListBadgeClassesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBadgeClassesResponse:
        """Lists badge classes oldest first, by issuer and archived, with keyset paging."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size,
            default=limits.BADGE_CLASSES_PAGE,
            maximum=limits.BADGE_CLASSES_PAGE,
        )
        issuer_key = (
            lookups.key_of_id_or_entity_id(request.issuer, "issuer", issuers.ISSUER)
            if request.issuer
            else None
        )
        archived = request.archived if request.HasField("archived") else None
        async with self._db.read() as conn:
            issuer_id = None
            if issuer_key is not None:
                issuer_id = (await store.get_issuer(conn, who.org_id, issuer_key)).id
            flt = BadgeClassFilter(issuer_id=issuer_id, archived=archived)
            fingerprint = paging.filter_fingerprint("badgr_badge_classes", flt)
            after = after_hex_id(request.page_token, fingerprint)
            total = await store.count_badge_classes(conn, who.org_id, flt)
            rows = await store.list_badge_classes(
                conn, who.org_id, flt, limit=size + 1, after=after
            )
        rows, token = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
        return pb.ListBadgeClassesResponse(
            badge_classes=[to_proto(b, self._base) for b in rows],
            next_page_token=token,
            total_size=total,
        )

    async def GetBadgeClass(
        self, request: pb.GetBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeClass:
        """Returns one badge class, with its Open Badges 2.0 BadgeClass when asked."""
        who = current_principal()
        key = self._key(request)
        ob2 = wants_open_badges(request.view)
        async with self._db.read() as conn:
            bc = await store.get_badge_class(conn, who.org_id, key)
        out = to_proto(bc, self._base)
        if ob2:
            out.open_badge.CopyFrom(
                dict_to_struct(openbadges.open_badges_badge_class(bc, self._base))
            )
        return out

    async def CreateBadgeClass(
        self, request: pb.CreateBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeClass:
        """Creates a badge class of one of the caller's issuers."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        issuer_key = lookups.key_of_id_or_entity_id(
            request.badge_class.issuer, "badge_class.issuer", issuers.ISSUER
        )
        bc = from_proto(request.badge_class, "badge_class")
        now = dt.datetime.now(dt.UTC)
        async with self._db.write() as conn:
            first = await request_ids.claim(conn, request_id, now)
            if first is not None:
                return pb.BadgeClass.FromString(first)
            issuer = await store.get_issuer(conn, who.org_id, issuer_key)
            bc = badge_classes.validate_badge_class(
                bc, definitions=issuer.preferences.custom_property_definitions
            )
            bc.id, bc.entity_id = new_hex_id(), ids.new_entity_id()
            bc.org_id, bc.created_by = who.org_id, str(who.key_id)
            bc.issuer_id, bc.issuer_entity_id = issuer.id, issuer.entity_id
            bc.created_at = bc.updated_at = now
            badge_classes.apply_archival(bc, None, now)
            out = to_proto(bc, self._base)
            check_stored_size(out, limits.BADGE_CLASS_BYTES, "badge_class")
            await store.insert_badge_class(conn, bc)
            await request_ids.complete(conn, request_id, out.SerializeToString())
        return out

    async def UpdateBadgeClass(
        self, request: pb.UpdateBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeClass:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        msg = request.badge_class
        key = resource_key(msg.id, msg.entity_id, "badge_class", badge_classes.BADGE_CLASS)
        now = dt.datetime.now(dt.UTC)
        async with self._db.write() as conn:
            existing = await store.get_badge_class(conn, who.org_id, key)
            merged = merge_update(
                to_proto(existing, self._base),
                msg,
                request.update_mask,
                prefix="badge_class",
                mutable=MUTABLE,
            )
            issuer = await store.get_issuer(conn, who.org_id, Key(False, existing.issuer_id))
            bc = badge_classes.validate_badge_class(
                from_proto(merged, "badge_class"),
                definitions=issuer.preferences.custom_property_definitions,
            )
            bc.id, bc.entity_id, bc.org_id = existing.id, existing.entity_id, existing.org_id
            bc.issuer_id, bc.issuer_entity_id = existing.issuer_id, existing.issuer_entity_id
            bc.created_by, bc.created_at = existing.created_by, existing.created_at
            bc.updated_at = now
            badge_classes.apply_archival(bc, existing, now)
            out = to_proto(bc, self._base)
            check_stored_size(out, limits.BADGE_CLASS_BYTES, "badge_class")
            await store.update_badge_class(conn, bc)
        return out

    async def DeleteBadgeClass(
        self, request: pb.DeleteBadgeClassRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a badge class with its claim codes; an awarded one only with cascade."""
        who = current_principal()
        key = self._key(request)
        async with self._db.write() as conn:
            await store.delete_badge_class(conn, who.org_id, key, cascade=request.cascade)
        return empty_pb2.Empty()

    async def CreateClaimCodes(
        self, request: pb.CreateClaimCodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateClaimCodesResponse:
        """Creates one claim code, or a batch, for a badge class that is not archived."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        key = _class_key(request.id_or_entity_id)
        now = dt.datetime.now(dt.UTC)
        batch = claim_codes.validate_claim_code_batch(
            request.count,
            request.label,
            request.use_limit if request.HasField("use_limit") else None,
            from_ts(request, "expires_at", "expires_at"),
            now=now,
        )
        async with self._db.write() as conn:
            first = await request_ids.claim(conn, request_id, now)
            if first is not None:
                return pb.CreateClaimCodesResponse.FromString(first)
            bc = await store.get_badge_class(conn, who.org_id, key)
            if bc.archived:
                raise badge_classes.badge_class_archived()
            codes = [
                ClaimCode(
                    code=claim_codes.new_claim_code(),
                    badge_class_id=bc.id,
                    label=batch.label,
                    use_limit=batch.use_limit,
                    uses_remaining=batch.use_limit,
                    expires_at=batch.expires_at,
                    created_at=now,
                    org_id=who.org_id,
                )
                for _ in range(batch.count)
            ]
            await store.insert_claim_codes(conn, codes, claim_codes.new_claim_code)
            reply = pb.CreateClaimCodesResponse(
                claim_codes=[code_to_proto(c, bc.entity_id) for c in codes]
            )
            await request_ids.complete(conn, request_id, reply.SerializeToString())
        return reply

    async def ListClaimCodes(
        self, request: pb.ListClaimCodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListClaimCodesResponse:
        """Lists the claim codes of a badge class, oldest first, with keyset paging."""
        who = current_principal()
        key = _class_key(request.id_or_entity_id)
        size = paging.resolve_page_size(
            request.page_size,
            default=claim_codes.CLAIM_CODES_DEFAULT_PAGE_SIZE,
            maximum=limits.CLAIM_CODES_PAGE,
        )
        async with self._db.read() as conn:
            bc = await store.get_badge_class(conn, who.org_id, key)
            fingerprint = paging.filter_fingerprint("badgr_claim_codes", bc.id)
            after: int | None = None
            if request.page_token:
                token = paging.decode_page_token(request.page_token, fingerprint)
                # bool is an int too; the range keeps the value within BIGINT.
                if type(token) is not int or not 0 <= token < 2**63:
                    raise InvalidArgument("page_token", "is not a token this service issued")
                after = token
            total = await store.count_claim_codes(conn, who.org_id, bc.id)
            rows = await store.list_claim_codes(
                conn, who.org_id, bc.id, limit=size + 1, after=after
            )
        rows, token_out = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
        return pb.ListClaimCodesResponse(
            claim_codes=[code_to_proto(c, bc.entity_id) for c in rows],
            next_page_token=token_out,
            total_size=total,
        )

    async def DeleteClaimCode(
        self, request: pb.DeleteClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes one claim code of a badge class."""
        who = current_principal()
        key = _class_key(request.id_or_entity_id)
        code = claim_codes.claim_code_of(request.claim_code, "claim_code")
        async with self._db.write() as conn:
            bc = await store.get_badge_class(conn, who.org_id, key)
            await store.delete_claim_code(conn, who.org_id, bc.id, code)
        return empty_pb2.Empty()
