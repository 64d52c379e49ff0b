"""Identifier formats: Capillary-style 24-hex ids, laid out as MongoDB ObjectIds (4 bytes of
seconds, 5 random bytes per process, a 3-byte counter), and Badgr's entity ids."""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
import time
import uuid

# \Z, not $: $ also matches before a trailing newline, which no id holds.
_HEX24 = re.compile(r"^[0-9a-f]{24}\Z")
_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{22}\Z")
_COUNTER_MAX = 0xFFFFFF

_lock = threading.Lock()
# (pid, process random, last second, counter). The pid is kept so that a forked worker draws
# its own random part instead of minting the same ids as its parent.
_state: tuple[int, str, int, int] = (0, "", 0, 0)


def new_hex_id() -> str:
    """A new 24-hex id. Lists are ordered by id as "oldest first", so ids one process makes
    always sort in the order they were made, even within one second."""
    global _state
    with _lock:
        pid, rand, second, counter = _state
        if pid != os.getpid():
            pid, rand, second, counter = os.getpid(), secrets.token_hex(5), 0, 0
        now = int(time.time())
        if now > second:
            second, counter = now, 0
        elif counter < _COUNTER_MAX:
            # Same second (or the clock stepped back): keep the last second so order holds.
            counter += 1
        else:
            second, counter = second + 1, 0
        _state = (pid, rand, second, counter)
    return f"{second:08x}{rand}{counter:06x}"


def is_hex_id(value: str) -> bool:
    """Whether ``value`` has the shape of a 24-hex id."""
    return bool(_HEX24.match(value))


def new_entity_id() -> str:
    """A new Badgr entity id: URL-safe base64 of a random UUID, unpadded (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def is_entity_id(value: str) -> bool:
    """Whether ``value`` has the shape of an entity id."""
    return bool(_ENTITY_ID.match(value))
