"""The per-definition award counts (award_counts, migration 0008) behind ListAwards totals:
exact after concurrent single and batch awards of which some are refused (caps, duplicates,
missing definitions); unchanged by revocations, which only filtered totals (counted) see; gone
with a badge class's cascading delete; and backfilled by migration 0008 from the awards already
stored, whose replies (message NULL) still read the same.

Every check compares the API's totals with a real count(*) of the award rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.config import Settings
from badge_service.server import start
from badge_service.store.db import Database
from badge_service.store.models import award_counts, awards
from tests.support import Backend, Org, migrate, own_database_url, store_log
from tests.test_awards import (
    awards as award_stub,
)
from tests.test_awards import (
    give,
    make_badge,
    make_class,
    make_template,
    member,
    revoke,
)
from tests.test_awards_concurrency import outcomes
from tests.test_issuers import classes


async def rows(backend: Backend, org_id: int, **where: Any) -> int:
    """count(*) of the org's award rows with these column values."""
    stmt = select(func.count()).select_from(awards).where(awards.c.org_id == org_id)
    for column, value in where.items():
        stmt = stmt.where(awards.c[column] == value)
    async with backend.db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def kept(backend: Backend, org_id: int, kind: str, ref: str) -> int | None:
    """The definition's kept count, or None without a row."""
    c = award_counts
    stmt = select(c.c.awards).where(c.c.org_id == org_id, c.c.kind == kind, c.c.ref == ref)
    async with backend.db.engine.connect() as conn:
        found = (await conn.execute(stmt)).scalar()
    return None if found is None else int(found)


async def total(org: Org, **subject: Any) -> int:
    """total_size of ListAwards' first page."""
    reply = await award_stub(org.reader).ListAwards(apb.ListAwardsRequest(**subject))
    return reply.total_size


def batch(*requests: apb.Award) -> apb.BatchCreateAwardsRequest:
    return apb.BatchCreateAwardsRequest(
        requests=[apb.CreateAwardRequest(award=a) for a in requests]
    )


async def test_concurrent_awards_are_counted_exactly(
    backend: Backend, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    badge = await make_badge(org)
    capped = await make_badge(org, "capped", frequency=bpb.Frequency(freq_max=2))
    template = await make_template(org)  # one live award per recipient
    bc = await make_class(org)
    stub = award_stub(org.admin)

    def one(**fields: Any) -> Any:
        return stub.CreateAward(apb.CreateAwardRequest(award=apb.Award(**fields)))

    # 30 single awards of the badge, 30 of the capped badge to one member (2 fit), 10 of the
    # template to one member, 5 of a badge that does not exist.
    calls: list[Any] = [one(badge_id=badge.id, recipient=member(f"s{i}")) for i in range(30)]
    calls += [one(badge_id=capped.id, recipient=member("racer")) for _ in range(30)]
    calls += [one(badge_template_id=template.id, recipient=member("dup")) for _ in range(10)]
    calls += [one(badge_id=badge.id + 10_000, recipient=member("x")) for _ in range(5)]
    # 6 batches of 4 badge awards, a class award and an award of the template to "dup".
    calls += [
        stub.BatchCreateAwards(
            batch(
                *(apb.Award(badge_id=badge.id, recipient=member(f"b{n}-{i}")) for i in range(4)),
                apb.Award(badge_class_id=bc.entity_id, recipient=member(f"c{n}")),
                apb.Award(badge_template_id=template.id, recipient=member("dup")),
            )
        )
        for n in range(6)
    ]
    ok, failed = await outcomes(calls)
    batch_results = [
        r for reply in ok if isinstance(reply, apb.BatchCreateAwardsResponse) for r in reply.results
    ]
    # Of the 16 awards of the template to "dup" (10 single, 6 in batches) exactly one won.
    duplicates = failed.pop(("ALREADY_EXISTS", "AWARD_DUPLICATE"))
    duplicates += sum(r.HasField("error") for r in batch_results)
    assert duplicates == 15, (
        failed,
        [r.error for r in batch_results if r.HasField("error")],
        store_log(caplog),
    )
    assert failed == {
        ("FAILED_PRECONDITION", "FREQUENCY_MAX_REACHED"): 28,
        ("NOT_FOUND", "NOT_FOUND"): 5,
    }
    expected = {
        ("badge", str(badge.id), "badge_id", badge.id): 30 + 24,
        ("badge", str(capped.id), "badge_id", capped.id): 2,
        ("template", template.id, "badge_template_id", template.id): 1,
        ("class", bc.id, "badge_class_id", bc.id): 6,
    }
    for (kind, ref, column, value), n in expected.items():
        assert await rows(backend, org.id, **{column: value}) == n
        assert await kept(backend, org.id, kind, ref) == n
        assert await total(org, **{column: value}) == n
    assert await total(org, badge_class_id=bc.entity_id) == 6


async def test_revocations_keep_totals_and_filtered_totals_count(
    backend: Backend, org: Org
) -> None:
    badge = await make_badge(org)
    made = [await give(org.admin, badge_id=badge.id, recipient=member(f"m{i}")) for i in range(5)]
    await asyncio.gather(*(revoke(org.admin, a.id) for a in made[:2]))
    assert await kept(backend, org.id, "badge", str(badge.id)) == 5
    assert await total(org, badge_id=badge.id) == 5
    assert await total(org, badge_id=badge.id, revoked=True) == 2
    assert await total(org, badge_id=badge.id, revoked=False) == 3
    assert await total(org, badge_id=badge.id, expired=False) == 5
    assert await total(org, recipient=member("m0")) == 1


async def test_a_failed_award_adds_nothing(backend: Backend, org: Org) -> None:
    """A refused award rolls its whole transaction back, its count with it, also when it
    shares a group commit with awards that succeed."""
    capped = await make_badge(org, "capped", frequency=bpb.Frequency(freq_max=1))
    stub = award_stub(org.admin)
    ok, failed = await outcomes(
        [
            stub.CreateAward(
                apb.CreateAwardRequest(award=apb.Award(badge_id=capped.id, recipient=member("a")))
            )
            for _ in range(20)
        ]
    )
    assert (len(ok), sum(failed.values())) == (1, 19)
    assert await kept(backend, org.id, "badge", str(capped.id)) == 1
    assert await total(org, badge_id=capped.id) == 1


async def test_a_cascading_class_delete_drops_its_count(backend: Backend, org: Org) -> None:
    kept_class = await make_class(org, "Kept")
    dropped = await make_class(org, "Dropped")
    for i in range(3):
        await give(org.admin, badge_class_id=dropped.entity_id, recipient=member(f"d{i}"))
    await give(org.admin, badge_class_id=kept_class.id, recipient=member("k"))
    assert await kept(backend, org.id, "class", dropped.id) == 3
    await classes(org.admin).DeleteBadgeClass(
        bcpb.DeleteBadgeClassRequest(id_or_entity_id=dropped.entity_id, cascade=True)
    )
    assert await kept(backend, org.id, "class", dropped.id) is None
    assert await rows(backend, org.id, badge_class_id=dropped.id) == 0
    assert await kept(backend, org.id, "class", kept_class.id) == 1
    assert await total(org, badge_class_id=kept_class.entity_id) == 1


async def test_counts_are_per_org(backend: Backend, org: Org, other_org: Org) -> None:
    badge = await make_badge(org)
    await give(org.admin, badge_id=badge.id, recipient=member("m"))
    theirs = await make_badge(other_org)
    assert await total(other_org, badge_id=theirs.id) == 0
    assert await kept(backend, other_org.id, "badge", str(theirs.id)) is None
    try:
        await award_stub(other_org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("another org's badge was listed")


# --- Migration 0008 -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own (the migration test downgrades it)."""
    async with own_database_url(request.param, tmp_path) as url:
        yield url


async def _serve(url: str) -> Backend:
    running = await start(Settings(address="127.0.0.1:0", database_url=url, log_level="WARNING"))
    return Backend("fresh", url, running, [])


async def _stop(backend: Backend) -> None:
    for c in backend.clients:
        await c.channel.close()
    await backend.running.stop(grace=1)


async def _listing(org: Org, **subject: Any) -> list[apb.ListAwardsResponse]:
    """Every page of ListAwards, 2 a page."""
    pages = []
    token = ""
    while True:
        page = await award_stub(org.reader).ListAwards(
            apb.ListAwardsRequest(page_size=2, page_token=token, **subject)
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_migration_backfills_counts_and_old_rows_read_the_same(fresh_url: str) -> None:
    backend = await _serve(fresh_url)
    try:
        org, other = await backend.new_org(), await backend.new_org()
        badge = await make_badge(org)
        template = await make_template(org, allow_duplicate_badges=True)
        bc = await make_class(org)
        lone = await make_badge(other)
        for i in range(5):
            await give(org.admin, badge_id=badge.id, recipient=member(f"m{i}"))
        for _ in range(3):
            await give(org.admin, badge_template_id=template.id, recipient=member("same"))
        made = [
            await give(org.admin, badge_class_id=bc.id, recipient=member(f"c{i}")) for i in range(2)
        ]
        await revoke(org.admin, made[0].id)
        await give(other.admin, badge_id=lone.id, recipient=member("o"))
        subjects: list[dict[str, Any]] = [
            {"badge_id": badge.id},
            {"badge_template_id": template.id},
            {"badge_class_id": bc.entity_id},
            {"recipient": member("same")},
        ]
        before = [await _listing(org, **s) for s in subjects]
    finally:
        await _stop(backend)

    db = Database(fresh_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(migrate, "down", "0007")
            tables = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
            assert "award_counts" not in tables
        async with db.engine.begin() as conn:
            await conn.run_sync(migrate, "up", "head")
        async with db.engine.connect() as conn:
            counted = {
                (int(o), k, r, int(n))
                for o, k, r, n in (await conn.execute(select(award_counts))).all()
            }
            messages = (
                await conn.execute(select(func.count()).where(awards.c.message.is_not(None)))
            ).scalar_one()
    finally:
        await db.close()
    assert counted == {
        (org.id, "badge", str(badge.id), 5),
        (org.id, "template", template.id, 3),
        (org.id, "class", bc.id, 2),
        (other.id, "badge", str(lone.id), 1),
    }
    assert messages == 0  # rows from before 0008 have no stored reply

    backend = await _serve(fresh_url)
    try:
        # The orgs and their keys are in the database; new clients reach the new server.
        org.admin = backend.client([("authorization", f"Bearer {org.admin_key}")])
        org.reader = backend.client([("authorization", f"Bearer {org.reader_key}")])
        after = [await _listing(org, **s) for s in subjects]
        assert after == before
        # A new award is stored with its reply and counted on top of the backfill.
        await give(org.admin, badge_id=badge.id, recipient=member("new"))
        assert (await _listing(org, badge_id=badge.id))[0].total_size == 6
    finally:
        await _stop(backend)
