"""What the public documents (service/hosted.py) read lately, per database: kept for
RECENT_SECONDS, since public documents are fetched again and again and change rarely.

Its own module, light on imports, so that the writes that change a public document (a
revocation) can drop it without loading the hosted use cases where the HTTP face is off.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from badge_service.domain.awards import Award
from badge_service.domain.badge_classes import BadgeClass
from badge_service.store.db import Database

V = TypeVar("V")

RECENT_SECONDS = 5.0
RECENT_MAX = 10_000  # entries per kind of document: bounded memory whatever is fetched


class Recent(Generic[V]):
    """What was read lately, each for RECENT_SECONDS, at most RECENT_MAX entries (the oldest
    make room). Only found things are kept: an unknown id is looked up every time."""

    __slots__ = ("_entries", "_forgotten", "_loading")

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[float, V]] = {}
        # Reads under way, by key: callers that miss meanwhile wait for the same one.
        self._loading: dict[Hashable, asyncio.Future[V]] = {}
        self._forgotten = 0  # forget() calls so far: a read begun before one is not kept

    async def fetch(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        """The value read within RECENT_SECONDS, else ``load()``'s, kept. Callers that miss
        while a read of ``key`` is under way share it: when a popular document's entry ends,
        the requests in flight for it make one read, not one each. The read runs as a task of
        its own, so a caller that leaves does not cancel it for the others."""
        hit = self.get(key)
        if hit is not None:
            return hit
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(load())
            forgotten = self._forgotten
            pending.add_done_callback(lambda done: self._loaded(key, done, forgotten))
        return await asyncio.shield(pending)

    def _loaded(self, key: Hashable, done: asyncio.Future[V], forgotten: int) -> None:
        self._loading.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        # A change (forget) while the read was under way may not be in what it read.
        if forgotten == self._forgotten:
            self.put(key, done.result())

    def get(self, key: Hashable) -> V | None:
        """The value read within RECENT_SECONDS, or None."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: Hashable, value: V) -> None:
        """Keeps ``value`` for RECENT_SECONDS from now."""
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= RECENT_MAX:
            del entries[next(iter(entries))]  # the oldest: dicts keep insertion order
        entries[key] = (time.monotonic() + RECENT_SECONDS, value)

    def forget(self, key: Hashable) -> None:
        """Drops ``key``'s value (it changed)."""
        self._forgotten += 1
        self._entries.pop(key, None)


@dataclass(slots=True)
class Reads:
    """One database's recent reads: awards with their class, issuers and badge classes."""

    awards: Recent[tuple[Award, BadgeClass]]
    issuers: Recent[Any]
    badge_classes: Recent[BadgeClass]


_READS: weakref.WeakKeyDictionary[Database, Reads] = weakref.WeakKeyDictionary()


def reads(db: Database) -> Reads:
    """The recent reads of ``db`` (made on first use)."""
    found = _READS.get(db)
    if found is None:
        found = _READS[db] = Reads(Recent(), Recent(), Recent())
    return found


def forget_award(db: Database, award_id: str) -> None:
    """Drops a changed award (revoked) from the recent reads, so that its hosted documents
    show the change at once in this process."""
    reads = _READS.get(db)
    if reads is not None:
        reads.awards.forget(award_id)


def forget_all(db: Database) -> None:
    """Drops every recent read of ``db``: an issuer or badge class changed (rare writes, each
    of which may show in many documents: its awards' assertions name the class)."""
    _READS.pop(db, None)
