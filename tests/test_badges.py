"""badges.v1.BadgeService (CrowdTwist v2.1 badges): create/get round trips, every validation
rule with its field path, extra data against custom fields, tags against org meta, updates by
field mask, deletes and tenancy. Paging and filters of ListBadges are in test_badges_list.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.api.badges.v1 import org_meta_pb2 as om
from tests.support import Org, Over, expect_error, reason_for

UNEARNED = pb.BADGE_STATE_TYPE_UNEARNED
IN_PROGRESS = pb.BADGE_STATE_TYPE_IN_PROGRESS
EARNED = pb.BADGE_STATE_TYPE_EARNED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def at(text: str) -> Timestamp:
    """A Timestamp from RFC 3339 text."""
    out = Timestamp()
    out.FromJsonString(text)
    return out


def state(
    kind: pb.BadgeStateType.ValueType, order: int, description: str = "", image_url: str = ""
) -> pb.BadgeState:
    """One badge state."""
    return pb.BadgeState(state=kind, order=order, description=description, image_url=image_url)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct holding ``value``."""
    out = struct_pb2.Struct()
    out.update(value)
    return out


def valid_badge(name: str = "badge_001", **overrides: Any) -> pb.Badge:
    """The smallest badge every rule accepts (two states, nothing else), with overrides."""
    fields: dict[str, Any] = {
        "name": name,
        "title": "Game Attendance",
        "badge_states": [state(UNEARNED, 1), state(EARNED, 2)],
    }
    fields.update(overrides)
    return pb.Badge(**fields)


def full_badge(name: str = "badge_001") -> pb.Badge:
    """A badge with every writable field set, shaped like the CrowdTwist sample."""
    return pb.Badge(
        name=name,
        title="Game Attendance",
        date_start=at("2019-05-03T19:01:23.123456Z"),
        date_end=at("2031-05-03T19:01:23Z"),
        display_date_start=at("2019-04-01T00:00:00Z"),
        display_date_end=at("2032-01-01T00:00:00.5Z"),
        is_enabled=True,
        badge_states=[
            state(UNEARNED, 1, "Attend a game to show your fanage", "http://img.example/u.png"),
            state(IN_PROGRESS, 2, "Halfway there", ""),
            state(EARNED, 3, "You attended a game, way to go!", "https://img.example/e.png"),
        ],
        frequency=pb.Frequency(freq_cap=1, freq_period=pb.FREQUENCY_PERIOD_WEEK, freq_max=5),
        tags=[
            pb.BadgeTag(tag_name="Football", tag_id=1),
            pb.BadgeTag(tag_name="Cricket", tag_id=2),
        ],
        segment=[
            pb.Segment(
                name="Canada Members",
                subscription_id=1043,
                eligibility_type=pb.ELIGIBILITY_TYPE_INCLUSION,
            ),
            pb.Segment(
                name="Staff", subscription_id=7, eligibility_type=pb.ELIGIBILITY_TYPE_EXCLUSION
            ),
        ],
        badge_extra_data=struct(
            {
                "customer_variable": "customer data",
                "score": 12.5,
                "flag": True,
                "nested": {"list": [1, "x", None]},
                "nothing": None,
            }
        ),
    )


async def create(org: Org, badge: pb.Badge) -> pb.Badge:
    """Creates ``badge`` with the org's admin key."""
    return await org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=badge))


async def get(org: Org, badge_id: int) -> pb.Badge:
    """Reads a badge with the org's reader key."""
    return await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=badge_id))


async def update(org: Org, badge: pb.Badge, *paths: str) -> pb.Badge:
    """Updates ``badge`` with a mask of ``paths`` (none: an empty mask)."""
    return await org.admin.badges.UpdateBadge(
        pb.UpdateBadgeRequest(badge=badge, update_mask=field_mask_pb2.FieldMask(paths=paths))
    )


async def count(org: Org, **filters: Any) -> int:
    """How many badges ListBadges says the org has."""
    reply = await org.reader.badges.ListBadges(pb.ListBadgesRequest(**filters))
    return reply.total_size


def utc(value: Timestamp) -> dt.datetime:
    """A Timestamp as an aware datetime."""
    return value.ToDatetime(tzinfo=dt.UTC)


# --- Create and Get ------------------------------------------------------------------------


async def test_create_then_get_round_trips_every_field(org: Org) -> None:
    before = dt.datetime.now(dt.UTC)
    sent = full_badge()
    created = await create(org, sent)
    after = dt.datetime.now(dt.UTC)

    assert created.id > 0
    assert before <= utc(created.create_time) <= after
    expected = pb.Badge()
    expected.CopyFrom(sent)
    expected.id = created.id
    expected.frequency.freq_period_id = 1
    expected.frequency.freq_period_name = "week"
    expected.create_time.CopyFrom(created.create_time)
    expected.update_time.CopyFrom(created.create_time)
    assert created == expected
    assert await get(org, created.id) == expected
    # Spot checks that the comparison above really covers the sample's fields.
    assert created.date_start.nanos == 123456000
    assert created.display_date_end.nanos == 500000000
    assert [s.state for s in created.badge_states] == [UNEARNED, IN_PROGRESS, EARNED]
    nested = created.badge_extra_data.fields["nested"].struct_value
    assert nested.fields["list"].list_value.values[1].string_value == "x"


async def test_create_minimal_badge_fills_defaults(org: Org) -> None:
    before = dt.datetime.now(dt.UTC)
    created = await create(org, pb.Badge(name="m", title="M", badge_states=[state(EARNED, 1)]))
    got = await get(org, created.id)
    assert got == created
    assert before <= utc(got.create_time)
    # Earning and display start at creation and never end; enabled unless told otherwise.
    assert got.date_start == got.create_time
    assert got.display_date_start == got.create_time
    assert got.update_time == got.create_time
    assert not got.HasField("date_end")
    assert not got.HasField("display_date_end")
    assert got.HasField("is_enabled") and got.is_enabled is True
    assert not got.frequency.HasField("freq_cap")
    assert not got.frequency.HasField("freq_max")
    assert got.frequency.freq_period == pb.FREQUENCY_PERIOD_UNSPECIFIED
    assert got.frequency.freq_period_id == 0
    assert got.frequency.freq_period_name == ""
    assert list(got.tags) == [] and list(got.segment) == []
    assert dict(got.badge_extra_data) == {}
    assert list(got.badge_states) == [state(EARNED, 1)]


async def test_is_enabled_false_is_kept(org: Org) -> None:
    created = await create(org, valid_badge(is_enabled=False))
    assert created.HasField("is_enabled") and created.is_enabled is False
    got = await get(org, created.id)
    assert got.HasField("is_enabled") and got.is_enabled is False


async def test_every_frequency_period_has_its_crowdtwist_id_and_name(org: Org) -> None:
    periods = [
        (pb.FREQUENCY_PERIOD_WEEK, 1, "week"),
        (pb.FREQUENCY_PERIOD_MONTH, 2, "month"),
        (pb.FREQUENCY_PERIOD_YEAR, 3, "year"),
        (pb.FREQUENCY_PERIOD_DAY, 4, "day"),
    ]
    created = await asyncio.gather(
        *(
            create(org, valid_badge(f"f{i}", frequency=pb.Frequency(freq_cap=2, freq_period=p)))
            for i, (p, _, _) in enumerate(periods)
        )
    )
    for badge, (period, period_id, period_name) in zip(created, periods, strict=True):
        got = await get(org, badge.id)
        assert got.frequency.freq_period == period
        assert got.frequency.freq_period_id == period_id
        assert got.frequency.freq_period_name == period_name
        assert got.frequency.freq_cap == 2
        assert not got.frequency.HasField("freq_max")


async def test_nanoseconds_are_kept_to_the_microsecond_by_create_and_get_alike(org: Org) -> None:
    start = Timestamp(seconds=1_700_000_000, nanos=123_456_789)
    created = await create(org, valid_badge(date_start=start))
    got = await get(org, created.id)
    assert (
        created.date_start == got.date_start == Timestamp(seconds=1_700_000_000, nanos=123_456_000)
    )


async def test_get_unknown_id_is_not_found(org: Org) -> None:
    await expect_error(
        org.reader.badges.GetBadge(pb.GetBadgeRequest(id=987654321)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )


async def test_reader_cannot_write(org: Org) -> None:
    created = await create(org, valid_badge())
    for call in (
        org.reader.badges.CreateBadge(pb.CreateBadgeRequest(badge=valid_badge("other"))),
        org.reader.badges.UpdateBadge(
            pb.UpdateBadgeRequest(badge=pb.Badge(id=created.id, title="New"))
        ),
        org.reader.badges.DeleteBadge(pb.DeleteBadgeRequest(id=created.id)),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    assert await get(org, created.id) == created
    assert await count(org) == 1


# --- Validation ------------------------------------------------------------------------------

_ENUM_9 = 9  # a number no enum of the contract defines

INVALID_BADGES: list[tuple[str, dict[str, Any], str]] = [
    ("name-missing", {"name": ""}, "badge.name"),
    ("name-blank", {"name": "   "}, "badge.name"),
    ("name-too-long", {"name": "n" * 256}, Over("badge.name")),
    ("title-missing", {"title": ""}, "badge.title"),
    (
        "date-end-before-start",
        {"date_start": at("2024-02-01T00:00:00Z"), "date_end": at("2024-01-31T23:59:59Z")},
        "badge.date_end",
    ),
    # date_start defaults to now, so an end in the past is before it.
    ("date-end-before-default-start", {"date_end": at("2001-01-01T00:00:00Z")}, "badge.date_end"),
    (
        "display-end-before-start",
        {
            "display_date_start": at("2024-02-01T00:00:00Z"),
            "display_date_end": at("2024-01-31T23:59:59.999999Z"),
        },
        "badge.display_date_end",
    ),
    ("no-states", {"badge_states": []}, "badge.badge_states"),
    (
        "state-unspecified",
        {"badge_states": [state(EARNED, 1), pb.BadgeState(order=2)]},
        "badge.badge_states[1].state",
    ),
    (
        "state-repeated",
        {"badge_states": [state(EARNED, 1), state(EARNED, 2)]},
        "badge.badge_states[1].state",
    ),
    (
        "four-states",
        {
            "badge_states": [
                state(UNEARNED, 1),
                state(IN_PROGRESS, 2),
                state(EARNED, 3),
                state(EARNED, 4),
            ]
        },
        "badge.badge_states",
    ),
    (
        "order-repeated",
        {"badge_states": [state(UNEARNED, 1), state(EARNED, 1)]},
        "badge.badge_states[1].order",
    ),
    ("order-zero", {"badge_states": [state(EARNED, 0)]}, "badge.badge_states[0].order"),
    (
        "order-negative",
        {"badge_states": [state(UNEARNED, 1), state(EARNED, -1)]},
        "badge.badge_states[1].order",
    ),
    (
        "no-earned-state",
        {"badge_states": [state(UNEARNED, 1), state(IN_PROGRESS, 2)]},
        "badge.badge_states",
    ),
    (
        "earned-before-unearned",
        {"badge_states": [state(EARNED, 1), state(UNEARNED, 2)]},
        "badge.badge_states",
    ),
    (
        "earned-before-in-progress",
        {"badge_states": [state(UNEARNED, 1), state(EARNED, 2), state(IN_PROGRESS, 3)]},
        "badge.badge_states",
    ),
    (
        "image-url-ftp",
        {"badge_states": [state(EARNED, 1, image_url="ftp://img.example/a.png")]},
        "badge.badge_states[0].image_url",
    ),
    (
        "image-url-relative",
        {"badge_states": [state(EARNED, 1, image_url="/img/a.png")]},
        "badge.badge_states[0].image_url",
    ),
    (
        "image-url-javascript",
        {"badge_states": [state(EARNED, 1, image_url="javascript:alert(1)")]},
        "badge.badge_states[0].image_url",
    ),
    (
        "freq-cap-without-period",
        {"frequency": pb.Frequency(freq_cap=1)},
        "badge.frequency.freq_period",
    ),
    (
        "freq-cap-zero",
        {"frequency": pb.Frequency(freq_cap=0, freq_period=pb.FREQUENCY_PERIOD_DAY)},
        "badge.frequency.freq_cap",
    ),
    (
        "freq-cap-negative",
        {"frequency": pb.Frequency(freq_cap=-3, freq_period=pb.FREQUENCY_PERIOD_DAY)},
        "badge.frequency.freq_cap",
    ),
    ("freq-max-zero", {"frequency": pb.Frequency(freq_max=0)}, "badge.frequency.freq_max"),
    (
        "freq-cap-over-max",
        {"frequency": pb.Frequency(freq_cap=6, freq_period=pb.FREQUENCY_PERIOD_WEEK, freq_max=5)},
        "badge.frequency.freq_cap",
    ),
    (
        "state-unknown-number",
        {"badge_states": [state(pb.BadgeStateType.ValueType(_ENUM_9), 1)]},
        "badge.badge_states[0].state",
    ),
    (
        "period-unknown-number",
        {"frequency": pb.Frequency(freq_cap=1, freq_period=pb.FrequencyPeriod.ValueType(_ENUM_9))},
        "badge.frequency.freq_period",
    ),
    (
        "eligibility-unknown-number",
        {"segment": [pb.Segment(name="S", eligibility_type=pb.EligibilityType.ValueType(_ENUM_9))]},
        "badge.segment[0].eligibility_type",
    ),
    (
        "segment-without-eligibility",
        {
            "segment": [
                pb.Segment(name="A", eligibility_type=pb.ELIGIBILITY_TYPE_INCLUSION),
                pb.Segment(name="B", subscription_id=3),
            ]
        },
        "badge.segment[1].eligibility_type",
    ),
    ("tag-name-empty", {"tags": [pb.BadgeTag(tag_name="", tag_id=1)]}, "badge.tags[0].tag_name"),
    (
        "tag-name-duplicate",
        {"tags": [pb.BadgeTag(tag_name="Football"), pb.BadgeTag(tag_name="Football", tag_id=2)]},
        "badge.tags[1].tag_name",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [pytest.param(o, f, id=i) for i, o, f in INVALID_BADGES],
)
async def test_invalid_badge_is_refused_with_its_field(
    org: Org, overrides: dict[str, Any], field: str
) -> None:
    await expect_error(
        org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=valid_badge(**overrides))),
        INVALID,
        reason=reason_for(field),
        field=field,
    )
    assert await count(org) == 0


async def test_boundaries_that_are_allowed(org: Org) -> None:
    same = at("2024-02-01T00:00:00Z")
    created = await asyncio.gather(
        # End equal to start (a window of no time) is not "before" it.
        create(org, valid_badge("a", date_start=same, date_end=same)),
        create(org, valid_badge("b", display_date_start=same, display_date_end=same)),
        # One earned state alone is a complete progression; orders need not be contiguous.
        create(org, valid_badge("c", badge_states=[state(EARNED, 7)])),
        create(org, valid_badge("d", badge_states=[state(IN_PROGRESS, 3), state(EARNED, 10)])),
        # freq_cap equal to freq_max; freq_max without a cap; a period without a cap.
        create(
            org,
            valid_badge(
                "e",
                frequency=pb.Frequency(freq_cap=5, freq_period=pb.FREQUENCY_PERIOD_DAY, freq_max=5),
            ),
        ),
        create(org, valid_badge("f", frequency=pb.Frequency(freq_max=1))),
        create(org, valid_badge("g", frequency=pb.Frequency(freq_period=pb.FREQUENCY_PERIOD_YEAR))),
        # A segment needs only its eligibility type.
        create(
            org,
            valid_badge("h", segment=[pb.Segment(eligibility_type=pb.ELIGIBILITY_TYPE_EXCLUSION)]),
        ),
    )
    assert await count(org) == 8
    assert created[3].badge_states[1] == state(EARNED, 10)
    got = await get(org, created[6].id)
    assert got.frequency.freq_period_name == "year" and not got.frequency.HasField("freq_cap")


async def test_duplicate_name_in_one_org_is_taken(org: Org, other_org: Org) -> None:
    first = await create(org, valid_badge("badge_001"))
    err = await expect_error(
        create(org, valid_badge("badge_001", title="Another")),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="BADGE_NAME_TAKEN",
    )
    assert err.info is not None and err.info.metadata["name"] == "badge_001"
    # Names are per organisation and case sensitive.
    elsewhere = await create(other_org, valid_badge("badge_001"))
    upper = await create(org, valid_badge("BADGE_001"))
    assert len({first.id, elsewhere.id, upper.id}) == 3
    assert await count(org) == 2
    assert await count(other_org) == 1


async def test_concurrent_creates_of_one_name_leave_exactly_one(org: Org) -> None:
    results = await asyncio.gather(
        *(create(org, valid_badge("race", title=f"T{i}")) for i in range(6)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.Badge)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 5
    assert {e.code() for e in lost} == {grpc.StatusCode.ALREADY_EXISTS}
    assert await count(org) == 1


# --- Extra data against custom fields ----------------------------------------------------------


async def add_field(
    org: Org,
    name: str,
    kind: common_pb2.DataType.ValueType,
    default: str | None = None,
    *,
    mandatory: bool = False,
    active: bool = True,
) -> cf.CustomField:
    """Creates a custom field of the org."""
    field = cf.CustomField(
        name=name, data_type=kind, is_mandatory=mandatory, is_active=active, default_value=default
    )
    return await org.admin.fields.CreateCustomField(cf.CreateCustomFieldRequest(custom_field=field))


async def typed_fields(org: Org) -> None:
    """One field of each type, none with a default."""
    await asyncio.gather(
        add_field(org, "points", common_pb2.DATA_TYPE_INTEGER),
        add_field(org, "vip", common_pb2.DATA_TYPE_BOOLEAN),
        add_field(org, "launch", common_pb2.DATA_TYPE_DATE),
        add_field(org, "CF20 dates", common_pb2.DATA_TYPE_STRING),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("points", "abc"),
        ("points", 5.5),
        ("points", True),
        ("points", "5.0"),
        ("points", [5]),
        ("vip", "yes"),
        ("vip", 1),
        ("launch", "31/01/2024"),
        ("launch", "2024-02-30"),
        ("launch", 20240131),
        ("CF20 dates", 5),
        ("CF20 dates", {"a": "b"}),
    ],
)
async def test_extra_data_of_the_wrong_type_is_refused(org: Org, key: str, value: Any) -> None:
    await typed_fields(org)
    await expect_error(
        create(org, valid_badge(badge_extra_data=struct({key: value}))),
        INVALID,
        reason="EXTRA_DATA_TYPE_MISMATCH",
        field=f"badge.badge_extra_data.{key}",
    )
    assert await count(org) == 0


async def test_extra_data_of_the_right_type_is_stored_typed(org: Org) -> None:
    await typed_fields(org)
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"points": 5}, {"points": 5}),
        ({"points": "5"}, {"points": 5}),
        ({"points": "-12"}, {"points": -12}),
        ({"vip": True}, {"vip": True}),
        ({"vip": "true"}, {"vip": True}),
        ({"vip": "FALSE"}, {"vip": False}),
        ({"launch": "2024-01-31"}, {"launch": "2024-01-31"}),
        ({"CF20 dates": "any text"}, {"CF20 dates": "any text"}),
    ]
    created = await asyncio.gather(
        *(
            create(org, valid_badge(f"x{i}", badge_extra_data=struct(sent)))
            for i, (sent, _) in enumerate(cases)
        )
    )
    for badge, (_, stored) in zip(created, cases, strict=True):
        got = await get(org, badge.id)
        assert got.badge_extra_data == struct(stored), (got.badge_extra_data, stored)
        assert got.badge_extra_data == badge.badge_extra_data
    # "5" is stored as the number 5, not as text.
    got = await get(org, created[1].id)
    assert got.badge_extra_data.fields["points"].WhichOneof("kind") == "number_value"
    assert got.badge_extra_data.fields["points"].number_value == 5


async def test_missing_extra_data_gets_typed_defaults(org: Org) -> None:
    await asyncio.gather(
        add_field(org, "points", common_pb2.DATA_TYPE_INTEGER, "7"),
        add_field(org, "vip", common_pb2.DATA_TYPE_BOOLEAN, "false", mandatory=True),
        add_field(org, "launch", common_pb2.DATA_TYPE_DATE, "2024-01-01"),
        add_field(org, "note", common_pb2.DATA_TYPE_STRING, "hello"),
        add_field(org, "no_default", common_pb2.DATA_TYPE_STRING),
        add_field(org, "retired", common_pb2.DATA_TYPE_INTEGER, "3", active=False),
    )
    bare = await create(org, valid_badge("bare"))
    expected = struct({"points": 7, "vip": False, "launch": "2024-01-01", "note": "hello"})
    assert bare.badge_extra_data == expected
    assert (await get(org, bare.id)).badge_extra_data == expected
    assert bare.badge_extra_data.fields["vip"].WhichOneof("kind") == "bool_value"
    # A given value wins over the default; a null value is treated as missing.
    given = await create(
        org, valid_badge("given", badge_extra_data=struct({"points": 1, "note": None}))
    )
    assert (await get(org, given.id)).badge_extra_data == struct(
        {"points": 1, "vip": False, "launch": "2024-01-01", "note": "hello"}
    )


async def test_unknown_extra_data_key_once_the_org_has_fields(org: Org, other_org: Org) -> None:
    # With no custom fields, extra data is free-form and kept as sent.
    free = {"customer_variable": "customer data", "n": 3, "deep": {"x": [True]}}
    kept = await create(other_org, valid_badge(badge_extra_data=struct(free)))
    assert (await get(other_org, kept.id)).badge_extra_data == struct(free)

    await add_field(org, "points", common_pb2.DATA_TYPE_INTEGER)
    await expect_error(
        create(org, valid_badge(badge_extra_data=struct({"points": 1, "customer_variable": "x"}))),
        INVALID,
        reason="UNKNOWN_CUSTOM_FIELD",
        field="badge.badge_extra_data.customer_variable",
    )
    # Names match exactly.
    await expect_error(
        create(org, valid_badge(badge_extra_data=struct({"Points": 1}))),
        INVALID,
        reason="UNKNOWN_CUSTOM_FIELD",
        field="badge.badge_extra_data.Points",
    )
    assert await count(org) == 0


async def test_an_inactive_field_only_is_still_a_field(org: Org) -> None:
    await add_field(org, "retired", common_pb2.DATA_TYPE_INTEGER, "3", active=False)
    created = await create(org, valid_badge())
    assert dict(created.badge_extra_data) == {}
    await expect_error(
        create(org, valid_badge("other", badge_extra_data=struct({"free": 1}))),
        INVALID,
        reason="UNKNOWN_CUSTOM_FIELD",
        field="badge.badge_extra_data.free",
    )


# --- Tags against org meta ----------------------------------------------------------------------


async def set_meta_tags(org: Org, *tags: tuple[str, bool]) -> None:
    """Sets the org meta tags: (key, mandatory) pairs."""
    await org.admin.meta.UpdateOrgMeta(
        om.UpdateOrgMetaRequest(
            org_meta=om.OrgMeta(
                tags=[
                    om.OrgMetaTag(key=k, data_type=common_pb2.DATA_TYPE_STRING, mandatory=m)
                    for k, m in tags
                ]
            )
        )
    )


def tags(*names: str) -> list[pb.BadgeTag]:
    """Badge tags with ids 1, 2, ..."""
    return [pb.BadgeTag(tag_name=n, tag_id=i) for i, n in enumerate(names, 1)]


async def test_without_meta_tags_any_tag_is_fine(org: Org) -> None:
    created = await create(org, valid_badge(tags=tags("Anything", "at all")))
    assert (await get(org, created.id)).tags == tags("Anything", "at all")


async def test_tags_must_be_meta_tag_keys_and_include_the_mandatory_ones(org: Org) -> None:
    await set_meta_tags(org, ("Football", False), ("Cricket", True))
    await expect_error(
        create(org, valid_badge(tags=tags("Cricket", "Hockey"))),
        INVALID,
        reason="UNKNOWN_TAG",
        field="badge.tags[1].tag_name",
    )
    await expect_error(
        create(org, valid_badge(tags=tags("cricket"))),
        INVALID,
        reason="UNKNOWN_TAG",
        field="badge.tags[0].tag_name",
    )
    for missing in (tags("Football"), []):
        await expect_error(
            create(org, valid_badge(tags=missing)),
            INVALID,
            reason="MANDATORY_TAG_MISSING",
            field="badge.tags",
        )
    await expect_error(
        create(org, valid_badge(tags=tags("Cricket", "Cricket"))),
        INVALID,
        reason="INVALID_FIELD",
        field="badge.tags[1].tag_name",
    )
    assert await count(org) == 0
    ok = await asyncio.gather(
        create(org, valid_badge("a", tags=tags("Cricket"))),
        create(org, valid_badge("b", tags=tags("Football", "Cricket"))),
    )
    assert [list(b.tags) for b in ok] == [tags("Cricket"), tags("Football", "Cricket")]


# --- Update ----------------------------------------------------------------------------------


async def test_update_changes_only_the_masked_fields(org: Org) -> None:
    created = await create(org, full_badge())
    patch = pb.Badge(
        id=created.id,
        name="renamed",
        title="Game Day",
        is_enabled=False,
        tags=tags("Hockey"),
    )
    updated = await update(org, patch, "title")
    expected = pb.Badge()
    expected.CopyFrom(created)
    expected.title = "Game Day"
    expected.update_time.CopyFrom(updated.update_time)
    assert updated == expected
    assert await get(org, created.id) == expected
    assert updated.create_time == created.create_time
    assert utc(updated.update_time) > utc(created.update_time)


async def test_update_nested_path(org: Org) -> None:
    created = await create(org, full_badge())
    # freq_max in the patch is not in the mask, so it stays 5.
    patch = pb.Badge(id=created.id, frequency=pb.Frequency(freq_cap=2, freq_max=1))
    updated = await update(org, patch, "frequency.freq_cap")
    assert updated.frequency == pb.Frequency(
        freq_cap=2,
        freq_period=pb.FREQUENCY_PERIOD_WEEK,
        freq_period_id=1,
        freq_period_name="week",
        freq_max=5,
    )
    assert updated.title == created.title and updated.tags == created.tags
    # A masked path absent from the patch is cleared.
    cleared = await update(org, pb.Badge(id=created.id), "frequency.freq_cap")
    assert not cleared.frequency.HasField("freq_cap")
    assert cleared.frequency.freq_max == 5
    assert (await get(org, created.id)).frequency == cleared.frequency
    # Changing the period moves its derived id and name with it.
    monthly = await update(
        org,
        pb.Badge(id=created.id, frequency=pb.Frequency(freq_period=pb.FREQUENCY_PERIOD_MONTH)),
        "frequency.freq_period",
    )
    assert (monthly.frequency.freq_period_id, monthly.frequency.freq_period_name) == (2, "month")


async def test_update_star_replaces_every_writable_field(org: Org) -> None:
    created = await create(org, full_badge())
    replacement = pb.Badge(
        id=created.id,
        name="replaced",
        title="Replaced",
        date_start=at("2025-01-01T00:00:00Z"),
        display_date_start=at("2025-01-02T00:00:00Z"),
        is_enabled=False,
        badge_states=[state(EARNED, 1, "Done")],
    )
    updated = await update(org, replacement, "*")
    expected = pb.Badge()
    expected.CopyFrom(replacement)
    # Everything not sent is cleared: no end dates, frequency, tags, segments or extra data.
    expected.frequency.SetInParent()
    expected.badge_extra_data.SetInParent()
    expected.create_time.CopyFrom(created.create_time)
    expected.update_time.CopyFrom(updated.update_time)
    assert updated == expected
    assert await get(org, created.id) == expected


async def test_update_with_an_empty_mask_changes_the_fields_set(org: Org) -> None:
    created = await create(org, full_badge())
    updated = await update(
        org,
        pb.Badge(id=created.id, title="Game Day", is_enabled=False, segment=[]),
    )
    expected = pb.Badge()
    expected.CopyFrom(created)
    expected.title = "Game Day"
    expected.is_enabled = False
    expected.update_time.CopyFrom(updated.update_time)
    assert updated == expected
    assert await get(org, created.id) == expected


async def test_update_of_tags_and_extra_data_revalidates_them(org: Org) -> None:
    created = await create(org, valid_badge(tags=tags("Football")))
    await set_meta_tags(org, ("Football", False), ("Cricket", False))
    await add_field(org, "points", common_pb2.DATA_TYPE_INTEGER, "0")
    await expect_error(
        update(org, pb.Badge(id=created.id, tags=tags("Hockey")), "tags"),
        INVALID,
        reason="UNKNOWN_TAG",
        field="badge.tags[0].tag_name",
    )
    await expect_error(
        update(org, pb.Badge(id=created.id, badge_extra_data=struct({"points": "x"}))),
        INVALID,
        reason="EXTRA_DATA_TYPE_MISMATCH",
        field="badge.badge_extra_data.points",
    )
    assert await get(org, created.id) == created
    # A valid update fills the new field's default in.
    updated = await update(org, pb.Badge(id=created.id, tags=tags("Cricket")), "tags")
    assert updated.tags == tags("Cricket")
    assert updated.badge_extra_data == struct({"points": 0})


async def test_update_onto_a_taken_name_fails_and_changes_nothing(org: Org) -> None:
    a, b = await asyncio.gather(create(org, valid_badge("a")), create(org, valid_badge("b")))
    await expect_error(
        update(org, pb.Badge(id=b.id, name="a", title="New"), "name", "title"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="BADGE_NAME_TAKEN",
    )
    assert await get(org, b.id) == b
    # Keeping one's own name is no conflict.
    same = await update(org, pb.Badge(id=a.id, name="a", title="Still A"), "name", "title")
    assert (same.name, same.title) == ("a", "Still A")


@pytest.mark.parametrize(
    ("patch", "paths", "field"),
    [
        pytest.param(
            {"date_end": at("2001-01-01T00:00:00Z")}, ["date_end"], "badge.date_end", id="date-end"
        ),
        pytest.param({"badge_states": []}, ["badge_states"], "badge.badge_states", id="no-states"),
        pytest.param({"title": ""}, ["title"], "badge.title", id="title-cleared"),
        pytest.param(
            {"frequency": pb.Frequency(freq_cap=9)},
            ["frequency.freq_cap"],
            "badge.frequency.freq_cap",
            id="cap-over-max",
        ),
        pytest.param(
            {"segment": [pb.Segment(name="S")]},
            ["segment"],
            "badge.segment[0].eligibility_type",
            id="segment",
        ),
    ],
)
async def test_update_revalidates_and_changes_nothing_on_failure(
    org: Org, patch: dict[str, Any], paths: list[str], field: str
) -> None:
    created = await create(org, full_badge())
    await expect_error(
        update(org, pb.Badge(id=created.id, **patch), *paths),
        INVALID,
        reason="INVALID_FIELD",
        field=field,
    )
    assert await get(org, created.id) == created


@pytest.mark.parametrize(
    "path",
    [
        "nope",
        "id",
        "create_time",
        "update_time",
        "frequency.nope",
        "frequency.freq_period_id",
        "frequency.freq_period_name",
        "title.length",
        "badge_states.order",
    ],
)
async def test_update_mask_must_name_writable_fields(org: Org, path: str) -> None:
    created = await create(org, full_badge())
    await expect_error(
        update(org, pb.Badge(id=created.id, title="X"), path),
        INVALID,
        field="update_mask",
    )
    assert await get(org, created.id) == created


async def test_update_unknown_id_is_not_found(org: Org) -> None:
    await expect_error(
        update(org, pb.Badge(id=987654321, title="X"), "title"),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )


# --- Delete ----------------------------------------------------------------------------------


async def test_delete(org: Org) -> None:
    kept, gone = await asyncio.gather(
        create(org, valid_badge("kept", tags=tags("Football"))),
        create(org, valid_badge("gone", tags=tags("Football", "Cricket"))),
    )
    await org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=gone.id))
    await expect_error(get(org, gone.id), grpc.StatusCode.NOT_FOUND, reason="NOT_FOUND")
    await expect_error(
        org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=gone.id)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        update(org, pb.Badge(id=gone.id, title="X"), "title"),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    football = await org.reader.badges.ListBadges(pb.ListBadgesRequest(tag_name="Football"))
    assert [b.id for b in football.badges] == [kept.id]
    assert await count(org, tag_name="Cricket") == 0
    assert await count(org) == 1
    # The name is free again; the new badge is a new id.
    again = await create(org, valid_badge("gone"))
    assert again.id > gone.id
    assert list(again.tags) == []
    assert await count(org, tag_name="Cricket") == 0


# --- Tenancy ---------------------------------------------------------------------------------


async def test_another_org_can_neither_see_nor_touch_a_badge(org: Org, other_org: Org) -> None:
    mine = await create(org, full_badge())
    for client in (other_org.admin, other_org.reader):
        await expect_error(
            client.badges.GetBadge(pb.GetBadgeRequest(id=mine.id)),
            grpc.StatusCode.NOT_FOUND,
            reason="NOT_FOUND",
        )
        listed = await client.badges.ListBadges(pb.ListBadgesRequest())
        assert list(listed.badges) == [] and listed.total_size == 0
        assert listed.paging.total == 0
        tagged = await client.badges.ListBadges(pb.ListBadgesRequest(tag_name="Football"))
        assert tagged.total_size == 0
    await expect_error(
        update(other_org, pb.Badge(id=mine.id, title="Stolen"), "title"),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        other_org.admin.badges.DeleteBadge(pb.DeleteBadgeRequest(id=mine.id)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    assert await get(org, mine.id) == mine
    assert await count(org, tag_name="Football") == 1
