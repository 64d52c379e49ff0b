"""API keys and callers. Keys are random, shown once, and stored only as SHA-256 hashes.

A key is ``bsk_<id>_<secret>``: its id (not secret) names it in listings and lets a server
reject a key of an id it knows without a lookup; the secret carries 256 bits of randomness, so
a fast hash is enough: there is nothing to brute force, and a slow password hash would cost
every call. Keys made before ids were embedded (``bsk_<secret>``) keep working.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from badge_service.domain.errors import PermissionDenied, Unauthenticated

KEY_PREFIX = "bsk_"
_WITH_ID = re.compile(r"bsk_([1-9][0-9]{0,18})_[A-Za-z0-9_-]{43}")


class Role(StrEnum):
    """What a key may do: ``admin`` reads and writes, ``reader`` only reads."""

    ADMIN = "admin"
    READER = "reader"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its organisation, the key's id (audit fields) and role."""

    org_id: int
    key_id: int
    role: Role

    def require_write(self, method: str) -> None:
        """Raises PERMISSION_DENIED unless the key may write."""
        if self.role is not Role.ADMIN:
            raise PermissionDenied(
                f"a {self.role.value} key cannot call {method}",
                reason="WRITE_REQUIRES_ADMIN",
                metadata={"role": self.role.value, "method": method},
            )


def new_api_key(key_id: int) -> str:
    """A new random API key with its id embedded."""
    return f"{key_prefix(key_id)}{secrets.token_urlsafe(32)}"


def key_prefix(key_id: int) -> str:
    """The non-secret head of a key: what listings show of it."""
    return f"{KEY_PREFIX}{key_id}_"


def key_id_of(key: str) -> int | None:
    """The id embedded in a key, or None for a key of another shape (an older key, or not a
    key of ours at all)."""
    found = _WITH_ID.fullmatch(key)
    return int(found.group(1)) if found else None


class KeyState(StrEnum):
    """Where a key is in its life."""

    ACTIVE = "active"
    ROTATED = "rotated"  # replaced, still working until its expiry (the rotation's grace)
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never its secret, only its hash and non-secret prefix."""

    id: int
    org_id: int
    role: Role
    key_hash: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    rotated_to: int | None = None

    def state(self, now: dt.datetime) -> KeyState:
        """The key's state at ``now``."""
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        return KeyState.ROTATED if self.rotated_to is not None else KeyState.ACTIVE

    def principal(self) -> Principal:
        """The caller this key stands for."""
        return Principal(self.org_id, self.id, self.role)


_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> dt.timedelta:
    """A duration such as ``90d``, ``12h``, ``30m``, ``45s`` or ``2w``; ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w")
    seconds = int(found.group(1)) * _UNITS[found.group(2)]
    if seconds > 100 * 365 * 86_400:
        raise ValueError(f"{text!r} is longer than 100 years")
    return dt.timedelta(seconds=seconds)


def hash_api_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call presented: the key, and the org it claimed (Basic auth only)."""

    key: str
    claimed_org: int | None = None


def parse_credentials(metadata: dict[str, str]) -> Credentials:
    """Reads ``authorization: Bearer KEY``, ``authorization: Basic base64(ORG:KEY)`` or
    ``x-api-key: KEY`` from call metadata (keys lower-case)."""
    auth = metadata.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return Credentials(value)
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _bad("authorization Basic value is not base64 of ORG:KEY") from None
            org, sep, key = decoded.partition(":")
            if not sep or not key or not org.isdigit():
                raise _bad("authorization Basic value must be base64 of ORG:KEY")
            return Credentials(key, int(org))
        raise _bad("authorization must be 'Bearer KEY' or 'Basic base64(ORG:KEY)'")
    key = metadata.get("x-api-key", "").strip()
    if key:
        return Credentials(key)
    raise Unauthenticated(
        "missing credentials: send 'authorization: Bearer KEY' or 'x-api-key: KEY'",
        reason="MISSING_CREDENTIALS",
    )


def _bad(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason="MALFORMED_CREDENTIALS")


def invalid_key() -> Unauthenticated:
    """The error for a key that matches no key (or another org than claimed)."""
    return Unauthenticated("the API key is not valid", reason="INVALID_API_KEY")


def revoked_key() -> Unauthenticated:
    """The error for a key that was revoked (only its holder can learn that)."""
    return Unauthenticated("the API key was revoked", reason="API_KEY_REVOKED")


def expired_key() -> Unauthenticated:
    """The error for a key past its expiry (a rotated key after its grace period, too)."""
    return Unauthenticated("the API key has expired", reason="API_KEY_EXPIRED")
