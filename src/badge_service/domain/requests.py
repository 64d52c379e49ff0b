"""Request ids (AIP-155): the rules of a client-chosen id that makes a write safe to retry.

A write that carries a ``request_id`` is answered, when the same id comes again with the same
request, with the first call's reply instead of being done twice; the same id with another
request is refused. Ids are scoped to the caller's organisation and kept for RETENTION.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from badge_service.domain.errors import AlreadyExists, InvalidArgument

# How long a request id is remembered: the promise is "at least 24 hours".
RETENTION = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class RequestKey:
    """One write's request id: the org it belongs to, the id (a canonical UUID), the kind of
    request (its message type) and the SHA-256 of the request without its id."""

    org_id: int
    request_id: str
    request: str
    fingerprint: bytes


def check_request_id(value: str, where: str = "request_id") -> str:
    """The canonical (lower-case, hyphenated) form of a request id; INVALID_ARGUMENT unless it
    is a UUID. Other spellings of the same UUID (upper case, braces, no hyphens) are the same
    id."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(
            where, "must be a UUID, e.g. 0b3e7a0c-4f5e-4c2a-9d1e-6f4a2b8c9d10"
        ) from None


def request_id_reused(key: RequestKey, first: str) -> AlreadyExists:
    """The refusal of a request id already used by a different request."""
    return AlreadyExists(
        f"request_id {key.request_id} was already used for a different request; "
        "use a new request_id for a new request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": key.request_id, "first_request": first},
    )
