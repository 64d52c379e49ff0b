"""Conversions shared by the servicers: timestamps, structs, field masks and page tokens."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, TypeVar

from google.api import field_behavior_pb2
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from badge_service.api.badges.v1 import common_pb2
from badge_service.domain import limits
from badge_service.domain.custom_fields import DataType
from badge_service.domain.errors import InvalidArgument, LimitExceeded

M = TypeVar("M", bound=Message)

# Earliest and latest instants google.protobuf.Timestamp allows.
_TS_MIN = -62135596800
_TS_MAX = 253402300799
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime; None stays None (field left unset)."""
    if value is None:
        return None
    if value.utcoffset() is not None:
        # Plain arithmetic: Timestamp.FromDatetime goes through utctimetuple and
        # calendar.timegm, the largest part of building a Badge message.
        delta = value - _EPOCH
        seconds = delta.days * 86_400 + delta.seconds
        if _TS_MIN <= seconds <= _TS_MAX:
            return timestamp_pb2.Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)  # naive (taken as UTC), or out of range (raises as before)
    return out


def from_ts(msg: Message, name: str, where: str) -> dt.datetime | None:
    """The aware datetime of a Timestamp field, None when unset; INVALID_ARGUMENT when out of
    the Timestamp range."""
    if not msg.HasField(name):
        return None
    value: timestamp_pb2.Timestamp = getattr(msg, name)
    if not (_TS_MIN <= value.seconds <= _TS_MAX) or not (0 <= value.nanos < 1_000_000_000):
        raise InvalidArgument(where, "is not a valid timestamp")
    return value.ToDatetime(tzinfo=dt.UTC)


def iso(value: dt.datetime | None) -> str:
    """ISO-8601 text in UTC with a Z, to the second (Capillary's *ISO fields)."""
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def struct_to_dict(value: struct_pb2.Struct, where: str, limit: limits.Limit) -> dict[str, Any]:
    """A Struct as plain JSON values, checked: at most ``limit`` bytes serialized and
    STRUCT_DEPTH levels deep (LIMIT_EXCEEDED), every Value with its kind set (a Value without
    one is easy to send by mistake from other languages, and is not JSON null), and finite
    numbers only (JSON, and so the store, has no NaN or Infinity). Values are named by their
    path under ``where`` (``badge.badge_extra_data.a[2].b``)."""
    limits.check_bytes(value.ByteSize(), limit, where)
    return _struct(value, where, 1)


def _struct(value: struct_pb2.Struct, where: str, depth: int) -> dict[str, Any]:
    if depth > limits.STRUCT_DEPTH:
        raise _too_deep(where)
    return {key: _value(item, f"{where}.{key}", depth) for key, item in value.fields.items()}


def _value(value: struct_pb2.Value, where: str, depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise InvalidArgument(where, "must be a finite number (JSON has no NaN or Infinity)")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "null_value":
        return None
    if kind == "struct_value":
        return _struct(value.struct_value, where, depth + 1)
    if kind == "list_value":
        if depth + 1 > limits.STRUCT_DEPTH:
            raise _too_deep(where)
        return [
            _value(item, f"{where}[{i}]", depth + 1)
            for i, item in enumerate(value.list_value.values)
        ]
    raise InvalidArgument(
        where,
        "is a google.protobuf.Value with no kind set: set one of null_value, number_value, "
        "string_value, bool_value, struct_value or list_value",
        reason="VALUE_KIND_MISSING",
    )


def _too_deep(where: str) -> InvalidArgument:
    return LimitExceeded(
        where,
        f"nests objects and lists more than {limits.STRUCT_DEPTH} levels deep",
        limits.STRUCT_DEPTH.name,
        limits.STRUCT_DEPTH,
    )


_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR


def _varint_len(n: int) -> int:
    return 1 if n < 0x80 else (n.bit_length() + 6) // 7


def stored_size(msg: Message) -> int:
    """The size a resource's whole-object limit is checked against: its serialized size
    with every time field of its own counted at full width (nanos of 5 bytes). The service
    stamps times with a nanos field of 1 to 5 bytes that changes from call to call; counted
    at full width, the same content always measures the same, and the limit is exact."""
    size = msg.ByteSize()
    for field, value in msg.ListFields():
        if field.message_type is _TIMESTAMP and not field.is_repeated:
            nanos = value.nanos
            size += 6 if nanos == 0 else 5 - _varint_len(nanos)
    return size


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """Plain JSON values as a Struct."""
    out = struct_pb2.Struct()
    out.update(value)
    return out


_DATA_TYPES = {
    common_pb2.DATA_TYPE_INTEGER: DataType.INTEGER,
    common_pb2.DATA_TYPE_BOOLEAN: DataType.BOOLEAN,
    common_pb2.DATA_TYPE_DATE: DataType.DATE,
    common_pb2.DATA_TYPE_STRING: DataType.STRING,
}
_DATA_TYPES_BACK = {v: k for k, v in _DATA_TYPES.items()}


def data_type(value: int) -> DataType | None:
    """The domain data type of a proto enum number; None for unset or unknown numbers."""
    return _DATA_TYPES.get(value)  # type: ignore[call-overload,no-any-return]


def data_type_proto(value: DataType | None) -> common_pb2.DataType.ValueType:
    """The proto enum number of a domain data type."""
    return _DATA_TYPES_BACK[value] if value else common_pb2.DATA_TYPE_UNSPECIFIED


def merge_update(
    existing: M,
    patch: M,
    mask: FieldMask,
    *,
    prefix: str,
    mutable: frozenset[str],
) -> M:
    """Applies an AIP-134 update: the masked fields of ``patch`` onto ``existing``.

    An empty mask means every field set in ``patch``; ``*`` means every mutable field.
    Paths must name mutable fields (or fields inside them); others are INVALID_ARGUMENT, as are
    masks over the UPDATE_MASK_PATHS and UPDATE_MASK_PATH_CHARS limits.
    """
    limits.check_items(mask.paths, limits.UPDATE_MASK_PATHS, "update_mask", "paths")
    for path in mask.paths:
        limits.check_chars(path, limits.UPDATE_MASK_PATH_CHARS, "update_mask")
    if list(mask.paths) == ["*"]:
        paths = sorted(mutable)
    elif mask.paths:
        paths = list(mask.paths)
    else:
        paths = [f.name for f, _ in patch.ListFields() if f.name in mutable]
    for path in paths:
        if path.split(".", 1)[0] not in mutable:
            raise InvalidArgument("update_mask", f"{path!r} is not a field that can be updated")
    checked = FieldMask(paths=paths)
    if not checked.IsValidForDescriptor(existing.DESCRIPTOR):  # type: ignore[arg-type]
        raise InvalidArgument("update_mask", f"names a field {prefix} does not have: {paths}")
    for path in paths:
        if _output_only(existing.DESCRIPTOR, path):
            raise InvalidArgument("update_mask", f"{path!r} is output only")
    merged = type(existing)()
    merged.CopyFrom(existing)
    for path in paths:
        # MergeMessage leaves a field alone when the patch lacks it; an update that names a
        # field must clear it instead, so clear first.
        _clear_path(merged, path)
    checked.MergeMessage(patch, merged, replace_message_field=True, replace_repeated_field=True)
    return merged


def _output_only(descriptor: Any, path: str) -> bool:
    """Whether a field on ``path`` is annotated OUTPUT_ONLY (e.g. ``frequency.freq_period_id``
    inside the writable ``frequency``): the contract says so, so no servicer lists them."""
    for part in path.split("."):
        field = descriptor.fields_by_name[part]
        if (
            field_behavior_pb2.OUTPUT_ONLY
            in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        ):
            return True
        if field.message_type is None:
            return False
        descriptor = field.message_type
    return False


def _clear_path(msg: Message, path: str) -> None:
    head, _, rest = path.partition(".")
    if rest:
        if msg.HasField(head):
            _clear_path(getattr(msg, head), rest)
        return
    msg.ClearField(head)
