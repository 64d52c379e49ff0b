"""AwardService under concurrency: the limits are the database's, so racing calls cannot pass
them. 100 concurrent awards of a badge with freq_max 3 give exactly 3; 50 concurrent
redemptions of a one-use claim code give exactly one award; concurrent duplicate Credly awards
give one; a template's badges_count equals its live awards after concurrent awards and
revocations."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import pytest

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from tests.support import Org, details_of, store_log
from tests.test_awards import (
    awards,
    get_template,
    make_badge,
    make_class,
    make_template,
    member,
    new_code,
    uses_remaining,
)
from tests.test_awards_batch import error_of


async def outcomes(calls: list[Any]) -> tuple[list[Any], Counter[tuple[str, str]]]:
    """Runs the calls at once; returns the replies and a count of (status, reason) failures."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok: list[Any] = []
    failed: Counter[tuple[str, str]] = Counter()
    for r in results:
        if isinstance(r, grpc.aio.AioRpcError):
            d = details_of(r)
            failed[(d.code.name, d.info.reason if d.info else "")] += 1
        elif isinstance(r, BaseException):
            raise r
        else:
            ok.append(r)
    return ok, failed


async def test_freq_max_holds_under_100_concurrent_awards(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=3))
    stub = awards(org.admin)
    req = apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("racer")))
    ok, failed = await outcomes([stub.CreateAward(req) for _ in range(100)])
    assert len(ok) == 3
    assert failed == Counter({("FAILED_PRECONDITION", "FREQUENCY_MAX_REACHED"): 97})
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 3
    assert sorted(a.id for a in listed.awards) == sorted(a.id for a in ok)


async def test_freq_cap_holds_under_concurrent_awards(org: Org) -> None:
    badge = await make_badge(
        org, frequency=bpb.Frequency(freq_cap=2, freq_period=bpb.FREQUENCY_PERIOD_DAY)
    )
    stub = awards(org.admin)
    req = apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("r")))
    ok, failed = await outcomes([stub.CreateAward(req) for _ in range(30)])
    assert len(ok) == 2
    assert failed == Counter({("FAILED_PRECONDITION", "FREQUENCY_CAP_REACHED"): 28})


async def test_one_use_claim_code_under_50_concurrent_redemptions(org: Org) -> None:
    bc = await make_class(org)
    code = await new_code(org, bc, use_limit=1)
    stub = awards(org.admin)
    calls = [
        stub.RedeemClaimCode(
            apb.RedeemClaimCodeRequest(
                id_or_entity_id=bc.entity_id, claim_code=code.code, recipient=member(f"kid-{i}")
            )
        )
        for i in range(50)
    ]
    ok, failed = await outcomes(calls)
    assert len(ok) == 1 and ok[0].claim_code == code.code
    assert failed == Counter({("FAILED_PRECONDITION", "CLAIM_CODE_USED_UP"): 49})
    assert await uses_remaining(org, bc) == 0
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_class_id=bc.id))
    assert [a.id for a in listed.awards] == [ok[0].id]


async def test_concurrent_duplicate_template_awards(org: Org) -> None:
    template = await make_template(org)
    stub = awards(org.admin)
    req = apb.CreateAwardRequest(
        award=apb.Award(badge_template_id=template.id, recipient=apb.Recipient(email="a@b.co"))
    )
    ok, failed = await outcomes([stub.CreateAward(req) for _ in range(30)])
    assert len(ok) == 1
    assert failed == Counter({("ALREADY_EXISTS", "AWARD_DUPLICATE"): 29})
    assert (await get_template(org, template.id)).badges_count == 1


async def test_badges_count_follows_concurrent_awards_and_revocations(
    org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    template = await make_template(org, allow_duplicate_badges=True)
    stub = awards(org.admin)

    def create(i: int) -> Any:
        return stub.CreateAward(
            apb.CreateAwardRequest(
                award=apb.Award(badge_template_id=template.id, recipient=member(f"m{i % 7}"))
            )
        )

    first, failed = await outcomes([create(i) for i in range(40)])
    assert len(first) == 40 and not failed
    # Revoke half (each twice at once: one wins) while 20 more are awarded.
    to_revoke = first[:20]
    calls = [
        stub.RevokeAward(apb.RevokeAwardRequest(id=a.id, reason="redo"))
        for _ in range(2)
        for a in to_revoke
    ] + [create(i) for i in range(20)]
    ok, failed = await outcomes(calls)
    assert failed == Counter({("FAILED_PRECONDITION", "ALREADY_REVOKED"): 20}), store_log(caplog)
    assert len(ok) == 40
    live = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(badge_template_id=template.id, revoked=False)
    )
    assert live.total_size == 40
    assert (await get_template(org, template.id)).badges_count == 40


async def test_concurrent_batches_keep_caps(org: Org) -> None:
    badge = await make_badge(org, frequency=bpb.Frequency(freq_max=5))
    stub = awards(org.admin)
    batch = apb.BatchCreateAwardsRequest(
        requests=[
            apb.CreateAwardRequest(
                award=apb.Award(badge_id=badge.id, recipient=member(f"m{i % 2}"))
            )
            for i in range(6)
        ]
    )
    replies, failed = await outcomes([stub.BatchCreateAwards(batch) for _ in range(4)])
    assert not failed
    results = [r for reply in replies for r in reply.results]
    assert sum(r.HasField("award") for r in results) == 10
    errors = Counter(error_of(r.error) for r in results if r.HasField("error"))
    assert errors == Counter({("FAILED_PRECONDITION", "FREQUENCY_MAX_REACHED", ()): 14})
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert listed.total_size == 10
