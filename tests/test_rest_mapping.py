"""docs/rest-mapping.md, executed: every row of its tables (HTTP method, path template, gRPC
method) is called over HTTP on a live server with the HTTP face, and the same operation (the
row's RPC, same org, equivalent input) over gRPC; the outcomes must agree, on each database.

Agreeing means: the same success or failure class and code, the HTTP status the row's envelope
gives that gRPC code (the standard map for the project's own ``/v1/`` rows, each vendor's
statuses for its rows, written here from the doc rather than taken from the modules), and the
same content: the HTTP body equals the gRPC reply rendered through the row's own conversion
(``transcode.to_json`` for own rows, the vendor module's ``*_json`` in its envelope for vendor
rows), failures the same message and reason. Writes that take a ``request_id`` are sent over
HTTP with one, then over gRPC with the same id: the service answers a retry only when its
request is the same, so the reply proves the vendor's spelling became exactly the gRPC input.
Updates are repeated over gRPC on the same resource (only update times may differ); deletes run
on twin resources, then again on the deleted one, for the same NOT_FOUND both ways.

Every row also refuses alike both ways a call without a key (UNAUTHENTICATED, 401) and, on rows
whose key is ``admin``, a reader key (PERMISSION_DENIED, 403): ``test_row_keys``.

Cases are a table keyed by (HTTP method, path template); a row of the doc without a case, or a
case without a row, fails ``test_every_row_has_a_case``.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, common_pb2
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import custom_field_pb2 as cfpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.api.badges.v1 import org_meta_pb2 as ompb
from badge_service.http.rest import badgr, capillary, credly, crowdtwist, transcode
from badge_service.http.rest.gateway import RpcFailure
from tests.rest_face import Face, face_of, org_on
from tests.support import Backend, Client, Org
from tests.test_badge_templates import templates
from tests.test_issuers import classes, issuers, small_class, small_issuer

DOC = Path(__file__).resolve().parents[1] / "docs" / "rest-mapping.md"
VERBS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
OWN = "badge-service (own)"
CAPILLARY = "Capillary"
CROWDTWIST = "CrowdTwist v2.1"
CREDLY = "Credly"
BADGR = "Badgr v2"
C = grpc.StatusCode

# google/rpc/code.proto's HTTP mapping (grpc-gateway's): the own rows' statuses.
STANDARD = {
    C.INVALID_ARGUMENT: 400,
    C.FAILED_PRECONDITION: 400,
    C.OUT_OF_RANGE: 400,
    C.UNAUTHENTICATED: 401,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.ABORTED: 409,
    C.RESOURCE_EXHAUSTED: 429,
    C.UNAVAILABLE: 503,
}
# Credly's and Badgr's statuses as docs/rest-mapping.md's "Over HTTP" paragraphs give them.
CREDLY_STATUS = {**STANDARD, C.INVALID_ARGUMENT: 422, C.FAILED_PRECONDITION: 409}
BADGR_STATUS = dict(STANDARD)
# Times a repeated update moves; everything else must be equal.
UPDATE_TIMES = frozenset(
    {"lastUpdatedOn", "lastUpdatedOnISO", "updated_at", "updatedAt", "updateTime", "update_time"}
)
MISSING_HEX = "0123456789abcdef01234567"
MISSING_UUID = "00000000-0000-4000-8000-000000000000"


# --- The doc's rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a service table: who serves it, the HTTP binding and the RPC."""

    vendor: str
    verb: str
    path: str
    rpc: str
    key: str

    @property
    def own(self) -> bool:
        return self.vendor == OWN


def doc_rows() -> list[Row]:
    """Every row of every service table of docs/rest-mapping.md."""
    found = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[1] in VERBS:
            path, rpc = cells[2].strip("`"), cells[3].strip("`")
            found.append(Row(cells[0], cells[1], path, rpc, cells[8]))
    return found


ROWS = doc_rows()


# --- A row's context and the comparison of outcomes -------------------------------------------


@dataclass
class Ctx:
    """The row under test, the HTTP client and the org (its gRPC clients on the same server)."""

    row: Row
    http: httpx.AsyncClient
    org: Org
    base: str

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.org.admin_key}"}

    @property
    def reader(self) -> dict[str, str]:
        return {"x-api-key": self.org.reader_key}

    def stub(self, cls: type[Any], *, admin: bool = True) -> Any:
        return (self.org.admin if admin else self.org.reader).stub(cls)

    def path(self, **values: Any) -> str:
        """The row's path template filled in (each ``{name}`` by ``values[name]``, dots as
        underscores)."""
        out = self.row.path
        for name, value in values.items():
            out = out.replace("{" + name.replace("__", ".") + "}", str(value))
        assert "{" not in out, out
        return out


def _drop(doc: Any, keys: frozenset[str]) -> Any:
    if isinstance(doc, dict):
        return {k: _drop(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_drop(v, keys) for v in doc]
    return doc


def check_ok(
    ctx: Ctx, resp: httpx.Response, expected: Any, status: int, ignore: frozenset[str]
) -> None:
    """A success: the row's status and, for a body, ``expected`` (Badgr's ``timestamp`` is the
    time of answering, so left out)."""
    want = 200 if ctx.row.own else status
    assert resp.status_code == want, (ctx.row, resp.status_code, resp.text)
    if want == 204:
        assert resp.content == b""
        return
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    if ctx.row.vendor == BADGR:
        assert isinstance(body.pop("timestamp"), str)
        expected = {k: v for k, v in expected.items() if k != "timestamp"}
    assert _drop(body, ignore) == _drop(expected, ignore), ctx.row


def check_failure(ctx: Ctx, resp: httpx.Response, failure: RpcFailure, status: int | None) -> None:
    """A failure: the HTTP status of the gRPC code in the row's envelope (``status`` where a
    vendor's depends on more than the code), and the gRPC status's message, reason and fields
    in that envelope's error body."""
    vendor, code, body = ctx.row.vendor, failure.code, resp.json()
    if vendor == OWN:
        assert resp.status_code == STANDARD[code], (ctx.row, resp.text)
        # The very google.rpc.Status of the gRPC trailers, details and all.
        assert body == {"details": []} | json_format.MessageToDict(failure.status)
    elif vendor == CAPILLARY:
        vendor_code = failure.metadata.get("code", "")
        want = 400 if vendor_code.isdigit() else STANDARD[code]
        number = int(vendor_code) if vendor_code.isdigit() else want
        assert resp.status_code == want, (ctx.row, resp.text)
        assert body == {
            "data": None,
            "errors": [{"code": number, "message": failure.message}],
            "warnings": [],
        }
    elif vendor == CROWDTWIST:
        assert resp.status_code == STANDARD[code], (ctx.row, resp.text)
        # The field named: ErrorInfo's metadata["field"], else the first BadRequest violation.
        field = failure.metadata.get("field") or next((f for f, _ in failure.violations), "")
        error = {"code": STANDARD[code], "message": failure.message, "reason": failure.reason}
        assert body == {"error": error | ({"field": field} if field else {})}
    elif vendor == CREDLY:
        assert resp.status_code == (status or CREDLY_STATUS[code]), (ctx.row, resp.text)
        attributes: dict[str, list[str]] = {}
        for f, text in failure.violations:
            attributes.setdefault(f.removeprefix("badge_template."), []).append(text)
        if not attributes and failure.metadata.get("field"):
            attributes = {
                failure.metadata["field"].removeprefix("badge_template."): [failure.message]
            }
        errors = [{"attribute": a, "messages": m} for a, m in attributes.items()]
        data = {"message": failure.message, "errors": errors, "code": failure.reason}
        assert body == {"data": data, "metadata": {}}
    else:
        assert vendor == BADGR, vendor
        assert resp.status_code == (status or BADGR_STATUS[code]), (ctx.row, resp.text)
        assert body["status"] == {"success": False, "description": failure.message}
        assert (body["result"], body["errorCode"]) == ([], failure.reason)
        # Badgr names fields in camelCase, without the request's resource prefix.
        by_field: dict[str, list[str]] = {}
        for f, text in failure.violations:
            by_field.setdefault(badgr_field(f), []).append(text)
        assert body["fieldErrors"] == by_field
        assert body["validationErrors"] == [f"{f}: {t}" for f, t in failure.violations]
        assert body["nonFieldErrors"] == ([] if failure.violations else [failure.message])


def badgr_field(path: str) -> str:
    for prefix in ("issuer.", "badge_class.", "award."):
        path = path.removeprefix(prefix)
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


async def same(
    ctx: Ctx,
    resp: httpx.Response,
    call: Awaitable[Any],
    render: Callable[[Any], Any] | None = None,
    *,
    expect: grpc.StatusCode = C.OK,
    status: int = 200,
    error_status: int | None = None,
    ignore: frozenset[str] = frozenset(),
) -> Any:
    """Awaits the gRPC ``call`` and checks the HTTP answer ``resp`` has the same outcome:
    ``expect`` both ways; on success the body is ``render(reply)`` for a vendor row (with
    ``status``), ``transcode.to_json(reply)`` for an own row; on failure the envelope's error
    (``error_status`` where a vendor's status depends on more than the code). Returns the
    reply (or the failure)."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        failure = RpcFailure.of(error)
        assert failure.code == expect, (ctx.row, failure)
        check_failure(ctx, resp, failure, error_status)
        return failure
    assert expect == C.OK, (ctx.row, "gRPC succeeded", reply)
    expected = transcode.to_json(reply) if ctx.row.own or render is None else render(reply)
    check_ok(ctx, resp, expected, status, ignore)
    return reply


def rid() -> str:
    return str(uuid.uuid4())


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Renderings of replies in each vendor's envelope, through the vendor modules' conversions.


def cap(data: Any, empty: list[Any] | None = None) -> dict[str, Any]:
    return {"data": data, "errors": empty, "warnings": empty}


def cap_field(field: cfpb.CustomField) -> dict[str, Any]:
    return cap(capillary.custom_field_json(field), [])


def credly_one(template: tpb.BadgeTemplate) -> dict[str, Any]:
    return {"data": credly.template_json(template, single=True), "metadata": {}}


def badgr_of(*resources: Message) -> dict[str, Any]:
    return badgr.envelope([badgr.resource_json(r) for r in resources])


# --- Set-up over gRPC -------------------------------------------------------------------------


async def new_field(ctx: Ctx, name: str) -> cfpb.CustomField:
    return await ctx.org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(
            custom_field=cfpb.CustomField(name=name, data_type=common_pb2.DATA_TYPE_STRING)
        )
    )


def states() -> list[bpb.BadgeState]:
    return [
        bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_UNEARNED, order=1),
        bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_IN_PROGRESS, order=2),
        bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=3),
    ]


async def new_badge(ctx: Ctx, name: str) -> bpb.Badge:
    badge = bpb.Badge(name=name, title="Game Attendance", badge_states=states())
    return await ctx.org.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge))


async def new_template(ctx: Ctx, name: str, **fields: Any) -> tpb.BadgeTemplate:
    template = tpb.BadgeTemplate(name=name, state=tpb.BADGE_TEMPLATE_STATE_ACTIVE, **fields)
    return await templates(ctx.org.admin).CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(organization_id=ctx.org.uuid, badge_template=template)
    )


async def new_issuer(ctx: Ctx, name: str = "Faculty") -> ipb.Issuer:
    return await issuers(ctx.org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(issuer=small_issuer(name))
    )


async def new_class(ctx: Ctx, issuer: ipb.Issuer, name: str = "Math Expert") -> bcpb.BadgeClass:
    return await classes(ctx.org.admin).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=small_class(issuer.entity_id, name))
    )


async def new_codes(ctx: Ctx, bc: bcpb.BadgeClass, count: int) -> list[bcpb.ClaimCode]:
    reply = await classes(ctx.org.admin).CreateClaimCodes(
        bcpb.CreateClaimCodesRequest(id_or_entity_id=bc.entity_id, count=count)
    )
    return list(reply.claim_codes)


def awards(ctx: Ctx, *, admin: bool = True) -> Any:
    return ctx.stub(award_pb2_grpc.AwardServiceStub, admin=admin)


async def award_of_badge(ctx: Ctx, badge: bpb.Badge, member: str = "1001") -> apb.Award:
    award = apb.Award(badge_id=badge.id, recipient=apb.Recipient(member_id=member))
    return await awards(ctx).CreateAward(apb.CreateAwardRequest(award=award))


# --- Cases, keyed by (HTTP method, path template) ---------------------------------------------

Case = Callable[[Ctx], Awaitable[None]]
CASES: dict[tuple[str, str], Case] = {}


def case(*keys: tuple[str, str]) -> Callable[[Case], Case]:
    """Registers a case for the rows of ``keys`` (one function may serve a vendor's path and
    the project's own, branching on ``ctx.row.own``)."""

    def register(fn: Case) -> Case:
        for key in keys:
            assert key not in CASES, key
            CASES[key] = fn
        return fn

    return register


# OrgMetaService.


@case(("GET", "/api_gateway/v1/badges/orgMeta"), ("GET", "/v1/orgMeta"))
async def get_org_meta(ctx: Ctx) -> None:
    resp = await ctx.http.get(ctx.path(), headers=ctx.reader)
    call = ctx.org.reader.meta.GetOrgMeta(ompb.GetOrgMetaRequest())
    await same(ctx, resp, call, lambda m: cap(capillary.org_meta_json(m)))


@case(("PUT", "/api_gateway/v1/badges/orgMeta"), ("PUT", "/v1/orgMeta"))
async def update_org_meta(ctx: Ctx) -> None:
    tag = ompb.OrgMetaTag(key="tier", data_type=common_pb2.DATA_TYPE_STRING, description="T")
    message = ompb.UpdateOrgMetaRequest(
        org_meta=ompb.OrgMeta(tags=[tag]), update_mask=field_mask_pb2.FieldMask(paths=["tags"])
    )
    vendor = {"tags": [{"key": "tier", "dataType": "string", "description": "T"}]}
    for body, msg, expect in [
        (vendor, message, C.OK),
        # A tag without a key: refused both ways.
        ({"tags": [{"dataType": "string"}]}, _untagged(message), C.INVALID_ARGUMENT),
    ]:
        if ctx.row.own:
            resp = await ctx.http.put(
                ctx.path(),
                params={"updateMask": "tags"},
                json=as_json(msg.org_meta),
                headers=ctx.admin,
            )
        else:
            resp = await ctx.http.put(ctx.path(), json=body, headers=ctx.admin)
        call = ctx.org.admin.meta.UpdateOrgMeta(msg)
        await same(
            ctx,
            resp,
            call,
            lambda m: cap(capillary.org_meta_json(m)),
            expect=expect,
            ignore=frozenset({"lastUpdatedOn"}),
        )


def _untagged(message: ompb.UpdateOrgMetaRequest) -> ompb.UpdateOrgMetaRequest:
    out = ompb.UpdateOrgMetaRequest()
    out.CopyFrom(message)
    out.org_meta.tags[0].ClearField("key")
    out.org_meta.tags[0].ClearField("description")
    return out


# CustomFieldService.


@case(("POST", "/api_gateway/v1/badges/customField"), ("POST", "/v1/customFields"))
async def create_custom_field(ctx: Ctx) -> None:
    field = cfpb.CustomField(
        name="Tier", default_value="gold", data_type=common_pb2.DATA_TYPE_STRING
    )
    key = rid()
    vendor_body = {"name": "Tier", "defaultValue": "gold", "dataType": "string"}
    body = as_json(field) if ctx.row.own else vendor_body
    resp = await ctx.http.post(ctx.path(), params={"request_id": key}, json=body, headers=ctx.admin)
    call = ctx.org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(custom_field=field, request_id=key)
    )
    await same(ctx, resp, call, cap_field)
    # The name is taken now (Capillary's 740): the same failure both ways.
    resp = await ctx.http.post(ctx.path(), json=body, headers=ctx.admin)
    call = ctx.org.admin.fields.CreateCustomField(cfpb.CreateCustomFieldRequest(custom_field=field))
    await same(ctx, resp, call, expect=C.ALREADY_EXISTS)
    # No data type (Capillary's 741): INVALID_ARGUMENT both ways.
    resp = await ctx.http.post(ctx.path(), json={"name": "Other"}, headers=ctx.admin)
    call = ctx.org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(custom_field=cfpb.CustomField(name="Other"))
    )
    failure = await same(ctx, resp, call, expect=C.INVALID_ARGUMENT)
    assert failure.metadata["code"] == "741"


@case(("GET", "/api_gateway/v1/badges/customField/{id}"), ("GET", "/v1/customFields/{id}"))
async def get_custom_field(ctx: Ctx) -> None:
    field = await new_field(ctx, "Tier")
    for fid, expect in [(field.id, C.OK), (MISSING_HEX, C.NOT_FOUND)]:
        resp = await ctx.http.get(ctx.path(id=fid), headers=ctx.reader)
        call = ctx.org.reader.fields.GetCustomField(cfpb.GetCustomFieldRequest(id=fid))
        await same(ctx, resp, call, cap_field, expect=expect)


@case(("GET", "/api_gateway/v1/badges/customField"), ("GET", "/v1/customFields"))
async def list_custom_fields(ctx: Ctx) -> None:
    await new_field(ctx, "Tier")
    await new_field(ctx, "Region")
    resp = await ctx.http.get(ctx.path(), headers=ctx.reader)
    call = ctx.org.reader.fields.ListCustomFields(cfpb.ListCustomFieldsRequest())
    reply = await same(
        ctx,
        resp,
        call,
        lambda r: cap([capillary.custom_field_json(f) for f in r.custom_fields], []),
    )
    assert [f.name for f in reply.custom_fields] == ["Tier", "Region"]


@case(
    ("PATCH", "/api_gateway/v1/badges/customField/{custom_field.id}"),
    ("PATCH", "/v1/customFields/{custom_field.id}"),
)
async def update_custom_field(ctx: Ctx) -> None:
    field = await new_field(ctx, "Tier")
    for fid, expect in [(field.id, C.OK), (MISSING_HEX, C.NOT_FOUND)]:
        change = cfpb.CustomField(id=fid, default_value="silver")
        if ctx.row.own:
            resp = await ctx.http.patch(
                ctx.path(custom_field__id=fid),
                params={"updateMask": "defaultValue"},
                json={"defaultValue": "silver"},
                headers=ctx.admin,
            )
        else:
            resp = await ctx.http.patch(
                ctx.path(custom_field__id=fid), json={"defaultValue": "silver"}, headers=ctx.admin
            )
        call = ctx.org.admin.fields.UpdateCustomField(
            cfpb.UpdateCustomFieldRequest(
                custom_field=change, update_mask=field_mask_pb2.FieldMask(paths=["default_value"])
            )
        )
        reply = await same(ctx, resp, call, cap_field, expect=expect, ignore=UPDATE_TIMES)
        if expect == C.OK:
            assert reply.default_value == "silver"
    # A body naming nothing is still the update (the id alone, an empty mask) both ways.
    resp = await ctx.http.patch(ctx.path(custom_field__id=field.id), json={}, headers=ctx.admin)
    call = ctx.org.admin.fields.UpdateCustomField(
        cfpb.UpdateCustomFieldRequest(custom_field=cfpb.CustomField(id=field.id))
    )
    await same(ctx, resp, call, cap_field, ignore=UPDATE_TIMES)


@case(("DELETE", "/api_gateway/v1/badges/customField/{id}"), ("DELETE", "/v1/customFields/{id}"))
async def delete_custom_field(ctx: Ctx) -> None:
    one, two = await new_field(ctx, "Tier"), await new_field(ctx, "Region")
    for http_id, grpc_id, expect in [(one.id, two.id, C.OK), (one.id, one.id, C.NOT_FOUND)]:
        resp = await ctx.http.delete(ctx.path(id=http_id), headers=ctx.admin)
        call = ctx.org.admin.fields.DeleteCustomField(cfpb.DeleteCustomFieldRequest(id=grpc_id))
        await same(ctx, resp, call, lambda _: cap(None, []), expect=expect)


# BadgeService.


def ct_list(ctx: Ctx, reply: bpb.ListBadgesResponse) -> dict[str, Any]:
    paging = reply.paging

    def url(path: str) -> str | None:
        return ctx.base + path if path else None

    return {
        "paging": {
            "total": paging.total,
            "pages": paging.pages,
            "next_page": url(paging.next_page_url),
            "prev_page": url(paging.prev_page_url),
        },
        "badges": [crowdtwist.badge_json(b) for b in reply.badges],
    }


@case(("GET", "/v2.1/badges"), ("GET", "/v1/badges"))
async def list_badges(ctx: Ctx) -> None:
    for name in ("first", "second", "third"):
        await new_badge(ctx, name)
    # The second page of one: links both ways.
    resp = await ctx.http.get(ctx.path(), params={"page": 2, "page_size": 1}, headers=ctx.reader)
    call = ctx.org.reader.badges.ListBadges(bpb.ListBadgesRequest(page=2, page_size=1))
    reply = await same(ctx, resp, call, lambda r: ct_list(ctx, r))
    assert [b.name for b in reply.badges] == ["second"]
    assert (reply.paging.total, reply.paging.pages) == (3, 3)


@case(("GET", "/v2.1/badges/{id}"), ("GET", "/v1/badges/{id}"))
async def get_badge(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    for bid, expect in [(badge.id, C.OK), (2**40, C.NOT_FOUND)]:
        resp = await ctx.http.get(ctx.path(id=bid), headers=ctx.reader)
        call = ctx.org.reader.badges.GetBadge(bpb.GetBadgeRequest(id=bid))
        await same(ctx, resp, call, crowdtwist.badge_json, expect=expect)


@case(("POST", "/v2.1/badges"), ("POST", "/v1/badges"))
async def create_badge(ctx: Ctx) -> None:
    badge = bpb.Badge(name="first", title="Game Attendance", badge_states=states())
    key = rid()
    vendor_body = {
        "name": "first",
        "title": "Game Attendance",
        "badge_states": [
            {"state": "unearned", "order": 1},
            {"state": "in progress", "order": 2},
            {"state": "earned", "order": 3},
        ],
    }
    body = as_json(badge) if ctx.row.own else vendor_body
    resp = await ctx.http.post(ctx.path(), params={"request_id": key}, json=body, headers=ctx.admin)
    call = ctx.org.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge, request_id=key))
    reply = await same(ctx, resp, call, crowdtwist.badge_json, status=201)
    if not ctx.row.own:
        assert resp.headers["location"] == f"/v2.1/badges/{reply.id}"
    # The name is taken now: 409 both ways.
    resp = await ctx.http.post(ctx.path(), json=body, headers=ctx.admin)
    call = ctx.org.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge))
    await same(ctx, resp, call, expect=C.ALREADY_EXISTS)
    # No name: INVALID_ARGUMENT (400, naming the field) both ways.
    nameless = bpb.Badge(title="Game Attendance", badge_states=states())
    body = as_json(nameless) if ctx.row.own else {**vendor_body, "name": ""}
    resp = await ctx.http.post(ctx.path(), json=body, headers=ctx.admin)
    call = ctx.org.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=nameless))
    await same(ctx, resp, call, expect=C.INVALID_ARGUMENT)


@case(("PATCH", "/v2.1/badges/{badge.id}"), ("PATCH", "/v1/badges/{badge.id}"))
async def update_badge(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    for bid, expect in [(badge.id, C.OK), (2**40, C.NOT_FOUND)]:
        params = {"updateMask": "title"} if ctx.row.own else {}
        resp = await ctx.http.patch(
            ctx.path(badge__id=bid), params=params, json={"title": "Renamed"}, headers=ctx.admin
        )
        call = ctx.org.admin.badges.UpdateBadge(
            bpb.UpdateBadgeRequest(
                badge=bpb.Badge(id=bid, title="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        )
        await same(ctx, resp, call, crowdtwist.badge_json, expect=expect, ignore=UPDATE_TIMES)
    # A body naming nothing is still the update (the id alone, an empty mask) both ways.
    resp = await ctx.http.patch(ctx.path(badge__id=badge.id), json={}, headers=ctx.admin)
    call = ctx.org.admin.badges.UpdateBadge(bpb.UpdateBadgeRequest(badge=bpb.Badge(id=badge.id)))
    await same(ctx, resp, call, crowdtwist.badge_json, ignore=UPDATE_TIMES)


@case(("DELETE", "/v2.1/badges/{id}"), ("DELETE", "/v1/badges/{id}"))
async def delete_badge(ctx: Ctx) -> None:
    one, two = await new_badge(ctx, "first"), await new_badge(ctx, "second")
    for http_id, grpc_id, expect in [(one.id, two.id, C.OK), (one.id, one.id, C.NOT_FOUND)]:
        resp = await ctx.http.delete(ctx.path(id=http_id), headers=ctx.admin)
        call = ctx.org.admin.badges.DeleteBadge(bpb.DeleteBadgeRequest(id=grpc_id))
        await same(ctx, resp, call, expect=expect, status=204)


# BadgeTemplateService.

TEMPLATES = "/organizations/{organization_id}/badge_templates"
OWN_TEMPLATES = "/v1/organizations/{organization_id}/badgeTemplates"


def credly_list(ctx: Ctx, reply: tpb.ListBadgeTemplatesResponse) -> dict[str, Any]:
    meta = reply.metadata
    return {
        "data": [credly.template_json(t, single=False) for t in reply.badge_templates],
        "metadata": {
            "count": meta.count,
            "current_page": meta.current_page,
            "total_count": meta.total_count,
            "total_pages": meta.total_pages,
            "per": meta.per,
            "previous_page_url": ctx.base + meta.previous_page_url
            if meta.previous_page_url
            else None,
            "next_page_url": ctx.base + meta.next_page_url if meta.next_page_url else None,
        },
    }


@case(("GET", TEMPLATES), ("GET", OWN_TEMPLATES))
async def list_templates(ctx: Ctx) -> None:
    for name in ("Archery", "Bowling", "Curling"):
        await new_template(ctx, name)
    stub = templates(ctx.org.reader)
    for org_id, expect in [(ctx.org.uuid, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        params: dict[str, Any] = {"sort": "-name", "page_size": 2, "page": 1}
        resp = await ctx.http.get(
            ctx.path(organization_id=org_id), params=params, headers=ctx.reader
        )
        call = stub.ListBadgeTemplates(
            tpb.ListBadgeTemplatesRequest(organization_id=org_id, **params)
        )
        reply = await same(ctx, resp, call, lambda r: credly_list(ctx, r), expect=expect)
        if expect == C.OK:
            assert [t.name for t in reply.badge_templates] == ["Curling", "Bowling"]
    # A filter Credly's syntax has no key for: INVALID_ARGUMENT, Credly's 400 (not 422).
    resp = await ctx.http.get(
        ctx.path(organization_id=ctx.org.uuid), params={"filter": "nope::x"}, headers=ctx.reader
    )
    call = stub.ListBadgeTemplates(
        tpb.ListBadgeTemplatesRequest(organization_id=ctx.org.uuid, filter="nope::x")
    )
    await same(ctx, resp, call, expect=C.INVALID_ARGUMENT, error_status=400)


@case(("GET", TEMPLATES + "/{id}"), ("GET", OWN_TEMPLATES + "/{id}"))
async def get_template(ctx: Ctx) -> None:
    template = await new_template(ctx, "Archery", description="Aim.")
    stub = templates(ctx.org.reader)
    for tid, expect in [(template.id, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        resp = await ctx.http.get(
            ctx.path(organization_id=ctx.org.uuid, id=tid), headers=ctx.reader
        )
        call = stub.GetBadgeTemplate(
            tpb.GetBadgeTemplateRequest(organization_id=ctx.org.uuid, id=tid)
        )
        await same(ctx, resp, call, credly_one, expect=expect)


@case(("POST", TEMPLATES), ("POST", OWN_TEMPLATES))
async def create_template(ctx: Ctx) -> None:
    template = tpb.BadgeTemplate(
        name="Archery", description="Aim.", vanity_slug="archery", skills=["aim", "focus"]
    )
    key = rid()
    vendor_body = {"name": "Archery", "description": "Aim.", "vanity_slug": "archery",
                   "skills": ["aim", "focus"]}  # fmt: skip
    body = as_json(template) if ctx.row.own else vendor_body
    path = ctx.path(organization_id=ctx.org.uuid)
    resp = await ctx.http.post(path, params={"request_id": key}, json=body, headers=ctx.admin)
    stub = templates(ctx.org.admin)
    call = stub.CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(
            organization_id=ctx.org.uuid, badge_template=template, request_id=key
        )
    )
    await same(ctx, resp, call, credly_one, status=201)
    # The vanity slug is taken now: ALREADY_EXISTS (409) both ways.
    resp = await ctx.http.post(path, json=body, headers=ctx.admin)
    call = stub.CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(organization_id=ctx.org.uuid, badge_template=template)
    )
    await same(ctx, resp, call, expect=C.ALREADY_EXISTS)
    # No name: INVALID_ARGUMENT both ways (Credly's 422 for an invalid template).
    resp = await ctx.http.post(path, json={"name": ""}, headers=ctx.admin)
    call = stub.CreateBadgeTemplate(
        tpb.CreateBadgeTemplateRequest(
            organization_id=ctx.org.uuid, badge_template=tpb.BadgeTemplate()
        )
    )
    await same(ctx, resp, call, expect=C.INVALID_ARGUMENT)


@case(
    ("PATCH", TEMPLATES + "/{badge_template.id}"),
    ("PATCH", OWN_TEMPLATES + "/{badge_template.id}"),
)
async def update_template(ctx: Ctx) -> None:
    template = await new_template(ctx, "Archery")
    stub = templates(ctx.org.admin)
    for tid, expect in [(template.id, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        params = {"updateMask": "description"} if ctx.row.own else {}
        resp = await ctx.http.patch(
            ctx.path(organization_id=ctx.org.uuid, badge_template__id=tid),
            params=params,
            json={"description": "Aim well."},
            headers=ctx.admin,
        )
        call = stub.UpdateBadgeTemplate(
            tpb.UpdateBadgeTemplateRequest(
                organization_id=ctx.org.uuid,
                badge_template=tpb.BadgeTemplate(id=tid, description="Aim well."),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
        await same(ctx, resp, call, credly_one, expect=expect, ignore=UPDATE_TIMES)
    # A body naming nothing is still the update (the id alone, an empty mask) both ways.
    resp = await ctx.http.patch(
        ctx.path(organization_id=ctx.org.uuid, badge_template__id=template.id),
        json={},
        headers=ctx.admin,
    )
    call = stub.UpdateBadgeTemplate(
        tpb.UpdateBadgeTemplateRequest(
            organization_id=ctx.org.uuid, badge_template=tpb.BadgeTemplate(id=template.id)
        )
    )
    await same(ctx, resp, call, credly_one, ignore=UPDATE_TIMES)


@case(("DELETE", TEMPLATES + "/{id}"), ("DELETE", OWN_TEMPLATES + "/{id}"))
async def delete_template(ctx: Ctx) -> None:
    one, two = await new_template(ctx, "Archery"), await new_template(ctx, "Bowling")
    stub = templates(ctx.org.admin)
    for http_id, grpc_id, expect in [(one.id, two.id, C.OK), (one.id, one.id, C.NOT_FOUND)]:
        resp = await ctx.http.delete(
            ctx.path(organization_id=ctx.org.uuid, id=http_id), headers=ctx.admin
        )
        call = stub.DeleteBadgeTemplate(
            tpb.DeleteBadgeTemplateRequest(organization_id=ctx.org.uuid, id=grpc_id)
        )
        await same(ctx, resp, call, lambda _: {"data": {}, "metadata": {}}, expect=expect)


async def _state_change(ctx: Ctx, method: str, undo: str) -> None:
    """Archive or unarchive over HTTP, undo it over gRPC, then the same over gRPC: the same
    template both ways (but for its update times); then an unknown id, NOT_FOUND both ways."""
    template = await new_template(ctx, "Archery")
    stub = templates(ctx.org.admin)
    request = {"ArchiveBadgeTemplate": tpb.ArchiveBadgeTemplateRequest,
               "UnarchiveBadgeTemplate": tpb.UnarchiveBadgeTemplateRequest}  # fmt: skip
    if method == "UnarchiveBadgeTemplate":
        await stub.ArchiveBadgeTemplate(
            tpb.ArchiveBadgeTemplateRequest(organization_id=ctx.org.uuid, id=template.id)
        )
    for tid, expect in [(template.id, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        body: dict[str, Any] | None = {} if ctx.row.own else None
        resp = await ctx.http.post(
            ctx.path(organization_id=ctx.org.uuid, id=tid), json=body, headers=ctx.admin
        )
        if expect == C.OK:
            await getattr(stub, undo)(request[undo](organization_id=ctx.org.uuid, id=tid))
        call = getattr(stub, method)(request[method](organization_id=ctx.org.uuid, id=tid))
        ignore = UPDATE_TIMES | {"state_updated_at", "stateUpdatedAt"}
        await same(ctx, resp, call, credly_one, expect=expect, ignore=ignore)


@case(("POST", TEMPLATES + "/{id}/archive"), ("POST", OWN_TEMPLATES + "/{id}:archive"))
async def archive_template(ctx: Ctx) -> None:
    await _state_change(ctx, "ArchiveBadgeTemplate", "UnarchiveBadgeTemplate")


@case(("POST", TEMPLATES + "/{id}/unarchive"), ("POST", OWN_TEMPLATES + "/{id}:unarchive"))
async def unarchive_template(ctx: Ctx) -> None:
    await _state_change(ctx, "UnarchiveBadgeTemplate", "ArchiveBadgeTemplate")


# IssuerService.


def issuer_lookups(issuer: ipb.Issuer) -> dict[str, tuple[str, dict[str, Any]]]:
    """The path variable each Badgr form fills, and the request field it is."""
    return {
        "id_or_entity_id": (issuer.entity_id, {"id_or_entity_id": issuer.entity_id}),
        "issuer_open_badge_id_base64": (
            b64(issuer.open_badge_id),
            {"issuer_open_badge_id_base64": b64(issuer.open_badge_id)},
        ),
        "ref": (issuer.id, {"ref": issuer.id}),
    }


def variable(path: str) -> str:
    return path.rsplit("{", 1)[1].rstrip("}")


@case(("GET", "/v2/issuers"), ("GET", "/v1/issuers"))
async def list_issuers(ctx: Ctx) -> None:
    await new_issuer(ctx, "Faculty")
    await new_issuer(ctx, "Library")
    resp = await ctx.http.get(ctx.path(), headers=ctx.reader)
    call = issuers(ctx.org.reader).ListIssuers(ipb.ListIssuersRequest())
    reply = await same(ctx, resp, call, lambda r: badgr_of(*r.issuers))
    assert [i.name for i in reply.issuers] == ["Faculty", "Library"]


@case(
    ("GET", "/v2/issuers/{id_or_entity_id}"),
    ("GET", "/v2/issuers/openBadgeId/{issuer_open_badge_id_base64}"),
    ("GET", "/v2/issuers/ref/{ref}"),
    ("GET", "/v1/issuers/{id_or_entity_id}"),
)
async def get_issuer(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    missing = await new_issuer(ctx, "Gone")
    await issuers(ctx.org.admin).DeleteIssuer(ipb.DeleteIssuerRequest(id_or_entity_id=missing.id))
    name = variable(ctx.row.path)
    for target, expect in [(issuer, C.OK), (missing, C.NOT_FOUND)]:
        value, lookup = issuer_lookups(target)[name]
        resp = await ctx.http.get(ctx.path(**{name: value}), headers=ctx.reader)
        call = issuers(ctx.org.reader).GetIssuer(ipb.GetIssuerRequest(**lookup))
        await same(ctx, resp, call, badgr_of, expect=expect)


@case(("POST", "/v2/issuers"), ("POST", "/v1/issuers"))
async def create_issuer(ctx: Ctx) -> None:
    issuer = small_issuer("Faculty", description="Maths.")
    key = rid()
    vendor_body = {"name": "Faculty", "email": "a@example.com", "url": "https://example.com",
                   "description": "Maths."}  # fmt: skip
    body = as_json(issuer) if ctx.row.own else vendor_body
    resp = await ctx.http.post(ctx.path(), params={"request_id": key}, json=body, headers=ctx.admin)
    call = issuers(ctx.org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(issuer=issuer, request_id=key)
    )
    await same(ctx, resp, call, badgr_of, status=201)
    # The same request id for another issuer: ALREADY_EXISTS (409) both ways.
    other = {**body, "name": "Library"}
    resp = await ctx.http.post(
        ctx.path(), params={"request_id": key}, json=other, headers=ctx.admin
    )
    call = issuers(ctx.org.admin).CreateIssuer(
        ipb.CreateIssuerRequest(
            issuer=small_issuer("Library", description="Maths."), request_id=key
        )
    )
    await same(ctx, resp, call, expect=C.ALREADY_EXISTS)
    # No email: INVALID_ARGUMENT (400, in fieldErrors for Badgr) both ways.
    emailless = ipb.Issuer(name="Library", url="https://example.com")
    resp = await ctx.http.post(ctx.path(), json=as_json(emailless), headers=ctx.admin)
    call = issuers(ctx.org.admin).CreateIssuer(ipb.CreateIssuerRequest(issuer=emailless))
    await same(ctx, resp, call, expect=C.INVALID_ARGUMENT)


@case(("PATCH", "/v2/issuers/{issuer.id}"), ("PATCH", "/v1/issuers/{issuer.id}"))
async def update_issuer(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    for iid, expect in [(issuer.id, C.OK), (MISSING_HEX, C.NOT_FOUND)]:
        params = {"updateMask": "description"} if ctx.row.own else {}
        resp = await ctx.http.patch(
            ctx.path(issuer__id=iid), params=params, json={"description": "D"}, headers=ctx.admin
        )
        call = issuers(ctx.org.admin).UpdateIssuer(
            ipb.UpdateIssuerRequest(
                issuer=ipb.Issuer(id=iid, description="D"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
        await same(ctx, resp, call, badgr_of, expect=expect, ignore=UPDATE_TIMES)
    # A body naming nothing is still the update (the id alone, an empty mask) both ways.
    resp = await ctx.http.patch(ctx.path(issuer__id=issuer.id), json={}, headers=ctx.admin)
    call = issuers(ctx.org.admin).UpdateIssuer(
        ipb.UpdateIssuerRequest(issuer=ipb.Issuer(id=issuer.id))
    )
    await same(ctx, resp, call, badgr_of, ignore=UPDATE_TIMES)


@case(
    ("DELETE", "/v2/issuers/{id_or_entity_id}"),
    ("DELETE", "/v2/issuers/openBadgeId/{issuer_open_badge_id_base64}"),
    ("DELETE", "/v2/issuers/ref/{ref}"),
    ("DELETE", "/v1/issuers/{id_or_entity_id}"),
)
async def delete_issuer(ctx: Ctx) -> None:
    one, two = await new_issuer(ctx, "Faculty"), await new_issuer(ctx, "Library")
    name = variable(ctx.row.path)
    for http_one, grpc_one, expect in [(one, two, C.OK), (one, one, C.NOT_FOUND)]:
        resp = await ctx.http.delete(
            ctx.path(**{name: issuer_lookups(http_one)[name][0]}), headers=ctx.admin
        )
        lookup = issuer_lookups(grpc_one)[name][1]
        call = issuers(ctx.org.admin).DeleteIssuer(ipb.DeleteIssuerRequest(**lookup))
        await same(ctx, resp, call, expect=expect, status=204)


# BadgeClassService.


def class_lookups(bc: bcpb.BadgeClass) -> dict[str, tuple[str, dict[str, Any]]]:
    obid = bc.open_badge_id
    return {
        "id_or_entity_id": (bc.entity_id, {"id_or_entity_id": bc.entity_id}),
        "badge_class_open_badge_id_base64": (
            b64(obid),
            {"badge_class_open_badge_id_base64": b64(obid)},
        ),
        "ref": (bc.id, {"ref": bc.id}),
    }


@case(
    ("GET", "/v2/badgeclasses"),
    ("GET", "/v2/issuers/{issuer}/badgeclasses"),
    ("GET", "/v1/badgeClasses"),
)
async def list_classes(ctx: Ctx) -> None:
    faculty, library = await new_issuer(ctx, "Faculty"), await new_issuer(ctx, "Library")
    await new_class(ctx, faculty, "Algebra")
    await new_class(ctx, library, "Reading")
    await new_class(ctx, faculty, "Geometry")
    if "{issuer}" in ctx.row.path:
        resp = await ctx.http.get(ctx.path(issuer=faculty.entity_id), headers=ctx.reader)
    else:
        resp = await ctx.http.get(
            ctx.path(), params={"issuer": faculty.entity_id}, headers=ctx.reader
        )
    call = classes(ctx.org.reader).ListBadgeClasses(
        bcpb.ListBadgeClassesRequest(issuer=faculty.entity_id)
    )
    reply = await same(ctx, resp, call, lambda r: badgr_of(*r.badge_classes))
    assert [c.name for c in reply.badge_classes] == ["Algebra", "Geometry"]


@case(
    ("GET", "/v2/badgeclasses/{id_or_entity_id}"),
    ("GET", "/v2/badgeclasses/openBadgeId/{badge_class_open_badge_id_base64}"),
    ("GET", "/v2/badgeclasses/ref/{ref}"),
    ("GET", "/v1/badgeClasses/{id_or_entity_id}"),
)
async def get_class(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    bc, missing = await new_class(ctx, issuer, "Algebra"), await new_class(ctx, issuer, "Gone")
    await classes(ctx.org.admin).DeleteBadgeClass(
        bcpb.DeleteBadgeClassRequest(id_or_entity_id=missing.id)
    )
    name = variable(ctx.row.path)
    for target, expect in [(bc, C.OK), (missing, C.NOT_FOUND)]:
        value, lookup = class_lookups(target)[name]
        resp = await ctx.http.get(ctx.path(**{name: value}), headers=ctx.reader)
        call = classes(ctx.org.reader).GetBadgeClass(bcpb.GetBadgeClassRequest(**lookup))
        await same(ctx, resp, call, badgr_of, expect=expect)


@case(
    ("POST", "/v2/badgeclasses"),
    ("POST", "/v2/issuers/{badge_class.issuer}/badgeclasses"),
    ("POST", "/v1/badgeClasses"),
)
async def create_class(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    bc = small_class(issuer.entity_id, "Algebra", tags=["math"])
    key = rid()
    if ctx.row.own:
        body = as_json(bc)
    else:
        body = {
            "name": "Algebra",
            "description": "Mastery of Math.",
            "tags": ["math"],
            "image": "https://example.com/math.png",
            "criteriaNarrative": "Pass the exam.",
        }
        if "{badge_class.issuer}" not in ctx.row.path:
            body["issuer"] = issuer.entity_id
    path = ctx.path(badge_class__issuer=issuer.entity_id)
    resp = await ctx.http.post(path, params={"request_id": key}, json=body, headers=ctx.admin)
    call = classes(ctx.org.admin).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=bc, request_id=key)
    )
    await same(ctx, resp, call, badgr_of, status=201)
    # An issuer the org does not have: the same failure both ways.
    gone = await new_issuer(ctx, "Gone")
    await issuers(ctx.org.admin).DeleteIssuer(ipb.DeleteIssuerRequest(id_or_entity_id=gone.id))
    if ctx.row.own or "issuer" in body:
        body = {**body, "issuer": gone.entity_id}
    resp = await ctx.http.post(
        ctx.path(badge_class__issuer=gone.entity_id), json=body, headers=ctx.admin
    )
    call = classes(ctx.org.admin).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(
            badge_class=small_class(gone.entity_id, "Algebra", tags=["math"])
        )
    )
    await same(ctx, resp, call, expect=C.NOT_FOUND)
    # No name: INVALID_ARGUMENT (400, in fieldErrors for Badgr) both ways.
    nameless = small_class(issuer.entity_id, "")
    body = {k: v for k, v in body.items() if k != "name"} | (
        {"issuer": issuer.entity_id} if "issuer" in body else {}
    )
    resp = await ctx.http.post(
        ctx.path(badge_class__issuer=issuer.entity_id), json=body, headers=ctx.admin
    )
    call = classes(ctx.org.admin).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=nameless)
    )
    await same(ctx, resp, call, expect=C.INVALID_ARGUMENT)


@case(
    ("PATCH", "/v2/badgeclasses/{badge_class.id}"), ("PATCH", "/v1/badgeClasses/{badge_class.id}")
)
async def update_class(ctx: Ctx) -> None:
    bc = await new_class(ctx, await new_issuer(ctx))
    for cid, expect in [(bc.id, C.OK), (MISSING_HEX, C.NOT_FOUND)]:
        params = {"updateMask": "description"} if ctx.row.own else {}
        resp = await ctx.http.patch(
            ctx.path(badge_class__id=cid),
            params=params,
            json={"description": "D"},
            headers=ctx.admin,
        )
        call = classes(ctx.org.admin).UpdateBadgeClass(
            bcpb.UpdateBadgeClassRequest(
                badge_class=bcpb.BadgeClass(id=cid, description="D"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
        await same(ctx, resp, call, badgr_of, expect=expect, ignore=UPDATE_TIMES)
    # A body naming nothing is still the update (the id alone, an empty mask) both ways.
    resp = await ctx.http.patch(ctx.path(badge_class__id=bc.id), json={}, headers=ctx.admin)
    call = classes(ctx.org.admin).UpdateBadgeClass(
        bcpb.UpdateBadgeClassRequest(badge_class=bcpb.BadgeClass(id=bc.id))
    )
    await same(ctx, resp, call, badgr_of, ignore=UPDATE_TIMES)


@case(
    ("DELETE", "/v2/badgeclasses/{id_or_entity_id}"),
    ("DELETE", "/v2/badgeclasses/openBadgeId/{badge_class_open_badge_id_base64}"),
    ("DELETE", "/v2/badgeclasses/ref/{ref}"),
    ("DELETE", "/v1/badgeClasses/{id_or_entity_id}"),
)
async def delete_class(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    one, two = await new_class(ctx, issuer, "Algebra"), await new_class(ctx, issuer, "Geometry")
    name = variable(ctx.row.path)
    for http_one, grpc_one, expect in [(one, two, C.OK), (one, one, C.NOT_FOUND)]:
        resp = await ctx.http.delete(
            ctx.path(**{name: class_lookups(http_one)[name][0]}), headers=ctx.admin
        )
        lookup = class_lookups(grpc_one)[name][1]
        call = classes(ctx.org.admin).DeleteBadgeClass(bcpb.DeleteBadgeClassRequest(**lookup))
        await same(ctx, resp, call, expect=expect, status=204)


@case(
    ("POST", "/v2/badgeclasses/{id_or_entity_id}/claim-codes"),
    ("POST", "/v1/badgeClasses/{id_or_entity_id}/claimCodes"),
)
async def create_claim_codes(ctx: Ctx) -> None:
    issuer = await new_issuer(ctx)
    bc, archived = await new_class(ctx, issuer, "Algebra"), await new_class(ctx, issuer, "Old")
    await classes(ctx.org.admin).UpdateBadgeClass(
        bcpb.UpdateBadgeClassRequest(
            badge_class=bcpb.BadgeClass(id=archived.id, archived=True),
            update_mask=field_mask_pb2.FieldMask(paths=["archived"]),
        )
    )
    for target, expect in [(bc, C.OK), (archived, C.FAILED_PRECONDITION)]:
        key = rid()
        body = {"count": 2, "label": "spring", "useLimit": 1, "requestId": key}
        resp = await ctx.http.post(
            ctx.path(id_or_entity_id=target.entity_id), json=body, headers=ctx.admin
        )
        call = classes(ctx.org.admin).CreateClaimCodes(
            bcpb.CreateClaimCodesRequest(
                id_or_entity_id=target.entity_id, count=2, label="spring", use_limit=1,
                request_id=key,
            )
        )  # fmt: skip
        await same(ctx, resp, call, lambda r: badgr_of(*r.claim_codes), expect=expect, status=201)


@case(
    ("GET", "/v2/badgeclasses/{id_or_entity_id}/claim-codes"),
    ("GET", "/v1/badgeClasses/{id_or_entity_id}/claimCodes"),
)
async def list_claim_codes(ctx: Ctx) -> None:
    bc = await new_class(ctx, await new_issuer(ctx))
    await new_codes(ctx, bc, 3)
    for cid, expect in [(bc.entity_id, C.OK), (MISSING_HEX, C.NOT_FOUND)]:
        resp = await ctx.http.get(ctx.path(id_or_entity_id=cid), headers=ctx.reader)
        call = classes(ctx.org.reader).ListClaimCodes(
            bcpb.ListClaimCodesRequest(id_or_entity_id=cid)
        )
        reply = await same(ctx, resp, call, lambda r: badgr_of(*r.claim_codes), expect=expect)
        if expect == C.OK:
            assert len(reply.claim_codes) == 3


@case(
    ("DELETE", "/v2/badgeclasses/{id_or_entity_id}/claim-codes/{claim_code}"),
    ("DELETE", "/v1/badgeClasses/{id_or_entity_id}/claimCodes/{claim_code}"),
)
async def delete_claim_code(ctx: Ctx) -> None:
    bc = await new_class(ctx, await new_issuer(ctx))
    one, two = await new_codes(ctx, bc, 2)
    for http_code, grpc_code, expect in [(one, two, C.OK), (one, one, C.NOT_FOUND)]:
        resp = await ctx.http.delete(
            ctx.path(id_or_entity_id=bc.entity_id, claim_code=http_code.code), headers=ctx.admin
        )
        call = classes(ctx.org.admin).DeleteClaimCode(
            bcpb.DeleteClaimCodeRequest(id_or_entity_id=bc.entity_id, claim_code=grpc_code.code)
        )
        await same(ctx, resp, call, expect=expect, status=204)


# AwardService.


@case(
    ("POST", "/v2/badgeclasses/{id_or_entity_id}/claim-codes/{claim_code}/redeem"),
    ("POST", "/v1/badgeClasses/{id_or_entity_id}/claimCodes/{claim_code}:redeem"),
)
async def redeem_claim_code(ctx: Ctx) -> None:
    bc = await new_class(ctx, await new_issuer(ctx))
    (code,) = await new_codes(ctx, bc, 1)
    for claim, expect in [(code.code, C.OK), ("NOSUCHCODE", C.NOT_FOUND)]:
        key = rid()
        body = {"recipient": {"email": "bob@example.org"}, "narrative": "Well done.",
                "requestId": key}  # fmt: skip
        resp = await ctx.http.post(
            ctx.path(id_or_entity_id=bc.entity_id, claim_code=claim), json=body, headers=ctx.admin
        )
        call = awards(ctx).RedeemClaimCode(
            apb.RedeemClaimCodeRequest(
                id_or_entity_id=bc.entity_id, claim_code=claim, narrative="Well done.",
                recipient=apb.Recipient(email="bob@example.org"), request_id=key,
            )
        )  # fmt: skip
        await same(ctx, resp, call, badgr_of, expect=expect, status=201)


@case(("POST", "/v1/awards"))
async def create_award(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    for bid, expect in [(badge.id, C.OK), (2**40, C.NOT_FOUND)]:
        award = apb.Award(badge_id=bid, recipient=apb.Recipient(member_id="1001"))
        key = rid()
        resp = await ctx.http.post(
            ctx.path(), params={"requestId": key}, json=as_json(award), headers=ctx.admin
        )
        call = awards(ctx).CreateAward(apb.CreateAwardRequest(award=award, request_id=key))
        await same(ctx, resp, call, expect=expect)


@case(("POST", "/v1/awards:batchCreate"))
async def batch_create_awards(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    message = apb.BatchCreateAwardsRequest(
        requests=[
            apb.CreateAwardRequest(
                award=apb.Award(badge_id=badge.id, recipient=apb.Recipient(member_id=m))
            )
            for m in ("1", "2")
        ],
        request_id=rid(),
    )
    resp = await ctx.http.post(ctx.path(), json=as_json(message), headers=ctx.admin)
    reply = await same(ctx, resp, awards(ctx).BatchCreateAwards(message))
    assert [r.award.recipient.member_id for r in reply.results] == ["1", "2"]
    # A reader may not write: PERMISSION_DENIED (403) both ways.
    resp = await ctx.http.post(ctx.path(), json=as_json(message), headers=ctx.reader)
    await same(
        ctx, resp, awards(ctx, admin=False).BatchCreateAwards(message), expect=C.PERMISSION_DENIED
    )


@case(("GET", "/v1/awards/{id}"))
async def get_award(ctx: Ctx) -> None:
    award = await award_of_badge(ctx, await new_badge(ctx, "first"))
    for aid, expect in [(award.id, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        resp = await ctx.http.get(ctx.path(id=aid), headers=ctx.reader)
        call = awards(ctx, admin=False).GetAward(apb.GetAwardRequest(id=aid))
        await same(ctx, resp, call, expect=expect)


@case(("GET", "/v1/awards"))
async def list_awards(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    for member in ("1", "2"):
        await award_of_badge(ctx, badge, member)
    await award_of_badge(ctx, await new_badge(ctx, "second"), "3")
    resp = await ctx.http.get(ctx.path(), params={"badgeId": badge.id}, headers=ctx.reader)
    call = awards(ctx, admin=False).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    reply = await same(ctx, resp, call)
    assert sorted(a.recipient.member_id for a in reply.awards) == ["1", "2"]


@case(("POST", "/v1/awards/{id}:revoke"))
async def revoke_award(ctx: Ctx) -> None:
    award = await award_of_badge(ctx, await new_badge(ctx, "first"))
    for aid, expect in [(award.id, C.OK), (MISSING_UUID, C.NOT_FOUND)]:
        key = rid()
        resp = await ctx.http.post(
            ctx.path(id=aid), json={"reason": "mistake", "requestId": key}, headers=ctx.admin
        )
        call = awards(ctx).RevokeAward(
            apb.RevokeAwardRequest(id=aid, reason="mistake", request_id=key)
        )
        await same(ctx, resp, call, expect=expect)


@case(("POST", "/v1/badges/{badge_id}/progress"))
async def record_progress(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    for bid, expect in [(badge.id, C.OK), (2**40, C.NOT_FOUND)]:
        message = apb.RecordProgressRequest(
            badge_id=bid,
            recipient=apb.Recipient(member_id="7"),
            state=bpb.BADGE_STATE_TYPE_IN_PROGRESS,
        )
        body = {k: v for k, v in as_json(message).items() if k != "badgeId"}
        resp = await ctx.http.post(ctx.path(badge_id=bid), json=body, headers=ctx.admin)
        await same(
            ctx, resp, awards(ctx).RecordProgress(message), expect=expect, ignore=UPDATE_TIMES
        )


@case(("GET", "/v1/recipientBadgeStates"))
async def list_recipient_states(ctx: Ctx) -> None:
    for name in ("first", "second"):
        await award_of_badge(ctx, await new_badge(ctx, name), "7")
    resp = await ctx.http.get(ctx.path(), params={"recipient.memberId": "7"}, headers=ctx.reader)
    call = awards(ctx, admin=False).ListRecipientBadgeStates(
        apb.ListRecipientBadgeStatesRequest(recipient=apb.Recipient(member_id="7"))
    )
    reply = await same(ctx, resp, call)
    assert len(reply.states) == 2


@case(("GET", "/v1/awards/{id}/baked"))
async def bake_award(ctx: Ctx) -> None:
    bc = await new_class(ctx, await new_issuer(ctx))
    of_class = await awards(ctx).CreateAward(
        apb.CreateAwardRequest(
            award=apb.Award(badge_class_id=bc.entity_id, recipient=apb.Recipient(email="a@b.org"))
        )
    )
    # A CrowdTwist badge's award is no Open Badge: FAILED_PRECONDITION (400) both ways.
    of_badge = await award_of_badge(ctx, await new_badge(ctx, "first"))
    for aid, expect in [(of_class.id, C.OK), (of_badge.id, C.FAILED_PRECONDITION)]:
        resp = await ctx.http.get(
            ctx.path(id=aid), params={"format": "BAKED_IMAGE_FORMAT_SVG"}, headers=ctx.reader
        )
        call = awards(ctx, admin=False).BakeAward(
            apb.BakeAwardRequest(id=aid, format=apb.BAKED_IMAGE_FORMAT_SVG)
        )
        await same(ctx, resp, call, expect=expect)


@case(("POST", "/v1/awards:verify"))
async def verify_award(ctx: Ctx) -> None:
    award = await award_of_badge(ctx, await new_badge(ctx, "first"))
    for aid in (award.id, MISSING_UUID):
        resp = await ctx.http.post(ctx.path(), json={"assertionId": aid}, headers=ctx.reader)
        call = awards(ctx, admin=False).VerifyAward(apb.VerifyAwardRequest(assertion_id=aid))
        await same(ctx, resp, call)


@case(("GET", "/v1/awards:watch"))
async def watch_awards(ctx: Ctx) -> None:
    badge = await new_badge(ctx, "first")
    # An earlier award, so the subscription point is not 0 (which means "from now on").
    await award_of_badge(ctx, badge, "1000")
    stream = awards(ctx, admin=False).WatchAwards(apb.WatchAwardsRequest())
    try:
        after = int(dict(await stream.initial_metadata())["x-watch-after-sequence"])
        assert after > 0
        await award_of_badge(ctx, badge)
        # An award of a CrowdTwist badge is two events: the recipient's progress, the award.
        events = [await stream.read() for _ in range(2)]
    finally:
        stream.cancel()
    async with ctx.http.stream(
        "GET", ctx.path(), params={"afterSequence": after}, headers=ctx.reader
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = resp.aiter_lines()
        got = [json.loads(await anext(lines)) for _ in range(2)]
    assert got == [{"result": transcode.to_json(e)} for e in events]
    # Resuming past the org's last event: INVALID_ARGUMENT both ways (400, a Status line).
    ahead = await ctx.http.get(ctx.path(), params={"afterSequence": 10**9}, headers=ctx.reader)
    assert ahead.status_code == 400
    try:
        async for _ in awards(ctx, admin=False).WatchAwards(
            apb.WatchAwardsRequest(after_sequence=10**9)
        ):
            raise AssertionError("a stream past the last event opened")
    except grpc.aio.AioRpcError as error:
        failure = RpcFailure.of(error)
    assert failure.code == C.INVALID_ARGUMENT
    assert ahead.json() == {"error": json_format.MessageToDict(failure.status)}


# --- The tests --------------------------------------------------------------------------------


def test_every_row_has_a_case() -> None:
    assert len(ROWS) > 80, "docs/rest-mapping.md's tables not found"
    keys = [(r.verb, r.path) for r in ROWS]
    assert len(keys) == len(set(keys)), "a (method, path) in two rows"
    missing = sorted(set(keys) - set(CASES))
    stale = sorted(set(CASES) - set(keys))
    assert not missing, f"rows of docs/rest-mapping.md without a case here: {missing}"
    assert not stale, f"cases here for no row of docs/rest-mapping.md: {stale}"
    assert {r.vendor for r in ROWS} == {OWN, CAPILLARY, CROWDTWIST, CREDLY, BADGR}
    assert {r.key for r in ROWS} == {"reader", "admin"}
    assert {r.rpc for r in ROWS} == set(METHODS), "an RPC with no row"


@pytest.fixture(scope="module")
async def face(backend: Backend) -> AsyncIterator[Face]:
    """One server with the HTTP face for the module, on the session's database."""
    async with face_of(backend) as f:
        yield f


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.verb} {r.path}")
async def test_row(row: Row, face: Face, org: Org) -> None:
    async with org_on(face, org) as here:
        await CASES[(row.verb, row.path)](Ctx(row, face.http, here, face.base))


# --- Keys: the same refusal both ways, for every row ------------------------------------------

METHODS = {f"/{s.full_name}/{m.name}": m for s in transcode.services() for m in s.methods}


def filled(row: Row, org: Org) -> str:
    """The row's path with a value of the right form in each variable (a CrowdTwist badge id
    is a number, an organisation id the caller's): the refusal must not be the path's."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "organization_id":
            return org.uuid
        if row.path.startswith(("/v2.1/", "/v1/badges/")):
            return "12345"
        return MISSING_HEX

    return re.sub(r"\{([^}]+)\}", value, row.path)


async def refusal(channel: grpc.aio.Channel, rpc: str) -> RpcFailure:
    """The failure of ``rpc`` called with an empty request on ``channel``."""
    method = METHODS[rpc]
    request = transcode.message_class(method.input_type)()
    reply = transcode.message_class(method.output_type)
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(rpc, request_serializer=type(request).SerializeToString,
                response_deserializer=reply.FromString)(request)  # fmt: skip
    try:
        if method.server_streaming:
            async for _ in call:
                raise AssertionError(f"{rpc} streamed")
        else:
            await call
    except grpc.aio.AioRpcError as error:
        return RpcFailure.of(error)
    raise AssertionError(f"{rpc} succeeded")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.verb} {r.path}")
async def test_row_keys(row: Row, face: Face, org: Org) -> None:
    """No key: UNAUTHENTICATED (401, asking for a key) both ways; a reader key on an admin
    row: PERMISSION_DENIED (403) both ways; each in the row's envelope."""
    async with org_on(face, org) as here:
        ctx = Ctx(row, face.http, here, face.base)
        anonymous = Client.connect(face.running.port)
        try:
            tries: list[tuple[dict[str, str], grpc.aio.Channel, grpc.StatusCode]] = [
                ({}, anonymous.channel, C.UNAUTHENTICATED)
            ]
            if row.key == "admin":
                tries.append((ctx.reader, here.reader.channel, C.PERMISSION_DENIED))
            for headers, channel, expect in tries:
                body: dict[str, Any] | None = {} if row.verb in ("POST", "PUT", "PATCH") else None
                resp = await face.http.request(
                    row.verb, filled(row, org), json=body, headers=headers
                )
                failure = await refusal(channel, row.rpc)
                assert failure.code == expect, (row, failure)
                if expect == C.UNAUTHENTICATED:
                    assert resp.headers["www-authenticate"], row
                if METHODS[row.rpc].server_streaming:
                    assert resp.status_code == STANDARD[expect]
                    assert resp.json() == {"error": json_format.MessageToDict(failure.status)}
                else:
                    check_failure(ctx, resp, failure, None)
        finally:
            await anonymous.channel.close()
