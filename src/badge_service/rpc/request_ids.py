"""Request ids (AIP-155) at the gRPC edge: the key of a request that carries one."""

from __future__ import annotations

import hashlib
from typing import Any

from badge_service.domain.requests import RequestKey, check_request_id


def request_key(request: Any, org_id: int) -> RequestKey | None:
    """The request id key of a write request (a message with a ``request_id`` field), or None
    when it carries none. Its fingerprint is the SHA-256 of the request's deterministic
    encoding without the id, so a retry of the same request matches however the client
    ordered its fields."""
    raw_id: str = request.request_id
    if not raw_id:
        return None
    request_id = check_request_id(raw_id)
    request.request_id = ""
    try:
        encoded = request.SerializeToString(deterministic=True)
    finally:
        request.request_id = raw_id
    return RequestKey(org_id, request_id, request.DESCRIPTOR.name, hashlib.sha256(encoded).digest())
