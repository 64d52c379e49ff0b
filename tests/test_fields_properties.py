"""One URL rule for every resource, against a real server: the same string sent in every
URL-taking field of every resource (badge states, badge templates and their alignments,
endorsements, recommendations and activities, issuers and their staff profiles and skill
linking, badge classes and their alignments, award recipients and evidence) is accepted by all
of them or refused by all of them with INVALID_ARGUMENT naming that field; and the verdict is
domain.fields.is_http_url's (within limits.URL_BYTES).

The fields are found from the request messages' descriptors, so a URL field added to a proto
fails this test until it is listed here (and so checked with the one rule).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor
from hypothesis import HealthCheck, given, settings

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import award_pb2_grpc, badge_class_pb2_grpc, issuer_pb2_grpc
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import badge_template_pb2_grpc as tpb_grpc
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.domain import limits
from badge_service.domain.fields import is_http_url
from badge_service.server import SERVICES
from tests.support import Backend, Org, details_of
from tests.test_fields import EDGE_URLS, url_like

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TIMEOUT = 30.0
UNEARNED, EARNED = bpb.BADGE_STATE_TYPE_UNEARNED, bpb.BADGE_STATE_TYPE_EARNED
INFORMATION = tpb.BADGE_TEMPLATE_RECOMMENDATION_TYPE_INFORMATION
STAFF = ipb.ISSUER_STAFF_ROLE_STAFF
STAFF_USER = "Hey7J-GRSJeu6FNnHQwNyw"

# A string field of a request message holds a URL when its name is, or ends in, url, uri or
# image (image_path and criteria_url_name are not URLs).
_URL_NAME = re.compile(r"(?:^|_)(?:url|uri|image)\Z")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _output_only(field: Any) -> bool:
    return (
        field_behavior_pb2.OUTPUT_ONLY
        in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


def url_fields() -> set[str]:
    """``Message.field`` of every client-settable URL field of every request message."""
    found: set[str] = set()
    seen: set[str] = set()

    def walk(msg: Descriptor) -> None:
        if msg.full_name.startswith("google.") or msg.full_name in seen:
            return
        seen.add(msg.full_name)
        for f in msg.fields:
            if _output_only(f):
                continue
            if f.message_type is not None:
                walk(f.message_type)
            elif f.type == f.TYPE_STRING and _URL_NAME.search(f.name):
                found.add(f"{msg.name}.{f.name}")

    for service in SERVICES:
        for method in service.methods:
            walk(method.input_type)
    return found


class Place:
    """The resources every call needs, made once per test: an issuer (for badge classes) and
    a badge (for awards and progress)."""

    def __init__(self, org: Org, issuer_id: str, badge_id: int) -> None:
        self.org, self.issuer_id, self.badge_id = org, issuer_id, badge_id
        channel = org.admin.channel
        self.templates = tpb_grpc.BadgeTemplateServiceStub(channel)
        self.issuers = issuer_pb2_grpc.IssuerServiceStub(channel)
        self.classes = badge_class_pb2_grpc.BadgeClassServiceStub(channel)
        self.awards = award_pb2_grpc.AwardServiceStub(channel)

    def __repr__(self) -> str:  # keeps Hypothesis' reports short
        return f"Place(org={self.org.id})"

    def badge(self, **state: Any) -> Awaitable[Any]:
        badge = bpb.Badge(
            name=_unique("b"),
            title="T",
            badge_states=[bpb.BadgeState(state=UNEARNED, order=1), bpb.BadgeState(**state)],
        )
        return self.org.admin.badges.CreateBadge(
            bpb.CreateBadgeRequest(badge=badge), timeout=TIMEOUT
        )

    def template(self, **fields: Any) -> Awaitable[Any]:
        template = tpb.BadgeTemplate(name=_unique("t"), **fields)
        return self.templates.CreateBadgeTemplate(
            tpb.CreateBadgeTemplateRequest(organization_id=self.org.uuid, badge_template=template),
            timeout=TIMEOUT,
        )

    def issuer(self, **fields: Any) -> Awaitable[Any]:
        issuer = ipb.Issuer(
            **({"name": "I", "email": "a@example.com", "url": "https://example.com"} | fields)
        )
        return self.issuers.CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer), timeout=TIMEOUT)

    def badge_class(self, **fields: Any) -> Awaitable[Any]:
        base = {
            "issuer": self.issuer_id,
            "name": "C",
            "description": "D",
            "image": "https://example.com/c.png",
            "criteria_narrative": "N",
        }
        bc = bcpb.BadgeClass(**(base | fields))
        return self.classes.CreateBadgeClass(
            bcpb.CreateBadgeClassRequest(badge_class=bc), timeout=TIMEOUT
        )

    def award(self, **fields: Any) -> Awaitable[Any]:
        base: dict[str, Any] = {
            "badge_id": self.badge_id,
            "recipient": apb.Recipient(member_id="m"),
        }
        award = apb.Award(**(base | fields))
        return self.awards.CreateAward(apb.CreateAwardRequest(award=award), timeout=TIMEOUT)


Call = Callable[[Place, str], Awaitable[Any]]

# Every URL field (as url_fields names it), with the calls that set it and the path an error
# names it by. Recipient URLs are trimmed before the rule (a recipient is a key); a string
# with surrounding whitespace is sent to them trimmed, like the service compares them.
CASES: list[tuple[str, str, str, Call]] = [
    (
        "BadgeState.image_url",
        "CreateBadge",
        "badge.badge_states[1].image_url",
        lambda p, u: p.badge(state=EARNED, order=2, image_url=u),
    ),
    *(
        (
            f"BadgeTemplate.{name}",
            "CreateBadgeTemplate",
            f"badge_template.{name}",
            (lambda n: lambda p, u: p.template(**{n: u}))(name),
        )
        for name in ("earn_this_badge_url", "global_activity_url", "criteria_url", "image_url")
    ),
    (
        "BadgeTemplateAlignment.url",
        "CreateBadgeTemplate",
        "badge_template.alignments[0].url",
        lambda p, u: p.template(alignments=[tpb.BadgeTemplateAlignment(name="A", url=u)]),
    ),
    (
        "BadgeTemplateEndorsement.url",
        "CreateBadgeTemplate",
        "badge_template.endorsements[0].url",
        lambda p, u: p.template(endorsements=[tpb.BadgeTemplateEndorsement(name="E", url=u)]),
    ),
    (
        "BadgeTemplateRecommendation.activity_url",
        "CreateBadgeTemplate",
        "badge_template.recommendations[0].activity_url",
        lambda p, u: p.template(
            recommendations=[
                tpb.BadgeTemplateRecommendation(type=INFORMATION, title="R", activity_url=u)
            ]
        ),
    ),
    (
        "BadgeTemplateActivity.activity_url",
        "CreateBadgeTemplate",
        "badge_template.badge_template_activities[0].activity_url",
        lambda p, u: p.template(
            badge_template_activities=[
                tpb.BadgeTemplateActivity(title="A", activity_type="Course", activity_url=u)
            ]
        ),
    ),
    *(
        (
            f"Issuer.{name}",
            "CreateIssuer",
            f"issuer.{name}",
            (lambda n: lambda p, u: p.issuer(**{n: u}))(name),
        )
        for name in ("url", "image", "source_url")
    ),
    (
        "BadgeUserProfile.url",
        "CreateIssuer",
        "issuer.staff[0].user_profile.url[0]",
        lambda p, u: p.issuer(
            staff=[
                ipb.IssuerStaff(
                    role=STAFF, user=STAFF_USER, user_profile=ipb.BadgeUserProfile(url=[u])
                )
            ]
        ),
    ),
    (
        "BadgeSkillLinkingPreferences.server_uri",
        "CreateIssuer",
        "issuer.badge_skill_linking_preferences.server_uri",
        lambda p, u: p.issuer(
            badge_skill_linking_preferences=ipb.BadgeSkillLinkingPreferences(server_uri=u)
        ),
    ),
    *(
        (
            f"BadgeClass.{name}",
            "CreateBadgeClass",
            f"badge_class.{name}",
            (lambda n: lambda p, u: p.badge_class(**{n: u}))(name),
        )
        for name in ("image", "criteria_url", "source_url")
    ),
    (
        "Alignment.target_url",
        "CreateBadgeClass",
        "badge_class.alignments[0].target_url",
        lambda p, u: p.badge_class(alignments=[bcpb.Alignment(target_name="A", target_url=u)]),
    ),
    (
        "Evidence.url",
        "CreateAward",
        "award.evidence[0].url",
        lambda p, u: p.award(evidence=[apb.Evidence(url=u)]),
    ),
    (
        "Recipient.url",
        "CreateAward",
        "award.recipient.url",
        lambda p, u: p.award(recipient=apb.Recipient(url=u.strip())),
    ),
    (
        "Recipient.url",
        "RecordProgress",
        "recipient.url",
        lambda p, u: p.awards.RecordProgress(
            apb.RecordProgressRequest(
                badge_id=p.badge_id, recipient=apb.Recipient(url=u.strip()), state=EARNED
            ),
            timeout=TIMEOUT,
        ),
    ),
    (
        "Recipient.url",
        "ListAwards",
        "recipient.url",
        lambda p, u: p.awards.ListAwards(
            apb.ListAwardsRequest(recipient=apb.Recipient(url=u.strip())), timeout=TIMEOUT
        ),
    ),
    (
        "Recipient.url",
        "ListRecipientBadgeStates",
        "recipient.url",
        lambda p, u: p.awards.ListRecipientBadgeStates(
            apb.ListRecipientBadgeStatesRequest(recipient=apb.Recipient(url=u.strip())),
            timeout=TIMEOUT,
        ),
    ),
]


def test_every_url_field_of_every_request_is_checked_here() -> None:
    assert {field for field, *_ in CASES} == url_fields()


def sendable(value: str) -> bool:
    """Whether a string can be sent in these fields at all, and means a URL in all of them:
    protobuf strings are UTF-8 (no lone surrogates); empty is "unset" where a URL is
    optional; images also take data: URIs; recipients are trimmed first, so a string that is
    blank once trimmed would be a missing recipient."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return bool(value.strip()) and not value.startswith("data:")


def expected(value: str) -> grpc.StatusCode:
    """The one rule's verdict: fields.is_http_url, within limits.URL_BYTES."""
    fits = len(value.encode()) <= limits.URL_BYTES
    return OK if fits and is_http_url(value) else INVALID


async def verdict(call: Awaitable[Any], path: str) -> grpc.StatusCode | str:
    """OK, INVALID_ARGUMENT naming exactly ``path``, or a description of anything else."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        got = details_of(err)
        fields = [v.field for v in got.bad_request.field_violations] if got.bad_request else []
        if got.code is INVALID and fields == [path]:
            return INVALID
        return f"{got.code.name} {fields}: {got.message[:200]}"
    return OK


FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def place(backend: Backend) -> Place:
    """A fresh organisation with an issuer and a badge."""
    org = await backend.new_org()
    p = Place(org, "", 0)
    p.issuer_id = (await p.issuer()).id
    p.badge_id = (await p.badge(state=EARNED, order=2)).id
    return p


async def same_verdict_everywhere(place: Place, value: str) -> None:
    """Sends ``value`` to every URL field of every RPC at once; asserts one verdict, the
    rule's."""
    want = expected(value)
    cases = CASES
    if value != value.strip() and expected(value.strip()) is OK:
        # Recipients are trimmed first: this one is a URL to them alone.
        cases = [c for c in CASES if c[0] != "Recipient.url"]
    verdicts = await asyncio.gather(
        *(verdict(call(place, value), path) for _, _, path, call in cases)
    )
    got = {f"{rpc} {path}": v for (_, rpc, path, _), v in zip(cases, verdicts, strict=True)}
    assert set(got.values()) == {want}, (value, want, got)


# The longest URL every field takes, and one byte more.
LONGEST = "https://x.example/" + "e" * (limits.URL_BYTES - 18)


async def test_the_edge_cases_give_the_same_verdict_everywhere(place: Place) -> None:
    for value in [*EDGE_URLS, LONGEST, LONGEST + "e"]:
        if sendable(value):
            await same_verdict_everywhere(place, value)


@FAST
@given(value=url_like().filter(sendable))
async def test_every_url_field_gives_the_same_verdict(place: Place, value: str) -> None:
    """Each string: the same verdict from every URL field of every RPC, and it is the one
    rule's."""
    await same_verdict_everywhere(place, value)
