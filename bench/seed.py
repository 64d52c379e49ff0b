"""Seeds the benchmark's database: organisations with admin keys, many badges and awards.

Each org's first badge is created through the running service's CreateBadge (the exact stored
shape of a badge the API made); the rest are copies of that row with their own id and name (and
their own serialized reply where rows keep one), bulk-inserted with SQLAlchemy Core
``executemany`` in large batches, so a million badges take seconds rather than hours. Ids are
given explicitly, so the harness knows them; on PostgreSQL the id sequence is moved past them
afterwards. Each batch adds its size to the org's row of ``org_badge_counts`` in the batch's
transaction, as CreateBadge adds one, so ListBadges totals stay exact.

Awards (for ListAwards) go through the service's own BatchCreateAwards (``award_batches``), so
they come with everything an award writes (the recipient's earned state, the AWARDED event):
10,000 awards take a few seconds, and the benchmark needs thousands, not millions.

The HTTP rows' hosted assertion is one award of a Badgr-style badge class (``hosted_issuer``,
``hosted_class``, ``hosted_award``), made through the service like any other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from badge_service.api.badges.v1 import (
    award_pb2,
    badge_class_pb2,
    badge_pb2,
    common_pb2,
    custom_field_pb2,
    issuer_pb2,
    org_meta_pb2,
)
from badge_service.domain import limits
from badge_service.domain.auth import Role
from badge_service.store import keys, orgs
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade
from badge_service.store.models import badge_tags, badges, org_badge_counts

BATCH = 50_000
# Awards per BatchCreateAwards call when seeding (as many as the RPC takes).
AWARD_BATCH = limits.BATCH_AWARDS


def sample_badge(name: str) -> badge_pb2.Badge:
    """The badge every benchmark creates and seeds: CrowdTwist's sample shape (two states, a
    weekly cap, a tag and a segment)."""
    return badge_pb2.Badge(
        name=name,
        title="Game Attendance",
        badge_states=[
            badge_pb2.BadgeState(
                state=badge_pb2.BADGE_STATE_TYPE_UNEARNED, order=1, description="Attend a game"
            ),
            badge_pb2.BadgeState(
                state=badge_pb2.BADGE_STATE_TYPE_EARNED,
                order=2,
                description="You attended a game, way to go!",
            ),
        ],
        frequency=badge_pb2.Frequency(
            freq_cap=1, freq_period=badge_pb2.FREQUENCY_PERIOD_WEEK, freq_max=5
        ),
        tags=[badge_pb2.BadgeTag(tag_name="Football", tag_id=1)],
        segment=[
            badge_pb2.Segment(
                name="Canada Members",
                subscription_id=1043,
                eligibility_type=badge_pb2.ELIGIBILITY_TYPE_INCLUSION,
            )
        ],
    )


def uncapped_badge(name: str) -> badge_pb2.Badge:
    """The sample badge without a frequency cap or maximum: any number of awards per recipient,
    so award writes never meet FREQUENCY_CAP_REACHED."""
    badge = sample_badge(name)
    badge.ClearField("frequency")
    return badge


def sample_award(badge_id: int, member_id: str) -> award_pb2.CreateAwardRequest:
    """The award every benchmark creates and seeds: a CrowdTwist badge to a member, with a
    narrative (as in the README's example)."""
    return award_pb2.CreateAwardRequest(
        award=award_pb2.Award(
            badge_id=badge_id,
            recipient=award_pb2.Recipient(member_id=member_id),
            narrative="Attended the home game",
        )
    )


def award_member(i: int) -> str:
    """The member id of the i-th seeded award of the ListAwards badge."""
    return f"seed-{i:07d}"


def award_batches(badge_id: int, count: int) -> Iterator[award_pb2.BatchCreateAwardsRequest]:
    """BatchCreateAwards requests that award ``badge_id`` to ``count`` distinct members, in
    order."""
    for start in range(0, count, AWARD_BATCH):
        yield award_pb2.BatchCreateAwardsRequest(
            requests=[
                sample_award(badge_id, award_member(i))
                for i in range(start, min(count, start + AWARD_BATCH))
            ]
        )


def hosted_issuer() -> issuer_pb2.Issuer:
    """The issuer of the hosted assertion the HTTP rows fetch."""
    return issuer_pb2.Issuer(
        name="Credentials Faculty",
        email="contact@example.com",
        url="https://example.com",
        description="The faculty of the Credentials University.",
    )


def hosted_class(issuer_entity_id: str) -> badge_class_pb2.BadgeClass:
    """The badge class of the hosted assertion: an image URL (not a data URI, so the class
    row stays small, as most are) and criteria."""
    return badge_class_pb2.BadgeClass(
        issuer=issuer_entity_id,
        name="Game Attendance",
        description="Attended a home game of the season.",
        image="https://example.com/badges/game-attendance.png",
        criteria_narrative="Attend a home game and check in at the gate.",
    )


def hosted_award(class_entity_id: str) -> award_pb2.CreateAwardRequest:
    """The award whose hosted Assertion the HTTP rows fetch: an email recipient (hashed in
    the public document), a narrative and one piece of evidence."""
    return award_pb2.CreateAwardRequest(
        award=award_pb2.Award(
            badge_class_id=class_entity_id,
            recipient=award_pb2.Recipient(email="alice@example.org"),
            narrative="Attended the home game",
            evidence=[
                award_pb2.Evidence(
                    url="https://example.com/checkins/1043", narrative="Checked in at gate B"
                )
            ],
        )
    )


def seed_name(i: int) -> str:
    """The name of the i-th seeded badge of an org."""
    return f"seed-{i:07d}"


@dataclass(frozen=True)
class SeededOrg:
    """An organisation the harness seeded: its admin key and its badge ids."""

    org_id: int
    key: str
    first_id: int
    count: int

    @property
    def middle_id(self) -> int:
        """A badge in the middle of the org's id range."""
        return self.first_id + self.count // 2

    @property
    def middle_name(self) -> str:
        """The name of the badge ``middle_id``."""
        return seed_name(self.count // 2)


@dataclass(frozen=True)
class SeededAwards:
    """The awards the harness seeded: ``count`` awards of ``badge_id`` (an uncapped badge of
    the org ``org_id``) to distinct members, the ids of the first page, and the uncapped badge
    of the writes org that CreateAward awards."""

    org_id: int
    key: str
    badge_id: int
    count: int
    first_ids: tuple[str, ...]
    write_badge_id: int


async def create_orgs(url: str, labels: list[str]) -> dict[str, tuple[int, str]]:
    """Migrates ``url`` and creates one org with an admin key per label: label -> (id, key)."""
    db = Database(url)
    try:
        await upgrade(db)
        out = {}
        now = dt.datetime.now(dt.UTC)
        async with db.write() as conn:
            for label in labels:
                org = await orgs.create_org(conn, f"bench {label}", now)
                _, key = await conn.run_sync(keys.create_key, org.id, Role.ADMIN, now)
                out[label] = (org.id, key)
        return out
    finally:
        await db.close()


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(make_url(url))
    if engine.dialect.name == "sqlite":
        # Seeding is set-up, not the measured service: no fsync per batch.
        @event.listens_for(engine.sync_engine, "connect")
        def _fast(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


async def copy_badges(url: str, template_id: int, count: int) -> None:
    """Adds copies of the newest badge ``template_id`` until its org has ``count`` badges, with
    ids template_id, template_id + 1, ... On PostgreSQL the id sequence is then moved past
    them, so that the next CreateBadge (the next org's template) gets a free id."""
    engine = _engine(url)
    try:
        async with engine.begin() as conn:
            row = (await conn.execute(select(badges).where(badges.c.id == template_id))).one()
            template = dict(row._mapping)
            tags = [
                dict(r._mapping)
                for r in await conn.execute(
                    select(badge_tags).where(badge_tags.c.badge_id == template_id)
                )
            ]
            top = int((await conn.execute(select(func.max(badges.c.id)))).scalar_one())
        if top != template_id:
            raise RuntimeError("the template must be the newest badge when it is copied")
        for start in range(1, count, BATCH):
            async with engine.begin() as conn:
                await _insert_copies(conn, template, tags, start, min(count, start + BATCH))
        if engine.dialect.name != "sqlite":
            async with engine.begin() as conn:
                await _move_badge_sequence(conn)
    finally:
        await engine.dispose()


async def _move_badge_sequence(conn: AsyncConnection) -> None:
    """PostgreSQL: the badges id sequence past the highest id (explicit ids do not move it).
    SQLite needs nothing: its AUTOINCREMENT counter follows the highest id inserted."""
    await conn.execute(
        text("SELECT setval(pg_get_serial_sequence('badges', 'id'), (SELECT max(id) FROM badges))")
    )


async def settle(url: str) -> None:
    """After loading: SQLite's WAL checkpointed; PostgreSQL's statistics and visibility map up
    to date."""
    engine = _engine(url)
    try:
        if engine.dialect.name == "sqlite":
            async with engine.begin() as conn:
                await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        else:
            # Autovacuum would analyze the new rows soon anyway; do it now so the planner and
            # the visibility map match a database in steady state.
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                # Every table: badges and their tags, and the awards, recipient states and
                # events the seeding BatchCreateAwards calls wrote.
                await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


async def _insert_copies(
    conn: AsyncConnection,
    template: dict[str, Any],
    tags: list[dict[str, Any]],
    start: int,
    stop: int,
) -> None:
    rows = []
    tag_rows = []
    first_id = template["id"]
    # A row may keep its serialized reply without the id (``message``, migration 0007): each
    # copy gets its own, with its name, or GetBadge would answer with the template's name.
    stored = template.get("message")
    message = None if stored is None else badge_pb2.Badge.FromString(stored)
    for i in range(start, stop):
        badge_id = first_id + i
        row = dict(template)
        row["id"] = badge_id
        row["name"] = seed_name(i)
        if message is not None:
            message.name = row["name"]
            row["message"] = message.SerializeToString()
        rows.append(row)
        for t in tags:
            tag_rows.append({**t, "badge_id": badge_id})
    await conn.execute(insert(badges), rows)
    if tag_rows:
        await conn.execute(insert(badge_tags), tag_rows)
    # The template came through CreateBadge, so its org's count row exists.
    c = org_badge_counts
    counted = await conn.execute(
        update(c).where(c.c.org_id == template["org_id"]).values(badges=c.c.badges + len(rows))
    )
    if counted.rowcount != 1:
        raise RuntimeError(f"org {template['org_id']} has no badge count row")


# --- The noisy neighbour: an org at its quotas, writing badges at their limits ---------------


@dataclass(frozen=True)
class SeededHosted:
    """The org of the HTTP rows' hosted assertion, and that award's id (its URL's last part)."""

    org_id: int
    key: str
    award_id: str


@dataclass(frozen=True)
class SeededNoisy:
    """The org of the noisy-neighbour scenario: at its org meta tag and custom field quotas."""

    org_id: int
    key: str


NOISY_MANDATORY = 10  # of the org's meta tags, every badge must carry these


def noisy_meta_tags() -> list[org_meta_pb2.OrgMetaTag]:
    """As many org meta tags as an org may have, the first NOISY_MANDATORY mandatory."""
    return [
        org_meta_pb2.OrgMetaTag(
            key=f"tag-{i:04d}",
            data_type=common_pb2.DATA_TYPE_STRING,
            description=f"Meta tag {i} of the noisy org",
            mandatory=i < NOISY_MANDATORY,
        )
        for i in range(limits.ORG_META_TAGS_PER_ORG)
    ]


def noisy_field_names() -> list[str]:
    """As many custom fields as an org may have."""
    return [f"field-{i:03d}" for i in range(limits.CUSTOM_FIELDS_PER_ORG)]


def noisy_default() -> str:
    """The longest default every field can have within the org's defaults quota."""
    names = noisy_field_names()
    for length in range(limits.CUSTOM_FIELD_DEFAULT_CHARS, 0, -1):
        filled = dict.fromkeys(names, "d" * length)
        if limits.struct_bytes(filled) <= limits.CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG:
            return "d" * length
    raise AssertionError("no default fits the quota")


def noisy_fields() -> list[custom_field_pb2.CustomField]:
    """The noisy org's custom fields: strings, each with the longest default the quota
    allows."""
    default = noisy_default()
    return [
        custom_field_pb2.CustomField(
            name=name, data_type=common_pb2.DATA_TYPE_STRING, default_value=default
        )
        for name in noisy_field_names()
    ]


def noisy_badge(name: str) -> badge_pb2.Badge:
    """A badge of the noisy org at its limits: as many tags (the mandatory meta tags among
    them) and segments as a badge may have, 255-character texts, and extra data of every
    field filling its size limit."""
    text = "x" * limits.BADGE_TEXT_CHARS
    names = noisy_field_names()
    # The largest value every field can hold together within the extra data limit.
    length = 0
    while limits.struct_bytes(dict.fromkeys(names, "v" * (length + 1))) <= (
        limits.BADGE_EXTRA_DATA_BYTES
    ):
        length += 1
    extra = struct_pb2.Struct()
    extra.update(dict.fromkeys(names, "v" * length))
    return badge_pb2.Badge(
        name=name,
        title=text,
        badge_states=[
            badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1, description=text)
        ],
        tags=[
            badge_pb2.BadgeTag(tag_name=f"tag-{i:04d}", tag_id=i) for i in range(limits.BADGE_TAGS)
        ],
        segment=[
            badge_pb2.Segment(
                name=f"{i:03d}" + text[3:],
                subscription_id=i,
                eligibility_type=badge_pb2.ELIGIBILITY_TYPE_INCLUSION,
            )
            for i in range(limits.BADGE_SEGMENTS)
        ],
        badge_extra_data=extra,
    )
