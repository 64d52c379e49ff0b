"""Request ids (AIP-155) on every write a client may retry: the same request_id with the same
request answers with the first reply and creates nothing more; with a different request it is
ALREADY_EXISTS (REQUEST_ID_REUSED); a malformed id is INVALID_ARGUMENT; ids are the caller's
organisation's own; concurrent retries create one object; old ids are purged. On SQLite and
PostgreSQL through the fixtures. Retries across a restart, a deadline and a killed server are in
test_request_ids_serve.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from sqlalchemy import func, select

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cfpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.domain.requests import RETENTION
from badge_service.store import request_ids as store
from badge_service.store.models import request_ids as table
from tests.support import Backend, Org, expect_error
from tests.test_awards import awards, make_badge, member
from tests.test_badge_templates import templates
from tests.test_issuers import classes, create_class, create_issuer, issuers, small_class

EXISTS = grpc.StatusCode.ALREADY_EXISTS
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Case:
    """One retryable write: how to call it, a request with a given id (``variant`` 1 asks for
    something else), and how many objects of its kind the org holds."""

    call: Callable[[Any], Awaitable[Message]]
    request: Callable[[str, int], Any]
    count: Callable[[], Awaitable[int]]


async def custom_field_case(org: Org) -> Case:
    stub = org.admin.fields

    def request(rid: str, variant: int) -> cfpb.CreateCustomFieldRequest:
        return cfpb.CreateCustomFieldRequest(
            custom_field=cfpb.CustomField(
                name=f"Size {variant}", data_type=common_pb2.DATA_TYPE_STRING
            ),
            request_id=rid,
        )

    async def count() -> int:
        reply = await stub.ListCustomFields(cfpb.ListCustomFieldsRequest(page_size=100))
        return reply.total_size

    return Case(stub.CreateCustomField, request, count)


async def badge_case(org: Org) -> Case:
    stub = org.admin.badges

    def request(rid: str, variant: int) -> bpb.CreateBadgeRequest:
        return bpb.CreateBadgeRequest(
            badge=bpb.Badge(
                name=f"badge_{variant}",
                title="Retried",
                badge_states=[bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=1)],
            ),
            request_id=rid,
        )

    async def count() -> int:
        return (await stub.ListBadges(bpb.ListBadgesRequest())).paging.total

    return Case(stub.CreateBadge, request, count)


async def issuer_case(org: Org) -> Case:
    stub = issuers(org.admin)

    def request(rid: str, variant: int) -> ipb.CreateIssuerRequest:
        return ipb.CreateIssuerRequest(
            issuer=ipb.Issuer(
                name=f"Faculty {variant}", email="contact@example.com", url="https://example.com"
            ),
            request_id=rid,
        )

    async def count() -> int:
        return (await stub.ListIssuers(ipb.ListIssuersRequest(page_size=100))).total_size

    return Case(stub.CreateIssuer, request, count)


async def badge_class_case(org: Org) -> Case:
    issuer = await create_issuer(org.admin)
    stub = classes(org.admin)

    def request(rid: str, variant: int) -> bcpb.CreateBadgeClassRequest:
        return bcpb.CreateBadgeClassRequest(
            badge_class=small_class(issuer.entity_id, name=f"Class {variant}"), request_id=rid
        )

    async def count() -> int:
        reply = await stub.ListBadgeClasses(bcpb.ListBadgeClassesRequest(page_size=100))
        return reply.total_size

    return Case(stub.CreateBadgeClass, request, count)


async def claim_codes_case(org: Org) -> Case:
    issuer = await create_issuer(org.admin)
    bc = await create_class(org.admin, small_class(issuer.entity_id))
    stub = classes(org.admin)

    def request(rid: str, variant: int) -> bcpb.CreateClaimCodesRequest:
        return bcpb.CreateClaimCodesRequest(
            id_or_entity_id=bc.entity_id, count=3, label=f"batch {variant}", request_id=rid
        )

    async def count() -> int:
        reply = await stub.ListClaimCodes(
            bcpb.ListClaimCodesRequest(id_or_entity_id=bc.entity_id, page_size=100)
        )
        assert reply.total_size % 3 == 0
        return reply.total_size // 3  # calls' worth of codes

    return Case(stub.CreateClaimCodes, request, count)


async def template_case(org: Org) -> Case:
    stub = templates(org.admin)

    def request(rid: str, variant: int) -> tpb.CreateBadgeTemplateRequest:
        return tpb.CreateBadgeTemplateRequest(
            organization_id=org.uuid,
            badge_template=tpb.BadgeTemplate(name=f"Archery {variant}"),
            request_id=rid,
        )

    async def count() -> int:
        reply = await stub.ListBadgeTemplates(
            tpb.ListBadgeTemplatesRequest(organization_id=org.uuid)
        )
        return reply.metadata.total_count

    return Case(stub.CreateBadgeTemplate, request, count)


async def award_case(org: Org) -> Case:
    badge = await make_badge(org, "retried")
    stub = awards(org.admin)

    def request(rid: str, variant: int) -> apb.CreateAwardRequest:
        return apb.CreateAwardRequest(
            award=apb.Award(badge_id=badge.id, recipient=member(f"m{variant}")), request_id=rid
        )

    return Case(stub.CreateAward, request, award_count(org, badge.id))


async def batch_case(org: Org) -> Case:
    badge = await make_badge(org, "batched")
    stub = awards(org.admin)

    def request(rid: str, variant: int) -> apb.BatchCreateAwardsRequest:
        return apb.BatchCreateAwardsRequest(
            requests=[
                apb.CreateAwardRequest(
                    award=apb.Award(badge_id=badge.id, recipient=member(f"m{variant}-{i}"))
                )
                for i in range(3)
            ],
            request_id=rid,
        )

    return Case(stub.BatchCreateAwards, request, award_count(org, badge.id, per_call=3))


async def redeem_case(org: Org) -> Case:
    issuer = await create_issuer(org.admin)
    bc = await create_class(org.admin, small_class(issuer.entity_id))
    (code,) = (
        await classes(org.admin).CreateClaimCodes(
            bcpb.CreateClaimCodesRequest(id_or_entity_id=bc.entity_id, use_limit=10)
        )
    ).claim_codes
    stub = awards(org.admin)

    def request(rid: str, variant: int) -> apb.RedeemClaimCodeRequest:
        return apb.RedeemClaimCodeRequest(
            id_or_entity_id=bc.entity_id,
            claim_code=code.code,
            recipient=apb.Recipient(email=f"r{variant}@example.com"),
            request_id=rid,
        )

    async def count() -> int:
        reply = await stub.ListAwards(apb.ListAwardsRequest(badge_class_id=bc.entity_id))
        listed = await classes(org.admin).ListClaimCodes(
            bcpb.ListClaimCodesRequest(id_or_entity_id=bc.entity_id)
        )
        # One use taken per award: retries must not take another.
        assert listed.claim_codes[0].uses_remaining == 10 - reply.total_size
        return reply.total_size

    return Case(stub.RedeemClaimCode, request, count)


async def revoke_case(org: Org) -> Case:
    badge = await make_badge(org, "revoked")
    stub = awards(org.admin)
    made = [
        await stub.CreateAward(
            apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member(f"m{i}")))
        )
        for i in range(2)
    ]

    def request(rid: str, variant: int) -> apb.RevokeAwardRequest:
        return apb.RevokeAwardRequest(id=made[variant].id, reason="by mistake", request_id=rid)

    async def count() -> int:
        reply = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, revoked=True))
        return reply.total_size

    return Case(stub.RevokeAward, request, count)


def award_count(org: Org, badge_id: int, per_call: int = 1) -> Callable[[], Awaitable[int]]:
    """Calls' worth of awards of a badge (``per_call`` awards a call)."""

    async def count() -> int:
        reply = await awards(org.admin).ListAwards(apb.ListAwardsRequest(badge_id=badge_id))
        assert reply.total_size % per_call == 0
        return reply.total_size // per_call

    return count


CASES: dict[str, Callable[[Org], Awaitable[Case]]] = {
    "CreateCustomField": custom_field_case,
    "CreateBadge": badge_case,
    "CreateIssuer": issuer_case,
    "CreateBadgeClass": badge_class_case,
    "CreateClaimCodes": claim_codes_case,
    "CreateBadgeTemplate": template_case,
    "CreateAward": award_case,
    "BatchCreateAwards": batch_case,
    "RedeemClaimCode": redeem_case,
    "RevokeAward": revoke_case,
}


@pytest.mark.parametrize("name", CASES)
async def test_a_retry_answers_with_the_first_reply_and_writes_nothing(org: Org, name: str) -> None:
    case = await CASES[name](org)
    rid = str(uuid.uuid4())
    before = await case.count()
    first = await case.call(case.request(rid, 0))
    assert await case.count() == before + 1
    again = await case.call(case.request(rid, 0))
    assert again == first
    # The same UUID spelled otherwise is the same id.
    shouted = await case.call(case.request(rid.upper(), 0))
    assert shouted == first
    assert await case.count() == before + 1


@pytest.mark.parametrize("name", CASES)
async def test_an_id_reused_for_another_request_is_refused(org: Org, name: str) -> None:
    case = await CASES[name](org)
    rid = str(uuid.uuid4())
    await case.call(case.request(rid, 0))
    before = await case.count()
    got = await expect_error(case.call(case.request(rid, 1)), EXISTS, reason="REQUEST_ID_REUSED")
    assert got.info is not None and got.info.metadata["request_id"] == rid
    assert await case.count() == before
    # A new id for the other request works.
    await case.call(case.request(str(uuid.uuid4()), 1))
    assert await case.count() == before + 1


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "0b3e7a0c-4f5e-4c2a-9d1e-6f4a2b8c9d1"])
async def test_a_malformed_id_is_invalid(org: Org, name: str, bad: str) -> None:
    case = await CASES[name](org)
    before = await case.count()
    await expect_error(case.call(case.request(bad, 0)), INVALID, field="request_id")
    assert await case.count() == before


async def test_ids_belong_to_their_org(org: Org, other_org: Org) -> None:
    mine, theirs = await award_case(org), await award_case(other_org)
    rid = str(uuid.uuid4())
    a = await mine.call(mine.request(rid, 0))
    b = await theirs.call(theirs.request(rid, 0))
    assert isinstance(a, apb.Award) and isinstance(b, apb.Award)
    assert a.id != b.id
    assert (await mine.count(), await theirs.count()) == (1, 1)


async def test_concurrent_retries_create_one_award(org: Org) -> None:
    case = await award_case(org)
    rid = str(uuid.uuid4())
    replies = await asyncio.gather(*(case.call(case.request(rid, 0)) for _ in range(30)))
    assert len({r.SerializeToString() for r in replies}) == 1
    assert await case.count() == 1


async def test_a_request_id_inside_a_batch_is_refused(org: Org) -> None:
    badge = await make_badge(org, "inner")
    await expect_error(
        awards(org.admin).BatchCreateAwards(
            apb.BatchCreateAwardsRequest(
                requests=[
                    apb.CreateAwardRequest(
                        award=apb.Award(badge_id=badge.id, recipient=member("a"))
                    ),
                    apb.CreateAwardRequest(
                        award=apb.Award(badge_id=badge.id, recipient=member("b")),
                        request_id=str(uuid.uuid4()),
                    ),
                ]
            )
        ),
        INVALID,
        field="requests[1].request_id",
    )
    assert await award_count(org, badge.id)() == 0


async def test_a_failed_write_keeps_its_id_free(org: Org) -> None:
    """Only a committed write takes its id: after a refusal, the retry runs again."""
    case = await award_case(org)
    badge = await make_badge(
        org,
        "capped",
        frequency=bpb.Frequency(freq_cap=1, freq_period=bpb.FREQUENCY_PERIOD_WEEK, freq_max=1),
    )
    stub = awards(org.admin)
    await stub.CreateAward(
        apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("m")))
    )
    rid = str(uuid.uuid4())
    capped = apb.CreateAwardRequest(
        award=apb.Award(badge_id=badge.id, recipient=member("m")), request_id=rid
    )
    for _ in range(2):  # refused each time: the refusal was not stored as the id's reply
        await expect_error(
            stub.CreateAward(capped),
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="FREQUENCY_MAX_REACHED",
        )
    # The id is still free for a request that succeeds.
    fresh = apb.CreateAwardRequest(
        award=apb.Award(badge_id=badge.id, recipient=member("n")), request_id=rid
    )
    assert (await stub.CreateAward(fresh)).recipient.member_id == "n"
    assert await case.count() == 0


async def test_old_ids_are_purged(backend: Backend, org: Org) -> None:
    case = await award_case(org)
    rid = str(uuid.uuid4())
    await case.call(case.request(rid, 0))

    async def stored() -> int:
        async with backend.db.read() as conn:
            n = await conn.scalar(
                select(func.count()).select_from(table).where(table.c.org_id == org.id)
            )
        return int(n or 0)

    assert await stored() == 1
    now = dt.datetime.now(dt.UTC)
    # Within the retention nothing goes; past it, the id is forgotten.
    await backend.db.run_write(store.purge, now - RETENTION)
    assert await stored() == 1
    await backend.db.run_write(store.purge, now + dt.timedelta(seconds=1))
    assert await stored() == 0
    # Forgotten: the same id now creates a new award.
    await case.call(case.request(rid, 0))
    assert await case.count() == 2
