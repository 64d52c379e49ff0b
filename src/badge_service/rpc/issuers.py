"""badges.v1.IssuerService: Badgr v2 issuers.

Also the pieces BadgeClassService shares: the lookup oneof (id or entityId, base64
openBadgeId, ref), the view enum, and struct conversion that refuses what JSON cannot hold.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, struct_pb2
from google.protobuf.message import Message

from badge_service.api.badges.v1 import issuer_pb2 as pb
from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.fields import check_json_object
from badge_service.domain.issuers import (
    ENTITY_TYPE_ISSUER,
    ENTITY_TYPE_USER,
    ISSUER,
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
from badge_service.domain.lookups import (
    Key,
    key_of_id_or_entity_id,
    key_of_open_badge_id_base64,
    key_of_ref,
)
from badge_service.domain.openbadges import (
    ISSUERS_PATH,
    normalize_base_url,
    open_badge_id,
    open_badges_issuer,
)
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import dict_to_struct, merge_update, stored_size, struct_to_dict, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service import issuers
from badge_service.service.db import Database

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
    check_json_object(value, where, limits.BADGR_EXTENSIONS_BYTES)
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
        return key_of_id_or_entity_id(value, which, resource)
    if which == base64_field:
        return key_of_open_badge_id_base64(
            value, which, base_url=base_url, kind=kind, resource=resource
        )
    return key_of_ref(value, which, base_url=base_url, kind=kind, resource=resource)


def resource_key(id_value: str, entity_id: str, prefix: str, resource: str) -> Key:
    """The key of an Update request: the resource's `id`, or its `entity_id` when id is
    empty."""
    if id_value:
        return key_of_id_or_entity_id(id_value, f"{prefix}.id", resource)
    if entity_id:
        return key_of_id_or_entity_id(entity_id, f"{prefix}.entity_id", resource)
    raise InvalidArgument(f"{prefix}.id", "is required (or entity_id)")


def base_url_of(value: str) -> str:
    """The configured public base URL, normalised; refuses to start with a bad one."""
    try:
        return normalize_base_url(value)
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
                    entity_type=ENTITY_TYPE_USER,
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
        entity_type=ENTITY_TYPE_ISSUER,
        entity_id=i.entity_id,
        open_badge_id=open_badge_id(base_url, ISSUERS_PATH, i.entity_id),
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


class IssuerServicer:
    """badges.v1.IssuerService: Badgr issuers of the caller's organisation (registered with
    ``wire.add_servicer``: CreateIssuer answers with its reply serialized, which is what a
    retry with its request id gets)."""

    def __init__(self, db: Database, public_base_url: str) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)

    def _key(self, request: pb.GetIssuerRequest | pb.DeleteIssuerRequest) -> Key:
        return lookup_key(
            request,
            "issuer_open_badge_id_base64",
            base_url=self._base,
            kind=ISSUERS_PATH,
            resource=ISSUER,
        )

    def _measure(self, issuer: Issuer) -> int:
        return stored_size(to_proto(issuer, self._base))

    def _encode(self, issuer: Issuer) -> bytes:
        return to_proto(issuer, self._base).SerializeToString()

    async def ListIssuers(
        self, request: pb.ListIssuersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIssuersResponse:
        """Lists issuers oldest first, with keyset paging."""
        page = await issuers.list_issuers(
            self._db, current_principal().org_id, request.page_size, request.page_token
        )
        return pb.ListIssuersResponse(
            issuers=[to_proto(i, self._base) for i in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def GetIssuer(
        self, request: pb.GetIssuerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Issuer:
        """Returns one issuer, with its Open Badges 2.0 Profile when asked."""
        who = current_principal()
        key = self._key(request)
        ob2 = wants_open_badges(request.view)
        issuer = await issuers.get_issuer(self._db, who.org_id, key)
        out = to_proto(issuer, self._base)
        if ob2:
            out.open_badge.CopyFrom(dict_to_struct(open_badges_issuer(issuer, self._base)))
        return out

    @wire.serialized(pb.Issuer)
    async def CreateIssuer(
        self, request: pb.CreateIssuerRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates an issuer."""
        who = current_principal()
        key = request_key(request, who.org_id)
        issuer = from_proto(request.issuer, "issuer")
        return await issuers.create_issuer(
            self._db, key, who.org_id, who.key_id, issuer, self._measure, self._encode
        )

    async def UpdateIssuer(
        self, request: pb.UpdateIssuerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Issuer:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        key = resource_key(request.issuer.id, request.issuer.entity_id, "issuer", ISSUER)

        def merge(existing: Issuer) -> Issuer:
            merged = merge_update(
                to_proto(existing, self._base),
                request.issuer,
                request.update_mask,
                prefix="issuer",
                mutable=MUTABLE,
            )
            return from_proto(merged, "issuer")

        issuer = await issuers.update_issuer(self._db, who.org_id, key, merge, self._measure)
        return to_proto(issuer, self._base)

    async def DeleteIssuer(
        self, request: pb.DeleteIssuerRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes an issuer; with badge classes only when the caller asks to cascade."""
        who = current_principal()
        key = self._key(request)
        await issuers.delete_issuer(self._db, who.org_id, key, cascade=request.cascade)
        return empty_pb2.Empty()
