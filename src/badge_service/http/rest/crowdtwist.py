"""CrowdTwist v2.1's REST paths from its seed (001 badges), in its own spellings.

- ``GET /v2.1/badges``: BadgeService.ListBadges, answered ``{"paging": {...}, "badges":
  [...]}`` with the seed's paging object: ``total``, ``pages`` and absolute ``next_page`` /
  ``prev_page`` URLs (null when there is none) that keep every filter of the request and its
  ``api_key``, so a client follows them as they are. The paging rules (default 10, at most
  25, pages out of range) are the RPC's; an unreadable ``page`` is the first page, as the
  seed says, and an unreadable ``page_size`` the default.
- ``GET``/``PATCH``/``PUT``/``DELETE /v2.1/badges/{id}`` and ``POST /v2.1/badges``: GetBadge,
  UpdateBadge (the keys in the body are the fields changed), DeleteBadge (204), CreateBadge
  (201 and ``Location``).

A badge is the seed's object: integer ``id``, ``badge_states`` with ``unearned``,
``in progress``, ``earned``, dates as ``2019-05-03T19:01:23.000Z`` (null when unset),
``is_enabled`` as 1 or 0 (accepted as 0/1, true/false or their text), ``frequency`` with
``freq_period_id``/``freq_period_name`` (either one sets the period), ``tags``, ``segment``
with ``eligibility_type`` ``inclusion``/``exclusion``, ``badge_extra_data``.

The key is the ``api_key`` query parameter (or the ``x-api-key`` / ``authorization`` header).
Errors are ``{"error": {"code": <HTTP status>, "message", "reason"[, "field"]}}`` with the HTTP
status of the gRPC code (400 invalid, 401, 403, 404, 409 name taken, ...).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from google.protobuf import empty_pb2, field_mask_pb2, json_format, timestamp_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.http.rest.errors import http_status
from badge_service.http.rest.gateway import Gateway, RpcFailure, metadata_of
from badge_service.http.rest.vendor_json import (
    UNKNOWN_ENUM,
    BadInput,
    as_bool,
    as_int,
    as_list,
    as_object,
    as_text,
    as_timestamp,
    json_object,
)

BADGES = "/v2.1/badges"
_SERVICE = "/badges.v1.BadgeService/"

_STATES: dict[str, int] = {
    "unearned": pb.BADGE_STATE_TYPE_UNEARNED,
    "in progress": pb.BADGE_STATE_TYPE_IN_PROGRESS,
    "earned": pb.BADGE_STATE_TYPE_EARNED,
}
_STATE_NAMES = {number: name for name, number in _STATES.items()}
_PERIODS: dict[str, int] = {
    "week": pb.FREQUENCY_PERIOD_WEEK,
    "month": pb.FREQUENCY_PERIOD_MONTH,
    "year": pb.FREQUENCY_PERIOD_YEAR,
    "day": pb.FREQUENCY_PERIOD_DAY,
}
_ELIGIBILITY: dict[str, int] = {
    "inclusion": pb.ELIGIBILITY_TYPE_INCLUSION,
    "exclusion": pb.ELIGIBILITY_TYPE_EXCLUSION,
}
_ELIGIBILITY_NAMES = {number: name for name, number in _ELIGIBILITY.items()}
_DATES = ("date_start", "date_end", "display_date_start", "display_date_end")
# The badge keys a request may set (the writable Badge fields, named alike).
_WRITABLE = (
    "name",
    "title",
    *_DATES,
    "is_enabled",
    "badge_states",
    "frequency",
    "tags",
    "segment",
    "badge_extra_data",
)
_INT32 = 2**31


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status, headers, media_type="application/json")


def _error(status: int, message: str, reason: str, field: str = "") -> Response:
    doc: dict[str, Any] = {"code": status, "message": message, "reason": reason}
    if field:
        doc["field"] = field
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="badge-service"'
    return _json({"error": doc}, status, headers)


def error_response(failure: RpcFailure) -> Response:
    """A failed call: the HTTP status of its gRPC code, its message, ErrorInfo reason and the
    field it names (``metadata["field"]`` or the first BadRequest violation)."""
    field = failure.metadata.get("field", "")
    if not field and failure.violations:
        field = failure.violations[0][0]
    reason = failure.reason or failure.code.name
    return _error(http_status(failure.code), failure.message, reason, field)


def bad_input_response(error: BadInput) -> Response:
    """A request the edge could not decode: 400."""
    return _error(400, str(error), "INVALID_FIELD", error.field)


def _badge_id(text: str) -> int | None:
    """The id of a path: a CrowdTwist id is a whole number (int64)."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value < 2**63 else None


def _not_found(badge_id: str) -> Response:
    # An id that is not a number names no badge (CrowdTwist ids are integers).
    return _error(404, f"badge {badge_id!r} not found", "NOT_FOUND", "id")


# --- Badge <-> the seed's JSON -------------------------------------------------------------


def _date(value: timestamp_pb2.Timestamp, present: bool) -> str | None:
    """The seed's date form, 2019-05-03T19:01:23.000Z (milliseconds, UTC)."""
    if not present:
        return None
    when = value.ToDatetime()
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def badge_json(badge: pb.Badge) -> dict[str, Any]:
    """A badge as the seed's sample shows it, keys in its order."""
    freq = badge.frequency
    period = freq.freq_period_id or None
    return {
        "id": badge.id,
        "name": badge.name,
        "title": badge.title,
        "badge_states": [
            {
                "state": _STATE_NAMES.get(s.state),
                "order": s.order,
                "description": s.description,
                "image_url": s.image_url,
            }
            for s in badge.badge_states
        ],
        **{name: _date(getattr(badge, name), badge.HasField(name)) for name in _DATES},  # type: ignore[arg-type]
        "is_enabled": 1 if (badge.is_enabled if badge.HasField("is_enabled") else True) else 0,
        "frequency": {
            "freq_cap": freq.freq_cap if freq.HasField("freq_cap") else None,
            "freq_period_id": period,
            "freq_period_name": freq.freq_period_name or None,
            "freq_max": freq.freq_max if freq.HasField("freq_max") else None,
        },
        "tags": [{"tag_name": t.tag_name, "tag_id": t.tag_id} for t in badge.tags],
        "badge_extra_data": _plain(json_format.MessageToDict(badge.badge_extra_data)),
        "segment": [
            {
                "name": s.name,
                "subscription_id": s.subscription_id,
                "eligibility_type": _ELIGIBILITY_NAMES.get(s.eligibility_type),
            }
            for s in badge.segment
        ],
    }


def _plain(value: Any) -> Any:
    """A Struct's value as JSON holds it: whole numbers as integers (a Struct keeps every
    number as a double, and ``5`` should come back as ``5``, not ``5.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _spelling(value: Any, names: dict[str, int], field: str) -> int:
    """The enum number of a vendor spelling (any case, ``_`` for a blank); an unknown one
    becomes a number no value has, which the RPC refuses naming the field."""
    if not isinstance(value, str):
        raise BadInput(field, f"must be one of {', '.join(names)}")
    return names.get(value.strip().lower().replace("_", " "), UNKNOWN_ENUM)


def _frequency(doc: dict[str, Any], out: pb.Frequency) -> None:
    if doc.get("freq_cap") is not None:
        out.freq_cap = as_int(doc["freq_cap"], "frequency.freq_cap", 32)
    if doc.get("freq_max") is not None:
        out.freq_max = as_int(doc["freq_max"], "frequency.freq_max", 32)
    # The period by id (the enum numbers are CrowdTwist's ids), else by name.
    if doc.get("freq_period_id") is not None:
        out.freq_period = as_int(doc["freq_period_id"], "frequency.freq_period_id", 32)  # type: ignore[assignment]
    elif doc.get("freq_period_name") is not None:
        name = doc["freq_period_name"]
        out.freq_period = _spelling(name, _PERIODS, "frequency.freq_period_name")  # type: ignore[assignment]


def badge_of(doc: dict[str, Any]) -> tuple[pb.Badge, list[str]]:
    """The Badge of a body in the seed's spellings, and the fields it sets (an update's
    mask). ``id`` and keys the seed does not define are ignored; null clears a field."""
    badge = pb.Badge()
    present = [name for name in _WRITABLE if name in doc]
    for name in present:
        value = doc[name]
        if value is None:
            continue
        if name in ("name", "title"):
            setattr(badge, name, as_text(value, name))
        elif name in _DATES:
            getattr(badge, name).CopyFrom(as_timestamp(value, name))
        elif name == "is_enabled":
            badge.is_enabled = as_bool(value, name)
        elif name == "badge_states":
            for i, item in enumerate(as_list(value, name)):
                where = f"badge_states[{i}]"
                state = as_object(item, where)
                out = badge.badge_states.add()
                if state.get("state") is not None:
                    out.state = _spelling(state["state"], _STATES, f"{where}.state")  # type: ignore[assignment]
                if state.get("order") is not None:
                    out.order = as_int(state["order"], f"{where}.order", 32)
                if state.get("description") is not None:
                    out.description = as_text(state["description"], f"{where}.description")
                if state.get("image_url") is not None:
                    out.image_url = as_text(state["image_url"], f"{where}.image_url")
        elif name == "frequency":
            _frequency(as_object(value, name), badge.frequency)
        elif name == "tags":
            for i, item in enumerate(as_list(value, name)):
                tag = as_object(item, f"tags[{i}]")
                out_tag = badge.tags.add()
                if tag.get("tag_name") is not None:
                    out_tag.tag_name = as_text(tag["tag_name"], f"tags[{i}].tag_name")
                if tag.get("tag_id") is not None:
                    out_tag.tag_id = as_int(tag["tag_id"], f"tags[{i}].tag_id")
        elif name == "segment":
            for i, item in enumerate(as_list(value, name)):
                where = f"segment[{i}]"
                seg = as_object(item, where)
                out_seg = badge.segment.add()
                if seg.get("name") is not None:
                    out_seg.name = as_text(seg["name"], f"{where}.name")
                if seg.get("subscription_id") is not None:
                    out_seg.subscription_id = as_int(
                        seg["subscription_id"], f"{where}.subscription_id"
                    )
                if seg.get("eligibility_type") is not None:
                    kind = _spelling(
                        seg["eligibility_type"], _ELIGIBILITY, f"{where}.eligibility_type"
                    )
                    out_seg.eligibility_type = kind  # type: ignore[assignment]
        else:  # badge_extra_data: an object (the seed's table says "JSON array"; [] is none)
            extra = {} if value == [] else as_object(value, name)
            try:
                badge.badge_extra_data.update(extra)
            except (ValueError, TypeError, OverflowError, RecursionError) as error:
                raise BadInput(name, str(error) or "is not valid JSON data") from None
    return badge, present


# --- The list's query and paging -----------------------------------------------------------


def _number(text: str | None) -> int | None:
    """A whole number of query text clamped to int32 (a huge page is past the end, as it
    would be); None when there is none or it is not a number."""
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return max(-_INT32, min(value, _INT32 - 1))


def list_request(request: Request) -> pb.ListBadgesRequest:
    """The ListBadgesRequest of the query: ``page``, ``page_size``, ``is_enabled`` (1/0 or
    true/false), ``tag_name``, ``earnable_at``, ``displayable_at`` (ISO-8601)."""
    query = request.query_params
    out = pb.ListBadgesRequest()
    page = _number(query.get("page"))
    if page is not None:
        out.page = page
    size = _number(query.get("page_size"))
    if size is not None:
        out.page_size = size
    if query.get("is_enabled", "") != "":
        out.is_enabled = as_bool(query["is_enabled"], "is_enabled")
    if query.get("tag_name"):
        out.tag_name = query["tag_name"]
    for name in ("earnable_at", "displayable_at"):
        if query.get(name):
            getattr(out, name).CopyFrom(as_timestamp(query[name], name))
    return out


def _absolute(request: Request, path: str) -> str | None:
    """The absolute URL of a page's path from the RPC (it keeps the filters), with the
    request's ``api_key`` when it came as a query parameter: the link then works as the
    request did, which the seed's sample links show (``...&api_key=``)."""
    if not path:
        return None
    base = f"{request.url.scheme}://{request.url.netloc}"
    api_key = request.query_params.get("api_key")
    tail = "" if api_key is None else "&api_key=" + quote(api_key, safe="")
    return base + path + tail


class CrowdTwist:
    """The handlers, each one call through the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @staticmethod
    def _metadata(request: Request) -> list[tuple[str, str]]:
        return metadata_of(request, api_key=request.query_params.get("api_key"))

    async def _badge(self, request: Request, method: str, message: Any) -> pb.Badge:
        return await self.gateway.call(
            _SERVICE + method, message, pb.Badge, self._metadata(request)
        )

    async def list_badges(self, request: Request) -> Response:
        """``GET /v2.1/badges``."""
        try:
            message = list_request(request)
            reply = await self.gateway.call(
                _SERVICE + "ListBadges", message, pb.ListBadgesResponse, self._metadata(request)
            )
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        paging = reply.paging
        doc = {
            "paging": {
                "total": paging.total,
                "pages": paging.pages,
                "next_page": _absolute(request, paging.next_page_url),
                "prev_page": _absolute(request, paging.prev_page_url),
            },
            "badges": [badge_json(b) for b in reply.badges],
        }
        return _json(doc)

    async def get_badge(self, request: Request) -> Response:
        """``GET /v2.1/badges/{id}``."""
        badge_id = _badge_id(request.path_params["id"])
        if badge_id is None:
            return _not_found(request.path_params["id"])
        try:
            badge = await self._badge(request, "GetBadge", pb.GetBadgeRequest(id=badge_id))
        except RpcFailure as failure:
            return error_response(failure)
        return _json(badge_json(badge))

    async def create_badge(self, request: Request) -> Response:
        """``POST /v2.1/badges``: 201 with the badge and its ``Location``."""
        try:
            badge, _ = badge_of(await json_object(request))
            message = pb.CreateBadgeRequest(
                badge=badge, request_id=request.query_params.get("request_id", "")
            )
            created = await self._badge(request, "CreateBadge", message)
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(badge_json(created), 201, {"Location": f"{BADGES}/{created.id}"})

    async def update_badge(self, request: Request) -> Response:
        """``PATCH`` (or ``PUT``) ``/v2.1/badges/{id}``: the keys in the body change."""
        badge_id = _badge_id(request.path_params["id"])
        if badge_id is None:
            return _not_found(request.path_params["id"])
        try:
            badge, present = badge_of(await json_object(request))
            badge.id = badge_id
            message = pb.UpdateBadgeRequest(
                badge=badge, update_mask=field_mask_pb2.FieldMask(paths=present)
            )
            updated = await self._badge(request, "UpdateBadge", message)
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(badge_json(updated))

    async def delete_badge(self, request: Request) -> Response:
        """``DELETE /v2.1/badges/{id}``: 204."""
        badge_id = _badge_id(request.path_params["id"])
        if badge_id is None:
            return _not_found(request.path_params["id"])
        try:
            await self.gateway.call(
                _SERVICE + "DeleteBadge",
                pb.DeleteBadgeRequest(id=badge_id),
                empty_pb2.Empty,
                self._metadata(request),
            )
        except RpcFailure as failure:
            return error_response(failure)
        return Response(status_code=204)


def routes(gateway: Gateway) -> list[BaseRoute]:
    """CrowdTwist's routes, served through gateway."""
    api = CrowdTwist(gateway)
    return [
        Route(BADGES, api.list_badges, methods=["GET"]),
        Route(BADGES, api.create_badge, methods=["POST"]),
        Route(BADGES + "/{id}", api.get_badge, methods=["GET"]),
        Route(BADGES + "/{id}", api.update_badge, methods=["PATCH", "PUT"]),
        Route(BADGES + "/{id}", api.delete_badge, methods=["DELETE"]),
    ]
