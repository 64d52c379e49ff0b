"""Protobuf wire-format pieces, for replies assembled from stored message bytes.

A reply built by concatenating encoded fields is a valid message: parsers accept fields in any
order and merge repeated ones (the protobuf encoding guide, "Message Structure"). The read
paths of badges use this to send each badge's stored bytes without parsing them. The few lines
here are hand-written because protobuf's own encoder helpers are internal API.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative int."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A non-negative integer field (wire type 0) with its key."""
    return varint(number << 3) + varint(value)


def message_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with its key, e.g. one item of a repeated
    message field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
