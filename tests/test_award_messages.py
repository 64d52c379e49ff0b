"""Award replies sent from the stored message bytes (awards.message, migration 0008) plus the
fields that change: CreateAward, BatchCreateAwards, RedeemClaimCode, RevokeAward and every
kind of ListAwards page equal GetAward's reply, which is built from the row's columns; the
stored bytes hold no state, revocation or server-dependent field; rows from before 0008
(message NULL) read the same, also mixed with newer rows on one page and across page tokens;
and a definition that is not the caller's is NOT_FOUND whatever page token comes with it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update
from sqlalchemy.dialects import sqlite

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import common_pb2
from badge_service.api.badges.v1 import custom_field_pb2 as cfpb
from badge_service.store import awards as store
from badge_service.store.models import awards as awards_table
from tests.support import Backend, Org, expect_error
from tests.test_awards import (
    ACTIVE,
    EXPIRED,
    REVOKED,
    at,
    awards,
    get_award,
    give,
    make_badge,
    make_class,
    make_template,
    member,
    new_code,
    revoke,
    struct,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def stored_message(backend: Backend, award_id: str) -> bytes | None:
    """The award row's message column."""
    async with backend.db.engine.connect() as conn:
        row = (
            await conn.execute(select(awards_table.c.message).where(awards_table.c.id == award_id))
        ).one()
    return None if row[0] is None else bytes(row[0])


async def assert_stored(backend: Backend, reply: apb.Award) -> None:
    """The stored bytes are the reply without the fields that change or depend on the
    server."""
    message = await stored_message(backend, reply.id)
    assert message is not None
    expected = apb.Award()
    expected.CopyFrom(reply)
    for name in ("state", "revocation_reason", "revoke_time", "open_badge_id", "open_badge"):
        expected.ClearField(name)
    assert apb.Award.FromString(message) == expected


async def listed(org: Org, page_size: int = 2, **subject: Any) -> tuple[list[apb.Award], int]:
    """Every award of a ListAwards walk with page tokens, and the total of each page (all
    equal)."""
    out: list[apb.Award] = []
    totals = set()
    token = ""
    while True:
        page = await awards(org.reader).ListAwards(
            apb.ListAwardsRequest(page_size=page_size, page_token=token, **subject)
        )
        out.extend(page.awards)
        totals.add(page.total_size)
        token = page.next_page_token
        if not token:
            break
    (total,) = totals
    return out, total


async def make_awards(org: Org) -> dict[str, Any]:
    """Awards of every kind with most fields set: a badge's (custom data, evidence, one
    revoked), a template's (expired) and a class's (expiring, one by claim code, one in a
    batch beside a refused request)."""
    await org.admin.fields.CreateCustomField(
        cfpb.CreateCustomFieldRequest(
            custom_field=cfpb.CustomField(name="seat", data_type=common_pb2.DATA_TYPE_INTEGER)
        )
    )
    badge = await make_badge(org)
    template = await make_template(
        org,
        allow_duplicate_badges=True,
        default_expires_at_type=tpb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
        default_expires_in_days=1,
    )
    bc = await make_class(org, expires=bcpb.Expires(amount=10, duration=bcpb.EXPIRES_DURATION_DAYS))
    now = dt.datetime.now(dt.UTC)
    replies = [
        await give(
            org.admin,
            badge_id=badge.id,
            recipient=member(f"m{i}"),
            issued_at=at(now - dt.timedelta(hours=i)),
            narrative=f"Attended game {i} é",
            evidence=[apb.Evidence(url="https://example.com/t", narrative=f"ticket {i}")],
            custom_data=struct({"seat": str(10 + i)}),
        )
        for i in range(3)
    ]
    replies.append(
        await give(
            org.admin,
            badge_template_id=template.id,
            recipient=apb.Recipient(email="Ann@Example.com"),
            issued_at=at(now - dt.timedelta(days=2)),
        )
    )
    replies.append(
        await give(
            org.admin,
            badge_template_id=template.id,
            recipient=apb.Recipient(url="https://x.org/me"),
        )
    )
    replies.append(await give(org.admin, badge_class_id=bc.entity_id, recipient=member("m0")))
    code = await new_code(org, bc)
    replies.append(
        await awards(org.admin).RedeemClaimCode(
            apb.RedeemClaimCodeRequest(
                id_or_entity_id=bc.entity_id, claim_code=code.code, recipient=member("kid")
            )
        )
    )
    batch = await awards(org.admin).BatchCreateAwards(
        apb.BatchCreateAwardsRequest(
            requests=[
                apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("b"))),
                apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id + 10_000)),
                apb.CreateAwardRequest(
                    award=apb.Award(badge_class_id=bc.id, recipient=member("b"))
                ),
            ]
        )
    )
    assert [r.WhichOneof("result") for r in batch.results] == ["award", "error", "award"]
    replies += [batch.results[0].award, batch.results[2].award]
    return {"badge": badge, "template": template, "class": bc, "replies": replies}


async def test_replies_from_stored_bytes_equal_the_columns(backend: Backend, org: Org) -> None:
    made = await make_awards(org)
    replies: list[apb.Award] = made["replies"]
    for reply in replies:
        assert reply == await get_award(org.reader, reply.id)
        await assert_stored(backend, reply)
    assert [r.state for r in replies] == [ACTIVE] * 3 + [EXPIRED] + [ACTIVE] * 5
    assert {r.open_badge_id != "" for r in replies[5:6] + replies[6:7] + replies[8:]} == {True}
    revoked = await revoke(org.admin, replies[1].id, "issued twice")
    assert (revoked.state, revoked.revocation_reason) == (REVOKED, "issued twice")
    assert revoked.HasField("revoke_time")
    assert revoked == await get_award(org.reader, revoked.id)
    await assert_stored(backend, revoked)
    revoked_class = await revoke(org.admin, replies[6].id)
    assert revoked_class == await get_award(org.reader, revoked_class.id)
    # Every kind of list, with and without the filters (which take the counted path).
    subjects: list[dict[str, Any]] = [
        {"badge_id": made["badge"].id},
        {"badge_template_id": made["template"].id},
        {"badge_class_id": made["class"].entity_id},
        {"badge_class_id": made["class"].id},
        {"recipient": member("m0")},
        {"badge_id": made["badge"].id, "revoked": False},
        {"badge_class_id": made["class"].id, "revoked": True},
        {"badge_template_id": made["template"].id, "expired": True},
    ]
    counts = [4, 2, 3, 3, 2, 3, 1, 1]
    for subject, count in zip(subjects, counts, strict=True):
        got, total = await listed(org, **subject)
        assert total == count, subject
        assert got == [await get_award(org.reader, a.id) for a in got], subject
        assert [a.id for a in got] == sorted(a.id for a in got)


async def set_legacy(backend: Backend, ids: list[str]) -> None:
    """Makes award rows look as if written before migration 0008."""
    async with backend.db.write() as conn:
        await conn.execute(
            update(awards_table).where(awards_table.c.id.in_(ids)).values(message=None)
        )
    for award_id in ids:
        assert await stored_message(backend, award_id) is None


async def test_rows_without_stored_replies_read_the_same(backend: Backend, org: Org) -> None:
    made = await make_awards(org)
    replies: list[apb.Award] = made["replies"]
    subjects: list[dict[str, Any]] = [
        {"badge_id": made["badge"].id},
        {"badge_template_id": made["template"].id},
        {"badge_class_id": made["class"].entity_id},
        {"recipient": member("m0")},
    ]
    before = [await listed(org, **s) for s in subjects]
    # Every other award: pages of two then mix both kinds of row, and page tokens cross
    # between pages read from stored bytes and pages read from columns.
    legacy = [r.id for r in replies[::2]]
    await set_legacy(backend, legacy)
    assert [await listed(org, **s) for s in subjects] == before
    for size in (1, 3, 100):
        assert (await listed(org, size, **subjects[0]))[0] == before[0][0]
    for reply in replies:
        assert await get_award(org.reader, reply.id) == reply
    # Revoking a legacy award answers from its columns, as GetAward does.
    revoked = await revoke(org.admin, legacy[-1])
    assert revoked.state == REVOKED
    assert revoked == await get_award(org.reader, legacy[-1])
    assert await stored_message(backend, legacy[-1]) is None


async def test_a_definition_not_the_callers_is_not_found_whatever_the_token(
    org: Org, other_org: Org
) -> None:
    theirs = await make_badge(other_org)
    their_template = await make_template(other_org)
    their_class = await make_class(other_org)
    # With awards, so that the page a list reads beside its existence check is not empty.
    for i in range(3):
        await give(other_org.admin, badge_id=theirs.id, recipient=member(f"t{i}"))
        await give(other_org.admin, badge_template_id=their_template.id, recipient=member(f"t{i}"))
        await give(other_org.admin, badge_class_id=their_class.id, recipient=member(f"t{i}"))
    mine = await make_badge(org)
    for i in range(3):
        await give(org.admin, badge_id=mine.id, recipient=member(f"m{i}"))
    first = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(badge_id=mine.id, page_size=1)
    )
    token = first.next_page_token
    assert token
    for subject in (
        {"badge_id": theirs.id},
        {"badge_template_id": their_template.id},
        {"badge_class_id": their_class.id},
        {"badge_class_id": their_class.entity_id},
    ):
        for page_token in ("", "not a token", token):
            await expect_error(
                awards(org.reader).ListAwards(
                    apb.ListAwardsRequest(page_token=page_token, **subject)
                ),
                NOT_FOUND,
                reason="NOT_FOUND",
            )
    await expect_error(
        awards(org.reader).ListAwards(
            apb.ListAwardsRequest(badge_id=mine.id, page_token="not a token")
        ),
        INVALID,
        field="page_token",
    )
    # A token is bound to its filters: the kept-count path and the counted path differ.
    await expect_error(
        awards(org.reader).ListAwards(
            apb.ListAwardsRequest(badge_id=mine.id, revoked=False, page_token=token)
        ),
        INVALID,
        field="page_token",
    )
    second = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(badge_id=mine.id, page_size=1, page_token=token)
    )
    assert (len(second.awards), second.total_size) == (1, 3)
    assert second.awards[0].id > first.awards[0].id


async def test_hot_list_statements_are_bounded_by_an_index(backend: Backend) -> None:
    """The statements Database.fetch runs on SQLite's event loop thread each search an index
    for a few rows: a page walks its definition's (definition, id) index with no other
    condition, so it reads at most ``limit`` rows whoever the definition belongs to."""
    if backend.name != "sqlite":
        pytest.skip("the plan of SQLite's on-loop reads")
    statements = [
        (f"{kind} {name}", getattr(page, name))
        for kind, page in store.PAGES.items()
        for name in ("exists", "count", "first", "page")
    ] + [("class by entity id", store.CLASS_ID_OF_ENTITY_ID)]
    plans = {}
    async with backend.db.engine.connect() as conn:
        for name, stmt in statements:
            sql = str(stmt.compile(dialect=conn.dialect))
            rows = await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql, tuple([None] * sql.count("?"))
            )
            # EXPLAIN QUERY PLAN rows: (id, parent, notused, detail).
            plans[name] = [str(r[-1]) for r in rows]
    for name, plan in plans.items():
        assert len(plan) == 1 and plan[0].startswith("SEARCH "), (name, plan)
    for kind, column in (
        ("badge", "badge_id"),
        ("template", "badge_template_id"),
        ("class", "badge_class_id"),
    ):
        assert plans[f"{kind} page"] == [
            f"SEARCH awards USING INDEX ix_awards_{column}_id ({column}=? AND id>?)"
        ]
        assert plans[f"{kind} first"] == [
            f"SEARCH awards USING INDEX ix_awards_{column}_id ({column}>? AND {column}<?)"
        ]


async def test_a_page_reads_the_same_whatever_the_definitions_size(
    backend: Backend, org: Org, other_org: Org
) -> None:
    """The work SQLite does for a page of a definition (counted in virtual machine steps) does
    not grow with the definition's awards, also when the caller is another org (whose list is
    NOT_FOUND, but whose page statement runs beside the existence check)."""
    if backend.name != "sqlite":
        pytest.skip("counts SQLite's virtual machine steps")
    small, large = await make_badge(other_org, "small"), await make_badge(other_org, "large")
    for badge, n in ((small, 5), (large, 300)):
        await awards(other_org.admin).BatchCreateAwards(
            apb.BatchCreateAwardsRequest(
                requests=[
                    apb.CreateAwardRequest(
                        award=apb.Award(badge_id=badge.id, recipient=member(f"m{i}"))
                    )
                    for i in range(n)
                ]
            )
        )
    compiled = store.PAGES["badge"].page.compile(dialect=sqlite.dialect())
    path = backend.db.url.database
    assert path
    raw = sqlite3.connect(path)
    try:
        steps, found = {}, {}
        for badge in (small, large):
            # The compiled defaults (SQLite adds OFFSET 0), then the values fetch would pass.
            params = compiled.params | {"ref": badge.id, "after": "", "limit": 3, "org_id": org.id}
            values = [params[name] for name in compiled.positiontup or ()]
            count = [0]

            def step(count: list[int] = count) -> int:
                count[0] += 1
                return 0

            raw.execute(compiled.string, values).fetchall()  # reads the schema, caches the plan
            raw.set_progress_handler(step, 1)
            found[badge.name] = len(raw.execute(compiled.string, values).fetchall())
            raw.set_progress_handler(None, 1)
            steps[badge.name] = count[0]
    finally:
        raw.close()
    assert steps["small"] == steps["large"], steps
    assert found == {"small": 3, "large": 3}
