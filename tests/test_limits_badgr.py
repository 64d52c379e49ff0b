"""The documented limits of Credly badge templates and Badgr issuers, badge classes and claim
codes, each at its boundary on every database, and a full page of maximum-size objects of each
served (the rest of the limits are in test_limits.py)."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import (
    badge_class_pb2_grpc,
    badge_template_pb2_grpc,
    issuer_pb2_grpc,
)
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.domain import limits
from badge_service.rpc.convert import stored_size
from tests.support import Backend, Client, Org, expect_error
from tests.test_limits import (
    BIG,
    INVALID,
    KINDLESS,
    expect_limit,
    string_struct,
    url_of_bytes,
    without_kind,
)

BADGE = tpb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE


def templates(client: Client) -> badge_template_pb2_grpc.BadgeTemplateServiceStub:
    """The template service on a client's channel."""
    return client.stub(badge_template_pb2_grpc.BadgeTemplateServiceStub)


def issuers(client: Client) -> issuer_pb2_grpc.IssuerServiceStub:
    """The issuer service on a client's channel."""
    return client.stub(issuer_pb2_grpc.IssuerServiceStub)


def classes(client: Client) -> badge_class_pb2_grpc.BadgeClassServiceStub:
    """The badge class service on a client's channel."""
    return client.stub(badge_class_pb2_grpc.BadgeClassServiceStub)


def big(backend: Backend, key: str) -> Client:
    """A client that takes replies up to the server's own message limit."""
    return backend.client([("authorization", f"Bearer {key}")], BIG)


def create_template(org: Org, **fields: Any) -> Any:
    """The CreateBadgeTemplate call, unawaited."""
    return templates(org.admin).CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(
            organization_id=org.uuid, badge_template=tpb.BadgeTemplate(**fields)
        )
    )


async def many_templates(org: Org, names: list[str], **fields: Any) -> list[tpb.BadgeTemplate]:
    """Templates of these names (created 20 at a time)."""
    out: list[tpb.BadgeTemplate] = []
    for i in range(0, len(names), 20):
        out += await asyncio.gather(
            *(create_template(org, name=n, **fields) for n in names[i : i + 20])
        )
    return out


def template_stored_size(reply: tpb.BadgeTemplate) -> int:
    """What BADGE_TEMPLATE_BYTES counts of a template: its single-template reply without what
    its references show of other templates (required templates by id only) and without
    show_template_settings, times at full width."""
    own = tpb.BadgeTemplate()
    own.CopyFrom(reply)
    own.ClearField("show_template_settings")
    del own.required_badge_templates[:]
    own.required_badge_templates.extend(
        tpb.BadgeTemplateReference(id=r.id) for r in reply.required_badge_templates
    )
    return stored_size(own)


def alignments(count: int, last: int) -> list[tpb.BadgeTemplateAlignment]:
    """Alignments with 2,000-character descriptions, the last one ``last`` characters."""
    out = [
        tpb.BadgeTemplateAlignment(name=f"a{i:02d}", description="d" * 2_000) for i in range(count)
    ]
    out[-1].description = "d" * last
    return out


async def template_of_size(org: Org, size: int, **fields: Any) -> dict[str, Any]:
    """Template fields (``fields`` and alignments) exactly ``size`` bytes as stored, found
    by probing: a probe is created (with ``vanity_slug`` "probe-N", as long as the caller's
    slugs must be) and its measure tells how long the last description must be."""
    count = max(1, size // 2_060)
    for attempt in range(6):
        try:
            probe = await create_template(
                org,
                alignments=alignments(count, 1_000),
                **{**fields, "vanity_slug": f"probe-{attempt}"},
            )
            measured = template_stored_size(probe)
        except grpc.aio.AioRpcError as err:  # over the limit already: it says by how much
            found = re.search(r"\(is (\d+)\)", err.details() or "")
            assert found is not None, err
            measured = int(found.group(1))
        last = 1_000 + size - measured
        if 128 <= last <= limits.BADGE_TEMPLATE_LONG_TEXT_CHARS:
            return {**fields, "alignments": alignments(count, last)}
        count += 1 if last > limits.BADGE_TEMPLATE_LONG_TEXT_CHARS else -1
    raise AssertionError("no template of that size")


async def test_template_size_at_its_limit(org: Org) -> None:
    limit = limits.BADGE_TEMPLATE_BYTES
    fields = await template_of_size(org, limit, name="Big")
    most = await create_template(org, **{**fields, "vanity_slug": "exact-1"})
    assert template_stored_size(most) == limit
    fields["alignments"][-1].description += "d"
    await expect_limit(
        create_template(org, **{**fields, "vanity_slug": "over-01"}), "badge_template", limit
    )
    # An update that grows it past the limit is refused and changes nothing.
    await expect_limit(
        templates(org.admin).UpdateBadgeTemplate(
            tpb.UpdateBadgeTemplateRequest(
                organization_id=org.uuid,
                badge_template=tpb.BadgeTemplate(id=most.id, description="x"),
                update_mask=FieldMask(paths=["description"]),
            )
        ),
        "badge_template",
        limit,
    )
    got = await templates(org.reader).GetBadgeTemplate(
        tpb.GetBadgeTemplateRequest(organization_id=org.uuid, id=most.id)
    )
    assert got.description == "" and template_stored_size(got) == limit


async def test_template_references_at_their_limit(org: Org) -> None:
    targets = await many_templates(org, [f"t{i:02d}" for i in range(26)])
    ids = [t.id for t in targets]
    # Required templates, badge activities and badge recommendations count together.
    most: dict[str, list[Any]] = {
        "required_badge_templates": [tpb.BadgeTemplateReference(id=i) for i in ids[:10]],
        "badge_template_activities": [
            tpb.BadgeTemplateActivity(title="a", required_badge_template_id=i) for i in ids[10:20]
        ],
        "recommendations": [
            tpb.BadgeTemplateRecommendation(type=BADGE, recommended_badge_template_id=i)
            for i in ids[20:25]
        ],
    }
    made = await create_template(org, name="most", **most)
    assert [r.id for r in made.required_badge_templates] == ids[:10]
    assert made.recommendations[-1].recommended_badge_template_name == "t24"
    over = dict(most)
    over["recommendations"] = [
        *most["recommendations"],
        tpb.BadgeTemplateRecommendation(type=BADGE, recommended_badge_template_id=ids[25]),
    ]
    await expect_limit(
        create_template(org, name="over", **over),
        "badge_template",
        limits.BADGE_TEMPLATE_REFERENCES,
    )


async def test_get_template_shows_at_most_the_first_related(org: Org) -> None:
    target = await create_template(org, name="target")
    names = [f"r{i:03d}" for i in range(limits.BADGE_TEMPLATE_RELATED + 1)]
    await many_templates(
        org,
        names,
        recommendations=[
            tpb.BadgeTemplateRecommendation(type=BADGE, recommended_badge_template_id=target.id)
        ],
    )
    got = await templates(org.reader).GetBadgeTemplate(
        tpb.GetBadgeTemplateRequest(organization_id=org.uuid, id=target.id)
    )
    assert [t.name for t in got.recommending_templates] == names[:-1]


async def test_requirement_reach_at_its_limit(org: Org) -> None:
    # X requires one top and some leaves; the top requires 7 mids, each requiring 25 leaves:
    # 1 + 7 + 175 templates through the top, and the leaves X names itself.
    reach = limits.BADGE_TEMPLATE_REQUIREMENT_REACH
    extra = reach - (1 + 7 + 7 * 25)
    leaves = await many_templates(org, [f"leaf{i:03d}" for i in range(7 * 25 + extra + 1)])
    ids = [t.id for t in leaves]

    def requiring(targets: list[str]) -> list[tpb.BadgeTemplateReference]:
        return [tpb.BadgeTemplateReference(id=i) for i in targets]

    mids = await asyncio.gather(
        *(
            create_template(
                org, name=f"mid{m}", required_badge_templates=requiring(ids[m * 25 : m * 25 + 25])
            )
            for m in range(7)
        )
    )
    top = await create_template(
        org, name="top", required_badge_templates=requiring([m.id for m in mids])
    )
    mine = ids[7 * 25 :]
    made = await create_template(
        org, name="x", required_badge_templates=requiring([top.id, *mine[:extra]])
    )
    assert len(made.required_badge_templates) == 1 + extra
    await expect_limit(
        create_template(org, name="y", required_badge_templates=requiring([top.id, *mine])),
        "badge_template.required_badge_templates",
        limits.BADGE_TEMPLATE_REQUIREMENT_REACH,
    )
    # Within the reach, a cycle is still found: the top may not require a template that
    # requires it.
    await expect_error(
        templates(org.admin).UpdateBadgeTemplate(
            tpb.UpdateBadgeTemplateRequest(
                organization_id=org.uuid,
                badge_template=tpb.BadgeTemplate(
                    id=mids[0].id, required_badge_templates=requiring([top.id])
                ),
                update_mask=FieldMask(paths=["required_badge_templates"]),
            )
        ),
        INVALID,
        reason="REQUIREMENT_CYCLE",
        field="badge_template.required_badge_templates",
    )


async def test_template_query_at_its_limits(org: Org) -> None:
    stub = templates(org.reader)

    def listed(**fields: Any) -> Any:
        return stub.ListBadgeTemplates(
            tpb.ListBadgeTemplatesRequest(organization_id=org.uuid, **fields)
        )

    query = "query::" + "q" * (limits.CREDLY_FILTER_CHARS - 7)
    assert (await listed(filter=query)).total_size == 0
    await expect_limit(listed(filter=query + "q"), "filter", limits.CREDLY_FILTER_CHARS)
    skills = [f"s{i}" for i in range(limits.CREDLY_FILTER_VALUES)]
    assert (await listed(filter="skills::" + ",".join(skills))).total_size == 0
    await expect_limit(
        listed(filter="skills::" + ",".join([*skills, "one-more"])),
        "filter",
        limits.CREDLY_FILTER_VALUES,
    )
    sort = "name" + " " * (limits.CREDLY_SORT_CHARS - 4)
    assert (await listed(sort=sort)).total_size == 0
    await expect_limit(listed(sort=sort + " "), "sort", limits.CREDLY_SORT_CHARS)


def card(i: int) -> dict[str, Any]:
    """A template whose reference card is as large as one can be: a name of 255 four-byte
    characters, a 255-character slug and a 2048-byte image URL."""
    return {
        "name": f"{i:02d}" + "\U0001f600" * (limits.BADGE_TEMPLATE_NAME_CHARS - 2),
        "vanity_slug": f"{i:02d}" + "s" * (limits.BADGE_TEMPLATE_SLUG_CHARS - 2),
        "image_url": "https://x.example/" + "i" * (limits.URL_BYTES - 18),
    }


async def test_a_page_of_maximum_size_templates_is_served(backend: Backend, org: Org) -> None:
    cards = await asyncio.gather(*(create_template(org, **card(i)) for i in range(25)))
    required = [tpb.BadgeTemplateReference(id=c.id) for c in cards]
    limit = limits.BADGE_TEMPLATE_BYTES
    fields = await template_of_size(org, limit, name="Big", required_badge_templates=required)
    made = []
    for i in range(limits.BADGE_TEMPLATES_PAGE):
        made.append(await create_template(org, **{**fields, "vanity_slug": f"big-{i:03d}"}))
    assert all(template_stored_size(t) == limit for t in made)
    client = templates(big(backend, org.reader_key))
    page = await client.ListBadgeTemplates(
        tpb.ListBadgeTemplatesRequest(organization_id=org.uuid, filter='name::"Big"')
    )
    assert page.metadata.count == limits.BADGE_TEMPLATES_PAGE  # (the probes are named Big too)
    assert {t.id for t in made} <= {t.id for t in page.badge_templates} | set()
    refs = page.badge_templates[0].required_badge_templates
    assert len(refs) == 25 and refs[0].image_url == cards[0].image_url
    assert refs[0].name == cards[0].name
    assert page.ByteSize() <= limits.PAGE_BUDGET_BYTES


# --- Issuers and badge classes ----------------------------------------------------------------


# The largest data: image (base64 comes in fours).
IMAGE = "data:image/png;base64," + "A" * ((limits.BADGR_IMAGE_DATA_CHARS - 22) // 4 * 4)
# Valid JSON of 20,000 characters.
ORIGINAL = "[" + ",".join(["1"] * 9_999) + "]" + " " * 1


def issuer_of(description: int, name: str = "Faculty") -> ipb.Issuer:
    """An issuer near ISSUER_BYTES: the largest data: image, 40 KB of extensions, 20,000
    characters of original JSON, and a description ``description`` characters long."""
    return ipb.Issuer(
        name=name,
        email="a@example.com",
        url="https://example.com",
        image=IMAGE,
        description="d" * description,
        extensions=string_struct(40_000),
        original_json=ORIGINAL,
    )


async def test_issuer_size_at_its_limit(backend: Backend, org: Org) -> None:
    stub = issuers(big(backend, org.admin_key))
    probe = await stub.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer_of(1_000)))
    length = 1_000 + limits.ISSUER_BYTES - stored_size(probe)
    most = await stub.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer_of(length)))
    assert stored_size(most) == limits.ISSUER_BYTES
    await expect_limit(
        stub.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer_of(length + 1))),
        "issuer",
        limits.ISSUER_BYTES,
    )
    await expect_limit(
        stub.UpdateIssuer(
            ipb.UpdateIssuerRequest(
                issuer=ipb.Issuer(id=most.id, description="d" * (length + 1)),
                update_mask=FieldMask(paths=["description"]),
            )
        ),
        "issuer",
        limits.ISSUER_BYTES,
    )


async def test_a_page_of_maximum_size_issuers_is_served(backend: Backend, org: Org) -> None:
    stub = issuers(big(backend, org.admin_key))
    probe = await stub.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer_of(1_000)))
    length = 1_000 + limits.ISSUER_BYTES - stored_size(probe)
    for _ in range(limits.ISSUERS_PAGE - 1):
        await stub.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer_of(length)))
    page = await stub.ListIssuers(ipb.ListIssuersRequest(page_size=1_000))  # clamped
    assert len(page.issuers) == limits.ISSUERS_PAGE and not page.next_page_token
    assert all(stored_size(i) <= limits.ISSUER_BYTES for i in page.issuers)
    assert page.ByteSize() <= limits.PAGE_BUDGET_BYTES


def class_of(issuer: str, narrative: int) -> bcpb.BadgeClass:
    """A badge class near BADGE_CLASS_BYTES (as issuer_of) with a criteria narrative
    ``narrative`` characters long."""
    return bcpb.BadgeClass(
        issuer=issuer,
        name="Math Expert",
        description="d" * 2_000,
        image=IMAGE,
        criteria_narrative="c" * narrative,
        extensions=string_struct(40_000),
        original_json=ORIGINAL,
    )


async def test_badge_class_size_and_page_at_their_limits(backend: Backend, org: Org) -> None:
    stub = classes(big(backend, org.admin_key))
    issuer = await issuers(org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(
            issuer=ipb.Issuer(name="F", email="a@example.com", url="https://example.com")
        )
    )
    probe = await stub.CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=class_of(issuer.id, 1_000))
    )
    length = 1_000 + limits.BADGE_CLASS_BYTES - stored_size(probe)
    most = await stub.CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=class_of(issuer.id, length))
    )
    assert stored_size(most) == limits.BADGE_CLASS_BYTES
    await expect_limit(
        stub.CreateBadgeClass(
            bcpb.CreateBadgeClassRequest(badge_class=class_of(issuer.id, length + 1))
        ),
        "badge_class",
        limits.BADGE_CLASS_BYTES,
    )
    for _ in range(limits.BADGE_CLASSES_PAGE - 2):
        await stub.CreateBadgeClass(
            bcpb.CreateBadgeClassRequest(badge_class=class_of(issuer.id, length))
        )
    page = await stub.ListBadgeClasses(bcpb.ListBadgeClassesRequest(page_size=1_000))
    assert len(page.badge_classes) == limits.BADGE_CLASSES_PAGE and not page.next_page_token
    assert page.ByteSize() <= limits.PAGE_BUDGET_BYTES


@pytest.mark.parametrize("shape", sorted(KINDLESS))
async def test_a_value_without_kind_is_refused_in_extensions(org: Org, shape: str) -> None:
    await expect_error(
        issuers(org.admin).CreateIssuer(
            ipb.CreateIssuerRequest(
                issuer=ipb.Issuer(
                    name="F",
                    email="a@example.com",
                    url="https://example.com",
                    extensions=without_kind(shape),
                )
            )
        ),
        INVALID,
        reason="VALUE_KIND_MISSING",
        field="issuer.extensions" + KINDLESS[shape],
    )
    issuer = await issuers(org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(
            issuer=ipb.Issuer(name="F", email="a@example.com", url="https://example.com")
        )
    )
    await expect_error(
        classes(org.admin).CreateBadgeClass(
            bcpb.CreateBadgeClassRequest(
                badge_class=bcpb.BadgeClass(
                    issuer=issuer.id,
                    name="C",
                    description="d",
                    image="https://example.com/i.png",
                    criteria_narrative="c",
                    extensions=without_kind(shape),
                )
            )
        ),
        INVALID,
        reason="VALUE_KIND_MISSING",
        field="badge_class.extensions" + KINDLESS[shape],
    )


async def test_badgr_extensions_and_refs_at_their_limits(org: Org) -> None:
    stub = issuers(org.admin)

    def with_extensions(size: int) -> Any:
        return stub.CreateIssuer(
            ipb.CreateIssuerRequest(
                issuer=ipb.Issuer(
                    name="F",
                    email="a@example.com",
                    url="https://example.com",
                    extensions=string_struct(size),
                )
            )
        )

    made = await with_extensions(limits.BADGR_EXTENSIONS_BYTES)
    assert made.extensions.ByteSize() == limits.BADGR_EXTENSIONS_BYTES
    await expect_limit(
        with_extensions(limits.BADGR_EXTENSIONS_BYTES + 1),
        "issuer.extensions",
        limits.BADGR_EXTENSIONS_BYTES,
    )
    # The longest ref is read (and names none of ours); a longer one is not.
    ref = base64.b64encode(b"x" * (limits.BADGR_REF_CHARS // 4 * 3)).decode()
    assert len(ref) == limits.BADGR_REF_CHARS
    await expect_error(
        stub.GetIssuer(ipb.GetIssuerRequest(ref=ref)),
        INVALID,
        reason="INVALID_FIELD",
        field="ref",
    )
    await expect_limit(
        stub.GetIssuer(ipb.GetIssuerRequest(ref=ref + "A")), "ref", limits.BADGR_REF_CHARS
    )
    # A staff member's URL is held to the URL limit too.
    await expect_limit(
        stub.CreateIssuer(
            ipb.CreateIssuerRequest(
                issuer=ipb.Issuer(
                    name="F", email="a@example.com", url=url_of_bytes(limits.URL_BYTES + 1)
                )
            )
        ),
        "issuer.url",
        limits.URL_BYTES,
    )


async def test_a_page_of_maximum_size_claim_codes_is_served(backend: Backend, org: Org) -> None:
    issuer = await issuers(org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(
            issuer=ipb.Issuer(name="F", email="a@example.com", url="https://example.com")
        )
    )
    bc = await classes(org.admin).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(
            badge_class=bcpb.BadgeClass(
                issuer=issuer.id,
                name="C",
                description="d",
                image="https://example.com/i.png",
                criteria_narrative="c",
            )
        )
    )
    label = "\U0001f600" * limits.BADGR_TEXT_CHARS
    stub = classes(big(backend, org.admin_key))
    made = await stub.CreateClaimCodes(
        bcpb.CreateClaimCodesRequest(
            id_or_entity_id=bc.id, count=limits.CLAIM_CODES_PER_CALL, label=label
        )
    )
    assert len(made.claim_codes) == limits.CLAIM_CODES_PER_CALL
    await expect_limit(
        stub.CreateClaimCodes(
            bcpb.CreateClaimCodesRequest(
                id_or_entity_id=bc.id, count=limits.CLAIM_CODES_PER_CALL + 1
            )
        ),
        "count",
        limits.CLAIM_CODES_PER_CALL,
    )
    page = await stub.ListClaimCodes(
        bcpb.ListClaimCodesRequest(id_or_entity_id=bc.id, page_size=5_000)
    )
    assert len(page.claim_codes) == limits.CLAIM_CODES_PAGE
    assert all(c.label == label for c in page.claim_codes)
    assert page.ByteSize() <= limits.PAGE_BUDGET_BYTES
