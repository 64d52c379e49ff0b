"""Every RPC over HTTP/JSON from its ``google.api.http`` annotation, as grpc-gateway serves it.

The routes are read from the generated descriptors, so a new RPC or binding is served as soon
as its code is generated. A binding is served here when it is the project's own: its path
starts with ``/v1/`` (every binding of AwardService, and the ``additional_bindings`` the vendor
services carry beside their vendor paths, which the vendor modules serve in their envelopes).

A request is built as grpc-gateway builds it: the body (``body: "*"`` the whole request, or
one field), then the query parameters (every field neither in the path nor the body; proto or
lowerCamelCase names, nested ones dotted as ``recipient.member_id``, repeated ones as repeated
keys, enums by name or number, a FieldMask as ``a,b``), then the path variables. The reply is
proto3 JSON (lowerCamelCase); a server-streaming RPC answers newline-delimited JSON,
``{"result": message}`` a line and ``{"error": status}`` last when it fails. Errors are
``google.rpc.Status`` JSON with the standard HTTP status of their code; a request that cannot
be decoded is INVALID_ARGUMENT naming the field, without a call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import json
import pkgutil
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from badge_service.http import status as codes
from badge_service.http.rest.errors import JSON, failure_response, status_body, status_response
from badge_service.http.rest.gateway import Gateway, RpcFailure, metadata_of

API_PACKAGE = "badge_service.api.badges.v1"
OWN_PREFIX = "/v1/"
NDJSON = "application/x-ndjson"
# A request body larger than this is refused before it is parsed (the gRPC server's own
# limits are smaller still; this keeps a huge body from being read into memory at all).
MAX_BODY = 8 * 1024 * 1024
VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_PATTERNS = ("get", "put", "post", "delete", "patch")
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
# strconv.ParseBool's spellings, which grpc-gateway accepts.
_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True),
    **dict.fromkeys(("0", "f", "F", "false", "FALSE", "False"), False),
}
# Well-known messages that a query parameter or path variable may set from one string.
_SCALAR_MESSAGES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.BoolValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
    "google.type.Date",
}


class BadInput(Exception):
    """A request that cannot be decoded into the RPC's request: 400 naming ``field``."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


@dataclass(frozen=True)
class Binding:
    """One HTTP rule of one RPC: verb, path template, body and the method it calls."""

    method: MethodDescriptor
    verb: str
    template: str
    body: str
    response_body: str

    @property
    def rpc(self) -> str:
        """The gRPC method path, ``/package.Service/Method``."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def variables(self) -> list[str]:
        """The request fields the path binds (dotted), in template order."""
        return [m.group(1) for m in VARIABLE.finditer(self.template)]

    @property
    def streaming(self) -> bool:
        """Whether the RPC streams its replies."""
        return bool(self.method.server_streaming)

    def starlette_path(self) -> tuple[str, dict[str, str]]:
        """The template in Starlette's syntax (variables renamed ``v0``, ``v1``...: Starlette
        takes no dots in a name; ``**`` as a ``:path`` variable) and the renaming."""
        names: dict[str, str] = {}

        def rename(m: re.Match[str]) -> str:
            alias = f"v{len(names)}"
            names[alias] = m.group(1)
            pattern = m.group(2) or "*"
            return f"{{{alias}:path}}" if "**" in pattern else f"{{{alias}}}"

        return VARIABLE.sub(rename, self.template), names


def services() -> list[ServiceDescriptor]:
    """Every service of every generated ``*_pb2`` module of the contract, by full name."""
    package = importlib.import_module(API_PACKAGE)
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{API_PACKAGE}.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return [found[name] for name in sorted(found)]


def _rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Binding | None:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = kind.upper(), getattr(rule, kind)
    return Binding(method, verb, path, rule.body, rule.response_body)


def bindings() -> list[Binding]:
    """The project's own bindings (path under ``/v1/``) of every RPC, in contract order."""
    out = []
    for service in services():
        for method in service.methods:
            for rule in _rules(method):
                found = _binding(method, rule)
                if found is not None and found.template.startswith(OWN_PREFIX):
                    out.append(found)
    return out


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message type."""
    return message_factory.GetMessageClass(descriptor)


# -- decoding ----------------------------------------------------------------------------------


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its lowerCamelCase JSON name."""
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    for f in descriptor.fields:
        if f.json_name == name:
            return f
    return None


def _resolve(message: Message, dotted: str) -> tuple[Message, FieldDescriptor, str]:
    """The message that holds the last field of ``dotted``, the field, and its proto path;
    BadInput when a part names no field or goes through a repeated or scalar one."""
    parts = dotted.split(".")
    target: Any = message
    path: list[str] = []
    for i, part in enumerate(parts):
        fd = _field(target.DESCRIPTOR, part)
        if fd is None:
            where = ".".join([*path, part])
            raise BadInput(where, f"no such field in {target.DESCRIPTOR.full_name}")
        path.append(fd.name)
        if i == len(parts) - 1:
            return target, fd, ".".join(path)
        if fd.message_type is None or _repeated(fd):
            raise BadInput(".".join(path), "is not a message field, so it has no fields")
        target = getattr(target, fd.name)
    raise AssertionError("unreachable")


def _repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def _enum_value(enum: EnumDescriptor, text: str, path: str) -> int:
    value = enum.values_by_name.get(text)
    if value is not None:
        return int(value.number)
    try:
        number = int(text)
    except ValueError:
        raise BadInput(path, f"{text!r} is not a value of {enum.full_name}") from None
    if number not in enum.values_by_number:
        raise BadInput(path, f"{number} is not a value of {enum.full_name}")
    return number


def _enum_of(fd: FieldDescriptor) -> EnumDescriptor:
    assert fd.enum_type is not None
    return fd.enum_type


def _message_of(fd: FieldDescriptor) -> Descriptor:
    assert fd.message_type is not None
    return fd.message_type


def _scalar(fd: FieldDescriptor, text: str, path: str) -> Any:
    """A scalar field's value from its string form in a URL."""
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return text
    if t == FieldDescriptor.TYPE_BOOL:
        if text not in _BOOLS:
            raise BadInput(path, f"{text!r} is not a boolean (true or false)")
        return _BOOLS[text]
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum_value(_enum_of(fd), text, path)
    if t in _INTS:
        low, high = _INTS[t]
        try:
            number = int(text.strip())
        except ValueError:
            raise BadInput(path, f"{text!r} is not an integer") from None
        if not low <= number <= high:
            raise BadInput(path, f"{number} is out of range [{low}, {high}]")
        return number
    if t in _FLOATS:
        try:
            return float(text)
        except ValueError:
            raise BadInput(path, f"{text!r} is not a number") from None
    if t == FieldDescriptor.TYPE_BYTES:
        padded = text + "=" * (-len(text) % 4)
        try:
            return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        except (binascii.Error, ValueError):
            raise BadInput(path, "is not base64") from None
    raise BadInput(path, "cannot be set from a URL")


def _camel_to_snake(path: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), path)


def _set_message(target: Message, fd: FieldDescriptor, text: str, path: str) -> None:
    """A well-known message field (FieldMask, Timestamp, a wrapper...) from one string."""
    full = _message_of(fd).full_name
    sub = getattr(target, fd.name)
    if full not in _SCALAR_MESSAGES:
        raise BadInput(path, f"a {full} cannot be set from a URL; send it in the body")
    if full == "google.protobuf.FieldMask":
        # As grpc-gateway: comma-separated paths; lowerCamelCase ones as proto3 JSON writes them.
        sub.paths.extend(_camel_to_snake(p.strip()) for p in text.split(",") if p.strip())
        return
    if full == "google.type.Date":
        m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
        if m is None:
            raise BadInput(path, f"{text!r} is not a date (YYYY-MM-DD)")
        sub.year, sub.month, sub.day = (int(g) for g in m.groups())
        return
    value: Any = text
    if full.endswith("Value") and full != "google.protobuf.StringValue":
        value_fd = _message_of(fd).fields_by_name["value"]
        parsed = _scalar(value_fd, text, path)
        value = base64.b64encode(parsed).decode() if isinstance(parsed, bytes) else parsed
    try:
        json_format.ParseDict(value, sub)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadInput(path, _short(str(exc))) from None


def assign(message: Message, dotted: str, values: list[str]) -> None:
    """Sets the field ``dotted`` of ``message`` from URL strings (a repeated field takes
    every value, another field exactly one)."""
    target, fd, path = _resolve(message, dotted)
    if _repeated(fd):
        if fd.message_type is not None:
            raise BadInput(path, "a repeated message cannot be set from a URL; use the body")
        container = getattr(target, fd.name)
        container.extend(_scalar(fd, v, path) for v in values)
        return
    if len(values) != 1:
        raise BadInput(path, "is not repeated but is given more than once")
    if fd.message_type is not None:
        target.ClearField(fd.name)
        _set_message(target, fd, values[0], path)
        return
    setattr(target, fd.name, _scalar(fd, values[0], path))


_AT = re.compile(r' at "([^"]*)"')
_NO_FIELD = re.compile(r'has no field named "([^"]*)"')


def _short(text: str) -> str:
    return text.splitlines()[0][:500] if text else "is malformed"


def _parse_error_field(text: str, prefix: str) -> str:
    """The proto path a json_format error names (``at "Request.badge.name"``), under
    ``prefix`` (the body field)."""
    found = _AT.search(text)
    parts: list[str] = []
    if found:
        parts = found.group(1).split(".")[1:]  # drop the message type name
    unknown = _NO_FIELD.search(text)
    if unknown:
        parts.append(unknown.group(1))
    if prefix and (not parts or parts[0] != prefix):
        parts.insert(0, prefix)
    return ".".join(parts) or "body"


def _parse_body(message: Message, binding: Binding, raw: bytes) -> None:
    """Fills ``message`` from the JSON body: the whole request (``*``) or its body field."""
    prefix = "" if binding.body == "*" else binding.body
    if not raw.strip():
        return
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(prefix or "body", f"is not valid JSON: {exc}") from None
    if binding.body == "*":
        if not isinstance(doc, dict):
            raise BadInput("body", "must be a JSON object")
    else:
        fd = message.DESCRIPTOR.fields_by_name[binding.body]
        doc = {fd.json_name: doc}
    try:
        json_format.ParseDict(doc, message)
    except json_format.ParseError as exc:
        text = str(exc)
        raise BadInput(_parse_error_field(text, prefix), _short(text)) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise BadInput(prefix or "body", _short(str(exc))) from None


def decode(binding: Binding, names: dict[str, str], request: Request, raw: bytes) -> Message:
    """The RPC's request message from the HTTP request, as grpc-gateway builds it: the body,
    the query parameters (every field neither bound by the path nor by the body), the path
    (``names`` maps the route's variable names to the fields they bind)."""
    message = message_class(binding.method.input_type)()
    if binding.body:
        _parse_body(message, binding, raw)
    variables = {names.get(k, k): v for k, v in request.path_params.items()}
    if binding.body != "*":
        bound = set(variables)
        if binding.body:
            bound.add(binding.body)
        grouped: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            grouped.setdefault(key, []).append(value)
        for key, values in grouped.items():
            proto_path = _proto_path(message, key)
            # As grpc-gateway: a query parameter for a field the path or body sets is ignored.
            if proto_path in bound or proto_path.split(".", 1)[0] == binding.body:
                continue
            assign(message, key, values)
    elif request.query_params:
        key = next(iter(request.query_params))
        raise BadInput(key, "the whole request is the body; no query parameter is taken")
    for dotted, value in variables.items():
        assign(message, dotted, [value])
    return message


def _proto_path(message: Message, dotted: str) -> str:
    with contextlib.suppress(BadInput):
        return _resolve(message, dotted)[2]
    return dotted


# -- answering ---------------------------------------------------------------------------------


def to_json(message: Message) -> dict[str, Any]:
    """A reply in proto3 JSON, lowerCamelCase names, as grpc-gateway writes it."""
    return json_format.MessageToDict(message)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def bad_input_response(error: BadInput) -> Response:
    """A request that could not be decoded: INVALID_ARGUMENT naming the field."""
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message=f"{error.field}: {error.description}" if error.field else error.description,
    )
    info = error_details_pb2.ErrorInfo(
        reason="INVALID_FIELD", domain=codes.DOMAIN, metadata={"field": error.field}
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=error.field, description=error.description
            )
        ]
    )
    status.details.add().Pack(info)
    status.details.add().Pack(bad)
    return status_response(grpc.StatusCode.INVALID_ARGUMENT, status.message, status)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadInput("body", f"is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadInput("body", f"is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Response]]


def handler(binding: Binding, gateway: Gateway) -> Handler:
    """The endpoint of one binding: decode, call through the gateway, answer JSON."""
    reply_type = message_class(binding.method.output_type)
    names = binding.starlette_path()[1]

    async def unary(request: Request) -> Response:
        try:
            raw = await _body(request) if binding.body else b""
            message = decode(binding, names, request, raw)
        except BadInput as exc:
            return bad_input_response(exc)
        try:
            reply = await gateway.call(binding.rpc, message, reply_type, metadata_of(request))
        except RpcFailure as failure:
            return failure_response(failure)
        return Response(_dumps(to_json(reply)), media_type=JSON)

    async def streaming(request: Request) -> Response:
        try:
            message = decode(binding, names, request, b"")
        except BadInput as exc:
            return bad_input_response(exc)
        return await _stream(gateway, binding, message, reply_type, request)

    return streaming if binding.streaming else unary


async def _stream(
    gateway: Gateway,
    binding: Binding,
    message: Message,
    reply_type: type[Message],
    request: Request,
) -> Response:
    """A server-streaming RPC as newline-delimited JSON. A failure before the server accepts
    the call (a bad key, a bad argument) answers its own HTTP status, as grpc-gateway does
    when it has written no header yet; once the stream is open, the status is 200 and a
    failure is the last line, ``{"error": status}``."""
    opened = asyncio.Event()
    replies: Any = gateway.stream(
        binding.rpc, message, reply_type, metadata_of(request), on_open=opened.set
    )
    first: asyncio.Task[Message] = asyncio.ensure_future(anext(replies))
    waiter = asyncio.ensure_future(opened.wait())
    try:
        await asyncio.wait({first, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if first.done() and first.exception() is not None:
        error = first.exception()
        await replies.aclose()
        if isinstance(error, RpcFailure):
            headers = {"Cache-Control": "no-store"}
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                # As every other 401 of the face (errors.status_response) asks for a key.
                headers["WWW-Authenticate"] = 'Bearer realm="badge-service"'
            return Response(
                _error_line(error), codes.http_status(error.code.name), headers, media_type=NDJSON
            )
        if isinstance(error, StopAsyncIteration):
            return Response(b"", media_type=NDJSON)
        raise error  # type: ignore[misc]

    async def lines() -> AsyncIterator[bytes]:
        try:
            try:
                reply = await first
            except StopAsyncIteration:
                return
            yield _dumps({"result": to_json(reply)}) + b"\n"
            async for reply in replies:
                yield _dumps({"result": to_json(reply)}) + b"\n"
        except RpcFailure as failure:
            yield _error_line(failure)
        finally:
            first.cancel()
            await replies.aclose()

    return StreamingResponse(
        lines(), media_type=NDJSON, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


def _error_line(failure: RpcFailure) -> bytes:
    return b'{"error":' + status_body(failure.status) + b"}\n"


def routes(gateway: Gateway) -> list[BaseRoute]:
    """The transcoded routes of every RPC whose route is not a vendor's."""
    out: list[BaseRoute] = []
    for binding in bindings():
        path, _ = binding.starlette_path()
        out.append(Route(path, handler(binding, gateway), methods=[binding.verb]))
    return out
