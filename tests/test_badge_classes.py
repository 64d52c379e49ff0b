"""badges.v1.BadgeClassService (Badgr v2 badge classes): every seed field round trip, every
seed lookup (id, entityId, base64 openBadgeId, ref) for get and delete, bad base64 and unknown
ids, list filters and paging, updates (archiving), custom property values against the issuer's
definitions, the Open Badges 2.0 BadgeClass, validation per field, tenancy and roles.
Claim codes are in test_badge_classes_claim_codes.py."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from badge_service.api.badges.v1 import badge_class_pb2 as pb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.domain import paging
from tests.support import Org, Over, expect_error, reason_for
from tests.test_issuers import (
    BASE,
    ENTITY_ID,
    HEX24,
    b64,
    classes,
    create_class,
    create_issuer,
    issuers,
    lookup_of,
    seed_issuer,
    small_class,
    small_issuer,
    struct,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
AWARD_TYPE = "66bf8231d88b51901d49d637"  # seed_issuer's required STRING_CHOICE property


def seed_class(issuer: str, **overrides: Any) -> pb.BadgeClass:
    """The seed's badge class with every writable field set, for an issuer made by
    seed_issuer (whose required "Award Type" property it fills in)."""
    fields: dict[str, Any] = {
        "issuer": issuer,
        "source_url": "https://example.com/badge-classes/1",
        "original_json": "{}",
        "name": "Math Expert",
        "image": "https://api.badgr.io/public/badges/iOMWsaF1QbmMCofM54JlUg/image",
        "description": "This badge is awarded to students who have demonstrated mastery of Math.",
        "achievement_type": "Course",
        "criteria_url": "https://example.com/badge-classes/1/criteria",
        "criteria_narrative": "Pass the *final* exam.",
        "alignments": [
            pb.Alignment(
                target_name="Algebra",
                target_url="https://standards.example.org/algebra",
                target_description="Linear equations",
                target_framework="CCSS",
                target_code="HSA-REI.B.3",
                display_as_skill=True,
            )
        ],
        "tags": ["math", "stem"],
        "expires": pb.Expires(amount=30, duration=pb.EXPIRES_DURATION_DAYS),
        "extensions": struct({"extensions:level": {"level": "advanced"}}),
        "source": "local",
        "image_path": "uploads/badges/badgeclass-lY1LJ6K4RqG7ThGLYvWNng.png",
        "archived": False,
        "archival_note": "",
        "ob3_properties": pb.Ob3Properties(
            credit_hours=36,
            field_of_study="Research",
            human_code="R1",
            specialization="Computer Science Research",
        ),
        "preferences": pb.BadgeClassPreferences(
            include_on_public_pages=True,
            custom_property_values=[
                pb.CustomPropertyValue(property_id=AWARD_TYPE, string_value="Course", public=True)
            ],
            enabled_print_cert_template_ids=["61e9d238c5afe622816febb3"],
            default_print_cert_template_id="61e9d238c5afe622816febb3",
        ),
    }
    fields.update(overrides)
    return pb.BadgeClass(**fields)


async def seeded(org: Org) -> tuple[ipb.Issuer, pb.BadgeClass]:
    """The seed's issuer and badge class, created."""
    issuer = await create_issuer(org.admin, seed_issuer())
    return issuer, await create_class(org.admin, seed_class(issuer.entity_id))


# --- Create and the seed's fields -------------------------------------------------------------


async def test_create_returns_every_seed_field(org: Org) -> None:
    issuer = await create_issuer(org.admin, seed_issuer())
    sent = seed_class(issuer.entity_id)
    got = await create_class(org.admin, sent)
    assert HEX24.match(got.id) and ENTITY_ID.match(got.entity_id)
    assert got.entity_type == "BadgeClass"
    assert got.open_badge_id == f"{BASE}/public/badges/{got.entity_id}"
    assert got.issuer == issuer.entity_id
    assert got.issuer_open_badge_id == issuer.open_badge_id
    assert got.created_by.isdigit() and got.created_at == got.updated_at
    assert not got.HasField("archived_date") and not got.HasField("open_badge")
    expected = pb.BadgeClass()
    expected.CopyFrom(sent)
    for name in ("id", "entity_type", "entity_id", "open_badge_id", "created_by"):
        setattr(expected, name, getattr(got, name))
    expected.issuer_open_badge_id = issuer.open_badge_id
    expected.created_at.CopyFrom(got.created_at)
    expected.updated_at.CopyFrom(got.updated_at)
    assert got == expected
    as_json = json_format.MessageToDict(got)
    for key in (
        "issuerOpenBadgeId",
        "achievementType",
        "criteriaUrl",
        "criteriaNarrative",
        "imagePath",
        "ob3Properties",
    ):
        assert key in as_json, key
    assert as_json["expires"] == {"amount": 30, "duration": "EXPIRES_DURATION_DAYS"}
    assert as_json["ob3Properties"]["creditHours"] == 36
    assert as_json["preferences"]["customPropertyValues"][0]["propertyId"] == AWARD_TYPE
    assert as_json["alignments"][0]["displayAsSkill"] is True


async def test_create_names_the_issuer_by_id_or_entity_id(org: Org) -> None:
    issuer = await create_issuer(org.admin)
    by_id = await create_class(org.admin, small_class(issuer.id))
    by_entity = await create_class(org.admin, small_class(issuer.entity_id))
    assert by_id.issuer == by_entity.issuer == issuer.entity_id
    assert by_id.source == "local"
    assert by_id.preferences.include_on_public_pages is True  # the default
    hidden = await create_class(
        org.admin,
        small_class(issuer.id, preferences=pb.BadgeClassPreferences(include_on_public_pages=False)),
    )
    assert hidden.preferences.include_on_public_pages is False
    for bad, code, field in (
        ("", INVALID, "badge_class.issuer"),
        ("0" * 24, NOT_FOUND, None),
        ("AAAAAAAAAAAAAAAAAAAAAA", NOT_FOUND, None),
        (issuer.open_badge_id, NOT_FOUND, None),
    ):
        got = await expect_error(create_class(org.admin, small_class(bad)), code, field=field)
        if code is NOT_FOUND:
            assert got.info is not None and got.info.metadata["resource"] == "issuer"


async def test_archived_on_create_stamps_the_date(org: Org) -> None:
    issuer = await create_issuer(org.admin)
    before = dt.datetime.now(dt.UTC)
    got = await create_class(
        org.admin, small_class(issuer.id, archived=True, archival_note="Retired")
    )
    assert got.archived and got.archival_note == "Retired"
    assert got.archived_date.ToDatetime(dt.UTC) >= before.replace(microsecond=0)


# --- Lookups ----------------------------------------------------------------------------------


def lookups(bc: pb.BadgeClass) -> list[dict[str, Any]]:
    """Every way to name a badge class: id, entityId, base64 openBadgeId, ref."""
    obid = bc.open_badge_id
    return [
        {"id_or_entity_id": bc.id},
        {"id_or_entity_id": bc.entity_id},
        {"badge_class_open_badge_id_base64": b64(obid)},
        {"badge_class_open_badge_id_base64": b64(obid, urlsafe=True, pad=False)},
        {"ref": bc.id},
        {"ref": bc.entity_id},
        {"ref": obid},
        {"ref": b64(obid)},
        {"ref": b64(obid, urlsafe=True, pad=False)},
    ]


async def test_get_by_every_seed_lookup(org: Org) -> None:
    _, created = await seeded(org)
    await create_class(
        org.admin, small_class(created.issuer, "Other", preferences=created.preferences)
    )
    for lookup in lookups(created):
        got = await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(**lookup))
        assert got == created, lookup


async def test_delete_by_every_seed_lookup(org: Org) -> None:
    issuer = await create_issuer(org.admin)
    for i in range(len(lookups(pb.BadgeClass()))):
        created = await create_class(org.admin, small_class(issuer.id, f"C{i}"))
        await classes(org.admin).CreateClaimCodes(
            pb.CreateClaimCodesRequest(id_or_entity_id=created.id, count=2)
        )
        lookup = lookups(created)[i]
        await classes(org.admin).DeleteBadgeClass(pb.DeleteBadgeClassRequest(**lookup))
        await expect_error(
            classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(id_or_entity_id=created.id)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        await expect_error(
            classes(org.admin).DeleteBadgeClass(pb.DeleteBadgeClassRequest(**lookup)), NOT_FOUND
        )
    listed = await classes(org.reader).ListBadgeClasses(pb.ListBadgeClassesRequest())
    assert listed.total_size == 0
    # With no classes left (their codes went with them) the issuer deletes without cascade.
    await issuers(org.admin).DeleteIssuer(ipb.DeleteIssuerRequest(id_or_entity_id=issuer.id))


async def test_delete_without_awards_needs_no_cascade(org: Org) -> None:
    issuer = await create_issuer(org.admin)
    for cascade in (False, True):
        bc = await create_class(org.admin, small_class(issuer.id))
        await classes(org.admin).DeleteBadgeClass(
            pb.DeleteBadgeClassRequest(ref=bc.entity_id, cascade=cascade)
        )
        await expect_error(
            classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=bc.id)), NOT_FOUND
        )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("%%%", "is not base64"),
        ("QUJDR", "is not base64 (bad length)"),
        (base64.b64encode(b"\xc3\x28").decode(), "does not decode to an openBadgeId URL"),
        (b64("just text"), "does not decode to an http(s) openBadgeId URL"),
    ],
)
async def test_bad_base64_is_invalid_argument(org: Org, value: str, why: str) -> None:
    for name in ("badge_class_open_badge_id_base64", "ref"):
        got = await expect_error(
            classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(**lookup_of(name, value))),
            INVALID,
            reason="INVALID_FIELD",
            field=name,
        )
        assert got.bad_request is not None
        assert got.bad_request.field_violations[0].description == why
        await expect_error(
            classes(org.admin).DeleteBadgeClass(
                pb.DeleteBadgeClassRequest(**lookup_of(name, value))
            ),
            INVALID,
            field=name,
        )


async def test_unknown_lookups_are_not_found(org: Org) -> None:
    issuer, created = await seeded(org)
    unknown: list[dict[str, Any]] = [
        {"id_or_entity_id": "1" * 24},
        {"id_or_entity_id": "BBBBBBBBBBBBBBBBBBBBBB"},
        {"id_or_entity_id": "x" * 3000},
        # The issuer's openBadgeId is not a badge class's.
        {"badge_class_open_badge_id_base64": b64(issuer.open_badge_id)},
        {
            "badge_class_open_badge_id_base64": b64(
                f"https://api.badgr.io/public/badges/{created.entity_id}"
            )
        },
        {"ref": issuer.open_badge_id},
        {"ref": issuer.id},
        {"ref": b64(f"{BASE}/public/badges/BBBBBBBBBBBBBBBBBBBBBB")},
    ]
    for lookup in unknown:
        got = await expect_error(
            classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(**lookup)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        assert got.info is not None and got.info.metadata["resource"] == "badge class"
        await expect_error(
            classes(org.admin).DeleteBadgeClass(pb.DeleteBadgeClassRequest(**lookup)), NOT_FOUND
        )
    await expect_error(
        classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest()),
        INVALID,
        field="id_or_entity_id",
    )
    assert await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=created.id)) == (
        created
    )


# --- Open Badges 2.0 --------------------------------------------------------------------------

# The Open Badges 2.0 BadgeClass's required properties.
OB2_BADGE_CLASS_REQUIRED = (
    "@context",
    "type",
    "id",
    "name",
    "description",
    "image",
    "criteria",
    "issuer",
)


async def test_open_badges_badge_class(org: Org) -> None:
    issuer, created = await seeded(org)
    got = await classes(org.reader).GetBadgeClass(
        pb.GetBadgeClassRequest(ref=created.open_badge_id, view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    doc = json_format.MessageToDict(got.open_badge)
    for key in OB2_BADGE_CLASS_REQUIRED:
        assert doc.get(key), key
    assert doc == {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "BadgeClass",
        "id": created.open_badge_id,
        "name": "Math Expert",
        "description": "This badge is awarded to students who have demonstrated mastery of Math.",
        "image": "https://api.badgr.io/public/badges/iOMWsaF1QbmMCofM54JlUg/image",
        "criteria": {
            "id": "https://example.com/badge-classes/1/criteria",
            "narrative": "Pass the *final* exam.",
        },
        "issuer": issuer.open_badge_id,
        "alignment": [
            {
                "targetName": "Algebra",
                "targetUrl": "https://standards.example.org/algebra",
                "targetDescription": "Linear equations",
                "targetFramework": "CCSS",
                "targetCode": "HSA-REI.B.3",
            }
        ],
        "tags": ["math", "stem"],
    }
    got.ClearField("open_badge")
    assert got == created
    # Criteria as a narrative only; the alignment list and tags are empty, not missing.
    small = await create_class(
        org.admin, small_class(issuer.id, name="Small", preferences=created.preferences)
    )
    doc = json_format.MessageToDict(
        (
            await classes(org.reader).GetBadgeClass(
                pb.GetBadgeClassRequest(ref=small.id, view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
            )
        ).open_badge
    )
    assert doc["criteria"] == {"narrative": "Pass the exam."}
    assert doc["alignment"] == [] and doc["tags"] == []
    assert doc["issuer"] == issuer.open_badge_id
    plain = await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=small.id))
    assert not plain.HasField("open_badge")
    await expect_error(
        classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=small.id, view=-1)),  # type: ignore[arg-type]
        INVALID,
        field="view",
    )


# --- List -------------------------------------------------------------------------------------


async def test_list_filters_and_pages(org: Org, other_org: Org) -> None:
    first, second = await create_issuer(org.admin), await create_issuer(org.admin)
    a = [await create_class(org.admin, small_class(first.id, f"A{i}")) for i in range(3)]
    b = [await create_class(org.admin, small_class(second.entity_id, f"B{i}")) for i in range(2)]
    a[1] = await classes(org.admin).UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(
            badge_class=pb.BadgeClass(id=a[1].id, archived=True),
            update_mask=field_mask_pb2.FieldMask(paths=["archived"]),
        )
    )
    theirs = await create_issuer(other_org.admin)
    await create_class(other_org.admin, small_class(theirs.id))
    stub = classes(org.reader)

    async def names(**kw: Any) -> tuple[list[str], int]:
        got = await stub.ListBadgeClasses(pb.ListBadgeClassesRequest(**kw))
        assert got.next_page_token == ""
        return [bc.name for bc in got.badge_classes], got.total_size

    assert await names() == (["A0", "A1", "A2", "B0", "B1"], 5)
    assert await names(issuer=first.id) == (["A0", "A1", "A2"], 3)
    assert await names(issuer=second.entity_id) == (["B0", "B1"], 2)
    assert await names(archived=True) == (["A1"], 1)
    assert await names(archived=False) == (["A0", "A2", "B0", "B1"], 4)
    assert await names(issuer=first.entity_id, archived=False) == (["A0", "A2"], 2)
    assert await names(issuer=second.id, archived=True) == ([], 0)
    # Classes come back whole, as Get returns them.
    listed = await stub.ListBadgeClasses(pb.ListBadgeClassesRequest(issuer=second.id))
    assert list(listed.badge_classes) == b
    # Keyset pages, with the filters.
    page = await stub.ListBadgeClasses(pb.ListBadgeClassesRequest(page_size=2, archived=False))
    assert [bc.name for bc in page.badge_classes] == ["A0", "A2"] and page.total_size == 4
    page = await stub.ListBadgeClasses(
        pb.ListBadgeClassesRequest(page_size=2, archived=False, page_token=page.next_page_token)
    )
    assert [bc.name for bc in page.badge_classes] == ["B0", "B1"]
    assert page.next_page_token == ""
    # A token is bound to its filters.
    page = await stub.ListBadgeClasses(pb.ListBadgeClassesRequest(page_size=1))
    await expect_error(
        stub.ListBadgeClasses(
            pb.ListBadgeClassesRequest(
                page_size=1, issuer=first.id, page_token=page.next_page_token
            )
        ),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListBadgeClasses(
            pb.ListBadgeClassesRequest(
                page_token=paging.encode_page_token(
                    ["x"], paging.filter_fingerprint("badgr_badge_classes")
                )
            )
        ),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListBadgeClasses(pb.ListBadgeClassesRequest(page_size=-5)), INVALID, field="page_size"
    )
    for unknown in ("0" * 24, theirs.id, theirs.entity_id, "nope"):
        got = await expect_error(
            stub.ListBadgeClasses(pb.ListBadgeClassesRequest(issuer=unknown)), NOT_FOUND
        )
        assert got.info is not None and got.info.metadata["resource"] == "issuer"


# --- Update -----------------------------------------------------------------------------------


async def test_update_by_mask_and_archival(org: Org) -> None:
    issuer, created = await seeded(org)
    stub = classes(org.admin)
    mask = field_mask_pb2.FieldMask
    got = await stub.UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(
            badge_class=pb.BadgeClass(
                id=created.id, name="Math Master", tags=["math"], expires=pb.Expires()
            ),
            update_mask=mask(paths=["name", "tags", "expires"]),
        )
    )
    assert (got.name, list(got.tags), got.HasField("expires")) == ("Math Master", ["math"], True)
    assert got.expires == pb.Expires()
    assert got.created_at == created.created_at
    assert got.description == created.description and got.alignments == created.alignments
    # Archive: the date is stamped once and kept while archived; unarchiving clears it.
    archived = await stub.UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(
            badge_class=pb.BadgeClass(
                entity_id=created.entity_id, archived=True, archival_note="Replaced"
            ),
            update_mask=mask(paths=["archived", "archival_note"]),
        )
    )
    assert archived.archived and archived.HasField("archived_date")
    again = await stub.UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(badge_class=pb.BadgeClass(id=created.id, name="Math Legend"))
    )
    assert again.archived_date == archived.archived_date and again.archived
    back = await stub.UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(
            badge_class=pb.BadgeClass(id=created.id, archived=False),
            update_mask=mask(paths=["archived"]),
        )
    )
    assert not back.archived and not back.HasField("archived_date")
    assert back.archival_note == "Replaced"
    assert await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=created.id)) == back
    # The issuer and ids are not writable; the result must pass every create rule.
    for request, code, field in [
        (
            pb.UpdateBadgeClassRequest(
                badge_class=pb.BadgeClass(id=created.id, issuer="x"),
                update_mask=mask(paths=["issuer"]),
            ),
            INVALID,
            "update_mask",
        ),
        (
            pb.UpdateBadgeClassRequest(
                badge_class=pb.BadgeClass(id=created.id), update_mask=mask(paths=["archived_date"])
            ),
            INVALID,
            "update_mask",
        ),
        (
            pb.UpdateBadgeClassRequest(
                badge_class=pb.BadgeClass(id=created.id), update_mask=mask(paths=["image"])
            ),
            INVALID,
            "badge_class.image",
        ),
        (
            pb.UpdateBadgeClassRequest(
                badge_class=pb.BadgeClass(id=created.id),
                update_mask=mask(paths=["preferences.custom_property_values"]),
            ),
            INVALID,
            "badge_class.preferences.custom_property_values",
        ),
        (
            pb.UpdateBadgeClassRequest(
                badge_class=pb.BadgeClass(id=created.id),
                update_mask=mask(paths=["criteria_url", "criteria_narrative"]),
            ),
            INVALID,
            "badge_class.criteria_url",
        ),
        (
            pb.UpdateBadgeClassRequest(badge_class=pb.BadgeClass(name="x")),
            INVALID,
            "badge_class.id",
        ),
        (
            pb.UpdateBadgeClassRequest(badge_class=pb.BadgeClass(id="2" * 24, name="x")),
            NOT_FOUND,
            None,
        ),
    ]:
        await expect_error(stub.UpdateBadgeClass(request), code, field=field)
    assert await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=created.id)) == back
    assert back.issuer == issuer.entity_id


# --- Custom property values -------------------------------------------------------------------

DOUBLE_ID, MULTI_ID, STRING_ID, AWARD_ID = (
    "aaaaaaaaaaaaaaaaaaaaaaa1",
    "aaaaaaaaaaaaaaaaaaaaaaa2",
    "aaaaaaaaaaaaaaaaaaaaaaa3",
    "aaaaaaaaaaaaaaaaaaaaaaa4",
)


def property_issuer() -> ipb.Issuer:
    """An issuer defining one property of each type (the DOUBLE one required) and one for
    awards."""
    target = ipb.CUSTOM_PROPERTY_TARGET_BADGE_CLASS
    return small_issuer(
        preferences=ipb.IssuerPreferences(
            custom_property_definitions=[
                ipb.CustomPropertyDefinition(
                    property_type=ipb.CUSTOM_PROPERTY_TYPE_DOUBLE,
                    target_entity_type=target,
                    property_id=DOUBLE_ID,
                    label="Credits",
                    required=True,
                ),
                ipb.CustomPropertyDefinition(
                    property_type=ipb.CUSTOM_PROPERTY_TYPE_STRING_MULTI_CHOICE,
                    target_entity_type=target,
                    property_id=MULTI_ID,
                    label="Topics",
                    choice_values=[
                        ipb.CustomPropertyChoice(id="bbbbbbbbbbbbbbbbbbbbbbb1", label="Algebra"),
                        ipb.CustomPropertyChoice(id="bbbbbbbbbbbbbbbbbbbbbbb2", label="Geometry"),
                    ],
                ),
                ipb.CustomPropertyDefinition(
                    property_type=ipb.CUSTOM_PROPERTY_TYPE_STRING,
                    target_entity_type=target,
                    property_id=STRING_ID,
                    label="Note",
                ),
                ipb.CustomPropertyDefinition(
                    property_type=ipb.CUSTOM_PROPERTY_TYPE_STRING,
                    target_entity_type=ipb.CUSTOM_PROPERTY_TARGET_ASSERTION,
                    property_id=AWARD_ID,
                    label="Score",
                ),
            ]
        )
    )


def values(*items: pb.CustomPropertyValue) -> pb.BadgeClassPreferences:
    """Preferences holding these custom property values."""
    return pb.BadgeClassPreferences(custom_property_values=items)


async def test_custom_property_values_follow_the_issuers_definitions(org: Org) -> None:
    issuer = await create_issuer(org.admin, property_issuer())
    credits = pb.CustomPropertyValue(property_id=DOUBLE_ID, double_value=2.5, public=True)
    ok = await create_class(
        org.admin,
        small_class(
            issuer.id,
            preferences=values(
                credits,
                pb.CustomPropertyValue(
                    property_id=MULTI_ID, array_value=["Algebra", "bbbbbbbbbbbbbbbbbbbbbbb2"]
                ),
                pb.CustomPropertyValue(property_id=STRING_ID, string_value="free text"),
            ),
        ),
    )
    assert [v.property_id for v in ok.preferences.custom_property_values] == [
        DOUBLE_ID,
        MULTI_ID,
        STRING_ID,
    ]
    assert ok.preferences.custom_property_values[0].double_value == 2.5
    assert ok.preferences.custom_property_values[0].HasField("double_value")
    where = "badge_class.preferences.custom_property_values"
    for prefs, field in [
        (values(), where),  # the required DOUBLE property is missing
        (values(pb.CustomPropertyValue(property_id=DOUBLE_ID)), f"{where}[0].double_value"),
        (
            values(pb.CustomPropertyValue(property_id=DOUBLE_ID, double_value=float("inf"))),
            f"{where}[0].double_value",
        ),
        (
            values(pb.CustomPropertyValue(property_id=DOUBLE_ID, double_value=1, string_value="x")),
            f"{where}[0].string_value",
        ),
        (values(credits, credits), f"{where}[1].property_id"),
        (
            values(credits, pb.CustomPropertyValue(property_id=AWARD_ID, string_value="x")),
            f"{where}[1].property_id",
        ),
        (
            values(credits, pb.CustomPropertyValue(property_id="c" * 24, string_value="x")),
            f"{where}[1].property_id",
        ),
        (
            values(credits, pb.CustomPropertyValue(property_id=MULTI_ID, array_value=["Calculus"])),
            f"{where}[1].array_value[0]",
        ),
        (
            values(
                credits,
                pb.CustomPropertyValue(property_id=MULTI_ID, array_value=["Algebra", "Algebra"]),
            ),
            f"{where}[1].array_value[1]",
        ),
        (
            values(credits, pb.CustomPropertyValue(property_id=MULTI_ID, string_value="Algebra")),
            f"{where}[1].string_value",
        ),
        (
            values(credits, pb.CustomPropertyValue(property_id=STRING_ID, array_value=["x"])),
            f"{where}[1].array_value",
        ),
        (
            values(credits, pb.CustomPropertyValue(property_id=STRING_ID, string_value="x" * 1025)),
            f"{where}[1].string_value",
        ),
    ]:
        await expect_error(
            create_class(org.admin, small_class(issuer.id, preferences=prefs)),
            INVALID,
            field=field,
        )
    # The seed's STRING_CHOICE takes a choice by label or id, nothing else.
    seed = await create_issuer(org.admin, seed_issuer())
    by_id = await create_class(
        org.admin,
        seed_class(
            seed.id,
            preferences=values(
                pb.CustomPropertyValue(
                    property_id=AWARD_TYPE, string_value="65663ceb977692fcafcea0b9"
                )
            ),
        ),
    )
    assert by_id.preferences.custom_property_values[0].string_value == "65663ceb977692fcafcea0b9"
    await expect_error(
        create_class(
            org.admin,
            seed_class(
                seed.id,
                preferences=values(
                    pb.CustomPropertyValue(property_id=AWARD_TYPE, string_value="Workshop")
                ),
            ),
        ),
        INVALID,
        field=f"{where}[0].string_value",
    )


# --- Validation -------------------------------------------------------------------------------

BAD_CLASSES: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "badge_class.name"),
    ({"name": "x" * 1025}, Over("badge_class.name")),
    ({"description": ""}, "badge_class.description"),
    ({"description": "x" * 16385}, Over("badge_class.description")),
    ({"image": ""}, "badge_class.image"),
    ({"image": "/relative.png"}, "badge_class.image"),
    ({"image": "data:image/png;base64," + "A" * 300_000}, Over("badge_class.image")),
    ({"criteria_narrative": "", "criteria_url": ""}, "badge_class.criteria_url"),
    ({"criteria_url": "criteria"}, "badge_class.criteria_url"),
    ({"achievement_type": "x" * 256}, Over("badge_class.achievement_type")),
    (
        {"alignments": [pb.Alignment(target_url="https://a.example")]},
        "badge_class.alignments[0].target_name",
    ),
    (
        {"alignments": [pb.Alignment(target_name="A", target_url="text")]},
        "badge_class.alignments[0].target_url",
    ),
    (
        {"alignments": [pb.Alignment(target_name="A", target_url="https://a.example")] * 101},
        Over("badge_class.alignments"),
    ),
    ({"tags": ["a", ""]}, "badge_class.tags[1]"),
    ({"tags": ["a", "a"]}, "badge_class.tags[1]"),
    ({"tags": ["t"] * 101}, Over("badge_class.tags")),
    ({"tags": ["x" * 256]}, Over("badge_class.tags[0]")),
    ({"expires": pb.Expires(amount=30)}, "badge_class.expires.duration"),
    ({"expires": pb.Expires(duration=pb.EXPIRES_DURATION_DAYS)}, "badge_class.expires.amount"),
    (
        {"expires": pb.Expires(amount=-1, duration=pb.EXPIRES_DURATION_DAYS)},
        "badge_class.expires.amount",
    ),
    (
        {"expires": pb.Expires(amount=2**31 - 1, duration=pb.EXPIRES_DURATION_YEARS)},
        "badge_class.expires.amount",
    ),
    (
        {"expires": pb.Expires(amount=1, duration=9)},  # type: ignore[arg-type]
        "badge_class.expires.duration",
    ),
    ({"extensions": struct({"x": float("-inf")})}, "badge_class.extensions.x"),
    ({"source": "s" * 65}, Over("badge_class.source")),
    ({"source_url": "nope"}, "badge_class.source_url"),
    ({"original_json": "nope"}, "badge_class.original_json"),
    (
        {"ob3_properties": pb.Ob3Properties(credit_hours=-1)},
        "badge_class.ob3_properties.credit_hours",
    ),
    (
        {"ob3_properties": pb.Ob3Properties(credit_hours=float("nan"))},
        "badge_class.ob3_properties.credit_hours",
    ),
    (
        {"ob3_properties": pb.Ob3Properties(credit_hours=1e300)},
        "badge_class.ob3_properties.credit_hours",
    ),
    (
        {"ob3_properties": pb.Ob3Properties(human_code="x" * 256)},
        Over("badge_class.ob3_properties.human_code"),
    ),
    (
        {"preferences": pb.BadgeClassPreferences(enabled_print_cert_template_ids=["61e9"])},
        "badge_class.preferences.enabled_print_cert_template_ids[0]",
    ),
    (
        {
            "preferences": pb.BadgeClassPreferences(
                enabled_print_cert_template_ids=["61e9d238c5afe622816febb3"],
                default_print_cert_template_id="71e9d238c5afe622816febb3",
            )
        },
        "badge_class.preferences.default_print_cert_template_id",
    ),
    (
        {"preferences": values(pb.CustomPropertyValue(property_id=AWARD_TYPE, string_value="x"))},
        "badge_class.preferences.custom_property_values[0].property_id",
    ),
]


async def test_create_rejects_each_bad_field(org: Org) -> None:
    issuer = await create_issuer(org.admin)
    for override, field in BAD_CLASSES:
        await expect_error(
            create_class(org.admin, small_class(issuer.id, **override)),
            INVALID,
            reason=reason_for(field),
            field=field,
        )
    assert (
        await classes(org.reader).ListBadgeClasses(pb.ListBadgeClassesRequest())
    ).total_size == 0


# --- Tenancy and roles ------------------------------------------------------------------------


async def test_other_orgs_classes_are_not_found(org: Org, other_org: Org) -> None:
    _, mine = await seeded(org)
    theirs = classes(other_org.admin)
    for lookup in lookups(mine):
        await expect_error(theirs.GetBadgeClass(pb.GetBadgeClassRequest(**lookup)), NOT_FOUND)
        await expect_error(theirs.DeleteBadgeClass(pb.DeleteBadgeClassRequest(**lookup)), NOT_FOUND)
    await expect_error(
        theirs.UpdateBadgeClass(
            pb.UpdateBadgeClassRequest(badge_class=pb.BadgeClass(id=mine.id, name="Theirs"))
        ),
        NOT_FOUND,
    )
    assert (await theirs.ListBadgeClasses(pb.ListBadgeClassesRequest())).total_size == 0
    assert await classes(org.reader).GetBadgeClass(pb.GetBadgeClassRequest(ref=mine.id)) == mine


async def test_reader_cannot_write(org: Org) -> None:
    _, bc = await seeded(org)
    reader = classes(org.reader)
    for call in (
        reader.CreateBadgeClass(pb.CreateBadgeClassRequest(badge_class=small_class(bc.issuer))),
        reader.UpdateBadgeClass(
            pb.UpdateBadgeClassRequest(badge_class=pb.BadgeClass(id=bc.id, name="R"))
        ),
        reader.DeleteBadgeClass(pb.DeleteBadgeClassRequest(id_or_entity_id=bc.id)),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    assert await reader.GetBadgeClass(pb.GetBadgeClassRequest(ref=bc.id)) == bc
