"""Hypothesis strategies built from protobuf descriptors.

``messages(descriptor)`` draws arbitrary instances of any message: every field may be set,
with values chosen to sit on the edges a server gets wrong (integer limits, NaN and
infinities, empty, huge and NUL-bearing strings, unknown enum numbers, timestamps out of
range, deeply nested Structs, field masks naming real and made-up fields). ``mutations(base)``
draws "mostly valid" requests: a valid request with one to three of its fields (at any depth)
replaced, cleared, duplicated or extended, so the calls get past the first check and reach
the rules and the store behind it. ``garbage(valid)`` draws byte strings that are mostly not
protobuf at all, for the transport-level checks.
"""

from __future__ import annotations

import math
from typing import Any, cast

from google.protobuf import message_factory, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 3
MAX_ITEMS = 5
LONG = 10_000

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1
INT32_EDGES = [0, -1, 1, INT32_MAX, INT32_MIN]
INT64_EDGES = [*INT32_EDGES, INT64_MAX, INT64_MIN, 2**53, 2**53 + 1, INT32_MAX + 1]
UINT32_EDGES = [0, 1, INT32_MAX, UINT32_MAX]
UINT64_EDGES = [0, 1, INT64_MAX, INT64_MAX + 1, UINT64_MAX]

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TS_MIN, TS_MAX = -62135596800, 253402300799
SECONDS_EDGES = [0, -1, TS_MIN, TS_MIN - 1, TS_MAX, TS_MAX + 1, INT64_MAX, INT64_MIN]
NANOS_EDGES = [0, -1, 999_999_999, 1_000_000_000, INT32_MAX, INT32_MIN]

TRICKY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n",
    "x" * 255,
    "x" * 256,
    "é" * 256,
    "\U0001f600" * 300,
    "\u202e\u0301",
    "null",
    "NaN",
    "-1",
    "9" * 5000,
    "1e308",
    "true",
    "2024-02-30",
    "2024-02-29",
    "http://",
    "*",
    "../..",
    "'; DROP TABLE badges; --",
]

_MESSAGE_CLASSES: dict[str, type[Message]] = {}


def message_class(descriptor: Descriptor) -> type[Message]:
    """The Python class of a message descriptor."""
    cls = _MESSAGE_CLASSES.get(descriptor.full_name)
    if cls is None:
        cls = message_factory.GetMessageClass(descriptor)
        _MESSAGE_CLASSES[descriptor.full_name] = cls
    return cls


def descriptor_of(msg: Message) -> Descriptor:
    """A message's descriptor, typed as the pure-Python API (the upb one has the same shape)."""
    return cast(Descriptor, msg.DESCRIPTOR)


def texts() -> st.SearchStrategy[str]:
    """Strings: the tricky list above, arbitrary Unicode, and 10,000-character strings
    (built by repetition, since Hypothesis cannot draw that many characters one by one)."""
    return st.one_of(
        st.sampled_from(TRICKY_TEXT),
        st.text(max_size=30),
        st.text(min_size=1, max_size=8).map(lambda s: (s * (LONG // len(s) + 1))[:LONG]),
    )


def binaries() -> st.SearchStrategy[bytes]:
    """Bytes: empty, NULs, invalid UTF-8, arbitrary and 10,000 long."""
    return st.one_of(
        st.sampled_from([b"", b"\x00", b"\xff\xfe", b"\x00" * 64]),
        st.binary(max_size=30),
        st.binary(min_size=1, max_size=8).map(lambda b: (b * (LONG // len(b) + 1))[:LONG]),
    )


def _ints(low: int, high: int, edges: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(-3, 3)).filter(
        lambda v: low <= v <= high
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON-like values as a Struct can hold them: numbers include NaN, infinities, 1e308
    and integers past 2**53; containers nest."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.sampled_from([1e308, -1e308, 2.0**53 + 2, 5e-324, -0.0, 0.5]),
        st.integers(-(2**53), 2**53).map(float),
        texts(),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10) | st.sampled_from(["", "\x00", "a.b"]), children),
        ),
        max_leaves=max_leaves,
    )


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1.0}
    for _ in range(depth):
        value = {"a": value}
    return value


def structs() -> st.SearchStrategy[struct_pb2.Struct]:
    """Structs: arbitrary JSON objects, and objects nested up to 28 deep (each level is two
    or three messages; Python's protobuf refuses to copy one nested past its limit of 100
    messages, so deeper ones can only be sent as raw bytes)."""

    def build(value: dict[str, Any]) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        out.update(value)
        return out

    objects = st.dictionaries(
        st.text(max_size=10) | st.sampled_from(["", "\x00", "a.b"]), json_values(), max_size=5
    )
    return st.one_of(objects, st.integers(1, 28).map(_nested)).map(build)


def values() -> st.SearchStrategy[struct_pb2.Value]:
    """google.protobuf.Value: any JSON value."""

    def build(value: Any) -> struct_pb2.Value:
        out = struct_pb2.Value()
        struct = struct_pb2.Struct()
        struct.update({"v": value})
        out.CopyFrom(struct.fields["v"])
        return out

    return json_values().map(build)


def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Timestamps in and out of the documented range, with nanos in and out of [0, 1e9)."""
    seconds = st.one_of(
        st.sampled_from(SECONDS_EDGES),
        st.integers(TS_MIN, TS_MAX),
        st.integers(INT64_MIN, INT64_MAX),
    )
    nanos = st.one_of(st.sampled_from(NANOS_EDGES), st.integers(0, 999_999_999))
    return st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)


def mask_paths(container: Descriptor | None) -> list[str]:
    """Field mask paths worth trying in ``container``: every field of every message-typed
    sibling of the mask (and one level inside them), ``*``, and malformed paths."""
    paths = ["*", "", "id", "no_such_field", "a..b", ".", "name.", "*.*"]
    if container is None:
        return paths
    for field in container.fields:
        target = field.message_type
        if target is None or target.full_name.startswith("google.protobuf."):
            continue
        for inner in target.fields:
            paths.append(inner.name)
            nested = inner.message_type
            if nested is not None and not inner.is_repeated:
                paths.extend(f"{inner.name}.{leaf.name}" for leaf in nested.fields)
            paths.append(f"{inner.name}.{inner.name}")
    return paths


def field_masks(container: Descriptor | None) -> st.SearchStrategy[FieldMask]:
    """Masks of 0 to 3 paths: real field names of the request's resource, and junk."""
    path = st.one_of(st.sampled_from(mask_paths(container)), texts())
    return st.lists(path, max_size=3).map(lambda paths: FieldMask(paths=paths))


def _well_known(
    descriptor: Descriptor, container: Descriptor | None
) -> st.SearchStrategy[Any] | None:
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        return timestamps()
    if name == "google.protobuf.Struct":
        return structs()
    if name == "google.protobuf.Value":
        return values()
    if name == "google.protobuf.FieldMask":
        return field_masks(container)
    return None


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values for one non-message field of any protobuf scalar type."""
    t = FieldDescriptor
    kind = field.type
    if kind in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return _ints(INT32_MIN, INT32_MAX, INT32_EDGES)
    if kind in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return _ints(INT64_MIN, INT64_MAX, INT64_EDGES)
    if kind in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return _ints(0, UINT32_MAX, UINT32_EDGES)
    if kind in (t.TYPE_UINT64, t.TYPE_FIXED64):
        return _ints(0, UINT64_MAX, UINT64_EDGES)
    if kind == t.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == t.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == t.TYPE_BOOL:
        return st.booleans()
    if kind == t.TYPE_STRING:
        return texts()
    if kind == t.TYPE_BYTES:
        return binaries()
    if kind == t.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        numbers = [v.number for v in enum.values]
        known = st.sampled_from(numbers)
        if enum.is_closed:  # proto2 enums reject unknown numbers client-side
            return known
        unknown = [max(numbers) + 1, -1, INT32_MAX, INT32_MIN]
        return st.one_of(known, st.sampled_from(unknown), st.integers(INT32_MIN, INT32_MAX))
    raise TypeError(f"no strategy for {field.full_name} (type {kind})")


def single_values(
    field: FieldDescriptor, container: Descriptor | None, depth: int
) -> st.SearchStrategy[Any]:
    """Values for one element of ``field`` (a message for message fields)."""
    target = field.message_type
    if target is None:
        return scalars(field)
    special = _well_known(target, container)
    if special is not None:
        return special
    return messages(target, depth + 1)


def _is_map(field: FieldDescriptor) -> bool:
    target = field.message_type
    return target is not None and target.GetOptions().map_entry


def field_values(
    field: FieldDescriptor, container: Descriptor | None, depth: int
) -> st.SearchStrategy[Any]:
    """Values for a whole field: one value, a list of 0 to 5, or a dict for a map."""
    if _is_map(field):
        entry = field.message_type
        assert entry is not None
        keys = scalars(entry.fields_by_name["key"])
        vals = single_values(entry.fields_by_name["value"], entry, depth)
        return st.dictionaries(keys, vals, max_size=MAX_ITEMS)
    one = single_values(field, container, depth)
    if field.is_repeated:
        return st.lists(one, max_size=MAX_ITEMS)
    return one


def set_field(msg: Message, field: FieldDescriptor, value: Any) -> None:
    """Sets (replacing) ``field`` of ``msg`` to a value drawn by ``field_values``."""
    msg.ClearField(field.name)
    current = getattr(msg, field.name)
    if _is_map(field):
        entry = field.message_type
        assert entry is not None
        if entry.fields_by_name["value"].message_type is None:
            current.update(value)
        else:
            for key, item in value.items():
                current[key].CopyFrom(item)
    elif field.is_repeated:
        current.extend(value)
    elif field.message_type is not None:
        current.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def _assemble(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        set_field(msg, descriptor_of(msg).fields_by_name[name], value)
    return msg


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Arbitrary instances of ``descriptor``: any subset of its fields set, message fields
    recursively to depth 3 (deeper ones are left unset)."""
    special = _well_known(descriptor, None)
    if special is not None:
        return special
    cls = message_class(descriptor)
    optional = {
        f.name: field_values(f, descriptor, depth)
        for f in descriptor.fields
        if f.message_type is None
        or depth < MAX_DEPTH
        or _well_known(f.message_type, descriptor) is not None
    }
    return st.fixed_dictionaries({}, optional=optional).map(lambda v: _assemble(cls, v))


def _mutate_struct(draw: st.DrawFn, struct: struct_pb2.Struct) -> None:
    keys = sorted(struct.fields)
    key = draw(st.sampled_from(keys) | st.text(max_size=10)) if keys else draw(st.text())
    if key in struct.fields and draw(st.integers(0, 3)) == 0:
        del struct.fields[key]
    else:
        struct.update({key: draw(json_values(max_leaves=4))})


Target = tuple[Message, FieldDescriptor, int]  # a message, one of its fields, its depth


def _targets(msg: Message, depth: int, present: list[Target], absent: list[Target]) -> None:
    """Every field of every message reachable through set fields: set ones in ``present``
    (message fields both as a whole and through their own fields), unset ones in ``absent``."""
    set_fields = {f.name for f, _ in msg.ListFields()}
    for field in descriptor_of(msg).fields:
        if field.name not in set_fields:
            absent.append((msg, field, depth))
            continue
        present.append((msg, field, depth))
        target = field.message_type
        if target is None or _is_map(field) or _well_known(target, None) is not None:
            continue
        if depth + 1 >= MAX_DEPTH:
            continue
        items = getattr(msg, field.name) if field.is_repeated else [getattr(msg, field.name)]
        for item in items:
            _targets(item, depth + 1, present, absent)


def _mutate(draw: st.DrawFn, root: Message) -> None:
    present: list[Target] = []
    absent: list[Target] = []
    _targets(root, 0, present, absent)
    # Mostly a field the valid request sets (each equally likely, however deep), where the
    # rules are; sometimes one it leaves unset.
    pool = present if present and (not absent or draw(st.integers(0, 3)) > 0) else absent
    if not pool:
        return
    msg, field, depth = draw(st.sampled_from(pool))
    target = field.message_type
    is_struct = target is not None and target.full_name == "google.protobuf.Struct"
    if is_struct and not field.is_repeated and msg.HasField(field.name) and draw(st.booleans()):
        _mutate_struct(draw, getattr(msg, field.name))
        return
    action = draw(st.sampled_from(["replace", "replace", "replace", "clear", "grow"]))
    if action == "clear":
        msg.ClearField(field.name)
    elif action == "grow" and field.is_repeated and not _is_map(field):
        items = getattr(msg, field.name)
        if len(items) and draw(st.booleans()):
            items.append(items[draw(st.integers(0, len(items) - 1))])  # a duplicate
        else:
            items.append(draw(single_values(field, descriptor_of(msg), depth)))
    else:
        set_field(msg, field, draw(field_values(field, descriptor_of(msg), depth)))


def mutations(base: Message, max_changes: int = 2) -> st.SearchStrategy[Message]:
    """``base`` with 1 to ``max_changes`` fields (at any depth) replaced by arbitrary values,
    cleared, duplicated or extended."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = type(base)()
        msg.CopyFrom(base)
        for _ in range(draw(st.integers(1, max_changes))):
            _mutate(draw, msg)
        return msg

    return build()


def garbage(valid: bytes = b"") -> st.SearchStrategy[bytes]:
    """Bytes that are mostly not a valid protobuf message: random bytes, truncated varints
    and lengths, invalid UTF-8 in a string field, and ``valid`` cut short or with a byte
    flipped."""
    samples = [b"\x08", b"\xff\xff\xff", b"\x0a\x05\xff\xfe\xfd\xfc\xfb", b"\x0a\xff\x01", b"\x07"]
    out = [st.sampled_from(samples), st.binary(min_size=1, max_size=64)]
    if valid:
        out.append(st.integers(0, len(valid) - 1).map(lambda n: valid[:n]))
        out.append(
            st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
                lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] + 1 :]
            )
        )
    return st.one_of(*out)
