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
        # Accepted credentials by their header values, so a repeat call skips parsing and
        # hashing them; only successes, so bad keys cannot fill it.
        self._accepted: dict[tuple[str | None, str | None], tuple[float, Principal]] = {}

    def accepted(self, authorization: str | None, api_key: str | None) -> Principal | None:
        """The principal these header values authenticated within the cache's lifetime, or
        None (then call authenticate)."""
        hit = self._accepted.get((authorization, api_key))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def authenticate(self, metadata: dict[str, str]) -> Principal:
        """The principal for the call's metadata, or UNAUTHENTICATED."""
        creds = parse_credentials(metadata)
        digest = hash_api_key(creds.key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or hit[0] <= now:
            async with self._db.read() as conn:
                found = await orgs.find_principal(conn, digest)
            if len(self._cache) >= self._max:
                self._cache.clear()
            hit = self._cache[digest] = (now + self._ttl, found)
        expiry, principal = hit
        if principal is None:
            raise invalid_key()
        if creds.claimed_org is not None and creds.claimed_org != principal.org_id:
            raise invalid_key()
        if len(self._accepted) >= self._max:
            self._accepted.clear()
        # No longer than the key lookup it rests on, so a revoked key still ends within ttl.
        self._accepted[(metadata.get("authorization"), metadata.get("x-api-key"))] = (
            expiry,
            principal,
        )
        return principal
