"""badges.v1.BadgeTemplateService: Credly badge templates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from badge_service.domain.badge_templates import (
    DEFAULT_PUBLIC_BASE_URL,
    PREFIX,
    Activity,
    Alignment,
    BadgeTemplate,
    Cost,
    Endorsement,
    ExpiryType,
    Level,
    Owner,
    Recommendation,
    RecommendationType,
    TemplateRef,
    TemplateState,
    TimeToEarn,
    TypeCategory,
    Visibility,
)
from badge_service.domain.errors import InvalidArgument
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import merge_update, stored_size, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service import badge_templates
from badge_service.service.badge_templates import Owners, TemplateView
from badge_service.service.db import Database

# Every writable field of BadgeTemplate (update_mask paths must start with one of these).
MUTABLE = frozenset(
    {
        "name",
        "description",
        "state",
        "public",
        "visibility",
        "allow_duplicate_badges",
        "default_expires_at_date",
        "default_expires_at_type",
        "default_expires_in_days",
        "earn_this_badge_url",
        "enable_earn_this_badge",
        "enable_detail_attribute_visibility",
        "global_activity_url",
        "lock_badge_state",
        "send_expiring_badge_notifications",
        "settings_enable_related_badges",
        "show_badge_lmi",
        "show_lmi_jobs",
        "show_skill_tag_links",
        "vanity_slug",
        "record_to_blockchain",
        "translatable",
        "printing_disabled",
        "variants_allowed",
        "variant_type",
        "variant_name",
        "primary_badge_template_id",
        "available_locales",
        "only_one_skill_required",
        "linkedin_share_default_message",
        "level",
        "time_to_earn",
        "cost",
        "type_category",
        "criteria_url_name",
        "criteria_url",
        "certification",
        "image_url",
        "alignments",
        "recommendations",
        "required_badge_templates",
        "badge_template_activities",
        "skills",
        "endorsements",
        "reporting_tags",
        "collection_ids",
    }
)

E = TypeVar(
    "E",
    TemplateState,
    Visibility,
    ExpiryType,
    Level,
    TimeToEarn,
    Cost,
    TypeCategory,
    RecommendationType,
)

_STATES: dict[int, TemplateState] = {
    pb.BADGE_TEMPLATE_STATE_DRAFT: TemplateState.DRAFT,
    pb.BADGE_TEMPLATE_STATE_ACTIVE: TemplateState.ACTIVE,
    pb.BADGE_TEMPLATE_STATE_ARCHIVED: TemplateState.ARCHIVED,
}
_VISIBILITY: dict[int, Visibility] = {
    pb.BADGE_TEMPLATE_VISIBILITY_PUBLIC: Visibility.PUBLIC,
    pb.BADGE_TEMPLATE_VISIBILITY_PRIVATE: Visibility.PRIVATE,
}
_EXPIRY: dict[int, ExpiryType] = {
    pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE: ExpiryType.DATE,
    pb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION: ExpiryType.DURATION,
}
_LEVEL: dict[int, Level] = {
    pb.BADGE_TEMPLATE_LEVEL_FOUNDATIONAL: Level.FOUNDATIONAL,
    pb.BADGE_TEMPLATE_LEVEL_INTERMEDIATE: Level.INTERMEDIATE,
    pb.BADGE_TEMPLATE_LEVEL_ADVANCED: Level.ADVANCED,
}
_TIME: dict[int, TimeToEarn] = {
    pb.BADGE_TEMPLATE_TIME_TO_EARN_HOURS: TimeToEarn.HOURS,
    pb.BADGE_TEMPLATE_TIME_TO_EARN_DAYS: TimeToEarn.DAYS,
    pb.BADGE_TEMPLATE_TIME_TO_EARN_WEEKS: TimeToEarn.WEEKS,
    pb.BADGE_TEMPLATE_TIME_TO_EARN_MONTHS: TimeToEarn.MONTHS,
    pb.BADGE_TEMPLATE_TIME_TO_EARN_YEARS: TimeToEarn.YEARS,
}
_COST: dict[int, Cost] = {
    pb.BADGE_TEMPLATE_COST_FREE: Cost.FREE,
    pb.BADGE_TEMPLATE_COST_PAID: Cost.PAID,
}
_TYPE: dict[int, TypeCategory] = {
    pb.BADGE_TEMPLATE_TYPE_CATEGORY_LEARNING: TypeCategory.LEARNING,
    pb.BADGE_TEMPLATE_TYPE_CATEGORY_VALIDATION: TypeCategory.VALIDATION,
    pb.BADGE_TEMPLATE_TYPE_CATEGORY_CERTIFICATION: TypeCategory.CERTIFICATION,
    pb.BADGE_TEMPLATE_TYPE_CATEGORY_EXPERIENCE: TypeCategory.EXPERIENCE,
}
_RECOMMENDATION: dict[int, RecommendationType] = {
    pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_INFORMATION: RecommendationType.INFORMATION,
    pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE: RecommendationType.BADGE,
}


def _enum_in(table: Mapping[int, E], number: int, where: str) -> E | None:
    if number == 0:
        return None
    value = table.get(number)
    if value is None:
        raise InvalidArgument(where, f"{number} is not a known value")
    return value


def _enum_out(table: Mapping[int, E], value: E | None) -> int:
    if value is None:
        return 0
    return next(k for k, v in table.items() if v is value)


def from_proto(msg: pb.BadgeTemplate, prefix: str = PREFIX) -> BadgeTemplate:
    """The domain template of a request message: writable fields only, enum numbers checked,
    everything else unchecked (validate_template does that)."""
    p = prefix
    return BadgeTemplate(
        name=msg.name,
        description=msg.description,
        state=_enum_in(_STATES, msg.state, f"{p}.state"),
        public=msg.public if msg.HasField("public") else True,
        visibility=_enum_in(_VISIBILITY, msg.visibility, f"{p}.visibility"),
        allow_duplicate_badges=msg.allow_duplicate_badges,
        default_expires_at_type=_enum_in(
            _EXPIRY, msg.default_expires_at_type, f"{p}.default_expires_at_type"
        ),
        default_expires_at_date=msg.default_expires_at_date,
        default_expires_in_days=msg.default_expires_in_days,
        earn_this_badge_url=msg.earn_this_badge_url,
        enable_earn_this_badge=msg.enable_earn_this_badge,
        enable_detail_attribute_visibility=(
            msg.enable_detail_attribute_visibility
            if msg.HasField("enable_detail_attribute_visibility")
            else True
        ),
        global_activity_url=msg.global_activity_url,
        lock_badge_state=msg.lock_badge_state,
        send_expiring_badge_notifications=msg.send_expiring_badge_notifications,
        settings_enable_related_badges=(
            msg.settings_enable_related_badges
            if msg.HasField("settings_enable_related_badges")
            else True
        ),
        show_badge_lmi=msg.show_badge_lmi,
        show_lmi_jobs=msg.show_lmi_jobs,
        show_skill_tag_links=(
            msg.show_skill_tag_links if msg.HasField("show_skill_tag_links") else True
        ),
        vanity_slug=msg.vanity_slug,
        record_to_blockchain=(
            msg.record_to_blockchain if msg.HasField("record_to_blockchain") else None
        ),
        translatable=msg.translatable,
        printing_disabled=msg.printing_disabled,
        variants_allowed=msg.variants_allowed,
        variant_type=msg.variant_type,
        variant_name=msg.variant_name,
        primary_badge_template_id=msg.primary_badge_template_id,
        available_locales=list(msg.available_locales),
        only_one_skill_required=msg.only_one_skill_required,
        linkedin_share_default_message=msg.linkedin_share_default_message,
        level=_enum_in(_LEVEL, msg.level, f"{p}.level"),
        time_to_earn=_enum_in(_TIME, msg.time_to_earn, f"{p}.time_to_earn"),
        cost=_enum_in(_COST, msg.cost, f"{p}.cost"),
        type_category=_enum_in(_TYPE, msg.type_category, f"{p}.type_category"),
        criteria_url_name=msg.criteria_url_name,
        criteria_url=msg.criteria_url,
        certification=msg.certification,
        image_url=msg.image_url,
        alignments=[Alignment(a.name, a.url, a.description, a.id) for a in msg.alignments],
        recommendations=[
            Recommendation(
                _enum_in(_RECOMMENDATION, r.type, f"{p}.recommendations[{i}].type"),
                r.title,
                r.activity_url,
                r.recommended_badge_template_id,
                r.id,
            )
            for i, r in enumerate(msg.recommendations)
        ],
        required_badge_template_ids=[r.id for r in msg.required_badge_templates],
        activities=[
            Activity(a.title, a.activity_type, a.activity_url, a.required_badge_template_id, a.id)
            for a in msg.badge_template_activities
        ],
        skills=list(msg.skills),
        endorsements=[Endorsement(e.name, e.url, e.description, e.id) for e in msg.endorsements],
        reporting_tags=list(msg.reporting_tags),
        collection_ids=list(msg.collection_ids),
    )


def _ref_proto(
    template_id: str, refs: Mapping[str, TemplateRef], owner: Owner
) -> pb.BadgeTemplateReference:
    ref = refs.get(template_id)
    if ref is None:  # only if it was deleted between two reads of one reply
        return pb.BadgeTemplateReference(id=template_id)
    return _ref_of(ref, owner)


def _ref_of(ref: TemplateRef, owner: Owner) -> pb.BadgeTemplateReference:
    return pb.BadgeTemplateReference(
        id=ref.id,
        name=ref.name,
        vanity_slug=ref.vanity_slug,
        url=owner.template_url(ref.vanity_slug),
        image_url=ref.image_url,
        state=_enum_out(_STATES, ref.state),  # type: ignore[arg-type]
    )


def _ref_name_url(
    template_id: str, refs: Mapping[str, TemplateRef], owner: Owner
) -> tuple[str, str]:
    ref = refs.get(template_id)
    if not template_id or ref is None:
        return "", ""
    return ref.name, owner.template_url(ref.vanity_slug)


def to_proto(
    b: BadgeTemplate,
    owner: Owner,
    refs: Mapping[str, TemplateRef],
    *,
    variants_issued: int = 0,
    single: bool = False,
    recommending: Sequence[TemplateRef] = (),
    criterion_for: Sequence[TemplateRef] = (),
) -> pb.BadgeTemplate:
    """The message of a stored template. ``refs`` names the templates it points at;
    ``single`` marks a reply about this template alone (Get, Create, ...)."""
    recommendations = []
    for r in b.recommendations:
        name, url = _ref_name_url(r.recommended_badge_template_id, refs, owner)
        recommendations.append(
            pb.BadgeTemplateRecommendation(
                id=r.id,
                title=r.title,
                type=_enum_out(_RECOMMENDATION, r.type),  # type: ignore[arg-type]
                activity_url=r.activity_url,
                recommended_badge_template_id=r.recommended_badge_template_id,
                recommended_badge_template_name=name,
                recommended_badge_template_url=url,
            )
        )
    activities = []
    for a in b.activities:
        name, url = _ref_name_url(a.required_badge_template_id, refs, owner)
        activities.append(
            pb.BadgeTemplateActivity(
                id=a.id,
                title=a.title,
                activity_type=a.activity_type,
                activity_url=a.activity_url,
                required_badge_template_id=a.required_badge_template_id,
                required_badge_template_name=name,
                required_badge_template_url=url,
            )
        )
    return pb.BadgeTemplate(
        id=b.id,
        name=b.name,
        description=b.description,
        state=_enum_out(_STATES, b.state),  # type: ignore[arg-type]
        public=b.public,
        visibility=_enum_out(_VISIBILITY, b.visibility),  # type: ignore[arg-type]
        allow_duplicate_badges=b.allow_duplicate_badges,
        default_expires_at=ts(b.default_expires_at),
        default_expires_at_date=b.default_expires_at_date,
        default_expires_at_type=_enum_out(_EXPIRY, b.default_expires_at_type),  # type: ignore[arg-type]
        default_expires_in_days=b.default_expires_in_days,
        earn_this_badge_url=b.earn_this_badge_url,
        enable_earn_this_badge=b.enable_earn_this_badge,
        enable_detail_attribute_visibility=b.enable_detail_attribute_visibility,
        global_activity_url=b.global_activity_url,
        lock_badge_state=b.lock_badge_state,
        badges_count=b.badges_count,
        recipient_type="User",
        send_expiring_badge_notifications=b.send_expiring_badge_notifications,
        settings_enable_related_badges=b.settings_enable_related_badges,
        show_badge_lmi=b.show_badge_lmi,
        show_lmi_jobs=b.show_lmi_jobs,
        show_skill_tag_links=b.show_skill_tag_links,
        vanity_slug=b.vanity_slug,
        record_to_blockchain=b.record_to_blockchain,
        translatable=b.translatable,
        printing_disabled=b.printing_disabled,
        variants_allowed=b.variants_allowed,
        variant_type=b.variant_type,
        variant_name=b.variant_name,
        primary_badge_template_id=b.primary_badge_template_id,
        allow_delete=b.allow_delete,
        allow_archive=b.allow_archive,
        available_locales=b.available_locales,
        only_one_skill_required=b.only_one_skill_required,
        linkedin_share_default_message=b.linkedin_share_default_message,
        level=_enum_out(_LEVEL, b.level),  # type: ignore[arg-type]
        time_to_earn=_enum_out(_TIME, b.time_to_earn),  # type: ignore[arg-type]
        cost=_enum_out(_COST, b.cost),  # type: ignore[arg-type]
        type_category=_enum_out(_TYPE, b.type_category),  # type: ignore[arg-type]
        criteria_url_name=b.criteria_url_name,
        criteria_url=b.criteria_url,
        certification=b.certification,
        state_updated_at=ts(b.state_updated_at),
        created_at=ts(b.created_at),
        updated_at=ts(b.updated_at),
        show_template_settings=single,
        get_issue_count=b.badges_count,
        get_variants_issue_count=variants_issued,
        image=pb.BadgeTemplateImage(id=b.image_id, url=b.image_url) if b.image_url else None,
        image_url=b.image_url,
        url=owner.template_url(b.vanity_slug),
        owner=pb.BadgeTemplateOwner(
            type="Organization",
            id=owner.id,
            name=owner.name,
            enable_blockchain=False,
            url=owner.url,
            vanity_url=owner.vanity_url,
            vanity_slug=owner.slug,
            verified=True,
            viewable=True,
        ),
        alignments=[
            pb.BadgeTemplateAlignment(id=a.id, name=a.name, url=a.url, description=a.description)
            for a in b.alignments
        ],
        recommendations=recommendations,
        required_badge_templates=[
            _ref_proto(rid, refs, owner) for rid in b.required_badge_template_ids
        ],
        badge_template_activities=activities,
        skills=b.skills,
        endorsements=[
            pb.BadgeTemplateEndorsement(id=e.id, name=e.name, url=e.url, description=e.description)
            for e in b.endorsements
        ],
        reporting_tags=b.reporting_tags,
        collection_ids=b.collection_ids,
        recommending_templates=[_ref_of(r, owner) for r in recommending],
        criterion_for=[_ref_of(r, owner) for r in criterion_for],
    )


def _measure(b: BadgeTemplate, owner: Owner) -> int:
    """The size of a template's own fields as stored (references render apart)."""
    return stored_size(to_proto(b, owner, {}))


def _reply(view: TemplateView) -> pb.BadgeTemplate:
    """The message of one template, as every single-template RPC returns it."""
    return to_proto(
        view.template,
        view.owner,
        view.refs,
        variants_issued=view.variants_issued,
        single=True,
        recommending=view.recommending,
        criterion_for=view.criterion_for,
    )


def _encode(view: TemplateView) -> bytes:
    return _reply(view).SerializeToString()


class BadgeTemplateServicer:
    """badges.v1.BadgeTemplateService: badge templates of the caller's organisation
    (registered with ``wire.add_servicer``: CreateBadgeTemplate answers with its reply
    serialized, which is what a retry with its request id gets)."""

    def __init__(self, db: Database, public_base_url: str = DEFAULT_PUBLIC_BASE_URL) -> None:
        self._db = db
        self._owners = Owners(public_base_url)

    async def ListBadgeTemplates(
        self, request: pb.ListBadgeTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBadgeTemplatesResponse:
        """Lists templates by Credly filter and sort, by page number or page token."""
        page = await badge_templates.list_badge_templates(
            self._db,
            current_principal().org_id,
            request.organization_id,
            filter_query=request.filter,
            sort_query=request.sort,
            page=request.page,
            page_size=request.page_size,
            page_token=request.page_token,
            owners=self._owners,
        )
        size = page.size
        metadata = pb.BadgeTemplatePageMetadata(
            total_count=page.total, total_pages=-(-page.total // size), per=size
        )
        if page.numbered is not None:
            metadata.current_page = page.numbered.page
            metadata.previous_page_url = page.previous_page_url
            metadata.next_page_url = page.next_page_url
        metadata.count = len(page.templates)
        owner, refs, issued = page.owner, page.refs, page.variants_issued
        return pb.ListBadgeTemplatesResponse(
            badge_templates=[
                to_proto(b, owner, refs, variants_issued=issued.get(b.id, 0))
                for b in page.templates
            ],
            metadata=metadata,
            next_page_token=page.next_page_token,
            total_size=page.total,
        )

    async def GetBadgeTemplate(
        self, request: pb.GetBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeTemplate:
        """One template with the templates recommending it and those it is a criterion for."""
        view = await badge_templates.get_badge_template(
            self._db,
            current_principal().org_id,
            request.organization_id,
            request.id,
            self._owners,
        )
        return _reply(view)

    @wire.serialized(pb.BadgeTemplate)
    async def CreateBadgeTemplate(
        self, request: pb.CreateBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates a template (draft unless asked for active)."""
        who = current_principal()
        key = request_key(request, who.org_id)
        return await badge_templates.create_badge_template(
            self._db,
            key,
            who.org_id,
            request.organization_id,
            lambda: from_proto(request.badge_template),
            self._owners,
            _measure,
            _encode,
        )

    async def UpdateBadgeTemplate(
        self, request: pb.UpdateBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeTemplate:
        """Updates the masked fields; the result must pass every create rule."""

        def merge(existing: BadgeTemplate, owner: Owner) -> BadgeTemplate:
            merged = merge_update(
                to_proto(existing, owner, {}),
                request.badge_template,
                request.update_mask,
                prefix=PREFIX,
                mutable=MUTABLE,
            )
            return from_proto(merged)

        view = await badge_templates.update_badge_template(
            self._db,
            current_principal().org_id,
            request.organization_id,
            request.badge_template.id,
            merge,
            self._owners,
            _measure,
        )
        return _reply(view)

    async def DeleteBadgeTemplate(
        self, request: pb.DeleteBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a template no badge was issued of and no other template points at."""
        await badge_templates.delete_badge_template(
            self._db,
            current_principal().org_id,
            request.organization_id,
            request.id,
            self._owners,
        )
        return empty_pb2.Empty()

    async def ArchiveBadgeTemplate(
        self, request: pb.ArchiveBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeTemplate:
        """active -> archived."""
        return await self._change_state(request.organization_id, request.id, unarchiving=False)

    async def UnarchiveBadgeTemplate(
        self, request: pb.UnarchiveBadgeTemplateRequest, context: grpc.aio.ServicerContext
    ) -> pb.BadgeTemplate:
        """archived -> active."""
        return await self._change_state(request.organization_id, request.id, unarchiving=True)

    async def _change_state(
        self, organization_id: str, raw_id: str, *, unarchiving: bool
    ) -> pb.BadgeTemplate:
        view = await badge_templates.change_state(
            self._db,
            current_principal().org_id,
            organization_id,
            raw_id,
            self._owners,
            unarchiving=unarchiving,
        )
        return _reply(view)
