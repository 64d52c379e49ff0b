"""badges.v1.IssuerService (Badgr v2 issuers): every seed field round trip, Badgr's three ids,
every seed lookup (id, entityId, base64 openBadgeId, ref) for get and delete, bad base64 and
unknown ids, create/list/update/delete, the cascade rule, the Open Badges 2.0 Profile, the
public base URL setting, validation per field, tenancy and roles.

The builders here (``seed_issuer``, ``create_issuer``, ``b64``) are shared with
tests/test_badge_classes.py."""

from __future__ import annotations

import base64
import re
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format, struct_pb2

from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_class_pb2_grpc, issuer_pb2_grpc
from badge_service.api.badges.v1 import issuer_pb2 as pb
from badge_service.cli import parser
from badge_service.config import Settings
from badge_service.domain import paging
from badge_service.server import start
from tests.support import Backend, Client, Org, Over, expect_error, reason_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
BASE = "http://localhost:50051"
HEX24 = re.compile(r"^[0-9a-f]{24}$")
ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def b64(text: str, *, urlsafe: bool = False, pad: bool = True) -> str:
    """Base64 of ``text``, standard or URL-safe, with or without padding."""
    raw = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text.encode()).decode()
    return raw if pad else raw.rstrip("=")


def lookup_of(name: str, value: str) -> dict[str, Any]:
    """Keyword arguments naming one lookup field of a request."""
    return {name: value}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct holding ``value``."""
    out = struct_pb2.Struct()
    out.update(value)
    return out


def issuers(client: Client) -> issuer_pb2_grpc.IssuerServiceStub:
    """The IssuerService stub of a client."""
    return client.stub(issuer_pb2_grpc.IssuerServiceStub)


def classes(client: Client) -> badge_class_pb2_grpc.BadgeClassServiceStub:
    """The BadgeClassService stub of a client."""
    return client.stub(badge_class_pb2_grpc.BadgeClassServiceStub)


def seed_issuer(**overrides: Any) -> pb.Issuer:
    """The seed's issuer with every writable field set (and values that pass our checks)."""
    fields: dict[str, Any] = {
        "name": "Credentials Faculty",
        "image": "https://api.badgr.ws/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw/image",
        "email": "contact@example.com",
        "description": "This is the faculty of the Credentials University.",
        "url": "https://example.com",
        "staff": [
            pb.IssuerStaff(
                role=pb.ISSUER_STAFF_ROLE_STAFF,
                user="Hey7J-GRSJeu6FNnHQwNyw",
                user_profile=pb.BadgeUserProfile(
                    first_name="Jane",
                    last_name="Doe",
                    emails=[
                        pb.UserEmail(email="Jane.Doe@example.com", verified=True, primary=True)
                    ],
                    url=["https://example.com"],
                    telephone=["+15415551212"],
                    badgr_domain="badgrsupportgroup.badgr.com",
                    agreed_terms_version=4,
                    marketing_opt_in=True,
                    has_password_set=True,
                ),
            )
        ],
        "badgr_domain": "badgrsupportgroup.badgr.com",
        "extensions": struct({"extensions:contact": {"phone": "+1"}, "level": 3}),
        "source": "local",
        "source_url": "https://example.com/issuers/1",
        "image_path": "uploads/issuers/issuer-JTdhRmlFQZScIjoUr6x4UQ.png",
        "original_json": "{}",
        "badge_skill_linking_preferences": pb.BadgeSkillLinkingPreferences(
            type="TALENT_NEURON", server_uri="https://example.com/", indeed_region="us"
        ),
        "preferences": pb.IssuerPreferences(
            custom_property_definitions=[
                pb.CustomPropertyDefinition(
                    property_type=pb.CUSTOM_PROPERTY_TYPE_STRING_CHOICE,
                    target_entity_type=pb.CUSTOM_PROPERTY_TARGET_BADGE_CLASS,
                    property_id="66bf8231d88b51901d49d637",
                    label="Award Type",
                    sub_label="Type of award",
                    public=True,
                    required=True,
                    choice_values=[
                        pb.CustomPropertyChoice(id="65663ceb977692fcafcea0b9", label="Course"),
                        pb.CustomPropertyChoice(label="Event"),
                    ],
                )
            ],
            default_print_cert_template_id="5f4e4e4e2dc038241ad01d83",
            enabled_print_cert_template_ids=[
                "5f4e4e4e2dc038241ad01d83",
                "6f4e4e4e2dc038241ad01d83",
            ],
        ),
    }
    fields.update(overrides)
    return pb.Issuer(**fields)


def small_issuer(name: str = "Faculty", **overrides: Any) -> pb.Issuer:
    """The smallest issuer every rule accepts."""
    fields: dict[str, Any] = {"name": name, "email": "a@example.com", "url": "https://example.com"}
    fields.update(overrides)
    return pb.Issuer(**fields)


async def create_issuer(client: Client, issuer: pb.Issuer | None = None) -> pb.Issuer:
    """Creates ``issuer`` (the small one by default)."""
    return await issuers(client).CreateIssuer(
        pb.CreateIssuerRequest(issuer=issuer or small_issuer())
    )


def small_class(issuer: str, name: str = "Math Expert", **overrides: Any) -> bcpb.BadgeClass:
    """The smallest badge class every rule accepts, of ``issuer`` (id or entity id)."""
    fields: dict[str, Any] = {
        "issuer": issuer,
        "name": name,
        "description": "Mastery of Math.",
        "image": "https://example.com/math.png",
        "criteria_narrative": "Pass the exam.",
    }
    fields.update(overrides)
    return bcpb.BadgeClass(**fields)


async def create_class(client: Client, bc: bcpb.BadgeClass) -> bcpb.BadgeClass:
    """Creates a badge class."""
    return await classes(client).CreateBadgeClass(bcpb.CreateBadgeClassRequest(badge_class=bc))


# --- Create and the seed's fields -------------------------------------------------------------


async def test_create_returns_every_seed_field(org: Org) -> None:
    sent = seed_issuer()
    got = await create_issuer(org.admin, sent)
    assert HEX24.match(got.id), got.id
    assert ENTITY_ID.match(got.entity_id), got.entity_id
    # The entity id is the unpadded URL-safe base64 of 16 bytes (a UUID).
    assert len(base64.urlsafe_b64decode(got.entity_id + "==")) == 16
    assert got.entity_type == "Issuer"
    assert got.open_badge_id == f"{BASE}/public/issuers/{got.entity_id}"
    assert got.organization_id == f"{org.id:024x}"
    assert got.created_by.isdigit()
    assert got.HasField("created_at") and got.updated_at == got.created_at
    assert not got.HasField("open_badge")
    # Every writable field comes back as sent, except what the service fills in.
    expected = pb.Issuer()
    expected.CopyFrom(sent)
    profile = expected.staff[0].user_profile
    profile.entity_type, profile.entity_id = "BadgeUser", "Hey7J-GRSJeu6FNnHQwNyw"
    generated_choice = got.preferences.custom_property_definitions[0].choice_values[1].id
    assert HEX24.match(generated_choice)
    expected.preferences.custom_property_definitions[0].choice_values[1].id = generated_choice
    for field in ("id", "entity_id", "open_badge_id", "created_by", "organization_id"):
        setattr(expected, field, getattr(got, field))
    expected.entity_type = "Issuer"
    expected.created_at.CopyFrom(got.created_at)
    expected.updated_at.CopyFrom(got.updated_at)
    assert got == expected
    # The seed's JSON names are the proto3 JSON names.
    as_json = json_format.MessageToDict(got)
    for key in (
        "entityType",
        "entityId",
        "openBadgeId",
        "createdAt",
        "badgrDomain",
        "createdBy",
        "organizationId",
        "sourceUrl",
        "imagePath",
        "originalJson",
        "badgeSkillLinkingPreferences",
    ):
        assert key in as_json, key
    assert as_json["staff"][0]["userProfile"]["hasPasswordSet"] is True
    assert as_json["preferences"]["customPropertyDefinitions"][0]["choiceValues"][0] == {
        "id": "65663ceb977692fcafcea0b9",
        "label": "Course",
    }
    assert as_json["badgeSkillLinkingPreferences"] == {
        "type": "TALENT_NEURON",
        "serverUri": "https://example.com/",
        "indeedRegion": "us",
    }


async def test_create_fills_defaults(org: Org) -> None:
    got = await create_issuer(
        org.admin,
        small_issuer(
            source="",
            preferences=pb.IssuerPreferences(
                custom_property_definitions=[
                    pb.CustomPropertyDefinition(
                        property_type=pb.CUSTOM_PROPERTY_TYPE_STRING,
                        target_entity_type=pb.CUSTOM_PROPERTY_TARGET_ASSERTION,
                        label="Score",
                    )
                ]
            ),
        ),
    )
    assert got.source == "local"
    assert HEX24.match(got.preferences.custom_property_definitions[0].property_id)
    assert got.staff == [] and got.image == "" and dict(got.extensions) == {}
    second = await create_issuer(org.admin)
    assert second.id > got.id and second.entity_id != got.entity_id


async def test_data_uri_image_is_accepted(org: Org) -> None:
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    got = await create_issuer(org.admin, small_issuer(image=image))
    assert got.image == image


# --- Lookups ----------------------------------------------------------------------------------


def lookups(issuer: pb.Issuer) -> list[dict[str, Any]]:
    """Every way the seed names an issuer: id, entityId, base64 openBadgeId, ref."""
    obid = issuer.open_badge_id
    return [
        {"id_or_entity_id": issuer.id},
        {"id_or_entity_id": issuer.entity_id},
        {"issuer_open_badge_id_base64": b64(obid)},
        {"issuer_open_badge_id_base64": b64(obid, urlsafe=True, pad=False)},
        {"ref": b64(obid)},
        {"ref": b64(obid, urlsafe=True, pad=False)},
        {"ref": obid},
        {"ref": issuer.id},
        {"ref": issuer.entity_id},
    ]


async def test_get_by_every_seed_lookup(org: Org) -> None:
    created = await create_issuer(org.admin, seed_issuer())
    await create_issuer(org.admin)  # another issuer, never returned by mistake
    for lookup in lookups(created):
        got = await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(**lookup))
        assert got == created, lookup


async def test_delete_by_every_seed_lookup(org: Org) -> None:
    for lookup_of in range(len(lookups(pb.Issuer()))):
        created = await create_issuer(org.admin)
        lookup = lookups(created)[lookup_of]
        await issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(**lookup))
        await expect_error(
            issuers(org.admin).GetIssuer(pb.GetIssuerRequest(id_or_entity_id=created.id)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        # Deleting it again is NOT_FOUND too.
        await expect_error(
            issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(**lookup)), NOT_FOUND
        )
    assert (await issuers(org.admin).ListIssuers(pb.ListIssuersRequest())).total_size == 0


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("!!!not-base64!!!", "is not base64"),
        ("QUJD" + "Q", "is not base64 (bad length)"),
        (base64.b64encode(b"\xff\xfe\xfd").decode(), "does not decode to an openBadgeId URL"),
        (b64("not a url"), "does not decode to an http(s) openBadgeId URL"),
        (b64("ftp://localhost/public/issuers/x"), "does not decode to an http(s) openBadgeId URL"),
        ("QQ===", "is not base64"),
        ("QUJD" * 2000, Over("must be at most 4096 characters")),
    ],
)
async def test_bad_base64_is_invalid_argument(org: Org, value: str, why: str) -> None:
    for name in ("issuer_open_badge_id_base64", "ref"):
        got = await expect_error(
            issuers(org.reader).GetIssuer(pb.GetIssuerRequest(**lookup_of(name, value))),
            INVALID,
            reason=reason_for(why),
            field=name,
        )
        assert got.bad_request is not None
        assert got.bad_request.field_violations[0].description == why
        await expect_error(
            issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(**lookup_of(name, value))),
            INVALID,
            field=name,
        )


async def test_unknown_lookups_are_not_found(org: Org) -> None:
    created = await create_issuer(org.admin)
    unknown_entity = "AAAAAAAAAAAAAAAAAAAAAA"
    cases: list[dict[str, Any]] = [
        {"id_or_entity_id": "0" * 24},
        {"id_or_entity_id": unknown_entity},
        {"id_or_entity_id": "not-an-id"},
        {"id_or_entity_id": "x" * 5000},
        # An openBadgeId under someone else's base URL, or not an issuer's.
        {
            "issuer_open_badge_id_base64": b64(
                f"https://api.badgr.io/public/issuers/{created.entity_id}"
            )
        },
        {"issuer_open_badge_id_base64": b64(f"{BASE}/public/badges/{created.entity_id}")},
        {"issuer_open_badge_id_base64": b64(f"{BASE}/public/issuers/{unknown_entity}")},
        {"issuer_open_badge_id_base64": b64(f"{BASE}/public/issuers/{created.entity_id}/image")},
        {"ref": f"https://api.badgr.io/public/issuers/{created.entity_id}"},
        {"ref": b64(f"{BASE}/public/issuers/{unknown_entity}")},
        {"ref": "f" * 24},
    ]
    for lookup in cases:
        got = await expect_error(
            issuers(org.reader).GetIssuer(pb.GetIssuerRequest(**lookup)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        assert got.info is not None and got.info.metadata["resource"] == "issuer"
        assert len(got.message) < 300  # a long value is not echoed whole
        await expect_error(
            issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(**lookup)), NOT_FOUND
        )
    # Nothing was deleted by any of them.
    assert await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=created.id)) == created


async def test_nul_in_a_lookup_is_invalid_argument(org: Org) -> None:
    for name in ("id_or_entity_id", "issuer_open_badge_id_base64", "ref"):
        await expect_error(
            issuers(org.reader).GetIssuer(pb.GetIssuerRequest(**lookup_of(name, "a\x00b"))),
            INVALID,
            field=name,
        )


async def test_a_lookup_is_required(org: Org) -> None:
    for request in (pb.GetIssuerRequest(), pb.GetIssuerRequest(id_or_entity_id="")):
        await expect_error(issuers(org.reader).GetIssuer(request), INVALID, field="id_or_entity_id")
    await expect_error(
        issuers(org.reader).GetIssuer(pb.GetIssuerRequest(issuer_open_badge_id_base64="")),
        INVALID,
        field="issuer_open_badge_id_base64",
    )
    await expect_error(
        issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref="")), INVALID, field="ref"
    )
    await expect_error(
        issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest()), INVALID, field="id_or_entity_id"
    )


# --- Open Badges 2.0 --------------------------------------------------------------------------

# The Open Badges 2.0 Profile: id and type are required; Badgr (and verifiers) also need name,
# url and email of an issuer.
OB2_PROFILE_REQUIRED = ("@context", "type", "id", "name", "url", "email")


async def test_open_badges_profile(org: Org) -> None:
    created = await create_issuer(org.admin, seed_issuer())
    got = await issuers(org.reader).GetIssuer(
        pb.GetIssuerRequest(id_or_entity_id=created.entity_id, view=pb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    doc = json_format.MessageToDict(got.open_badge)
    for key in OB2_PROFILE_REQUIRED:
        assert doc.get(key), key
    assert doc == {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "Issuer",
        "id": created.open_badge_id,
        "name": "Credentials Faculty",
        "url": "https://example.com",
        "email": "contact@example.com",
        # Served by the HTTP face (issue 13): the issuer's revoked assertions.
        "revocationList": f"{created.open_badge_id}/revocations",
        "description": "This is the faculty of the Credentials University.",
        "image": "https://api.badgr.ws/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw/image",
    }
    # The rest of the reply is the plain resource.
    got.ClearField("open_badge")
    assert got == created
    # Optional properties are left out rather than sent empty.
    small = await create_issuer(org.admin)
    doc = json_format.MessageToDict(
        (
            await issuers(org.reader).GetIssuer(
                pb.GetIssuerRequest(ref=small.id, view=pb.BADGR_VIEW_OPEN_BADGES_V2)
            )
        ).open_badge
    )
    assert set(doc) == {*OB2_PROFILE_REQUIRED, "revocationList"}
    for view in (pb.BADGR_VIEW_UNSPECIFIED, pb.BADGR_VIEW_BADGR):
        plain = await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=small.id, view=view))
        assert not plain.HasField("open_badge")
    await expect_error(
        issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=small.id, view=7)),  # type: ignore[arg-type]
        INVALID,
        field="view",
    )


# --- List -------------------------------------------------------------------------------------


async def test_list_pages_oldest_first(org: Org, other_org: Org) -> None:
    made = [await create_issuer(org.admin, small_issuer(f"Issuer {i}")) for i in range(5)]
    await create_issuer(other_org.admin)
    stub = issuers(org.reader)
    first = await stub.ListIssuers(pb.ListIssuersRequest(page_size=2))
    assert [i.id for i in first.issuers] == [m.id for m in made[:2]]
    assert first.total_size == 5 and first.next_page_token
    second = await stub.ListIssuers(
        pb.ListIssuersRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [i.id for i in second.issuers] == [m.id for m in made[2:4]]
    third = await stub.ListIssuers(
        pb.ListIssuersRequest(page_size=2, page_token=second.next_page_token)
    )
    assert list(third.issuers) == [made[4]] and third.next_page_token == ""
    everything = await stub.ListIssuers(pb.ListIssuersRequest(page_size=1000))  # clamped
    assert list(everything.issuers) == made and everything.next_page_token == ""
    await expect_error(
        stub.ListIssuers(pb.ListIssuersRequest(page_size=-1)), INVALID, field="page_size"
    )
    for token in (
        "garbage",
        paging.encode_page_token("a\x00b", paging.filter_fingerprint("badgr_issuers")),
        paging.encode_page_token(12, paging.filter_fingerprint("badgr_issuers")),
        paging.encode_page_token(made[0].id, paging.filter_fingerprint("badgr_badge_classes")),
    ):
        await expect_error(
            stub.ListIssuers(pb.ListIssuersRequest(page_token=token)), INVALID, field="page_token"
        )


# --- Update -----------------------------------------------------------------------------------


async def test_update_by_mask(org: Org) -> None:
    created = await create_issuer(org.admin, seed_issuer())
    stub = issuers(org.admin)
    got = await stub.UpdateIssuer(
        pb.UpdateIssuerRequest(
            issuer=pb.Issuer(id=created.id, name="Faculty of Credentials", email="x@example.org"),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "email"]),
        )
    )
    assert (got.name, got.email) == ("Faculty of Credentials", "x@example.org")
    assert (
        got.created_at == created.created_at
        and got.updated_at.ToDatetime() >= created.updated_at.ToDatetime()
    )
    unchanged = pb.Issuer()
    unchanged.CopyFrom(got)
    unchanged.name, unchanged.email = created.name, created.email
    unchanged.updated_at.CopyFrom(created.updated_at)
    assert unchanged == created
    # A nested path, named by entity id; an empty mask means "the fields that are set".
    got = await stub.UpdateIssuer(
        pb.UpdateIssuerRequest(
            issuer=pb.Issuer(
                entity_id=created.entity_id,
                preferences=pb.IssuerPreferences(
                    default_print_cert_template_id="6f4e4e4e2dc038241ad01d83"
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["preferences.default_print_cert_template_id"]
            ),
        )
    )
    assert got.preferences.default_print_cert_template_id == "6f4e4e4e2dc038241ad01d83"
    assert len(got.preferences.custom_property_definitions) == 1
    got = await stub.UpdateIssuer(
        pb.UpdateIssuerRequest(issuer=pb.Issuer(id=created.id, description="New"))
    )
    assert got.description == "New" and got.name == "Faculty of Credentials"
    # Clearing through the mask.
    got = await stub.UpdateIssuer(
        pb.UpdateIssuerRequest(
            issuer=pb.Issuer(id=created.id), update_mask=field_mask_pb2.FieldMask(paths=["staff"])
        )
    )
    assert list(got.staff) == []
    assert await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=created.id)) == got


async def test_update_rejects_bad_input(org: Org) -> None:
    created = await create_issuer(org.admin)
    stub = issuers(org.admin)
    mask = field_mask_pb2.FieldMask
    cases: list[tuple[pb.UpdateIssuerRequest, grpc.StatusCode, str | None]] = [
        (pb.UpdateIssuerRequest(issuer=pb.Issuer(name="x")), INVALID, "issuer.id"),
        (
            pb.UpdateIssuerRequest(
                issuer=pb.Issuer(id=created.id, entity_id="x"),
                update_mask=mask(paths=["entity_id"]),
            ),
            INVALID,
            "update_mask",
        ),
        (
            pb.UpdateIssuerRequest(
                issuer=pb.Issuer(id=created.id), update_mask=mask(paths=["open_badge"])
            ),
            INVALID,
            "update_mask",
        ),
        (
            pb.UpdateIssuerRequest(
                issuer=pb.Issuer(id=created.id), update_mask=mask(paths=["name.first"])
            ),
            INVALID,
            "update_mask",
        ),
        (
            pb.UpdateIssuerRequest(issuer=pb.Issuer(id=created.id, email="not-an-email")),
            INVALID,
            "issuer.email",
        ),
        (
            pb.UpdateIssuerRequest(
                issuer=pb.Issuer(id=created.id), update_mask=mask(paths=["name"])
            ),
            INVALID,
            "issuer.name",
        ),
        (pb.UpdateIssuerRequest(issuer=pb.Issuer(id="0" * 24, name="x")), NOT_FOUND, None),
    ]
    for request, code, field in cases:
        await expect_error(stub.UpdateIssuer(request), code, field=field)
    assert await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=created.id)) == created


# --- Validation -------------------------------------------------------------------------------


def _def(**kw: Any) -> pb.CustomPropertyDefinition:
    fields: dict[str, Any] = {
        "property_type": pb.CUSTOM_PROPERTY_TYPE_STRING,
        "target_entity_type": pb.CUSTOM_PROPERTY_TARGET_BADGE_CLASS,
        "label": "L",
    }
    fields.update(kw)
    return pb.CustomPropertyDefinition(**fields)


def _staff(**kw: Any) -> pb.IssuerStaff:
    fields: dict[str, Any] = {"role": pb.ISSUER_STAFF_ROLE_OWNER, "user": "Hey7J-GRSJeu6FNnHQwNyw"}
    fields.update(kw)
    return pb.IssuerStaff(**fields)


HEX_A, HEX_B = "5f4e4e4e2dc038241ad01d83", "6f4e4e4e2dc038241ad01d83"
BAD_ISSUERS: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "issuer.name"),
    ({"name": "   "}, "issuer.name"),
    ({"name": "x" * 1025}, Over("issuer.name")),
    ({"email": ""}, "issuer.email"),
    ({"email": "contact@"}, "issuer.email"),
    ({"email": "a b@example.com"}, "issuer.email"),
    ({"url": ""}, "issuer.url"),
    ({"url": "ftp://example.com"}, "issuer.url"),
    ({"url": "https://"}, "issuer.url"),
    ({"url": "https://exa mple.com"}, "issuer.url"),
    ({"url": "https://[::1"}, "issuer.url"),
    ({"image": "javascript:alert(1)"}, "issuer.image"),
    ({"image": "data:image/png;base64,@@@@"}, "issuer.image"),
    ({"image": "data:text/html;base64,QUJD"}, "issuer.image"),
    ({"description": "a\x00b"}, "issuer.description"),
    ({"description": "x" * 16385}, Over("issuer.description")),
    ({"badgr_domain": "x" * 256}, Over("issuer.badgr_domain")),
    ({"source_url": "example.com/issuers/1"}, "issuer.source_url"),
    ({"image_path": "x" * 1025}, Over("issuer.image_path")),
    ({"original_json": "{not json"}, "issuer.original_json"),
    ({"original_json": "[" * 50_000}, "issuer.original_json"),
    ({"extensions": struct({"a\x00": 1})}, "issuer.extensions.a\x00"),
    ({"extensions": struct({"a": ["x\x00"]})}, "issuer.extensions.a[0]"),
    ({"extensions": struct({"a": float("nan")})}, "issuer.extensions.a"),
    ({"extensions": struct({"a": "x" * 70_000})}, Over("issuer.extensions")),
    ({"staff": [_staff(role=pb.ISSUER_STAFF_ROLE_UNSPECIFIED)]}, "issuer.staff[0].role"),
    ({"staff": [_staff(role=9)]}, "issuer.staff[0].role"),
    ({"staff": [_staff(user="")]}, "issuer.staff[0].user"),
    ({"staff": [_staff(), _staff()]}, "issuer.staff[1].user"),
    ({"staff": [_staff()] * 101}, Over("issuer.staff")),
    (
        {"staff": [_staff(user_profile=pb.BadgeUserProfile(entity_id="someone-else"))]},
        "issuer.staff[0].user_profile.entity_id",
    ),
    (
        {
            "staff": [
                _staff(
                    user_profile=pb.BadgeUserProfile(
                        emails=[
                            pb.UserEmail(email="a@example.com", primary=True),
                            pb.UserEmail(email="b@example.com", primary=True),
                        ]
                    )
                )
            ]
        },
        "issuer.staff[0].user_profile.emails[1].primary",
    ),
    (
        {"staff": [_staff(user_profile=pb.BadgeUserProfile(emails=[pb.UserEmail(email="x")]))]},
        "issuer.staff[0].user_profile.emails[0].email",
    ),
    (
        {"staff": [_staff(user_profile=pb.BadgeUserProfile(url=["mailto:a@example.com"]))]},
        "issuer.staff[0].user_profile.url[0]",
    ),
    (
        {"staff": [_staff(user_profile=pb.BadgeUserProfile(agreed_terms_version=-1))]},
        "issuer.staff[0].user_profile.agreed_terms_version",
    ),
    (
        {"badge_skill_linking_preferences": pb.BadgeSkillLinkingPreferences(server_uri="x")},
        "issuer.badge_skill_linking_preferences.server_uri",
    ),
    (
        {"preferences": pb.IssuerPreferences(custom_property_definitions=[_def(property_type=0)])},
        "issuer.preferences.custom_property_definitions[0].property_type",
    ),
    (
        {"preferences": pb.IssuerPreferences(custom_property_definitions=[_def(property_type=77)])},
        "issuer.preferences.custom_property_definitions[0].property_type",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                custom_property_definitions=[_def(target_entity_type=0)]
            )
        },
        "issuer.preferences.custom_property_definitions[0].target_entity_type",
    ),
    (
        {"preferences": pb.IssuerPreferences(custom_property_definitions=[_def(label="")])},
        "issuer.preferences.custom_property_definitions[0].label",
    ),
    (
        {"preferences": pb.IssuerPreferences(custom_property_definitions=[_def(property_id="x")])},
        "issuer.preferences.custom_property_definitions[0].property_id",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                custom_property_definitions=[_def(property_id=HEX_A), _def(property_id=HEX_A)]
            )
        },
        "issuer.preferences.custom_property_definitions[1].property_id",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                custom_property_definitions=[
                    _def(property_type=pb.CUSTOM_PROPERTY_TYPE_STRING_CHOICE)
                ]
            )
        },
        "issuer.preferences.custom_property_definitions[0].choice_values",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                custom_property_definitions=[
                    _def(choice_values=[pb.CustomPropertyChoice(label="a")])
                ]
            )
        },
        "issuer.preferences.custom_property_definitions[0].choice_values",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                custom_property_definitions=[
                    _def(
                        property_type=pb.CUSTOM_PROPERTY_TYPE_STRING_MULTI_CHOICE,
                        choice_values=[
                            pb.CustomPropertyChoice(label="a"),
                            pb.CustomPropertyChoice(label="a"),
                        ],
                    )
                ]
            )
        },
        "issuer.preferences.custom_property_definitions[0].choice_values[1].label",
    ),
    (
        {"preferences": pb.IssuerPreferences(default_print_cert_template_id="nope")},
        "issuer.preferences.default_print_cert_template_id",
    ),
    (
        {
            "preferences": pb.IssuerPreferences(
                default_print_cert_template_id=HEX_B, enabled_print_cert_template_ids=[HEX_A]
            )
        },
        "issuer.preferences.default_print_cert_template_id",
    ),
    (
        {"preferences": pb.IssuerPreferences(enabled_print_cert_template_ids=[HEX_A, HEX_A])},
        "issuer.preferences.enabled_print_cert_template_ids[1]",
    ),
]


async def test_create_rejects_each_bad_field(org: Org) -> None:
    stub = issuers(org.admin)
    for override, field in BAD_ISSUERS:
        await expect_error(
            stub.CreateIssuer(pb.CreateIssuerRequest(issuer=small_issuer(**override))),
            INVALID,
            reason=reason_for(field),
            field=field,
        )
    assert (await stub.ListIssuers(pb.ListIssuersRequest())).total_size == 0


# --- Cascade ----------------------------------------------------------------------------------


async def test_delete_with_badge_classes_needs_cascade(backend: Backend, org: Org) -> None:
    issuer = await create_issuer(org.admin)
    other = await create_issuer(org.admin)
    made = [await create_class(org.admin, small_class(issuer.entity_id, f"C{i}")) for i in range(2)]
    kept = await create_class(org.admin, small_class(other.id))
    codes = await classes(org.admin).CreateClaimCodes(
        bcpb.CreateClaimCodesRequest(id_or_entity_id=made[0].id, count=3)
    )
    assert len(codes.claim_codes) == 3
    got = await expect_error(
        issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(id_or_entity_id=issuer.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="ISSUER_HAS_BADGE_CLASSES",
    )
    assert got.info is not None and got.info.metadata["badge_class_count"] == "2"
    # Nothing was deleted.
    assert await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=issuer.id)) == issuer
    listed = await classes(org.reader).ListBadgeClasses(
        bcpb.ListBadgeClassesRequest(issuer=issuer.id)
    )
    assert list(listed.badge_classes) == made
    assert (
        await classes(org.reader).ListClaimCodes(
            bcpb.ListClaimCodesRequest(id_or_entity_id=made[0].id)
        )
    ).total_size == 3
    # With cascade the issuer, its classes and their codes go, in one transaction.
    await issuers(org.admin).DeleteIssuer(
        pb.DeleteIssuerRequest(issuer_open_badge_id_base64=b64(issuer.open_badge_id), cascade=True)
    )
    await expect_error(issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=issuer.id)), NOT_FOUND)
    for bc in made:
        await expect_error(
            classes(org.reader).GetBadgeClass(bcpb.GetBadgeClassRequest(id_or_entity_id=bc.id)),
            NOT_FOUND,
        )
    from sqlalchemy import func, select

    from badge_service.store.models import badgr_claim_codes

    async with backend.db.read() as conn:
        left = await conn.execute(
            select(func.count())
            .select_from(badgr_claim_codes)
            .where(badgr_claim_codes.c.badge_class_id.in_([bc.id for bc in made]))
        )
        assert left.scalar_one() == 0
    # The other issuer and its class are untouched.
    assert (
        await classes(org.reader).GetBadgeClass(bcpb.GetBadgeClassRequest(id_or_entity_id=kept.id))
        == kept
    )
    # Once its class is gone, an issuer needs no cascade.
    await classes(org.admin).DeleteBadgeClass(bcpb.DeleteBadgeClassRequest(ref=kept.entity_id))
    await issuers(org.admin).DeleteIssuer(pb.DeleteIssuerRequest(ref=other.open_badge_id))
    assert (await issuers(org.reader).ListIssuers(pb.ListIssuersRequest())).total_size == 0


# --- Tenancy and roles ------------------------------------------------------------------------


async def test_other_orgs_issuers_are_not_found(org: Org, other_org: Org) -> None:
    mine = await create_issuer(org.admin)
    theirs = issuers(other_org.admin)
    for lookup in lookups(mine):
        await expect_error(theirs.GetIssuer(pb.GetIssuerRequest(**lookup)), NOT_FOUND)
        await expect_error(theirs.DeleteIssuer(pb.DeleteIssuerRequest(**lookup)), NOT_FOUND)
    await expect_error(
        theirs.UpdateIssuer(pb.UpdateIssuerRequest(issuer=pb.Issuer(id=mine.id, name="Mine"))),
        NOT_FOUND,
    )
    await expect_error(
        classes(other_org.admin).CreateBadgeClass(
            bcpb.CreateBadgeClassRequest(badge_class=small_class(mine.entity_id))
        ),
        NOT_FOUND,
    )
    assert (await theirs.ListIssuers(pb.ListIssuersRequest())).total_size == 0
    assert await issuers(org.reader).GetIssuer(pb.GetIssuerRequest(ref=mine.id)) == mine


async def test_reader_cannot_write(org: Org) -> None:
    created = await create_issuer(org.admin)
    reader = issuers(org.reader)
    for call in (
        reader.CreateIssuer(pb.CreateIssuerRequest(issuer=small_issuer())),
        reader.UpdateIssuer(pb.UpdateIssuerRequest(issuer=pb.Issuer(id=created.id, name="R"))),
        reader.DeleteIssuer(pb.DeleteIssuerRequest(id_or_entity_id=created.id)),
        reader.DeleteIssuer(pb.DeleteIssuerRequest(ref=created.id, cascade=True)),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    assert await reader.GetIssuer(pb.GetIssuerRequest(ref=created.id)) == created
    assert (await reader.ListIssuers(pb.ListIssuersRequest())).total_size == 1


# --- The public base URL ----------------------------------------------------------------------


def test_public_base_url_setting() -> None:
    assert Settings().public_base() == "http://localhost:50051"
    env = {"BADGE_SERVICE_PUBLIC_BASE_URL": "https://badges.example.org"}
    assert Settings.from_env(env).public_base_url == "https://badges.example.org"
    args = parser().parse_args(["serve", "--public-base-url", "https://b.example.org/x"])
    assert args.public_base_url == "https://b.example.org/x"
    assert Settings.from_env(env, public_base_url=args.public_base_url).public_base_url == (
        "https://b.example.org/x"
    )


async def test_ids_follow_the_configured_base_url(backend: Backend, org: Org) -> None:
    settings = Settings(
        address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
        public_base_url="https://badges.example.org/v/",
    )
    running = await start(settings)
    client = Client.connect(running.port, [("authorization", f"Bearer {org.admin_key}")])
    try:
        made = await create_issuer(client)
        obid = f"https://badges.example.org/v/public/issuers/{made.entity_id}"
        assert made.open_badge_id == obid
        got = await issuers(client).GetIssuer(
            pb.GetIssuerRequest(issuer_open_badge_id_base64=b64(obid), view=2)  # type: ignore[arg-type]
        )
        assert got.open_badge["id"] == obid
        # The default server's openBadgeId of the same issuer names nothing on this one.
        await expect_error(
            issuers(client).GetIssuer(
                pb.GetIssuerRequest(
                    issuer_open_badge_id_base64=b64(f"{BASE}/public/issuers/{made.entity_id}")
                )
            ),
            NOT_FOUND,
        )
        bc = await create_class(client, small_class(made.id))
        assert bc.open_badge_id == f"https://badges.example.org/v/public/badges/{bc.entity_id}"
        assert bc.issuer_open_badge_id == obid
    finally:
        await client.channel.close()
        await running.stop(grace=1)


@pytest.mark.parametrize("url", ["ftp://x.example", "not a url", "https://x.example/?q=1"])
async def test_a_bad_public_base_url_stops_the_start(backend: Backend, url: str) -> None:
    settings = Settings(
        address="127.0.0.1:0",
        database_url=backend.url,
        migrate_on_start=False,
        public_base_url=url,
    )
    with pytest.raises(SystemExit, match="public base URL"):
        await start(settings)
