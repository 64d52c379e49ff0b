"""Proto messages <-> a vendor's JSON, for the vendor routes that need their own spellings:
field names (proto or lowerCamelCase), enum spellings (``active``, ``STRING_CHOICE``),
timestamps with milliseconds (``2014-04-01T14:41:00.000Z``, as Credly's and Badgr's samples
write them), ``null`` for unset fields, and the update mask a vendor's partial body means.

Only spellings are converted here; whether a value is allowed is the RPC's to say. (Credly's
and Badgr's routes use it; ``vendor_json`` decodes the loose scalars Capillary's and
CrowdTwist's clients send, field by field.)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from badge_service.http.rest.gateway import RpcFailure

EnumOut = Callable[[EnumDescriptor, str], Any]
# Fields a vendor body may carry that the service computes: never named by an update mask.
_NOT_WRITABLE = (field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IMMUTABLE)


class BadBody(Exception):
    """A request body (or query value) that is not what the route takes: not JSON, not an
    object, or a value of the wrong JSON type for its field."""


def timestamp_text(ts: timestamp_pb2.Timestamp) -> str:
    """``2014-04-01T14:41:00.000Z``: UTC with milliseconds, as the vendors' samples."""
    at = dt.datetime.fromtimestamp(ts.seconds, dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.nanos // 1_000_000:03d}Z"


def now_text() -> str:
    """The current time as ``timestamp_text`` writes it (Badgr's ``timestamp``)."""
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return timestamp_text(ts)


def enum_suffix(enum: EnumDescriptor, name: str) -> str | None:
    """The part of an enum value's name after its type's prefix (``BADGE_TEMPLATE_STATE_ACTIVE``
    gives ``ACTIVE``); None for the unspecified value."""
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    suffix = name.removeprefix(prefix)
    return None if suffix == "UNSPECIFIED" else suffix


def to_json(msg: Message, *, camel: bool, enum_out: EnumOut) -> dict[str, Any]:
    """Every field of ``msg`` (unset message and optional fields as ``None``; unset oneof
    members left out), named by proto name or lowerCamelCase, enums through ``enum_out``."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        key = field.json_name if camel else field.name
        value = getattr(msg, field.name)
        if field.is_repeated:
            out[key] = [_value(field, v, camel, enum_out) for v in value]
        elif field.has_presence and not msg.HasField(field.name):
            if not _in_real_oneof(field):
                out[key] = None
        else:
            out[key] = _value(field, value, camel, enum_out)
    return out


def _in_real_oneof(field: Any) -> bool:
    """Whether ``field`` is a member of a declared oneof (not the synthetic one a proto3
    ``optional`` field sits alone in, named ``_`` + its name)."""
    oneof = field.containing_oneof
    return oneof is not None and not (len(oneof.fields) == 1 and oneof.name == f"_{field.name}")


def _value(field: Any, value: Any, camel: bool, enum_out: EnumOut) -> Any:
    enum = field.enum_type
    if enum is not None:
        return enum_out(enum, enum.values_by_number[value].name)
    if field.message_type is None:
        return value
    if isinstance(value, timestamp_pb2.Timestamp):
        return timestamp_text(value)
    if isinstance(value, struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue):
        return json_format.MessageToDict(value)
    return to_json(value, camel=camel, enum_out=enum_out)


def field_named(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    """The field a vendor key names: its proto name or its lowerCamelCase JSON name."""
    field = descriptor.fields_by_name.get(key)
    if field is None:
        field = descriptor.fields_by_camelcase_name.get(key)
    return field


def proto_doc(doc: Mapping[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """A vendor's JSON object as proto3 JSON for ``descriptor``: keys it does not know are
    dropped (a client may send back what it read), enum values in the vendor's spelling
    (``active``, ``days``, ``STRING_CHOICE``, any case) become the enum's value names."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        field = field_named(descriptor, key)
        if field is None:
            continue
        out[field.name] = _proto_value(field, value)
    return out


def _proto_value(field: FieldDescriptor, value: Any) -> Any:
    if value is None:
        return None
    if field.is_repeated:
        if not isinstance(value, list):
            return value  # ParseDict says what is wrong with it
        return [_proto_item(field, v) for v in value]
    return _proto_item(field, value)


def _proto_item(field: FieldDescriptor, value: Any) -> Any:
    enum = field.enum_type
    if enum is not None and isinstance(value, str):
        if value in enum.values_by_name:
            return value
        prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
        name = prefix + value.strip().upper().replace(" ", "_").replace("-", "_")
        if name not in enum.values_by_name:
            # ParseDict would drop it silently (it ignores what it does not know).
            raise BadBody(f"{field.name} cannot be {value!r}")
        return name
    if (
        field.message_type is not None
        and isinstance(value, dict)
        and field.message_type.full_name.startswith("badges.")
    ):
        return proto_doc(value, field.message_type)
    return value


def parse_into(doc: Mapping[str, Any], msg: Message) -> Message:
    """``doc`` (proto3 JSON, as ``proto_doc`` makes it) merged into ``msg``; BadBody when a
    value is not of its field's JSON type."""
    try:
        json_format.ParseDict(dict(doc), msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadBody(str(exc)) from None
    return msg


def writable_paths(descriptor: Descriptor, keys: Iterable[str]) -> list[str]:
    """The update mask a vendor's partial body means: the writable top-level fields it names
    (by either spelling), in field order. Output-only and immutable fields a client echoes
    back are left out, so sending back a whole object it read updates what can change."""
    named = {f.name for k in keys if (f := field_named(descriptor, k)) is not None}
    paths = []
    for field in descriptor.fields:
        behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field.name in named and not any(b in behaviors for b in _NOT_WRITABLE):
            paths.append(field.name)
    return paths


async def json_object(request: Request, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request's JSON object body; ``empty`` (when given) for no body at all; BadBody
    otherwise."""
    raw = await request.body()
    if not raw.strip() and empty is not None:
        return empty
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadBody("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadBody("the body must be a JSON object")
    return doc


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def query_int(request: Request, *names: str) -> int:
    """The integer query parameter of the first of ``names`` given; 0 when none is; BadBody
    when it is not an integer."""
    for name in names:
        raw = request.query_params.get(name)
        if raw is not None and raw != "":
            try:
                return int(raw)
            except ValueError:
                raise BadBody(f"{name} must be an integer") from None
    return 0


def query_bool(request: Request, name: str) -> bool | None:
    """A boolean query parameter (``true``/``false``, ``1``/``0``); None when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadBody(f"{name} must be true or false")


Handler = Callable[[Request], Awaitable[Response]]


def guarded(
    handler: Handler,
    failed: Callable[[RpcFailure], Response],
    bad_body: Callable[[BadBody], Response],
) -> Handler:
    """``handler``, its failures answered in a vendor's own error body: a failed RPC by
    ``failed``, a body the vendor would refuse by ``bad_body``."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except RpcFailure as failure:
            return failed(failure)
        except BadBody as bad:
            return bad_body(bad)

    return run
