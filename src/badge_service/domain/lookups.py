"""How a request names a Badgr issuer or badge class (its 24-hex id, its entity id, its
openBadgeId URL or the base64 of that URL), and the Key the store finds it by."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from badge_service.domain import limits
from badge_service.domain.errors import InvalidArgument, NotFound, echo
from badge_service.domain.fields import is_http_url
from badge_service.domain.ids import is_entity_id, is_hex_id

_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}\Z")


@dataclass(frozen=True, slots=True)
class Key:
    """How to find a Badgr resource: by its 24-hex id, by its entity id, or (``alias``) by
    an openBadgeId URL not under this service's base URL, which an imported object keeps
    from its former host (``value`` is then that URL)."""

    by_entity_id: bool
    value: str
    alias: bool = False


def key_of_id_or_entity_id(value: str, where: str, resource: str) -> Key:
    """The key of a 24-hex id or an entity id. Empty is INVALID_ARGUMENT; any other shape
    names nothing we have, so NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    if is_hex_id(value):
        return Key(False, value)
    if is_entity_id(value):
        return Key(True, value)
    raise NotFound(resource, echo(value))


def _decode_base64_url(value: str, where: str) -> str:
    """The URL encoded in ``value`` (standard or URL-safe base64, padding optional)."""
    limits.check_chars(value, limits.BADGR_REF_CHARS, where)
    if not _BASE64.match(value):
        raise InvalidArgument(where, "is not base64")
    bare = value.rstrip("=")
    if len(bare) % 4 == 1:
        raise InvalidArgument(where, "is not base64 (bad length)")
    padded = bare.replace("-", "+").replace("_", "/") + "=" * (-len(bare) % 4)
    try:
        text = base64.b64decode(padded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidArgument(where, "does not decode to an openBadgeId URL") from None
    if not is_http_url(text):
        raise InvalidArgument(where, "does not decode to an http(s) openBadgeId URL")
    return text


def _key_of_open_badge_id(url: str, base_url: str, kind: str, resource: str) -> Key:
    prefix = f"{base_url}/public/{kind}/"
    if not url.startswith(prefix):
        # Another host's openBadgeId: an imported object's former one names it (an alias).
        return Key(False, url, alias=True)
    rest = url[len(prefix) :]
    if not is_entity_id(rest):
        raise NotFound(resource, echo(url))
    return Key(True, rest)


def key_of_open_badge_id_base64(
    value: str, where: str, *, base_url: str, kind: str, resource: str
) -> Key:
    """The key named by the base64 of an openBadgeId. Not base64 of an http(s) URL is
    INVALID_ARGUMENT; a URL that is not one of ours is NOT_FOUND."""
    if not value:
        raise InvalidArgument(where, "is required")
    return _key_of_open_badge_id(_decode_base64_url(value, where), base_url, kind, resource)


def key_of_ref(value: str, where: str, *, base_url: str, kind: str, resource: str) -> Key:
    """The key named by a reference: a 24-hex id, an entity id, an openBadgeId URL, or the
    base64 of an openBadgeId."""
    if not value:
        raise InvalidArgument(where, "is required")
    limits.check_chars(value, limits.BADGR_REF_CHARS, where)
    if is_hex_id(value):
        return Key(False, value)
    if is_entity_id(value):
        return Key(True, value)
    if value.startswith(("http://", "https://")):
        return _key_of_open_badge_id(value, base_url, kind, resource)
    return _key_of_open_badge_id(_decode_base64_url(value, where), base_url, kind, resource)
