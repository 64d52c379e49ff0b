"""API keys and callers. Keys are random, shown once, and stored only as SHA-256 hashes.

A key carries 256 bits of randomness, so a fast hash is enough: there is nothing to brute
force, and a slow password hash would cost every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from badge_service.domain.errors import PermissionDenied, Unauthenticated

KEY_PREFIX = "bsk_"


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


def new_api_key() -> str:
    """A new random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


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
    """The error for a key that matches no live key (or another org than claimed)."""
    return Unauthenticated("the API key is not valid", reason="INVALID_API_KEY")
