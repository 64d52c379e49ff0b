"""badges.v1.BadgeTemplateService (Credly badge templates): create/get round trips with every
field, defaults, vanity slugs, every validation rule with its field path, references between
templates (required, recommended, activities, variants) and what Get shows of them, the state
machine (publish, archive, unarchive), updates by field mask, deletes, the organization_id
check, tenancy and roles. Filters, sorts and paging are in test_badge_templates_list.py."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from badge_service.api.badges.v1 import badge_template_pb2_grpc as pb_grpc
from badge_service.domain.badge_templates import BadgeTemplate, TemplateState
from badge_service.domain.errors import Aborted, FailedPrecondition
from badge_service.store import badge_templates as store
from badge_service.store.models import badge_templates
from tests.support import Backend, Client, Org, Over, expect_error, reason_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
BASE_URL = "http://localhost:50051"
DRAFT = pb.BADGE_TEMPLATE_STATE_DRAFT
ACTIVE = pb.BADGE_TEMPLATE_STATE_ACTIVE
ARCHIVED = pb.BADGE_TEMPLATE_STATE_ARCHIVED
INFORMATION = pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_INFORMATION
BADGE = pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE
COLLECTION = "3f1c7c42-3f0b-4d8e-9a55-0b6f4c8b1e01"


def templates(client: Client) -> pb_grpc.BadgeTemplateServiceStub:
    """The BadgeTemplateService stub of a client."""
    return client.stub(pb_grpc.BadgeTemplateServiceStub)


async def create(
    org: Org, template: pb.BadgeTemplate | None = None, **fields: Any
) -> pb.BadgeTemplate:
    """Creates a template in ``org`` (a named one from ``fields`` when none is given)."""
    if template is None:
        template = pb.BadgeTemplate(**({"name": "Badge Template 1"} | fields))
    return await templates(org.admin).CreateBadgeTemplate(
        pb.CreateBadgeTemplateRequest(organization_id=org.uuid, badge_template=template)
    )


async def get(org: Org, template_id: str, client: Client | None = None) -> pb.BadgeTemplate:
    """GetBadgeTemplate as the org's reader (or ``client``)."""
    return await templates(client or org.reader).GetBadgeTemplate(
        pb.GetBadgeTemplateRequest(organization_id=org.uuid, id=template_id)
    )


async def patch(org: Org, template: pb.BadgeTemplate, *paths: str) -> pb.BadgeTemplate:
    """UpdateBadgeTemplate with ``paths`` as the mask (empty: the fields set)."""
    return await templates(org.admin).UpdateBadgeTemplate(
        pb.UpdateBadgeTemplateRequest(
            organization_id=org.uuid,
            badge_template=template,
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        )
    )


async def archive(org: Org, template_id: str) -> pb.BadgeTemplate:
    """ArchiveBadgeTemplate."""
    return await templates(org.admin).ArchiveBadgeTemplate(
        pb.ArchiveBadgeTemplateRequest(organization_id=org.uuid, id=template_id)
    )


async def unarchive(org: Org, template_id: str) -> pb.BadgeTemplate:
    """UnarchiveBadgeTemplate."""
    return await templates(org.admin).UnarchiveBadgeTemplate(
        pb.UnarchiveBadgeTemplateRequest(organization_id=org.uuid, id=template_id)
    )


async def delete(org: Org, template_id: str) -> None:
    """DeleteBadgeTemplate."""
    await templates(org.admin).DeleteBadgeTemplate(
        pb.DeleteBadgeTemplateRequest(organization_id=org.uuid, id=template_id)
    )


async def set_badges_count(backend: Backend, template_id: str, count: int) -> None:
    """Stands in for issued badges (issue 4 keeps badges_count true)."""
    async with backend.db.write() as conn:
        await conn.execute(
            update(badge_templates)
            .where(badge_templates.c.id == template_id)
            .values(badges_count=count)
        )


def full_template(name: str = "Badge Template 1") -> pb.BadgeTemplate:
    """A template with every writable field set (no references), shaped like Credly's sample."""
    return pb.BadgeTemplate(
        name=name,
        description="Dynamically deliver go forward e-tailers",
        state=ACTIVE,
        public=False,
        visibility=pb.BADGE_TEMPLATE_VISIBILITY_PRIVATE,
        allow_duplicate_badges=True,
        default_expires_at_type=pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE,
        default_expires_at_date="2031-12-31",
        earn_this_badge_url="https://www.example.com/earn",
        enable_earn_this_badge=True,
        enable_detail_attribute_visibility=False,
        global_activity_url="https://www.example.com/foo",
        lock_badge_state=True,
        send_expiring_badge_notifications=True,
        settings_enable_related_badges=False,
        show_badge_lmi=True,
        show_lmi_jobs=True,
        show_skill_tag_links=False,
        vanity_slug="badge-template-1",
        record_to_blockchain=False,
        translatable=True,
        printing_disabled=True,
        variants_allowed=True,
        variant_type="Language",
        available_locales=["en", "pt-BR"],
        only_one_skill_required=True,
        linkedin_share_default_message="View my verified achievement from @Org_Name.",
        level=pb.BADGE_TEMPLATE_LEVEL_ADVANCED,
        time_to_earn=pb.BADGE_TEMPLATE_TIME_TO_EARN_WEEKS,
        cost=pb.BADGE_TEMPLATE_COST_PAID,
        type_category=pb.BADGE_TEMPLATE_TYPE_CATEGORY_CERTIFICATION,
        criteria_url_name="Criteria",
        criteria_url="http://www.example.com/criteria",
        certification=True,
        image_url="https://cdn.example.com/path/to/image.png",
        alignments=[
            pb.BadgeTemplateAlignment(
                id="0E2705AC-7DAE-4919-8657-88E1093F9839",
                name="Alignment 2",
                url="http://www.example.com/alignment",
                description="Self-enabling cohesive task-force",
            )
        ],
        recommendations=[
            pb.BadgeTemplateRecommendation(
                title="Recommendation Title",
                type=INFORMATION,
                activity_url="http://www.example.com/recommendation",
            )
        ],
        badge_template_activities=[
            pb.BadgeTemplateActivity(
                title="Kickboxing Activity",
                activity_type="Schedule / Registration",
                activity_url="http://www.example.com/awesomepage",
            )
        ],
        skills=["Skill 1", " Skill 2 ", "Skill 3"],
        endorsements=[
            pb.BadgeTemplateEndorsement(
                name="Endorsing Org", url="https://endorser.example", description="Great"
            )
        ],
        reporting_tags=["expert", "retail"],
        collection_ids=[COLLECTION.upper()],
    )


async def test_create_with_every_field_round_trips(org: Org) -> None:
    before = dt.datetime.now(dt.UTC)
    got = await create(org, full_template())
    assert UUID_RE.match(got.id)
    assert got.name == "Badge Template 1"
    assert got.description == "Dynamically deliver go forward e-tailers"
    assert got.state == ACTIVE
    assert got.HasField("public") and got.public is False
    assert got.visibility == pb.BADGE_TEMPLATE_VISIBILITY_PRIVATE
    assert got.allow_duplicate_badges is True
    assert got.default_expires_at_type == pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE
    assert got.default_expires_at_date == "2031-12-31"
    assert got.default_expires_at.ToJsonString() == "2031-12-31T00:00:00Z"
    assert got.default_expires_in_days == 0
    assert got.earn_this_badge_url == "https://www.example.com/earn"
    assert got.enable_earn_this_badge is True
    assert got.enable_detail_attribute_visibility is False
    assert got.global_activity_url == "https://www.example.com/foo"
    assert got.lock_badge_state is True
    assert got.badges_count == 0 and got.get_issue_count == 0
    assert got.get_variants_issue_count == 0
    assert got.recipient_type == "User"
    assert got.send_expiring_badge_notifications is True
    assert got.settings_enable_related_badges is False
    assert got.show_badge_lmi is True and got.show_lmi_jobs is True
    assert got.show_skill_tag_links is False
    assert got.vanity_slug == "badge-template-1"
    assert got.HasField("record_to_blockchain") and got.record_to_blockchain is False
    assert got.translatable is True and got.printing_disabled is True
    assert got.variants_allowed is True and got.variant_type == "Language"
    assert got.variant_name == "" and got.primary_badge_template_id == ""
    assert got.allow_delete is True and got.allow_archive is True
    assert list(got.available_locales) == ["en", "pt-BR"]
    assert got.only_one_skill_required is True
    assert got.linkedin_share_default_message == "View my verified achievement from @Org_Name."
    assert got.level == pb.BADGE_TEMPLATE_LEVEL_ADVANCED
    assert got.time_to_earn == pb.BADGE_TEMPLATE_TIME_TO_EARN_WEEKS
    assert got.cost == pb.BADGE_TEMPLATE_COST_PAID
    assert got.type_category == pb.BADGE_TEMPLATE_TYPE_CATEGORY_CERTIFICATION
    assert got.criteria_url_name == "Criteria"
    assert got.criteria_url == "http://www.example.com/criteria"
    assert got.certification is True
    # Created active: the state has not changed since.
    assert not got.HasField("state_updated_at")
    created = got.created_at.ToDatetime(tzinfo=dt.UTC)
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.UTC)
    assert got.updated_at == got.created_at
    assert got.show_template_settings is True
    assert UUID_RE.match(got.image.id)
    assert got.image.url == got.image_url == "https://cdn.example.com/path/to/image.png"
    slug = got.owner.vanity_slug
    assert got.owner == pb.BadgeTemplateOwner(
        type="Organization",
        id=org.uuid,
        name=got.owner.name,
        enable_blockchain=False,
        url=f"{BASE_URL}/organizations/{org.uuid}",
        vanity_url=f"{BASE_URL}/org/{slug}",
        vanity_slug=slug,
        verified=True,
        viewable=True,
    )
    assert got.owner.name.startswith("org-") and slug == got.owner.name
    assert got.url == f"{BASE_URL}/org/{slug}/badge/badge-template-1"
    assert list(got.alignments) == [
        pb.BadgeTemplateAlignment(
            id="0e2705ac-7dae-4919-8657-88e1093f9839",
            name="Alignment 2",
            url="http://www.example.com/alignment",
            description="Self-enabling cohesive task-force",
        )
    ]
    [rec] = got.recommendations
    assert UUID_RE.match(rec.id)
    assert rec == pb.BadgeTemplateRecommendation(
        id=rec.id,
        title="Recommendation Title",
        type=INFORMATION,
        activity_url="http://www.example.com/recommendation",
    )
    [activity] = got.badge_template_activities
    assert UUID_RE.match(activity.id)
    assert activity == pb.BadgeTemplateActivity(
        id=activity.id,
        title="Kickboxing Activity",
        activity_type="Schedule / Registration",
        activity_url="http://www.example.com/awesomepage",
    )
    assert list(got.skills) == ["Skill 1", "Skill 2", "Skill 3"]
    [endorsement] = got.endorsements
    assert UUID_RE.match(endorsement.id) and endorsement.name == "Endorsing Org"
    assert list(got.reporting_tags) == ["expert", "retail"]
    assert list(got.collection_ids) == [COLLECTION]
    assert list(got.required_badge_templates) == []
    # Get returns the same template (plus who points at it: nobody).
    fetched = await get(org, got.id)
    assert fetched == got
    assert list(fetched.recommending_templates) == [] and list(fetched.criterion_for) == []


async def test_create_defaults(org: Org) -> None:
    got = await create(org, pb.BadgeTemplate(name="  Archery  "))
    assert got.name == "Archery"
    assert got.state == DRAFT
    assert got.HasField("public") and got.public is True
    assert got.visibility == pb.BADGE_TEMPLATE_VISIBILITY_PUBLIC
    assert got.enable_detail_attribute_visibility is True
    assert got.settings_enable_related_badges is True
    assert got.show_skill_tag_links is True
    assert got.allow_duplicate_badges is False
    assert not got.HasField("record_to_blockchain")
    assert got.default_expires_at_type == pb.BADGE_TEMPLATE_EXPIRY_TYPE_UNSPECIFIED
    assert not got.HasField("default_expires_at")
    assert not got.HasField("image") and got.image_url == ""
    assert got.vanity_slug == "archery"
    assert got.allow_delete is True and got.allow_archive is False
    assert got.level == pb.BADGE_TEMPLATE_LEVEL_UNSPECIFIED


async def test_duration_expiry(org: Org) -> None:
    got = await create(
        org,
        pb.BadgeTemplate(
            name="Yearly",
            default_expires_at_type=pb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
            default_expires_in_days=365,
        ),
    )
    assert got.default_expires_in_days == 365
    assert got.default_expires_at_date == "" and not got.HasField("default_expires_at")


async def test_vanity_slugs(org: Org, other_org: Org) -> None:
    first = await create(org, pb.BadgeTemplate(name="Badge Template 1"))
    second = await create(org, pb.BadgeTemplate(name="Badge  template 1!"))
    third = await create(org, pb.BadgeTemplate(name="Bädge Template 1"))
    symbols = await create(org, pb.BadgeTemplate(name="!!!"))
    assert [first.vanity_slug, second.vanity_slug, third.vanity_slug] == [
        "badge-template-1",
        "badge-template-1-2",
        "badge-template-1-3",
    ]
    assert symbols.vanity_slug == "badge-template"
    # Slugs are per organisation.
    elsewhere = await create(other_org, pb.BadgeTemplate(name="Badge Template 1"))
    assert elsewhere.vanity_slug == "badge-template-1"
    await expect_error(
        create(org, pb.BadgeTemplate(name="Other", vanity_slug="badge-template-1-2")),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="VANITY_SLUG_TAKEN",
    )
    # Renaming onto a taken slug is refused too; nothing changed.
    await expect_error(
        patch(org, pb.BadgeTemplate(id=third.id, vanity_slug="badge-template-1"), "vanity_slug"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="VANITY_SLUG_TAKEN",
    )
    assert (await get(org, third.id)).vanity_slug == "badge-template-1-3"
    # Clearing the slug makes a new one from the (new) name.
    renamed = await patch(
        org, pb.BadgeTemplate(id=third.id, name="Fresh Name"), "name", "vanity_slug"
    )
    assert renamed.vanity_slug == "fresh-name"
    assert renamed.url.endswith("/badge/fresh-name")
    # The freed slug can be taken by another template.
    moved = await patch(
        org, pb.BadgeTemplate(id=symbols.id, vanity_slug="badge-template-1-3"), "vanity_slug"
    )
    assert moved.vanity_slug == "badge-template-1-3"


LONG = "x" * 256


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "badge_template.name"),
        ({"name": "   "}, "badge_template.name"),
        ({"name": LONG}, Over("badge_template.name")),
        ({"name": "a\x00b"}, "badge_template.name"),
        ({"description": "d" * 2001}, Over("badge_template.description")),
        ({"description": "\x00"}, "badge_template.description"),
        ({"state": ARCHIVED}, "badge_template.state"),
        ({"state": 99}, "badge_template.state"),
        ({"visibility": 7}, "badge_template.visibility"),
        ({"level": 99}, "badge_template.level"),
        ({"time_to_earn": -1}, "badge_template.time_to_earn"),
        ({"cost": 3}, "badge_template.cost"),
        ({"type_category": 5}, "badge_template.type_category"),
        ({"default_expires_at_type": 3}, "badge_template.default_expires_at_type"),
        ({"variant_type": LONG}, Over("badge_template.variant_type")),
        ({"criteria_url_name": LONG}, Over("badge_template.criteria_url_name")),
        (
            {"linkedin_share_default_message": "m" * 2001},
            Over("badge_template.linkedin_share_default_message"),
        ),
        ({"earn_this_badge_url": "ftp://x.example"}, "badge_template.earn_this_badge_url"),
        ({"global_activity_url": "https://"}, "badge_template.global_activity_url"),
        ({"criteria_url": "http://a b.example"}, "badge_template.criteria_url"),
        ({"image_url": "/relative/path.png"}, "badge_template.image_url"),
        ({"image_url": "https://x.example/" + "p" * 2048}, Over("badge_template.image_url")),
        ({"enable_earn_this_badge": True}, "badge_template.earn_this_badge_url"),
        (
            {"default_expires_at_type": pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE},
            "badge_template.default_expires_at_date",
        ),
        (
            {
                "default_expires_at_type": pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE,
                "default_expires_at_date": "2024-02-30",
            },
            "badge_template.default_expires_at_date",
        ),
        (
            {
                "default_expires_at_type": pb.BADGE_TEMPLATE_EXPIRY_TYPE_DATE,
                "default_expires_at_date": "31/12/2030",
            },
            "badge_template.default_expires_at_date",
        ),
        ({"default_expires_at_date": "2030-01-01"}, "badge_template.default_expires_at_date"),
        (
            {"default_expires_at_type": pb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION},
            "badge_template.default_expires_in_days",
        ),
        (
            {
                "default_expires_at_type": pb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
                "default_expires_in_days": 36501,
            },
            "badge_template.default_expires_in_days",
        ),
        ({"default_expires_in_days": 30}, "badge_template.default_expires_in_days"),
        ({"vanity_slug": "Upper-Case"}, "badge_template.vanity_slug"),
        ({"vanity_slug": "double--hyphen"}, "badge_template.vanity_slug"),
        ({"vanity_slug": "s" * 256}, Over("badge_template.vanity_slug")),
        ({"available_locales": ["en", "e"]}, "badge_template.available_locales[1]"),
        ({"available_locales": ["en", "EN"]}, "badge_template.available_locales[1]"),
        ({"available_locales": ["en"] * 51}, Over("badge_template.available_locales")),
        ({"skills": ["Archery", "archery"]}, "badge_template.skills[1]"),
        ({"skills": ["a,b"]}, "badge_template.skills[0]"),
        ({"skills": ["a|b"]}, "badge_template.skills[0]"),
        ({"skills": [""]}, "badge_template.skills[0]"),
        ({"skills": [LONG]}, Over("badge_template.skills[0]")),
        ({"skills": [f"s{i}" for i in range(101)]}, Over("badge_template.skills")),
        ({"reporting_tags": ["x", "\x00"]}, "badge_template.reporting_tags[1]"),
        ({"collection_ids": ["not-a-uuid"]}, "badge_template.collection_ids[0]"),
        ({"collection_ids": [COLLECTION, COLLECTION.upper()]}, "badge_template.collection_ids[1]"),
        ({"alignments": [pb.BadgeTemplateAlignment()]}, "badge_template.alignments[0].name"),
        (
            {"alignments": [pb.BadgeTemplateAlignment(name="a", id="x")]},
            "badge_template.alignments[0].id",
        ),
        (
            {
                "alignments": [
                    pb.BadgeTemplateAlignment(name="a", id=COLLECTION),
                    pb.BadgeTemplateAlignment(name="b", id=COLLECTION),
                ]
            },
            "badge_template.alignments[1].id",
        ),
        (
            {"alignments": [pb.BadgeTemplateAlignment(name="a", url="javascript:alert(1)")]},
            "badge_template.alignments[0].url",
        ),
        ({"endorsements": [pb.BadgeTemplateEndorsement()]}, "badge_template.endorsements[0].name"),
        (
            {"recommendations": [pb.BadgeTemplateRecommendation(title="t")]},
            "badge_template.recommendations[0].type",
        ),
        (
            {
                "recommendations": [
                    pb.BadgeTemplateRecommendation(title="t", type=9)  # type: ignore[arg-type]
                ]
            },
            "badge_template.recommendations[0].type",
        ),
        (
            {"recommendations": [pb.BadgeTemplateRecommendation(type=INFORMATION)]},
            "badge_template.recommendations[0].title",
        ),
        (
            {
                "recommendations": [
                    pb.BadgeTemplateRecommendation(type=INFORMATION, title="t", activity_url="nope")
                ]
            },
            "badge_template.recommendations[0].activity_url",
        ),
        (
            {
                "recommendations": [
                    pb.BadgeTemplateRecommendation(
                        type=INFORMATION, title="t", recommended_badge_template_id=COLLECTION
                    )
                ]
            },
            "badge_template.recommendations[0].recommended_badge_template_id",
        ),
        (
            {"recommendations": [pb.BadgeTemplateRecommendation(type=BADGE)]},
            "badge_template.recommendations[0].recommended_badge_template_id",
        ),
        (
            {
                "recommendations": [
                    pb.BadgeTemplateRecommendation(type=BADGE, recommended_badge_template_id="1234")
                ]
            },
            "badge_template.recommendations[0].recommended_badge_template_id",
        ),
        (
            {
                "recommendations": [
                    pb.BadgeTemplateRecommendation(
                        type=BADGE,
                        recommended_badge_template_id=COLLECTION,
                        activity_url="https://x.example",
                    )
                ]
            },
            "badge_template.recommendations[0].activity_url",
        ),
        (
            {"badge_template_activities": [pb.BadgeTemplateActivity(activity_type="Course")]},
            "badge_template.badge_template_activities[0].title",
        ),
        (
            {"badge_template_activities": [pb.BadgeTemplateActivity(title="Do it")]},
            "badge_template.badge_template_activities[0].activity_type",
        ),
        (
            {
                "badge_template_activities": [
                    pb.BadgeTemplateActivity(
                        title="t", activity_type="Course", required_badge_template_id="x"
                    )
                ]
            },
            "badge_template.badge_template_activities[0].required_badge_template_id",
        ),
        (
            {"required_badge_templates": [pb.BadgeTemplateReference(id="nope")]},
            "badge_template.required_badge_templates[0].id",
        ),
        ({"primary_badge_template_id": "nope"}, "badge_template.primary_badge_template_id"),
        ({"variant_name": "French"}, "badge_template.variant_name"),
    ],
)
async def test_invalid_templates(org: Org, overrides: dict[str, Any], field: str) -> None:
    template = pb.BadgeTemplate(**({"name": "Valid"} | overrides))
    await expect_error(create(org, template), INVALID, reason=reason_for(field), field=field)


async def test_references_between_templates(org: Org, other_org: Org) -> None:
    a = await create(org, pb.BadgeTemplate(name="Archery", image_url="https://img.example/a.png"))
    b = await create(
        org,
        pb.BadgeTemplate(
            name="Advanced Archery",
            required_badge_templates=[pb.BadgeTemplateReference(id=a.id.upper(), name="ignored")],
            badge_template_activities=[
                pb.BadgeTemplateActivity(title="Earn Archery", required_badge_template_id=a.id)
            ],
            recommendations=[
                pb.BadgeTemplateRecommendation(type=BADGE, recommended_badge_template_id=a.id)
            ],
        ),
    )
    slug = b.owner.vanity_slug
    a_url = f"{BASE_URL}/org/{slug}/badge/archery"
    assert list(b.required_badge_templates) == [
        pb.BadgeTemplateReference(
            id=a.id,
            name="Archery",
            vanity_slug="archery",
            url=a_url,
            image_url="https://img.example/a.png",
            state=DRAFT,
        )
    ]
    [activity] = b.badge_template_activities
    assert activity.activity_type == "Badge"
    assert activity.required_badge_template_id == a.id
    assert activity.required_badge_template_name == "Archery"
    assert activity.required_badge_template_url == a_url
    [rec] = b.recommendations
    # A badge recommendation's title defaults to the recommended template's name.
    assert (rec.title, rec.type, rec.recommended_badge_template_id) == ("Archery", BADGE, a.id)
    assert rec.recommended_badge_template_name == "Archery"
    assert rec.recommended_badge_template_url == a_url
    # Get shows who points at a template.
    got_a = await get(org, a.id)
    expected_b = pb.BadgeTemplateReference(
        id=b.id,
        name="Advanced Archery",
        vanity_slug="advanced-archery",
        url=f"{BASE_URL}/org/{slug}/badge/advanced-archery",
        state=DRAFT,
    )
    assert list(got_a.criterion_for) == [expected_b]
    assert list(got_a.recommending_templates) == [expected_b]
    # Names are read when shown: renaming A shows in B.
    await patch(org, pb.BadgeTemplate(id=a.id, name="Archery I"), "name")
    got_b = await get(org, b.id)
    assert got_b.required_badge_templates[0].name == "Archery I"
    assert got_b.badge_template_activities[0].required_badge_template_name == "Archery I"
    assert got_b.recommendations[0].recommended_badge_template_name == "Archery I"
    # The stored title of the recommendation stays what it was.
    assert got_b.recommendations[0].title == "Archery"
    # A cannot be deleted while B points at it.
    err = await expect_error(delete(org, a.id), FAILED, reason="BADGE_TEMPLATE_IN_USE")
    assert err.info is not None
    assert err.info.metadata["required_by"] == b.id
    assert err.info.metadata["recommended_by"] == b.id
    # A requiring B would be a cycle; requiring itself is refused as such.
    await expect_error(
        patch(
            org,
            pb.BadgeTemplate(
                id=a.id, required_badge_templates=[pb.BadgeTemplateReference(id=b.id)]
            ),
            "required_badge_templates",
        ),
        INVALID,
        reason="REQUIREMENT_CYCLE",
        field="badge_template.required_badge_templates",
    )
    await expect_error(
        patch(
            org,
            pb.BadgeTemplate(
                id=a.id,
                badge_template_activities=[
                    pb.BadgeTemplateActivity(title="Self", required_badge_template_id=a.id)
                ],
            ),
            "badge_template_activities",
        ),
        INVALID,
        field="badge_template.badge_template_activities[0].required_badge_template_id",
    )
    # Another org's template is unknown here, and repeats are refused.
    theirs = await create(other_org, pb.BadgeTemplate(name="Theirs"))
    for refs, field in (
        ([theirs.id], "badge_template.required_badge_templates[0].id"),
        ([str(uuid.uuid4())], "badge_template.required_badge_templates[0].id"),
        ([a.id, a.id], "badge_template.required_badge_templates[1].id"),
    ):
        await expect_error(
            create(
                org,
                pb.BadgeTemplate(
                    name="C",
                    required_badge_templates=[pb.BadgeTemplateReference(id=r) for r in refs],
                ),
            ),
            INVALID,
            reason="UNKNOWN_BADGE_TEMPLATE" if len(refs) == 1 else "INVALID_FIELD",
            field=field,
        )
    # Dropping the references frees A.
    await patch(
        org,
        pb.BadgeTemplate(id=b.id),
        "required_badge_templates",
        "badge_template_activities",
        "recommendations",
    )
    assert list((await get(org, a.id)).criterion_for) == []
    await delete(org, a.id)
    await expect_error(get(org, a.id), NOT_FOUND, reason="NOT_FOUND")


async def test_variants(org: Org, backend: Backend) -> None:
    primary = await create(org, pb.BadgeTemplate(name="Primary", variants_allowed=True))
    plain = await create(org, pb.BadgeTemplate(name="Plain"))
    variant = await create(
        org,
        pb.BadgeTemplate(
            name="Primary (FR)", primary_badge_template_id=primary.id, variant_name="French"
        ),
    )
    assert variant.primary_badge_template_id == primary.id
    assert variant.variant_name == "French"
    await set_badges_count(backend, variant.id, 4)
    got = await get(org, primary.id)
    assert got.get_variants_issue_count == 4 and got.badges_count == 0
    cases: list[tuple[dict[str, Any], str]] = [
        ({"primary_badge_template_id": plain.id, "variant_name": "x"}, "primary_badge_template_id"),
        (
            {"primary_badge_template_id": variant.id, "variant_name": "x"},
            "primary_badge_template_id",
        ),
        ({"primary_badge_template_id": primary.id}, "variant_name"),
    ]
    for overrides, field in cases:
        await expect_error(
            create(org, pb.BadgeTemplate(name="V2", **overrides)),
            INVALID,
            field=f"badge_template.{field}",
        )
    # A primary with variants keeps allowing them, and cannot become a variant itself.
    await expect_error(
        patch(org, pb.BadgeTemplate(id=primary.id, variants_allowed=False), "variants_allowed"),
        INVALID,
        field="badge_template.variants_allowed",
    )
    other = await create(org, pb.BadgeTemplate(name="Other", variants_allowed=True))
    await expect_error(
        patch(
            org,
            pb.BadgeTemplate(id=primary.id, primary_badge_template_id=other.id, variant_name="Sub"),
            "primary_badge_template_id",
            "variant_name",
        ),
        INVALID,
        field="badge_template.primary_badge_template_id",
    )
    err = await expect_error(delete(org, primary.id), FAILED, reason="BADGE_TEMPLATE_IN_USE")
    assert err.info is not None and err.info.metadata["variants"] == variant.id
    # The variant has badges, so it cannot be deleted; once it has none it can, then the primary.
    await expect_error(delete(org, variant.id), FAILED, reason="BADGE_TEMPLATE_HAS_BADGES")
    assert (await get(org, variant.id)).allow_delete is False
    await set_badges_count(backend, variant.id, 0)
    await delete(org, variant.id)
    await delete(org, primary.id)


async def test_state_machine(org: Org) -> None:
    draft = await create(org, pb.BadgeTemplate(name="Stateful"))
    assert draft.state == DRAFT and not draft.HasField("state_updated_at")
    # A draft is deleted, not archived; unarchiving needs an archived one.
    await expect_error(archive(org, draft.id), FAILED, reason="INVALID_STATE_TRANSITION")
    await expect_error(unarchive(org, draft.id), FAILED, reason="INVALID_STATE_TRANSITION")
    # Update publishes a draft.
    active = await patch(org, pb.BadgeTemplate(id=draft.id, state=ACTIVE), "state")
    assert active.state == ACTIVE and active.allow_archive is True
    assert active.state_updated_at == active.updated_at
    # Naming the state without changing it keeps state_updated_at.
    same = await patch(org, pb.BadgeTemplate(id=draft.id, state=ACTIVE, name="Renamed"))
    assert same.state_updated_at == active.state_updated_at
    assert same.updated_at.ToDatetime() > active.updated_at.ToDatetime()
    # Leaving state out of a "*" update keeps it.
    kept = await patch(org, pb.BadgeTemplate(id=draft.id, name="Star"), "*")
    assert kept.state == ACTIVE
    for target in (DRAFT, ARCHIVED):
        await expect_error(
            patch(org, pb.BadgeTemplate(id=draft.id, state=target), "state"),
            FAILED,
            reason="INVALID_STATE_TRANSITION",
        )
    archived = await archive(org, draft.id)
    assert archived.state == ARCHIVED
    assert archived.allow_archive is False
    assert archived.state_updated_at == archived.updated_at
    assert archived.state_updated_at.ToDatetime() > active.state_updated_at.ToDatetime()
    assert archived.show_template_settings is True
    assert (await get(org, draft.id)).state == ARCHIVED
    await expect_error(archive(org, draft.id), FAILED, reason="INVALID_STATE_TRANSITION")
    for target in (ACTIVE, DRAFT):
        await expect_error(
            patch(org, pb.BadgeTemplate(id=draft.id, state=target), "state"),
            FAILED,
            reason="INVALID_STATE_TRANSITION",
        )
    # An archived template can still be edited.
    edited = await patch(org, pb.BadgeTemplate(id=draft.id, description="retired"), "description")
    assert edited.state == ARCHIVED and edited.description == "retired"
    back = await unarchive(org, draft.id)
    assert back.state == ACTIVE
    assert back.state_updated_at.ToDatetime() > archived.state_updated_at.ToDatetime()
    await expect_error(unarchive(org, draft.id), FAILED, reason="INVALID_STATE_TRANSITION")


async def test_update_by_field_mask(org: Org) -> None:
    created = await create(org, full_template())
    # Only the masked field changes, whatever else the patch carries.
    renamed = await patch(
        org, pb.BadgeTemplate(id=created.id, name="Renamed", description="ignored"), "name"
    )
    assert renamed.name == "Renamed"
    assert renamed.description == created.description
    assert renamed.created_at == created.created_at
    assert renamed.updated_at.ToDatetime() > created.updated_at.ToDatetime()
    assert renamed.image == created.image
    assert list(renamed.alignments) == list(created.alignments)
    # An empty mask updates the fields the patch sets.
    changed = await patch(
        org,
        pb.BadgeTemplate(
            id=created.id, skills=["Only"], public=True, image_url="https://n.example/i.png"
        ),
    )
    assert list(changed.skills) == ["Only"]
    assert changed.public is True
    assert changed.name == "Renamed"
    assert changed.image.url == "https://n.example/i.png"
    assert changed.image.id != created.image.id and UUID_RE.match(changed.image.id)
    # Naming a field the patch lacks clears it (to its default).
    cleared = await patch(
        org, pb.BadgeTemplate(id=created.id), "skills", "public", "record_to_blockchain", "level"
    )
    assert list(cleared.skills) == []
    assert cleared.public is True
    assert not cleared.HasField("record_to_blockchain")
    assert cleared.level == pb.BADGE_TEMPLATE_LEVEL_UNSPECIFIED
    # "*" replaces every writable field: what the patch lacks goes back to defaults; output-only
    # fields and the state stay.
    star = await patch(org, pb.BadgeTemplate(id=created.id, name="Star"), "*")
    assert star.name == "Star"
    assert star.description == "" and list(star.alignments) == []
    assert star.vanity_slug == "star"
    assert star.state == ACTIVE
    assert star.enable_detail_attribute_visibility is True
    assert star.default_expires_at_type == pb.BADGE_TEMPLATE_EXPIRY_TYPE_UNSPECIFIED
    assert not star.HasField("image")
    assert star.created_at == created.created_at
    assert await get(org, created.id) == star
    # Sub-object ids given back are kept.
    kept = await patch(
        org, pb.BadgeTemplate(id=created.id, alignments=created.alignments), "alignments"
    )
    assert [a.id for a in kept.alignments] == [a.id for a in created.alignments]
    # The result must pass every create rule.
    await expect_error(
        patch(
            org,
            pb.BadgeTemplate(id=created.id, enable_earn_this_badge=True),
            "enable_earn_this_badge",
        ),
        INVALID,
        field="badge_template.earn_this_badge_url",
    )
    for paths in (["owner"], ["badges_count"], ["id"], ["alignments.name"], ["nonsense"]):
        await expect_error(
            patch(org, pb.BadgeTemplate(id=created.id, name="x"), *paths),
            INVALID,
            field="update_mask",
        )


async def test_bad_ids(org: Org) -> None:
    stub = templates(org.admin)
    for call, field in (
        (
            stub.GetBadgeTemplate(pb.GetBadgeTemplateRequest(organization_id=org.uuid, id="nope")),
            "id",
        ),
        (stub.GetBadgeTemplate(pb.GetBadgeTemplateRequest(organization_id=org.uuid)), "id"),
        (
            stub.DeleteBadgeTemplate(
                pb.DeleteBadgeTemplateRequest(organization_id=org.uuid, id="a\x00")
            ),
            "id",
        ),
        (
            stub.ArchiveBadgeTemplate(
                pb.ArchiveBadgeTemplateRequest(organization_id=org.uuid, id="x")
            ),
            "id",
        ),
        (
            stub.UnarchiveBadgeTemplate(
                pb.UnarchiveBadgeTemplateRequest(organization_id=org.uuid, id="")
            ),
            "id",
        ),
        (
            stub.UpdateBadgeTemplate(
                pb.UpdateBadgeTemplateRequest(
                    organization_id=org.uuid, badge_template=pb.BadgeTemplate(name="x")
                )
            ),
            "badge_template.id",
        ),
    ):
        await expect_error(call, INVALID, field=field)
    missing = str(uuid.uuid4())
    for call in (
        stub.GetBadgeTemplate(pb.GetBadgeTemplateRequest(organization_id=org.uuid, id=missing)),
        stub.DeleteBadgeTemplate(
            pb.DeleteBadgeTemplateRequest(organization_id=org.uuid, id=missing)
        ),
        stub.ArchiveBadgeTemplate(
            pb.ArchiveBadgeTemplateRequest(organization_id=org.uuid, id=missing)
        ),
        stub.UnarchiveBadgeTemplate(
            pb.UnarchiveBadgeTemplateRequest(organization_id=org.uuid, id=missing)
        ),
        stub.UpdateBadgeTemplate(
            pb.UpdateBadgeTemplateRequest(
                organization_id=org.uuid, badge_template=pb.BadgeTemplate(id=missing, name="x")
            )
        ),
    ):
        err = await expect_error(call, NOT_FOUND, reason="NOT_FOUND")
        assert err.info is not None and err.info.metadata["resource"] == "badge template"


async def test_delete(org: Org, backend: Backend) -> None:
    t = await create(org, pb.BadgeTemplate(name="Doomed"))
    await delete(org, t.id)
    await expect_error(get(org, t.id), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(delete(org, t.id), NOT_FOUND, reason="NOT_FOUND")
    # Its slug is free again.
    again = await create(org, pb.BadgeTemplate(name="Doomed"))
    assert again.vanity_slug == "doomed"
    await set_badges_count(backend, again.id, 2)
    got = await get(org, again.id)
    assert (got.badges_count, got.get_issue_count, got.allow_delete) == (2, 2, False)
    err = await expect_error(delete(org, again.id), FAILED, reason="BADGE_TEMPLATE_HAS_BADGES")
    assert err.info is not None and err.info.metadata["badges_count"] == "2"
    assert (await get(org, again.id)).name == "Doomed"


def every_call(
    stub: pb_grpc.BadgeTemplateServiceStub, organization_id: str, template_id: str
) -> list[Callable[[], Any]]:
    """A call of every RPC, naming ``organization_id`` and ``template_id``, each started only
    when called (gRPC starts a call as soon as it is made)."""
    return [
        lambda: stub.ListBadgeTemplates(
            pb.ListBadgeTemplatesRequest(organization_id=organization_id)
        ),
        lambda: stub.GetBadgeTemplate(
            pb.GetBadgeTemplateRequest(organization_id=organization_id, id=template_id)
        ),
        lambda: stub.CreateBadgeTemplate(
            pb.CreateBadgeTemplateRequest(
                organization_id=organization_id, badge_template=pb.BadgeTemplate(name="New")
            )
        ),
        lambda: stub.UpdateBadgeTemplate(
            pb.UpdateBadgeTemplateRequest(
                organization_id=organization_id,
                badge_template=pb.BadgeTemplate(id=template_id, name="Changed"),
            )
        ),
        lambda: stub.DeleteBadgeTemplate(
            pb.DeleteBadgeTemplateRequest(organization_id=organization_id, id=template_id)
        ),
        lambda: stub.ArchiveBadgeTemplate(
            pb.ArchiveBadgeTemplateRequest(organization_id=organization_id, id=template_id)
        ),
        lambda: stub.UnarchiveBadgeTemplate(
            pb.UnarchiveBadgeTemplateRequest(organization_id=organization_id, id=template_id)
        ),
    ]


async def test_organization_id_must_be_the_callers(org: Org, other_org: Org) -> None:
    t = await create(org, pb.BadgeTemplate(name="Mine", state=ACTIVE))
    stub = templates(org.admin)
    for call in every_call(stub, other_org.uuid, t.id):
        err = await expect_error(call(), NOT_FOUND, reason="NOT_FOUND")
        assert err.info is not None
        assert err.info.metadata["resource"] == "organization"
        assert err.info.metadata["id"] == other_org.uuid
    for call in every_call(stub, str(uuid.uuid4()), t.id):
        await expect_error(call(), NOT_FOUND, reason="NOT_FOUND")
    for call in every_call(stub, "", t.id):
        await expect_error(call(), INVALID, field="organization_id")
    # Nothing changed, and the UUID may be written in capitals.
    got = await templates(org.reader).GetBadgeTemplate(
        pb.GetBadgeTemplateRequest(organization_id=org.uuid.upper(), id=t.id)
    )
    assert (got.name, got.state) == ("Mine", ACTIVE)
    listed = await templates(org.reader).ListBadgeTemplates(
        pb.ListBadgeTemplatesRequest(organization_id=org.uuid)
    )
    assert [x.id for x in listed.badge_templates] == [t.id]


async def test_other_organisations_cannot_see_or_touch(org: Org, other_org: Org) -> None:
    t = await create(org, pb.BadgeTemplate(name="Private", state=ACTIVE))
    # The other org names itself correctly; the template is simply not there.
    stub = templates(other_org.admin)
    calls = every_call(stub, other_org.uuid, t.id)
    listed = await calls[0]()
    assert list(listed.badge_templates) == [] and listed.total_size == 0
    for call in calls[1:]:
        if call is calls[2]:
            created = await call()  # creating its own is fine
            assert created.owner.id == other_org.uuid
            continue
        await expect_error(call(), NOT_FOUND, reason="NOT_FOUND")
    got = await get(org, t.id)
    assert (got.name, got.state) == ("Private", ACTIVE)


async def test_reader_cannot_write(org: Org) -> None:
    t = await create(org, pb.BadgeTemplate(name="Read only", state=ACTIVE))
    calls = every_call(templates(org.reader), org.uuid, t.id)
    assert (await calls[0]()).total_size == 1
    assert (await calls[1]()).name == "Read only"
    for call in calls[2:]:
        await expect_error(call(), grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    got = await get(org, t.id)
    assert (got.name, got.state) == ("Read only", ACTIVE)
    listed = await templates(org.reader).ListBadgeTemplates(
        pb.ListBadgeTemplatesRequest(organization_id=org.uuid)
    )
    assert listed.total_size == 1


async def test_no_credentials(backend: Backend, org: Org) -> None:
    anonymous = templates(backend.client())
    await expect_error(
        anonymous.ListBadgeTemplates(pb.ListBadgeTemplatesRequest(organization_id=org.uuid)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_foreign_keys_back_the_checks(org: Org, backend: Backend) -> None:
    # The servicer checks references before writing; the database holds the same rules when a
    # concurrent call slips between the check and the write. Called on the store directly.
    a = await create(org, pb.BadgeTemplate(name="Target", variants_allowed=True))
    b = await create(
        org,
        pb.BadgeTemplate(
            name="Needs", required_badge_templates=[pb.BadgeTemplateReference(id=a.id)]
        ),
    )
    v = await create(
        org, pb.BadgeTemplate(name="Variant", primary_badge_template_id=a.id, variant_name="FR")
    )
    with pytest.raises(FailedPrecondition) as caught:
        async with backend.db.write() as conn:
            await store.delete_template(conn, org.id, a.id)
    assert caught.value.reason == "BADGE_TEMPLATE_IN_USE"
    assert caught.value.metadata == {"required_by": b.id, "variants": v.id}
    assert (await get(org, a.id)).name == "Target"
    now = dt.datetime.now(dt.UTC)
    gone = str(uuid.uuid4())
    for orphan in (
        BadgeTemplate(name="Orphan", required_badge_template_ids=[gone]),
        BadgeTemplate(name="Orphan", primary_badge_template_id=gone, variant_name="x"),
    ):
        orphan.id, orphan.org_id, orphan.state = str(uuid.uuid4()), org.id, TemplateState.DRAFT
        orphan.created_at = orphan.updated_at = now
        with pytest.raises(Aborted) as aborted:
            async with backend.db.write() as conn:
                await store.insert_template(conn, orphan)
        assert aborted.value.reason == "CONCURRENT_CHANGE"
        await expect_error(get(org, orphan.id), NOT_FOUND)
