"""AwardService's progress and event RPCs: RecordProgress, ListRecipientBadgeStates and
WatchAwards (mixed into AwardServicer, which sets ``_db``, ``_base`` and ``_hub``).

WatchAwards protocol: the server fixes the subscription point (the org's last committed
sequence) and only then sends the stream's initial metadata, ``x-watch-after-sequence: N``.
Every event with a sequence above N is delivered, in sequence order, exactly once; a client
that waits for the initial metadata before writing knows its writes will be seen. Events
committed in this process reach the stream at once; events of other processes (``serve
--workers``) within one poll interval. When the server shuts down the stream ends with
UNAVAILABLE (reason SERVER_SHUTTING_DOWN, metadata ``last_sequence``): retry to resubscribe.
A stream that falls too far behind (its client reads too slowly, or not at all) ends with
RESOURCE_EXHAUSTED (reason WATCH_TOO_SLOW, metadata ``last_sequence``, the last event sent);
opening one past the per-org or per-process limit is RESOURCE_EXHAUSTED (reason
WATCH_STREAMS_PER_ORG_LIMIT or WATCH_STREAMS_PER_PROCESS_LIMIT). After either, resubscribe with
``after_sequence`` = the last sequence received and nothing is lost. Streams are fed by the
process's watch hub (``rpc.watch``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING

import grpc

from badge_service import metrics
from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain import paging
from badge_service.domain.awards import Recipient, RecipientKind, check_recipient, recipient_key
from badge_service.domain.badges import Badge, BadgeFilter, BadgeStateType
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.progress import (
    LIST_DEFAULT_PAGE_SIZE,
    LIST_MAX_PAGE_SIZE,
    RecipientBadgeState,
    default_state,
)
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import ts
from badge_service.rpc.watch import BATCH, Event, ServerShuttingDown, WatchHub
from badge_service.store import award_definitions as definitions
from badge_service.store import awards as award_store
from badge_service.store import badges as badge_store
from badge_service.store import events
from badge_service.store import progress as progress_store
from badge_service.store.events import StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from badge_service.domain.awards import Award
    from badge_service.store.db import Database

WATCH_METADATA_KEY = "x-watch-after-sequence"
_KIND = {
    "awarded": pb.AWARD_EVENT_TYPE_AWARDED,
    "revoked": pb.AWARD_EVENT_TYPE_REVOKED,
    "progress": pb.AWARD_EVENT_TYPE_PROGRESS,
}


def recipient_from_proto(msg: pb.Recipient, where: str) -> Recipient:
    """The checked, normalised recipient of a request."""
    which = msg.WhichOneof("identity")
    if which is None:
        raise InvalidArgument(where, "is required: member_id, email or url")
    return check_recipient(Recipient(RecipientKind(which), getattr(msg, which)), where)


def recipient_to_proto(r: Recipient) -> pb.Recipient:
    """The message of a recipient."""
    return pb.Recipient(**{r.kind.value: r.value})


def state_to_proto(s: RecipientBadgeState) -> pb.RecipientBadgeState:
    """The message of a recipient's badge state."""
    return pb.RecipientBadgeState(
        badge_id=s.badge_id,
        recipient=recipient_to_proto(s.recipient),
        state=int(s.state),  # type: ignore[arg-type]
        order=s.order,
        update_time=ts(s.update_time),
    )


def _state_from_proto(number: int) -> BadgeStateType:
    if number == 0:
        raise InvalidArgument("state", "is required: unearned, in progress or earned")
    try:
        return BadgeStateType(number)
    except ValueError:
        raise InvalidArgument("state", f"{number} is not a known value") from None


class AwardEventsMixin:
    """RecordProgress, ListRecipientBadgeStates and WatchAwards."""

    _db: Database
    _base: str
    _hub: WatchHub

    async def RecordProgress(
        self, request: pb.RecordProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecipientBadgeState:
        """Moves the recipient's state on a badge forward (never back); the current state
        again changes nothing. A move emits a PROGRESS event. Reaching the earned state does
        not award the badge (CreateAward does)."""
        who = current_principal()
        recipient = recipient_from_proto(request.recipient, "recipient")
        state = _state_from_proto(request.state)
        now = dt.datetime.now(dt.UTC)
        result = await self._db.run_write(
            _record, who.org_id, request.badge_id, recipient, state, now
        )
        return state_to_proto(result)

    async def ListRecipientBadgeStates(
        self, request: pb.ListRecipientBadgeStatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRecipientBadgeStatesResponse:
        """The recipient's state on every badge of the org, in badge id order: the recorded
        state, or the badge's first state with no update_time."""
        who = current_principal()
        recipient = recipient_from_proto(request.recipient, "recipient")
        rkey = recipient_key(recipient)
        size = paging.resolve_page_size(
            request.page_size, default=LIST_DEFAULT_PAGE_SIZE, maximum=LIST_MAX_PAGE_SIZE
        )
        fingerprint = paging.filter_fingerprint("recipient_badge_states", rkey)
        after: int | None = None
        if request.page_token:
            token = paging.decode_page_token(request.page_token, fingerprint)
            # bool is an int to Python, and a key outside BIGINT fails in the database.
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < 2**63:
                raise InvalidArgument("page_token", "is not a token this service issued")
            after = token
        total, badges, next_token, recorded = await self._db.run_read(
            _states, who.org_id, rkey, size, after, fingerprint
        )
        states = [recorded.get(b.id) or default_state(b, recipient) for b in badges]
        return pb.ListRecipientBadgeStatesResponse(
            states=[state_to_proto(s) for s in states],
            next_page_token=next_token,
            total_size=total,
        )

    async def WatchAwards(
        self, request: pb.WatchAwardsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Streams the org's events committed after the subscription, in sequence order,
        until the client cancels, the server shuts down, or the stream falls too far behind.
        Yields serialized AwardEvents: the hub serializes an event once for every stream."""
        who = current_principal()
        after = request.after_sequence
        if after < 0:
            raise InvalidArgument("after_sequence", "must be 0 or more")
        hub = self._hub
        sub = hub.open(who.org_id)
        metrics.watch_opened()
        try:
            current = await self._db.run_read(events.last_sequence, who.org_id)
            if after > current:
                raise InvalidArgument(
                    "after_sequence", f"must be between 0 and the org's current sequence {current}"
                )
            start = after or current
            if hub.closed:
                raise ServerShuttingDown(start)
            # Joined before the initial metadata: an event committed once the client has the
            # metadata is delivered (from the window, or read with the backlog).
            hub.join(sub, start, current)
            await context.send_initial_metadata(((WATCH_METADATA_KEY, str(start)),))
            while True:
                for sequence, data in await hub.next(sub):
                    hub.writing(sub, sequence)
                    yield data
                    hub.written(sub)
        except (asyncio.CancelledError, GeneratorExit):
            # The hub dropped this stream while it was blocked in a write: it cancelled the
            # call's task, the interceptor's write raised and it is closing this generator.
            # Turn that into the drop's status (sent after the message being written).
            if sub.error is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise sub.error from None
        finally:
            hub.leave(sub)
            metrics.watch_closed()

    async def _read_events(self, org_id: int, after: int, limit: int) -> list[Event]:
        """The org's events after ``after`` (at most ``limit``), serialized: what the watch
        hub and a stream catching up send."""
        batch, found, entity_ids = await self._db.run_read(_events_after, org_id, after, limit)
        return [
            (m.sequence, m.SerializeToString())
            for m in self._event_messages(batch, found, entity_ids)
        ]

    async def _event_heads(self, org_ids: Collection[int]) -> dict[int, int]:
        """The last committed sequence of each org (the watch hub's poll)."""
        heads: dict[int, int] = await self._db.run_read(events.last_sequences, org_ids)
        return heads

    def _event_messages(
        self,
        batch: Sequence[StoredEvent],
        found: dict[str, Award],
        entity_ids: dict[str, str],
    ) -> list[pb.AwardEvent]:
        """The messages of a batch of events and their awards (see _events_after)."""
        # Imported here: rpc.awards defines the servicer that mixes this class in.
        from badge_service.rpc.awards import award_to_proto

        out = []
        for e in batch:
            msg = pb.AwardEvent(sequence=e.sequence, type=_KIND[e.kind], time=ts(e.time))
            if e.kind == "progress":
                msg.progress.CopyFrom(state_to_proto(progress_store.state_from_payload(e.payload)))
                out.append(msg)
                continue
            award_id = str(e.payload["award_id"])
            award = found.get(award_id)
            if award is None:
                # Deleted since (with its badge class): the event still names it.
                msg.award.id = award_id
                out.append(msg)
                continue
            # The award as it was at the event, so that the stream reads the same whenever it
            # is read: an award changes only by its one revocation, so an AWARDED event shows
            # it unrevoked, and expiry is judged at the event's time.
            if e.kind == "awarded":
                award = dataclasses.replace(award, revoked_at=None, revocation_reason="")
            entity_id = entity_ids.get(award.badge_class_id or "", "")
            msg.award.CopyFrom(award_to_proto(award, self._base, entity_id, now=e.time))
            out.append(msg)
        return out


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


def _states(
    conn: Connection, org_id: int, rkey: str, size: int, after: int | None, fingerprint: str
) -> tuple[int, list[Badge], str, dict[int, RecipientBadgeState]]:
    flt = BadgeFilter()
    total = badge_store.count_badges(conn, org_id, flt)
    rows = badge_store.list_badges(conn, org_id, flt, limit=size + 1, after_id=after)
    badges, next_token = paging.keyset_page(rows, size, fingerprint, lambda b: b.id)
    return total, badges, next_token, progress_store.states_of(conn, org_id, rkey, badges)


def _events_after(
    conn: Connection, org_id: int, after: int, limit: int = BATCH
) -> tuple[Sequence[StoredEvent], dict[str, Award], dict[str, str]]:
    """A batch of the org's events after a sequence, the awards they name (one query) and
    those awards' class entity ids, in one snapshot."""
    batch = events.read_after(conn, org_id, after, limit=limit)
    award_ids = [str(e.payload["award_id"]) for e in batch if e.kind != "progress"]
    found = award_store.get_awards(conn, org_id, award_ids)
    entity_ids = award_store.class_entity_ids(
        conn, [a.badge_class_id for a in found.values() if a.badge_class_id is not None]
    )
    return batch, found, entity_ids
