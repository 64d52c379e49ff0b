"""Pre-encoded wire bytes for the load generators: gRPC length-prefixed messages, HTTP/2 frames
and HPACK header blocks.

Both generators send bytes built here once, so the load costs almost no client CPU: h2load
reads a gRPC message from a file (``-d``), and ``bench.h2gen`` writes whole HTTP/2 frames.
The HPACK encoder only emits "literal header field without indexing" with literal names
(RFC 7541 section 6.2.2): always valid, never touches the dynamic table, so the client needs
no HPACK state and never has to decode anything the server sends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from google.protobuf.message import Message

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# HTTP/2 frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
CONTINUATION = 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

# SETTINGS identifiers.
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535


def grpc_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message: a compressed flag byte, a 4-byte big-endian length,
    then the serialized message."""
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


def grpc_message(msg: Message) -> bytes:
    """``msg`` serialized and length-prefixed, as one gRPC request body."""
    return grpc_frame(msg.SerializeToString())


def parse_grpc_frames(data: bytes) -> list[bytes]:
    """The messages of a gRPC body (the inverse of grpc_frame); ValueError if truncated or
    compressed."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise ValueError("truncated gRPC message prefix")
        flag, length = struct.unpack_from(">BI", data, pos)
        if flag != 0:
            raise ValueError("compressed gRPC messages are not supported")
        pos += 5
        if len(data) - pos < length:
            raise ValueError("truncated gRPC message")
        out.append(data[pos : pos + length])
        pos += length
    return out


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with an N-bit prefix; ``first`` holds the
    high bits of the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(value: bytes) -> bytes:
    """An HPACK string literal without Huffman coding."""
    return hpack_int(len(value), 7) + value


def hpack_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """A header block of literal fields without indexing, literal names (lower-case)."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + hpack_string(name.lower().encode()) + hpack_string(value.encode())
    return bytes(out)


def grpc_request_headers(
    path: str, authority: str, metadata: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The headers of a gRPC unary request over h2c."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]


def h2_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return (
        struct.pack(">I", len(payload))[1:]
        + struct.pack(">BBI", kind, flags, stream_id & MAX_WINDOW)
        + payload
    )


def settings_frame(values: dict[int, int]) -> bytes:
    """A SETTINGS frame with the given identifier/value pairs."""
    payload = b"".join(struct.pack(">HI", k, v) for k, v in values.items())
    return h2_frame(SETTINGS, 0, 0, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return h2_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def request_frames(stream_id: int, header_block: bytes, body: bytes) -> bytes:
    """The HEADERS and DATA(END_STREAM) frames of one unary request."""
    return h2_frame(HEADERS, END_HEADERS, stream_id, header_block) + h2_frame(
        DATA, END_STREAM, stream_id, body
    )
