"""Progress and award events: RecordProgress, ListRecipientBadgeStates, and what WatchAwards
streams (the process's watch hub, ``service.watch``, fed from the org's event log).

The hub keeps each event encoded once for every stream, so the transport that makes it hands
an ``EventEncoding``; the events it encodes are ``AwardEvent`` values, decoded here from the log
and the awards they name, read in one snapshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from badge_service.domain import paging
from badge_service.domain.awards import Award, Recipient, recipient_key
from badge_service.domain.badges import Badge, BadgeFilter, BadgeStateType
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.progress import (
    LIST_DEFAULT_PAGE_SIZE,
    LIST_MAX_PAGE_SIZE,
    RecipientBadgeState,
    default_state,
)
from badge_service.service.watch import (
    BATCH,
    Event,
    ServerShuttingDown,
    Subscription,
    WatchHub,
    WatchLimits,
)
from badge_service.store import award_definitions as definitions
from badge_service.store import awards as award_store
from badge_service.store import badges as badge_store
from badge_service.store import events, notify
from badge_service.store import progress as progress_store
from badge_service.store.db import Database


@dataclass(frozen=True, slots=True)
class AwardEvent:
    """One event of an org's log, as a stream shows it: ``kind`` is "awarded", "revoked" or
    "progress". An award event carries the award as it was at the event (an AWARDED one
    unrevoked; None when the award was deleted since, with its badge class) and its class's
    entity id; a progress event the state it moved to."""

    sequence: int
    kind: str
    time: dt.datetime
    award_id: str = ""
    award: Award | None = None
    class_entity_id: str = ""
    progress: RecipientBadgeState | None = None


# Encodes a batch of events, once for every stream: (sequence, encoded event) each, in order.
EventEncoding = Callable[[Sequence[AwardEvent]], list[Event]]


@dataclass(frozen=True, slots=True)
class StatesPage:
    """A page of a recipient's badge states, in badge id order."""

    states: list[RecipientBadgeState]
    next_token: str
    total: int


def _record(
    conn: Connection,
    org_id: int,
    badge_id: int,
    recipient: Recipient,
    state: BadgeStateType,
    now: dt.datetime,
) -> RecipientBadgeState:
    badge = definitions.badge(conn, org_id, badge_id)
    result, _ = progress_store.record_progress(
        conn, org_id, badge, recipient_key(recipient), recipient, state, now
    )
    return result


async def record_progress(
    db: Database,
    org_id: int,
    badge_id: int,
    recipient: Recipient,
    state: BadgeStateType,
    now: dt.datetime,
) -> RecipientBadgeState:
    """Moves the (checked) recipient's state on a badge forward, never back; the current state
    again changes nothing. A move appends a progress event."""
    return await db.run_write(_record, org_id, badge_id, recipient, state, now)


def _states(
    conn: Connection, org_id: int, rkey: str, size: int, after: int | None, fingerprint: str
) -> tuple[int, list[Badge], str, dict[int, RecipientBadgeState]]:
    flt = BadgeFilter()
    total = badge_store.count_badges(conn, org_id, flt)
    rows = badge_store.list_badges(conn, org_id, flt, limit=size + 1, after_id=after)
    badges, next_token = paging.keyset_page(rows, size, fingerprint, lambda b: b.id)
    return total, badges, next_token, progress_store.states_of(conn, org_id, rkey, badges)


def _badge_id_key(after: object) -> bool:
    # bool is an int to Python, and a key outside BIGINT fails in the database.
    return isinstance(after, int) and not isinstance(after, bool) and 0 <= after < 2**63


async def recipient_badge_states(
    db: Database, org_id: int, recipient: Recipient, page_size: int, page_token: str
) -> StatesPage:
    """The (checked) recipient's state on every badge of the org, in badge id order: the
    recorded state, or the badge's first state with no update time."""
    rkey = recipient_key(recipient)
    size = paging.resolve_page_size(
        page_size, default=LIST_DEFAULT_PAGE_SIZE, maximum=LIST_MAX_PAGE_SIZE
    )
    fingerprint = paging.filter_fingerprint("recipient_badge_states", rkey)
    after = paging.resume_after(page_token, fingerprint, _badge_id_key)
    assert after is None or isinstance(after, int)
    total, badges, next_token, recorded = await db.run_read(
        _states, org_id, rkey, size, after, fingerprint
    )
    states = [recorded.get(b.id) or default_state(b, recipient) for b in badges]
    return StatesPage(states, next_token, total)


# --- watching ----------------------------------------------------------------------------------


def _events_after(
    conn: Connection, org_id: int, after: int, limit: int = BATCH
) -> list[AwardEvent]:
    """A batch of the org's events after a sequence, with the awards they name (one query)
    and those awards' class entity ids, in one snapshot."""
    batch = events.read_after(conn, org_id, after, limit=limit)
    award_ids = [str(e.payload["award_id"]) for e in batch if e.kind != "progress"]
    found = award_store.get_awards(conn, org_id, award_ids)
    entity_ids = award_store.class_entity_ids(
        conn, [a.badge_class_id for a in found.values() if a.badge_class_id is not None]
    )
    out = []
    for e in batch:
        if e.kind == "progress":
            state = progress_store.state_from_payload(e.payload)
            out.append(AwardEvent(e.sequence, e.kind, e.time, progress=state))
            continue
        award_id = str(e.payload["award_id"])
        award = found.get(award_id)
        if award is None:
            # Deleted since (with its badge class): the event still names it.
            out.append(AwardEvent(e.sequence, e.kind, e.time, award_id))
            continue
        # The award as it was at the event, so that the stream reads the same whenever it is
        # read: an award changes only by its one revocation, so an AWARDED event shows it
        # unrevoked, and expiry is judged at the event's time.
        if e.kind == "awarded":
            award = dataclasses.replace(award, revoked_at=None, revocation_reason="")
        entity_id = entity_ids.get(award.badge_class_id or "", "")
        out.append(AwardEvent(e.sequence, e.kind, e.time, award_id, award, entity_id))
    return out


def watch_hub(db: Database, limits: WatchLimits, encode: EventEncoding) -> WatchHub:
    """The watch hub of ``db`` for this process: rung by the commits of its events, it reads
    the watched orgs' events and hands each stream the events as ``encode`` made them."""
    if db.batch_engine is not None:
        # run_write commits through an engine of its own (SQLite: the sync engine, in a worker
        # thread; PostgreSQL: the group commit's writers); its commits of events must wake this
        # process's watchers too.
        events.share_bell(db.engine, db.batch_engine)

    async def read(org_id: int, after: int, limit: int) -> list[Event]:
        # What the hub and a stream catching up send.
        return encode(await db.run_read(_events_after, org_id, after, limit))

    async def heads(org_ids: Collection[int]) -> dict[int, int]:
        # The last committed sequence of each org (the hub's poll).
        found: dict[int, int] = await db.run_read(events.last_sequences, org_ids)
        return found

    bell = events.bell(db.engine)
    # PostgreSQL: other processes' commits wake the hub by LISTEN/NOTIFY (store.notify); the
    # process's own commits are announced to them from the same bell.
    notices = None if db.is_sqlite else notify.notices_of(db, bell)
    return WatchHub(bell, read, heads, limits, db, notices)


async def join_watch(db: Database, hub: WatchHub, sub: Subscription, after: int) -> int:
    """Joins a stream that took its slot (``hub.open``) to its org's feed: it gets every event
    after ``after`` (0: after the org's current sequence). Returns the sequence it starts
    after. ``after`` past the org's current sequence is INVALID_ARGUMENT; while the server
    shuts down, SERVER_SHUTTING_DOWN."""
    current = await db.run_read(events.last_sequence, sub.org_id)
    if after > current:
        raise InvalidArgument(
            "after_sequence", f"must be between 0 and the org's current sequence {current}"
        )
    start = after or current
    if hub.closed:
        raise ServerShuttingDown(start)
    hub.join(sub, start, current)
    return start
