"""AwardService's messages: awards, recipients, states and events to and from ``badges.v1``,
and ``AwardReplies``, the gRPC side of ``service.awards.AwardEncoding``.

One module for the converters that AwardServicer and its mixins (``rpc.award_events``,
``rpc.award_openbadges``) all use, so that none of them imports another for them.

Replies are built from each award's stored bytes (see award_bytes): its serialized reply
without the fields that change, followed by those fields (a message's fields may come in any
order; see ``rpc.wire``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.domain import awards as domain
from badge_service.domain import limits, openbadges
from badge_service.domain.awards import (
    Award,
    AwardKind,
    AwardState,
    Evidence,
    Recipient,
    RecipientKind,
    check_recipient,
)
from badge_service.domain.badge_templates import parse_template_id
from badge_service.domain.errors import DomainError, InvalidArgument
from badge_service.domain.progress import RecipientBadgeState
from badge_service.rpc import wire
from badge_service.rpc.convert import dict_to_struct, from_ts, stored_size, struct_to_dict, ts
from badge_service.rpc.errors import to_status_proto
from badge_service.service.award_events import AwardEvent
from badge_service.service.awards import (
    AwardPage,
    CreatedAward,
    RevokedAward,
    StoredAward,
    from_micros,
    opt_micros,
    to_micros,
)
from badge_service.service.watch import Event

_STATES = {
    AwardState.ACTIVE: pb.AWARD_STATE_ACTIVE,
    AwardState.REVOKED: pb.AWARD_STATE_REVOKED,
    AwardState.EXPIRED: pb.AWARD_STATE_EXPIRED,
}
_EVENT_TYPES = {
    "awarded": pb.AWARD_EVENT_TYPE_AWARDED,
    "revoked": pb.AWARD_EVENT_TYPE_REVOKED,
    "progress": pb.AWARD_EVENT_TYPE_PROGRESS,
}


# --- requests --------------------------------------------------------------------------------


def recipient_from_proto(msg: pb.Recipient | None) -> Recipient | None:
    """The domain recipient of a message, unchecked; None when no identity is set."""
    if msg is None:
        return None
    which = msg.WhichOneof("identity")
    if which is None:
        return None
    return Recipient(RecipientKind(which), getattr(msg, which))


def required_recipient(msg: pb.Recipient, where: str) -> Recipient:
    """The checked, normalised recipient of a request, which must name one."""
    which = msg.WhichOneof("identity")
    if which is None:
        raise InvalidArgument(where, "is required: member_id, email or url")
    return check_recipient(Recipient(RecipientKind(which), getattr(msg, which)), where)


def evidence_from_proto(items: Sequence[pb.Evidence]) -> list[Evidence]:
    """The domain evidence of a request."""
    return [Evidence(e.url, e.narrative) for e in items]


def award_from_proto(msg: pb.Award, prefix: str) -> Award:
    """The domain award a create request asks for (unchecked). badge_class_id holds the
    class reference as given (id or entity id) until the class is looked up."""
    which = msg.WhichOneof("definition")
    if which is None:
        raise domain.no_definition(f"{prefix}.badge_id")
    recipient = recipient_from_proto(msg.recipient if msg.HasField("recipient") else None)
    award = Award(
        kind=AwardKind.BADGE,
        recipient=recipient,  # type: ignore[arg-type]  # checked by check_details
        issued_at=from_ts(msg, "issued_at", f"{prefix}.issued_at"),
        narrative=msg.narrative,
        evidence=evidence_from_proto(msg.evidence),
        custom_data=struct_to_dict(
            msg.custom_data, f"{prefix}.custom_data", limits.AWARD_CUSTOM_DATA_BYTES
        ),
    )
    if which == "badge_id":
        award.badge_id = msg.badge_id
    elif which == "badge_template_id":
        award.kind = AwardKind.TEMPLATE
        award.badge_template_id = parse_template_id(
            msg.badge_template_id, f"{prefix}.badge_template_id"
        )
    else:
        award.kind = AwardKind.CLASS
        if not msg.badge_class_id:
            raise InvalidArgument(f"{prefix}.badge_class_id", "is required")
        award.badge_class_id = msg.badge_class_id
    return award


# --- messages --------------------------------------------------------------------------------


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


def _stored_proto(award: Award, class_entity_id: str) -> pb.Award:
    """The fields of an award's message that never change and do not depend on the server:
    what ``awards.message`` stores (see award_bytes for the rest)."""
    msg = pb.Award(
        id=award.id,
        recipient=recipient_to_proto(award.recipient),
        issued_at=ts(award.issued_at),
        narrative=award.narrative,
        evidence=[pb.Evidence(url=e.url, narrative=e.narrative) for e in award.evidence],
        custom_data=dict_to_struct(award.custom_data),
        expires_at=ts(award.expires_at),
        claim_code=award.claim_code,
        create_time=ts(award.create_time),
        created_by=award.created_by,
    )
    if award.kind is AwardKind.BADGE:
        assert award.badge_id is not None
        msg.badge_id = award.badge_id
    elif award.kind is AwardKind.TEMPLATE:
        assert award.badge_template_id is not None
        msg.badge_template_id = award.badge_template_id
    else:
        msg.badge_class_id = class_entity_id or award.badge_class_id or ""
    return msg


def stored_award(award: Award, class_entity_id: str) -> tuple[bytes, int]:
    """``AwardEncoding.stored``: the serialized fields that never change, and their stored
    size (what the award limits count)."""
    msg = _stored_proto(award, class_entity_id)
    return msg.SerializeToString(), stored_size(msg)


def award_to_proto(
    award: Award, base_url: str, class_entity_id: str = "", now: dt.datetime | None = None
) -> pb.Award:
    """The message of a stored award. A badge class award names its class by entity id
    (``class_entity_id``) and carries its assertion's verification URL."""
    now = now or dt.datetime.now(dt.UTC)
    msg = _stored_proto(award, class_entity_id)
    msg.state = _STATES[award.state(now)]
    msg.revocation_reason = award.revocation_reason
    revoke_time = ts(award.revoked_at)
    if revoke_time is not None:
        msg.revoke_time.CopyFrom(revoke_time)
    if award.kind is AwardKind.CLASS:
        msg.open_badge_id = openbadges.assertion_url(base_url, award.id)
    return msg


def event_to_proto(e: AwardEvent, base_url: str) -> pb.AwardEvent:
    """The message of an award event."""
    msg = pb.AwardEvent(sequence=e.sequence, type=_EVENT_TYPES[e.kind], time=ts(e.time))
    if e.progress is not None:
        msg.progress.CopyFrom(state_to_proto(e.progress))
    elif e.award is None:
        msg.award.id = e.award_id
    else:
        msg.award.CopyFrom(award_to_proto(e.award, base_url, e.class_entity_id, now=e.time))
    return msg


# The state field of each state, and the kind column's value of a class award: a list page
# renders 25 awards or more, and these are the same every time.
_STATE_FIELD = {
    state: wire.varint_field(pb.Award.STATE_FIELD_NUMBER, state)
    for state in (pb.AWARD_STATE_ACTIVE, pb.AWARD_STATE_REVOKED, pb.AWARD_STATE_EXPIRED)
}
_ACTIVE_FIELD = _STATE_FIELD[pb.AWARD_STATE_ACTIVE]
_CLASS_KIND = AwardKind.CLASS.value
# The key of one item of ListAwardsResponse.awards (length-delimited).
_AWARDS_KEY = wire.varint(pb.ListAwardsResponse.AWARDS_FIELD_NUMBER << 3 | 2)


def award_bytes(
    message: bytes,
    award_id: str,
    kind: str,
    expires_at: int | None,
    revoked_at: int | None,
    revocation_reason: str,
    now: int,
    base_url: str,
) -> bytes:
    """The serialized Award of a stored award: its stored bytes followed by the fields that
    change (state at ``now``, revocation) or depend on the server (open_badge_id); parsed, it
    equals award_to_proto's message (a message's fields may come in any order). Times are
    integer microseconds."""
    if revoked_at is None and (expires_at is None or expires_at > now) and kind != _CLASS_KIND:
        return message + _ACTIVE_FIELD  # the usual case, first
    if revoked_at is not None:
        state = pb.AWARD_STATE_REVOKED
    elif expires_at is not None and expires_at <= now:
        state = pb.AWARD_STATE_EXPIRED
    else:
        state = pb.AWARD_STATE_ACTIVE
    out = [message, _STATE_FIELD[state]]
    if revocation_reason:
        out.append(
            wire.message_field(pb.Award.REVOCATION_REASON_FIELD_NUMBER, revocation_reason.encode())
        )
    if revoked_at is not None:
        revoke_time = ts(from_micros(revoked_at))
        assert revoke_time is not None
        out.append(
            wire.message_field(pb.Award.REVOKE_TIME_FIELD_NUMBER, revoke_time.SerializeToString())
        )
    if kind == _CLASS_KIND:
        out.append(
            wire.message_field(
                pb.Award.OPEN_BADGE_ID_FIELD_NUMBER,
                openbadges.assertion_url(base_url, award_id).encode(),
            )
        )
    return b"".join(out)


def _now_micros() -> int:
    return to_micros(dt.datetime.now(dt.UTC))


class AwardReplies:
    """The gRPC encoding of awards (``service.awards.AwardEncoding``): serialized
    ``badges.v1`` messages, built from each award's stored bytes; class awards' verification
    URLs under ``base_url``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    # A plain function: the stored bytes do not depend on the server.
    stored = staticmethod(stored_award)

    def reply(self, stored: StoredAward, entity_ids: dict[str, str], now: int) -> bytes:
        """The serialized Award of a stored award, from its stored bytes when it has them
        (rows from before migration 0008 are built from their columns, with ``entity_ids``)."""
        a = stored.award
        if stored.message is None:
            entity_id = entity_ids.get(a.badge_class_id or "", "")
            return award_to_proto(a, self.base_url, entity_id, from_micros(now)).SerializeToString()
        return award_bytes(
            stored.message,
            a.id,
            a.kind.value,
            opt_micros(a.expires_at),
            opt_micros(a.revoked_at),
            a.revocation_reason,
            now,
            self.base_url,
        )

    def _created(self, created: CreatedAward, now: int) -> bytes:
        a = created.award
        return award_bytes(
            created.message,
            a.id,
            a.kind.value,
            opt_micros(a.expires_at),
            None,
            "",
            now,
            self.base_url,
        )

    def created(self, created: CreatedAward) -> bytes:
        """A serialized Award: the reply to CreateAward and RedeemClaimCode."""
        return self._created(created, _now_micros())

    def batch(self, results: Sequence[CreatedAward | DomainError]) -> bytes:
        """A serialized BatchCreateAwardsResponse."""
        replied = _now_micros()
        message_field = wire.message_field
        return b"".join(
            message_field(
                _RESULTS,
                message_field(_RESULT_ERROR, to_status_proto(r).SerializeToString())
                if isinstance(r, DomainError)
                else message_field(_RESULT_AWARD, self._created(r, replied)),
            )
            for r in results
        )

    def revoked(self, revoked: RevokedAward) -> bytes:
        """A serialized Award: the reply to RevokeAward."""
        return self.reply(revoked.stored, revoked.entity_ids, _now_micros())

    def rows(self, rows: Sequence[Sequence[Any]], next_token: str, total: int) -> bytes:
        """A serialized ListAwardsResponse of a definition's stored rows."""
        now = _now_micros()
        base_url = self.base_url
        return _list_bytes(
            [
                award_bytes(message, award_id, kind, expires, revoked, reason, now, base_url)
                for award_id, kind, message, expires, revoked, reason in rows
            ],
            next_token,
            total,
        )

    def page(self, page: AwardPage) -> bytes:
        """A serialized ListAwardsResponse of decoded rows."""
        now = page.now
        return _list_bytes(
            [self.reply(s, page.entity_ids, now) for s in page.awards], page.next_token, page.total
        )

    def events(self, batch: Sequence[AwardEvent]) -> list[Event]:
        """Serialized AwardEvents, for the watch hub (``service.award_events.EventEncoding``)."""
        base_url = self.base_url
        return [(e.sequence, event_to_proto(e, base_url).SerializeToString()) for e in batch]


_RESULTS = pb.BatchCreateAwardsResponse.RESULTS_FIELD_NUMBER
_RESULT_AWARD = pb.BatchCreateAwardResult.AWARD_FIELD_NUMBER
_RESULT_ERROR = pb.BatchCreateAwardResult.ERROR_FIELD_NUMBER


def _list_bytes(awards: list[bytes], next_token: str, total: int) -> bytes:
    # The awards, then the other fields.
    tail = pb.ListAwardsResponse(next_page_token=next_token, total_size=total)
    varint = wire.varint
    key = _AWARDS_KEY
    return b"".join([*(key + varint(len(a)) + a for a in awards), tail.SerializeToString()])
