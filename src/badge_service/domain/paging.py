"""Paging rules shared by every List RPC.

Two styles: keyset pages named by an opaque ``page_token`` (AIP-158; deep pages cost the same
as the first) and the vendors' numbered pages (CrowdTwist ``page``/``page_size``, Credly
``page``), whose out-of-range rules are kept exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.ids import is_hex_id


def resolve_page_size(
    page_size: int, *, default: int, maximum: int, field: str = "page_size"
) -> int:
    """0 means the default; larger than ``maximum`` is clamped; negative is invalid."""
    if page_size < 0:
        raise InvalidArgument(field, "must not be negative")
    if page_size == 0:
        return default
    return min(page_size, maximum)


@dataclass(frozen=True, slots=True)
class NumberedPage:
    """Where a numbered page falls: its offset and the neighbours to point at."""

    page: int
    size: int
    total: int
    pages: int
    in_range: bool
    next_page: int | None
    prev_page: int | None

    @property
    def offset(self) -> int:
        """Rows to skip for an in-range page."""
        return (self.page - 1) * self.size


def numbered_page(page: int | None, size: int, total: int) -> NumberedPage:
    """CrowdTwist's rules: no page is the first; page <= 0 is empty and points next at 1;
    past the end is empty and points prev at the last page."""
    pages = -(-total // size)
    number = 1 if page is None else page
    if number <= 0:
        return NumberedPage(number, size, total, pages, False, 1, None)
    if number > max(pages, 1):
        return NumberedPage(number, size, total, pages, False, None, pages or None)
    return NumberedPage(
        number,
        size,
        total,
        pages,
        True,
        number + 1 if number < pages else None,
        number - 1 if number > 1 else None,
    )


def filter_fingerprint(*parts: object) -> str:
    """A short digest of a request's filters, so a token cannot be reused with others."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode_page_token(after: object, fingerprint: str) -> str:
    """An opaque token that resumes after the key ``after``."""
    raw = json.dumps({"a": after, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str, field: str = "page_token") -> object:
    """The key a token resumes after; INVALID_ARGUMENT if it is malformed or was made for
    other filters (or longer than any token this service issues: LIMIT_EXCEEDED)."""
    limits.check_chars(token, limits.PAGE_TOKEN_CHARS, field)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    # RecursionError: JSON nested deeper than Python's recursion limit.
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument(field, "is not a token this service issued") from None
    if not isinstance(data, dict) or "a" not in data or "f" not in data:
        raise InvalidArgument(field, "is not a token this service issued")
    if data["f"] != fingerprint:
        raise InvalidArgument(field, "was issued for different filters or sort")
    return data["a"]


def resume_after(
    token: str,
    fingerprint: str,
    valid: Callable[[object], bool] | None = None,
    field: str = "page_token",
) -> object | None:
    """The key a request's page token resumes after, None without a token. ``valid`` says
    whether a decoded key has the shape this list issues (a token of another list, or one
    made by hand, is INVALID_ARGUMENT like a malformed one). The one page-token check every
    List use case calls."""
    if not token:
        return None
    after = decode_page_token(token, fingerprint, field)
    if valid is not None and not valid(after):
        raise InvalidArgument(field, "is not a token this service issued")
    return after


def after_hex_id(token: str, fingerprint: str) -> str | None:
    """The 24-hex id a page token resumes after (None without a token)."""
    after = resume_after(token, fingerprint, lambda a: isinstance(a, str) and is_hex_id(a))
    return after if isinstance(after, str) else None


T = TypeVar("T")


def keyset_page(
    rows: Sequence[T], size: int, fingerprint: str, key: Callable[[T], object]
) -> tuple[list[T], str]:
    """Trims rows fetched with ``limit=size + 1`` to one page, and the token that resumes
    after it ("" on the last page, which the extra row tells apart without a count)."""
    if len(rows) <= size:
        return list(rows), ""
    page = list(rows[:size])
    return page, encode_page_token(key(page[-1]), fingerprint)
