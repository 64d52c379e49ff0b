"""The documented limits (domain/limits.py, README "Limits"), each at its boundary on every
database: the maximum is accepted, one more is refused with INVALID_ARGUMENT (reason
LIMIT_EXCEEDED) or, for an organisation's quotas, RESOURCE_EXHAUSTED (reason QUOTA_EXCEEDED),
naming the field and the limit. A Struct Value with no kind is refused wherever a Struct is
taken, and a full page of maximum-size objects is served.

Badge templates, issuers and badge classes are in test_limits_badgr.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, common_pb2
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import custom_field_pb2 as cpb
from badge_service.api.badges.v1 import org_meta_pb2 as opb
from badge_service.domain import limits
from badge_service.rpc import wire
from badge_service.rpc.convert import dict_to_struct, stored_size
from badge_service.store.models import custom_fields as fields_table
from badge_service.store.models import org_meta as org_meta_table
from tests.support import Backend, Client, ErrorDetails, Org, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
EARNED = pb.BADGE_STATE_TYPE_EARNED
STRING = common_pb2.DATA_TYPE_STRING
ROOT = Path(__file__).resolve().parent.parent
# Big enough for any page: the server's own message limit.
BIG = [("grpc.max_receive_message_length", limits.MESSAGE_BYTES)]


async def expect_limit(call: Any, field: str, limit: limits.Limit) -> ErrorDetails:
    """``call`` fails INVALID_ARGUMENT, reason LIMIT_EXCEEDED, on ``field``, naming ``limit``."""
    got = await expect_error(call, INVALID, reason="LIMIT_EXCEEDED", field=field)
    assert got.info is not None
    assert got.info.metadata["limit"] == limit.name, got
    assert got.info.metadata["max"] == str(int(limit)), got
    return got


async def expect_quota(call: Any, field: str, limit: limits.Limit) -> None:
    """``call`` fails RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, naming the quota and the
    field in ErrorInfo and the quota as the subject of a QuotaFailure."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        assert err.code() == EXHAUSTED, err
        status = next(
            status_pb2.Status.FromString(v)
            for k, v in err.trailing_metadata() or ()
            if k == "grpc-status-details-bin"
        )
    else:
        raise AssertionError("expected RESOURCE_EXHAUSTED")
    info = error_details_pb2.ErrorInfo()
    quota = error_details_pb2.QuotaFailure()
    assert [status.details[0].Unpack(info), status.details[1].Unpack(quota)] == [True, True]
    assert info.reason == "QUOTA_EXCEEDED" and info.domain == "badges.v1"
    assert dict(info.metadata) == {"limit": limit.name, "max": str(int(limit)), "field": field}
    assert [v.subject for v in quota.violations] == [limit.name]


def string_struct(size: int, key: str = "x") -> struct_pb2.Struct:
    """A Struct of one string that serializes to exactly ``size`` bytes (size >= 130)."""
    for length in range(size, 0, -1):
        out = dict_to_struct({key: "v" * length})
        if out.ByteSize() == size:
            return out
    raise AssertionError(f"no one-string Struct of {size} bytes")


def nested(depth: int, *, lists: bool = False) -> struct_pb2.Struct:
    """A Struct ``depth`` levels deep (the Struct itself is the first level): objects under
    key "a", or lists below the first level."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value] if lists else {"a": value}
    return dict_to_struct({"a": value})


def without_kind(shape: str) -> struct_pb2.Struct:
    """A Struct holding a Value with no kind set, at the top ("top"), in a list ("list") or
    in a nested object ("nested")."""
    out = struct_pb2.Struct()
    if shape == "top":
        out.fields["x"].CopyFrom(struct_pb2.Value())
    elif shape == "list":
        out.fields["x"].list_value.values.add(string_value="ok")
        out.fields["x"].list_value.values.add()
    else:
        out.fields["x"].struct_value.fields["y"].CopyFrom(struct_pb2.Value())
    return out


KINDLESS = {"top": ".x", "list": ".x[1]", "nested": ".x.y"}


def badge(name: str = "b", **fields: Any) -> pb.Badge:
    """A valid badge with one earned state, and ``fields``."""
    out = pb.Badge(name=name, title="t", badge_states=[pb.BadgeState(state=EARNED, order=1)])
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(out, key).extend(value)
        elif key == "badge_extra_data":
            out.badge_extra_data.CopyFrom(value)
        else:
            setattr(out, key, value)
    return out


def create(org: Org, b: pb.Badge) -> Any:
    """The CreateBadge call, unawaited."""
    return org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=b))


def awards(client: Client) -> award_pb2_grpc.AwardServiceStub:
    """The award service on a client's channel."""
    return client.stub(award_pb2_grpc.AwardServiceStub)


def award_call(org: Org, **fields: Any) -> Any:
    """The CreateAward call, unawaited."""
    return awards(org.admin).CreateAward(apb.CreateAwardRequest(award=apb.Award(**fields)))


def url_of_bytes(size: int) -> str:
    """An https URL of exactly ``size`` UTF-8 bytes, mostly two-byte characters."""
    head = "https://x.example/"
    rest = size - len(head)
    return head + "é" * (rest // 2) + "e" * (rest % 2)


# --- The arithmetic, and the documentation ----------------------------------------------------


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=200), JSON, max_size=6))
def test_struct_bytes_is_what_protobuf_serializes(value: dict[str, Any]) -> None:
    # The domain measures extra data after defaults without protobuf: it must agree exactly.
    assert limits.struct_bytes(value) == dict_to_struct(value).ByteSize()


def test_every_limit_is_in_the_readme_with_its_value() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_0-9]+)` \| ([0-9,]+) \|", section, re.M))
    assert rows == {limit.name: f"{int(limit):,}" for limit in limits.ALL}


@pytest.mark.parametrize(
    ("page", "each"),
    [
        (limits.AWARDS_PAGE, limits.AWARD_BYTES + 5_000),  # + revocation and open_badge_id
        (limits.ISSUERS_PAGE, limits.ISSUER_BYTES),
        (limits.BADGE_CLASSES_PAGE, limits.BADGE_CLASS_BYTES),
        # Own fields, and 25 references of about 4.1 KB each.
        (limits.BADGE_TEMPLATES_PAGE, limits.BADGE_TEMPLATE_BYTES + 25 * 4_110),
        (limits.BADGES_PAGE, 289_051),  # the badge at its limits: see domain/limits.py
    ],
)
def test_a_page_of_maximum_size_objects_is_within_the_budget(page: int, each: int) -> None:
    assert page * each <= limits.PAGE_BUDGET_BYTES <= limits.MESSAGE_BYTES // 2


# --- Requests in general ----------------------------------------------------------------------


async def test_page_token_at_its_limit(org: Org) -> None:
    # At the limit the token is read (and is not one of ours); past it, it is not read at all.
    longest = "A" * limits.PAGE_TOKEN_CHARS
    await expect_error(
        org.reader.badges.ListBadges(pb.ListBadgesRequest(page_token=longest)),
        INVALID,
        reason="INVALID_FIELD",
        field="page_token",
    )
    await expect_limit(
        org.reader.badges.ListBadges(pb.ListBadgesRequest(page_token=longest + "A")),
        "page_token",
        limits.PAGE_TOKEN_CHARS,
    )


async def test_update_mask_at_its_limits(org: Org) -> None:
    made = await create(org, badge())
    change = pb.Badge(id=made.id, title="new")
    most = FieldMask(paths=["title"] * limits.UPDATE_MASK_PATHS)
    updated = await org.admin.badges.UpdateBadge(
        pb.UpdateBadgeRequest(badge=change, update_mask=most)
    )
    assert updated.title == "new"
    await expect_limit(
        org.admin.badges.UpdateBadge(
            pb.UpdateBadgeRequest(badge=change, update_mask=FieldMask(paths=[*most.paths, "title"]))
        ),
        "update_mask",
        limits.UPDATE_MASK_PATHS,
    )
    # The longest path is read (and names no field); a longer one is not.
    path = "t" * limits.UPDATE_MASK_PATH_CHARS
    await expect_error(
        org.admin.badges.UpdateBadge(
            pb.UpdateBadgeRequest(badge=change, update_mask=FieldMask(paths=[path]))
        ),
        INVALID,
        reason="INVALID_FIELD",
        field="update_mask",
    )
    await expect_limit(
        org.admin.badges.UpdateBadge(
            pb.UpdateBadgeRequest(badge=change, update_mask=FieldMask(paths=[path + "t"]))
        ),
        "update_mask",
        limits.UPDATE_MASK_PATH_CHARS,
    )


# --- CrowdTwist badges ------------------------------------------------------------------------


async def test_badge_extra_data_at_its_limit(org: Org) -> None:
    most = string_struct(limits.BADGE_EXTRA_DATA_BYTES)
    made = await create(org, badge("most", badge_extra_data=most))
    assert made.badge_extra_data == most
    assert (await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=made.id))) == made
    over = string_struct(limits.BADGE_EXTRA_DATA_BYTES + 1)
    await expect_limit(
        create(org, badge("over", badge_extra_data=over)),
        "badge.badge_extra_data",
        limits.BADGE_EXTRA_DATA_BYTES,
    )
    # An update is held to it too, and changes nothing.
    await expect_limit(
        org.admin.badges.UpdateBadge(
            pb.UpdateBadgeRequest(
                badge=pb.Badge(id=made.id, badge_extra_data=over),
                update_mask=FieldMask(paths=["badge_extra_data"]),
            )
        ),
        "badge.badge_extra_data",
        limits.BADGE_EXTRA_DATA_BYTES,
    )
    assert (await org.reader.badges.GetBadge(pb.GetBadgeRequest(id=made.id))) == made


async def test_badge_extra_data_limit_counts_the_defaults_filled_in(org: Org) -> None:
    # Once an org has fields, extra data names them: "d" is the client's, "e" is filled in.
    await field_call(org, name="d")
    await field_call(org, name="e", default_value="w" * 200)
    filled = limits.struct_bytes({"e": "w" * 200})
    most = string_struct(limits.BADGE_EXTRA_DATA_BYTES - filled, key="d")
    made = await create(org, badge("filled", badge_extra_data=most))
    assert made.badge_extra_data.ByteSize() == limits.BADGE_EXTRA_DATA_BYTES
    assert made.badge_extra_data["e"] == "w" * 200
    # One byte more is within the limit as sent, and over it once the default is in.
    over = string_struct(limits.BADGE_EXTRA_DATA_BYTES - filled + 1, key="d")
    await expect_limit(
        create(org, badge("over", badge_extra_data=over)),
        "badge.badge_extra_data",
        limits.BADGE_EXTRA_DATA_BYTES,
    )


@pytest.mark.parametrize("lists", [False, True])
async def test_struct_depth_at_its_limit(org: Org, lists: bool) -> None:
    deepest = nested(limits.STRUCT_DEPTH, lists=lists)
    made = await create(org, badge("deep", badge_extra_data=deepest))
    assert made.badge_extra_data == deepest
    # Named by the path to the value one level too deep.
    path = "".join("[0]" if lists else ".a" for _ in range(limits.STRUCT_DEPTH - 1))
    await expect_limit(
        create(org, badge("deeper", badge_extra_data=nested(limits.STRUCT_DEPTH + 1, lists=lists))),
        f"badge.badge_extra_data.a{path}",
        limits.STRUCT_DEPTH,
    )


@pytest.mark.parametrize("shape", sorted(KINDLESS))
async def test_a_value_without_kind_is_refused_in_extra_data(org: Org, shape: str) -> None:
    await expect_error(
        create(org, badge(badge_extra_data=without_kind(shape))),
        INVALID,
        reason="VALUE_KIND_MISSING",
        field="badge.badge_extra_data" + KINDLESS[shape],
    )
    # A null is a value, and is kept as one (a field without a kind was read as null before).
    explicit = struct_pb2.Struct()
    explicit.fields["x"].null_value = struct_pb2.NULL_VALUE
    made = await create(org, badge("null", badge_extra_data=explicit))
    assert made.badge_extra_data.fields["x"].WhichOneof("kind") == "null_value"


async def test_badge_lists_and_texts_at_their_limits(org: Org) -> None:
    tags = [pb.BadgeTag(tag_name=f"t{i}") for i in range(limits.BADGE_TAGS)]
    segments = [
        pb.Segment(name=f"s{i}", eligibility_type=pb.ELIGIBILITY_TYPE_INCLUSION)
        for i in range(limits.BADGE_SEGMENTS)
    ]
    text = "é" * limits.BADGE_TEXT_CHARS
    image = url_of_bytes(limits.URL_BYTES)
    made = await create(
        org,
        pb.Badge(
            name=text,
            title=text,
            badge_states=[pb.BadgeState(state=EARNED, order=1, description=text, image_url=image)],
            tags=tags,
            segment=segments,
        ),
    )
    assert len(made.tags) == limits.BADGE_TAGS and len(made.segment) == limits.BADGE_SEGMENTS
    assert made.badge_states[0].image_url == image and made.name == text
    await expect_limit(
        create(org, badge(tags=[*tags, pb.BadgeTag(tag_name="one-more")])),
        "badge.tags",
        limits.BADGE_TAGS,
    )
    await expect_limit(
        create(org, badge(segment=[*segments, segments[0]])),
        "badge.segment",
        limits.BADGE_SEGMENTS,
    )
    await expect_limit(create(org, badge(title=text + "é")), "badge.title", limits.BADGE_TEXT_CHARS)
    await expect_limit(
        create(org, badge(tags=[pb.BadgeTag(tag_name=text + "é")])),
        "badge.tags[0].tag_name",
        limits.BADGE_TEXT_CHARS,
    )
    over = pb.BadgeState(state=EARNED, order=1, image_url=url_of_bytes(limits.URL_BYTES + 1))
    await expect_limit(
        create(org, pb.Badge(name="u", title="t", badge_states=[over])),
        "badge.badge_states[0].image_url",
        limits.URL_BYTES,
    )
    # The tag filter of ListBadges: the longest finds the badge with that tag.
    listed = await org.reader.badges.ListBadges(pb.ListBadgesRequest(tag_name=text, page_size=25))
    assert listed.total_size == 0
    tagged = await create(org, badge("tagged", tags=[pb.BadgeTag(tag_name=text)]))
    listed = await org.reader.badges.ListBadges(pb.ListBadgesRequest(tag_name=text))
    assert [b.id for b in listed.badges] == [tagged.id]
    await expect_limit(
        org.reader.badges.ListBadges(pb.ListBadgesRequest(tag_name=text + "é")),
        "tag_name",
        limits.BADGE_TEXT_CHARS,
    )


def maximum_badge(name: str) -> pb.Badge:
    """A badge with every field at its limit, in four-byte characters where text goes."""
    text = "\U0001f600" * (limits.BADGE_TEXT_CHARS - 6)
    return pb.Badge(
        name=f"{name:<6}" + text,
        title=text + "\U0001f600" * 6,
        badge_states=[
            pb.BadgeState(
                state=kind,
                order=i + 1,
                description=text + "\U0001f600" * 6,
                image_url="https://x.example/" + "p" * (limits.URL_BYTES - 18),
            )
            for i, kind in enumerate(
                (pb.BADGE_STATE_TYPE_UNEARNED, pb.BADGE_STATE_TYPE_IN_PROGRESS, EARNED)
            )
        ],
        tags=[
            pb.BadgeTag(tag_name=f"{i:<6}" + text, tag_id=2**62 + i)
            for i in range(limits.BADGE_TAGS)
        ],
        segment=[
            pb.Segment(
                name=f"{i:<6}" + text,
                subscription_id=2**62 + i,
                eligibility_type=pb.ELIGIBILITY_TYPE_EXCLUSION,
            )
            for i in range(limits.BADGE_SEGMENTS)
        ],
        badge_extra_data=string_struct(limits.BADGE_EXTRA_DATA_BYTES),
        frequency=pb.Frequency(
            freq_cap=2**31 - 1, freq_period=pb.FREQUENCY_PERIOD_DAY, freq_max=2**31 - 1
        ),
    )


async def test_a_page_of_maximum_size_badges_is_served(backend: Backend, org: Org) -> None:
    made = []
    for i in range(limits.BADGES_PAGE):  # one at a time: each request is over a quarter MB
        made.append(await create(org, maximum_badge(str(i))))
    assert made[0].ByteSize() >= 280_000  # near the maximum the arithmetic assumes
    big = backend.client([("authorization", f"Bearer {org.reader_key}")], BIG)
    size = limits.BADGES_PAGE
    for request in (
        pb.ListBadgesRequest(page=1, page_size=size),  # stored replies, numbered
        pb.ListBadgesRequest(page_size=size),  # stored replies, first keyset page
        pb.ListBadgesRequest(page_size=size, tag_name=made[0].tags[0].tag_name),  # filtered
    ):
        page = await big.badges.ListBadges(request)
        assert list(page.badges) == made
        assert page.ByteSize() <= limits.PAGE_BUDGET_BYTES


# --- Custom fields and org meta ---------------------------------------------------------------


def field_call(org: Org, **fields: Any) -> Any:
    """The CreateCustomField call, unawaited."""
    return org.admin.fields.CreateCustomField(
        cpb.CreateCustomFieldRequest(custom_field=cpb.CustomField(data_type=STRING, **fields))
    )


async def test_custom_field_texts_at_their_limits(org: Org) -> None:
    name = "é" * limits.CUSTOM_FIELD_NAME_CHARS
    made = await field_call(org, name=name, default_value="é" * limits.CUSTOM_FIELD_DEFAULT_CHARS)
    assert made.name == name
    await expect_limit(
        field_call(org, name="n", default_value="x" * (limits.CUSTOM_FIELD_DEFAULT_CHARS + 1)),
        "custom_field.default_value",
        limits.CUSTOM_FIELD_DEFAULT_CHARS,
    )
    await expect_limit(
        field_call(org, name=name + "é"), "custom_field.name", limits.CUSTOM_FIELD_NAME_CHARS
    )


async def test_custom_fields_per_org_is_a_quota(org: Org, other_org: Org) -> None:
    await asyncio.gather(
        *(field_call(org, name=f"f{i:03d}") for i in range(limits.CUSTOM_FIELDS_PER_ORG))
    )
    await expect_quota(
        field_call(org, name="one-more"), "custom_field", limits.CUSTOM_FIELDS_PER_ORG
    )
    listed = await org.reader.fields.ListCustomFields(cpb.ListCustomFieldsRequest(page_size=500))
    assert listed.total_size == limits.CUSTOM_FIELDS_PER_ORG
    # Another org's quota is its own.
    assert (await field_call(other_org, name="one-more")).name == "one-more"
    # Deleting one makes room for one.
    await org.admin.fields.DeleteCustomField(
        cpb.DeleteCustomFieldRequest(id=listed.custom_fields[0].id)
    )
    assert (await field_call(org, name="one-more")).name == "one-more"


async def test_concurrent_creates_cannot_pass_the_quota_together(org: Org) -> None:
    await asyncio.gather(
        *(field_call(org, name=f"f{i:03d}") for i in range(limits.CUSTOM_FIELDS_PER_ORG - 2))
    )
    outcomes = await asyncio.gather(
        *(field_call(org, name=f"race{i}") for i in range(6)), return_exceptions=True
    )
    made = [o for o in outcomes if isinstance(o, cpb.CustomField)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(made) == 2 and len(refused) == 4
    assert {e.code() for e in refused} == {EXHAUSTED}
    listed = await org.reader.fields.ListCustomFields(cpb.ListCustomFieldsRequest(page_size=500))
    assert listed.total_size == limits.CUSTOM_FIELDS_PER_ORG


async def test_custom_field_defaults_per_org_is_a_quota(org: Org) -> None:
    quota = limits.CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG
    # Fields "d00", "d01", ... whose defaults fill exactly the quota between them: 250
    # characters each, and the last two sized to fit.
    defaults: dict[str, str] = {}
    while quota - limits.struct_bytes(defaults) > 600:
        defaults[f"d{len(defaults):02d}"] = "v" * 250
    one, name = f"d{len(defaults):02d}", f"d{len(defaults) + 1:02d}"
    first, last = next(
        (a, b)
        for a in range(255, 0, -1)
        for b in range(255, 0, -1)
        if limits.struct_bytes({**defaults, one: "v" * a, name: "v" * b}) == quota
    )
    defaults[one] = "v" * first
    for key, value in defaults.items():
        await field_call(org, name=key, default_value=value)
    made = await field_call(org, name=name, default_value="v" * last)
    defaults[name] = made.default_value
    assert limits.struct_bytes(defaults) == quota
    # One byte more, by a new field or by a longer default, is over it.
    await expect_quota(
        field_call(org, name="e", default_value="v"), "custom_field.default_value", quota
    )
    await expect_quota(
        org.admin.fields.UpdateCustomField(
            cpb.UpdateCustomFieldRequest(
                custom_field=cpb.CustomField(id=made.id, default_value="v" * (last + 1)),
                update_mask=FieldMask(paths=["default_value"]),
            )
        ),
        "custom_field.default_value",
        quota,
    )
    # A field without a default, or an inactive one, fills nothing in.
    assert (await field_call(org, name="e")).name == "e"
    assert (await field_call(org, name="f", default_value="v", is_active=False)).name == "f"
    # And every badge gets exactly those defaults.
    made_badge = await create(org, badge())
    assert dict(made_badge.badge_extra_data) == defaults


async def test_a_badge_is_checked_against_every_field_at_the_quota(org: Org) -> None:
    # 100 fields, each with a default: 100 x 52 bytes is within the defaults quota.
    names = [f"f{i:03d}" for i in range(limits.CUSTOM_FIELDS_PER_ORG)]
    assert limits.struct_bytes(dict.fromkeys(names, "v" * 40)) <= (
        limits.CUSTOM_FIELD_DEFAULTS_BYTES_PER_ORG
    )
    for name in names:
        await field_call(org, name=name, default_value="v" * 40)
    made = await create(org, badge(badge_extra_data=dict_to_struct({names[-1]: "mine"})))
    assert dict(made.badge_extra_data) == dict.fromkeys(names[:-1], "v" * 40) | {names[-1]: "mine"}
    await expect_error(
        create(org, badge("unknown", badge_extra_data=dict_to_struct({"nope": 1}))),
        INVALID,
        reason="UNKNOWN_CUSTOM_FIELD",
        field="badge.badge_extra_data.nope",
    )


def meta_tags(count: int, *, text: str = "") -> list[opb.OrgMetaTag]:
    """``count`` tags, key and description padded with ``text``."""
    return [
        opb.OrgMetaTag(key=f"{i:04d}{text}", data_type=STRING, description=text)
        for i in range(count)
    ]


async def test_org_meta_tags_per_org_is_a_quota(backend: Backend, org: Org) -> None:
    text = "\U0001f600" * (limits.ORG_META_TAG_KEY_CHARS - 4)
    most = meta_tags(limits.ORG_META_TAGS_PER_ORG, text=text)
    for tag in most:
        tag.description = "é" * limits.ORG_META_TAG_DESCRIPTION_CHARS
    big = backend.client([("authorization", f"Bearer {org.admin_key}")], BIG)
    saved = await big.meta.UpdateOrgMeta(opb.UpdateOrgMetaRequest(org_meta=opb.OrgMeta(tags=most)))
    assert list(saved.tags) == most
    got = await big.meta.GetOrgMeta(opb.GetOrgMetaRequest())
    assert list(got.tags) == most and got.ByteSize() <= limits.PAGE_BUDGET_BYTES
    # A badge of this org is checked against the keys.
    made = await create(org, badge(tags=[pb.BadgeTag(tag_name=most[-1].key)]))
    assert made.tags[0].tag_name == most[-1].key
    await expect_error(
        create(org, badge("other", tags=[pb.BadgeTag(tag_name="nope")])),
        INVALID,
        reason="UNKNOWN_TAG",
        field="badge.tags[0].tag_name",
    )
    over = meta_tags(limits.ORG_META_TAGS_PER_ORG + 1)
    await expect_quota(
        big.meta.UpdateOrgMeta(opb.UpdateOrgMetaRequest(org_meta=opb.OrgMeta(tags=over))),
        "org_meta.tags",
        limits.ORG_META_TAGS_PER_ORG,
    )
    assert list((await big.meta.GetOrgMeta(opb.GetOrgMetaRequest())).tags) == most
    long = opb.OrgMetaTag(
        key="k", data_type=STRING, description="d" * (limits.ORG_META_TAG_DESCRIPTION_CHARS + 1)
    )
    await expect_limit(
        big.meta.UpdateOrgMeta(opb.UpdateOrgMetaRequest(org_meta=opb.OrgMeta(tags=[long]))),
        "org_meta.tags[0].description",
        limits.ORG_META_TAG_DESCRIPTION_CHARS,
    )


# --- Awards -----------------------------------------------------------------------------------


async def a_badge(org: Org) -> int:
    """An uncapped badge's id."""
    return int((await create(org, badge("award-target"))).id)


def member(value: str) -> apb.Recipient:
    """A recipient by member id."""
    return apb.Recipient(member_id=value)


def award_stored_size(reply: apb.Award) -> int:
    """What AWARD_BYTES counts of an award: its reply without the fields that are not stored
    (state, for a badge award), times at full width."""
    stored = apb.Award()
    stored.CopyFrom(reply)
    stored.ClearField("state")
    return stored_size(stored)


async def award_of_size(org: Org, badge_id: int, size: int, who: str) -> apb.CreateAwardRequest:
    """A CreateAward request whose award is exactly ``size`` bytes as stored: evidence
    narratives of 8,000 characters and a last one sized from a probe's measure (ids, times
    and the key id measure the same for every award of the org; ``who`` keeps its length)."""
    count = (size - 1_156) // 8_006 + 1
    evidence = [apb.Evidence(narrative="n" * 8_000) for _ in range(count)]
    evidence[-1].narrative = "n" * 1_000
    probe = apb.Award(badge_id=badge_id, recipient=member(who), evidence=evidence)
    reply = await awards(org.admin).CreateAward(apb.CreateAwardRequest(award=probe))
    probe.evidence[-1].narrative = "n" * (1_000 + size - award_stored_size(reply))
    return apb.CreateAwardRequest(award=probe)


async def test_award_size_at_its_limit(org: Org) -> None:
    badge_id = await a_badge(org)
    request = await award_of_size(org, badge_id, limits.AWARD_BYTES, "m1")
    made = await awards(org.admin).CreateAward(request)
    assert award_stored_size(made) == limits.AWARD_BYTES
    request.award.evidence[-1].narrative += "n"
    await expect_limit(awards(org.admin).CreateAward(request), "award", limits.AWARD_BYTES)
    # In a batch the same award is refused alone, naming its place.
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(
            requests=[
                request,
                apb.CreateAwardRequest(award=apb.Award(badge_id=badge_id, recipient=member("ok"))),
            ]
        )
    )
    assert [r.WhichOneof("result") for r in reply.results] == ["error", "award"]
    assert reply.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert reply.results[0].error.details[0].Unpack(info)
    assert info.reason == "LIMIT_EXCEEDED" and info.metadata["field"] == "requests[0].award"


async def test_award_fields_at_their_limits(org: Org) -> None:
    badge_id = await a_badge(org)
    url = url_of_bytes(limits.URL_BYTES)
    email = "a" * (limits.AWARD_EMAIL_CHARS - 12) + "@example.com"
    # Each at its own limit (together they would be over the award's size limit).
    most: list[dict[str, Any]] = [
        {"recipient": member("x" * limits.AWARD_TEXT_CHARS)},
        {"recipient": apb.Recipient(email=email)},
        {"recipient": apb.Recipient(url=url)},
        {"narrative": "é" * limits.AWARD_NARRATIVE_CHARS},
        {"evidence": [apb.Evidence(url="https://e.example")] * limits.AWARD_EVIDENCE},
        {"evidence": [apb.Evidence(url=url, narrative="é" * limits.AWARD_NARRATIVE_CHARS)]},
        {"custom_data": string_struct(limits.AWARD_CUSTOM_DATA_BYTES)},
    ]
    for fields in most:
        made = await award_call(org, badge_id=badge_id, **({"recipient": member("m")} | fields))
        for key, value in fields.items():
            got = getattr(made, key)
            assert (list(got) if key == "evidence" else got) == value, key
    over: list[tuple[dict[str, Any], str, limits.Limit]] = [
        ({"recipient": member("x" * 256)}, "award.recipient.member_id", limits.AWARD_TEXT_CHARS),
        (
            {"recipient": apb.Recipient(email="a" + email)},
            "award.recipient.email",
            limits.AWARD_EMAIL_CHARS,
        ),
        ({"recipient": apb.Recipient(url=url + "e")}, "award.recipient.url", limits.URL_BYTES),
        (
            {"narrative": "é" * (limits.AWARD_NARRATIVE_CHARS + 1)},
            "award.narrative",
            limits.AWARD_NARRATIVE_CHARS,
        ),
        (
            {"evidence": [apb.Evidence(url="https://e.example")] * (limits.AWARD_EVIDENCE + 1)},
            "award.evidence",
            limits.AWARD_EVIDENCE,
        ),
        ({"evidence": [apb.Evidence(url=url + "e")]}, "award.evidence[0].url", limits.URL_BYTES),
        (
            {"evidence": [apb.Evidence(narrative="n" * (limits.AWARD_NARRATIVE_CHARS + 1))]},
            "award.evidence[0].narrative",
            limits.AWARD_NARRATIVE_CHARS,
        ),
        (
            {"custom_data": string_struct(limits.AWARD_CUSTOM_DATA_BYTES + 1)},
            "award.custom_data",
            limits.AWARD_CUSTOM_DATA_BYTES,
        ),
    ]
    for fields, where, limit in over:
        await expect_limit(
            award_call(org, badge_id=badge_id, **({"recipient": member("m")} | fields)),
            where,
            limit,
        )
    reason = "r" * limits.AWARD_REASON_CHARS
    revoked = await awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id=made.id, reason=reason))
    assert revoked.revocation_reason == reason
    other = await award_call(org, badge_id=badge_id, recipient=member("m"))
    await expect_limit(
        awards(org.admin).RevokeAward(apb.RevokeAwardRequest(id=other.id, reason=reason + "r")),
        "reason",
        limits.AWARD_REASON_CHARS,
    )


@pytest.mark.parametrize("shape", sorted(KINDLESS))
async def test_a_value_without_kind_is_refused_in_custom_data(org: Org, shape: str) -> None:
    badge_id = await a_badge(org)
    await expect_error(
        award_call(org, badge_id=badge_id, recipient=member("m"), custom_data=without_kind(shape)),
        INVALID,
        reason="VALUE_KIND_MISSING",
        field="award.custom_data" + KINDLESS[shape],
    )


async def test_batch_awards_size_at_its_limit(backend: Backend, org: Org) -> None:
    badge_id = await a_badge(org)
    # Awards of exactly AWARD_BYTES: BATCH_AWARDS_BYTES holds this many of them.
    each = await award_of_size(org, badge_id, limits.AWARD_BYTES, "p00000")
    fit = limits.BATCH_AWARDS_BYTES // limits.AWARD_BYTES
    assert fit * limits.AWARD_BYTES == limits.BATCH_AWARDS_BYTES

    def batch(count: int, prefix: str) -> apb.BatchCreateAwardsRequest:
        requests = []
        for i in range(count):
            one = apb.CreateAwardRequest()
            one.CopyFrom(each)
            one.award.recipient.member_id = f"{prefix}{i:05d}"
            requests.append(one)
        return apb.BatchCreateAwardsRequest(requests=requests)

    stub = awards(org.admin)
    await expect_limit(
        stub.BatchCreateAwards(batch(fit + 1, "o")), "requests", limits.BATCH_AWARDS_BYTES
    )
    listed = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge_id))
    assert listed.total_size == 1  # the probe: nothing of the refused batch was written
    # Its reply is over gRPC clients' default 4 MiB (README, Limits).
    big = awards(backend.client([("authorization", f"Bearer {org.admin_key}")], BIG))
    reply = await big.BatchCreateAwards(batch(fit, "b"))
    assert all(r.HasField("award") for r in reply.results) and len(reply.results) == fit
    assert sum(award_stored_size(r.award) for r in reply.results) == limits.BATCH_AWARDS_BYTES


async def test_a_page_of_maximum_size_awards_is_served(backend: Backend, org: Org) -> None:
    badge_id = await a_badge(org)
    each = await award_of_size(org, badge_id, limits.AWARD_BYTES, "p00000")
    stub = awards(org.admin)
    made = []
    for chunk in range(2):  # two batches: a page's worth is over one batch's size limit
        requests = []
        for i in range(limits.AWARDS_PAGE // 2):
            one = apb.CreateAwardRequest()
            one.CopyFrom(each)
            one.award.recipient.member_id = f"{chunk}{i:05d}"
            requests.append(one)
        reply = await stub.BatchCreateAwards(apb.BatchCreateAwardsRequest(requests=requests))
        made += [r.award for r in reply.results]
    assert all(award_stored_size(a) == limits.AWARD_BYTES for a in made)
    # The longest revocation reason makes a reply as large as an award's can be.
    for a in made[:10]:
        await stub.RevokeAward(apb.RevokeAwardRequest(id=a.id, reason="r" * 1_000))
    big = awards(backend.client([("authorization", f"Bearer {org.reader_key}")], BIG))
    first = await big.ListAwards(apb.ListAwardsRequest(badge_id=badge_id, page_size=1000))
    assert len(first.awards) == limits.AWARDS_PAGE and first.next_page_token
    assert first.ByteSize() <= limits.PAGE_BUDGET_BYTES
    # The filtered path reads the same rows another way.
    active = await big.ListAwards(
        apb.ListAwardsRequest(badge_id=badge_id, revoked=False, page_size=1000)
    )
    assert len(active.awards) == limits.AWARDS_PAGE - 10 + 1  # the probe is first and active
    assert active.ByteSize() <= limits.PAGE_BUDGET_BYTES


async def test_verify_award_image_at_its_limit(org: Org) -> None:
    stub = awards(org.reader)
    # Exactly the limit is read (and is no image); one byte more is not read at all.
    most = b"\x89PNG\r\n\x1a\n" + b"\x00" * (limits.BAKED_IMAGE_BYTES - 8)
    await expect_error(
        stub.VerifyAward(apb.VerifyAwardRequest(baked_image=most)),
        INVALID,
        reason="INVALID_FIELD",
        field="baked_image",
    )
    await expect_limit(
        stub.VerifyAward(apb.VerifyAwardRequest(baked_image=most + b"\x00")),
        "baked_image",
        limits.BAKED_IMAGE_BYTES,
    )
    url = url_of_bytes(limits.URL_BYTES + 1)
    await expect_limit(
        stub.VerifyAward(apb.VerifyAwardRequest(assertion_id=url)),
        "assertion_id",
        limits.URL_BYTES,
    )


def test_wire_helpers_build_what_protobuf_builds() -> None:
    # (Used above to reason about sizes: a length-delimited field is tag, length, payload.)
    assert wire.message_field(3, b"xy") == pb.BadgeState(description="xy").SerializeToString()


# --- Rules kept between writes ----------------------------------------------------------------


async def test_a_badge_sees_every_change_to_its_orgs_rules(backend: Backend, org: Org) -> None:
    # The org's tag rules and fields are kept between writes (decoding them at the quotas was
    # most of a badge write's cost); any change must still count at once, also one another
    # process made (here: straight in the database, as another worker would).
    await org.admin.meta.UpdateOrgMeta(
        opb.UpdateOrgMetaRequest(org_meta=opb.OrgMeta(tags=meta_tags(3)))
    )
    await field_call(org, name="f", default_value="one")
    first = await create(org, badge("first", tags=[pb.BadgeTag(tag_name="0000")]))
    assert first.badge_extra_data["f"] == "one"
    async with backend.db.write() as conn:
        await conn.execute(
            org_meta_table.update()
            .where(org_meta_table.c.org_id == org.id)
            .values(tags=[{"key": "0001", "data_type": "STRING", "mandatory": True}])
        )
        await conn.execute(
            fields_table.update().where(fields_table.c.org_id == org.id).values(default_value="two")
        )
    await expect_error(
        create(org, badge("second", tags=[pb.BadgeTag(tag_name="0000")])),
        INVALID,
        reason="UNKNOWN_TAG",
        field="badge.tags[0].tag_name",
    )
    second = await create(org, badge("second", tags=[pb.BadgeTag(tag_name="0001")]))
    assert second.badge_extra_data["f"] == "two"
    # And through the API: a field deleted fills nothing in.
    listed = await org.reader.fields.ListCustomFields(cpb.ListCustomFieldsRequest())
    await org.admin.fields.DeleteCustomField(
        cpb.DeleteCustomFieldRequest(id=listed.custom_fields[0].id)
    )
    third = await create(org, badge("third", tags=[pb.BadgeTag(tag_name="0001")]))
    assert dict(third.badge_extra_data) == {}


async def test_struct_depth_is_reached_before_protobuf_refuses_the_request(org: Org) -> None:
    # The deepest place a Struct is taken: custom data inside a batch. One level past the
    # limit is still a request protobuf parses, so the client is told which limit it passed.
    badge_id = await a_badge(org)
    deepest, deeper = (
        apb.CreateAwardRequest(
            award=apb.Award(badge_id=badge_id, recipient=member(name), custom_data=nested(depth))
        )
        for name, depth in (("a", limits.STRUCT_DEPTH), ("b", limits.STRUCT_DEPTH + 1))
    )
    reply = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(requests=[deepest, deeper])
    )
    assert reply.results[0].award.custom_data == deepest.award.custom_data
    info = error_details_pb2.ErrorInfo()
    assert reply.results[1].error.details[0].Unpack(info)
    assert info.reason == "LIMIT_EXCEEDED" and info.metadata["limit"] == "struct_depth"
    assert info.metadata["field"] == "requests[1].award.custom_data" + ".a" * limits.STRUCT_DEPTH
