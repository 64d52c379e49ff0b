"""End-to-end smoke: the server answers a create and a get on every database."""

from __future__ import annotations

import grpc

from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cf
from tests.support import Org, expect_error


async def test_create_then_get_custom_field(org: Org) -> None:
    created = await org.admin.fields.CreateCustomField(
        cf.CreateCustomFieldRequest(
            custom_field=cf.CustomField(name="Size", data_type=common_pb2.DATA_TYPE_STRING)
        )
    )
    got = await org.reader.fields.GetCustomField(cf.GetCustomFieldRequest(id=created.id))
    assert got == created
    assert got.org_id == org.id
    await expect_error(
        org.reader.fields.CreateCustomField(
            cf.CreateCustomFieldRequest(
                custom_field=cf.CustomField(name="X", data_type=common_pb2.DATA_TYPE_STRING)
            )
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="WRITE_REQUIRES_ADMIN",
    )
