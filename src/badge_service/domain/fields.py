"""The rules for fields every resource shares: free text, http(s) URLs, images given as a URL
or a data URI, e-mail addresses, slugs, dates, JSON held in a field, and lists of 24-hex ids.

One rule per kind of field, so that a value means the same to every resource: a URL a badge
template takes is one an issuer, a badge class, a badge state and an award take too
(tests/test_fields_properties.py feeds the same strings to every URL field of every RPC).
Each check raises InvalidArgument naming the field (LimitExceeded when over a documented
limit); the ``is_*`` predicates say the same without raising, for callers that word their own
error.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument, LimitExceeded
from badge_service.domain.ids import is_hex_id

HTTP_SCHEMES = ("http", "https")

# Never in a URL we accept: whitespace (str.isspace's set: re's \s matches the same), C0 and
# C1 control characters, DEL, and the backslash (browsers read it as "/" in an http URL, so
# the host a reader sees is not the host the URL names).
_URL_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\]")
# Never in a host name: the URL Standard's forbidden host code points that can survive
# urlsplit (it cuts the host at / ? # @ and takes the port after the last ":"), and ":", "["
# and "]" outside an IPv6 literal.
_HOST_BAD_CHARS = re.compile(r"[<>^|\[\]:]")
_IPV6_HOST_BAD_CHARS = re.compile(r"[<>^|\[\]]")

# Patterns end in \Z, not $: $ also matches before a trailing newline.

# The address forms RFC 5322 allows without quoting (dot-atom local part) at a domain of at
# least two labels of letters, digits and inner hyphens; not quoted local parts, IP literals
# or internationalised addresses.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATA_IMAGE = re.compile(
    r"^data:image/(?:png|jpeg|gif|svg\+xml|webp);base64,([A-Za-z0-9+/]+={0,2})\Z"
)

NOT_HTTP_URL = "must be an http(s) URL"


# --- Text -------------------------------------------------------------------------------------


def check_no_nul(value: str, where: str) -> None:
    """INVALID_ARGUMENT when ``value`` holds a NUL character. PostgreSQL text cannot store
    one, so it is refused on both databases alike (the gRPC layer refuses NUL in any request
    field before a servicer runs; this keeps the domain's own rule whatever the transport)."""
    if "\x00" in value:
        raise InvalidArgument(where, "must not contain NUL characters")


def check_text(
    value: str, where: str, *, limit: limits.Limit | None, required: bool = False
) -> None:
    """Free text: no NUL; when ``required``, not blank ("is required"); at most ``limit``
    characters (LIMIT_EXCEEDED; None for no limit of its own). Checked in that order."""
    if "\x00" in value:
        raise InvalidArgument(where, "must not contain NUL characters")
    if required and not value.strip():
        raise InvalidArgument(where, "is required")
    if limit is not None and len(value) > limit:
        raise LimitExceeded(where, f"must be at most {limit} characters", limit.name, limit)


# --- URLs -------------------------------------------------------------------------------------


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL: scheme http or https (any case), a
    host, no user info, a port (if any) from 0 to 65535, and no whitespace, control
    characters or backslashes anywhere. Length is check_http_url's."""
    if not value or _URL_BAD_CHARS.search(value) is not None:
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # ValueError when not a number from 0 to 65535
    except ValueError:  # a bracketed host that is not an IP address, or a bad port
        return False
    if parts.scheme not in HTTP_SCHEMES or not host or "@" in parts.netloc:
        return False
    bad = _IPV6_HOST_BAD_CHARS if parts.netloc.startswith("[") else _HOST_BAD_CHARS
    return bad.search(host) is None


def check_http_url(value: str, where: str, *, required: bool = False) -> None:
    """An http(s) URL field (see is_http_url); empty means unset unless ``required``.
    In order: NUL, blank when required ("is required"), more than limits.URL_BYTES in
    UTF-8 (LIMIT_EXCEEDED), not an http(s) URL."""
    if not value:
        if required:
            raise InvalidArgument(where, "is required")
        return
    if "\x00" in value:
        raise InvalidArgument(where, "must not contain NUL characters")
    if required and not value.strip():
        raise InvalidArgument(where, "is required")
    limits.check_url(value, where)
    if not is_http_url(value):
        raise InvalidArgument(where, NOT_HTTP_URL)


def check_image(value: str, where: str, *, limit: limits.Limit, required: bool = False) -> None:
    """An image given as an http(s) URL (check_http_url) or as a
    ``data:image/{png,jpeg,gif,svg+xml,webp};base64,`` URI of at most ``limit`` characters
    whose payload is valid base64."""
    if value.startswith("data:"):
        limits.check_chars(value, limit, where)
        match = _DATA_IMAGE.match(value)
        if match is None or len(match.group(1)) % 4:
            raise InvalidArgument(where, "must be a data:image/...;base64, URI")
        try:
            base64.b64decode(match.group(1), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(where, "must be a data:image/...;base64, URI") from None
        return
    check_http_url(value, where, required=required)


# --- E-mail addresses, slugs and dates --------------------------------------------------------


def is_email(value: str) -> bool:
    """Whether ``value`` is an e-mail address of the form this service accepts (the
    unquoted RFC 5322 form at a domain of two or more labels; no surrounding whitespace)."""
    return _EMAIL.match(value) is not None


def check_email(value: str, where: str, *, limit: limits.Limit, required: bool = False) -> None:
    """An e-mail address field: check_text with ``limit``, then is_email ("must be an email
    address"); empty means unset unless ``required``."""
    check_text(value, where, limit=limit, required=required)
    if value and _EMAIL.match(value) is None:
        raise InvalidArgument(where, "must be an email address")


def is_slug(value: str) -> bool:
    """Whether ``value`` is a slug: lower-case ASCII letters and digits in words joined by
    single hyphens."""
    return _SLUG.match(value) is not None


def is_date_text(value: str) -> bool:
    """Whether ``value`` is written as a date YYYY-MM-DD in ASCII digits (whether that day
    exists is ``datetime.date.fromisoformat``'s to say; it also takes other ISO forms)."""
    return _DATE.match(value) is not None


# --- JSON and ids -----------------------------------------------------------------------------


def check_json_object(value: dict[str, Any], where: str, limit: limits.Limit) -> None:
    """A JSON object fit for storage on both databases: no NUL in keys or strings (PostgreSQL
    JSONB refuses \\u0000), finite numbers only, at most ``limit`` bytes as a Struct."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if "\x00" in k:
                    raise InvalidArgument(where, "must not contain NUL characters")
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidArgument(where, "must not contain NUL characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidArgument(where, "must not contain NaN or infinite numbers")
    limits.check_struct(value, limit, where)


def check_json_text(value: str, where: str, *, limit: limits.Limit) -> None:
    """A field holding a JSON document as text (empty means unset): check_text with
    ``limit``, then it must parse."""
    check_text(value, where, limit=limit)
    if value:
        try:
            json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidArgument(where, "must be a JSON document") from None


def check_hex_ids(values: Sequence[str], where: str, *, limit: limits.Limit) -> None:
    """A list of at most ``limit`` distinct 24-hex ids."""
    limits.check_items(values, limit, where, "entries")
    seen: set[str] = set()
    for i, v in enumerate(values):
        if not is_hex_id(v):
            raise InvalidArgument(f"{where}[{i}]", "must be a 24-hex id")
        if v in seen:
            raise InvalidArgument(f"{where}[{i}]", "repeats an id")
        seen.add(v)
