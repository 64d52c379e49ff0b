"""Capillary org meta (seed 000): every org has one, its tags are replaced by UpdateOrgMeta,
and bad tags are refused with the exact field path, on every database."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import org_meta_pb2 as om
from badge_service.domain.auth import key_id_of
from tests.support import Backend, Client, Org, Over, expect_error, reason_for

INTEGER = common_pb2.DATA_TYPE_INTEGER
BOOLEAN = common_pb2.DATA_TYPE_BOOLEAN
DATE = common_pb2.DATA_TYPE_DATE
STRING = common_pb2.DATA_TYPE_STRING
INVALID = grpc.StatusCode.INVALID_ARGUMENT
HEX24 = re.compile(r"^[0-9a-f]{24}$")


async def key_id(backend: Backend, key: str) -> int:
    """The id of an API key, as last_updated_by carries it."""
    found = key_id_of(key)
    assert found is not None
    return found


def when(ts: object) -> dt.datetime:
    """An aware datetime of a Timestamp."""
    return ts.ToDatetime(tzinfo=dt.UTC)  # type: ignore[attr-defined]


def tag(
    key: str, data_type: int = STRING, description: str = "", mandatory: bool = False
) -> om.OrgMetaTag:
    return om.OrgMetaTag(
        key=key,
        data_type=data_type,  # type: ignore[arg-type]
        description=description,
        mandatory=mandatory,
    )


async def get_meta(client: Client) -> om.OrgMeta:
    return await client.meta.GetOrgMeta(om.GetOrgMetaRequest())


async def put_tags(
    client: Client, tags: list[om.OrgMetaTag], paths: list[str] | None = None
) -> om.OrgMeta:
    request = om.UpdateOrgMetaRequest(org_meta=om.OrgMeta(tags=tags))
    if paths is not None:
        request.update_mask.CopyFrom(FieldMask(paths=paths))
    return await client.meta.UpdateOrgMeta(request)


async def test_get_returns_the_orgs_empty_meta(org: Org, other_org: Org) -> None:
    meta = await get_meta(org.admin)
    assert HEX24.match(meta.id), meta.id
    assert meta.org_id == org.id
    assert list(meta.tags) == []
    assert meta.HasField("created_on")
    assert meta.last_updated_on == meta.created_on
    # Created with the organisation by the CLI, not by any API key.
    assert (meta.created_by, meta.last_updated_by) == (0, 0)
    assert await get_meta(org.reader) == meta
    theirs = await get_meta(other_org.admin)
    assert theirs.id != meta.id and theirs.org_id == other_org.id


async def test_update_round_trips_every_tag_field(backend: Backend, org: Org) -> None:
    before = await get_meta(org.admin)
    await asyncio.sleep(0.01)  # so last_updated_on visibly moves
    tags = [
        tag("custom field 1", STRING, "TEST", mandatory=True),
        tag("Visits", INTEGER, "How many visits"),
        tag("Vip", BOOLEAN),
        tag("Joined", DATE, "Join date ✓", mandatory=True),
    ]
    updated = await put_tags(org.admin, tags)
    assert list(updated.tags) == tags
    assert (updated.id, updated.org_id) == (before.id, org.id)
    assert updated.created_on == before.created_on
    assert updated.created_by == before.created_by
    assert when(updated.last_updated_on) > when(before.last_updated_on)
    assert updated.last_updated_by == await key_id(backend, org.admin_key)
    assert await get_meta(org.reader) == updated


async def test_update_replaces_the_tags(org: Org) -> None:
    await put_tags(org.admin, [tag("A"), tag("B", INTEGER)])
    replaced = await put_tags(org.admin, [tag("C", DATE, "only C")])
    assert list(replaced.tags) == [tag("C", DATE, "only C")]
    assert list((await get_meta(org.admin)).tags) == [tag("C", DATE, "only C")]


async def test_update_with_tags_mask_and_no_tags_clears_them(org: Org) -> None:
    await put_tags(org.admin, [tag("A")])
    cleared = await put_tags(org.admin, [], ["tags"])
    assert list(cleared.tags) == []
    assert list((await get_meta(org.admin)).tags) == []


async def test_keys_are_case_sensitive(org: Org) -> None:
    updated = await put_tags(org.admin, [tag("Size"), tag("size")])
    assert [t.key for t in updated.tags] == ["Size", "size"]


async def test_update_of_one_org_leaves_another_alone(org: Org, other_org: Org) -> None:
    theirs = await get_meta(other_org.admin)
    await put_tags(org.admin, [tag("Mine")])
    assert await get_meta(other_org.admin) == theirs


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ([tag("A"), tag("A", INTEGER)], "org_meta.tags[1].key"),
        ([tag("A"), tag("B"), tag("B")], "org_meta.tags[2].key"),
        ([tag("")], "org_meta.tags[0].key"),
        ([tag("A"), tag("   ")], "org_meta.tags[1].key"),
        ([tag("k" * 256)], Over("org_meta.tags[0].key")),
        ([tag("A"), tag("B", common_pb2.DATA_TYPE_UNSPECIFIED)], "org_meta.tags[1].data_type"),
        ([tag("A", 42)], "org_meta.tags[0].data_type"),
    ],
)
async def test_bad_tags_are_invalid_and_change_nothing(
    org: Org, tags: list[om.OrgMetaTag], field: str
) -> None:
    before = await put_tags(org.admin, [tag("Kept", BOOLEAN, "kept", mandatory=True)])
    got = await expect_error(
        put_tags(org.admin, tags), INVALID, reason=reason_for(field), field=field
    )
    assert got.info is not None and got.info.metadata["field"] == field
    assert await get_meta(org.admin) == before


async def test_key_of_255_characters_is_accepted(org: Org) -> None:
    updated = await put_tags(org.admin, [tag("k" * 255)])
    assert updated.tags[0].key == "k" * 255


@pytest.mark.parametrize("path", ["id", "org_id", "created_on", "last_updated_by", "colour"])
async def test_mask_of_read_only_or_unknown_field_is_invalid(org: Org, path: str) -> None:
    before = await get_meta(org.admin)
    await expect_error(
        put_tags(org.admin, [tag("A")], ["tags", path]), INVALID, field="update_mask"
    )
    assert await get_meta(org.admin) == before
