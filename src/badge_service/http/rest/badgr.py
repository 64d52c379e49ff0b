"""Badgr v2's REST paths from its seed (004), in its own spellings and envelope.

Every answer is Badgr's envelope: ``{status: {success, description}, result: [...],
timestamp, validationErrors, nonFieldErrors, fieldErrors, errorCode, warnings,
latestTermsVersion}``, the resources in ``result`` with the seed's camelCase names
(``entityId``, ``openBadgeId``, ``createdAt``, ``issuerOpenBadgeId``, ``criteriaUrl``...),
roles and durations in lower case (``staff``, ``days``), property kinds in upper case
(``STRING_CHOICE``, ``BADGE_CLASS``), times as ``2025-04-24T21:19:39.363Z``.

- issuers: ``GET``/``POST /v2/issuers``; ``GET``/``PUT``/``PATCH``/``DELETE
  /v2/issuers/{idOrEntityId}``; ``GET``/``DELETE /v2/issuers/openBadgeId/{base64}`` and
  ``/v2/issuers/ref/{ref}``;
- badge classes: ``GET``/``POST /v2/badgeclasses`` and ``/v2/issuers/{issuer}/badgeclasses``;
  ``GET``/``PUT``/``PATCH``/``DELETE /v2/badgeclasses/{idOrEntityId}``; ``GET``/``DELETE``
  by ``openBadgeId/{base64}`` and ``ref/{ref}``;
- claim codes: ``POST``/``GET /v2/badgeclasses/{idOrEntityId}/claim-codes``, ``DELETE
  .../claim-codes/{claimCode}`` and ``POST .../claim-codes/{claimCode}/redeem``.

A DELETE answers the seed's 204, with no body (a 204 has none); a create 201. Failures carry
``success: false``, the RPC's message as ``description``, its field violations in
``fieldErrors`` (camelCase, keyed by field) and ``validationErrors``, a failure without a
field in ``nonFieldErrors``, and the ``ErrorInfo`` reason as ``errorCode``. The key is
Badgr's ``authorization: Bearer``, forwarded as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_class_pb2 as bpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.http.rest.gateway import Gateway, RpcFailure, metadata_of
from badge_service.http.rest.message_json import (
    Handler,
    dumps,
    enum_suffix,
    guarded,
    json_object,
    now_text,
    parse_into,
    proto_doc,
    query_bool,
    query_int,
    to_json,
    writable_paths,
)

ISSUERS = "/badges.v1.IssuerService/"
CLASSES = "/badges.v1.BadgeClassService/"
AWARDS = "/badges.v1.AwardService/"
JSON = "application/json"
# The seed writes these kinds in upper case (``STRING_CHOICE``, ``BADGE_CLASS``); every other
# enum (staff roles, expiry units, award states) in lower case.
_UPPER_CASE = {"badges.v1.CustomPropertyType", "badges.v1.CustomPropertyTarget"}
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}
# A list without ``num`` is answered whole, as Badgr does, up to this many pages of the RPC;
# past them the answer names the rest in its ``Link`` header.
_MAX_PAGES = 40
_HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")
# The request field a violation's path starts with, which Badgr's field names do not have.
_RESOURCE_FIELDS = ("issuer.", "badge_class.", "award.")


def _enum_out(enum: EnumDescriptor, name: str) -> str | None:
    suffix = enum_suffix(enum, name)
    if suffix is None:
        return None
    return suffix if enum.full_name in _UPPER_CASE else suffix.lower()


def resource_json(msg: Message) -> dict[str, Any]:
    """A resource as the seed writes it: camelCase, Badgr's enum words, ``extensions`` an
    object even when empty; the Open Badges document only when there is one."""
    doc = to_json(msg, camel=True, enum_out=_enum_out)
    if "extensions" in doc and doc["extensions"] is None:
        doc["extensions"] = {}
    if doc.get("openBadge", 0) is None:
        del doc["openBadge"]
    return doc


def envelope(
    result: list[Any],
    *,
    success: bool = True,
    description: str = "ok",
    field_errors: dict[str, list[str]] | None = None,
    validation_errors: list[str] | None = None,
    non_field_errors: list[str] | None = None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """Badgr's envelope, every member of the seed's in its order."""
    return {
        "status": {"success": success, "description": description},
        "result": result,
        "timestamp": now_text(),
        "validationErrors": validation_errors or [],
        "nonFieldErrors": non_field_errors or [],
        "fieldErrors": field_errors or {},
        "errorCode": error_code,
        "warnings": {},
        "latestTermsVersion": None,
    }


def _respond(
    doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        dumps(doc),
        status,
        media_type=JSON,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _ok(result: list[Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _respond(envelope(result), status, headers)


def _camel(path: str) -> str:
    """A violation's field path in Badgr's spelling: ``issuer.preferences.default_print_
    cert_template_id`` gives ``preferences.defaultPrintCertTemplateId``."""
    for prefix in _RESOURCE_FIELDS:
        if path.startswith(prefix):
            path = path.removeprefix(prefix)
            break
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), path)


def error_response(
    status: int, description: str, violations: list[tuple[str, str]], code: str
) -> Response:
    """Badgr's failure: ``success: false`` with the errors by field, or without one."""
    fields: dict[str, list[str]] = {}
    for field, text in violations:
        fields.setdefault(_camel(field), []).append(text)
    doc = envelope(
        [],
        success=False,
        description=description,
        field_errors=fields,
        validation_errors=[f"{field}: {text}" for field, text in violations],
        non_field_errors=[] if violations else [description],
        error_code=code,
    )
    headers = {"WWW-Authenticate": 'Bearer realm="badge-service"'} if status == 401 else None
    return _respond(doc, status, headers)


def failure_response(failure: RpcFailure) -> Response:
    """An RPC's failure in Badgr's envelope and HTTP status."""
    status = _HTTP_STATUS.get(failure.code, 500)
    return error_response(
        status, failure.message, failure.violations, failure.reason or failure.code.name
    )


def _page_link(request: Request, token: str) -> dict[str, str]:
    url = request.url.remove_query_params("cursor").include_query_params(cursor=token)
    return {"Link": f'<{url}>; rel="next"'}


def _named_by_path(body: dict[str, Any], value: str) -> dict[str, Any]:
    """An update's body naming the resource of the path's idOrEntityId, and only it (the ids a
    client echoes back in the body cannot point the update elsewhere)."""
    named = {k: v for k, v in body.items() if k not in ("id", "entity_id")}
    named["id" if _HEX24.match(value) else "entity_id"] = value
    return named


class Badgr:
    """The handlers, calling the RPCs through ``gateway`` with the caller's key."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def _call(self, request: Request, method: str, message: Message, reply: type[Any]) -> Any:
        return await self._gateway.call(method, message, reply, metadata_of(request))

    async def _pages(
        self,
        request: Request,
        method: str,
        message: Any,
        reply: type[Any],
        items: Callable[[Any], list[Any]],
    ) -> Response:
        """A list: one page of ``num`` from ``cursor`` when ``num`` is given, else every page
        (up to _MAX_PAGES); a ``Link: <...>; rel="next"`` header names what is left."""
        num = query_int(request, "num", "page_size")
        message.page_size = num
        message.page_token = request.query_params.get("cursor") or request.query_params.get(
            "page_token", ""
        )
        found: list[Any] = []
        for _ in range(1 if num else _MAX_PAGES):
            page = await self._call(request, method, message, reply)
            found.extend(resource_json(m) for m in items(page))
            message.page_token = page.next_page_token
            if not page.next_page_token:
                break
        headers = _page_link(request, message.page_token) if message.page_token else None
        return _ok(found, headers=headers)

    # Issuers.

    async def list_issuers(self, request: Request) -> Response:
        """The caller's issuers, oldest first."""
        return await self._pages(
            request,
            ISSUERS + "ListIssuers",
            ipb.ListIssuersRequest(),
            ipb.ListIssuersResponse,
            lambda r: list(r.issuers),
        )

    async def create_issuer(self, request: Request) -> Response:
        """Creates an issuer from Badgr's body: 201 with it."""
        issuer = ipb.Issuer()
        parse_into(proto_doc(await json_object(request), ipb.Issuer.DESCRIPTOR), issuer)
        message = ipb.CreateIssuerRequest(
            issuer=issuer, request_id=request.query_params.get("request_id", "")
        )
        reply = await self._call(request, ISSUERS + "CreateIssuer", message, ipb.Issuer)
        return _ok([resource_json(reply)], 201)

    @staticmethod
    def _issuer_lookup(request: Request) -> dict[str, str]:
        p = request.path_params
        if "open_badge_id" in p:
            return {"issuer_open_badge_id_base64": p["open_badge_id"]}
        if "ref" in p:
            return {"ref": p["ref"]}
        return {"id_or_entity_id": p["id"]}

    async def get_issuer(self, request: Request) -> Response:
        """One issuer, by any of the seed's id forms."""
        message = ipb.GetIssuerRequest()
        for name, value in self._issuer_lookup(request).items():
            setattr(message, name, value)
        reply = await self._call(request, ISSUERS + "GetIssuer", message, ipb.Issuer)
        return _ok([resource_json(reply)])

    async def update_issuer(self, request: Request) -> Response:
        """Updates the fields the body names (Badgr's PUT, and PATCH)."""
        body = proto_doc(await json_object(request), ipb.Issuer.DESCRIPTOR)
        paths = writable_paths(ipb.Issuer.DESCRIPTOR, body)
        if not paths:
            body = {}  # nothing to change is still the update RPC, a write with its rules
        issuer = ipb.Issuer()
        parse_into(_named_by_path(body, request.path_params["id"]), issuer)
        message = ipb.UpdateIssuerRequest(issuer=issuer)
        message.update_mask.paths.extend(paths)
        reply = await self._call(request, ISSUERS + "UpdateIssuer", message, ipb.Issuer)
        return _ok([resource_json(reply)])

    async def delete_issuer(self, request: Request) -> Response:
        """Deletes an issuer (``?cascade=true`` with its badge classes): 204."""
        message = ipb.DeleteIssuerRequest(cascade=bool(query_bool(request, "cascade")))
        for name, value in self._issuer_lookup(request).items():
            setattr(message, name, value)
        await self._call(request, ISSUERS + "DeleteIssuer", message, empty_pb2.Empty)
        return Response(status_code=204)

    # Badge classes.

    async def list_classes(self, request: Request) -> Response:
        """The caller's badge classes (of one issuer, by path or ``?issuer=``), oldest first."""
        message = bpb.ListBadgeClassesRequest(
            issuer=request.path_params.get("issuer") or request.query_params.get("issuer", "")
        )
        archived = query_bool(request, "archived")
        if archived is not None:
            message.archived = archived
        return await self._pages(
            request,
            CLASSES + "ListBadgeClasses",
            message,
            bpb.ListBadgeClassesResponse,
            lambda r: list(r.badge_classes),
        )

    async def create_class(self, request: Request) -> Response:
        """Creates a badge class (of the path's issuer, when it names one): 201 with it."""
        body = proto_doc(await json_object(request), bpb.BadgeClass.DESCRIPTOR)
        if "issuer" in request.path_params:
            body["issuer"] = request.path_params["issuer"]
        badge_class = bpb.BadgeClass()
        parse_into(body, badge_class)
        message = bpb.CreateBadgeClassRequest(
            badge_class=badge_class, request_id=request.query_params.get("request_id", "")
        )
        reply = await self._call(request, CLASSES + "CreateBadgeClass", message, bpb.BadgeClass)
        return _ok([resource_json(reply)], 201)

    @staticmethod
    def _class_lookup(request: Request) -> dict[str, str]:
        p = request.path_params
        if "open_badge_id" in p:
            return {"badge_class_open_badge_id_base64": p["open_badge_id"]}
        if "ref" in p:
            return {"ref": p["ref"]}
        return {"id_or_entity_id": p["id"]}

    async def get_class(self, request: Request) -> Response:
        """One badge class, by any of the seed's id forms."""
        message = bpb.GetBadgeClassRequest()
        for name, value in self._class_lookup(request).items():
            setattr(message, name, value)
        reply = await self._call(request, CLASSES + "GetBadgeClass", message, bpb.BadgeClass)
        return _ok([resource_json(reply)])

    async def update_class(self, request: Request) -> Response:
        """Updates the fields the body names (Badgr's PUT, and PATCH)."""
        body = proto_doc(await json_object(request), bpb.BadgeClass.DESCRIPTOR)
        paths = writable_paths(bpb.BadgeClass.DESCRIPTOR, body)
        if not paths:
            body = {}  # nothing to change is still the update RPC, a write with its rules
        badge_class = bpb.BadgeClass()
        body.pop("issuer", None)  # immutable; a client may send back what it read
        parse_into(_named_by_path(body, request.path_params["id"]), badge_class)
        message = bpb.UpdateBadgeClassRequest(badge_class=badge_class)
        message.update_mask.paths.extend(paths)
        reply = await self._call(request, CLASSES + "UpdateBadgeClass", message, bpb.BadgeClass)
        return _ok([resource_json(reply)])

    async def delete_class(self, request: Request) -> Response:
        """Deletes a badge class (``?cascade=true`` with its awards): 204."""
        message = bpb.DeleteBadgeClassRequest(cascade=bool(query_bool(request, "cascade")))
        for name, value in self._class_lookup(request).items():
            setattr(message, name, value)
        await self._call(request, CLASSES + "DeleteBadgeClass", message, empty_pb2.Empty)
        return Response(status_code=204)

    # Claim codes.

    async def create_codes(self, request: Request) -> Response:
        """Creates claim codes (``count``, ``label``, ``useLimit``, ``expiresAt``): 201."""
        body = proto_doc(
            await json_object(request, empty={}), bpb.CreateClaimCodesRequest.DESCRIPTOR
        )
        message = bpb.CreateClaimCodesRequest()
        parse_into(body, message)
        message.id_or_entity_id = request.path_params["id"]
        reply = await self._call(
            request, CLASSES + "CreateClaimCodes", message, bpb.CreateClaimCodesResponse
        )
        return _ok([resource_json(c) for c in reply.claim_codes], 201)

    async def list_codes(self, request: Request) -> Response:
        """The class's claim codes, oldest first."""
        return await self._pages(
            request,
            CLASSES + "ListClaimCodes",
            bpb.ListClaimCodesRequest(id_or_entity_id=request.path_params["id"]),
            bpb.ListClaimCodesResponse,
            lambda r: list(r.claim_codes),
        )

    async def delete_code(self, request: Request) -> Response:
        """Deletes one claim code: the seed's 204."""
        p = request.path_params
        message = bpb.DeleteClaimCodeRequest(id_or_entity_id=p["id"], claim_code=p["code"])
        await self._call(request, CLASSES + "DeleteClaimCode", message, empty_pb2.Empty)
        return Response(status_code=204)

    async def redeem_code(self, request: Request) -> Response:
        """Redeems a claim code for an award (``recipient``, ``narrative``, ``evidence``):
        201 with the award."""
        body = proto_doc(await json_object(request), apb.RedeemClaimCodeRequest.DESCRIPTOR)
        message = apb.RedeemClaimCodeRequest()
        parse_into(body, message)
        message.id_or_entity_id = request.path_params["id"]
        message.claim_code = request.path_params["code"]
        reply = await self._call(request, AWARDS + "RedeemClaimCode", message, apb.Award)
        return _ok([resource_json(reply)], 201)


def _guarded(handler: Handler) -> Handler:
    """A route whose failures answer in Badgr's envelope."""
    return guarded(
        handler,
        failure_response,
        lambda bad: error_response(400, str(bad), [], "INVALID_REQUEST"),
    )


def routes(gateway: Gateway) -> list[BaseRoute]:
    """This vendor's routes, served through gateway. The base64 and ref forms come first and
    take the rest of the path (a standard base64 or a URL may hold ``/``)."""
    b = Badgr(gateway)
    table: list[tuple[str, Handler, list[str]]] = [
        ("/v2/issuers", b.list_issuers, ["GET"]),
        ("/v2/issuers", b.create_issuer, ["POST"]),
        ("/v2/issuers/openBadgeId/{open_badge_id:path}", b.get_issuer, ["GET"]),
        ("/v2/issuers/openBadgeId/{open_badge_id:path}", b.delete_issuer, ["DELETE"]),
        ("/v2/issuers/ref/{ref:path}", b.get_issuer, ["GET"]),
        ("/v2/issuers/ref/{ref:path}", b.delete_issuer, ["DELETE"]),
        ("/v2/issuers/{issuer}/badgeclasses", b.list_classes, ["GET"]),
        ("/v2/issuers/{issuer}/badgeclasses", b.create_class, ["POST"]),
        ("/v2/issuers/{id}", b.get_issuer, ["GET"]),
        ("/v2/issuers/{id}", b.update_issuer, ["PUT", "PATCH"]),
        ("/v2/issuers/{id}", b.delete_issuer, ["DELETE"]),
        ("/v2/badgeclasses", b.list_classes, ["GET"]),
        ("/v2/badgeclasses", b.create_class, ["POST"]),
        ("/v2/badgeclasses/openBadgeId/{open_badge_id:path}", b.get_class, ["GET"]),
        ("/v2/badgeclasses/openBadgeId/{open_badge_id:path}", b.delete_class, ["DELETE"]),
        ("/v2/badgeclasses/ref/{ref:path}", b.get_class, ["GET"]),
        ("/v2/badgeclasses/ref/{ref:path}", b.delete_class, ["DELETE"]),
        ("/v2/badgeclasses/{id}", b.get_class, ["GET"]),
        ("/v2/badgeclasses/{id}", b.update_class, ["PUT", "PATCH"]),
        ("/v2/badgeclasses/{id}", b.delete_class, ["DELETE"]),
        ("/v2/badgeclasses/{id}/claim-codes", b.list_codes, ["GET"]),
        ("/v2/badgeclasses/{id}/claim-codes", b.create_codes, ["POST"]),
        ("/v2/badgeclasses/{id}/claim-codes/{code}", b.delete_code, ["DELETE"]),
        ("/v2/badgeclasses/{id}/claim-codes/{code}/redeem", b.redeem_code, ["POST"]),
    ]
    return [Route(path, _guarded(handler), methods=methods) for path, handler, methods in table]
