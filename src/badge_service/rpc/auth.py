"""Authentication: resolves call credentials to a Principal, with a short-lived cache.

The cache keeps a hot key from costing a database round trip per call. A revoked key stays
usable for at most ``ttl`` seconds in a running process.
"""

from __future__ import annotations

import contextvars
import time

from badge_service.domain.auth import Principal, hash_api_key, invalid_key, parse_credentials
from badge_service.domain.errors import Unauthenticated
from badge_service.store import orgs
from badge_service.store.db import Database

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served (set by the interceptor before the servicer runs)."""
    try:
        return _current.get()
    except LookupError:  # pragma: no cover - only if a method skipped the interceptor
        raise Unauthenticated("no caller", reason="MISSING_CREDENTIALS") from None


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    """Binds the caller for the current call's task."""
    return _current.set(principal)


class Authenticator:
    """Maps credentials to principals through the api_keys table."""

    def __init__(self, db: Database, ttl: float = 30.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, metadata: dict[str, str]) -> Principal:
        """The principal for the call's metadata, or UNAUTHENTICATED."""
        creds = parse_credentials(metadata)
        digest = hash_api_key(creds.key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            async with self._db.read() as conn:
                principal = await orgs.find_principal(conn, digest)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise invalid_key()
        if creds.claimed_org is not None and creds.claimed_org != principal.org_id:
            raise invalid_key()
        return principal
