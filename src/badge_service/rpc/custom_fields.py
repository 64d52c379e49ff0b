"""badges.v1.CustomFieldService: Capillary custom fields."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import empty_pb2

from badge_service.api.badges.v1 import custom_field_pb2 as pb
from badge_service.api.badges.v1 import custom_field_pb2_grpc as pb_grpc
from badge_service.domain import limits, paging
from badge_service.domain.custom_fields import (
    CODE_DATA_TYPE_REQUIRED,
    CustomField,
    check_org_fields,
    validate_custom_field,
)
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.ids import is_hex_id, new_hex_id
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import data_type, data_type_proto, iso, merge_update, ts
from badge_service.rpc.request_ids import request_key
from badge_service.service import request_ids
from badge_service.store import custom_fields as store
from badge_service.store import orgs as orgs_store
from badge_service.store.db import Database

MUTABLE = frozenset({"name", "is_mandatory", "default_value", "is_active", "data_type"})
LIST_DEFAULT = 50


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


class CustomFieldServicer(pb_grpc.CustomFieldServiceServicer):
    """Custom fields of the caller's organisation."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def CreateCustomField(
        self, request: pb.CreateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CustomField:
        """Creates a field; 740/741/742/744 as Capillary; RESOURCE_EXHAUSTED past the org's
        quotas (fields, defaults)."""
        who = current_principal()
        key = request_key(request, who.org_id)
        field = validate_custom_field(from_proto(request.custom_field, "custom_field"))
        now = dt.datetime.now(dt.UTC)
        field.id = new_hex_id()
        field.org_id = who.org_id
        field.created_on = field.last_updated_on = now
        field.created_by = field.last_updated_by = who.key_id
        async with self._db.write() as conn:
            first = await request_ids.claim(conn, key, now)
            if first is not None:
                return pb.CustomField.FromString(first)
            await orgs_store.lock_org(conn, who.org_id)
            fields = await conn.run_sync(store.list_fields, who.org_id)
            check_org_fields([*fields, field])
            await store.insert_field(conn, field)
            reply = to_proto(field)
            await request_ids.complete(conn, key, reply.SerializeToString())
        return reply

    async def GetCustomField(
        self, request: pb.GetCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CustomField:
        """Returns one field."""
        who = current_principal()
        async with self._db.read(snapshot=False) as conn:  # one SELECT
            field = await store.get_field(conn, who.org_id, request.id)
        return to_proto(field)

    async def ListCustomFields(
        self, request: pb.ListCustomFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCustomFieldsResponse:
        """Lists fields oldest first, with keyset paging."""
        who = current_principal()
        size = paging.resolve_page_size(
            request.page_size, default=LIST_DEFAULT, maximum=limits.CUSTOM_FIELDS_PAGE
        )
        fingerprint = paging.filter_fingerprint("custom_fields")
        after: str | None = None
        if request.page_token:
            token = paging.decode_page_token(request.page_token, fingerprint)
            # Tokens are not signed: anything but an id we issue could reach the database.
            if not isinstance(token, str) or not is_hex_id(token):
                raise InvalidArgument("page_token", "is not a token this service issued")
            after = token
        async with self._db.read() as conn:
            total = await store.count_fields(conn, who.org_id)
            fields = await conn.run_sync(store.list_fields, who.org_id, after=after, limit=size + 1)
        fields, token = paging.keyset_page(fields, size, fingerprint, lambda r: r.id)
        return pb.ListCustomFieldsResponse(
            custom_fields=[to_proto(f) for f in fields], next_page_token=token, total_size=total
        )

    async def UpdateCustomField(
        self, request: pb.UpdateCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CustomField:
        """Updates the masked fields; the result must pass every create rule."""
        who = current_principal()
        async with self._db.write() as conn:
            existing = await store.get_field(conn, who.org_id, request.custom_field.id)
            merged = merge_update(
                to_proto(existing),
                request.custom_field,
                request.update_mask,
                prefix="custom_field",
                mutable=MUTABLE,
            )
            field = validate_custom_field(from_proto(merged, "custom_field"))
            field.id, field.org_id = existing.id, existing.org_id
            field.created_on, field.created_by = existing.created_on, existing.created_by
            field.last_updated_on = dt.datetime.now(dt.UTC)
            field.last_updated_by = who.key_id
            await orgs_store.lock_org(conn, who.org_id)
            fields = await conn.run_sync(store.list_fields, who.org_id)
            check_org_fields([field if f.id == field.id else f for f in fields])
            await store.update_field(conn, field)
        return to_proto(field)

    async def DeleteCustomField(
        self, request: pb.DeleteCustomFieldRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Deletes a field."""
        who = current_principal()
        async with self._db.write() as conn:
            await store.delete_field(conn, who.org_id, request.id)
        return empty_pb2.Empty()
