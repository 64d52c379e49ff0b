"""Identifier formats: Capillary-style 24-hex ids (4 bytes of seconds, then 8 random bytes)."""

from __future__ import annotations

import re
import secrets
import time

_HEX24 = re.compile(r"^[0-9a-f]{24}$")


def new_hex_id() -> str:
    """A new 24-hex id; ids made later sort after earlier ones to the second."""
    return f"{int(time.time()):08x}{secrets.token_hex(8)}"


def is_hex_id(value: str) -> bool:
    """Whether ``value`` has the shape of a 24-hex id."""
    return bool(_HEX24.match(value))
