"""ListAwards: by each kind of definition and by recipient, oldest first; the revoked and
expired filters; keyset paging with tokens; bad requests; tenancy."""

from __future__ import annotations

import datetime as dt

import grpc

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from tests.support import Org, expect_error
from tests.test_awards import (
    ACTIVE,
    EXPIRED,
    REVOKED,
    at,
    awards,
    give,
    make_badge,
    make_class,
    make_template,
    member,
    revoke,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def list_all(org: Org, **fields: object) -> list[apb.Award]:
    """Every page of ListAwards, following tokens 2 at a time."""
    out: list[apb.Award] = []
    token = ""
    while True:
        page = await awards(org.reader).ListAwards(
            apb.ListAwardsRequest(page_size=2, page_token=token, **fields)  # type: ignore[arg-type]
        )
        assert len(page.awards) <= 2
        out.extend(page.awards)
        token = page.next_page_token
        if not token:
            return out


async def test_lists_by_definition_and_recipient(org: Org) -> None:
    badge = await make_badge(org)
    template = await make_template(org, allow_duplicate_badges=True)
    bc = await make_class(org)
    ann = apb.Recipient(email="ann@example.com")
    made = [
        await give(org.admin, badge_id=badge.id, recipient=ann),
        await give(org.admin, badge_template_id=template.id, recipient=ann),
        await give(
            org.admin, badge_class_id=bc.entity_id, recipient=apb.Recipient(email="ANN@example.com")
        ),
        await give(org.admin, badge_id=badge.id, recipient=member("bob")),
        await give(org.admin, badge_template_id=template.id, recipient=member("bob")),
        await give(org.admin, badge_id=badge.id, recipient=ann),
    ]
    ids = [a.id for a in made]
    assert ids == sorted(ids)
    by_badge = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert [a.id for a in by_badge.awards] == [ids[0], ids[3], ids[5]]
    assert by_badge.total_size == 3 and by_badge.next_page_token == ""
    assert list(by_badge.awards) == [made[0], made[3], made[5]]
    by_template = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(badge_template_id=template.id.upper())
    )
    assert [a.id for a in by_template.awards] == [ids[1], ids[4]]
    for ref in (bc.id, bc.entity_id):
        by_class = await awards(org.reader).ListAwards(apb.ListAwardsRequest(badge_class_id=ref))
        assert [a.id for a in by_class.awards] == [ids[2]]
        assert by_class.awards[0].badge_class_id == bc.entity_id
    by_ann = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(recipient=apb.Recipient(email=" Ann@Example.COM"))
    )
    assert [a.id for a in by_ann.awards] == [ids[0], ids[1], ids[2], ids[5]]
    by_bob = await list_all(org, recipient=member("bob"))
    assert [a.id for a in by_bob] == [ids[3], ids[4]]
    nobody = await awards(org.reader).ListAwards(apb.ListAwardsRequest(recipient=member("nobody")))
    assert list(nobody.awards) == [] and nobody.total_size == 0


async def test_revoked_and_expired_filters(org: Org) -> None:
    short = await make_template(
        org,
        "Short",
        allow_duplicate_badges=True,
        default_expires_at_type=tpb.BADGE_TEMPLATE_EXPIRY_TYPE_DURATION,
        default_expires_in_days=2,
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    expired = await give(
        org.admin, badge_template_id=short.id, recipient=member("m"), issued_at=at(old)
    )
    live = await give(org.admin, badge_template_id=short.id, recipient=member("m"))
    gone = await give(org.admin, badge_template_id=short.id, recipient=member("m"))
    gone = await revoke(org.admin, gone.id)
    # Revoked wins over expired.
    both = await give(
        org.admin, badge_template_id=short.id, recipient=member("m"), issued_at=at(old)
    )
    both = await revoke(org.admin, both.id)
    assert (expired.state, live.state, gone.state, both.state) == (
        EXPIRED,
        ACTIVE,
        REVOKED,
        REVOKED,
    )

    async def ids(**filters: bool) -> list[str]:
        got = await list_all(org, badge_template_id=short.id, **filters)
        listed = await awards(org.reader).ListAwards(
            apb.ListAwardsRequest(badge_template_id=short.id, **filters)  # type: ignore[arg-type]
        )
        assert listed.total_size == len(got)
        return [a.id for a in got]

    assert await ids() == [expired.id, live.id, gone.id, both.id]
    assert await ids(revoked=True) == [gone.id, both.id]
    assert await ids(revoked=False) == [expired.id, live.id]
    assert await ids(expired=True) == [expired.id, both.id]
    assert await ids(expired=False) == [live.id, gone.id]
    assert await ids(revoked=False, expired=False) == [live.id]
    assert await ids(revoked=True, expired=True) == [both.id]
    listed = await awards(org.reader).ListAwards(
        apb.ListAwardsRequest(recipient=member("m"), revoked=True)
    )
    assert [a.state for a in listed.awards] == [REVOKED, REVOKED]


async def test_paging(org: Org) -> None:
    badge = await make_badge(org)
    made = [await give(org.admin, badge_id=badge.id, recipient=member(f"m{i}")) for i in range(7)]
    stub = awards(org.reader)
    first = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, page_size=3))
    assert [a.id for a in first.awards] == [a.id for a in made[:3]]
    assert first.total_size == 7 and first.next_page_token
    second = await stub.ListAwards(
        apb.ListAwardsRequest(badge_id=badge.id, page_size=3, page_token=first.next_page_token)
    )
    assert [a.id for a in second.awards] == [a.id for a in made[3:6]]
    third = await stub.ListAwards(
        apb.ListAwardsRequest(badge_id=badge.id, page_size=3, page_token=second.next_page_token)
    )
    assert [a.id for a in third.awards] == [made[6].id] and third.next_page_token == ""
    # An exact last page has no token.
    exact = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, page_size=7))
    assert len(exact.awards) == 7 and exact.next_page_token == ""
    # Default 50, at most 500 (larger is clamped, not refused).
    assert len((await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id))).awards) == 7
    big = await stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, page_size=100_000))
    assert len(big.awards) == 7
    # A token is only good for the filters it was made for.
    await expect_error(
        stub.ListAwards(
            apb.ListAwardsRequest(
                badge_id=badge.id, revoked=False, page_size=3, page_token=first.next_page_token
            )
        ),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListAwards(
            apb.ListAwardsRequest(recipient=member("m0"), page_token=first.next_page_token)
        ),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, page_token="garbage!")),
        INVALID,
        field="page_token",
    )
    await expect_error(
        stub.ListAwards(apb.ListAwardsRequest(badge_id=badge.id, page_size=-1)),
        INVALID,
        field="page_size",
    )


async def test_bad_list_requests(org: Org, other_org: Org) -> None:
    stub = awards(org.reader)
    await expect_error(stub.ListAwards(apb.ListAwardsRequest()), INVALID, field="badge_id")
    await expect_error(
        stub.ListAwards(apb.ListAwardsRequest(recipient=apb.Recipient())),
        INVALID,
        field="recipient",
    )
    await expect_error(
        stub.ListAwards(apb.ListAwardsRequest(recipient=apb.Recipient(email="x"))),
        INVALID,
        field="recipient.email",
    )
    await expect_error(
        stub.ListAwards(apb.ListAwardsRequest(badge_template_id="nope")),
        INVALID,
        field="badge_template_id",
    )
    theirs_badge = await make_badge(other_org)
    theirs_template = await make_template(other_org)
    theirs_class = await make_class(other_org)
    for req in (
        apb.ListAwardsRequest(badge_id=theirs_badge.id),
        apb.ListAwardsRequest(badge_id=123_456_789),
        apb.ListAwardsRequest(badge_template_id=theirs_template.id),
        apb.ListAwardsRequest(badge_class_id=theirs_class.entity_id),
        apb.ListAwardsRequest(badge_class_id="0" * 24),
    ):
        await expect_error(stub.ListAwards(req), NOT_FOUND, reason="NOT_FOUND")


async def test_class_awards_survive_unrelated_class_delete(org: Org) -> None:
    kept = await make_class(org)
    dropped = await make_class(org, "Dropped")
    award = await give(org.admin, badge_class_id=kept.entity_id, recipient=member("m"))
    await give(org.admin, badge_class_id=dropped.entity_id, recipient=member("m"))
    from tests.test_issuers import classes

    await classes(org.admin).DeleteBadgeClass(
        bcpb.DeleteBadgeClassRequest(id_or_entity_id=dropped.entity_id, cascade=True)
    )
    listed = await awards(org.reader).ListAwards(apb.ListAwardsRequest(recipient=member("m")))
    assert [a.id for a in listed.awards] == [award.id]
