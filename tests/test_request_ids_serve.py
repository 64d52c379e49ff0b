"""The retry recipe against ``badge-service serve`` as a real process, on SQLite and PostgreSQL:
a CreateAward retried with its request_id after DEADLINE_EXCEEDED, or after UNAVAILABLE from a
server killed mid-write and started again, yields exactly one award, and a retry of an
acknowledged call after the restart answers with the first reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, badge_pb2
from tests.support import own_database_url
from tests.test_serve import ServeProcess, serving

DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own on each backend."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


async def new_badge(server: ServeProcess, key: str) -> int:
    """A badge with no caps, for awarding."""
    badge = await server.client(key).badges.CreateBadge(
        badge_pb2.CreateBadgeRequest(
            badge=badge_pb2.Badge(
                name="retried",
                title="Retried",
                badge_states=[
                    badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)
                ],
            )
        )
    )
    return badge.id


def award_request(badge_id: int, member_id: str, rid: str) -> apb.CreateAwardRequest:
    """CreateAward of the badge to a member, with a request id."""
    return apb.CreateAwardRequest(
        award=apb.Award(badge_id=badge_id, recipient=apb.Recipient(member_id=member_id)),
        request_id=rid,
    )


async def awards_of(stub: award_pb2_grpc.AwardServiceStub, member_id: str) -> list[str]:
    """The ids of a member's awards."""
    reply = await stub.ListAwards(
        apb.ListAwardsRequest(recipient=apb.Recipient(member_id=member_id), page_size=100)
    )
    return [a.id for a in reply.awards]


async def test_a_retry_after_deadline_exceeded_yields_one_award(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url) as server:
        org = server.new_org()
        stub = server.client(org["api_key"]).stub(award_pb2_grpc.AwardServiceStub)
        badge_id = await new_badge(server, org["api_key"])
        requests = [award_request(badge_id, f"m{i}", str(uuid.uuid4())) for i in range(20)]
        exceeded = []
        # Deadlines of 1-10 ms: some expire before the write starts, some while it commits.
        for i, request in enumerate(requests):
            try:
                await stub.CreateAward(request, timeout=(1 + i % 10) / 1000)
            except grpc.aio.AioRpcError as err:
                assert err.code() == DEADLINE, err
                exceeded.append(request)
        assert exceeded, "no call exceeded its deadline: the test proves nothing"
        for request in exceeded:  # the README's recipe: retry with the same request_id
            await stub.CreateAward(request, timeout=30)
        for i in range(len(requests)):
            assert len(await awards_of(stub, f"m{i}")) == 1, f"m{i}"


async def test_a_retry_after_the_server_died_mid_write_yields_one_award(
    tmp_path: Path, database_url: str
) -> None:
    async with serving(tmp_path, database_url) as server:
        org = server.new_org()
        key = org["api_key"]
        badge_id = await new_badge(server, key)
        stub = server.client(key).stub(award_pb2_grpc.AwardServiceStub)
        requests = [award_request(badge_id, f"m{i}", str(uuid.uuid4())) for i in range(400)]
        acked: dict[str, apb.Award] = {}
        failed: list[grpc.StatusCode] = []
        enough = asyncio.Event()

        async def create(request: apb.CreateAwardRequest) -> None:
            try:
                acked[request.request_id] = await stub.CreateAward(request, timeout=30)
            except grpc.aio.AioRpcError as err:
                failed.append(err.code())
            if len(acked) >= 50:
                enough.set()

        calls = [asyncio.create_task(create(r)) for r in requests]
        await enough.wait()
        server.proc.kill()  # mid-load: some calls are queued, some committing
        await asyncio.gather(*calls)
        assert failed, "every call finished before the kill: the test proves nothing"
        assert set(failed) == {UNAVAILABLE}

    async with serving(tmp_path, database_url) as restarted:
        stub = restarted.client(key).stub(award_pb2_grpc.AwardServiceStub)
        for request in requests:
            reply = await stub.CreateAward(request, timeout=30)
            first = acked.get(request.request_id)
            if first is not None:  # acknowledged before the kill: the same reply again
                assert reply == first
        for request in requests:
            member_id = request.award.recipient.member_id
            assert len(await awards_of(stub, member_id)) == 1, member_id
