"""Decoding a vendor's JSON at the edge: the loose spellings vendors' clients send (``0``/``1``
for booleans, numbers as text, dates with or without a time) into the values a request message
holds.

Only the shape is checked here (a value that cannot become the field's type at all, such as
``"order": "first"``): that is decoding, as grpc-gateway's JSON decoding refuses it too. Every
rule about the values (required fields, ranges, names taken, types of defaults) is the RPC's.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import timestamp_pb2
from starlette.requests import Request

# An enum number no value has: a vendor spelling we do not know is sent as it, so the RPC
# refuses it with its own error (naming the field) instead of this edge guessing a rule.
UNKNOWN_ENUM = 999


class BadInput(Exception):
    """A request the edge cannot decode: ``field`` (the vendor's name for it) and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; BadInput when it is not one. Keys are stripped of
    surrounding blanks (a vendor's own sample spells ``"badge_states "``)."""
    raw = await request.body()
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nested deeper than the decoder goes (the RPC's own limit is lower).
        raise BadInput("", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadInput("", "the body must be a JSON object")
    return {str(key).strip(): value for key, value in doc.items()}


def as_bool(value: Any, field: str) -> bool:
    """A boolean of ``true``/``false``, ``1``/``0`` or their text forms."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise BadInput(field, "must be true or false (or 1 or 0)")


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def as_int(value: Any, field: str, bits: int = 64) -> int:
    """A whole number of ``bits`` (signed) from a JSON number or its text."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise BadInput(field, "must be a whole number")
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise BadInput(field, f"must fit in {bits} bits")
    return number


def as_text(value: Any, field: str) -> str:
    """Text; numbers and booleans are written as JSON writes them (``5``, ``true``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise BadInput(field, "must be text")


def as_list(value: Any, field: str) -> list[Any]:
    """A JSON array (null is an empty one)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput(field, "must be an array")
    return value


def as_object(value: Any, field: str) -> dict[str, Any]:
    """A JSON object (null is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(field, "must be an object")
    return value


def as_timestamp(value: Any, field: str) -> timestamp_pb2.Timestamp:
    """A Timestamp of ISO-8601 text: a date and time with ``Z`` or an offset (no offset is
    UTC), or a date alone (its midnight, UTC)."""
    if not isinstance(value, str):
        raise BadInput(field, "must be an ISO-8601 date")
    text = value.strip()
    try:
        if len(text) == 10:
            when = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        else:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(field, "must be an ISO-8601 date, e.g. 2019-01-01T00:00:00.000Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    out = timestamp_pb2.Timestamp()
    try:
        out.FromDatetime(when)
    except (ValueError, OverflowError):
        raise BadInput(field, "is out of range") from None
    return out


def epoch_seconds(value: timestamp_pb2.Timestamp) -> float:
    """Seconds since the epoch with the fraction (Capillary's ``createdOn``)."""
    return value.seconds + value.nanos / 1e9
