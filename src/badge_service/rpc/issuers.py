"""badges.v1.IssuerService: Badgr v2 issuers.

Also the pieces BadgeClassService shares: the lookup oneof (id or entityId, base64
openBadgeId, ref), the view enum, and struct conversion that refuses what JSON cannot hold.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, struct_pb2
from google.protobuf.message import Message

from badge_service.api.badges.v1 import issuer_pb2 as pb
from badge_service.api.badges.v1 import issuer_pb2_grpc as pb_grpc
from badge_service.domain import fields, ids, issuers, limits, lookups, openbadges, paging
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.ids import is_hex_id, new_hex_id
from badge_service.domain.issuers import (
    Issuer,
    IssuerPreferences,
    PropertyChoice,
    PropertyDefinition,
    PropertyTarget,
    PropertyType,
    SkillLinking,
    StaffMember,
    StaffRole,
    UserEmail,
    UserProfile,
)
from badge_service.domain.lookups import Key
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import (
    check_stored_size,
    dict_to_struct,
    merge_update,
    struct_to_dict,
    ts,
)
from badge_service.rpc.request_ids import request_key
from badge_service.service import request_ids
from badge_service.store import badgr as store
from badge_service.store.db import Database

MUTABLE = frozenset(
    {
        "name",
        "image",
        "email",
        "description",
        "url",
        "staff",
        "badgr_domain",
        "extensions",
        "source",
        "source_url",
        "image_path",
        "original_json",
        "badge_skill_linking_preferences",
        "preferences",
    }
)

_ROLES = {
    pb.ISSUER_STAFF_ROLE_OWNER: StaffRole.OWNER,
    pb.ISSUER_STAFF_ROLE_EDITOR: StaffRole.EDITOR,
    pb.ISSUER_STAFF_ROLE_STAFF: StaffRole.STAFF,
}
_PROPERTY_TYPES = {
    pb.CUSTOM_PROPERTY_TYPE_STRING: PropertyType.STRING,
    pb.CUSTOM_PROPERTY_TYPE_STRING_CHOICE: PropertyType.STRING_CHOICE,
    pb.CUSTOM_PROPERTY_TYPE_STRING_MULTI_CHOICE: PropertyType.STRING_MULTI_CHOICE,
    pb.CUSTOM_PROPERTY_TYPE_DOUBLE: PropertyType.DOUBLE,
}
_TARGETS = {
    pb.CUSTOM_PROPERTY_TARGET_BADGE_CLASS: PropertyTarget.BADGE_CLASS,
    pb.CUSTOM_PROPERTY_TARGET_ASSERTION: PropertyTarget.ASSERTION,
}
_ROLES_BACK = {v: k for k, v in _ROLES.items()}
_PROPERTY_TYPES_BACK = {v: k for k, v in _PROPERTY_TYPES.items()}
_TARGETS_BACK = {v: k for k, v in _TARGETS.items()}

E = TypeVar("E", bound=Enum)


def enum_of(table: dict[Any, E], number: int, where: str) -> E | None:
    """The domain enum of a proto enum number: None for 0, INVALID_ARGUMENT when unknown."""
    if number == 0:
        return None
    found = table.get(number)
    if found is None:
        raise InvalidArgument(where, f"{number} is not a known value")
    return found


def wants_open_badges(view: int) -> bool:
    """Whether a Get asked for the Open Badges 2.0 document; INVALID_ARGUMENT when the view
    is not a known value."""
    if view not in pb.BadgrView.values():
        raise InvalidArgument("view", f"{view} is not a known value")
    return view == pb.BADGR_VIEW_OPEN_BADGES_V2


def struct_of(msg: struct_pb2.Struct, where: str) -> dict[str, Any]:
    """A Struct as plain JSON values, checked for storage (no NUL, finite numbers, size)."""
    value = struct_to_dict(msg, where, limits.BADGR_EXTENSIONS_BYTES)
    fields.check_json_object(value, where, limits.BADGR_EXTENSIONS_BYTES)
    return value


def lookup_key(
    request: Message, base64_field: str, *, base_url: str, kind: str, resource: str
) -> Key:
    """The key of a Get/Delete request's `lookup` oneof: id_or_entity_id, the base64 of an
    openBadgeId (``base64_field``) or ref."""
    which = request.WhichOneof("lookup")
    if which is None:
        raise InvalidArgument(
            "id_or_entity_id", f"one of id_or_entity_id, {base64_field} or ref is required"
        )
    value: str = getattr(request, which)
    if which == "id_or_entity_id":
        return lookups.key_of_id_or_entity_id(value, which, resource)
    if which == base64_field:
        return lookups.key_of_open_badge_id_base64(
            value, which, base_url=base_url, kind=kind, resource=resource
        )
    return lookups.key_of_ref(value, which, base_url=base_url, kind=kind, resource=resource)


def resource_key(id_value: str, entity_id: str, prefix: str, resource: str) -> Key:
    """The key of an Update request: the resource's `id`, or its `entity_id` when id is
    empty."""
    if id_value:
        return lookups.key_of_id_or_entity_id(id_value, f"{prefix}.id", resource)
    if entity_id:
        return lookups.key_of_id_or_entity_id(entity_id, f"{prefix}.entity_id", resource)
    raise InvalidArgument(f"{prefix}.id", "is required (or entity_id)")


def after_hex_id(token: str, fingerprint: str) -> str | None:
    """The 24-hex id a page token resumes after (None without a token)."""
    if not token:
        return None
    after = paging.decode_page_token(token, fingerprint)
    if not isinstance(after, str) or not is_hex_id(after):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return after


def base_url_of(value: str) -> str:
    """The configured public base URL, normalised; refuses to start with a bad one."""
    try:
        return openbadges.normalize_base_url(value)
    except ValueError as exc:
        raise SystemExit(f"error: public base URL: {exc}") from None


def organization_id(org_id: int) -> str:
    """Badgr's 24-hex organizationId for one of our organisations."""
    return f"{org_id:024x}"


def from_proto(msg: pb.Issuer, prefix: str) -> Issuer:
    """The domain issuer of a request message (unchecked, but enum numbers known)."""
    staff = []
    for i, s in enumerate(msg.staff):
        profile = None
        if s.HasField("user_profile"):
            p = s.user_profile
            profile = UserProfile(
                entity_id=p.entity_id,
                first_name=p.first_name,
                last_name=p.last_name,
                emails=[UserEmail(e.email, e.verified, e.primary) for e in p.emails],
                url=list(p.url),
                telephone=list(p.telephone),
                badgr_domain=p.badgr_domain,
                agreed_terms_version=p.agreed_terms_version,
                marketing_opt_in=p.marketing_opt_in,
                has_password_set=p.has_password_set,
            )
        role = enum_of(_ROLES, s.role, f"{prefix}.staff[{i}].role")
        staff.append(StaffMember(role, s.user, profile))
    defs = []
    where = f"{prefix}.preferences.custom_property_definitions"
    for i, d in enumerate(msg.preferences.custom_property_definitions):
        defs.append(
            PropertyDefinition(
                property_type=enum_of(
                    _PROPERTY_TYPES, d.property_type, f"{where}[{i}].property_type"
                ),
                target_entity_type=enum_of(
                    _TARGETS, d.target_entity_type, f"{where}[{i}].target_entity_type"
                ),
                property_id=d.property_id,
                label=d.label,
                sub_label=d.sub_label,
                public=d.public,
                required=d.required,
                choice_values=[PropertyChoice(c.id, c.label) for c in d.choice_values],
            )
        )
    sl = msg.badge_skill_linking_preferences
    return Issuer(
        name=msg.name,
        email=msg.email,
        url=msg.url,
        image=msg.image,
        description=msg.description,
        staff=staff,
        badgr_domain=msg.badgr_domain,
        extensions=struct_of(msg.extensions, f"{prefix}.extensions"),
        source=msg.source,
        source_url=msg.source_url,
        image_path=msg.image_path,
        original_json=msg.original_json,
        skill_linking=SkillLinking(sl.type, sl.server_uri, sl.indeed_region),
        preferences=IssuerPreferences(
            custom_property_definitions=defs,
            default_print_cert_template_id=msg.preferences.default_print_cert_template_id,
            enabled_print_cert_template_ids=list(msg.preferences.enabled_print_cert_template_ids),
        ),
    )


def to_proto(i: Issuer, base_url: str) -> pb.Issuer:
    """The message of a stored issuer."""
    staff = []
    for s in i.staff:
        assert s.role is not None
        member = pb.IssuerStaff(role=_ROLES_BACK[s.role], user=s.user)
        p = s.user_profile
        if p is not None:
            member.user_profile.CopyFrom(
                pb.BadgeUserProfile(
                    entity_type=issuers.ENTITY_TYPE_USER,
                    entity_id=p.entity_id,
                    first_name=p.first_name,
                    last_name=p.last_name,
                    emails=[
                        pb.UserEmail(email=e.email, verified=e.verified, primary=e.primary)
                        for e in p.emails
                    ],
                    url=p.url,
                    telephone=p.telephone,
                    badgr_domain=p.badgr_domain,
                    agreed_terms_version=p.agreed_terms_version,
                    marketing_opt_in=p.marketing_opt_in,
                    has_password_set=p.has_password_set,
                )
            )
        staff.append(member)
    prefs = i.preferences
    return pb.Issuer(
        id=i.id,
        entity_type=issuers.ENTITY_TYPE_ISSUER,
        entity_id=i.entity_id,
        open_badge_id=openbadges.open_badge_id(base_url, openbadges.ISSUERS_PATH, i.entity_id),
        created_at=ts(i.created_at),
        name=i.name,
        image=i.image,
        email=i.email,
        description=i.description,
        url=i.url,
        staff=staff,
        badgr_domain=i.badgr_domain,
        created_by=i.created_by,
        organization_id=organization_id(i.org_id),
        extensions=dict_to_struct(i.extensions),
        source=i.source,
        source_url=i.source_url,
        image_path=i.image_path,
        original_json=i.original_json,
        badge_skill_linking_preferences=pb.BadgeSkillLinkingPreferences(
            type=i.skill_linking.type,
            server_uri=i.skill_linking.server_uri,
            indeed_region=i.skill_linking.indeed_region,
        ),
        preferences=pb.IssuerPreferences(
            custom_property_definitions=[
                pb.CustomPropertyDefinition(
                    # Stored definitions passed validation, so both enums are set.
                    property_type=_PROPERTY_TYPES_BACK[d.property_type],  # type: ignore[index]
                    target_entity_type=_TARGETS_BACK[d.target_entity_type],  # type: ignore[index]
                    property_id=d.property_id,
                    label=d.label,
                    sub_label=d.sub_label,
                    public=d.public,
                    required=d.required,
                    choice_values=[
                        pb.CustomPropertyChoice(id=c.id, label=c.label) for c in d.choice_values
                    ],
                )
                for d in prefs.custom_property_definitions
            ],
            default_print_cert_template_id=prefs.default_print_cert_template_id,
            enabled_print_cert_template_ids=prefs.enabled_print_cert_template_ids,
        ),
        updated_at=ts(i.updated_at),
    )


class IssuerServicer(pb_grpc.IssuerServiceServicer):
    """Badgr issuers of the caller's organisation."""

    def __init__(self, db: Database, public_base_url: str) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)

    def _key(self, request: pb.GetIssuerRequest | pb.DeleteIssuerRequest) -> Key:
        return lookup_key(
            request,
            "issuer_open_badge_id_base64",
            base_url=self._base,
            kind=openbadges.ISSUERS_PATH,
            resource=issuers.ISSUER,
        )

    async def ListIssuers(
        self, request: pb.ListIssuersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIssuersResponse:
        """Lists issuers oldest first, with keyset paging."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size,
            default=limits.ISSUERS_PAGE,
            maximum=limits.ISSUERS_PAGE,
        )
        fingerprint = paging.filter_fingerprint("badgr_issuers")
        after = after_hex_id(request.page_token, fingerprint)
        async with self._db.read() as conn:
            total = await store.count_issuers(conn, who.org_id)
            rows = await store.list_issuers(conn, who.org_id, limit=size + 1, after=after)
        rows, token = paging.keyset_page(rows, size, fingerprint, lambda r: r.id)
        return pb.ListIssuersResponse(
            issuers=[to_proto(i, self._base) for i in rows],
            next_page_token=token,
            total_size=total,
        )

    async def GetIssuer(
        self, request: pb.GetIssuerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Issuer:
        """Returns one issuer, with its Open Badges 2.0 Profile when asked."""
        who = current_principal()
        key = self._key(request)
        ob2 = wants_open_badges(request.view)
        async with self._db.read() as conn:
            issuer = await store.get_issuer(conn, who.org_id, key)
        out = to_proto(issuer, self._base)
        if ob2:
            out.open_badge.CopyFrom(
                dict_to_struct(openbadges.open_badges_issuer(issuer, self._base))
            )
        return out

    async def CreateIssuer(
        self, request: pb.CreateIssuerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Issuer:
        """Creates an issuer."""
        who = current_principal()
        key = request_key(request, who.org_id)
        issuer = issuers.validate_issuer(from_proto(request.issuer, "issuer"))
        now = dt.datetime.now(dt.UTC)
        issuer.id, issuer.entity_id = new_hex_id(), ids.new_entity_id()
        issuer.org_id, issuer.created_by = who.org_id, str(who.key_id)
        issuer.created_at = issuer.updated_at = now
        out = to_proto(issuer, self._base)
        check_stored_size(out, limits.ISSUER_BYTES, "issuer")
        async with self._db.write() as conn:
            first = await request_ids.claim(conn, key, now)
            if first is not None:
                return pb.Issuer.FromString(first)
            await store.insert_issuer(conn, issuer)
            await request_ids.complete(conn, key, out.SerializeToString())
        return out

    async def UpdateIssuer(
        self, request: pb.UpdateIssuerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Issuer:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        key = resource_key(request.issuer.id, request.issuer.entity_id, "issuer", issuers.ISSUER)
        async with self._db.write() as conn:
            existing = await store.get_issuer(conn, who.org_id, key)
            merged = merge_update(
                to_proto(existing, self._base),
                request.issuer,
                request.update_mask,
                prefix="issuer",
                mutable=MUTABLE,
            )
            issuer = issuers.validate_issuer(from_proto(merged, "issuer"))
            issuer.id, issuer.entity_id, issuer.org_id = (
                existing.id,
                existing.entity_id,
                existing.org_id,
            )
            issuer.created_by, issuer.created_at = existing.created_by, existing.created_at
            issuer.updated_at = dt.datetime.now(dt.UTC)
            out = to_proto(issuer, self._base)
            check_stored_size(out, limits.ISSUER_BYTES, "issuer")
            await store.update_issuer(conn, issuer)
        return out

    async def DeleteIssuer(
        self, request: pb.DeleteIssuerRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes an issuer; with badge classes only when the caller asks to cascade."""
        who = current_principal()
        key = self._key(request)
        async with self._db.write() as conn:
            await store.delete_issuer(conn, who.org_id, key, cascade=request.cascade)
        return empty_pb2.Empty()
