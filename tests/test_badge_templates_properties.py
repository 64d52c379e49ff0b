"""Property-based tests of BadgeTemplateService with the caller's real organization_id, so the
requests get past the organisation check and reach the rules and the store: "mostly valid"
creates, updates, lists and lookups. A reply is OK or a documented client error, never UNKNOWN
or INTERNAL; what a create or update stores reads back exactly as it was returned.

(tests/test_properties.py sends arbitrary requests to every RPC too, but cannot know an
organisation's UUID, so most of them stop at NOT_FOUND.)
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from tests.strategies import mutations
from tests.support import Backend, Org, details_of
from tests.test_badge_templates import create, full_template, get, templates

CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


class World:
    """An organisation with a primary template (allowing variants) and a plain one."""

    def __init__(self, org: Org, primary: pb.BadgeTemplate, plain: pb.BadgeTemplate) -> None:
        self.org, self.primary, self.plain = org, primary, plain

    def __repr__(self) -> str:
        return f"World(org={self.org.id})"


@pytest.fixture
async def world(backend: Backend) -> World:
    org = await backend.new_org()
    primary = await create(
        org,
        pb.BadgeTemplate(
            name="Primary", variants_allowed=True, state=pb.BADGE_TEMPLATE_STATE_ACTIVE
        ),
    )
    plain = await create(org, full_template("Plain"))
    return World(org, primary, plain)


def rich_template(w: World) -> pb.BadgeTemplate:
    """A valid template that names the world's primary template in every way it can."""
    t = full_template("Rich")
    t.ClearField("vanity_slug")
    t.primary_badge_template_id = w.primary.id
    t.variant_name = "French"
    t.required_badge_templates.add(id=w.primary.id)
    t.badge_template_activities.add(title="Earn it", required_badge_template_id=w.primary.id)
    t.recommendations.add(
        type=pb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_BADGE, recommended_badge_template_id=w.primary.id
    )
    return t


async def outcome(call: Any) -> tuple[grpc.StatusCode, Any]:
    """The status of a call and its reply (None when it failed)."""
    try:
        return grpc.StatusCode.OK, await call
    except grpc.aio.AioRpcError as err:
        got = details_of(err)
        assert got.info is not None and got.info.domain == "badges.v1", got
        if got.code is grpc.StatusCode.INVALID_ARGUMENT:
            assert got.bad_request is not None and got.bad_request.field_violations, got
        return got.code, None


async def test_valid_bases(world: World) -> None:
    # The starting points below must be valid themselves.
    stub = templates(world.org.admin)
    created = await stub.CreateBadgeTemplate(
        pb.CreateBadgeTemplateRequest(
            organization_id=world.org.uuid, badge_template=rich_template(world)
        )
    )
    assert created.primary_badge_template_id == world.primary.id
    updated = await stub.UpdateBadgeTemplate(
        pb.UpdateBadgeTemplateRequest(
            organization_id=world.org.uuid,
            badge_template=_update_base(world),
            update_mask=FieldMask(paths=["*"]),
        )
    )
    assert updated.name == "Rich"


def _update_base(w: World) -> pb.BadgeTemplate:
    t = rich_template(w)
    t.id = w.plain.id
    return t


@PROPERTY
@given(data=st.data())
async def test_mutated_creates(world: World, data: st.DataObject) -> None:
    base = pb.CreateBadgeTemplateRequest(
        organization_id=world.org.uuid, badge_template=rich_template(world)
    )
    request = data.draw(mutations(base), label="request")
    code, reply = await outcome(templates(world.org.admin).CreateBadgeTemplate(request))
    assert code is grpc.StatusCode.OK or code in CLIENT_ERRORS, code
    if reply is not None:
        assert await get(world.org, reply.id) == reply


@PROPERTY
@given(data=st.data())
async def test_mutated_updates(world: World, data: st.DataObject) -> None:
    base = pb.UpdateBadgeTemplateRequest(
        organization_id=world.org.uuid,
        badge_template=_update_base(world),
        update_mask=FieldMask(paths=["*"]),
    )
    request = data.draw(mutations(base), label="request")
    code, reply = await outcome(templates(world.org.admin).UpdateBadgeTemplate(request))
    assert code is grpc.StatusCode.OK or code in CLIENT_ERRORS, code
    if reply is not None:
        assert await get(world.org, reply.id) == reply


@PROPERTY
@given(data=st.data())
async def test_mutated_lists(world: World, data: st.DataObject) -> None:
    base = pb.ListBadgeTemplatesRequest(
        organization_id=world.org.uuid,
        filter="state::active,draft|skills::Skill 1|created_at_min::2020-01-01",
        sort="-badges_count|name",
        page_size=1,
    )
    first = await templates(world.org.reader).ListBadgeTemplates(base)
    base.page_token = first.next_page_token
    request = data.draw(mutations(base), label="request")
    code, reply = await outcome(templates(world.org.reader).ListBadgeTemplates(request))
    assert code is grpc.StatusCode.OK or code in CLIENT_ERRORS, code
    if reply is not None:
        assert reply.metadata.count == len(reply.badge_templates)
        assert reply.total_size == reply.metadata.total_count


@PROPERTY
@given(
    data=st.data(),
    method=st.sampled_from(
        [
            "GetBadgeTemplate",
            "DeleteBadgeTemplate",
            "ArchiveBadgeTemplate",
            "UnarchiveBadgeTemplate",
        ]
    ),
)
async def test_mutated_lookups(world: World, data: st.DataObject, method: str) -> None:
    request_class = getattr(pb, f"{method.removesuffix('BadgeTemplate')}BadgeTemplateRequest")
    base = request_class(organization_id=world.org.uuid, id=world.plain.id)
    request = data.draw(mutations(base), label="request")
    code, _ = await outcome(getattr(templates(world.org.admin), method)(request))
    assert code is grpc.StatusCode.OK or code in CLIENT_ERRORS, code
