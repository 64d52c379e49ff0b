"""The HTTP face (serve --http-address), in process on each database: hosted Open Badges 2.0
at exactly the URLs the service writes into its documents (Profile, BadgeClass, Assertion,
RevocationList, images, the page for browsers), the revoked 410 form, ETag/304, caching and
CORS headers, 404s, /healthz and /readyz (503 while draining), and the settings."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.cli import parser
from badge_service.config import Settings
from badge_service.domain import baking
from badge_service.server import start
from tests.rest_face import Face, face_of, org_on
from tests.support import Backend, Client, Org, expect_error
from tests.test_award_openbadges import awards, past
from tests.test_award_openbadges_domain import check_assertion, check_badge_class, check_profile
from tests.test_badges import create as create_badge
from tests.test_badges import valid_badge
from tests.test_baking import assert_valid_png
from tests.test_issuers import classes, create_class, create_issuer, issuers, small_class

LD_JSON = "application/ld+json"
PUBLIC_CACHE = "public, max-age=55"
NOT_FOUND = grpc.StatusCode.NOT_FOUND
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ETAG = re.compile(r'^"[0-9a-f]{32}"$')
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
async def face(backend: Backend) -> AsyncIterator[Face]:
    """A server with the HTTP face on, on the session's database, and an HTTP client."""
    async with face_of(backend) as started:
        yield started


@pytest.fixture
async def here(face: Face, org: Org) -> AsyncIterator[Org]:
    """The test's org, its clients calling the server with the HTTP face (whose documents
    name that face's URLs)."""
    async with org_on(face, org) as on_face:
        yield on_face


async def new_class(org: Org, **overrides: Any) -> tuple[ipb.Issuer, bcpb.BadgeClass]:
    issuer = await create_issuer(org.admin)
    return issuer, await create_class(org.admin, small_class(issuer.entity_id, **overrides))


async def award(org: Org, bc: bcpb.BadgeClass, **fields: Any) -> pb.Award:
    msg = pb.Award(
        badge_class_id=bc.entity_id, recipient=pb.Recipient(email="alice@example.org"), **fields
    )
    return await awards(org.admin).CreateAward(pb.CreateAwardRequest(award=msg))


async def open_badge(org: Org, award_id: str) -> dict[str, Any]:
    got = await awards(org.reader).GetAward(
        pb.GetAwardRequest(id=award_id, view=pb.AWARD_VIEW_OPEN_BADGES_V2)
    )
    return json_format.MessageToDict(got.open_badge)


async def fetch(face: Face, url: str, **headers: str) -> httpx.Response:
    """GET of an absolute URL the service wrote, which must be under the face's base."""
    assert url.startswith(face.base + "/"), url
    return await face.http.get(url[len(face.base) :], headers=headers)


def assert_public(resp: httpx.Response, media_type: str | None = LD_JSON) -> None:
    if media_type is not None:
        assert resp.headers["content-type"] == media_type
    assert ETAG.match(resp.headers["etag"]), resp.headers
    assert resp.headers["cache-control"] == PUBLIC_CACHE
    assert resp.headers["access-control-allow-origin"] == "*"
    # Stored images and text: nothing in them may run or be sniffed as something else.
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert "sandbox" in resp.headers["content-security-policy"]


# --- Hosted documents ---------------------------------------------------------------------------


async def test_assertion_badge_and_issuer_at_the_urls_they_name(face: Face, here: Org) -> None:
    issuer, bc = await new_class(here)
    made = await award(here, bc, narrative="Aced it.")
    assert made.open_badge_id == f"{face.base}/public/assertions/{made.id}"
    expected = await open_badge(here, made.id)

    resp = await fetch(face, made.open_badge_id)
    assert resp.status_code == 200
    assert_public(resp)
    assert resp.headers["vary"] == "Accept"
    doc = resp.json()
    assert doc == expected  # the same document GetAward shows, served where its id says
    assert check_assertion(doc) == []
    assert doc["id"] == made.open_badge_id
    assert doc["revoked"] is False
    assert "expires" not in doc
    # Only the salted hash of the recipient: no address anywhere in the document.
    assert "alice" not in resp.text
    recipient = doc["recipient"]
    assert recipient["hashed"] is True and recipient["type"] == "email"
    assert re.fullmatch(r"[0-9a-f]{16}", recipient["salt"])
    assert re.fullmatch(r"sha256\$[0-9a-f]{64}", recipient["identity"])
    # JSON verifiers and clients that send no Accept get the same bytes.
    for accept in ("application/json", LD_JSON, "application/ld+json, application/json"):
        again = await fetch(face, made.open_badge_id, accept=accept)
        assert (again.status_code, again.headers["content-type"]) == (200, LD_JSON)
        assert again.content == resp.content
        assert again.headers["etag"] == resp.headers["etag"]

    badge = await fetch(face, doc["badge"])
    assert badge.status_code == 200
    assert_public(badge)
    got_class = await classes(here.reader).GetBadgeClass(
        bcpb.GetBadgeClassRequest(id_or_entity_id=bc.entity_id, view=2)  # type: ignore[arg-type]
    )
    assert badge.json() == json_format.MessageToDict(got_class.open_badge)
    assert check_badge_class(badge.json()) == []
    assert badge.json()["id"] == bc.open_badge_id

    profile = await fetch(face, badge.json()["issuer"])
    assert profile.status_code == 200
    assert_public(profile)
    got_issuer = await issuers(here.reader).GetIssuer(
        ipb.GetIssuerRequest(id_or_entity_id=issuer.entity_id, view=ipb.BADGR_VIEW_OPEN_BADGES_V2)
    )
    assert profile.json() == json_format.MessageToDict(got_issuer.open_badge)
    assert check_profile(profile.json()) == []
    assert profile.json()["id"] == issuer.open_badge_id

    revocations = await fetch(face, profile.json()["revocationList"])
    assert revocations.status_code == 200
    assert_public(revocations)
    assert revocations.json() == {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "RevocationList",
        "id": f"{issuer.open_badge_id}/revocations",
        "issuer": issuer.open_badge_id,
        "revokedAssertions": [],
    }


async def test_a_revoked_assertion_is_gone_and_listed(face: Face, here: Org) -> None:
    issuer, bc = await new_class(here)
    kept = await award(here, bc)
    first = await award(here, bc)
    second = await award(here, bc)
    _, other_bc = await new_class(here)
    elsewhere = await award(here, other_bc)
    before = await fetch(face, first.open_badge_id)
    assert before.status_code == 200
    for made, reason in ((first, "Issued by mistake"), (second, "Cheated"), (elsewhere, "No")):
        await awards(here.admin).RevokeAward(pb.RevokeAwardRequest(id=made.id, reason=reason))

    resp = await fetch(face, first.open_badge_id)
    assert resp.status_code == 410
    assert_public(resp, "application/json")
    # The spec's form, and nothing else: a verifier reads it as revoked only so.
    assert resp.json() == {
        "id": first.open_badge_id,
        "revoked": True,
        "revocationReason": "Issued by mistake",
    }
    # The ETag a client held is no use: it gets the 410 in full.
    held = await fetch(face, first.open_badge_id, **{"if-none-match": before.headers["etag"]})
    assert (held.status_code, held.json()["revoked"]) == (410, True)

    listed = await fetch(face, f"{issuer.open_badge_id}/revocations")
    assert listed.status_code == 200
    entries = listed.json()["revokedAssertions"]
    assert sorted(entries, key=lambda e: e["id"]) == sorted(
        [
            {"id": first.open_badge_id, "revocationReason": "Issued by mistake"},
            {"id": second.open_badge_id, "revocationReason": "Cheated"},
        ],
        key=lambda e: e["id"],
    )
    assert kept.open_badge_id not in listed.text
    assert (await fetch(face, kept.open_badge_id)).status_code == 200
    # Its baked image is gone too.
    image = await fetch(face, f"{first.open_badge_id}/image")
    assert image.status_code == 410
    assert image.json()["revoked"] is True


async def test_an_expired_assertion_is_served_with_its_expiry(face: Face, here: Org) -> None:
    _, bc = await new_class(
        here, expires=bcpb.Expires(amount=1, duration=bcpb.EXPIRES_DURATION_DAYS)
    )
    made = await award(here, bc, issued_at=past(3))
    assert made.state == pb.AWARD_STATE_EXPIRED
    resp = await fetch(face, made.open_badge_id)
    assert resp.status_code == 200
    assert_public(resp)
    doc = resp.json()
    assert doc["revoked"] is False
    expires = dt.datetime.fromisoformat(doc["expires"].replace("Z", "+00:00"))
    assert expires < dt.datetime.now(dt.UTC)
    assert doc == await open_badge(here, made.id)


async def test_public_lookups_cross_orgs_but_grpc_stays_tenanted(
    face: Face, here: Org, other_org: Org
) -> None:
    _, bc = await new_class(here)
    made = await award(here, bc)
    # No key at all: the hosted URL is public by design.
    assert (await fetch(face, made.open_badge_id)).status_code == 200
    # Another org's key still cannot read it over gRPC.
    other = Client.connect(face.running.port, [("authorization", f"Bearer {other_org.admin_key}")])
    try:
        await expect_error(awards(other).GetAward(pb.GetAwardRequest(id=made.id)), NOT_FOUND)
    finally:
        await other.channel.close()


async def test_etag_and_if_none_match(face: Face, here: Org) -> None:
    _, bc = await new_class(here)
    made = await award(here, bc)
    urls = [made.open_badge_id, bc.open_badge_id, bc.issuer_open_badge_id]
    for url in urls:
        first = await fetch(face, url)
        etag = first.headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            not_modified = await fetch(face, url, **{"if-none-match": header})
            assert not_modified.status_code == 304, header
            assert not_modified.content == b""
            assert not_modified.headers["etag"] == etag
            assert not_modified.headers["cache-control"] == PUBLIC_CACHE
            assert not_modified.headers["access-control-allow-origin"] == "*"
        changed = await fetch(face, url, **{"if-none-match": '"0123"'})
        assert (changed.status_code, changed.content) == (200, first.content)
    # A change of the document is a new ETag.
    before = (await fetch(face, bc.open_badge_id)).headers["etag"]
    await classes(here.admin).UpdateBadgeClass(
        bcpb.UpdateBadgeClassRequest(
            badge_class=bcpb.BadgeClass(id=bc.id, name="Math Master"),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    after = await fetch(face, bc.open_badge_id, **{"if-none-match": before})
    assert after.status_code == 200
    assert after.json()["name"] == "Math Master"
    assert after.headers["etag"] != before


@pytest.mark.parametrize(
    "path",
    [
        "/public/assertions/0123456789abcdef01234567",
        "/public/assertions/not-an-id",
        "/public/assertions/0123456789abcdef01234567/image",
        "/public/badges/AAAAAAAAAAAAAAAAAAAAAA",
        "/public/badges/nope",
        "/public/badges/AAAAAAAAAAAAAAAAAAAAAA/image",
        "/public/issuers/AAAAAAAAAAAAAAAAAAAAAA",
        "/public/issuers/AAAAAAAAAAAAAAAAAAAAAA/revocations",
        "/public/elsewhere",
        "/nothing",
    ],
)
async def test_unknown_ids_are_404_json(face: Face, path: str) -> None:
    resp = await face.http.get(path)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["access-control-allow-origin"] == "*"
    # google.rpc.Status, as the REST routes answer: NOT_FOUND is code 5.
    body = resp.json()
    assert body["code"] == 5
    assert body["message"]
    reasons = [d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons == ([] if path.endswith(("elsewhere", "nothing")) else ["NOT_FOUND"])


async def test_an_award_that_is_not_an_open_badge_is_404(face: Face, here: Org) -> None:
    badge = await create_badge(here, valid_badge())
    made = await awards(here.admin).CreateAward(
        pb.CreateAwardRequest(
            award=pb.Award(badge_id=badge.id, recipient=pb.Recipient(member_id="7"))
        )
    )
    resp = await face.http.get(f"/public/assertions/{made.id}")
    assert resp.status_code == 404
    assert resp.json()["code"] == 5


# --- Images and the page for browsers -------------------------------------------------------------


async def test_badge_class_images(face: Face, here: Org) -> None:
    _, linked = await new_class(here)
    resp = await fetch(face, f"{linked.open_badge_id}/image")
    assert resp.status_code == 302
    assert resp.headers["location"] == "https://example.com/math.png"
    png_uri = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    _, inline = await new_class(here, image=png_uri)
    resp = await fetch(face, f"{inline.open_badge_id}/image")
    assert resp.status_code == 200
    assert_public(resp, "image/png")
    assert resp.content == PNG_BYTES


async def test_baked_assertion_images(face: Face, here: Org) -> None:
    _, bc = await new_class(here)
    made = await award(here, bc)
    expected = await open_badge(here, made.id)
    png = await fetch(face, f"{made.open_badge_id}/image")
    assert png.status_code == 200
    assert_public(png, baking.PNG_CONTENT_TYPE)
    assert_valid_png(png.content)
    text = baking.extract_png(png.content)
    assert text is not None and json.loads(text) == expected
    svg = await face.http.get(f"/public/assertions/{made.id}/image", params={"format": "svg"})
    assert svg.status_code == 200
    assert_public(svg, baking.SVG_CONTENT_TYPE)
    text = baking.extract_svg(baking.decode_svg(svg.content))
    assert text is not None and json.loads(text) == expected
    bad = await face.http.get(f"/public/assertions/{made.id}/image", params={"format": "gif"})
    assert bad.status_code == 400
    assert (bad.json()["code"], bad.json()["details"]) == (3, [])


async def test_a_browser_gets_a_page_with_everything_escaped(face: Face, here: Org) -> None:
    _, bc = await new_class(here, name="<script>alert(1)</script> & Co")
    made = await award(here, bc)
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    resp = await fetch(face, made.open_badge_id, accept=accept)
    assert resp.status_code == 200
    assert_public(resp, "text/html; charset=utf-8")
    assert resp.headers["vary"] == "Accept"
    page = resp.text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page
    assert "Valid" in page
    assert f'src="{bc.open_badge_id}/image"' in page
    await awards(here.admin).RevokeAward(pb.RevokeAwardRequest(id=made.id, reason="<b>No</b>"))
    gone = await fetch(face, made.open_badge_id, accept=accept)
    assert gone.status_code == 410
    assert "Revoked: &lt;b&gt;No&lt;/b&gt;" in gone.text


async def test_a_browser_gets_issuer_and_badge_class_pages(face: Face, here: Org) -> None:
    issuer = await create_issuer(
        here.admin,
        ipb.Issuer(
            name="<i>Acme</i> Academy",
            url="https://acme.example/?a=1&b=2",
            email="badges@example.org",
            description="We teach & certify.",
        ),
    )
    bc = await create_class(
        here.admin,
        small_class(issuer.entity_id, name="Math <b>Expert</b>", criteria_url="https://e.org/c"),
    )
    accept = "text/html"
    page = await fetch(face, issuer.open_badge_id, accept=accept)
    assert page.status_code == 200
    assert_public(page, "text/html; charset=utf-8")
    assert page.headers["vary"] == "Accept"
    assert "<title>&lt;i&gt;Acme&lt;/i&gt; Academy</title>" in page.text
    assert "We teach &amp; certify." in page.text
    assert "badges@example.org" in page.text
    link = "https://acme.example/?a=1&amp;b=2"
    assert f'<a href="{link}">{link}</a>' in page.text
    doc = await fetch(face, issuer.open_badge_id)
    assert doc.headers["content-type"] == LD_JSON and doc.headers["vary"] == "Accept"

    page = await fetch(face, bc.open_badge_id, accept=accept)
    assert page.status_code == 200
    assert_public(page, "text/html; charset=utf-8")
    assert "<h1>Math &lt;b&gt;Expert&lt;/b&gt;</h1>" in page.text
    assert f'src="{bc.open_badge_id}/image"' in page.text
    assert f'<a href="{issuer.open_badge_id}">&lt;i&gt;Acme&lt;/i&gt; Academy</a>' in page.text
    assert "Pass the exam." in page.text
    assert '<a href="https://e.org/c">https://e.org/c</a>' in page.text


async def test_head_answers_headers_only(face: Face, here: Org) -> None:
    _, bc = await new_class(here)
    made = await award(here, bc)
    got = await fetch(face, made.open_badge_id)
    head = await face.http.head(made.open_badge_id[len(face.base) :])
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == str(len(got.content))


async def test_every_request_is_on_the_access_log(
    face: Face, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="badge_service.access")
    resp = await face.http.get("/public/badges/nope?x=secret", headers={"x-request-id": "rid-1"})
    assert resp.headers["x-request-id"] == "rid-1"
    made = (await face.http.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}-h[0-9a-f]+", made), made
    lines = [r for r in caplog.records if r.name == "badge_service.access" and r.msg == "http"]
    fields = [{k: r.__dict__[k] for k in ("method", "path", "status", "request_id")} for r in lines]
    assert [tuple(f.values()) for f in fields] == [
        ("GET", "/public/badges/nope", 404, "rid-1"),
        ("GET", "/healthz", 200, made),
    ]
    assert "secret" not in caplog.text


async def test_cors_preflight(face: Face) -> None:
    resp = await face.http.options(
        "/public/assertions/0123456789abcdef01234567",
        headers={"origin": "https://backpack.example", "access-control-request-method": "GET"},
    )
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "GET" in resp.headers["access-control-allow-methods"]


# --- Health -----------------------------------------------------------------------------------


async def test_healthz_and_readyz(face: Face) -> None:
    for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "SERVING"})):
        resp = await face.http.get(path)
        assert (resp.status_code, resp.json()) == (200, body)
        assert resp.headers["cache-control"] == "no-store"


async def test_readyz_follows_health_and_is_503_while_draining(backend: Backend) -> None:
    settings = Settings(
        address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=backend.url,
        log_level="WARNING",
        migrate_on_start=False,
    )
    running = await start(settings)
    stopped = False
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{running.http_port}", trust_env=False, timeout=10
        ) as http:
            # NOT_SERVING until the store's first probe answers, as gRPC health says.
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/readyz")).status_code == 200
            # What gRPC health says for the whole server, /readyz says too.
            await running.health.set("", NOT_SERVING)
            resp = await http.get("/readyz")
            assert (resp.status_code, resp.json()) == (503, {"status": "NOT_SERVING"})
            assert (await http.get("/healthz")).status_code == 200
            await running.health.set("", SERVING)
            assert (await http.get("/readyz")).status_code == 200
            # Draining: NOT_SERVING at once while HTTP still answers, for the drain delay.
            stopping = asyncio.create_task(running.shutdown(drain_delay=1.0, grace=1.0))
            await asyncio.sleep(0.2)
            resp = await http.get("/readyz")
            assert (resp.status_code, resp.json()) == (503, {"status": "NOT_SERVING"})
            assert (await http.get("/healthz")).status_code == 200
            await stopping
            stopped = True
            with pytest.raises(httpx.ConnectError):
                await http.get("/healthz")
    finally:
        if not stopped:
            await running.stop(grace=1)


# --- Settings ---------------------------------------------------------------------------------


def test_http_address_setting_and_the_public_base_it_implies() -> None:
    assert Settings().http_address == ""
    assert Settings().public_base() == "http://localhost:50051"
    env = {"BADGE_SERVICE_HTTP_ADDRESS": "127.0.0.1:8080"}
    on = Settings.from_env(env)
    assert on.http_address == "127.0.0.1:8080"
    assert on.public_base() == "http://127.0.0.1:8080"
    assert Settings(http_address="0.0.0.0:0").public_base(41234) == "http://0.0.0.0:41234"
    assert Settings(http_address=":8080").public_base() == "http://localhost:8080"
    explicit = Settings(http_address="127.0.0.1:8080", public_base_url="https://b.example.org")
    assert explicit.public_base() == "https://b.example.org"
    args = parser().parse_args(["serve", "--http-address", "127.0.0.1:9090"])
    assert args.http_address == "127.0.0.1:9090"
