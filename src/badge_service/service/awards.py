"""Awards: CreateAward, BatchCreateAwards, RedeemClaimCode, GetAward, ListAwards, RevokeAward.

One code path creates awards for all three create use cases: a single award is a batch of one
that raises its error instead of reporting it. Each write is one synchronous function of a
Connection (``_create_one``, ``_create``, ``_redeem``, ``_revoke``) run as the whole
transaction by ``Database.run_write``: on SQLite in one trip to the writer thread,
group-committed with the writes queued beside it. An unfiltered list of a definition reads its
rows and kept count with ``Database.fetch``.

Encodings. Each award row keeps its reply's unchanging fields serialized (``awards.message``,
migration 0008), and a write with a request id stores its whole reply in its transaction
(``service.request_ids``). Both are bytes of the transport's message, so the transport hands
the use cases an ``AwardEncoding`` (rpc implements it with ``badges.v1`` messages): this module
calls it for the bytes it stores and for the replies it must store or may pass on unparsed,
and never imports a protobuf or grpc module itself. The stored bytes are what every transport
reads back, so a second transport passes an encoding whose ``stored`` makes the same bytes (in
practice rpc's). The hot replies (CreateAward, BatchCreateAwards, ListAwards) come back from
the use case as the encoding's bytes, so no value is built only to be encoded again; GetAward
returns domain values.

Times in stored rows (``AwardEncoding.rows``) are integer microseconds since the epoch, as the
store keeps them; ``to_micros``, ``from_micros`` and ``opt_micros`` convert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection

from badge_service import metrics
from badge_service.domain import awards as domain
from badge_service.domain import badge_classes, claim_codes, limits, lookups, paging
from badge_service.domain.awards import Award, AwardFilter, AwardKind, Recipient
from badge_service.domain.badge_classes import BadgeClass
from badge_service.domain.badge_templates import RESOURCE as TEMPLATE
from badge_service.domain.badge_templates import BadgeTemplate, parse_template_id
from badge_service.domain.badges import Badge
from badge_service.domain.custom_fields import CustomField, check_extra_data
from badge_service.domain.errors import DomainError, InvalidArgument, NotFound
from badge_service.domain.ids import new_hex_id
from badge_service.domain.requests import RequestKey
from badge_service.metrics import CAP_REASONS
from badge_service.service import recent
from badge_service.service.award_openbadges import assertion_of
from badge_service.service.request_ids import write_once
from badge_service.store import award_definitions as definitions
from badge_service.store import awards as store
from badge_service.store import custom_fields as fields_store
from badge_service.store import events
from badge_service.store import progress as progress_store
from badge_service.store.awards import StoredAward as StoredAward
from badge_service.store.badges import RESOURCE as BADGE
from badge_service.store.db import Database, batch_cache
from badge_service.store.db import from_micros as from_micros
from badge_service.store.db import opt_micros as opt_micros
from badge_service.store.db import to_micros as to_micros

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CreatedAward:
    """A created award and its stored reply bytes (the fields that never change)."""

    award: Award
    message: bytes


@dataclass(frozen=True, slots=True)
class RevokedAward:
    """A revoked award as stored, and its class's entity id when its reply must be built from
    its columns (an award from before migration 0008)."""

    stored: StoredAward
    entity_ids: dict[str, str]


@dataclass(frozen=True, slots=True)
class AwardPage:
    """A page of ListAwards read from the rows: any subject and filter, and rows without
    stored bytes (whose replies are built with ``entity_ids``). ``now`` is the time, in
    microseconds, the page's states are judged at."""

    total: int
    awards: list[StoredAward]
    next_token: str
    entity_ids: dict[str, str]
    now: int


@dataclass(frozen=True, slots=True)
class AwardView:
    """GetAward: the award, its class's entity id ("" unless a class award) and, when asked
    for, its Open Badges 2.0 Assertion (None for awards of other definitions)."""

    award: Award
    class_entity_id: str
    assertion: dict[str, Any] | None


class AwardEncoding(Protocol):
    """How the transport encodes awards: the bytes stored with an award and the replies the
    use cases store (request ids) or return unparsed."""

    def stored(self, award: Award, class_entity_id: str) -> tuple[bytes, int]:
        """The award's reply fields that never change, serialized (what ``awards.message``
        keeps), and their size as the award limits count it (times at full width)."""
        ...

    def created(self, created: CreatedAward) -> bytes:
        """The reply to CreateAward and RedeemClaimCode."""
        ...

    def batch(self, results: Sequence[CreatedAward | DomainError]) -> bytes:
        """The reply to BatchCreateAwards: one result per request, in order."""
        ...

    def revoked(self, revoked: RevokedAward) -> bytes:
        """The reply to RevokeAward."""
        ...

    def rows(self, rows: Sequence[Sequence[Any]], next_token: str, total: int) -> bytes:
        """The reply to ListAwards from a definition's stored rows, each (id, kind, message,
        expires_at, revoked_at, revocation_reason) as ``store.awards.PAGE_COLUMNS``."""
        ...

    def page(self, page: AwardPage) -> bytes:
        """The reply to ListAwards from decoded rows."""
        ...


@dataclass(slots=True)
class PreparedAward:
    """An award that passed its definition's rules; it still needs its counter slots
    (``counters``, CrowdTwist) and a free dedupe key (Credly) to be inserted. ``message`` is its
    serialized reply without the fields that change."""

    index: int
    award: Award
    dedupe_key: str | None
    message: bytes
    size: int  # the stored size of the message: what its limits count
    counters: list[domain.CounterLimit] = field(default_factory=list)


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
            # The awards of one group commit share one read of their badge, until a write of
            # the batch changes a badge (then each reads it again). Refusals are not shared:
            # an error raised to one caller is not raised to another.
            cache = batch_cache(self._conn)
            key = ("award-badge", self._org_id, badge_id)
            usable = cache is not None and cache.usable(key)
            found = cache.get(key) if cache is not None and usable else None
            if found is None:
                try:
                    found = definitions.badge(self._conn, self._org_id, badge_id)
                except DomainError as err:
                    found = err
                else:
                    if cache is not None and usable:
                        cache[key] = found
            self._badges[badge_id] = found
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
    defs: _Definitions,
    encoding: AwardEncoding,
    index: int,
    award: Award,
    prefix: str,
    now: dt.datetime,
) -> PreparedAward:
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
    message, size = encoding.stored(award, entity_id)
    limits.check_bytes(size, limits.AWARD_BYTES, prefix or "request", "as stored")
    return PreparedAward(index, award, dedupe_key, message, size, caps)


class _Tally:
    """What a create wrote (awards by kind, cap refusals by reason), filled in its
    transaction and counted in the metrics once the caller is answered with it (_counted).
    A retry answered from a stored reply runs no create, so it counts nothing again."""

    __slots__ = ("issued", "refused")

    def __init__(self) -> None:
        self.issued: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def add(self, results: Sequence[CreatedAward | DomainError]) -> None:
        """Counts a create's results: those of its last run, as a PostgreSQL group commit
        may run a write again (its batch rolled back after a deadlock) and only that run is
        committed."""
        self.issued, self.refused = {}, {}
        for r in results:
            if isinstance(r, CreatedAward):
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
    encoding: AwardEncoding,
    defs: _Definitions | None = None,
    tally: _Tally | None = None,
) -> list[CreatedAward | DomainError]:
    """Creates the awards that pass their rules, in the caller's transaction, and returns one
    result per item in order: the award, or why it was refused (counted in ``tally``)."""
    defs = defs or _Definitions(conn, org_id)
    # Every award below ends as created or refused; None only until then.
    results: list[CreatedAward | DomainError | None] = [
        item if isinstance(item, DomainError) else None for item in items
    ]
    prepared: list[PreparedAward] = []
    for i, item in enumerate(items):
        if isinstance(item, DomainError):
            continue
        try:
            prepared.append(_prepare(defs, encoding, i, item, prefixes[i], now))
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
        results[p.index] = CreatedAward(a, p.message)
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
    # Last: the org's sequence row stays locked (PostgreSQL) until the commit; in a group
    # commit it is taken at the batch's end (append_events_at_commit).
    appended = [("progress", payload) for payload in progress]
    appended += [("awarded", {"award_id": award_id}) for award_id in created]
    if appended:
        events.append_events_at_commit(conn, org_id, appended, now)
    done = [r for r in results if r is not None]
    assert len(done) == len(items)
    if tally is not None:
        tally.add(done)
    return done


def _create_one(
    conn: Connection,
    org_id: int,
    award: Award,
    now: dt.datetime,
    encoding: AwardEncoding,
    tally: _Tally | None = None,
) -> CreatedAward:
    """CreateAward's transaction: the award, or its refusal raised (which rolls it back)."""
    (result,) = _create(conn, org_id, [award], ["award"], now, encoding, None, tally)
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
    encoding: AwardEncoding,
    tally: _Tally | None = None,
) -> CreatedAward:
    """RedeemClaimCode's transaction: one use of the code and the award, both or neither."""
    defs = _Definitions(conn, org_id)
    badge_class = definitions.badge_class(conn, org_id, key)
    domain.check_class_awardable(badge_class)
    store.use_claim_code(conn, org_id, badge_class.id, code, now)
    award.badge_class_id = badge_class.id
    defs.known_class(badge_class)
    (result,) = _create(conn, org_id, [award], [""], now, encoding, defs, tally)
    if isinstance(result, DomainError):
        raise result
    return result


# --- creating ---------------------------------------------------------------------------------


def create_award(
    db: Database,
    encoding: AwardEncoding,
    key: RequestKey | None,
    org_id: int,
    key_id: int,
    award: Award,
    now: dt.datetime,
) -> Awaitable[bytes]:
    """Awards a definition to a recipient (``award`` as the request gives it, unchecked) by
    the caller's API key ``key_id``; the reply is ``encoding.created``, or the rule that
    refused it is raised. A plain function returning the write's awaitable, so that the
    transport's await is the write's own (no coroutine of its own on the hot path)."""
    award.id = new_hex_id()
    award.org_id = org_id
    award.created_by = key_id
    award.create_time = now
    return _counted(db, key, now, _create_one, (org_id, award, now, encoding), encoding.created)


def create_awards(
    db: Database,
    encoding: AwardEncoding,
    key: RequestKey | None,
    org_id: int,
    key_id: int,
    items: list[Award | DomainError],
    prefixes: Sequence[str],
    now: dt.datetime,
) -> Awaitable[bytes]:
    """Awards every item that passes its rules, in one transaction: ``items`` are the awards
    as requested, or the error that decoding one met (reported as its result), ``prefixes``
    name each item's fields in errors. The reply is ``encoding.batch``, one result per item,
    in order. A plain function returning the write's awaitable (see create_award)."""
    for item in items:
        if not isinstance(item, DomainError):
            item.id = new_hex_id()
            item.org_id = org_id
            item.created_by = key_id
            item.create_time = now
    return _counted(
        db, key, now, _create, (org_id, items, prefixes, now, encoding, None), encoding.batch
    )


async def redeem_claim_code(
    db: Database,
    encoding: AwardEncoding,
    request_id: RequestKey | None,
    org_id: int,
    key_id: int,
    class_ref: str,
    claim_code: str,
    award: Award,
    now: dt.datetime,
) -> bytes:
    """Takes one use of a claim code of the class ``class_ref`` (id or entity id) and awards
    the class (``award``: the recipient and details asked for), both or neither; the reply
    is ``encoding.created``."""
    key = lookups.key_of_id_or_entity_id(class_ref, "id_or_entity_id", badge_classes.BADGE_CLASS)
    code = claim_codes.claim_code_of(claim_code, "claim_code")
    award.kind = AwardKind.CLASS
    award.claim_code = code
    award.id = new_hex_id()
    award.org_id = org_id
    award.created_by = key_id
    award.create_time = now
    # The recipient and details are checked before a use is taken.
    domain.check_details(award, now=now, prefix="")
    return await _counted(
        db, request_id, now, _redeem, (org_id, key, code, award, now, encoding), encoding.created
    )


# --- reading ---------------------------------------------------------------------------------


def _read_award(conn: Connection, org_id: int, award_id: str) -> tuple[Award, dict[str, str]]:
    award = store.get_award(conn, org_id, award_id)
    entity_ids = store.class_entity_ids(
        conn, [award.badge_class_id] if award.badge_class_id else []
    )
    return award, entity_ids


async def get_award(
    db: Database, org_id: int, award_id: str, *, open_badge: bool, base_url: str
) -> AwardView:
    """One award of the org; with ``open_badge`` a class award's Open Badges 2.0 Assertion
    (hosted under ``base_url``), read in the same snapshot."""
    async with db.read() as conn:
        award, entity_ids = await conn.run_sync(_read_award, org_id, award_id)
        entity_id = entity_ids.get(award.badge_class_id or "", "")
        doc = await assertion_of(conn, award, base_url) if open_badge else None
    return AwardView(award, entity_id, doc)


def _not_found(kind: str, ref: int | str) -> NotFound:
    """The NOT_FOUND of a definition a list names, as the definition stores raise it."""
    resource = {
        store.BADGE: BADGE,
        store.TEMPLATE: TEMPLATE,
        store.CLASS: badge_classes.BADGE_CLASS,
    }
    return NotFound(resource[kind], ref)


def _list_filter(
    conn: Connection,
    org_id: int,
    subject: str,
    ref: int | str | Recipient | None,
    revoked: bool | None,
    expired: bool | None,
) -> AwardFilter:
    """The filter of a ListAwards request, its definition checked to be the org's."""
    if subject == "badge_id":
        assert isinstance(ref, int)
        definitions.badge(conn, org_id, ref)
        return AwardFilter(badge_id=ref, revoked=revoked, expired=expired)
    if subject == "badge_template_id":
        assert isinstance(ref, str)
        template_id = parse_template_id(ref, "badge_template_id")
        definitions.template(conn, org_id, template_id)
        return AwardFilter(badge_template_id=template_id, revoked=revoked, expired=expired)
    if subject == "badge_class_id":
        assert isinstance(ref, str)
        key = lookups.key_of_id_or_entity_id(ref, "badge_class_id", badge_classes.BADGE_CLASS)
        badge_class = definitions.badge_class(conn, org_id, key)
        return AwardFilter(badge_class_id=badge_class.id, revoked=revoked, expired=expired)
    assert ref is None or isinstance(ref, Recipient)
    recipient = domain.check_recipient(ref, "recipient")
    return AwardFilter(
        recipient_key=domain.recipient_key(recipient), revoked=revoked, expired=expired
    )


def _list(
    conn: Connection,
    org_id: int,
    subject: str,
    ref: int | str | Recipient | None,
    revoked: bool | None,
    expired: bool | None,
    page_token: str,
    size: int,
    now: dt.datetime,
) -> AwardPage:
    """A ListAwards page in one read transaction: any subject and filter, and rows without
    stored bytes."""
    flt = _list_filter(conn, org_id, subject, ref, revoked, expired)
    fingerprint = paging.filter_fingerprint("awards", flt)
    after = paging.after_hex_id(page_token, fingerprint)
    # A definition's total is its kept count; a recipient's or a filtered one counts.
    total = store.count_awards(conn, org_id, flt, now)
    rows = store.list_awards(conn, org_id, flt, now, limit=size + 1, after=after)
    page, next_token = paging.keyset_page(rows, size, fingerprint, lambda s: s.award.id)
    entity_ids = store.class_entity_ids(
        conn, [s.award.badge_class_id for s in page if s.message is None and s.award.badge_class_id]
    )
    return AwardPage(total, page, next_token, entity_ids, to_micros(now))


async def list_awards(
    db: Database,
    encoding: AwardEncoding,
    org_id: int,
    subject: str | None,
    ref: int | str | Recipient | None,
    *,
    revoked: bool | None,
    expired: bool | None,
    page_size: int,
    page_token: str,
) -> bytes:
    """Awards of one definition or one recipient, oldest first, by page token. ``subject``
    names what ``ref`` is, as the request's field: ``badge_id`` (an int),
    ``badge_template_id``, ``badge_class_id`` (id or entity id) or ``recipient`` (None when
    the request names no identity); None when the request names no subject. The reply is
    ``encoding.rows`` of a definition's stored rows (no revoked or expired filter), else
    ``encoding.page``."""
    size = paging.resolve_page_size(
        page_size, default=domain.LIST_DEFAULT_PAGE_SIZE, maximum=domain.LIST_MAX_PAGE_SIZE
    )
    if subject is None:
        raise InvalidArgument(
            "badge_id",
            "one of badge_id, badge_template_id, badge_class_id or recipient is required",
        )
    # A definition without the revoked and expired filters has a kept count and an index to
    # walk (its rows and count by Database.fetch); a recipient's awards and filtered lists
    # are counted (run_read). So are pages holding a row from before migration 0008, which
    # has no stored bytes.
    if subject != "recipient" and revoked is None and expired is None:
        kind: str
        key_ref: int | str
        if subject == "badge_id":
            assert isinstance(ref, int)
            kind, key_ref = store.BADGE, ref
            flt = AwardFilter(badge_id=ref)
            shown: int | str = ref
        elif subject == "badge_template_id":
            assert isinstance(ref, str)
            template_id = parse_template_id(ref, "badge_template_id")
            kind, key_ref = store.TEMPLATE, template_id
            flt = AwardFilter(badge_template_id=template_id)
            shown = template_id
        else:
            assert isinstance(ref, str)
            key = lookups.key_of_id_or_entity_id(ref, "badge_class_id", badge_classes.BADGE_CLASS)
            key_ref = shown = key.value
            if key.by_entity_id:
                (rows,) = await db.fetch(
                    (store.CLASS_ID_OF_ENTITY_ID, {"ref": key.value, "org_id": org_id})
                )
                if not rows:
                    raise _not_found(store.CLASS, shown)
                key_ref = str(rows[0][0])
            kind = store.CLASS
            flt = AwardFilter(badge_class_id=str(key_ref))
        statements = store.PAGES[kind]
        exists = (statements.exists, {"ref": key_ref, "org_id": org_id})
        fingerprint = paging.filter_fingerprint("awards", flt)
        try:
            after = paging.after_hex_id(page_token, fingerprint) or ""
        except InvalidArgument:
            # A definition that is not the org's is NOT_FOUND whatever the token says.
            (found,) = await db.fetch(exists)
            if not found:
                raise _not_found(kind, shown) from None
            raise
        found, counted, rows = await db.fetch(
            exists,
            (statements.count, {"org_id": org_id, "ref_text": str(key_ref)}),
            (statements.page, {"ref": key_ref, "after": after, "limit": size + 1})
            if after
            else (statements.first, {"ref": key_ref, "limit": size + 1}),
        )
        # Before any row is used: the page is not limited to the org (see store.PAGES).
        if not found:
            raise _not_found(kind, shown)
        if all(row[2] is not None for row in rows):
            total = int(counted[0][0]) if counted else 0
            page, next_token = paging.keyset_page(rows, size, fingerprint, lambda r: r[0])
            return encoding.rows(page, next_token, total)
    now = dt.datetime.now(dt.UTC)
    return encoding.page(
        await db.run_read(_list, org_id, subject, ref, revoked, expired, page_token, size, now)
    )


# --- revoking ----------------------------------------------------------------------------------


def _revoke(
    conn: Connection, org_id: int, award_id: str, reason: str, now: dt.datetime
) -> RevokedAward:
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
    # Last, and in a group commit at the batch's end with the other writes' events: the org's
    # sequence row, locked in the write, would be held to the COMMIT in an order of its own,
    # and deadlock with batches that take it at their end after their counts.
    events.append_events_at_commit(conn, org_id, [("revoked", {"award_id": award.id})], now)
    return RevokedAward(stored, entity_ids)


async def revoke_award(
    db: Database,
    encoding: AwardEncoding,
    key: RequestKey | None,
    org_id: int,
    award_id: str,
    reason: str,
    now: dt.datetime,
) -> bytes:
    """Revokes an award with a reason; it stays readable, marked revoked. Its Credly template
    counts one badge fewer and its CrowdTwist caps give its slot back. The reply is
    ``encoding.revoked``."""
    reason = domain.check_revocation_reason(reason)
    try:
        return await write_once(
            db, key, now, _revoke, (org_id, award_id, reason, now), encoding.revoked
        )
    finally:
        recent.forget_award(db, award_id)  # its hosted documents show the revocation at once
