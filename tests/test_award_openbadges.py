"""AwardService's Open Badges 2.0 side over real channels: the Assertion of GetAward's
OPEN_BADGES_V2 view (checked against the specification's required properties), BakeAward
(PNG and SVG, from the class's own data: image or a placeholder), VerifyAward by id, hosted
URL and baked image (valid, revoked, expired, unknown, tampered, another org's), roles,
tenancy and bad input."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import re
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.api.badges.v1 import award_pb2_grpc as pb_grpc
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.domain import baking
from tests.support import Backend, Client, Org, expect_error
from tests.test_award_openbadges_domain import (
    check_assertion,
    check_badge_class,
    check_profile,
)
from tests.test_badge_templates import create as create_template
from tests.test_badges import create as create_badge
from tests.test_badges import valid_badge
from tests.test_baking import assert_valid_png, chunk, png_with, raw_chunks
from tests.test_issuers import classes, create_class, create_issuer, issuers, small_class

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
VALID = pb.VERIFICATION_STATUS_VALID
REVOKED = pb.VERIFICATION_STATUS_REVOKED
EXPIRED = pb.VERIFICATION_STATUS_EXPIRED
INVALID = pb.VERIFICATION_STATUS_INVALID
PNG = pb.BAKED_IMAGE_FORMAT_PNG
SVG = pb.BAKED_IMAGE_FORMAT_SVG
BASE = "http://localhost:50051"
OB2_VIEW = pb.AWARD_VIEW_OPEN_BADGES_V2
HEX16 = re.compile(r"^[0-9a-f]{16}$")

CLASS_SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
    '<rect width="10" height="10" fill="#123456"/></svg>'
)


def awards(client: Client) -> pb_grpc.AwardServiceStub:
    """The AwardService stub of a client."""
    return client.stub(pb_grpc.AwardServiceStub)


def data_uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


async def new_class(org: Org, **overrides: Any) -> bcpb.BadgeClass:
    """A badge class of a new issuer of ``org``."""
    issuer = await create_issuer(org.admin)
    return await create_class(org.admin, small_class(issuer.entity_id, **overrides))


async def award_class(
    org: Org,
    bc: bcpb.BadgeClass,
    recipient: pb.Recipient | None = None,
    **fields: Any,
) -> pb.Award:
    """Awards ``bc`` (to alice@example.org unless told)."""
    msg = pb.Award(
        badge_class_id=bc.entity_id,
        recipient=recipient or pb.Recipient(email="alice@example.org"),
        **fields,
    )
    return await awards(org.admin).CreateAward(pb.CreateAwardRequest(award=msg))


async def open_badge(client: Client, award_id: str) -> dict[str, Any]:
    got = await awards(client).GetAward(pb.GetAwardRequest(id=award_id, view=OB2_VIEW))
    assert got.HasField("open_badge")
    return json_format.MessageToDict(got.open_badge)


async def bake(
    client: Client, award_id: str, fmt: pb.BakedImageFormat.ValueType = PNG
) -> pb.BakedImage:
    return await awards(client).BakeAward(pb.BakeAwardRequest(id=award_id, format=fmt))


async def verify_id(client: Client, ref: str) -> pb.VerifyAwardResponse:
    return await awards(client).VerifyAward(pb.VerifyAwardRequest(assertion_id=ref))


async def verify_image(client: Client, image: bytes) -> pb.VerifyAwardResponse:
    return await awards(client).VerifyAward(pb.VerifyAwardRequest(baked_image=image))


def embedded_png(image: bytes) -> dict[str, Any]:
    text = baking.extract_png(image)
    assert text is not None
    doc: dict[str, Any] = json.loads(text)
    return doc


def past(days: int) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
    return out


# --- The Assertion ------------------------------------------------------------------------------


async def test_open_badges_view_of_a_class_award(org: Org) -> None:
    bc = await new_class(org, expires=bcpb.Expires(amount=30, duration=bcpb.EXPIRES_DURATION_DAYS))
    award = await award_class(
        org,
        bc,
        pb.Recipient(email="  Alice@Example.ORG "),
        narrative="Aced the final.",
        evidence=[pb.Evidence(url="https://example.org/work", narrative="The exam paper")],
    )
    plain = await awards(org.admin).GetAward(pb.GetAwardRequest(id=award.id))
    assert not plain.HasField("open_badge")
    assert plain.open_badge_id == f"{BASE}/public/assertions/{award.id}"

    doc = await open_badge(org.admin, award.id)
    assert check_assertion(doc) == []
    salt = doc["recipient"]["salt"]
    assert HEX16.match(salt)
    expected_hash = hashlib.sha256(f"alice@example.org{salt}".encode()).hexdigest()
    issued = award.issued_at.ToDatetime(tzinfo=dt.UTC)
    expires = award.expires_at.ToDatetime(tzinfo=dt.UTC)
    assert expires == issued + dt.timedelta(days=30)
    assert doc == {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "Assertion",
        "id": award.open_badge_id,
        "recipient": {
            "type": "email",
            "hashed": True,
            "salt": salt,
            "identity": f"sha256${expected_hash}",
        },
        "badge": bc.open_badge_id,
        "verification": {"type": "hosted"},
        "issuedOn": issued.isoformat().replace("+00:00", "Z"),
        "expires": expires.isoformat().replace("+00:00", "Z"),
        "narrative": "Aced the final.",
        "evidence": [
            {"type": "Evidence", "id": "https://example.org/work", "narrative": "The exam paper"}
        ],
        "revoked": False,
    }

    # The documents it points to pass the checker too, and the links join up.
    got_class = await classes(org.admin).GetBadgeClass(
        bcpb.GetBadgeClassRequest(id_or_entity_id=bc.entity_id, view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    class_doc = json_format.MessageToDict(got_class.open_badge)
    assert check_badge_class(class_doc) == []
    assert class_doc["id"] == doc["badge"]
    got_issuer = await issuers(org.admin).GetIssuer(
        ipb.GetIssuerRequest(id_or_entity_id=bc.issuer, view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    profile = json_format.MessageToDict(got_issuer.open_badge)
    assert check_profile(profile) == []
    assert profile["id"] == class_doc["issuer"]


async def test_member_and_url_recipients(org: Org) -> None:
    bc = await new_class(org)
    for recipient, kind, value in (
        (pb.Recipient(member_id="m-42"), "id", "m-42"),
        (pb.Recipient(url="https://alice.example/me"), "url", "https://alice.example/me"),
    ):
        award = await award_class(org, bc, recipient)
        doc = await open_badge(org.admin, award.id)
        assert check_assertion(doc) == []
        salt = doc["recipient"]["salt"]
        assert doc["recipient"]["type"] == kind
        assert doc["recipient"]["identity"] == (
            "sha256$" + hashlib.sha256(f"{value}{salt}".encode()).hexdigest()
        )


async def test_each_award_has_its_own_salt(org: Org) -> None:
    bc = await new_class(org)
    one = await open_badge(org.admin, (await award_class(org, bc)).id)
    two = await open_badge(org.admin, (await award_class(org, bc)).id)
    assert one["recipient"]["salt"] != two["recipient"]["salt"]
    assert one["recipient"]["identity"] != two["recipient"]["identity"]


async def test_a_revoked_award_says_so_in_its_assertion(org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    await awards(org.admin).RevokeAward(pb.RevokeAwardRequest(id=award.id, reason="Cheated"))
    doc = await open_badge(org.admin, award.id)
    assert check_assertion(doc) == []
    assert (doc["revoked"], doc["revocationReason"]) == (True, "Cheated")


async def non_class_awards(org: Org) -> list[pb.Award]:
    """An award of a CrowdTwist badge and one of a Credly template."""
    badge = await create_badge(org, valid_badge(f"b{random.randrange(10**9)}"))
    template = await create_template(
        org, tpb.BadgeTemplate(name="Archery", state=tpb.BADGE_TEMPLATE_STATE_ACTIVE)
    )
    recipient = pb.Recipient(member_id="42")
    return [
        await awards(org.admin).CreateAward(
            pb.CreateAwardRequest(award=pb.Award(badge_id=badge.id, recipient=recipient))
        ),
        await awards(org.admin).CreateAward(
            pb.CreateAwardRequest(
                award=pb.Award(badge_template_id=template.id, recipient=recipient)
            )
        ),
    ]


async def test_non_class_awards_have_no_open_badge_and_cannot_be_baked(org: Org) -> None:
    for award in await non_class_awards(org):
        got = await awards(org.admin).GetAward(pb.GetAwardRequest(id=award.id, view=OB2_VIEW))
        assert not got.HasField("open_badge")
        assert got.open_badge_id == ""
        for fmt in (PNG, SVG):
            err = await expect_error(
                bake(org.admin, award.id, fmt), FAILED, reason="AWARD_NOT_OPEN_BADGE"
            )
            assert err.info is not None and err.info.metadata["id"] == award.id
        # They are still awards of the org: verifiable by id.
        verdict = await verify_id(org.admin, award.id)
        assert verdict.status == VALID
        assert verdict.award.id == award.id


# --- Baking -----------------------------------------------------------------------------------


async def test_bake_png_of_a_class_with_a_remote_image_uses_the_placeholder(org: Org) -> None:
    bc = await new_class(org)  # image https://example.com/math.png: never fetched
    award = await award_class(org, bc)
    baked = await bake(org.admin, award.id)  # PNG is the default format
    unspecified = await bake(org.admin, award.id, pb.BAKED_IMAGE_FORMAT_UNSPECIFIED)
    assert baked.content_type == unspecified.content_type == "image/png"
    chunks = assert_valid_png(baked.data)
    assert [kind for kind, _, _ in chunks] == [b"IHDR", b"IDAT", b"iTXt", b"IEND"]
    assert chunks[0][1][:8] == (64).to_bytes(4, "big") * 2
    # The chunk is exactly the iTXt layout, holding the Assertion GetAward shows.
    assert chunks[2][1].startswith(b"openbadges\x00\x00\x00\x00\x00{")
    assert embedded_png(baked.data) == await open_badge(org.admin, award.id)


async def test_bake_png_keeps_the_class_png(org: Org) -> None:
    source = png_with(chunk(b"tEXt", b"Comment\x00class art"), size=3)
    bc = await new_class(org, image=data_uri("png", source))
    award = await award_class(org, bc)
    baked = await bake(org.admin, award.id, PNG)
    chunks = assert_valid_png(baked.data)
    assert [c for c in chunks if c[0] != b"iTXt"] == raw_chunks(source)
    assert [kind for kind, _, _ in chunks] == [b"IHDR", b"tEXt", b"IDAT", b"iTXt", b"IEND"]
    assert embedded_png(baked.data) == await open_badge(org.admin, award.id)


async def test_a_class_image_that_is_not_a_png_gives_the_placeholder(org: Org) -> None:
    # Badgr accepts any base64 as a data: image; this one is only a PNG signature.
    bc = await new_class(org, image=data_uri("png", b"\x89PNG\r\n\x1a\n"))
    award = await award_class(org, bc)
    baked = await bake(org.admin, award.id, PNG)
    chunks = assert_valid_png(baked.data)
    assert chunks[0][1][:8] == (64).to_bytes(4, "big") * 2
    assert embedded_png(baked.data)["id"] == award.open_badge_id


async def test_bake_svg_keeps_the_class_svg(org: Org) -> None:
    bc = await new_class(org, image=data_uri("svg+xml", CLASS_SVG.encode()))
    award = await award_class(org, bc)
    baked = await bake(org.admin, award.id, SVG)
    assert baked.content_type == "image/svg+xml"
    text = baked.data.decode("utf-8")
    assert '<rect width="10" height="10" fill="#123456"/>' in text
    # The class's SVG byte for byte, with the assertion element as the root's first child.
    head, picture = CLASS_SVG.split("<rect", 1)
    assert text.startswith(
        head + '<openbadges:assertion xmlns:openbadges="http://openbadges.org" '
        f'verify="{award.open_badge_id}"><![CDATA[{{'
    )
    assert text.endswith("]]></openbadges:assertion><rect" + picture)
    assert json.loads(baking.extract_svg(text) or "") == await open_badge(org.admin, award.id)


async def test_large_class_images_bake_and_verify(org: Org) -> None:
    # Over 64 KiB, baking and reading run in a worker thread; the result is the same.
    shapes = "".join(f'<circle cx="{i % 50}" cy="{i // 50}" r="1"/>' for i in range(4000))
    large = CLASS_SVG.replace("</svg>", f"{shapes}</svg>")
    assert len(large) > 100_000
    bc = await new_class(org, image=data_uri("svg+xml", large.encode()))
    award = await award_class(org, bc)
    baked = (await bake(org.admin, award.id, SVG)).data.decode()
    assert baked.endswith(f"{shapes}</svg>")
    assert (await verify_image(org.admin, baked.encode())).status == VALID
    source = png_with(chunk(b"tEXt", b"Comment\x00" + bytes(range(256)) * 400))
    assert len(source) > 100_000
    png_class = await new_class(org, image=data_uri("png", source))
    png_award = await award_class(org, png_class)
    baked_png = (await bake(org.admin, png_award.id)).data
    assert [c for c in raw_chunks(baked_png) if c[0] != b"iTXt"] == raw_chunks(source)
    verdict = await verify_image(org.admin, baked_png)
    assert (verdict.status, verdict.award.id) == (VALID, png_award.id)


async def test_bake_svg_of_a_class_without_an_svg_uses_the_placeholder(org: Org) -> None:
    bc = await new_class(org, name="Math <Expert>")
    award = await award_class(org, bc)
    baked = await bake(org.admin, award.id, SVG)
    text = baked.data.decode("utf-8")
    assert "<title>Math &lt;Expert&gt;</title>" in text
    assert json.loads(baking.extract_svg(text) or "")["id"] == award.open_badge_id


async def test_bake_bad_input(org: Org, other_org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    await expect_error(bake(org.admin, ""), INVALID_ARGUMENT, field="id")
    await expect_error(
        awards(org.admin).BakeAward(
            pb.BakeAwardRequest(id=award.id, format=pb.BakedImageFormat.ValueType(7))
        ),
        INVALID_ARGUMENT,
        field="format",
    )
    await expect_error(bake(org.admin, "0" * 24), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(bake(org.admin, "not-an-id"), NOT_FOUND, reason="NOT_FOUND")
    # Another org's award does not exist for this caller.
    await expect_error(bake(other_org.admin, award.id), NOT_FOUND, reason="NOT_FOUND")
    await expect_error(bake(other_org.reader, award.id), NOT_FOUND, reason="NOT_FOUND")


# --- Verification -----------------------------------------------------------------------------


async def test_verify_a_valid_award_every_way(org: Org) -> None:
    bc = await new_class(org, image=data_uri("svg+xml", CLASS_SVG.encode()))
    award = await award_class(org, bc)
    png = (await bake(org.admin, award.id, PNG)).data
    svg = (await bake(org.admin, award.id, SVG)).data
    for verdict in (
        await verify_id(org.admin, award.id),
        await verify_id(org.admin, award.open_badge_id),
        await verify_image(org.admin, png),
        await verify_image(org.admin, svg),
    ):
        assert verdict.status == VALID
        assert verdict.reason.startswith("the assertion is valid")
        assert verdict.award.id == award.id
        assert verdict.award.badge_class_id == bc.entity_id
        assert verdict.award.state == pb.AWARD_STATE_ACTIVE


async def test_verify_a_revoked_award(org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    png = (await bake(org.admin, award.id)).data  # baked before the revocation
    await awards(org.admin).RevokeAward(
        pb.RevokeAwardRequest(id=award.id, reason="Issued in error")
    )
    for verdict in (await verify_id(org.admin, award.id), await verify_image(org.admin, png)):
        assert verdict.status == REVOKED
        assert verdict.reason == "the assertion was revoked: Issued in error"
        assert verdict.award.state == pb.AWARD_STATE_REVOKED
    # A revoked award can still be baked; its assertion says it is revoked.
    baked_after = (await bake(org.admin, award.id)).data
    assert embedded_png(baked_after)["revoked"] is True
    assert (await verify_image(org.admin, baked_after)).status == REVOKED


async def test_verify_an_expired_award(org: Org) -> None:
    bc = await new_class(org, expires=bcpb.Expires(amount=1, duration=bcpb.EXPIRES_DURATION_DAYS))
    award = await award_class(org, bc, issued_at=past(3))
    assert award.state == pb.AWARD_STATE_EXPIRED
    svg = (await bake(org.admin, award.id, SVG)).data
    for verdict in (await verify_id(org.admin, award.id), await verify_image(org.admin, svg)):
        assert verdict.status == EXPIRED
        assert verdict.reason == "the assertion expired"
        assert verdict.award.id == award.id


async def test_unknown_and_foreign_assertions_are_invalid(org: Org, other_org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    png = (await bake(org.admin, award.id)).data
    cases = [
        (await verify_id(org.admin, "0" * 24), "no assertion 000000000000000000000000"),
        (await verify_id(org.admin, "nope"), "not an assertion id or hosted URL"),
        (
            await verify_id(org.admin, f"https://elsewhere.example/public/assertions/{award.id}"),
            "not an assertion id or hosted URL",
        ),
        # Another org's award, by id, URL or image, is unknown to this caller.
        (await verify_id(other_org.admin, award.id), f"no assertion {award.id}"),
        (await verify_id(other_org.reader, award.open_badge_id), f"no assertion {award.id}"),
        (await verify_image(other_org.admin, png), f"no assertion {award.id}"),
    ]
    for verdict, reason in cases:
        assert verdict.status == INVALID
        assert reason in verdict.reason, verdict.reason
        assert not verdict.HasField("award")


def rebake_png(png: bytes, change: dict[str, Any]) -> bytes:
    doc = embedded_png(png) | change
    return baking.bake_png(png, json.dumps(doc))


async def test_tampered_images_are_invalid(org: Org) -> None:
    bc = await new_class(org)
    other_class = await new_class(org)
    award = await award_class(org, bc)
    png = (await bake(org.admin, award.id)).data
    svg = (await bake(org.admin, award.id, SVG)).data.decode()
    doc = embedded_png(png)
    mallory = (
        "sha256$"
        + hashlib.sha256(f"mallory@example.org{doc['recipient']['salt']}".encode()).hexdigest()
    )
    tampered = {
        "recipient": rebake_png(png, {"recipient": doc["recipient"] | {"identity": mallory}}),
        "badge": rebake_png(png, {"badge": other_class.open_badge_id}),
        "issuedOn": rebake_png(png, {"issuedOn": "2020-01-01T00:00:00Z"}),
    }
    svg_doc = json.loads(baking.extract_svg(svg) or "") | {"badge": other_class.open_badge_id}
    tampered_svg = baking.bake_svg(svg, json.dumps(svg_doc), award.open_badge_id).encode()
    for prop, image in [*tampered.items(), ("badge", tampered_svg)]:
        verdict = await verify_image(org.admin, image)
        assert verdict.status == INVALID
        assert verdict.reason == f"the baked assertion does not match award {award.id} ({prop})"
        assert verdict.award.id == award.id  # the real award, for the org to compare
    # Changing only status properties proves nothing either way: the store decides.
    relaxed = rebake_png(png, {"revoked": False, "expires": "2999-01-01T00:00:00Z"})
    assert (await verify_image(org.admin, relaxed)).status == VALID


async def test_images_without_an_assertion_are_invalid(org: Org) -> None:
    for image, reason in (
        (png_with(), "the image carries no Open Badges assertion"),
        (CLASS_SVG.encode(), "the image carries no Open Badges assertion"),
        (baking.bake_png(png_with(), "not json, not a url"), "neither an assertion nor a URL"),
        (baking.bake_png(png_with(), '{"type": "Assertion"}'), "not an assertion id or hosted"),
    ):
        verdict = await verify_image(org.admin, image)
        assert verdict.status == INVALID
        assert reason in verdict.reason, verdict.reason
        assert not verdict.HasField("award")


async def test_an_image_carrying_only_the_hosted_url_is_verified_by_it(org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    png = baking.bake_png(png_with(), award.open_badge_id)
    verdict = await verify_image(org.admin, png)
    assert (verdict.status, verdict.award.id) == (VALID, award.id)


async def test_verify_bad_input(org: Org) -> None:
    await expect_error(
        awards(org.admin).VerifyAward(pb.VerifyAwardRequest()),
        INVALID_ARGUMENT,
        field="assertion_id",
    )
    await expect_error(verify_id(org.admin, " "), INVALID_ARGUMENT, field="assertion_id")
    for image in (
        b"",
        b"GIF89a\x01\x00\x01\x00",
        b"\xff\xd8\xff\xe0 a jpeg",
        b"<svg",
        b"<html xmlns='http://www.w3.org/1999/xhtml'/>",
        png_with()[:-3],
        (
            b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol">]>'
            b'<svg xmlns="http://www.w3.org/2000/svg">&a;</svg>'
        ),
    ):
        await expect_error(verify_image(org.admin, image), INVALID_ARGUMENT, field="baked_image")


async def test_any_corrupted_byte_of_a_baked_png_is_invalid_argument(org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    png = (await bake(org.admin, award.id)).data
    rng = random.Random(4)
    positions = sorted({0, 7, 8, 12, 16, len(png) - 1, *rng.sample(range(len(png)), 25)})
    for pos in positions:
        broken = bytearray(png)
        broken[pos] ^= 0x5A
        # Every byte is under a CRC, a length, a type or the signature, so no flip survives.
        await expect_error(
            verify_image(org.admin, bytes(broken)), INVALID_ARGUMENT, field="baked_image"
        )


# --- Roles ------------------------------------------------------------------------------------


async def test_a_reader_key_may_bake_verify_and_read_the_assertion(org: Org) -> None:
    bc = await new_class(org)
    award = await award_class(org, bc)
    png = (await bake(org.reader, award.id)).data
    assert embedded_png(png) == await open_badge(org.reader, award.id)
    assert (await verify_id(org.reader, award.id)).status == VALID
    assert (await verify_image(org.reader, png)).status == VALID
    svg = await bake(org.reader, award.id, SVG)
    assert (await verify_image(org.reader, svg.data)).status == VALID


@pytest.mark.parametrize("method", ["BakeAward", "VerifyAward"])
async def test_no_key_is_unauthenticated(backend: Backend, method: str) -> None:
    stub = awards(backend.client())
    request: Any = (
        pb.BakeAwardRequest(id="0" * 24)
        if method == "BakeAward"
        else pb.VerifyAwardRequest(assertion_id="0" * 24)
    )
    await expect_error(getattr(stub, method)(request), grpc.StatusCode.UNAUTHENTICATED)
