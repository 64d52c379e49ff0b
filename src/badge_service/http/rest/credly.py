"""Credly's REST paths from its seed (003), in its own spellings and envelope.

- ``GET /organizations/{organization_id}/badge_templates``: ``{data: [...], metadata}`` with
  the seed's paging metadata (``count``, ``current_page``, ``total_count``, ``total_pages``,
  ``per``, ``previous_page_url``, ``next_page_url``; 50 a page), the page URLs absolute and
  keeping ``filter`` and ``sort``; ``filter=key::value|...``, ``sort=key|-key`` and ``page``
  go to the RPC's fields of the same names as they are;
- ``GET .../badge_templates/{id}``: ``{data: {...}, metadata: {}}``;
- ``POST .../badge_templates`` (201), ``PUT``/``PATCH .../{id}`` (the fields the body names),
  ``DELETE .../{id}``, ``POST``/``PUT .../{id}/archive`` and ``.../unarchive``.

Templates are written as the seed's samples: snake_case, lower-case states (``active``),
``null`` for what is not set, dates as ``2014-04-01T14:41:00.000Z``, and the seed's own
spelling ``recommended_badg_template_url``. Failures are Credly's error body,
``{data: {message, errors: [{attribute, messages}], code}, metadata: {}}``, with its HTTP
status: 400 for a bad ``filter``, ``sort`` or page, 422 for an invalid template, 404 for an
unknown template or another organisation's ``organization_id``.

Credly's own Basic authentication (the API token as the user name, no password) is accepted
beside the service's key headers.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.descriptor import EnumDescriptor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from badge_service.api.badges.v1 import badge_template_pb2 as pb
from badge_service.http.rest.gateway import Gateway, RpcFailure, metadata_of
from badge_service.http.rest.message_json import (
    Handler,
    dumps,
    enum_suffix,
    guarded,
    json_object,
    parse_into,
    proto_doc,
    query_int,
    to_json,
    writable_paths,
)

SERVICE = "/badges.v1.BadgeTemplateService/"
JSON = "application/json"
TEMPLATES = "/organizations/{organization_id}/badge_templates"
TEMPLATE = TEMPLATES + "/{id}"

# Credly writes these attributes in title case ("Foundational", "Hours", "Free", "Learning");
# every other enum (state, visibility, expiry type, recommendation type) in lower case.
_TITLE_CASE = {
    "badges.v1.BadgeTemplateLevel",
    "badges.v1.BadgeTemplateTimeToEarn",
    "badges.v1.BadgeTemplateCost",
    "badges.v1.BadgeTemplateTypeCategory",
}
# Text attributes the seed shows as null when a template has none.
_NULL_WHEN_EMPTY = (
    "primary_badge_template_id",
    "variant_name",
    "variant_type",
    "default_expires_at_date",
    "earn_this_badge_url",
    "global_activity_url",
    "criteria_url_name",
    "criteria_url",
    "image_url",
)
# The seed's attributes in its order; the service's own (default_expires_in_days,
# collection_ids) follow them.
_SEED_ORDER = (
    "primary_badge_template_id", "variant_name", "id", "allow_duplicate_badges", "description",
    "default_expires_at", "default_expires_at_date", "default_expires_at_type",
    "earn_this_badge_url", "enable_earn_this_badge", "enable_detail_attribute_visibility",
    "global_activity_url", "lock_badge_state", "name", "state", "public", "badges_count",
    "recipient_type", "send_expiring_badge_notifications", "settings_enable_related_badges",
    "show_badge_lmi", "show_lmi_jobs", "show_skill_tag_links", "vanity_slug",
    "record_to_blockchain", "translatable", "printing_disabled", "visibility",
    "variants_allowed", "variant_type", "allow_delete", "allow_archive", "available_locales",
    "only_one_skill_required", "linkedin_share_default_message", "level", "time_to_earn",
    "cost", "type_category", "criteria_url_name", "criteria_url", "certification",
    "state_updated_at", "created_at", "updated_at", "show_template_settings",
    "get_issue_count", "get_variants_issue_count", "image", "image_url", "url", "owner",
    "alignments", "recommendations", "required_badge_templates", "badge_template_activities",
    "skills", "endorsements", "reporting_tags", "recommending_templates", "criterion_for",
)  # fmt: skip
# Only single-template replies carry these (the seed's list items have neither).
_SINGLE_ONLY = ("recommending_templates", "criterion_for")
# Query parameters whose bad values are the request's fault (400), not the template's (422).
_QUERY_FIELDS = {"filter", "sort", "page", "page_size", "page_token"}
_QUERY_REASONS = {"INVALID_FILTER", "INVALID_SORT"}
# Path ids that are not UUIDs name nothing: Credly answers 404 for them.
_PATH_FIELDS = {"id", "organization_id", "badge_template.id"}
_HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def _enum_out(enum: EnumDescriptor, name: str) -> str | None:
    suffix = enum_suffix(enum, name)
    if suffix is None:
        return None
    text = suffix.replace("_", " ").lower()
    return text.capitalize() if enum.full_name in _TITLE_CASE else text.replace(" ", "_")


def _recommendation(rec: dict[str, Any]) -> dict[str, Any]:
    """The seed's two shapes: information (title, activity_url) and badge (the recommended
    template's id, name and URL, the last in Credly's spelling)."""
    out = {"id": rec["id"], "title": rec["title"], "type": rec["type"]}
    if rec["type"] == "badge":
        out["recommended_badge_template_id"] = rec["recommended_badge_template_id"]
        out["recommended_badge_template_name"] = rec["recommended_badge_template_name"]
        out["recommended_badg_template_url"] = rec["recommended_badge_template_url"]
    else:
        out["activity_url"] = rec["activity_url"] or None
    return out


def _activity(act: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": act["id"],
        "title": act["title"],
        "activity_type": act["activity_type"],
        "activity_url": act["activity_url"] or None,
        "required_badge_template_id": act["required_badge_template_id"] or None,
    }
    if act["required_badge_template_id"]:
        out["required_badge_template_name"] = act["required_badge_template_name"]
        out["required_badge_template_url"] = act["required_badge_template_url"]
    return out


def template_json(template: pb.BadgeTemplate, *, single: bool) -> dict[str, Any]:
    """A template as the seed writes one (``single``: with ``recommending_templates`` and
    ``criterion_for``, as Get answers)."""
    doc = to_json(template, camel=False, enum_out=_enum_out)
    for key in _NULL_WHEN_EMPTY:
        doc[key] = doc[key] or None
    doc["default_expires_in_days"] = doc["default_expires_in_days"] or None
    doc["recommendations"] = [_recommendation(r) for r in doc["recommendations"]]
    doc["badge_template_activities"] = [_activity(a) for a in doc["badge_template_activities"]]
    if not single:
        for key in _SINGLE_ONLY:
            del doc[key]
    ordered = {key: doc.pop(key) for key in _SEED_ORDER if key in doc}
    ordered.update(doc)
    return ordered


def template_in(doc: dict[str, Any]) -> dict[str, Any]:
    """A Credly template body (bare, or wrapped in ``badge_template``) as proto3 JSON of
    BadgeTemplate. Credly's create takes the image as ``image`` (a URL); the seed's
    ``recommended_badg_template_url`` is output only, like the rest the service computes."""
    inner = doc.get("badge_template")
    body: dict[str, Any] = inner if isinstance(inner, dict) else doc
    if isinstance(body.get("image"), str) and "image_url" not in body:
        body = {**body, "image_url": body["image"]}
    return proto_doc(body, pb.BadgeTemplate.DESCRIPTOR)


def _metadata(request: Request) -> list[tuple[str, str]]:
    """The caller's key as the RPCs read it. Credly's Basic authentication sends the API
    token as the user name with no password (``base64(TOKEN:)``): that is the key alone."""
    found = metadata_of(request)
    for i, (name, value) in enumerate(found):
        if name != "authorization":
            continue
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.lower() != "basic":
            continue
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            continue
        if sep and user and not password and not user.isdigit():
            found[i] = ("x-api-key", user)
    return found


def _respond(doc: dict[str, Any], status: int = 200) -> Response:
    return Response(dumps(doc), status, media_type=JSON, headers={"Cache-Control": "no-store"})


def error_response(status: int, message: str, errors: list[tuple[str, str]], code: str) -> Response:
    """Credly's error body: the message, the attributes at fault and their messages, and the
    reason (``ErrorInfo.reason``) as ``code``."""
    by_attribute: dict[str, list[str]] = {}
    for attribute, text in errors:
        by_attribute.setdefault(attribute, []).append(text)
    data = {
        "message": message,
        "errors": [{"attribute": a, "messages": m} for a, m in by_attribute.items()],
        "code": code,
    }
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="badge-service"'
    return Response(dumps({"data": data, "metadata": {}}), status, media_type=JSON, headers=headers)


def _attribute(field: str) -> str:
    return field.removeprefix("badge_template.")


def failure_response(failure: RpcFailure) -> Response:
    """An RPC's failure in Credly's body and HTTP status."""
    fields = {f for f, _ in failure.violations} | {failure.metadata.get("field", "")}
    fields.discard("")
    if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
        if fields and fields <= _PATH_FIELDS:
            status = 404
        elif fields & _QUERY_FIELDS or failure.reason in _QUERY_REASONS:
            status = 400
        else:
            status = 422
    else:
        status = _HTTP_STATUS.get(failure.code, 500)
    errors = [(_attribute(f), d) for f, d in failure.violations]
    if not errors and failure.metadata.get("field"):
        errors = [(_attribute(failure.metadata["field"]), failure.message)]
    return error_response(status, failure.message, errors, failure.reason or failure.code.name)


class Credly:
    """The handlers, calling the RPCs through ``gateway``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def _call(self, request: Request, method: str, message: Any, reply: type[Any]) -> Any:
        return await self._gateway.call(SERVICE + method, message, reply, _metadata(request))

    async def list(self, request: Request) -> Response:
        """The seed's list: ``{data, metadata}`` with absolute page URLs."""
        q = request.query_params
        message = pb.ListBadgeTemplatesRequest(
            organization_id=request.path_params["organization_id"],
            filter=q.get("filter", ""),
            sort=q.get("sort", ""),
            page=query_int(request, "page"),
            page_size=query_int(request, "page_size", "per"),
            page_token=q.get("page_token", ""),
        )
        reply = await self._call(
            request, "ListBadgeTemplates", message, pb.ListBadgeTemplatesResponse
        )
        base = str(request.base_url).rstrip("/")
        meta = reply.metadata
        metadata = {
            "count": meta.count,
            "current_page": meta.current_page,
            "total_count": meta.total_count,
            "total_pages": meta.total_pages,
            "per": meta.per,
            "previous_page_url": base + meta.previous_page_url if meta.previous_page_url else None,
            "next_page_url": base + meta.next_page_url if meta.next_page_url else None,
        }
        data = [template_json(t, single=False) for t in reply.badge_templates]
        return _respond({"data": data, "metadata": metadata})

    async def get(self, request: Request) -> Response:
        """One template: ``{data: {...}, metadata: {}}``."""
        p = request.path_params
        message = pb.GetBadgeTemplateRequest(organization_id=p["organization_id"], id=p["id"])
        reply = await self._call(request, "GetBadgeTemplate", message, pb.BadgeTemplate)
        return _respond({"data": template_json(reply, single=True), "metadata": {}})

    async def create(self, request: Request) -> Response:
        """Creates a template from Credly's body: 201 with it."""
        template = pb.BadgeTemplate()
        parse_into(template_in(await json_object(request)), template)
        message = pb.CreateBadgeTemplateRequest(
            organization_id=request.path_params["organization_id"],
            badge_template=template,
            request_id=request.query_params.get("request_id", ""),
        )
        reply = await self._call(request, "CreateBadgeTemplate", message, pb.BadgeTemplate)
        return _respond({"data": template_json(reply, single=True), "metadata": {}}, 201)

    async def update(self, request: Request) -> Response:
        """Updates the attributes the body names (Credly's PUT, and PATCH)."""
        p = request.path_params
        body = template_in(await json_object(request))
        template = pb.BadgeTemplate()
        parse_into(body, template)
        template.id = p["id"]
        message = pb.UpdateBadgeTemplateRequest(
            organization_id=p["organization_id"], badge_template=template
        )
        paths = writable_paths(pb.BadgeTemplate.DESCRIPTOR, body)
        if not paths:
            # Nothing to change is still the update RPC (the id alone, an empty mask), so an
            # update is a write with its rules (a reader key is refused) as over gRPC.
            message.badge_template.CopyFrom(pb.BadgeTemplate(id=p["id"]))
        message.update_mask.paths.extend(paths)
        reply = await self._call(request, "UpdateBadgeTemplate", message, pb.BadgeTemplate)
        return _respond({"data": template_json(reply, single=True), "metadata": {}})

    async def delete(self, request: Request) -> Response:
        """Deletes a template: 200 with an empty ``data``."""
        p = request.path_params
        message = pb.DeleteBadgeTemplateRequest(organization_id=p["organization_id"], id=p["id"])
        await self._call(request, "DeleteBadgeTemplate", message, empty_pb2.Empty)
        return _respond({"data": {}, "metadata": {}})

    async def archive(self, request: Request) -> Response:
        """Archives a template; answers it."""
        p = request.path_params
        message = pb.ArchiveBadgeTemplateRequest(organization_id=p["organization_id"], id=p["id"])
        reply = await self._call(request, "ArchiveBadgeTemplate", message, pb.BadgeTemplate)
        return _respond({"data": template_json(reply, single=True), "metadata": {}})

    async def unarchive(self, request: Request) -> Response:
        """Makes an archived template active again; answers it."""
        p = request.path_params
        message = pb.UnarchiveBadgeTemplateRequest(organization_id=p["organization_id"], id=p["id"])
        reply = await self._call(request, "UnarchiveBadgeTemplate", message, pb.BadgeTemplate)
        return _respond({"data": template_json(reply, single=True), "metadata": {}})


def _guarded(handler: Handler) -> Handler:
    """A route whose failures answer in Credly's error body."""
    return guarded(
        handler,
        failure_response,
        lambda bad: error_response(400, str(bad), [], "INVALID_REQUEST"),
    )


def routes(gateway: Gateway) -> list[BaseRoute]:
    """This vendor's routes, served through gateway."""
    c = Credly(gateway)
    return [
        Route(TEMPLATES, _guarded(c.list), methods=["GET"]),
        Route(TEMPLATES, _guarded(c.create), methods=["POST"]),
        Route(TEMPLATE, _guarded(c.get), methods=["GET"]),
        Route(TEMPLATE, _guarded(c.update), methods=["PUT", "PATCH"]),
        Route(TEMPLATE, _guarded(c.delete), methods=["DELETE"]),
        Route(TEMPLATE + "/archive", _guarded(c.archive), methods=["POST", "PUT"]),
        Route(TEMPLATE + "/unarchive", _guarded(c.unarchive), methods=["POST", "PUT"]),
    ]
