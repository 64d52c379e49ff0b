"""Capillary's REST paths from its seeds (000 org meta, 002 custom fields), in its own
spellings and ``{data, errors, warnings}`` envelope.

- ``GET``/``PUT /api_gateway/v1/badges/orgMeta``: OrgMetaService.GetOrgMeta / UpdateOrgMeta;
- ``POST``/``GET /api_gateway/v1/badges/customField``: CreateCustomField / every field
  (ListCustomFields, all pages: an org has at most 100);
- ``GET``/``PATCH``/``PUT``/``DELETE /api_gateway/v1/badges/customField/{id}``: Get, Update
  (the keys present in the body are the fields changed), Delete.

Answers keep each seed's spellings exactly: the org meta as seed 000 shows it (``dataType``
in lower case, ``createdOn`` epoch seconds, ``errors``/``warnings`` null), a custom field as
seed 002 (``dataType`` in upper case, ``createdOnISO``/``lastUpdatedOnISO``, ``errors`` and
``warnings`` empty arrays). Requests take either case of a data type.

Errors are ``{"data": null, "errors": [{"code", "message"}], "warnings": []}``: Capillary's
code (740, 741, 742, 744, from the RPC's ``ErrorInfo.metadata["code"]``) with HTTP 400, or for
any other failure the HTTP status of its gRPC code, which is then also the entry's ``code``.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import empty_pb2, field_mask_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.api.badges.v1 import org_meta_pb2 as om
from badge_service.http.rest.errors import http_status
from badge_service.http.rest.gateway import Gateway, RpcFailure, metadata_of
from badge_service.http.rest.vendor_json import (
    UNKNOWN_ENUM,
    BadInput,
    as_bool,
    as_list,
    as_object,
    as_text,
    epoch_seconds,
    json_object,
)

ORG_META = "/api_gateway/v1/badges/orgMeta"
CUSTOM_FIELD = "/api_gateway/v1/badges/customField"

_SERVICE_ORG_META = "/badges.v1.OrgMetaService/"
_SERVICE_CUSTOM_FIELD = "/badges.v1.CustomFieldService/"

# Capillary's errors are client errors: its API answers them 400 with the code in the body.
VENDOR_CODE_STATUS = 400
# Errors without a Capillary code: the envelope's entry carries the HTTP status as its code.

_DATA_TYPES: dict[str, int] = {
    "INTEGER": common_pb2.DATA_TYPE_INTEGER,
    "BOOLEAN": common_pb2.DATA_TYPE_BOOLEAN,
    "DATE": common_pb2.DATA_TYPE_DATE,
    "STRING": common_pb2.DATA_TYPE_STRING,
}
_DATA_TYPE_NAMES = {number: name for name, number in _DATA_TYPES.items()}

# The custom field keys a request may set, and the proto field each is.
_FIELD_KEYS = {
    "name": "name",
    "isMandatory": "is_mandatory",
    "defaultValue": "default_value",
    "isActive": "is_active",
    "dataType": "data_type",
}


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status, headers, media_type="application/json")


def _envelope(data: Any, empty: list[Any] | None) -> dict[str, Any]:
    """The envelope; ``empty`` is how the seed writes no errors and warnings (``null`` in
    seed 000, ``[]`` in seed 002)."""
    return {"data": data, "errors": empty, "warnings": empty}


def error_response(failure: RpcFailure) -> Response:
    """A failed call in Capillary's envelope: its code and HTTP 400, or for errors Capillary
    has no code for, the HTTP status of the gRPC code (as the entry's code too)."""
    code = failure.metadata.get("code", "")
    if code.isdigit():
        status, number = VENDOR_CODE_STATUS, int(code)
    else:
        status = http_status(failure.code)
        number = status
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="badge-service"'
    entry = {"code": number, "message": failure.message}
    return _json({"data": None, "errors": [entry], "warnings": []}, status, headers)


def bad_input_response(error: BadInput) -> Response:
    """A body the edge could not decode: 400 in the envelope, as a Capillary client reads it."""
    return _json(
        {"data": None, "errors": [{"code": 400, "message": str(error)}], "warnings": []}, 400
    )


def data_type_of(value: Any, field: str) -> int:
    """The DataType number of a Capillary spelling (any case); unset for null or empty; an
    unknown spelling becomes an unknown number, which the RPC refuses (741 for a custom
    field)."""
    if value is None or value == "":
        return common_pb2.DATA_TYPE_UNSPECIFIED
    if not isinstance(value, str):
        raise BadInput(field, "must be one of INTEGER, BOOLEAN, DATE, STRING")
    return _DATA_TYPES.get(value.strip().upper(), UNKNOWN_ENUM)


def _data_type_name(number: int) -> str | None:
    return _DATA_TYPE_NAMES.get(number)


# --- Org meta (seed 000) -----------------------------------------------------------------


def org_meta_json(meta: om.OrgMeta) -> dict[str, Any]:
    """An org meta as seed 000 shows it (``dataType`` in lower case, as there)."""
    return {
        "id": meta.id,
        "orgId": meta.org_id,
        "tags": [
            {
                "key": tag.key,
                "dataType": (_data_type_name(tag.data_type) or "").lower() or None,
                "description": tag.description,
                "mandatory": tag.mandatory,
            }
            for tag in meta.tags
        ],
        "createdOn": epoch_seconds(meta.created_on),
        "createdBy": meta.created_by,
        "lastUpdatedOn": epoch_seconds(meta.last_updated_on),
        "lastUpdatedBy": meta.last_updated_by,
    }


def org_meta_of(doc: dict[str, Any]) -> om.UpdateOrgMetaRequest:
    """The UpdateOrgMetaRequest of a PUT body ``{"tags": [...]}`` (the object GET answers is
    accepted as it is: its read-only fields are ignored). Only the tags are written, so the
    mask is ``tags`` when the body has them: ``"tags": []`` removes every tag."""
    request = om.UpdateOrgMetaRequest()
    if "tags" not in doc:
        return request
    for i, item in enumerate(as_list(doc["tags"], "tags")):
        where = f"tags[{i}]"
        tag = as_object(item, where)
        out = request.org_meta.tags.add()
        if tag.get("key") is not None:
            out.key = as_text(tag["key"], f"{where}.key")
        out.data_type = data_type_of(tag.get("dataType"), f"{where}.dataType")  # type: ignore[assignment]
        if tag.get("description") is not None:
            out.description = as_text(tag["description"], f"{where}.description")
        if tag.get("mandatory") is not None:
            out.mandatory = as_bool(tag["mandatory"], f"{where}.mandatory")
    request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=["tags"]))
    return request


# --- Custom fields (seed 002) --------------------------------------------------------------


def custom_field_json(field: cf.CustomField) -> dict[str, Any]:
    """A custom field as seed 002 shows it."""
    return {
        "id": field.id,
        "orgId": field.org_id,
        "name": field.name,
        "isMandatory": field.is_mandatory,
        "defaultValue": field.default_value if field.HasField("default_value") else None,
        "isActive": field.is_active if field.HasField("is_active") else True,
        "dataType": _data_type_name(field.data_type),
        "createdOn": epoch_seconds(field.created_on),
        "createdOnISO": field.created_on_iso,
        "createdBy": field.created_by,
        "lastUpdatedOn": epoch_seconds(field.last_updated_on),
        "lastUpdatedOnISO": field.last_updated_on_iso,
        "lastUpdatedBy": field.last_updated_by,
    }


def custom_field_of(doc: dict[str, Any]) -> tuple[cf.CustomField, list[str]]:
    """The CustomField of a body in seed 002's spellings, and the proto names of the keys it
    sets (an update's mask). Read-only keys (``id``, ``orgId``, the audit fields) and keys
    Capillary does not define are ignored, as its API ignores them; a null value clears the
    field."""
    field = cf.CustomField()
    present: list[str] = []
    for key, name in _FIELD_KEYS.items():
        if key not in doc:
            continue
        present.append(name)
        value = doc[key]
        if value is None:
            continue
        if name == "name":
            field.name = as_text(value, key)
        elif name == "is_mandatory":
            field.is_mandatory = as_bool(value, key)
        elif name == "default_value":
            field.default_value = as_text(value, key)
        elif name == "is_active":
            field.is_active = as_bool(value, key)
        else:
            field.data_type = data_type_of(value, key)  # type: ignore[assignment]
    return field, present


class Capillary:
    """The handlers, each one call through the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _org_meta(self, request: Request, method: str, message: Any) -> om.OrgMeta:
        return await self.gateway.call(
            _SERVICE_ORG_META + method, message, om.OrgMeta, metadata_of(request)
        )

    async def get_org_meta(self, request: Request) -> Response:
        """``GET /api_gateway/v1/badges/orgMeta``."""
        try:
            meta = await self._org_meta(request, "GetOrgMeta", om.GetOrgMetaRequest())
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(org_meta_json(meta), None))

    async def put_org_meta(self, request: Request) -> Response:
        """``PUT /api_gateway/v1/badges/orgMeta`` with ``{"tags": [...]}``."""
        try:
            message = org_meta_of(await json_object(request))
            meta = await self._org_meta(request, "UpdateOrgMeta", message)
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(org_meta_json(meta), None))

    async def _field(self, request: Request, method: str, message: Any) -> cf.CustomField:
        return await self.gateway.call(
            _SERVICE_CUSTOM_FIELD + method, message, cf.CustomField, metadata_of(request)
        )

    async def create_field(self, request: Request) -> Response:
        """``POST /api_gateway/v1/badges/customField`` (``?request_id=`` makes it safe to
        retry, as over gRPC)."""
        try:
            field, _ = custom_field_of(await json_object(request))
            message = cf.CreateCustomFieldRequest(
                custom_field=field, request_id=request.query_params.get("request_id", "")
            )
            created = await self._field(request, "CreateCustomField", message)
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(custom_field_json(created), []))

    async def list_fields(self, request: Request) -> Response:
        """``GET /api_gateway/v1/badges/customField``: every field, oldest first (all pages:
        Capillary's list has no paging, and an org has at most 100 fields)."""
        fields: list[dict[str, Any]] = []
        token = ""
        metadata = metadata_of(request)
        try:
            while True:
                page = await self.gateway.call(
                    _SERVICE_CUSTOM_FIELD + "ListCustomFields",
                    cf.ListCustomFieldsRequest(page_size=500, page_token=token),
                    cf.ListCustomFieldsResponse,
                    metadata,
                )
                fields.extend(custom_field_json(f) for f in page.custom_fields)
                token = page.next_page_token
                if not token:
                    break
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(fields, []))

    async def get_field(self, request: Request) -> Response:
        """``GET /api_gateway/v1/badges/customField/{id}``."""
        message = cf.GetCustomFieldRequest(id=request.path_params["id"])
        try:
            field = await self._field(request, "GetCustomField", message)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(custom_field_json(field), []))

    async def update_field(self, request: Request) -> Response:
        """``PATCH`` (or ``PUT``) ``/api_gateway/v1/badges/customField/{id}``: the keys in the
        body are the fields changed; the result must pass every create rule (740...744)."""
        try:
            field, present = custom_field_of(await json_object(request))
            field.id = request.path_params["id"]
            message = cf.UpdateCustomFieldRequest(
                custom_field=field, update_mask=field_mask_pb2.FieldMask(paths=present)
            )
            updated = await self._field(request, "UpdateCustomField", message)
        except BadInput as error:
            return bad_input_response(error)
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(custom_field_json(updated), []))

    async def delete_field(self, request: Request) -> Response:
        """``DELETE /api_gateway/v1/badges/customField/{id}``: ``data`` null on success."""
        try:
            await self.gateway.call(
                _SERVICE_CUSTOM_FIELD + "DeleteCustomField",
                cf.DeleteCustomFieldRequest(id=request.path_params["id"]),
                empty_pb2.Empty,
                metadata_of(request),
            )
        except RpcFailure as failure:
            return error_response(failure)
        return _json(_envelope(None, []))


def routes(gateway: Gateway) -> list[BaseRoute]:
    """Capillary's routes, served through gateway."""
    api = Capillary(gateway)
    return [
        Route(ORG_META, api.get_org_meta, methods=["GET"]),
        Route(ORG_META, api.put_org_meta, methods=["PUT"]),
        Route(CUSTOM_FIELD, api.create_field, methods=["POST"]),
        Route(CUSTOM_FIELD, api.list_fields, methods=["GET"]),
        Route(CUSTOM_FIELD + "/{id}", api.get_field, methods=["GET"]),
        Route(CUSTOM_FIELD + "/{id}", api.update_field, methods=["PATCH", "PUT"]),
        Route(CUSTOM_FIELD + "/{id}", api.delete_field, methods=["DELETE"]),
    ]
