"""badges.v1.CustomFieldService: Capillary custom fields."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import custom_field_pb2 as pb
from badge_service.domain.custom_fields import CODE_DATA_TYPE_REQUIRED, CustomField
from badge_service.domain.errors import InvalidArgument
from badge_service.rpc import wire
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import data_type, data_type_proto, iso, merge_update, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service import custom_fields
from badge_service.service.db import Database

MUTABLE = frozenset({"name", "is_mandatory", "default_value", "is_active", "data_type"})


def from_proto(msg: pb.CustomField, prefix: str) -> CustomField:
    """The domain field of a request message (unchecked)."""
    kind = data_type(msg.data_type)
    if kind is None and msg.data_type != 0:
        raise InvalidArgument(
            f"{prefix}.data_type",
            "must be one of INTEGER, BOOLEAN, DATE, STRING",
            reason="DATA_TYPE_REQUIRED",
            vendor_code=CODE_DATA_TYPE_REQUIRED,
        )
    return CustomField(
        name=msg.name,
        data_type=kind,
        is_mandatory=msg.is_mandatory,
        default_value=msg.default_value if msg.HasField("default_value") else None,
        is_active=msg.is_active if msg.HasField("is_active") else True,
    )


def to_proto(field: CustomField) -> pb.CustomField:
    """The message of a stored field."""
    return pb.CustomField(
        id=field.id,
        org_id=field.org_id,
        name=field.name,
        is_mandatory=field.is_mandatory,
        default_value=field.default_value,
        is_active=field.is_active,
        data_type=data_type_proto(field.data_type),
        created_on=ts(field.created_on),
        created_on_iso=iso(field.created_on),
        created_by=field.created_by,
        last_updated_on=ts(field.last_updated_on),
        last_updated_on_iso=iso(field.last_updated_on),
        last_updated_by=field.last_updated_by,
    )


def _encode(field: CustomField) -> bytes:
    return to_proto(field).SerializeToString()


class CustomFieldServicer:
    """badges.v1.CustomFieldService: custom fields of the caller's organisation (registered
    with ``wire.add_servicer``: CreateCustomField answers with its reply serialized, which is
    what a retry with its request id gets)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @wire.serialized(pb.CustomField)
    async def CreateCustomField(
        self, request: pb.CreateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Creates a field; 740/741/742/744 as Capillary; RESOURCE_EXHAUSTED past the org's
        quotas (fields, defaults)."""
        who = current_principal()
        key = request_key(request, who.org_id)
        field = from_proto(request.custom_field, "custom_field")
        return await custom_fields.create_custom_field(
            self._db, key, who.org_id, who.key_id, field, _encode
        )

    async def GetCustomField(
        self, request: pb.GetCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CustomField:
        """Returns one field."""
        org_id = current_principal().org_id
        return to_proto(await custom_fields.get_custom_field(self._db, org_id, request.id))

    async def ListCustomFields(
        self, request: pb.ListCustomFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCustomFieldsResponse:
        """Lists fields oldest first, with keyset paging."""
        page = await custom_fields.list_custom_fields(
            self._db, current_principal().org_id, request.page_size, request.page_token
        )
        return pb.ListCustomFieldsResponse(
            custom_fields=[to_proto(f) for f in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def UpdateCustomField(
        self, request: pb.UpdateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CustomField:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()

        def merge(existing: CustomField) -> CustomField:
            merged = merge_update(
                to_proto(existing),
                request.custom_field,
                request.update_mask,
                prefix="custom_field",
                mutable=MUTABLE,
            )
            return from_proto(merged, "custom_field")

        field = await custom_fields.update_custom_field(
            self._db, who.org_id, who.key_id, request.custom_field.id, merge
        )
        return to_proto(field)

    async def DeleteCustomField(
        self, request: pb.DeleteCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a field."""
        await custom_fields.delete_custom_field(self._db, current_principal().org_id, request.id)
        return empty_pb2.Empty()
