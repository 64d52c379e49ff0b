"""badges.v1.OrgMetaService: Capillary org meta tags."""

from __future__ import annotations

import grpc

from badge_service.api.badges.v1 import org_meta_pb2 as pb
from badge_service.api.badges.v1 import org_meta_pb2_grpc as pb_grpc
from badge_service.domain.errors import InvalidArgument
from badge_service.domain.org_meta import OrgMeta, OrgMetaTag
from badge_service.rpc.auth import current_principal
from badge_service.rpc.convert import data_type, data_type_proto, merge_update, ts
from badge_service.service import org_meta
from badge_service.service.db import Database

MUTABLE = frozenset({"tags"})


def to_proto(meta: OrgMeta) -> pb.OrgMeta:
    """The message of an org meta."""
    return pb.OrgMeta(
        id=meta.id,
        org_id=meta.org_id,
        tags=[
            pb.OrgMetaTag(
                key=t.key,
                data_type=data_type_proto(t.data_type),
                description=t.description,
                mandatory=t.mandatory,
            )
            for t in meta.tags
        ],
        created_on=ts(meta.created_on),
        created_by=meta.created_by,
        last_updated_on=ts(meta.last_updated_on),
        last_updated_by=meta.last_updated_by,
    )


def tags_from_proto(msg: pb.OrgMeta, prefix: str) -> list[OrgMetaTag]:
    """The domain tags of a request message (unchecked, but enum numbers known)."""
    out = []
    for i, tag in enumerate(msg.tags):
        kind = data_type(tag.data_type)
        if kind is None and tag.data_type != 0:
            raise InvalidArgument(f"{prefix}.tags[{i}].data_type", "is not a known data type")
        out.append(OrgMetaTag(tag.key, kind, tag.description, tag.mandatory))
    return out


class OrgMetaServicer(pb_grpc.OrgMetaServiceServicer):
    """The org meta of the caller's organisation."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def GetOrgMeta(
        self, request: pb.GetOrgMetaRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrgMeta:
        """Returns the org meta."""
        return to_proto(await org_meta.get_org_meta(self._db, current_principal().org_id))

    async def UpdateOrgMeta(
        self, request: pb.UpdateOrgMetaRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrgMeta:
        """Replaces the tags; keys unique, data types required."""
        who = current_principal()

        def merge(existing: OrgMeta) -> list[OrgMetaTag]:
            merged = merge_update(
                to_proto(existing),
                request.org_meta,
                request.update_mask,
                prefix="org_meta",
                mutable=MUTABLE,
            )
            return tags_from_proto(merged, "org_meta")

        return to_proto(await org_meta.update_org_meta(self._db, who.org_id, who.key_id, merge))
