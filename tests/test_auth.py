"""Authentication, roles and tenancy: the three credential forms, reader keys refused on
every write RPC, one org never seeing another's data, and health/reflection open to all."""

from __future__ import annotations

import asyncio
import base64
import gc
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from badge_service.api.badges.v1 import badge_pb2 as bp
from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.api.badges.v1 import org_meta_pb2 as om
from badge_service.domain.auth import KEY_PREFIX, key_id_of, new_api_key
from badge_service.rpc.interceptor import write_methods
from badge_service.server import SERVICES
from tests.support import Backend, Client, ErrorDetails, Org, expect_error

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def basic(org_id: object, key: str) -> tuple[str, str]:
    token = base64.b64encode(f"{org_id}:{key}".encode()).decode()
    return ("authorization", f"Basic {token}")


def new_field(name: str = "Size") -> cf.CreateCustomFieldRequest:
    return cf.CreateCustomFieldRequest(
        custom_field=cf.CustomField(name=name, data_type=common_pb2.DATA_TYPE_STRING)
    )


def new_badge(name: str = "badge_001") -> bp.CreateBadgeRequest:
    return bp.CreateBadgeRequest(
        badge=bp.Badge(
            name=name,
            title="Game Attendance",
            badge_states=[bp.BadgeState(state=bp.BADGE_STATE_TYPE_EARNED, order=1)],
        )
    )


async def key_id(backend: Backend, key: str) -> int:
    """The id of an API key, as the audit fields carry it."""
    found = key_id_of(key)
    assert found is not None
    return found


async def unauthenticated(call: Awaitable[Any], reason: str, secret: str = "") -> ErrorDetails:
    got = await expect_error(call, UNAUTHENTICATED, reason=reason)
    assert got.info is not None and got.info.domain == "badges.v1", got
    if secret:
        assert secret not in got.message, "a key must never be echoed back"
    return got


# --- credentials ----------------------------------------------------------------------------


async def test_missing_credentials(backend: Backend) -> None:
    anonymous = backend.client()
    for call in (
        anonymous.meta.GetOrgMeta(om.GetOrgMetaRequest()),
        anonymous.fields.ListCustomFields(cf.ListCustomFieldsRequest()),
        anonymous.badges.ListBadges(bp.ListBadgesRequest()),
        anonymous.fields.CreateCustomField(new_field()),
    ):
        await unauthenticated(call, "MISSING_CREDENTIALS")


async def test_blank_x_api_key_is_missing_credentials(backend: Backend) -> None:
    client = backend.client([("x-api-key", "   ")])
    await unauthenticated(client.meta.GetOrgMeta(om.GetOrgMetaRequest()), "MISSING_CREDENTIALS")


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
async def test_wrong_key_is_invalid_api_key(backend: Backend, org: Org, header: str) -> None:
    wrong = new_api_key(10**12)  # an id no key has
    md = [("authorization", f"Bearer {wrong}")] if header == "bearer" else [("x-api-key", wrong)]
    client = backend.client(md)
    await unauthenticated(
        client.meta.GetOrgMeta(om.GetOrgMetaRequest()), "INVALID_API_KEY", secret=wrong
    )
    await unauthenticated(client.fields.CreateCustomField(new_field()), "INVALID_API_KEY")


async def test_refused_calls_leave_no_cycles_for_the_collector(backend: Backend, org: Org) -> None:
    # A refused call's error once held, through its traceback's frames, the call's context and
    # so the call's own state: each left ~50 objects that only the garbage collector freed
    # (gen-2 pauses of 100+ ms under a flood of unknown keys). Its rich status must still
    # arrive.
    wrong = backend.client([("authorization", f"Bearer {new_api_key(10**12)}")])
    missing = org.admin.badges.GetBadge(bp.GetBadgeRequest(id=10**12))
    await unauthenticated(wrong.badges.GetBadge(bp.GetBadgeRequest(id=1)), "INVALID_API_KEY")
    await expect_error(missing, grpc.StatusCode.NOT_FOUND)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            await unauthenticated(
                wrong.badges.GetBadge(bp.GetBadgeRequest(id=1)), "INVALID_API_KEY"
            )
            await expect_error(
                org.admin.badges.GetBadge(bp.GetBadgeRequest(id=10**12)),
                grpc.StatusCode.NOT_FOUND,
            )
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    # grpc's own method lookup still leaves a small cycle per call (a closure and its scope);
    # none of ours, and nothing of a call's frames or state.
    assert not kinds & {"frame", "traceback", "RPCState", "_ServicerContext", "AbortError"}, kinds


async def test_every_credential_form_works(backend: Backend, org: Org) -> None:
    admin_key_id = await key_id(backend, org.admin_key)
    forms = [
        [("authorization", f"Bearer {org.admin_key}")],
        [("authorization", f"bearer {org.admin_key}")],
        [basic(org.id, org.admin_key)],
        [("x-api-key", org.admin_key)],
    ]
    for i, md in enumerate(forms):
        client = backend.client(md)
        meta = await client.meta.GetOrgMeta(om.GetOrgMetaRequest())
        assert meta.org_id == org.id
        created = await client.fields.CreateCustomField(new_field(f"Form {i}"))
        assert (created.org_id, created.created_by) == (org.id, admin_key_id)
    listed = await org.reader.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert [f.name for f in listed.custom_fields] == [f"Form {i}" for i in range(len(forms))]


async def test_basic_with_reader_key_reads(backend: Backend, org: Org) -> None:
    client = backend.client([basic(org.id, org.reader_key)])
    assert (await client.meta.GetOrgMeta(om.GetOrgMetaRequest())).org_id == org.id


async def test_basic_with_wrong_org_or_key(backend: Backend, org: Org, other_org: Org) -> None:
    cases = [
        basic(other_org.id, org.admin_key),  # a real org, not the key's
        basic(org.id + 10_000_000, org.admin_key),  # no such org
        basic(org.id, other_org.admin_key),  # the other org's key, claiming this org
        basic(org.id, KEY_PREFIX + secrets.token_urlsafe(32)),  # no such key
    ]
    for md in cases:
        client = backend.client([md])
        await unauthenticated(client.meta.GetOrgMeta(om.GetOrgMetaRequest()), "INVALID_API_KEY")


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"acme:bsk_abc").decode(),  # org must be a number
        "Basic " + base64.b64encode(b"12:").decode(),  # empty key
        "Basic " + base64.b64encode(b"\xff\xfe:key").decode(),  # not UTF-8
        "Basic",
        "Bearer",
        "Token abc",
    ],
)
async def test_malformed_authorization(backend: Backend, org: Org, value: str) -> None:
    # A valid x-api-key beside a malformed authorization header does not rescue the call.
    client = backend.client([("authorization", value), ("x-api-key", org.admin_key)])
    await unauthenticated(client.meta.GetOrgMeta(om.GetOrgMetaRequest()), "MALFORMED_CREDENTIALS")


# --- roles ----------------------------------------------------------------------------------

WRITES = {
    "/badges.v1.OrgMetaService/UpdateOrgMeta",
    "/badges.v1.CustomFieldService/CreateCustomField",
    "/badges.v1.CustomFieldService/UpdateCustomField",
    "/badges.v1.CustomFieldService/DeleteCustomField",
    "/badges.v1.BadgeService/CreateBadge",
    "/badges.v1.BadgeService/UpdateBadge",
    "/badges.v1.BadgeService/DeleteBadge",
}
READS = {
    "/badges.v1.OrgMetaService/GetOrgMeta",
    "/badges.v1.CustomFieldService/GetCustomField",
    "/badges.v1.CustomFieldService/ListCustomFields",
    "/badges.v1.BadgeService/GetBadge",
    "/badges.v1.BadgeService/ListBadges",
}


def test_the_role_tests_cover_every_rpc() -> None:
    """If an RPC is added to these services, the reader tests below must learn about it.
    (Services added later carry their own role tests.)"""
    mine = (
        "/badges.v1.OrgMetaService/",
        "/badges.v1.CustomFieldService/",
        "/badges.v1.BadgeService/",
    )
    kinds = {m: w for m, w in write_methods(SERVICES).items() if m.startswith(mine)}
    assert {m for m, w in kinds.items() if w} == WRITES
    assert {m for m, w in kinds.items() if not w} == READS


async def test_reader_is_denied_every_write_and_nothing_changes(org: Org) -> None:
    field = await org.admin.fields.CreateCustomField(new_field())
    badge = await org.admin.badges.CreateBadge(new_badge())
    meta = await org.admin.meta.GetOrgMeta(om.GetOrgMetaRequest())
    r = org.reader
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "UpdateOrgMeta": lambda: r.meta.UpdateOrgMeta(
            om.UpdateOrgMetaRequest(
                org_meta=om.OrgMeta(
                    tags=[om.OrgMetaTag(key="A", data_type=common_pb2.DATA_TYPE_STRING)]
                )
            )
        ),
        "CreateCustomField": lambda: r.fields.CreateCustomField(new_field("Other")),
        "UpdateCustomField": lambda: r.fields.UpdateCustomField(
            cf.UpdateCustomFieldRequest(
                custom_field=cf.CustomField(id=field.id, name="Renamed"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        "DeleteCustomField": lambda: r.fields.DeleteCustomField(
            cf.DeleteCustomFieldRequest(id=field.id)
        ),
        "CreateBadge": lambda: r.badges.CreateBadge(new_badge("badge_002")),
        "UpdateBadge": lambda: r.badges.UpdateBadge(
            bp.UpdateBadgeRequest(
                badge=bp.Badge(id=badge.id, title="Game Day"),
                update_mask=FieldMask(paths=["title"]),
            )
        ),
        "DeleteBadge": lambda: r.badges.DeleteBadge(bp.DeleteBadgeRequest(id=badge.id)),
    }
    assert {m.rsplit("/", 1)[1] for m in WRITES} == set(calls)
    for method, call in calls.items():
        got = await expect_error(
            call(), grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN"
        )
        assert got.info is not None
        assert dict(got.info.metadata) == {"role": "reader", "method": method}

    assert await org.admin.meta.GetOrgMeta(om.GetOrgMetaRequest()) == meta
    fields = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert list(fields.custom_fields) == [field]
    badges = await org.admin.badges.ListBadges(bp.ListBadgesRequest())
    assert list(badges.badges) == [badge]


async def test_reader_is_denied_even_an_invalid_write(org: Org) -> None:
    """The role is checked before the request is: a reader learns nothing from validation."""
    await expect_error(
        org.reader.fields.CreateCustomField(cf.CreateCustomFieldRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="WRITE_REQUIRES_ADMIN",
    )


async def test_reader_can_call_every_read(org: Org) -> None:
    field = await org.admin.fields.CreateCustomField(new_field())
    badge = await org.admin.badges.CreateBadge(new_badge())
    meta = await org.admin.meta.GetOrgMeta(om.GetOrgMetaRequest())
    r = org.reader
    assert await r.meta.GetOrgMeta(om.GetOrgMetaRequest()) == meta
    assert await r.fields.GetCustomField(cf.GetCustomFieldRequest(id=field.id)) == field
    listed = await r.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert list(listed.custom_fields) == [field]
    assert await r.badges.GetBadge(bp.GetBadgeRequest(id=badge.id)) == badge
    badges = await r.badges.ListBadges(bp.ListBadgesRequest())
    assert list(badges.badges) == [badge]


# --- tenancy --------------------------------------------------------------------------------


async def test_other_org_cannot_see_or_touch_a_custom_field(org: Org, other_org: Org) -> None:
    field = await org.admin.fields.CreateCustomField(new_field())
    theirs = await other_org.admin.fields.CreateCustomField(new_field("Theirs"))
    for client in (other_org.admin, other_org.reader):
        await expect_error(
            client.fields.GetCustomField(cf.GetCustomFieldRequest(id=field.id)),
            NOT_FOUND,
            reason="NOT_FOUND",
        )
        listed = await client.fields.ListCustomFields(cf.ListCustomFieldsRequest())
        assert list(listed.custom_fields) == [theirs] and listed.total_size == 1
    a = other_org.admin.fields
    await expect_error(
        a.UpdateCustomField(
            cf.UpdateCustomFieldRequest(
                custom_field=cf.CustomField(id=field.id, name="Stolen"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        a.DeleteCustomField(cf.DeleteCustomFieldRequest(id=field.id)), NOT_FOUND, reason="NOT_FOUND"
    )
    # A page token carries no org: one org's token pages only its own fields.
    await org.admin.fields.CreateCustomField(new_field("Second"))
    page = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_size=1))
    assert page.next_page_token
    other_page = await a.ListCustomFields(
        cf.ListCustomFieldsRequest(page_size=1, page_token=page.next_page_token)
    )
    assert all(f.org_id == other_org.id for f in other_page.custom_fields)
    assert await org.admin.fields.GetCustomField(cf.GetCustomFieldRequest(id=field.id)) == field


async def test_other_org_cannot_see_or_touch_a_badge(org: Org, other_org: Org) -> None:
    badge = await org.admin.badges.CreateBadge(new_badge())
    theirs = await other_org.admin.badges.CreateBadge(new_badge())  # same name: other org
    for client in (other_org.admin, other_org.reader):
        await expect_error(
            client.badges.GetBadge(bp.GetBadgeRequest(id=badge.id)), NOT_FOUND, reason="NOT_FOUND"
        )
        listed = await client.badges.ListBadges(bp.ListBadgesRequest())
        assert list(listed.badges) == [theirs] and listed.total_size == 1
    a = other_org.admin.badges
    await expect_error(
        a.UpdateBadge(
            bp.UpdateBadgeRequest(
                badge=bp.Badge(id=badge.id, title="Stolen"), update_mask=FieldMask(paths=["title"])
            )
        ),
        NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        a.DeleteBadge(bp.DeleteBadgeRequest(id=badge.id)), NOT_FOUND, reason="NOT_FOUND"
    )
    assert await org.admin.badges.GetBadge(bp.GetBadgeRequest(id=badge.id)) == badge


async def test_each_org_sees_only_its_own_meta(org: Org, other_org: Org) -> None:
    await org.admin.meta.UpdateOrgMeta(
        om.UpdateOrgMetaRequest(
            org_meta=om.OrgMeta(
                tags=[om.OrgMetaTag(key="Mine", data_type=common_pb2.DATA_TYPE_STRING)]
            )
        )
    )
    theirs = await other_org.reader.meta.GetOrgMeta(om.GetOrgMetaRequest())
    assert theirs.org_id == other_org.id and list(theirs.tags) == []


# --- open services --------------------------------------------------------------------------


async def test_health_needs_no_key(backend: Backend) -> None:
    health = backend.client().stub(health_pb2_grpc.HealthStub)
    serving = health_pb2.HealthCheckResponse.SERVING
    names = ["", *(s.full_name for s in SERVICES)]
    for name in names:
        # The store monitor flips to SERVING after its first ping; allow it (30 s at least,
        # for a loaded machine).
        for _ in range(300):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            if reply.status == serving:
                break
            await asyncio.sleep(0.1)
        assert reply.status == serving, name
    try:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    except grpc.aio.AioRpcError as err:
        assert err.code() == NOT_FOUND
    else:
        raise AssertionError("an unknown service must be NOT_FOUND")


async def test_health_ignores_a_bad_key(backend: Backend) -> None:
    client = backend.client([("authorization", "Token nonsense")])
    reply = await client.stub(health_pb2_grpc.HealthStub).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _reflect(client: Client, request: reflection_pb2.ServerReflectionRequest) -> Any:
    stub = client.stub(reflection_pb2_grpc.ServerReflectionStub)
    replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    assert len(replies) == 1
    return replies[0]


async def test_reflection_needs_no_key(backend: Backend) -> None:
    client = backend.client()
    reply = await _reflect(client, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        *(s.full_name for s in SERVICES),
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert {
        "badges.v1.OrgMetaService",
        "badges.v1.CustomFieldService",
        "badges.v1.BadgeService",
    } <= names
    described = await _reflect(
        client,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="badges.v1.CustomFieldService"
        ),
    )
    assert described.file_descriptor_response.file_descriptor_proto
