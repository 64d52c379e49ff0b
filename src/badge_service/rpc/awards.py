"""badges.v1.AwardService: awarding CrowdTwist badges, Credly templates and Badgr classes.

This module serves CreateAward, BatchCreateAwards, RedeemClaimCode, GetAward, ListAwards and
RevokeAward; the Open Badges RPCs come from AwardOpenBadgesMixin and the event and progress
RPCs from AwardEventsMixin. One code path creates awards for all three create RPCs: a single
award is a batch of one that raises its error instead of reporting it.

Each write is one synchronous function of a Connection (``_create_one``, ``_create``,
``_redeem``, ``_revoke``) run as the whole transaction by ``Database.run_write``: on SQLite in
one trip to the writer thread, group-committed with the writes queued beside it. Replies are
built from each award's stored bytes (see award_bytes); an unfiltered list of a definition
reads its rows and kept count with ``Database.fetch``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from sqlalchemy.engine import Connection

from badge_service import metrics
from badge_service.api.badges.v1 import award_pb2 as pb
from badge_service.api.badges.v1 import award_pb2_grpc as pb_grpc
from badge_service.domain import awards as domain
from badge_service.domain import badge_classes, claim_codes, limits, lookups, openbadges, paging
from badge_service.domain.awards import (
    Award,
    AwardFilter,
    AwardKind,
    AwardState,
    Evidence,
    Recipient,
    RecipientKind,
)
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.badge_templates import RESOURCE as TEMPLATE
from badge_service.domain.badge_templates import BadgeTemplate, parse_template_id
from badge_service.domain.badges import Badge
from badge_service.domain.custom_fields import CustomField, check_extra_data
from badge_service.domain.errors import DomainError, InvalidArgument, NotFound
from badge_service.domain.ids import new_hex_id
from badge_service.domain.requests import RequestKey
from badge_service.metrics import CAP_REASONS
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.award_events import AwardEventsMixin, recipient_to_proto
from badge_service.rpc.award_openbadges import AwardOpenBadgesMixin, open_badge_struct
from badge_service.rpc.convert import (
    dict_to_struct,
    from_ts,
    stored_size,
    struct_to_dict,
    ts,
)
from badge_service.rpc.errors import to_status_proto
from badge_service.rpc.issuers import after_hex_id, base_url_of
from badge_service.rpc.request_ids import request_key
from badge_service.rpc.watch import WatchHub, WatchLimits
from badge_service.service.request_ids import write_once
from badge_service.store import award_definitions as definitions
from badge_service.store import awards as store
from badge_service.store import custom_fields as fields_store
from badge_service.store import events
from badge_service.store import progress as progress_store
from badge_service.store.awards import StoredAward
from badge_service.store.badges import RESOURCE as BADGE
from badge_service.store.db import Database, batch_cache, from_micros, opt_micros, to_micros

T = TypeVar("T")

_STATES = {
    AwardState.ACTIVE: pb.AWARD_STATE_ACTIVE,
    AwardState.REVOKED: pb.AWARD_STATE_REVOKED,
    AwardState.EXPIRED: pb.AWARD_STATE_EXPIRED,
}


def recipient_from_proto(msg: pb.Recipient | None) -> Recipient | None:
    """The domain recipient of a message; None when no identity is set."""
    if msg is None:
        return None
    which = msg.WhichOneof("identity")
    if which is None:
        return None
    return Recipient(RecipientKind(which), getattr(msg, which))


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


# The state field (11) of each state, and the kind column's value of a class award: a list
# page renders 25 awards or more, and these are the same every time.
_STATE_FIELD = {
    state: wire.varint_field(11, state)
    for state in (pb.AWARD_STATE_ACTIVE, pb.AWARD_STATE_REVOKED, pb.AWARD_STATE_EXPIRED)
}
_ACTIVE_FIELD = _STATE_FIELD[pb.AWARD_STATE_ACTIVE]
_CLASS_KIND = AwardKind.CLASS.value


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
        out.append(wire.message_field(12, revocation_reason.encode()))
    if revoked_at is not None:
        revoke_time = ts(from_micros(revoked_at))
        assert revoke_time is not None
        out.append(wire.message_field(13, revoke_time.SerializeToString()))
    if kind == _CLASS_KIND:
        out.append(wire.message_field(15, openbadges.assertion_url(base_url, award_id).encode()))
    return b"".join(out)


def _reply(stored: StoredAward, entity_ids: dict[str, str], base_url: str, now: int) -> bytes:
    """The serialized Award of a stored award, from its stored bytes when it has them (rows
    from before migration 0008 are built from their columns, with ``entity_ids``)."""
    a = stored.award
    if stored.message is None:
        entity_id = entity_ids.get(a.badge_class_id or "", "")
        return award_to_proto(a, base_url, entity_id, from_micros(now)).SerializeToString()
    return award_bytes(
        stored.message,
        a.id,
        a.kind.value,
        opt_micros(a.expires_at),
        opt_micros(a.revoked_at),
        a.revocation_reason,
        now,
        base_url,
    )


def _now_micros() -> int:
    return to_micros(dt.datetime.now(dt.UTC))


def _evidence(items: Sequence[pb.Evidence]) -> list[Evidence]:
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
        evidence=_evidence(msg.evidence),
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


@dataclass(slots=True)
class _Prepared:
    """An award that passed its definition's rules; it still needs its counter slots
    (``counters``, CrowdTwist) and a free dedupe key (Credly) to be inserted. ``message`` is its
    serialized reply without the fields that change."""

    index: int
    award: Award
    dedupe_key: str | None
    message: bytes
    size: int  # stored_size of the message: what its limits count
    counters: list[domain.CounterLimit] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Created:
    """A created award and its stored reply bytes."""

    award: Award
    message: bytes


class _Definitions:
    """The definitions and custom fields one call needs, each read once per call (custom
    fields once per group commit: see batch_cache)."""

    def __init__(self, conn: Connection, org_id: int) -> None:
        self._conn = conn
        self._org_id = org_id
        self._fields: list[CustomField] | None = None
        self._badges: dict[int, Badge | DomainError] = {}
        self._templates: dict[str, BadgeTemplate | DomainError] = {}
        self._classes: dict[str, BadgeClass | DomainError] = {}

    def fields(self) -> list[CustomField]:
        """The org's custom fields."""
        if self._fields is None:
            # Custom fields change only through Database.write(), never inside a group
            # commit, so the writes of one batch may share one read of them.
            cache = batch_cache(self._conn)
            key = ("award-custom-fields", self._org_id)
            found = cache.get(key) if cache is not None else None
            if found is None:
                found = fields_store.list_fields(self._conn, self._org_id)
                if cache is not None:
                    cache[key] = found
            self._fields = found
        return self._fields

    def badge(self, badge_id: int) -> Badge:
        """A badge of the org, or its NOT_FOUND."""
        if badge_id not in self._badges:
            try:
                self._badges[badge_id] = definitions.badge(self._conn, self._org_id, badge_id)
            except DomainError as err:
                self._badges[badge_id] = err
        return _or_raise(self._badges[badge_id])

    def template(self, template_id: str) -> BadgeTemplate:
        """A template of the org, or its NOT_FOUND."""
        if template_id not in self._templates:
            try:
                self._templates[template_id] = definitions.template(
                    self._conn, self._org_id, template_id
                )
            except DomainError as err:
                self._templates[template_id] = err
        return _or_raise(self._templates[template_id])

    def badge_class(self, ref: str, where: str) -> BadgeClass:
        """A class of the org by id or entity id, or its NOT_FOUND."""
        if ref not in self._classes:
            try:
                key = lookups.key_of_id_or_entity_id(ref, where, badge_classes.BADGE_CLASS)
                self._classes[ref] = definitions.badge_class(self._conn, self._org_id, key)
            except DomainError as err:
                self._classes[ref] = err
        return _or_raise(self._classes[ref])

    def known_class(self, badge_class: BadgeClass) -> None:
        """Notes a class this call already read (by its id)."""
        self._classes[badge_class.id] = badge_class


def _or_raise(value: T | DomainError) -> T:
    # Lookups are cached with their outcome, so a batch naming one missing definition
    # 10,000 times asks the database once.
    if isinstance(value, DomainError):
        raise value
    return value


def _prepare(
    defs: _Definitions, index: int, award: Award, prefix: str, now: dt.datetime
) -> _Prepared:
    """Checks one award against its definition's rules and fills in what the definition
    decides (expiry, the class's id, the counters a badge award needs a slot of)."""
    domain.check_details(award, now=now, prefix=prefix)
    assert award.issued_at is not None
    rkey = award.recipient_key
    dedupe_key: str | None = None
    badge: Badge | None = None
    entity_id = ""
    if award.kind is AwardKind.BADGE:
        assert award.badge_id is not None
        badge = defs.badge(award.badge_id)
        domain.check_badge_earnable(badge, award.issued_at)
    elif award.kind is AwardKind.TEMPLATE:
        assert award.badge_template_id is not None
        template = defs.template(award.badge_template_id)
        domain.check_template_awardable(template)
        award.expires_at = domain.template_expiry(template, award.issued_at)
        dedupe_key = domain.dedupe_key(template, rkey)
    else:
        assert award.badge_class_id is not None
        badge_class = defs.badge_class(award.badge_class_id, f"{prefix}.badge_class_id")
        domain.check_class_awardable(badge_class)
        award.badge_class_id = badge_class.id
        award.expires_at = domain.class_expiry(badge_class, award.issued_at)
        entity_id = badge_class.entity_id
    where = f"{prefix}.custom_data" if prefix else "custom_data"
    award.custom_data = check_extra_data(award.custom_data, defs.fields(), where)
    # As stored, the org's defaults included.
    limits.check_struct(award.custom_data, limits.AWARD_CUSTOM_DATA_BYTES, where)
    caps = [] if badge is None else domain.badge_limits(badge, award.issued_at)
    stored = _stored_proto(award, entity_id)
    size = stored_size(stored)
    limits.check_bytes(size, limits.AWARD_BYTES, prefix or "request", "as stored")
    return _Prepared(index, award, dedupe_key, stored.SerializeToString(), size, caps)


class _Tally:
    """What a create wrote (awards by kind, cap refusals by reason), filled in its
    transaction and counted in the metrics once the caller is answered with it (_counted).
    A retry answered from a stored reply runs no create, so it counts nothing again."""

    __slots__ = ("issued", "refused")

    def __init__(self) -> None:
        self.issued: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def add(self, results: Sequence[_Created | DomainError]) -> None:
        """Counts a create's results."""
        for r in results:
            if isinstance(r, _Created):
                kind = r.award.kind.value
                self.issued[kind] = self.issued.get(kind, 0) + 1
            elif r.reason in CAP_REASONS:
                self.refused[r.reason] = self.refused.get(r.reason, 0) + 1


async def _counted(
    db: Database,
    key: RequestKey | None,
    now: dt.datetime,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    encode: Callable[[T], bytes],
) -> bytes:
    """write_once of a create (``fn`` takes a _Tally last), its outcome counted in the metrics
    when they are on: the awards and refusals of a committed write, or the cap refusal that
    one raised (CreateAward, RedeemClaimCode)."""
    meter = metrics.active()
    if meter is None:
        return await write_once(db, key, now, fn, args, encode)
    tally = _Tally()
    try:
        reply = await write_once(db, key, now, fn, (*args, tally), encode)
    except DomainError as err:
        if err.reason in CAP_REASONS:
            meter.count_awards({}, {err.reason: 1})
        raise
    meter.count_awards(tally.issued, tally.refused)
    return reply


def _create(
    conn: Connection,
    org_id: int,
    items: Sequence[Award | DomainError],
    prefixes: Sequence[str],
    now: dt.datetime,
    defs: _Definitions | None = None,
    tally: _Tally | None = None,
) -> list[_Created | DomainError]:
    """Creates the awards that pass their rules, in the caller's transaction, and returns one
    result per item in order: the award, or why it was refused (counted in ``tally``)."""
    defs = defs or _Definitions(conn, org_id)
    # Every award below ends as created or refused; None only until then.
    results: list[_Created | DomainError | None] = [
        item if isinstance(item, DomainError) else None for item in items
    ]
    prepared: list[_Prepared] = []
    for i, item in enumerate(items):
        if isinstance(item, DomainError):
            continue
        try:
            prepared.append(_prepare(defs, i, item, prefixes[i], now))
        except DomainError as err:
            results[i] = err
    if len(items) > 1:
        # The reply of a batch carries every award it creates: the batch as a whole is refused
        # (nothing written) rather than answered with more than a message may hold.
        limits.check_bytes(
            sum(p.size for p in prepared),
            limits.BATCH_AWARDS_BYTES,
            "requests",
            "of awards in one batch, as stored",
        )
    # Counter slots first of the writes, so that a request refused for another reason takes
    # none.
    refused = store.take_counters(
        conn,
        org_id,
        [
            store.CounterWant(p.index, p.award.badge_id or 0, p.award.recipient_key, p.counters)
            for p in prepared
            if p.counters
        ],
    )
    for p in prepared:
        if p.index in refused:
            results[p.index] = domain.limit_reached(p.award.badge_id or 0, refused[p.index])
    prepared = [p for p in prepared if p.index not in refused]
    # Inserted in dedupe key order for the same reason (a unique index entry is locked).
    inserted = store.insert_awards(
        conn,
        [
            (p.award, p.dedupe_key, p.message)
            for p in sorted(prepared, key=lambda p: (p.dedupe_key or "", p.index))
        ],
    )
    template_deltas: dict[str, int] = {}
    definition_counts: dict[tuple[str, str], int] = {}
    created: list[str] = []
    for p in prepared:
        a = p.award
        if a.id not in inserted:
            # Only a Credly dedupe key makes an insert skip a row.
            assert a.badge_template_id is not None
            results[p.index] = domain.duplicate_award(a.badge_template_id, a.recipient_key)
            continue
        if a.badge_template_id is not None:
            template_deltas[a.badge_template_id] = template_deltas.get(a.badge_template_id, 0) + 1
        key = store.definition_of(a)
        definition_counts[key] = definition_counts.get(key, 0) + 1
        created.append(a.id)
        results[p.index] = _Created(a, p.message)
    store.add_template_counts(conn, org_id, template_deltas)
    store.add_award_counts(conn, org_id, definition_counts)
    # An award of a CrowdTwist badge puts its recipient in the badge's earned state (one
    # PROGRESS event when the state moves), before the AWARDED events.
    seen: set[tuple[int, str]] = set()
    earned: list[tuple[Badge, str, Recipient]] = []
    for p in prepared:
        a = p.award
        if a.badge_id is None or a.id not in inserted:
            continue
        if (a.badge_id, a.recipient_key) not in seen:
            seen.add((a.badge_id, a.recipient_key))
            earned.append((defs.badge(a.badge_id), a.recipient_key, a.recipient))
    progress = progress_store.mark_earned_many(conn, org_id, earned, now)
    # Last: the org's sequence row stays locked (PostgreSQL) until the commit.
    appended = [("progress", payload) for payload in progress]
    appended += [("awarded", {"award_id": award_id}) for award_id in created]
    if appended:
        events.append_events(conn, org_id, appended, now)
    done = [r for r in results if r is not None]
    assert len(done) == len(items)
    if tally is not None:
        tally.add(done)
    return done


def _create_one(
    conn: Connection, org_id: int, award: Award, now: dt.datetime, tally: _Tally | None = None
) -> _Created:
    """CreateAward's transaction: the award, or its refusal raised (which rolls it back)."""
    (result,) = _create(conn, org_id, [award], ["award"], now, None, tally)
    if isinstance(result, DomainError):
        raise result
    return result


def _redeem(
    conn: Connection,
    org_id: int,
    key: lookups.Key,
    code: str,
    award: Award,
    now: dt.datetime,
    tally: _Tally | None = None,
) -> _Created:
    """RedeemClaimCode's transaction: one use of the code and the award, both or neither."""
    defs = _Definitions(conn, org_id)
    badge_class = definitions.badge_class(conn, org_id, key)
    domain.check_class_awardable(badge_class)
    store.use_claim_code(conn, org_id, badge_class.id, code, now)
    award.badge_class_id = badge_class.id
    defs.known_class(badge_class)
    (result,) = _create(conn, org_id, [award], [""], now, defs, tally)
    if isinstance(result, DomainError):
        raise result
    return result


def _revoke(
    conn: Connection, org_id: int, award_id: str, reason: str, now: dt.datetime
) -> tuple[StoredAward, dict[str, str]]:
    """RevokeAward's transaction: the revoked award, and its class's entity id when its reply
    must be built from its columns (an award from before migration 0008)."""
    stored = store.revoke_award(conn, org_id, award_id, reason, now)
    award = stored.award
    if award.badge_template_id is not None:
        store.add_template_counts(conn, org_id, {award.badge_template_id: -1})
    if award.badge_id is not None:
        badge = definitions.badge(conn, org_id, award.badge_id)
        assert award.issued_at is not None
        periods = [x.period for x in domain.badge_limits(badge, award.issued_at)]
        store.release_counters(conn, badge.id, award.recipient_key, periods)
    entity_ids: dict[str, str] = {}
    if stored.message is None and award.badge_class_id is not None:
        entity_ids = store.class_entity_ids(conn, [award.badge_class_id])
    events.append(conn, org_id, "revoked", {"award_id": award.id}, now)
    return stored, entity_ids


def _list_filter(conn: Connection, org_id: int, request: pb.ListAwardsRequest) -> AwardFilter:
    """The filter of a ListAwards request, its definition checked to be the org's."""
    which = request.WhichOneof("subject")
    revoked = request.revoked if request.HasField("revoked") else None
    expired = request.expired if request.HasField("expired") else None
    if which == "badge_id":
        definitions.badge(conn, org_id, request.badge_id)
        return AwardFilter(badge_id=request.badge_id, revoked=revoked, expired=expired)
    if which == "badge_template_id":
        template_id = parse_template_id(request.badge_template_id, "badge_template_id")
        definitions.template(conn, org_id, template_id)
        return AwardFilter(badge_template_id=template_id, revoked=revoked, expired=expired)
    if which == "badge_class_id":
        key = lookups.key_of_id_or_entity_id(
            request.badge_class_id, "badge_class_id", badge_classes.BADGE_CLASS
        )
        badge_class = definitions.badge_class(conn, org_id, key)
        return AwardFilter(badge_class_id=badge_class.id, revoked=revoked, expired=expired)
    recipient = domain.check_recipient(recipient_from_proto(request.recipient), "recipient")
    return AwardFilter(
        recipient_key=domain.recipient_key(recipient), revoked=revoked, expired=expired
    )


def _not_found(kind: str, ref: int | str) -> NotFound:
    """The NOT_FOUND of a definition a list names, as the definition stores raise it."""
    resource = {
        store.BADGE: BADGE,
        store.TEMPLATE: TEMPLATE,
        store.CLASS: badge_classes.BADGE_CLASS,
    }
    return NotFound(resource[kind], ref)


@dataclass(frozen=True, slots=True)
class _Page:
    """A page of ListAwards read from the rows (_list)."""

    total: int
    awards: list[StoredAward]
    next_token: str
    entity_ids: dict[str, str]


def _list(
    conn: Connection, org_id: int, request: pb.ListAwardsRequest, size: int, now: dt.datetime
) -> _Page:
    """A ListAwards page in one read transaction: any subject and filter, and rows without
    stored bytes."""
    flt = _list_filter(conn, org_id, request)
    fingerprint = paging.filter_fingerprint("awards", flt)
    after = after_hex_id(request.page_token, fingerprint)
    # A definition's total is its kept count; a recipient's or a filtered one counts.
    total = store.count_awards(conn, org_id, flt, now)
    rows = store.list_awards(conn, org_id, flt, now, limit=size + 1, after=after)
    page, next_token = paging.keyset_page(rows, size, fingerprint, lambda s: s.award.id)
    entity_ids = store.class_entity_ids(
        conn, [s.award.badge_class_id for s in page if s.message is None and s.award.badge_class_id]
    )
    return _Page(total, page, next_token, entity_ids)


# misc: WatchAwards (of AwardEventsMixin) yields serialized events, not messages.
class AwardServicer(AwardEventsMixin, AwardOpenBadgesMixin, pb_grpc.AwardServiceServicer):  # type: ignore[misc]
    """Awards of the caller's organisation.

    The create, list and revoke RPCs answer with serialized bytes (the interceptor passes bytes
    through): each award's reply is stored with it (migration 0008), and a reply is those bytes
    plus the fields that change. Hence the ``type: ignore[override]`` on those methods, and
    WatchAwards yields the bytes the watch hub serialized once for every stream.
    """

    def __init__(
        self, db: Database, public_base_url: str, watch: WatchLimits | None = None
    ) -> None:
        self._db = db
        self._base = base_url_of(public_base_url)
        if db.sync_engine is not None:
            # On SQLite, run_write commits through the sync engine in a worker thread; its
            # commits of events must wake this process's watchers too.
            events.share_bell(db.engine, db.sync_engine)
        self._hub = WatchHub(
            events.bell(db.engine), self._read_events, self._event_heads, watch or WatchLimits(), db
        )

    # --- creating ----------------------------------------------------------------------------

    def _new_award(self, award: Award, org_id: int, key_id: int, now: dt.datetime) -> Award:
        award.id = new_hex_id()
        award.org_id = org_id
        award.created_by = key_id
        award.create_time = now
        return award

    def _reply_now(self, created: _Created) -> bytes:
        return self._created_bytes(created, _now_micros())

    def _created_bytes(self, created: _Created, now: int) -> bytes:
        a = created.award
        return award_bytes(
            created.message, a.id, a.kind.value, opt_micros(a.expires_at), None, "", now, self._base
        )

    async def CreateAward(  # type: ignore[override]
        self, request: pb.CreateAwardRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards a definition to a recipient, or says which rule refused it."""
        who = current_principal()
        key = request_key(request, who.org_id)
        now = dt.datetime.now(dt.UTC)
        award = self._new_award(
            award_from_proto(request.award, "award"), who.org_id, who.key_id, now
        )
        return await _counted(
            self._db, key, now, _create_one, (who.org_id, award, now), self._reply_now
        )

    async def BatchCreateAwards(  # type: ignore[override]
        self, request: pb.BatchCreateAwardsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards every request that passes its rules, in one transaction; one result per
        request, in order."""
        who = current_principal()
        key = request_key(request, who.org_id)
        if not request.requests:
            raise InvalidArgument("requests", "must have at least one request")
        limits.check_items(request.requests, limits.BATCH_AWARDS, "requests", "requests")
        now = dt.datetime.now(dt.UTC)
        items: list[Award | DomainError] = []
        prefixes: list[str] = []
        for i, req in enumerate(request.requests):
            if req.request_id:
                # One id for the whole batch: it is written in one transaction.
                raise InvalidArgument(
                    f"requests[{i}].request_id",
                    "must be empty inside a batch; set the batch's own request_id",
                )
            prefix = f"requests[{i}].award"
            prefixes.append(prefix)
            try:
                items.append(
                    self._new_award(
                        award_from_proto(req.award, prefix), who.org_id, who.key_id, now
                    )
                )
            except DomainError as err:
                items.append(err)
        return await _counted(
            self._db,
            key,
            now,
            _create,
            (who.org_id, items, prefixes, now, None),
            self._batch_reply,
        )

    def _batch_reply(self, results: list[_Created | DomainError]) -> bytes:
        # BatchCreateAwardsResponse.results (1) of BatchCreateAwardResult{award (1) | error (2)}.
        replied = _now_micros()
        return b"".join(
            wire.message_field(
                1,
                wire.message_field(2, to_status_proto(r).SerializeToString())
                if isinstance(r, DomainError)
                else wire.message_field(1, self._created_bytes(r, replied)),
            )
            for r in results
        )

    async def RedeemClaimCode(  # type: ignore[override]
        self, request: pb.RedeemClaimCodeRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Takes one use of a claim code and awards its badge class, both or neither."""
        who = current_principal()
        request_id = request_key(request, who.org_id)
        now = dt.datetime.now(dt.UTC)
        key = lookups.key_of_id_or_entity_id(
            request.id_or_entity_id, "id_or_entity_id", badge_classes.BADGE_CLASS
        )
        code = claim_codes.claim_code_of(request.claim_code, "claim_code")
        award = Award(
            kind=AwardKind.CLASS,
            recipient=recipient_from_proto(  # type: ignore[arg-type]
                request.recipient if request.HasField("recipient") else None
            ),
            narrative=request.narrative,
            evidence=_evidence(request.evidence),
            claim_code=code,
        )
        self._new_award(award, who.org_id, who.key_id, now)
        # The recipient and details are checked before a use is taken.
        domain.check_details(award, now=now, prefix="")
        return await _counted(
            self._db,
            request_id,
            now,
            _redeem,
            (who.org_id, key, code, award, now),
            self._reply_now,
        )

    # --- reading -----------------------------------------------------------------------------

    async def GetAward(
        self, request: pb.GetAwardRequest, context: grpc.aio.ServicerContext
    ) -> pb.Award:
        """Returns one award; with AWARD_VIEW_OPEN_BADGES_V2 a class award carries its
        Open Badges 2.0 Assertion."""
        who = current_principal()
        if not request.id:
            raise InvalidArgument("id", "is required")
        if request.view not in (pb.AWARD_VIEW_UNSPECIFIED, pb.AWARD_VIEW_OPEN_BADGES_V2):
            raise InvalidArgument("view", f"{request.view} is not a known value")
        async with self._db.read() as conn:
            award = await conn.run_sync(store.get_award, who.org_id, request.id)
            entity_ids = await conn.run_sync(
                store.class_entity_ids, [award.badge_class_id] if award.badge_class_id else []
            )
            out = award_to_proto(award, self._base, entity_ids.get(award.badge_class_id or "", ""))
            if request.view == pb.AWARD_VIEW_OPEN_BADGES_V2:
                doc = await open_badge_struct(conn, award, self._base)
                if doc is not None:
                    out.open_badge.CopyFrom(doc)
        return out

    async def ListAwards(  # type: ignore[override]
        self, request: pb.ListAwardsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Awards of one definition or one recipient, oldest first, by page token."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size,
            default=domain.LIST_DEFAULT_PAGE_SIZE,
            maximum=domain.LIST_MAX_PAGE_SIZE,
        )
        which = request.WhichOneof("subject")
        if which is None:
            raise InvalidArgument(
                "badge_id",
                "one of badge_id, badge_template_id, badge_class_id or recipient is required",
            )
        # A definition without the revoked and expired filters has a kept count and an index
        # to walk; a recipient's awards and filtered lists are counted (run_read).
        filtered = request.HasField("revoked") or request.HasField("expired")
        if which != "recipient" and not filtered:
            found = await self._fast_list(who.org_id, request, size)
            if found is not None:
                return found
        now = dt.datetime.now(dt.UTC)
        page = await self._db.run_read(_list, who.org_id, request, size, now)
        micros = to_micros(now)
        return self._list_bytes(
            [_reply(s, page.entity_ids, self._base, micros) for s in page.awards],
            page.next_token,
            page.total,
        )

    def _list_bytes(self, awards: list[bytes], next_token: str, total: int) -> bytes:
        # ListAwardsResponse.awards is field 1 (key byte 0x0A, length-delimited): the awards,
        # then the other fields.
        tail = pb.ListAwardsResponse(next_page_token=next_token, total_size=total)
        varint = wire.varint
        return b"".join([*(b"\n" + varint(len(a)) + a for a in awards), tail.SerializeToString()])

    async def _fast_list(
        self, org_id: int, request: pb.ListAwardsRequest, size: int
    ) -> bytes | None:
        """A definition's page (no revoked or expired filter) from its kept count and the
        stored replies (Database.fetch); None when a row has no stored bytes (from before
        migration 0008)."""
        which = request.WhichOneof("subject")
        ref: int | str
        if which == "badge_id":
            kind, ref = store.BADGE, request.badge_id
            flt = AwardFilter(badge_id=request.badge_id)
            shown: int | str = request.badge_id
        elif which == "badge_template_id":
            template_id = parse_template_id(request.badge_template_id, "badge_template_id")
            kind, ref = store.TEMPLATE, template_id
            flt = AwardFilter(badge_template_id=template_id)
            shown = template_id
        else:
            key = lookups.key_of_id_or_entity_id(
                request.badge_class_id, "badge_class_id", badge_classes.BADGE_CLASS
            )
            ref = shown = key.value
            if key.by_entity_id:
                (rows,) = await self._db.fetch(
                    (store.CLASS_ID_OF_ENTITY_ID, {"ref": key.value, "org_id": org_id})
                )
                if not rows:
                    raise _not_found(store.CLASS, shown)
                ref = str(rows[0][0])
            kind = store.CLASS
            flt = AwardFilter(badge_class_id=str(ref))
        statements = store.PAGES[kind]
        exists = (statements.exists, {"ref": ref, "org_id": org_id})
        fingerprint = paging.filter_fingerprint("awards", flt)
        try:
            after = after_hex_id(request.page_token, fingerprint) or ""
        except InvalidArgument:
            # A definition that is not the org's is NOT_FOUND whatever the token says.
            (found,) = await self._db.fetch(exists)
            if not found:
                raise _not_found(kind, shown) from None
            raise
        found, counted, rows = await self._db.fetch(
            exists,
            (statements.count, {"org_id": org_id, "ref_text": str(ref)}),
            (statements.page, {"ref": ref, "after": after, "limit": size + 1})
            if after
            else (statements.first, {"ref": ref, "limit": size + 1}),
        )
        # Before any row is used: the page is not limited to the org (see store.PAGES).
        if not found:
            raise _not_found(kind, shown)
        if any(row[2] is None for row in rows):
            return None
        total = int(counted[0][0]) if counted else 0
        page, next_token = paging.keyset_page(rows, size, fingerprint, lambda r: r[0])
        now = _now_micros()
        return self._list_bytes(
            [
                award_bytes(message, award_id, kind_, expires, revoked, reason, now, self._base)
                for award_id, kind_, message, expires, revoked, reason in page
            ],
            next_token,
            total,
        )

    # --- revoking ------------------------------------------------------------------------------

    async def RevokeAward(  # type: ignore[override]
        self, request: pb.RevokeAwardRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Revokes an award with a reason; it stays readable, marked revoked. Its Credly
        template counts one badge fewer and its CrowdTwist caps give its slot back."""
        who = current_principal()
        key = request_key(request, who.org_id)
        if not request.id:
            raise InvalidArgument("id", "is required")
        reason = domain.check_revocation_reason(request.reason)
        now = dt.datetime.now(dt.UTC)
        return await write_once(
            self._db,
            key,
            now,
            _revoke,
            (who.org_id, request.id, reason, now),
            lambda revoked: _reply(*revoked, self._base, _now_micros()),
        )
