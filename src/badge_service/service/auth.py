"""Authentication: resolves call credentials to a Principal from keys held in memory.

Each serving process holds every API key (id, hash, organisation, role, expiry, revocation)
in memory and polls the one-row ``api_key_epoch`` every ``refresh`` seconds (0.5 by default);
when it moved, some key was created, revoked or rotated, and the process reloads them all. So
a revoked key stops working on every process within about ``refresh`` seconds, an expired one
at its expiry (checked on every call), and authenticating costs no database round trip.

Unknown keys are cheap. A key of our shape carries its id: the key of an id the process holds
is checked against that key's hash in memory, and an id at or below the highest one loaded
that it does not hold does not exist, nor does one more than ``ID_HORIZON`` above it (that many
keys are not made between two polls). Keys of the older shape (without an id) are no longer
made, so one not loaded does not exist either. Only an id just above the highest loaded, which
may have been created since the last reload, is looked up, at most ``lookups_per_second``
times a second per process; past that, it waits for the next poll (which reloads if any key
changed) and is judged by what is then in memory. What a lookup finds, or does not, is kept
until the next reload, so each id costs at most one lookup per reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time

from badge_service.domain.auth import (
    KEY_PREFIX,
    ApiKey,
    Principal,
    expired_key,
    hash_api_key,
    invalid_key,
    key_id_of,
    parse_credentials,
    revoked_key,
)
from badge_service.store import keys
from badge_service.store.db import Database

log = logging.getLogger("badge_service.auth")


# How often last-use times are written (a write per call would cost more than the call).
LAST_USE_INTERVAL = 60.0
_NEVER = float("inf")
# Ids further than this above the highest loaded one are refused unlooked-up.
ID_HORIZON = 10_000


class Authenticator:
    """Maps credentials to principals through the api_keys table, held in memory."""

    def __init__(
        self,
        db: Database,
        refresh: float = 0.5,
        lookups_per_second: float = 100.0,
        max_entries: int = 10_000,
    ) -> None:
        self._db = db
        self._refresh = refresh
        self._rate = lookups_per_second
        self._max = max_entries
        self._by_id: dict[int, ApiKey] = {}
        self._by_hash: dict[str, ApiKey] = {}  # keys of the older shape, without an id
        self._max_id = 0
        self._epoch: int | None = None
        # Ids looked up and not found since the last reload.
        self._unknown: set[int] = set()
        self._tokens = lookups_per_second
        self._tokens_at = time.monotonic()
        # Accepted credentials by their header values, so a repeat call skips parsing and
        # hashing them: (seconds since the epoch when the key expires, or inf; principal).
        # Only successes, so bad keys cannot fill it; cleared at every reload.
        self._accepted: dict[tuple[str | None, str | None], tuple[float, Principal]] = {}
        self._used: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._polled = asyncio.Event()  # set (and replaced) after every poll
        self.lookups = 0  # database lookups of unknown keys, for tests and the benchmark

    async def start(self) -> None:
        """Loads the keys and starts polling for changes."""
        await self._reload(await self._db.run_read(keys.epoch))
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stops polling and writes the last-use times still pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_last_use()

    def accepted(self, authorization: str | None, api_key: str | None) -> Principal | None:
        """The principal these header values authenticated since the last reload, if the key
        has not expired since; else None (then call authenticate)."""
        hit = self._accepted.get((authorization, api_key))
        if hit is None:
            return None
        now = time.time()
        if hit[0] <= now:
            return None
        principal = hit[1]
        self._used[principal.key_id] = now
        return principal

    async def authenticate(self, metadata: dict[str, str]) -> Principal:
        """The principal for the call's metadata, or UNAUTHENTICATED."""
        creds = parse_credentials(metadata)
        key_id = key_id_of(creds.key)
        if key_id is None:
            digest = hash_api_key(creds.key)
            key = self._by_hash.get(digest)
            if key is None:
                key = await self._look_up(None)
        else:
            # The id first: a key whose id no key has (a flood of made-up keys) is refused
            # without hashing its secret.
            key = self._by_id.get(key_id)
            if key is None:
                key = await self._look_up(key_id)
            digest = hash_api_key(creds.key)
        if key.key_hash != digest:
            raise invalid_key()  # a known id with another secret
        now = time.time()
        if key.revoked_at is not None:
            raise revoked_key()
        expires = _NEVER if key.expires_at is None else key.expires_at.timestamp()
        if expires <= now:
            raise expired_key()
        if creds.claimed_org is not None and creds.claimed_org != key.org_id:
            raise invalid_key()
        principal = key.principal()
        if len(self._accepted) >= self._max:
            self._accepted.clear()
        self._accepted[(metadata.get("authorization"), metadata.get("x-api-key"))] = (
            expires,
            principal,
        )
        self._used[key.id] = now
        return principal

    async def _look_up(self, key_id: int | None) -> ApiKey:
        """A key not among those loaded: one created since the last reload, or none."""
        if key_id is None:
            raise invalid_key()  # older-shape keys are all loaded: this one does not exist
        if key_id <= self._max_id or key_id > self._max_id + ID_HORIZON:
            raise invalid_key()  # ids are never reused, and not made that fast
        if key_id in self._unknown:
            raise invalid_key()
        if not self._take_token():
            # Over the lookup budget (a flood, or a burst of new keys): the next poll brings
            # in every key created since the last one.
            if self._task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._polled.wait(), self._refresh * 4)
            found = self._by_id.get(key_id)
            if found is None:
                raise invalid_key()
            return found
        self.lookups += 1
        found = await self._db.run_read(keys.find_key_by_id, key_id)
        if found is None:
            if len(self._unknown) < self._max:
                self._unknown.add(key_id)
            raise invalid_key()
        self._by_id[key_id] = found
        return found

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _reload(self, epoch: int) -> None:
        loaded = await self._db.run_read(keys.all_keys)
        self._by_id = {k.id: k for k in loaded}
        self._by_hash = {k.key_hash: k for k in loaded if k.prefix == KEY_PREFIX}
        self._max_id = max((k.id for k in loaded), default=0)
        self._unknown = set()
        self._accepted = {}
        self._epoch = epoch

    async def _poll(self) -> None:
        last_use_written = time.monotonic()
        while True:
            await asyncio.sleep(self._refresh)
            try:
                epoch = await self._db.run_read(keys.epoch)
                if epoch != self._epoch:
                    await self._reload(epoch)
                if time.monotonic() - last_use_written >= LAST_USE_INTERVAL:
                    last_use_written = time.monotonic()
                    await self._write_last_use()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be down; keep the keys we hold
                log.warning("could not refresh API keys", extra={"error": str(exc)})
            polled, self._polled = self._polled, asyncio.Event()
            polled.set()

    async def _write_last_use(self) -> None:
        used, self._used = self._used, {}
        if used:
            stamps = {k: dt.datetime.fromtimestamp(t, dt.UTC) for k, t in used.items()}
            try:
                await self._db.run_write(keys.record_last_use, stamps)
            except Exception as exc:
                log.warning("could not record API key use", extra={"error": str(exc)})
