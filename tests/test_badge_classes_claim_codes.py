"""Claim codes of Badgr badge classes: create one or a batch (label, use limit, expiry), list
with keyset paging, delete one (Badgr `DELETE /v2/badgeclasses/{id}/claim-codes/{code}`),
uniqueness per class (the database's constraint, and the store drawing again on a
collision), bad input per field, archived classes, tenancy and roles."""

from __future__ import annotations

import datetime as dt
import re

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from badge_service.api.badges.v1 import badge_class_pb2 as pb
from badge_service.domain import paging
from badge_service.domain.claim_codes import CLAIM_CODE_ALPHABET, ClaimCode
from badge_service.store import badgr as store
from badge_service.store.models import badgr_claim_codes
from tests.support import Backend, Org, Over, expect_error, reason_for
from tests.test_issuers import classes, create_class, create_issuer, small_class

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
CODE = re.compile(f"^[{CLAIM_CODE_ALPHABET}]{{12}}$")


def at(value: dt.datetime) -> Timestamp:
    """A Timestamp of an aware datetime."""
    out = Timestamp()
    out.FromDatetime(value)
    return out


async def new_class(org: Org, name: str = "Math Expert") -> pb.BadgeClass:
    """A badge class of a new issuer."""
    issuer = await create_issuer(org.admin)
    return await create_class(org.admin, small_class(issuer.id, name))


async def test_create_one_code_with_defaults(org: Org) -> None:
    bc = await new_class(org)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    got = await classes(org.admin).CreateClaimCodes(
        pb.CreateClaimCodesRequest(id_or_entity_id=bc.entity_id)
    )
    assert len(got.claim_codes) == 1
    code = got.claim_codes[0]
    assert CODE.match(code.code), code.code
    assert (code.badge_class, code.label, code.use_limit, code.uses_remaining) == (
        bc.entity_id,
        "",
        1,
        1,
    )
    assert not code.HasField("expires_at")
    assert code.created_at.ToDatetime(dt.UTC) >= before
    listed = await classes(org.reader).ListClaimCodes(
        pb.ListClaimCodesRequest(id_or_entity_id=bc.id)
    )
    assert list(listed.claim_codes) == [code] and listed.total_size == 1


async def test_create_a_batch(org: Org) -> None:
    bc = await new_class(org)
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(microsecond=0)
    got = await classes(org.admin).CreateClaimCodes(
        pb.CreateClaimCodesRequest(
            id_or_entity_id=bc.id,
            count=50,
            label="Conference Event",
            use_limit=10,
            expires_at=at(expires),
        )
    )
    codes = list(got.claim_codes)
    assert len(codes) == 50 and len({c.code for c in codes}) == 50
    for c in codes:
        assert CODE.match(c.code)
        assert (c.label, c.use_limit, c.uses_remaining) == ("Conference Event", 10, 10)
        assert c.expires_at.ToDatetime(dt.UTC) == expires
        assert c.badge_class == bc.entity_id
    # The biggest batch and the biggest use limit are accepted.
    big = await classes(org.admin).CreateClaimCodes(
        pb.CreateClaimCodesRequest(id_or_entity_id=bc.id, count=1000, use_limit=1_000_000)
    )
    assert len({c.code for c in big.claim_codes} | {c.code for c in codes}) == 1050
    listed = await classes(org.reader).ListClaimCodes(
        pb.ListClaimCodesRequest(id_or_entity_id=bc.id, page_size=5000)  # clamped to 1000
    )
    assert len(listed.claim_codes) == 1000 and listed.total_size == 1050
    assert [c.code for c in listed.claim_codes[:50]] == [c.code for c in codes]
    assert listed.next_page_token


async def test_list_pages_in_creation_order(org: Org) -> None:
    bc = await new_class(org)
    other = await create_class(org.admin, small_class(bc.issuer, "Other"))
    made = []
    for label in ("a", "b", "c"):
        made += (
            await classes(org.admin).CreateClaimCodes(
                pb.CreateClaimCodesRequest(id_or_entity_id=bc.id, count=2, label=label)
            )
        ).claim_codes
    await classes(org.admin).CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=other.id))
    stub = classes(org.reader)
    seen, token = [], ""
    for _ in range(3):
        page = await stub.ListClaimCodes(
            pb.ListClaimCodesRequest(id_or_entity_id=bc.entity_id, page_size=2, page_token=token)
        )
        assert page.total_size == 6
        seen += page.claim_codes
        token = page.next_page_token
    assert token == "" and seen == made
    assert [c.label for c in seen] == ["a", "a", "b", "b", "c", "c"]
    first = await stub.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id, page_size=1))
    fingerprint = paging.filter_fingerprint("badgr_claim_codes", bc.id)
    for bad in (
        "%%%",
        paging.encode_page_token(2**70, fingerprint),
        paging.encode_page_token(-1, fingerprint),
        paging.encode_page_token(True, fingerprint),
        paging.encode_page_token("12", fingerprint),
    ):
        await expect_error(
            stub.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id, page_token=bad)),
            INVALID,
            field="page_token",
        )
    # A token of one class is no good for another.
    await expect_error(
        stub.ListClaimCodes(
            pb.ListClaimCodesRequest(id_or_entity_id=other.id, page_token=first.next_page_token)
        ),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id, page_size=-1)),
        INVALID,
        field="page_size",
    )


async def test_delete_one_code(org: Org) -> None:
    bc = await new_class(org)
    other = await create_class(org.admin, small_class(bc.issuer, "Other"))
    codes = (
        await classes(org.admin).CreateClaimCodes(
            pb.CreateClaimCodesRequest(id_or_entity_id=bc.id, count=3)
        )
    ).claim_codes
    other_code = (
        await classes(org.admin).CreateClaimCodes(
            pb.CreateClaimCodesRequest(id_or_entity_id=other.id)
        )
    ).claim_codes[0]
    stub = classes(org.admin)
    await stub.DeleteClaimCode(
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code=codes[0].code)
    )
    # Case does not matter; the class may be named by entity id.
    await stub.DeleteClaimCode(
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.entity_id, claim_code=codes[1].code.lower())
    )
    left = await stub.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id))
    assert list(left.claim_codes) == [codes[2]] and left.total_size == 1
    for request in (
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code=codes[0].code),  # gone
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code="ZZZZZZZZZZZZ"),
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code="not a code"),
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code="0" * 5000),
        # Another class's code is not this class's.
        pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code=other_code.code),
    ):
        got = await expect_error(stub.DeleteClaimCode(request), NOT_FOUND, reason="NOT_FOUND")
        assert got.info is not None and got.info.metadata["resource"] == "claim code"
        assert len(got.message) < 300
    for request in (
        pb.DeleteClaimCodeRequest(id_or_entity_id="0" * 24, claim_code=codes[2].code),
        pb.DeleteClaimCodeRequest(id_or_entity_id="nope", claim_code=codes[2].code),
    ):
        got = await expect_error(stub.DeleteClaimCode(request), NOT_FOUND)
        assert got.info is not None and got.info.metadata["resource"] == "badge class"
    await expect_error(
        stub.DeleteClaimCode(pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id)),
        INVALID,
        field="claim_code",
    )
    await expect_error(
        stub.DeleteClaimCode(pb.DeleteClaimCodeRequest(claim_code=codes[2].code)),
        INVALID,
        field="id_or_entity_id",
    )
    # Nothing else went.
    assert (
        await stub.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=other.id))
    ).claim_codes == [other_code]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"count": -1}, "count"),
        ({"count": 1001}, Over("count")),
        ({"count": 2**31 - 1}, Over("count")),
        ({"use_limit": 0}, "use_limit"),
        ({"use_limit": -5}, "use_limit"),
        ({"use_limit": 1_000_001}, "use_limit"),
        ({"label": "x" * 256}, Over("label")),
        ({"expires_at": Timestamp(seconds=0)}, "expires_at"),
        ({"expires_at": Timestamp(seconds=2**62)}, "expires_at"),
        ({"expires_at": Timestamp(seconds=10, nanos=-1)}, "expires_at"),
        ({"id_or_entity_id": ""}, "id_or_entity_id"),
    ],
)
async def test_create_rejects_bad_input(org: Org, fields: dict[str, object], field: str) -> None:
    bc = await new_class(org)
    request = pb.CreateClaimCodesRequest(id_or_entity_id=bc.id)
    for name, value in fields.items():
        if isinstance(value, Timestamp):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    await expect_error(
        classes(org.admin).CreateClaimCodes(request), INVALID, reason=reason_for(field), field=field
    )
    listed = await classes(org.reader).ListClaimCodes(
        pb.ListClaimCodesRequest(id_or_entity_id=bc.id)
    )
    assert listed.total_size == 0


async def test_archived_class_takes_no_new_codes(org: Org) -> None:
    bc = await new_class(org)
    await classes(org.admin).UpdateBadgeClass(
        pb.UpdateBadgeClassRequest(
            badge_class=pb.BadgeClass(id=bc.id, archived=True),
            update_mask=field_mask_pb2.FieldMask(paths=["archived"]),
        )
    )
    await expect_error(
        classes(org.admin).CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="BADGE_CLASS_ARCHIVED",
    )
    await expect_error(
        classes(org.admin).CreateClaimCodes(
            pb.CreateClaimCodesRequest(id_or_entity_id="AAAAAAAAAAAAAAAAAAAAAA")
        ),
        NOT_FOUND,
    )


async def test_codes_are_unique_per_class(backend: Backend, org: Org) -> None:
    bc = await new_class(org)
    other = await create_class(org.admin, small_class(bc.issuer, "Other"))
    taken = (
        await classes(org.admin).CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id))
    ).claim_codes[0]
    now = dt.datetime.now(dt.UTC)
    row = {
        "org_id": org.id,
        "badge_class_id": bc.id,
        "code": taken.code,
        "label": "",
        "use_limit": 1,
        "uses_remaining": 1,
        "created_at": 0,
    }
    # The database refuses a second row with the same code in the same class...
    with pytest.raises(IntegrityError):
        async with backend.db.write() as conn:
            await conn.execute(insert(badgr_claim_codes).values(**row))
    # ... but not in another class ...
    async with backend.db.write() as conn:
        await conn.execute(insert(badgr_claim_codes).values(**(row | {"badge_class_id": other.id})))
    # ... and keeps uses_remaining within 0..use_limit.
    for uses in (-1, 2):
        with pytest.raises(IntegrityError):
            async with backend.db.write() as conn:
                await conn.execute(
                    insert(badgr_claim_codes).values(
                        **(row | {"code": "QQQQQQQQQQQQ", "uses_remaining": uses})
                    )
                )
    # The store draws the batch again when a code collides, in the same transaction.
    fresh = iter(["RRRRRRRRRRRR", "SSSSSSSSSSSS"])
    batch = [
        ClaimCode(code=c, badge_class_id=bc.id, created_at=now, org_id=org.id)
        for c in (taken.code, "TTTTTTTTTTTT")
    ]
    async with backend.db.write() as conn:
        await store.insert_claim_codes(conn, batch, lambda: next(fresh))
    assert [c.code for c in batch] == ["RRRRRRRRRRRR", "SSSSSSSSSSSS"]
    listed = await classes(org.reader).ListClaimCodes(
        pb.ListClaimCodesRequest(id_or_entity_id=bc.id)
    )
    assert [c.code for c in listed.claim_codes] == [taken.code, "RRRRRRRRRRRR", "SSSSSSSSSSSS"]


async def test_codes_go_with_their_class(org: Org) -> None:
    bc = await new_class(org)
    await classes(org.admin).CreateClaimCodes(
        pb.CreateClaimCodesRequest(id_or_entity_id=bc.id, count=4)
    )
    await classes(org.admin).DeleteBadgeClass(pb.DeleteBadgeClassRequest(id_or_entity_id=bc.id))
    await expect_error(
        classes(org.reader).ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id)),
        NOT_FOUND,
    )


async def test_other_orgs_codes_are_not_found(org: Org, other_org: Org) -> None:
    bc = await new_class(org)
    code = (
        await classes(org.admin).CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id))
    ).claim_codes[0]
    theirs = classes(other_org.admin)
    for call in (
        theirs.CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id)),
        theirs.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.entity_id)),
        theirs.DeleteClaimCode(
            pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code=code.code)
        ),
    ):
        await expect_error(call, NOT_FOUND)
    listed = await classes(org.reader).ListClaimCodes(
        pb.ListClaimCodesRequest(id_or_entity_id=bc.id)
    )
    assert list(listed.claim_codes) == [code]


async def test_reader_cannot_write_codes(org: Org) -> None:
    bc = await new_class(org)
    code = (
        await classes(org.admin).CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id))
    ).claim_codes[0]
    reader = classes(org.reader)
    for call in (
        reader.CreateClaimCodes(pb.CreateClaimCodesRequest(id_or_entity_id=bc.id, count=2)),
        reader.DeleteClaimCode(
            pb.DeleteClaimCodeRequest(id_or_entity_id=bc.id, claim_code=code.code)
        ),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    listed = await reader.ListClaimCodes(pb.ListClaimCodesRequest(id_or_entity_id=bc.id))
    assert list(listed.claim_codes) == [code]
