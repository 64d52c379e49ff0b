"""Capillary custom fields (seed 002): create round trip, the 740/741/742/744 rules, paging,
FieldMask updates, deletes, and a name race, on every database."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
from collections.abc import Iterable

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from badge_service.domain.auth import Role, key_id_of
from badge_service.store import keys
from tests.support import Backend, Client, Org, details_of, expect_error

INTEGER = common_pb2.DATA_TYPE_INTEGER
BOOLEAN = common_pb2.DATA_TYPE_BOOLEAN
DATE = common_pb2.DATA_TYPE_DATE
STRING = common_pb2.DATA_TYPE_STRING
INVALID = grpc.StatusCode.INVALID_ARGUMENT
HEX24 = re.compile(r"^[0-9a-f]{24}$")
UNKNOWN_ID = "0" * 24


async def key_id(backend: Backend, key: str) -> int:
    """The id of an API key, as the audit fields (created_by, last_updated_by) carry it."""
    found = key_id_of(key)
    assert found is not None
    return found


async def second_admin(backend: Backend, org: Org) -> tuple[Client, int]:
    """Another admin key of ``org``, so an update's author differs from the creator."""
    async with backend.db.write() as conn:
        made, key = await conn.run_sync(
            keys.create_key, org.id, Role.ADMIN, dt.datetime.now(dt.UTC)
        )
    kid = made.id
    return backend.client([("authorization", f"Bearer {key}")]), kid


def when(ts: object) -> dt.datetime:
    """An aware datetime of a Timestamp."""
    return ts.ToDatetime(tzinfo=dt.UTC)  # type: ignore[attr-defined]


def iso(value: dt.datetime) -> str:
    """Capillary's *ISO text of an instant: UTC, to the second, with a Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field(name: str = "CF20 dates", data_type: int = STRING, **kw: object) -> cf.CustomField:
    return cf.CustomField(name=name, data_type=data_type, **kw)  # type: ignore[arg-type]


async def create(client: Client, f: cf.CustomField) -> cf.CustomField:
    return await client.fields.CreateCustomField(cf.CreateCustomFieldRequest(custom_field=f))


async def listed(client: Client) -> list[cf.CustomField]:
    """Every field of the caller's org, in list order (one big page)."""
    reply = await client.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_size=500))
    assert reply.next_page_token == ""
    assert reply.total_size == len(reply.custom_fields)
    return list(reply.custom_fields)


async def update(
    client: Client, f: cf.CustomField, paths: Iterable[str] | None = None
) -> cf.CustomField:
    request = cf.UpdateCustomFieldRequest(custom_field=f)
    if paths is not None:
        request.update_mask.CopyFrom(FieldMask(paths=list(paths)))
    return await client.fields.UpdateCustomField(request)


async def get(client: Client, field_id: str) -> cf.CustomField:
    return await client.fields.GetCustomField(cf.GetCustomFieldRequest(id=field_id))


# --- create ---------------------------------------------------------------------------------


async def test_create_round_trips_every_field(backend: Backend, org: Org) -> None:
    admin_key_id = await key_id(backend, org.admin_key)
    before = dt.datetime.now(dt.UTC)
    created = await create(
        org.admin, field("CF20 dates", STRING, is_mandatory=True, default_value="0")
    )
    after = dt.datetime.now(dt.UTC)

    assert HEX24.match(created.id), created.id
    assert created.org_id == org.id
    assert created.name == "CF20 dates"
    assert created.is_mandatory is True
    assert created.HasField("default_value") and created.default_value == "0"
    # is_active was not sent: Capillary makes a new field active.
    assert created.HasField("is_active") and created.is_active is True
    assert created.data_type == STRING
    created_on = when(created.created_on)
    assert before <= created_on <= after
    assert created.last_updated_on == created.created_on
    assert created.created_on_iso == iso(created_on)
    assert created.last_updated_on_iso == created.created_on_iso
    assert created.created_by == admin_key_id
    assert created.last_updated_by == admin_key_id
    # The id starts with the creation second, as Capillary's (ObjectId-style) ids do.
    assert int(created.id[:8], 16) == int(created_on.timestamp())

    assert await get(org.admin, created.id) == created
    assert await get(org.reader, created.id) == created
    assert await listed(org.admin) == [created]


async def test_create_keeps_is_active_false_and_no_default(org: Org) -> None:
    created = await create(org.admin, field("Inactive", INTEGER, is_active=False))
    assert created.is_active is False
    assert created.is_mandatory is False
    assert not created.HasField("default_value")
    got = await get(org.admin, created.id)
    assert got.is_active is False and not got.HasField("default_value")


async def test_create_treats_an_empty_default_as_none(org: Org) -> None:
    created = await create(org.admin, field("Empty default", STRING, default_value=""))
    assert not created.HasField("default_value")
    assert not (await get(org.admin, created.id)).HasField("default_value")


@pytest.mark.parametrize(
    ("data_type", "default"),
    [
        (INTEGER, "-7"),
        (INTEGER, "42"),
        (INTEGER, "+3"),
        (BOOLEAN, "true"),
        (BOOLEAN, "false"),
        (DATE, "2024-02-29"),
        (STRING, "0"),
        (STRING, "any text, even 'yes' or 2024-13-01 ✓"),
    ],
)
async def test_create_accepts_defaults_of_the_type(org: Org, data_type: int, default: str) -> None:
    created = await create(
        org.admin, field("Typed", data_type, is_mandatory=True, default_value=default)
    )
    assert created.data_type == data_type
    assert created.default_value == default
    assert (await get(org.admin, created.id)).default_value == default


async def test_duplicate_name_is_740_and_names_are_case_sensitive(org: Org) -> None:
    size = await create(org.admin, field("Size"))
    lower = await create(org.admin, field("size", INTEGER))
    assert (size.name, lower.name) == ("Size", "size")

    got = await expect_error(
        create(org.admin, field("Size", BOOLEAN)),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="CUSTOM_FIELD_NAME_TAKEN",
        vendor_code=740,
    )
    assert got.info is not None and got.info.metadata["name"] == "Size"
    # The failed create left the org's fields as they were.
    assert await listed(org.admin) == [size, lower]


async def test_same_name_in_another_org_succeeds(org: Org, other_org: Org) -> None:
    mine = await create(org.admin, field("Size"))
    theirs = await create(other_org.admin, field("Size"))
    assert mine.id != theirs.id
    assert (mine.org_id, theirs.org_id) == (org.id, other_org.id)
    assert await listed(org.admin) == [mine]
    assert await listed(other_org.admin) == [theirs]


async def test_missing_data_type_is_741(org: Org) -> None:
    got = await expect_error(
        create(org.admin, field("No type", common_pb2.DATA_TYPE_UNSPECIFIED)),
        INVALID,
        reason="DATA_TYPE_REQUIRED",
        vendor_code=741,
        field="custom_field.data_type",
    )
    assert got.info is not None and got.info.metadata["field"] == "custom_field.data_type"
    assert await listed(org.admin) == []


async def test_unknown_data_type_number_is_741(org: Org) -> None:
    await expect_error(
        create(org.admin, field("Odd type", 99)),
        INVALID,
        reason="DATA_TYPE_REQUIRED",
        vendor_code=741,
        field="custom_field.data_type",
    )
    assert await listed(org.admin) == []


@pytest.mark.parametrize("default", [None, ""])
async def test_mandatory_without_default_is_742(org: Org, default: str | None) -> None:
    kw = {} if default is None else {"default_value": default}
    await expect_error(
        create(org.admin, field("Must", INTEGER, is_mandatory=True, **kw)),
        INVALID,
        reason="MANDATORY_DEFAULT_REQUIRED",
        vendor_code=742,
        field="custom_field.default_value",
    )
    assert await listed(org.admin) == []


@pytest.mark.parametrize(
    ("data_type", "default"),
    [
        (INTEGER, "abc"),
        (INTEGER, "1.5"),
        (INTEGER, " 1"),
        (BOOLEAN, "yes"),
        (BOOLEAN, "1"),
        (DATE, "2024-13-01"),
        (DATE, "2023-02-29"),
        (DATE, "tomorrow"),
    ],
)
async def test_default_not_of_the_type_is_744(org: Org, data_type: int, default: str) -> None:
    for mandatory in (False, True):
        await expect_error(
            create(
                org.admin, field("Typed", data_type, is_mandatory=mandatory, default_value=default)
            ),
            INVALID,
            reason="DEFAULT_VALUE_TYPE_MISMATCH",
            vendor_code=744,
            field="custom_field.default_value",
        )
    assert await listed(org.admin) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "INVALID_FIELD"), ("   ", "INVALID_FIELD"), ("x" * 256, "LIMIT_EXCEEDED")],
)
async def test_name_required_and_at_most_255(org: Org, name: str, reason: str) -> None:
    got = await expect_error(
        create(org.admin, field(name)), INVALID, reason=reason, field="custom_field.name"
    )
    assert got.info is not None and "code" not in got.info.metadata
    assert await listed(org.admin) == []


async def test_name_of_255_characters_is_accepted(org: Org) -> None:
    created = await create(org.admin, field("x" * 255))
    assert (await get(org.admin, created.id)).name == "x" * 255


async def test_create_without_a_field_names_the_name(org: Org) -> None:
    await expect_error(
        org.admin.fields.CreateCustomField(cf.CreateCustomFieldRequest()),
        INVALID,
        field="custom_field.name",
    )


async def test_concurrent_creates_of_one_name_give_one_field(org: Org) -> None:
    results = await asyncio.gather(
        *(create(org.admin, field("Racy", INTEGER, default_value=str(i))) for i in range(50)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, cf.CustomField)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 49, results
    for err in losses:
        got = details_of(err)
        assert got.code == grpc.StatusCode.ALREADY_EXISTS, got
        assert got.info is not None and got.info.reason == "CUSTOM_FIELD_NAME_TAKEN"
        assert got.info.metadata["code"] == "740"
    assert await listed(org.admin) == wins


async def test_concurrent_creates_of_different_names_all_succeed(org: Org) -> None:
    created = await asyncio.gather(*(create(org.admin, field(f"F{i}")) for i in range(30)))
    assert len({f.id for f in created}) == 30
    assert sorted(f.id for f in await listed(org.admin)) == sorted(f.id for f in created)


# --- get / list -----------------------------------------------------------------------------


@pytest.mark.parametrize("field_id", [UNKNOWN_ID, "", "not-a-hex-id"])
async def test_get_unknown_id_is_not_found(org: Org, field_id: str) -> None:
    got = await expect_error(
        get(org.admin, field_id), grpc.StatusCode.NOT_FOUND, reason="NOT_FOUND"
    )
    assert got.info is not None and got.info.metadata["id"] == field_id


async def test_list_is_empty_for_a_new_org(org: Org) -> None:
    reply = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert reply == cf.ListCustomFieldsResponse()


async def test_list_pages_oldest_first_with_tokens(org: Org) -> None:
    created = [await create(org.admin, field(f"Field {i}", INTEGER)) for i in range(7)]
    seen: list[cf.CustomField] = []
    sizes: list[int] = []
    token = ""
    for _ in range(10):
        reply = await org.reader.fields.ListCustomFields(
            cf.ListCustomFieldsRequest(page_size=3, page_token=token)
        )
        assert reply.total_size == 7
        seen.extend(reply.custom_fields)
        sizes.append(len(reply.custom_fields))
        token = reply.next_page_token
        if not token:
            break
    assert sizes == [3, 3, 1]
    assert seen == created


async def test_list_exact_multiple_of_page_size_ends_with_empty_token(org: Org) -> None:
    created = [await create(org.admin, field(f"F{i}")) for i in range(4)]
    first = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_size=2))
    assert list(first.custom_fields) == created[:2] and first.next_page_token
    second = await org.admin.fields.ListCustomFields(
        cf.ListCustomFieldsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert list(second.custom_fields) == created[2:]
    assert second.next_page_token == ""
    assert second.total_size == 4


async def test_list_default_is_50_and_max_is_500(org: Org) -> None:
    await asyncio.gather(*(create(org.admin, field(f"Bulk {i:02d}")) for i in range(51)))
    default = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest())
    assert len(default.custom_fields) == 50 and default.next_page_token
    assert default.total_size == 51
    rest = await org.admin.fields.ListCustomFields(
        cf.ListCustomFieldsRequest(page_token=default.next_page_token)
    )
    assert len(rest.custom_fields) == 1 and rest.next_page_token == ""
    clamped = await org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_size=10**6))
    assert len(clamped.custom_fields) == 51 and clamped.next_page_token == ""
    assert list(clamped.custom_fields) == [*default.custom_fields, *rest.custom_fields]
    # Oldest first: creation times never go backwards along the list.
    times = [when(f.created_on) for f in clamped.custom_fields]
    assert times == sorted(times)


async def test_list_negative_page_size_is_invalid(org: Org) -> None:
    await expect_error(
        org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_size=-1)),
        INVALID,
        field="page_size",
    )


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "bm90IGpzb24",  # base64 of "not json"
        _token([1, 2]),
        _token({"a": UNKNOWN_ID, "f": "0000000000000000"}),  # another list's fingerprint
    ],
)
async def test_list_garbage_page_token_is_invalid(org: Org, token: str) -> None:
    await expect_error(
        org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_token=token)),
        INVALID,
        field="page_token",
    )


async def test_list_token_of_another_list_is_invalid(org: Org) -> None:
    """A ListBadges token (integer key) cannot page custom fields."""
    from badge_service.domain import paging

    token = paging.encode_page_token(5, paging.filter_fingerprint("custom_fields"))
    await expect_error(
        org.admin.fields.ListCustomFields(cf.ListCustomFieldsRequest(page_token=token)),
        INVALID,
        field="page_token",
    )


# --- update ---------------------------------------------------------------------------------


async def test_update_changes_only_masked_fields(backend: Backend, org: Org) -> None:
    created = await create(org.admin, field("Colour", STRING, default_value="red"))
    editor, editor_key_id = await second_admin(backend, org)
    await asyncio.sleep(0.01)  # so last_updated_on visibly moves
    patch = field("Ignored name", INTEGER, id=created.id, default_value="blue", is_active=False)
    updated = await update(editor, patch, ["default_value"])

    assert updated.default_value == "blue"
    # Not in the mask, so unchanged although the patch set them.
    assert updated.name == "Colour"
    assert updated.data_type == STRING
    assert updated.is_active is True
    assert updated.is_mandatory is False
    assert (updated.id, updated.org_id) == (created.id, org.id)
    assert updated.created_on == created.created_on
    assert updated.created_on_iso == created.created_on_iso
    assert updated.created_by == created.created_by
    assert when(updated.last_updated_on) > when(created.last_updated_on)
    assert updated.last_updated_on_iso == iso(when(updated.last_updated_on))
    assert updated.last_updated_by == editor_key_id != created.created_by
    assert await get(org.admin, created.id) == updated


async def test_update_every_mutable_field(org: Org) -> None:
    created = await create(org.admin, field("Old", STRING))
    patch = field(
        "New", DATE, id=created.id, is_mandatory=True, default_value="2024-02-29", is_active=False
    )
    paths = ["name", "data_type", "is_mandatory", "default_value", "is_active"]
    updated = await update(org.admin, patch, paths)
    assert (updated.name, updated.data_type, updated.is_mandatory) == ("New", DATE, True)
    assert (updated.default_value, updated.is_active) == ("2024-02-29", False)
    assert await get(org.admin, created.id) == updated


async def test_update_empty_mask_means_fields_set_in_the_message(org: Org) -> None:
    created = await create(
        org.admin, field("Old", INTEGER, is_mandatory=True, default_value="1", is_active=True)
    )
    patch = cf.CustomField(id=created.id, name="Renamed", default_value="2")
    updated = await update(org.admin, patch)
    assert (updated.name, updated.default_value) == ("Renamed", "2")
    # Left alone: not set in the message.
    assert (updated.data_type, updated.is_mandatory, updated.is_active) == (INTEGER, True, True)
    assert await get(org.admin, created.id) == updated
    # An optional field set to its zero value is still "set in the message".
    deactivated = await update(org.admin, cf.CustomField(id=created.id, is_active=False))
    assert deactivated.is_active is False
    assert (deactivated.name, deactivated.default_value) == ("Renamed", "2")


async def test_update_masked_field_absent_from_message_is_cleared(org: Org) -> None:
    created = await create(org.admin, field("Opt", STRING, default_value="x"))
    updated = await update(org.admin, cf.CustomField(id=created.id), ["default_value"])
    assert not updated.HasField("default_value")
    assert not (await get(org.admin, created.id)).HasField("default_value")


async def test_update_rename_onto_taken_name_is_740(org: Org) -> None:
    taken = await create(org.admin, field("Taken"))
    mine = await create(org.admin, field("Mine"))
    await expect_error(
        update(org.admin, cf.CustomField(id=mine.id, name="Taken"), ["name"]),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="CUSTOM_FIELD_NAME_TAKEN",
        vendor_code=740,
    )
    assert await listed(org.admin) == [taken, mine]
    # Names are case sensitive on rename too; renaming to its own name is no conflict.
    renamed = await update(org.admin, cf.CustomField(id=mine.id, name="taken"), ["name"])
    assert renamed.name == "taken"
    same = await update(org.admin, cf.CustomField(id=taken.id, name="Taken"), ["name"])
    assert same.name == "Taken"


async def test_update_to_mandatory_without_default_is_742(org: Org) -> None:
    created = await create(org.admin, field("Plain", BOOLEAN))
    await expect_error(
        update(org.admin, cf.CustomField(id=created.id, is_mandatory=True), ["is_mandatory"]),
        INVALID,
        reason="MANDATORY_DEFAULT_REQUIRED",
        vendor_code=742,
        field="custom_field.default_value",
    )
    assert await get(org.admin, created.id) == created


async def test_update_clearing_default_of_mandatory_field_is_742(org: Org) -> None:
    created = await create(
        org.admin, field("Must", BOOLEAN, is_mandatory=True, default_value="true")
    )
    await expect_error(
        update(org.admin, cf.CustomField(id=created.id), ["default_value"]),
        INVALID,
        vendor_code=742,
        field="custom_field.default_value",
    )
    assert await get(org.admin, created.id) == created


async def test_update_type_change_rechecks_existing_default_744(org: Org) -> None:
    created = await create(org.admin, field("Was text", STRING, default_value="abc"))
    await expect_error(
        update(org.admin, cf.CustomField(id=created.id, data_type=INTEGER), ["data_type"]),
        INVALID,
        reason="DEFAULT_VALUE_TYPE_MISMATCH",
        vendor_code=744,
        field="custom_field.default_value",
    )
    await expect_error(
        update(org.admin, cf.CustomField(id=created.id), ["data_type"]),
        INVALID,
        vendor_code=741,
        field="custom_field.data_type",
    )
    assert await get(org.admin, created.id) == created


@pytest.mark.parametrize(
    "path",
    ["colour", "name.first", "id", "org_id", "created_on", "created_by", "last_updated_on_iso"],
)
async def test_update_mask_of_unknown_or_output_only_field_is_invalid(org: Org, path: str) -> None:
    created = await create(org.admin, field("Masked"))
    await expect_error(
        update(org.admin, cf.CustomField(id=created.id, name="Other"), ["name", path]),
        INVALID,
        field="update_mask",
    )
    assert await get(org.admin, created.id) == created


@pytest.mark.parametrize("field_id", [UNKNOWN_ID, ""])
async def test_update_unknown_id_is_not_found(org: Org, field_id: str) -> None:
    await expect_error(
        update(org.admin, cf.CustomField(id=field_id, name="X"), ["name"]),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )


# --- delete ---------------------------------------------------------------------------------


async def test_delete_then_get_and_delete_again_are_not_found(org: Org) -> None:
    gone = await create(org.admin, field("Gone"))
    kept = await create(org.admin, field("Kept"))
    await org.admin.fields.DeleteCustomField(cf.DeleteCustomFieldRequest(id=gone.id))
    await expect_error(get(org.admin, gone.id), grpc.StatusCode.NOT_FOUND, reason="NOT_FOUND")
    await expect_error(
        org.admin.fields.DeleteCustomField(cf.DeleteCustomFieldRequest(id=gone.id)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    await expect_error(
        update(org.admin, cf.CustomField(id=gone.id, name="Back"), ["name"]),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await listed(org.admin) == [kept]
    # The name is free again.
    again = await create(org.admin, field("Gone"))
    assert again.id != gone.id


async def test_delete_unknown_id_is_not_found(org: Org) -> None:
    await expect_error(
        org.admin.fields.DeleteCustomField(cf.DeleteCustomFieldRequest(id=UNKNOWN_ID)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
