"""The OpenAPI 3.1 document of the transcoded routes, built from the same annotations and
descriptors the transcoder serves (``transcode.bindings``), so it cannot disagree with them.

Each project route is an operation (``Service_Method``, tagged by service): its path and query
parameters (every request field neither in the path nor the body, nested ones dotted), its
request body, its reply as a schema of the message in proto3 JSON (lowerCamelCase names;
64-bit integers as strings, enums by name, Timestamp a date-time string, Duration and
FieldMask strings, Struct/Value any JSON), errors as ``google.rpc.Status``. A streaming RPC
answers ``application/x-ndjson``, a line ``{"result": message}`` each, ``{"error": status}``
last. Served at ``GET /openapi.json`` and written to docs/openapi.json by ``make docs``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from badge_service.http.rest.transcode import NDJSON, VARIABLE, Binding, bindings

PATH = "/openapi.json"
STATUS = "google.rpc.Status"
# How deep query parameters go into nested messages (recipient.member_id is two).
MAX_QUERY_DEPTH = 3
_INT32 = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_UNSIGNED64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
_WRAPPERS: dict[str, dict[str, Any]] = {
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
}
# The well-known types whose proto3 JSON is not an object of their fields.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths (lowerCamelCase or snake_case).",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Int64Value": {"type": ["string", "integer"], "pattern": "^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": ["string", "integer"], "pattern": "^[0-9]+$"},
    **_WRAPPERS,
}
_STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC status code, a message and typed details "
    "(google.rpc.ErrorInfo, google.rpc.BadRequest).",
    "properties": {
        "code": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 16},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
    },
    "required": ["code", "message"],
    "additionalProperties": False,
}
_ERROR_STATUSES = {
    "400": "Bad input (INVALID_ARGUMENT, with a BadRequest naming the field) or a state that "
    "forbids the call (FAILED_PRECONDITION).",
    "401": "No key, or a key that is unknown, revoked or expired (UNAUTHENTICATED).",
    "403": "A reader key called a method that writes (PERMISSION_DENIED).",
    "404": "No such resource in the caller's organisation (NOT_FOUND).",
    "409": "A unique key is taken (ALREADY_EXISTS) or a concurrent change (ABORTED).",
    "429": "A limit was reached (RESOURCE_EXHAUSTED).",
    "503": "The store did not answer (UNAVAILABLE); safe to retry.",
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "base64(ORG_ID:KEY), as Capillary sends it.",
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Builder:
    """Collects the component schemas the operations name."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {STATUS: _STATUS_SCHEMA}

    def message(self, descriptor: Descriptor, exclude: frozenset[str] = frozenset()) -> Any:
        """A reference to the message's schema (inline, without ``exclude``, when given)."""
        full = descriptor.full_name
        if full in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full])
        if exclude:
            return self._object(descriptor, exclude)
        if full not in self.schemas:
            self.schemas[full] = {}  # placeholder: a message may name itself
            self.schemas[full] = self._object(descriptor, exclude)
        return _ref(full)

    def _object(self, descriptor: Descriptor, exclude: frozenset[str]) -> dict[str, Any]:
        properties = {
            f.json_name: self.field(f) for f in descriptor.fields if f.name not in exclude
        }
        return {
            "type": "object",
            "title": descriptor.name,
            "properties": properties,
            "additionalProperties": False,
        }

    def field(self, fd: FieldDescriptor) -> Any:
        """The schema of a field's proto3 JSON value."""
        message = fd.message_type
        if message is not None and message.GetOptions().map_entry:
            value = message.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        one = self.single(fd)
        if fd.is_repeated:
            return {"type": "array", "items": one}
        return one

    def single(self, fd: FieldDescriptor) -> Any:
        """The schema of one value of the field (an item, for a repeated one)."""
        schema = self._single(fd)
        behaviors = fd.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.OUTPUT_ONLY in behaviors and "$ref" not in schema:
            schema = {**schema, "readOnly": True}
        return schema

    def _single(self, fd: FieldDescriptor) -> Any:
        t = fd.type
        if fd.message_type is not None:
            return self.message(fd.message_type)
        if fd.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
        if t == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if t == FieldDescriptor.TYPE_STRING:
            return {"type": "string"}
        if t == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if t in _INT32:
            low, high = _INT32[t]
            return {"type": "integer", "format": "int32", "minimum": low, "maximum": high}
        if t in _INT64:
            # proto3 JSON writes 64-bit integers as decimal strings and reads either form.
            pattern = "^[0-9]+$" if t in _UNSIGNED64 else "^-?[0-9]+$"
            return {"type": ["string", "integer"], "format": "int64", "pattern": pattern}
        return {"type": "number"}


def _path_field(descriptor: Descriptor, dotted: str) -> FieldDescriptor:
    fd: FieldDescriptor | None = None
    for part in dotted.split("."):
        fd = descriptor.fields_by_name[part]
        if fd.message_type is not None:
            descriptor = fd.message_type
    assert fd is not None
    return fd


def _query_parameters(
    builder: _Builder, descriptor: Descriptor, skip: set[str], prefix: str = "", depth: int = 0
) -> list[dict[str, Any]]:
    """Every field a query parameter may set, flattened into dotted lowerCamelCase names."""
    out: list[dict[str, Any]] = []
    for fd in descriptor.fields:
        proto_path = f"{prefix}{fd.name}"
        if proto_path in skip:
            continue
        name = ".".join([*(p for p in prefix.split(".") if p), fd.json_name])
        message = fd.message_type
        if message is not None and message.full_name not in _WELL_KNOWN:
            if fd.is_repeated or message.GetOptions().map_entry or depth >= MAX_QUERY_DEPTH:
                continue  # no URL form; only the body can carry it
            out += _query_parameters(builder, message, skip, f"{proto_path}.", depth + 1)
            continue
        if message is not None and fd.is_repeated:
            continue
        schema = builder.field(fd)
        if message is not None and message.full_name == "google.protobuf.Struct":
            continue
        param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
        if fd.is_repeated:
            param.update(style="form", explode=True)
        out.append(param)
    return out


def _error_responses() -> dict[str, Any]:
    body = {"application/json": {"schema": _ref(STATUS)}}
    out: dict[str, Any] = {
        code: {"description": text, "content": body} for code, text in _ERROR_STATUSES.items()
    }
    out["default"] = {"description": "Any other failure, as google.rpc.Status.", "content": body}
    return out


def _shape(template: str) -> str:
    """A template with its variables unnamed: templates of one shape are one OpenAPI path."""
    return VARIABLE.sub("{}", template)


def _path_names(found: list[Binding]) -> dict[str, list[str]]:
    """The variable names of each path shape. OpenAPI takes one name per position for every
    operation of a path (GetBadge's ``{id}`` and UpdateBadge's ``{badge.id}`` are one path),
    and tools take no dot in a name: the first undotted name of the position, else the
    dotted one with underscores."""
    out: dict[str, list[str]] = {}
    for shape in dict.fromkeys(_shape(b.template) for b in found):
        group = [b.variables for b in found if _shape(b.template) == shape]
        names = []
        for position in zip(*group, strict=True):
            plain = [n for n in position if "." not in n]
            names.append(plain[0] if plain else position[0].replace(".", "_"))
        out[shape] = names
    return out


def openapi_path(binding: Binding, names: list[str]) -> str:
    """The binding's path in OpenAPI's template, its variables named ``names``."""
    it = iter(names)
    return VARIABLE.sub(lambda m: "{" + next(it) + "}", binding.template)


def _operation(
    builder: _Builder, binding: Binding, operation_id: str, names: list[str]
) -> dict[str, Any]:
    method = binding.method
    request = method.input_type
    variables = binding.variables
    parameters: list[dict[str, Any]] = []
    for dotted, name in zip(variables, names, strict=True):
        fd = _path_field(request, dotted)
        param = {"name": name, "in": "path", "required": True, "schema": builder.single(fd)}
        if name != dotted:
            param["description"] = f"The request field `{dotted}`."
        parameters.append(param)
    if binding.body != "*":
        skip = set(variables)
        if binding.body:
            skip.add(binding.body)
        # A path member of a oneof rules the others out (Badgr's lookup keys).
        chosen = {
            fd.containing_oneof.full_name
            for dotted in variables
            if "." not in dotted
            and (fd := request.fields_by_name[dotted]).containing_oneof is not None
        }
        skip |= {
            f.name
            for f in request.fields
            if f.containing_oneof is not None and f.containing_oneof.full_name in chosen
        }
        parameters += _query_parameters(builder, request, skip)
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [method.containing_service.name],
        "summary": f"{method.containing_service.name}.{method.name}",
        "description": f"The RPC `{binding.rpc}`, transcoded.",
    }
    if parameters:
        op["parameters"] = parameters
    if binding.body:
        if binding.body == "*":
            top = frozenset(d.split(".", 1)[0] for d in variables)
            schema = builder.message(request, exclude=top)
        else:
            schema = builder.field(request.fields_by_name[binding.body])
        op["requestBody"] = {"content": {"application/json": {"schema": schema}}}
    reply = builder.message(method.output_type)
    if binding.streaming:
        line = {
            "type": "object",
            "description": "One line of the stream: a reply, or the status it ended with.",
            "properties": {"result": reply, "error": _ref(STATUS)},
            "additionalProperties": False,
        }
        ok = {
            "description": "Newline-delimited JSON, a line a message, until the call ends.",
            "content": {NDJSON: {"schema": line}},
        }
        errors = {
            "default": {
                "description": "Refused before it started: a line {error: google.rpc.Status}.",
                "content": {NDJSON: {"schema": line}},
            }
        }
        op["responses"] = {"200": ok, **errors}
    else:
        ok = {
            "description": method.output_type.name,
            "content": {"application/json": {"schema": reply}},
        }
        op["responses"] = {"200": ok, **_error_responses()}
    return op


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every transcoded route."""
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    found = bindings()
    path_names = _path_names(found)
    for binding in found:
        names = path_names[_shape(binding.template)]
        service, name = binding.method.containing_service.name, binding.method.name
        operation_id = f"{service}_{name}"
        n = 1
        while operation_id in seen:
            n += 1
            operation_id = f"{service}_{name}{n}"
        seen.add(operation_id)
        item = paths.setdefault(openapi_path(binding, names), {})
        item[binding.verb.lower()] = _operation(builder, binding, operation_id, names)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "badge-service",
            "version": "v1",
            "description": "The project's own REST routes: every RPC of badges.v1 transcoded "
            "from its google.api.http annotation (grpc-gateway style). Replies are proto3 JSON; "
            "errors are google.rpc.Status. The vendors' own paths (Capillary, CrowdTwist, "
            "Credly, Badgr) are served beside these in their envelopes and are not described "
            "here; docs/rest-mapping.md maps them.",
        },
        "security": [{name: []} for name in SECURITY_SCHEMES],
        "tags": sorted(
            ({"name": t} for t in {b.method.containing_service.name for b in found}),
            key=lambda t: t["name"],
        ),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def render() -> str:
    """The document as the committed docs/openapi.json holds it (stable, indented)."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


@functools.cache
def _body() -> bytes:
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def serve(request: Request) -> Response:
    """``GET /openapi.json``: the document (public: it describes, it holds nothing secret)."""
    return Response(
        _body(),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


def routes() -> list[BaseRoute]:
    """The route of the document."""
    return [Route(PATH, serve, methods=["GET"])]
