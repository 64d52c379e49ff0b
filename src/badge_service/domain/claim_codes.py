"""Claim codes of Badgr badge classes: how codes are made and read, and the rules of a request
for a batch of them."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument, LimitExceeded, NotFound, echo
from badge_service.domain.fields import check_text

# The resource name in NOT_FOUND errors.
CLAIM_CODE = "claim code"

CLAIM_CODES_DEFAULT_PAGE_SIZE = 50

# Claim codes: 12 characters of an alphabet without look-alikes (0/O, 1/I/L), about 59 bits.
CLAIM_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CLAIM_CODE_LENGTH = 12
CLAIM_CODE_USE_LIMIT_MAX = 1_000_000

_CLAIM_CODE = re.compile(f"^[{CLAIM_CODE_ALPHABET}]{{{CLAIM_CODE_LENGTH}}}\\Z")


@dataclass(slots=True)
class ClaimCode:
    """A claim code of a badge class. ``uses_remaining`` counts down as the code is redeemed
    (an atomic ``uses_remaining - 1 WHERE uses_remaining > 0``); it never goes below 0."""

    code: str
    badge_class_id: str
    label: str = ""
    use_limit: int = 1
    uses_remaining: int = 1
    expires_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    org_id: int = 0
    id: int = 0


def new_claim_code() -> str:
    """A new random claim code."""
    return "".join(secrets.choice(CLAIM_CODE_ALPHABET) for _ in range(CLAIM_CODE_LENGTH))


def claim_code_of(value: str, where: str) -> str:
    """The canonical (upper-case) form of a code a client typed; empty is INVALID_ARGUMENT,
    and a value that cannot be a code is NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    code = value.strip().upper()
    if not _CLAIM_CODE.match(code):
        raise NotFound(CLAIM_CODE, echo(value))
    return code


@dataclass(frozen=True, slots=True)
class ClaimCodeBatch:
    """A checked CreateClaimCodes request."""

    count: int
    label: str
    use_limit: int
    expires_at: dt.datetime | None


def validate_claim_code_batch(
    count: int,
    label: str,
    use_limit: int | None,
    expires_at: dt.datetime | None,
    *,
    now: dt.datetime,
) -> ClaimCodeBatch:
    """Checks a request for claim codes: 1 to CLAIM_CODES_PER_CALL codes (0 means 1), a use
    limit of 1 (the default) to CLAIM_CODE_USE_LIMIT_MAX, an expiry in the future."""
    if count < 0:
        raise InvalidArgument("count", f"must be from 1 to {limits.CLAIM_CODES_PER_CALL}")
    if count > limits.CLAIM_CODES_PER_CALL:
        raise LimitExceeded(
            "count",
            f"must be from 1 to {limits.CLAIM_CODES_PER_CALL}",
            limits.CLAIM_CODES_PER_CALL.name,
            limits.CLAIM_CODES_PER_CALL,
        )
    check_text(label, "label", limit=limits.BADGR_TEXT_CHARS)
    limit = 1 if use_limit is None else use_limit
    if not 1 <= limit <= CLAIM_CODE_USE_LIMIT_MAX:
        raise InvalidArgument("use_limit", f"must be from 1 to {CLAIM_CODE_USE_LIMIT_MAX}")
    if expires_at is not None and expires_at <= now:
        raise InvalidArgument("expires_at", "must be in the future")
    return ClaimCodeBatch(count or 1, label, limit, expires_at)
