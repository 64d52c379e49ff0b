"""Property-based tests: arbitrary and "mostly valid" requests to every RPC of every service
the server registers (discovered from ``badge_service.server.SERVICES``, so new services are
covered without touching this file).

The properties: a reply is OK or one of the documented codes, with ErrorInfo (and, for
INVALID_ARGUMENT, a BadRequest naming a field); never UNKNOWN or INTERNAL. A reader key may
not write (PERMISSION_DENIED), no key is UNAUTHENTICATED, bytes that are not a protobuf
message are INVALID_ARGUMENT. After every call the server still answers a health check and a
simple valid call.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib
import math
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import (
    award_pb2_grpc,
    badge_class_pb2_grpc,
    common_pb2,
    issuer_pb2_grpc,
)
from badge_service.api.badges.v1 import badge_class_pb2 as bcpb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import custom_field_pb2 as cpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.api.badges.v1 import org_meta_pb2 as opb
from badge_service.domain import paging
from badge_service.domain.badges import BadgeFilter
from badge_service.domain.errors import ERROR_DOMAIN
from badge_service.rpc.interceptor import write_methods
from badge_service.server import SERVICES
from tests.strategies import garbage, message_class, messages, mutations
from tests.support import Backend, Client, Org, details_of, expect_error
from tests.test_badge_classes import seed_class
from tests.test_issuers import seed_issuer, small_class, small_issuer

OK = grpc.StatusCode.OK
# What a caller with a valid admin key may see for anything it sends.
ADMIN_CODES = {
    OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
DOCUMENTED = ADMIN_CODES | {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
TIMEOUT = 30.0
STREAM_WINDOW = 0.1
IN_PROGRESS = bpb.BADGE_STATE_TYPE_IN_PROGRESS
EARNED = bpb.BADGE_STATE_TYPE_EARNED

METHODS: list[tuple[ServiceDescriptor, MethodDescriptor]] = [
    (service, method) for service in SERVICES for method in service.methods
]
WRITES = write_methods(SERVICES)
IDS = [f"{s.name}.{m.name}" for s, m in METHODS]
BY_ID = dict(zip(IDS, METHODS, strict=True))

# Examples per RPC: 30 arbitrary, 25 mutated, 8 as raw bytes, 6 per reader and no key; the
# module runs in about a minute on both databases. BADGE_SERVICE_TEST_EXAMPLES_SCALE=10
# searches ten times harder.
SCALE = float(os.environ.get("BADGE_SERVICE_TEST_EXAMPLES_SCALE", "1"))


def examples(n: int) -> int:
    """``n`` examples, scaled."""
    return max(1, round(n * SCALE))


PROPERTY = settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
MUTATED = settings(PROPERTY, max_examples=examples(25))
RAW = settings(PROPERTY, max_examples=examples(8))
FEW = settings(PROPERTY, max_examples=examples(6))


def path(service: ServiceDescriptor, method: MethodDescriptor) -> str:
    """The gRPC path of a method."""
    return f"/{service.full_name}/{method.name}"


def stub_call(
    channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor
) -> Any:
    """The method of the service's generated stub (found from its .proto file name)."""
    module_name = "badge_service.api." + service.file.name.removesuffix(".proto").replace("/", ".")
    module = importlib.import_module(module_name + "_pb2_grpc")
    return getattr(getattr(module, f"{service.name}Stub")(channel), method.name)


async def invoke(
    channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor, request: Any
) -> Any:
    """Calls ``method`` with one request, whatever its streaming kind; returns the reply (a
    list of replies for server streaming)."""
    call = stub_call(channel, service, method)
    arg = iter([request]) if method.client_streaming else request
    if method.server_streaming:
        # A stream may run until the client cancels (WatchAwards). Its initial metadata comes
        # once the request passed its checks (or with the status when it failed), so a failure
        # is always seen; one open after that and healthy for STREAM_WINDOW counts as accepted.
        stream = call(arg, timeout=TIMEOUT)
        await stream.initial_metadata()
        replies: list[Any] = []
        try:
            async with asyncio.timeout(STREAM_WINDOW):
                async for reply in stream:
                    replies.append(reply)
        except TimeoutError:
            stream.cancel()
        return replies
    return await call(arg, timeout=TIMEOUT)


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    """The status of a call, after checking that a failure carries documented details."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        got = details_of(err)
        assert got.code in DOCUMENTED, f"{got.code.name}: {got.message[:300]}"
        assert got.info is not None, f"{got.code.name} without ErrorInfo: {got.message[:300]}"
        assert got.info.domain == ERROR_DOMAIN and got.info.reason, got.info
        if got.code is grpc.StatusCode.INVALID_ARGUMENT:
            assert got.bad_request is not None, got.message[:300]
            assert [v.field for v in got.bad_request.field_violations], got.bad_request
            assert all(v.field for v in got.bad_request.field_violations), got.bad_request
        return got.code
    return OK


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class World:
    """Organisations, a key-less client and a health stub, for one test function.

    ``plain`` has no custom fields or meta tags, so extra data and tags are stored as sent.
    The rich organisation, made on first use, has custom fields of every type and meta tags,
    so they are checked and coerced. (Not a dataclass: Hypothesis would print every field of
    it in a failure report.)
    """

    def __init__(self, backend: Backend, plain: Org, anonymous: Client) -> None:
        self.backend, self.plain, self.anonymous = backend, plain, anonymous
        self.health = health_pb2_grpc.HealthStub(anonymous.channel)
        self._rich: Org | None = None
        self._made: dict[int, Made] = {}

    async def made(self, org: Org, rich: bool) -> Made:
        """The objects the bases of WORLD_BASES name, made in ``org`` on first use."""
        made = self._made.get(org.id)
        if made is None:
            made = self._made[org.id] = await make(org, rich)
        return made

    def __repr__(self) -> str:  # keeps Hypothesis' falsifying-example reports readable
        return f"World({self.backend.name}, plain={self.plain.id})"

    async def org(self, rich: bool) -> Org:
        """The plain organisation, or the rich one."""
        if not rich:
            return self.plain
        if self._rich is None:
            org = await self.backend.new_org()
            for field in RICH_FIELDS:
                await org.admin.fields.CreateCustomField(
                    cpb.CreateCustomFieldRequest(custom_field=field), timeout=TIMEOUT
                )
            await org.admin.meta.UpdateOrgMeta(
                opb.UpdateOrgMetaRequest(org_meta=opb.OrgMeta(tags=RICH_TAGS)), timeout=TIMEOUT
            )
            self._rich = org
        return self._rich

    async def still_serving(self) -> None:
        """The server answers a health check and a simple valid call."""
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        meta = await self.plain.admin.meta.GetOrgMeta(opb.GetOrgMetaRequest(), timeout=TIMEOUT)
        assert meta.org_id == self.plain.id


RICH_FIELDS = [
    cpb.CustomField(name="points", data_type=common_pb2.DATA_TYPE_INTEGER, default_value="0"),
    cpb.CustomField(name="vip", data_type=common_pb2.DATA_TYPE_BOOLEAN),
    cpb.CustomField(name="since", data_type=common_pb2.DATA_TYPE_DATE),
    cpb.CustomField(
        name="note", data_type=common_pb2.DATA_TYPE_STRING, is_mandatory=True, default_value="-"
    ),
]
RICH_TAGS = [
    opb.OrgMetaTag(key="Football", data_type=common_pb2.DATA_TYPE_STRING, description="Sport"),
    opb.OrgMetaTag(key="Tennis", data_type=common_pb2.DATA_TYPE_INTEGER),
]


@pytest.fixture
async def world(backend: Backend) -> World:
    """Fresh organisations, so that no test sees another's data."""
    anonymous = _ANONYMOUS.get(backend.port)
    if anonymous is None:
        anonymous = _ANONYMOUS[backend.port] = backend.client()
    return World(backend, await backend.new_org(), anonymous)


_ANONYMOUS: dict[int, Client] = {}  # one key-less channel per server


# Valid requests, per method, that mutations start from. They may create what they name.


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def valid_badge(org: Org, rich: bool) -> bpb.Badge:
    """A badge that passes every rule in ``org``."""
    now = dt.datetime.now(dt.UTC)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(now - dt.timedelta(days=1))
    end.FromDatetime(now + dt.timedelta(days=30))
    return bpb.Badge(
        name=_unique("badge"),
        title="Game Attendance",
        date_start=start,
        date_end=end,
        display_date_start=start,
        is_enabled=True,
        badge_states=[
            bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_UNEARNED, order=1, description="Attend"),
            bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_IN_PROGRESS, order=2),
            bpb.BadgeState(
                state=bpb.BADGE_STATE_TYPE_EARNED, order=3, image_url="https://x.test/e.png"
            ),
        ],
        frequency=bpb.Frequency(freq_cap=1, freq_period=bpb.FREQUENCY_PERIOD_WEEK, freq_max=5),
        tags=[bpb.BadgeTag(tag_name="Football", tag_id=1)],
        segment=[
            bpb.Segment(
                name="Canada Members",
                subscription_id=1043,
                eligibility_type=bpb.ELIGIBILITY_TYPE_INCLUSION,
            )
        ],
        badge_extra_data=_struct(
            {"points": 5, "vip": True, "since": "2024-01-31", "note": "hi"}
            if rich
            else {"anything": [1, "x", {"y": None}], "n": 2.5}
        ),
    )


async def _new_badge(org: Org, rich: bool) -> bpb.Badge:
    return await org.admin.badges.CreateBadge(
        bpb.CreateBadgeRequest(badge=valid_badge(org, rich)), timeout=TIMEOUT
    )


async def _new_field(org: Org) -> cpb.CustomField:
    field = cpb.CustomField(
        name=_unique("field"), data_type=common_pb2.DATA_TYPE_INTEGER, default_value="7"
    )
    return await org.admin.fields.CreateCustomField(
        cpb.CreateCustomFieldRequest(custom_field=field), timeout=TIMEOUT
    )


async def _update_badge(org: Org, rich: bool) -> Message:
    badge = await _new_badge(org, rich)
    return bpb.UpdateBadgeRequest(
        badge=bpb.Badge(id=badge.id, title="Game Day", name=_unique("renamed")),
        update_mask=FieldMask(paths=["title", "name"]),
    )


async def _update_field(org: Org, rich: bool) -> Message:
    field = await _new_field(org)
    return cpb.UpdateCustomFieldRequest(
        custom_field=cpb.CustomField(id=field.id, name=_unique("f"), default_value="8"),
        update_mask=FieldMask(paths=["name", "default_value"]),
    )


def _list_badges() -> Message:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return bpb.ListBadgesRequest(
        page=1, page_size=5, is_enabled=True, tag_name="Football", earnable_at=now
    )


async def _get_field(org: Org) -> Message:
    return cpb.GetCustomFieldRequest(id=(await _new_field(org)).id)


async def _delete_field(org: Org) -> Message:
    return cpb.DeleteCustomFieldRequest(id=(await _new_field(org)).id)


async def _get_badge(org: Org, rich: bool) -> Message:
    return bpb.GetBadgeRequest(id=(await _new_badge(org, rich)).id)


async def _delete_badge(org: Org, rich: bool) -> Message:
    return bpb.DeleteBadgeRequest(id=(await _new_badge(org, rich)).id)


def _award(badge_id: int, who: str) -> apb.CreateAwardRequest:
    return apb.CreateAwardRequest(
        award=apb.Award(
            badge_id=badge_id,
            recipient=apb.Recipient(email=f"{who}@example.com"),
            narrative="Attended",
            evidence=[apb.Evidence(url="https://x.test/e", narrative="ticket")],
        )
    )


async def _new_award(org: Org, rich: bool) -> apb.Award:
    badge = await _new_badge(org, rich)
    stub = org.admin.stub(award_pb2_grpc.AwardServiceStub)
    return await stub.CreateAward(_award(badge.id, "a"), timeout=TIMEOUT)


async def _create_award(org: Org, rich: bool) -> Message:
    return _award((await _new_badge(org, rich)).id, "a")


async def _batch_awards(org: Org, rich: bool) -> Message:
    badge = await _new_badge(org, rich)
    return apb.BatchCreateAwardsRequest(requests=[_award(badge.id, "a"), _award(badge.id, "b")])


async def _get_award(org: Org, rich: bool) -> Message:
    award = await _new_award(org, rich)
    return apb.GetAwardRequest(id=award.id, view=apb.AWARD_VIEW_OPEN_BADGES_V2)


async def _revoke_award(org: Org, rich: bool) -> Message:
    return apb.RevokeAwardRequest(id=(await _new_award(org, rich)).id, reason="Mistake")


async def _class_award(org: Org) -> apb.Award:
    """An award of a new Badgr badge class: the kind with an Open Badges assertion."""
    issuer = await org.admin.stub(issuer_pb2_grpc.IssuerServiceStub).CreateIssuer(
        ipb.CreateIssuerRequest(
            issuer=ipb.Issuer(name="Faculty", email="a@example.com", url="https://example.com")
        ),
        timeout=TIMEOUT,
    )
    bc = await org.admin.stub(badge_class_pb2_grpc.BadgeClassServiceStub).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(
            badge_class=bcpb.BadgeClass(
                issuer=issuer.entity_id,
                name="Math",
                description="Math.",
                image="https://example.com/math.png",
                criteria_narrative="Pass.",
            )
        ),
        timeout=TIMEOUT,
    )
    return await org.admin.stub(award_pb2_grpc.AwardServiceStub).CreateAward(
        apb.CreateAwardRequest(
            award=apb.Award(badge_class_id=bc.entity_id, recipient=apb.Recipient(member_id="7"))
        ),
        timeout=TIMEOUT,
    )


def _baked_format(rich: bool) -> apb.BakedImageFormat.ValueType:
    return apb.BAKED_IMAGE_FORMAT_SVG if rich else apb.BAKED_IMAGE_FORMAT_PNG


async def _bake_award(org: Org, rich: bool) -> Message:
    return apb.BakeAwardRequest(id=(await _class_award(org)).id, format=_baked_format(rich))


async def _verify_award(org: Org, rich: bool) -> Message:
    # A baked image, so that mutations reach the PNG and SVG parsers.
    request = await _bake_award(org, rich)
    stub = org.admin.stub(award_pb2_grpc.AwardServiceStub)
    baked = await stub.BakeAward(request, timeout=TIMEOUT)
    return apb.VerifyAwardRequest(baked_image=baked.data)


async def _issuer(org: Org) -> ipb.Issuer:
    return await org.admin.stub(issuer_pb2_grpc.IssuerServiceStub).CreateIssuer(
        ipb.CreateIssuerRequest(issuer=small_issuer()), timeout=TIMEOUT
    )


async def _create_issuer(org: Org, rich: bool) -> Message:
    return ipb.CreateIssuerRequest(issuer=seed_issuer() if rich else small_issuer())


async def _get_issuer(org: Org, rich: bool) -> Message:
    issuer = await _issuer(org)
    return ipb.GetIssuerRequest(
        id_or_entity_id=issuer.entity_id if rich else issuer.id,
        view=ipb.BADGR_VIEW_OPEN_BADGES_V2,
    )


async def _update_issuer(org: Org, rich: bool) -> Message:
    issuer = await _issuer(org)
    return ipb.UpdateIssuerRequest(
        issuer=ipb.Issuer(id=issuer.id, name="Renamed", description="New."),
        update_mask=FieldMask(paths=["name", "description"]),
    )


async def _create_class(org: Org, rich: bool) -> Message:
    return bcpb.CreateBadgeClassRequest(badge_class=small_class((await _issuer(org)).entity_id))


async def _create_codes(org: Org, rich: bool) -> Message:
    issuer = await _issuer(org)
    bc = await org.admin.stub(badge_class_pb2_grpc.BadgeClassServiceStub).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=small_class(issuer.entity_id)), timeout=TIMEOUT
    )
    return bcpb.CreateClaimCodesRequest(id_or_entity_id=bc.entity_id, count=3, use_limit=2)


class Made:
    """Objects that exist in an organisation before its examples run, so that requests naming
    them get past the lookups and page tokens to the rules behind: three issuers, three badge
    classes of the first, three claim codes of the first class (each good for many uses),
    three CrowdTwist badges, a recipient with progress on two of them (so the org has events
    to watch), and the second-page token of each list."""

    def __init__(self) -> None:
        self.issuers: list[ipb.Issuer] = []
        self.classes: list[bcpb.BadgeClass] = []
        self.codes: list[bcpb.ClaimCode] = []
        self.badges: list[int] = []
        self.recipient = apb.Recipient(member_id="progress-1")
        self.issuers_token = self.classes_token = self.codes_token = self.states_token = ""

    def __repr__(self) -> str:
        return f"Made(issuers={[i.entity_id for i in self.issuers]})"


def _issuers(org: Org) -> issuer_pb2_grpc.IssuerServiceStub:
    return org.admin.stub(issuer_pb2_grpc.IssuerServiceStub)


def _classes(org: Org) -> badge_class_pb2_grpc.BadgeClassServiceStub:
    return org.admin.stub(badge_class_pb2_grpc.BadgeClassServiceStub)


def _awards(org: Org) -> award_pb2_grpc.AwardServiceStub:
    return org.admin.stub(award_pb2_grpc.AwardServiceStub)


async def _made_issuer(org: Org, rich: bool) -> ipb.Issuer:
    """An issuer: the seed's (with its required custom property) in the rich org."""
    issuer = seed_issuer() if rich else small_issuer(_unique("Faculty"))
    return await _issuers(org).CreateIssuer(ipb.CreateIssuerRequest(issuer=issuer), timeout=TIMEOUT)


async def _made_class(org: Org, issuer: ipb.Issuer, rich: bool) -> bcpb.BadgeClass:
    """A badge class of ``issuer``: the seed's, every field set, in the rich org."""
    name = _unique("Math")
    bc = seed_class(issuer.entity_id, name=name) if rich else small_class(issuer.entity_id, name)
    return await _classes(org).CreateBadgeClass(
        bcpb.CreateBadgeClassRequest(badge_class=bc), timeout=TIMEOUT
    )


async def _made_codes(org: Org, bc: bcpb.BadgeClass, count: int) -> list[bcpb.ClaimCode]:
    reply = await _classes(org).CreateClaimCodes(
        bcpb.CreateClaimCodesRequest(
            id_or_entity_id=bc.entity_id, count=count, label="Event", use_limit=1_000_000
        ),
        timeout=TIMEOUT,
    )
    return list(reply.claim_codes)


async def make(org: Org, rich: bool) -> Made:
    """Makes what the bases of WORLD_BASES name (see Made)."""
    made = Made()
    made.issuers = [await _made_issuer(org, rich) for _ in range(3)]
    made.classes = [await _made_class(org, made.issuers[0], rich) for _ in range(3)]
    made.codes = await _made_codes(org, made.classes[0], 3)
    made.badges = [(await _new_badge(org, rich)).id for _ in range(3)]
    for badge, state in ((made.badges[0], IN_PROGRESS), (made.badges[1], EARNED)):
        await _awards(org).RecordProgress(
            apb.RecordProgressRequest(badge_id=badge, recipient=made.recipient, state=state),
            timeout=TIMEOUT,
        )
    made.issuers_token = (
        await _issuers(org).ListIssuers(ipb.ListIssuersRequest(page_size=2), timeout=TIMEOUT)
    ).next_page_token
    made.classes_token = (
        await _classes(org).ListBadgeClasses(
            bcpb.ListBadgeClassesRequest(
                page_size=2, issuer=made.issuers[0].entity_id, archived=False
            ),
            timeout=TIMEOUT,
        )
    ).next_page_token
    made.codes_token = (
        await _classes(org).ListClaimCodes(
            bcpb.ListClaimCodesRequest(id_or_entity_id=made.classes[0].entity_id, page_size=2),
            timeout=TIMEOUT,
        )
    ).next_page_token
    made.states_token = (
        await _awards(org).ListRecipientBadgeStates(
            apb.ListRecipientBadgeStatesRequest(recipient=made.recipient, page_size=2),
            timeout=TIMEOUT,
        )
    ).next_page_token
    tokens = (made.issuers_token, made.classes_token, made.codes_token, made.states_token)
    assert all(tokens), tokens  # each list has a second page
    return made


def _b64(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode()


def _evidence() -> list[apb.Evidence]:
    return [apb.Evidence(url="https://x.test/e", narrative="ticket")]


async def _redeem(org: Org, made: Made, rich: bool) -> Message:
    bc, code = made.classes[0], made.codes[0].code
    return apb.RedeemClaimCodeRequest(
        id_or_entity_id=bc.id if rich else bc.entity_id,
        claim_code=code.lower() if rich else code,  # codes match without regard to case
        recipient=apb.Recipient(email=f"{_unique('claimer')}@example.com"),
        narrative="Claimed at the door",
        evidence=_evidence(),
        request_id=str(uuid.uuid4()),  # a retry's key, new per example
    )


async def _record_progress(org: Org, made: Made, rich: bool) -> Message:
    return apb.RecordProgressRequest(
        badge_id=made.badges[0],
        recipient=apb.Recipient(member_id=_unique("m")),
        state=EARNED if rich else IN_PROGRESS,
    )


async def _list_states(org: Org, made: Made, rich: bool) -> Message:
    return apb.ListRecipientBadgeStatesRequest(
        recipient=made.recipient, page_size=2, page_token=made.states_token
    )


async def _watch(org: Org, made: Made, rich: bool) -> Message:
    # The org has two events: resume after the first, so the stream has one to send.
    return apb.WatchAwardsRequest(after_sequence=1)


async def _list_classes(org: Org, made: Made, rich: bool) -> Message:
    return bcpb.ListBadgeClassesRequest(
        page_size=2,
        page_token=made.classes_token,
        issuer=made.issuers[0].entity_id,
        archived=False,
    )


async def _get_class(org: Org, made: Made, rich: bool) -> Message:
    bc = made.classes[0]
    view = ipb.BADGR_VIEW_OPEN_BADGES_V2
    if rich:
        return bcpb.GetBadgeClassRequest(
            badge_class_open_badge_id_base64=_b64(bc.open_badge_id), view=view
        )
    return bcpb.GetBadgeClassRequest(id_or_entity_id=bc.entity_id, view=view)


async def _update_class(org: Org, made: Made, rich: bool) -> Message:
    bc = await _made_class(org, made.issuers[0], rich)
    changed = bcpb.BadgeClass(
        id=bc.id,
        name=_unique("Renamed"),
        description="New.",
        tags=["math", "stem"],
        alignments=[bcpb.Alignment(target_name="Algebra", target_url="https://example.org/a")],
        expires=bcpb.Expires(amount=2, duration=bcpb.EXPIRES_DURATION_WEEKS),
        archived=True,
        archival_note="Replaced",
    )
    paths = ["name", "description", "tags", "alignments", "expires", "archived", "archival_note"]
    return bcpb.UpdateBadgeClassRequest(badge_class=changed, update_mask=FieldMask(paths=paths))


async def _delete_class(org: Org, made: Made, rich: bool) -> Message:
    bc = await _made_class(org, made.issuers[0], rich)
    if not rich:
        return bcpb.DeleteBadgeClassRequest(id_or_entity_id=bc.id)
    # Awarded, with a claim code: only a cascade deletes it.
    await _awards(org).CreateAward(
        apb.CreateAwardRequest(
            award=apb.Award(badge_class_id=bc.entity_id, recipient=apb.Recipient(member_id="7"))
        ),
        timeout=TIMEOUT,
    )
    await _made_codes(org, bc, 1)
    return bcpb.DeleteBadgeClassRequest(ref=bc.open_badge_id, cascade=True)


async def _list_codes(org: Org, made: Made, rich: bool) -> Message:
    return bcpb.ListClaimCodesRequest(
        id_or_entity_id=made.classes[0].entity_id, page_size=2, page_token=made.codes_token
    )


async def _delete_code(org: Org, made: Made, rich: bool) -> Message:
    bc = made.classes[0]
    (code,) = await _made_codes(org, bc, 1)
    return bcpb.DeleteClaimCodeRequest(
        id_or_entity_id=bc.id if rich else bc.entity_id,
        claim_code=code.code.lower() if rich else code.code,
    )


async def _list_issuers(org: Org, made: Made, rich: bool) -> Message:
    return ipb.ListIssuersRequest(page_size=2, page_token=made.issuers_token)


async def _delete_issuer(org: Org, made: Made, rich: bool) -> Message:
    issuer = await _made_issuer(org, rich)
    if not rich:
        return ipb.DeleteIssuerRequest(id_or_entity_id=issuer.entity_id)
    # With a badge class and its claim code: only a cascade deletes it.
    await _made_codes(org, await _made_class(org, issuer, rich), 1)
    return ipb.DeleteIssuerRequest(
        issuer_open_badge_id_base64=_b64(issuer.open_badge_id), cascade=True
    )


# Valid requests that name objects of Made (see World.made).
WORLD_BASES: dict[str, Callable[[Org, Made, bool], Awaitable[Message]]] = {
    "/badges.v1.AwardService/RedeemClaimCode": _redeem,
    "/badges.v1.AwardService/RecordProgress": _record_progress,
    "/badges.v1.AwardService/ListRecipientBadgeStates": _list_states,
    "/badges.v1.AwardService/WatchAwards": _watch,
    "/badges.v1.BadgeClassService/ListBadgeClasses": _list_classes,
    "/badges.v1.BadgeClassService/GetBadgeClass": _get_class,
    "/badges.v1.BadgeClassService/UpdateBadgeClass": _update_class,
    "/badges.v1.BadgeClassService/DeleteBadgeClass": _delete_class,
    "/badges.v1.BadgeClassService/ListClaimCodes": _list_codes,
    "/badges.v1.BadgeClassService/DeleteClaimCode": _delete_code,
    "/badges.v1.IssuerService/ListIssuers": _list_issuers,
    "/badges.v1.IssuerService/DeleteIssuer": _delete_issuer,
}

Base = Callable[[Org, bool], Awaitable[Message]]


async def _const(msg: Message) -> Message:
    return msg


BASES: dict[str, Base] = {
    "/badges.v1.OrgMetaService/GetOrgMeta": lambda org, rich: _const(opb.GetOrgMetaRequest()),
    "/badges.v1.OrgMetaService/UpdateOrgMeta": lambda org, rich: _const(
        opb.UpdateOrgMetaRequest(
            org_meta=opb.OrgMeta(
                tags=[*RICH_TAGS, opb.OrgMetaTag(key="Golf", data_type=common_pb2.DATA_TYPE_DATE)]
            ),
            update_mask=FieldMask(paths=["tags"]),
        )
    ),
    "/badges.v1.CustomFieldService/CreateCustomField": lambda org, rich: _const(
        cpb.CreateCustomFieldRequest(
            custom_field=cpb.CustomField(
                name=_unique("field"),
                data_type=common_pb2.DATA_TYPE_DATE,
                is_mandatory=True,
                default_value="2024-02-29",
                is_active=True,
            )
        )
    ),
    "/badges.v1.CustomFieldService/GetCustomField": lambda org, rich: _get_field(org),
    "/badges.v1.CustomFieldService/ListCustomFields": lambda org, rich: _const(
        cpb.ListCustomFieldsRequest(page_size=2)
    ),
    "/badges.v1.CustomFieldService/UpdateCustomField": _update_field,
    "/badges.v1.CustomFieldService/DeleteCustomField": lambda org, rich: _delete_field(org),
    "/badges.v1.BadgeService/ListBadges": lambda org, rich: _const(_list_badges()),
    "/badges.v1.BadgeService/GetBadge": lambda org, rich: _get_badge(org, rich),
    "/badges.v1.BadgeService/CreateBadge": lambda org, rich: _const(
        bpb.CreateBadgeRequest(badge=valid_badge(org, rich))
    ),
    "/badges.v1.BadgeService/UpdateBadge": _update_badge,
    "/badges.v1.BadgeService/DeleteBadge": lambda org, rich: _delete_badge(org, rich),
    "/badges.v1.AwardService/CreateAward": _create_award,
    "/badges.v1.AwardService/BatchCreateAwards": _batch_awards,
    "/badges.v1.AwardService/GetAward": _get_award,
    "/badges.v1.AwardService/ListAwards": lambda org, rich: _const(
        apb.ListAwardsRequest(
            recipient=apb.Recipient(email="a@example.com"), revoked=False, page_size=5
        )
    ),
    "/badges.v1.AwardService/RevokeAward": _revoke_award,
    "/badges.v1.AwardService/BakeAward": _bake_award,
    "/badges.v1.AwardService/VerifyAward": _verify_award,
    "/badges.v1.IssuerService/CreateIssuer": _create_issuer,
    "/badges.v1.IssuerService/GetIssuer": _get_issuer,
    "/badges.v1.IssuerService/UpdateIssuer": _update_issuer,
    "/badges.v1.BadgeClassService/CreateBadgeClass": _create_class,
    "/badges.v1.BadgeClassService/CreateClaimCodes": _create_codes,
}


# BadgeTemplateService's requests name the organisation by its UUID, and have property tests
# of their own with valid bases (tests/test_badge_templates_properties.py).
BASES_ELSEWHERE = {
    f"/badges.v1.BadgeTemplateService/{m}"
    for m in (
        "ListBadgeTemplates",
        "GetBadgeTemplate",
        "CreateBadgeTemplate",
        "UpdateBadgeTemplate",
        "DeleteBadgeTemplate",
        "ArchiveBadgeTemplate",
        "UnarchiveBadgeTemplate",
    )
}


async def valid_request(
    world: World, method: MethodDescriptor, full: str, org: Org, rich: bool
) -> Message:
    """A valid request for ``method``; an empty one for methods with bases elsewhere."""
    world_base = WORLD_BASES.get(full)
    if world_base is not None:
        return await world_base(org, await world.made(org, rich), rich)
    base = BASES.get(full)
    if base is None:
        return message_class(method.input_type)()
    return await base(org, rich)


def test_every_rpc_has_a_valid_base() -> None:
    # A new RPC's mutations must start from a valid request, or they stop at its first check.
    paths = {path(s, m) for s, m in METHODS}
    assert paths - BASES.keys() - WORLD_BASES.keys() == BASES_ELSEWHERE
    assert not BASES.keys() & WORLD_BASES.keys()


# Requests that once broke the server (UNKNOWN/INTERNAL): replayed first on every run.
def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1.0}
    for _ in range(depth):
        value = {"a": value}
    return value


REGRESSIONS: dict[str, list[Message]] = {
    # An error echoing a 20,000-character mask path overflowed the client's metadata limit
    # (RESOURCE_EXHAUSTED); echoed text is now clipped.
    "/badges.v1.OrgMetaService/UpdateOrgMeta": [
        opb.UpdateOrgMetaRequest(update_mask=FieldMask(paths=["0" * 20_000]))
    ],
    "/badges.v1.CustomFieldService/CreateCustomField": [
        # int() refuses more than 4,300 digits with ValueError: INTERNAL.
        cpb.CreateCustomFieldRequest(
            custom_field=cpb.CustomField(
                name="n", data_type=common_pb2.DATA_TYPE_INTEGER, default_value="9" * 5000
            )
        ),
        # PostgreSQL text cannot hold NUL: INTERNAL there.
        cpb.CreateCustomFieldRequest(
            custom_field=cpb.CustomField(name="a\x00", data_type=common_pb2.DATA_TYPE_STRING)
        ),
    ],
    "/badges.v1.CustomFieldService/GetCustomField": [
        cpb.GetCustomFieldRequest(id="a\x00b"),
        cpb.GetCustomFieldRequest(id="\U0001f600" * 10_000),  # NOT_FOUND echoing 40 kB
    ],
    "/badges.v1.BadgeService/ListBadges": [bpb.ListBadgesRequest(tag_name="\x00")],
    "/badges.v1.BadgeService/CreateBadge": [
        # json_format refuses NaN and Infinity in a Struct with ValueError: INTERNAL.
        bpb.CreateBadgeRequest(badge=bpb.Badge(badge_extra_data=_struct({"x": math.inf}))),
    ],
}


def _random_test(service: ServiceDescriptor, method: MethodDescriptor) -> Callable[..., Any]:
    @PROPERTY
    @given(request=messages(method.input_type))
    async def test(world: World, request: Message) -> None:
        got = await outcome(invoke(world.plain.admin.channel, service, method, request))
        assert got in ADMIN_CODES, got.name
        await world.still_serving()

    for regression in REGRESSIONS.get(path(service, method), []):
        test = example(request=regression)(test)
    return test


# One test per method (rather than one parametrised test) so each can carry its @examples.
for _service, _method in METHODS:
    _name = f"test_arbitrary_{_service.name}_{_method.name}"
    globals()[_name] = _random_test(_service, _method)
    globals()[_name].__name__ = _name


@pytest.mark.parametrize("name", [i for i in IDS if path(*BY_ID[i]) not in BASES_ELSEWHERE])
async def test_valid_requests_succeed(world: World, name: str) -> None:
    service, method = BY_ID[name]
    # The starting points of the mutations below must themselves be valid, in both orgs.
    for rich in (False, True):
        org = await world.org(rich)
        request = await valid_request(world, method, path(service, method), org, rich)
        if not method.server_streaming:
            await invoke(org.admin.channel, service, method, request)  # raises unless OK
            continue
        # WatchAwards, resumed after the first of the org's two events: it sends the second.
        call = stub_call(org.admin.channel, service, method)(request, timeout=TIMEOUT)
        try:
            event = await call.read()
        finally:
            call.cancel()
        assert event.sequence == 2, event


@pytest.mark.parametrize("name", IDS)
@MUTATED
@given(data=st.data())
async def test_mutated_valid_requests(world: World, name: str, data: st.DataObject) -> None:
    service, method = BY_ID[name]
    rich = data.draw(st.booleans(), label="rich org")
    org = await world.org(rich)
    base = await valid_request(world, method, path(service, method), org, rich)
    request = data.draw(mutations(base), label="request")
    got = await outcome(invoke(org.admin.channel, service, method, request))
    assert got in ADMIN_CODES, got.name
    await world.still_serving()


@pytest.mark.parametrize("name", IDS)
@FEW
@given(data=st.data())
async def test_reader_and_anonymous_callers(world: World, name: str, data: st.DataObject) -> None:
    service, method = BY_ID[name]
    request = data.draw(messages(method.input_type), label="request")
    got = await outcome(invoke(world.plain.reader.channel, service, method, request))
    if WRITES[path(service, method)]:
        assert got is grpc.StatusCode.PERMISSION_DENIED, got.name
    else:
        assert got in ADMIN_CODES, got.name
    got = await outcome(invoke(world.anonymous.channel, service, method, request))
    assert got is grpc.StatusCode.UNAUTHENTICATED, got.name
    await world.still_serving()


def raw_call(
    channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor
) -> Any:
    """A multi-callable that sends bytes as they are (no serializer) and returns raw bytes."""
    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    return kind(path(service, method), request_serializer=None, response_deserializer=None)


async def call_raw(
    channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor, raw: bytes
) -> None:
    """Sends ``raw`` as the request of ``method``, whatever its streaming kind; raises
    AioRpcError unless the call succeeds."""
    multi = raw_call(channel, service, method)
    arg: Any = iter([raw]) if method.client_streaming else raw
    if method.server_streaming:
        stream = multi(arg, timeout=TIMEOUT)
        await stream.initial_metadata()  # see invoke()
        try:
            async with asyncio.timeout(STREAM_WINDOW):
                async for _ in stream:
                    pass
        except TimeoutError:
            stream.cancel()
    else:
        await multi(arg, timeout=TIMEOUT)


def parses(method: MethodDescriptor, raw: bytes) -> bool:
    """Whether ``raw`` is a valid serialisation of the method's request type."""
    try:
        message_class(method.input_type).FromString(raw)
    except Exception:  # DecodeError, or anything else the parser raises on bad bytes
        return False
    return True


@pytest.mark.parametrize("name", IDS)
@RAW
@given(data=st.data())
async def test_bytes_that_are_not_protobuf(world: World, name: str, data: st.DataObject) -> None:
    service, method = BY_ID[name]
    valid = data.draw(messages(method.input_type), label="valid").SerializeToString()
    raw = data.draw(garbage(valid), label="raw")
    got = await outcome(call_raw(world.plain.admin.channel, service, method, raw))
    if parses(method, raw):
        assert got in ADMIN_CODES, got.name
    else:
        assert got is grpc.StatusCode.INVALID_ARGUMENT, got.name
    await world.still_serving()


@pytest.mark.parametrize("name", IDS)
async def test_undecodable_request_is_invalid_argument(world: World, name: str) -> None:
    service, method = BY_ID[name]
    raw = b"\x08"  # field 1 as a varint, with the varint missing
    full = path(service, method)
    await expect_error(
        call_raw(world.plain.admin.channel, service, method, raw),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="MALFORMED_REQUEST",
        field="request",
    )
    # Credentials and roles are still checked first.
    reader = call_raw(world.plain.reader.channel, service, method, raw)
    if WRITES[full]:
        await expect_error(reader, grpc.StatusCode.PERMISSION_DENIED, reason="WRITE_REQUIRES_ADMIN")
    else:
        await expect_error(reader, grpc.StatusCode.INVALID_ARGUMENT, reason="MALFORMED_REQUEST")
    await expect_error(
        call_raw(world.anonymous.channel, service, method, raw),
        grpc.StatusCode.UNAUTHENTICATED,
        reason="MISSING_CREDENTIALS",
    )
    await world.still_serving()


def forged_token(after: Any, fingerprint: str) -> str:
    """A page token as the service encodes them, resuming after ``after``: tokens are opaque
    but not signed, so a client can forge one with the right filter fingerprint."""
    return paging.encode_page_token(after, fingerprint)


TOKEN_KEYS = st.one_of(
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, -1, 0, True, None, 1.5, math.nan]),
    st.integers(),
    st.text(max_size=30),
    st.sampled_from(["a\x00b", "x" * 10_000, "ffffffffffffffffffffffff", ""]),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
)


@settings(PROPERTY, max_examples=examples(30))
@given(after=TOKEN_KEYS, raw=st.booleans())
@example(after=2**64, raw=False)
@example(after="a\x00b", raw=False)
@example(after=None, raw=True)  # a JSON document nested past Python's recursion limit
async def test_forged_page_tokens(world: World, after: Any, raw: bool) -> None:
    org = world.plain.admin
    if raw:
        deep = base64.urlsafe_b64encode(b"[" * 100_000).decode()
        badge_token = field_token = deep
    else:
        badge_token = forged_token(after, paging.filter_fingerprint("badges", BadgeFilter()))
        field_token = forged_token(after, paging.filter_fingerprint("custom_fields"))
    for call in (
        org.badges.ListBadges(bpb.ListBadgesRequest(page_token=badge_token), timeout=TIMEOUT),
        org.fields.ListCustomFields(
            cpb.ListCustomFieldsRequest(page_token=field_token), timeout=TIMEOUT
        ),
    ):
        assert await outcome(call) in ADMIN_CODES
    await world.still_serving()


# Each fix above, pinned with its exact status, reason and field.


async def test_nul_characters_are_invalid_argument_naming_the_field(world: World) -> None:
    org = world.plain.admin
    badge = valid_badge(world.plain, rich=False)
    badge.badge_states[1].description = "in\x00progress"
    await expect_error(
        org.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge)),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="INVALID_FIELD",
        field="badge.badge_states[1].description",
    )
    badge = valid_badge(world.plain, rich=False)
    badge.badge_extra_data.update({"list": [1, {"k": "v\x00"}]})
    await expect_error(
        org.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge)),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="badge.badge_extra_data.list[1].k",
    )
    badge = valid_badge(world.plain, rich=False)
    badge.badge_extra_data.update({"k\x00": 1})
    await expect_error(
        org.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge)),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="badge.badge_extra_data.k\x00",
    )
    await expect_error(
        org.fields.GetCustomField(cpb.GetCustomFieldRequest(id="\x00")),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="id",
    )
    await expect_error(
        org.meta.UpdateOrgMeta(
            opb.UpdateOrgMetaRequest(
                org_meta=opb.OrgMeta(tags=[*RICH_TAGS[:1], opb.OrgMetaTag(key="a\x00")])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="org_meta.tags[1].key",
    )
    await expect_error(
        org.badges.ListBadges(bpb.ListBadgesRequest(tag_name="Foot\x00ball")),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="tag_name",
    )
    # NUL bytes elsewhere (a zero varint, bytes fields) are fine.
    listed = await org.badges.ListBadges(bpb.ListBadgesRequest(page=0, is_enabled=False))
    assert listed.paging.next_page == 1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_non_finite_extra_data_is_invalid_argument(world: World, value: float) -> None:
    badge = valid_badge(world.plain, rich=False)
    badge.badge_extra_data.update({"a": {"b": [1.0, value]}})
    await expect_error(
        world.plain.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge)),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="INVALID_FIELD",
        field="badge.badge_extra_data.a.b[1]",
    )
    # The largest finite doubles are JSON and are stored as sent, on both databases.
    badge = valid_badge(world.plain, rich=False)
    badge.badge_extra_data.update({"big": 1e308, "tiny": 5e-324, "neg": -1e308})
    created = await world.plain.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge))
    got = await world.plain.admin.badges.GetBadge(bpb.GetBadgeRequest(id=created.id))
    assert got.badge_extra_data["big"] == 1e308
    assert got.badge_extra_data["tiny"] == 5e-324
    assert got.badge_extra_data["neg"] == -1e308


async def test_integer_default_with_thousands_of_digits_is_744(world: World) -> None:
    # int() refuses more than 4,300 digits: the length limit now comes first.
    field = cpb.CustomField(
        name="huge", data_type=common_pb2.DATA_TYPE_INTEGER, default_value="9" * 5000
    )
    await expect_error(
        world.plain.admin.fields.CreateCustomField(
            cpb.CreateCustomFieldRequest(custom_field=field)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="LIMIT_EXCEEDED",
        field="custom_field.default_value",
    )
    # The longest default allowed is still a number too large for JSON's exact integers.
    field.default_value = "9" * 255
    await expect_error(
        world.plain.admin.fields.CreateCustomField(
            cpb.CreateCustomFieldRequest(custom_field=field)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="DEFAULT_VALUE_TYPE_MISMATCH",
        vendor_code=744,
        field="custom_field.default_value",
    )


async def test_errors_echoing_huge_input_stay_within_metadata_limits(world: World) -> None:
    huge = "\U0001f600" * 10_000
    got = await expect_error(
        world.plain.admin.fields.GetCustomField(cpb.GetCustomFieldRequest(id=huge)),
        grpc.StatusCode.NOT_FOUND,
        reason="NOT_FOUND",
    )
    assert got.message.startswith("custom field \U0001f600") and got.message.endswith("...")
    assert len(got.message.encode()) <= 512
    assert got.info is not None and len(got.info.metadata["id"].encode()) <= 256
    got = await expect_error(
        world.plain.admin.meta.UpdateOrgMeta(
            opb.UpdateOrgMetaRequest(update_mask=FieldMask(paths=["x" * 20_000]))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="update_mask",
    )
    assert len(got.message) <= 512


def _length_delimited(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


async def test_struct_nested_past_the_parse_limit_is_malformed_request(world: World) -> None:
    # Python's protobuf will not even build such a request (copying it in re-parses it), so
    # it goes as bytes: CreateBadgeRequest.badge (1) -> Badge.badge_extra_data (13) -> Struct.
    # grpc.aio answered UNKNOWN with the parser's message.
    deep = struct_pb2.Struct()
    deep.update(_nested(40))
    raw = _length_delimited(1, _length_delimited(13, deep.SerializeToString()))
    service, method = BY_ID["BadgeService.CreateBadge"]
    await expect_error(
        call_raw(world.plain.admin.channel, service, method, raw),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="MALFORMED_REQUEST",
        field="request",
    )
    # Nesting the parser accepts is stored and read back whole.
    badge = valid_badge(world.plain, rich=False)
    badge.badge_extra_data.update(_nested(25))
    created = await world.plain.admin.badges.CreateBadge(bpb.CreateBadgeRequest(badge=badge))
    assert created.badge_extra_data == badge.badge_extra_data


async def test_forged_page_token_past_the_recursion_limit(world: World) -> None:
    deep = base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=")
    await expect_error(
        world.plain.admin.badges.ListBadges(bpb.ListBadgesRequest(page_token=deep)),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="page_token",
    )
    token = forged_token("a\x00b", paging.filter_fingerprint("custom_fields"))
    await expect_error(
        world.plain.admin.fields.ListCustomFields(cpb.ListCustomFieldsRequest(page_token=token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        field="page_token",
    )
