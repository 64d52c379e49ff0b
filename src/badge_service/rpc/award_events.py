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
process's watch hub (``service.watch``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc

from badge_service import metrics
from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain.badges import BadgeStateType
from badge_service.domain.errors import InvalidArgument
from badge_service.logs import request_id
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.award_messages import required_recipient, state_to_proto
from badge_service.rpc.interceptor import REQUEST_ID
from badge_service.service import Database, award_events
from badge_service.service.watch import WatchHub

WATCH_METADATA_KEY = "x-watch-after-sequence"


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
        recipient = required_recipient(request.recipient, "recipient")
        state = _state_from_proto(request.state)
        now = dt.datetime.now(dt.UTC)
        result = await award_events.record_progress(
            self._db, who.org_id, request.badge_id, recipient, state, now
        )
        return state_to_proto(result)

    async def ListRecipientBadgeStates(
        self, request: pb.ListRecipientBadgeStatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRecipientBadgeStatesResponse:
        """The recipient's state on every badge of the org, in badge id order: the recorded
        state, or the badge's first state with no update_time."""
        who = current_principal()
        recipient = required_recipient(request.recipient, "recipient")
        page = await award_events.recipient_badge_states(
            self._db, who.org_id, recipient, request.page_size, request.page_token
        )
        return pb.ListRecipientBadgeStatesResponse(
            states=[state_to_proto(s) for s in page.states],
            next_page_token=page.next_token,
            total_size=page.total,
        )

    @wire.serialized(pb.AwardEvent)
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
            # Joined before the initial metadata: an event committed once the client has the
            # metadata is delivered (from the window, or read with the backlog).
            start = await award_events.join_watch(self._db, hub, sub, after)
            # The call's request id rides along (free here: the stream sends initial
            # metadata anyway), made or sent, as a unary call echoes a sent one.
            rid = request_id.get()
            await context.send_initial_metadata(
                ((WATCH_METADATA_KEY, str(start)),) + (((REQUEST_ID, rid),) if rid else ())
            )
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
