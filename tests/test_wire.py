"""rpc.wire builds replies from stored bytes: a badge's id put in front of its serialized
message without the id is that badge serialized whole, repeated-field items concatenated with a
serialized tail parse as the whole list response, and the varints match protobuf's own
encoding at the edges. And it registers servicers from their service descriptors: methods
marked as answering with serialized bytes send them unserialized, the rest as generated code
would, and a servicer that does not match the contract is refused."""

from __future__ import annotations

import typing
from collections.abc import Awaitable
from typing import cast

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given
from hypothesis import strategies as st

from badge_service.api.badges.v1 import (
    badge_class_pb2,
    badge_template_pb2,
    custom_field_pb2,
    issuer_pb2,
)
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.rpc import wire
from badge_service.rpc.badge_classes import BadgeClassServicer
from badge_service.rpc.badge_templates import BadgeTemplateServicer
from badge_service.rpc.badges import BadgeServicer
from badge_service.rpc.custom_fields import CustomFieldServicer
from badge_service.rpc.issuers import IssuerServicer
from badge_service.service.db import Database

UINT63 = st.integers(min_value=0, max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
TEXT = st.text(max_size=40)


@st.composite
def badges_without_id(draw: st.DrawFn) -> pb.Badge:
    """A Badge with some scalar, repeated and sub-message fields set and no id."""
    msg = pb.Badge(name=draw(TEXT), title=draw(TEXT))
    if draw(st.booleans()):
        msg.is_enabled = draw(st.booleans())
    for order in draw(st.lists(INT32, max_size=3)):
        msg.badge_states.add(
            state=draw(st.sampled_from([0, 1, 2, 3])), order=order, description=draw(TEXT)
        )
    if draw(st.booleans()):
        msg.frequency.freq_cap = draw(INT32)
        msg.frequency.freq_max = draw(INT32)
        msg.frequency.freq_period_name = draw(TEXT)
    for tag_id in draw(st.lists(INT32, max_size=3)):
        msg.tags.add(tag_name=draw(TEXT), tag_id=tag_id)
    if draw(st.booleans()):
        msg.create_time.seconds = draw(st.integers(min_value=0, max_value=2**40))
        msg.create_time.nanos = draw(st.integers(min_value=0, max_value=999_999_999))
    return msg


def with_id(msg: pb.Badge, badge_id: int) -> pb.Badge:
    """A copy of ``msg`` with its id set."""
    out = pb.Badge()
    out.CopyFrom(msg)
    out.id = badge_id
    return out


@given(badge_id=UINT63, msg=badges_without_id())
def test_id_in_front_of_a_badge_without_id_is_the_whole_badge(badge_id: int, msg: pb.Badge) -> None:
    data = wire.varint_field(1, badge_id) + msg.SerializeToString()
    expected = with_id(msg, badge_id)
    assert pb.Badge.FromString(data) == expected
    if badge_id != 0:
        # proto3 leaves a zero id out of the encoding, so only a real (positive) id gives
        # byte-for-byte what SerializeToString gives.
        assert data == expected.SerializeToString()
    else:
        assert data == b"\x08\x00" + expected.SerializeToString()


@given(
    ids=st.lists(st.integers(min_value=1, max_value=2**63 - 1), max_size=5),
    msgs=st.lists(badges_without_id(), min_size=5, max_size=5),
    total=st.integers(min_value=0, max_value=2**31 - 1),
    next_page=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    token=TEXT,
)
def test_badges_as_items_then_a_tail_parse_as_the_list_response(
    ids: list[int], msgs: list[pb.Badge], total: int, next_page: int | None, token: str
) -> None:
    items = [with_id(m, i) for i, m in zip(ids, msgs, strict=False)]
    paging = pb.Paging(total=total, pages=total // 10, next_page=next_page)
    tail = pb.ListBadgesResponse(paging=paging, next_page_token=token, total_size=total)
    data = b"".join(
        [
            *(
                wire.message_field(1, wire.varint_field(1, i) + m.SerializeToString())
                for i, m in zip(ids, msgs, strict=False)
            ),
            tail.SerializeToString(),
        ]
    )
    expected = pb.ListBadgesResponse(
        badges=items, paging=paging, next_page_token=token, total_size=total
    )
    assert pb.ListBadgesResponse.FromString(data) == expected
    assert data == expected.SerializeToString()


def test_an_empty_list_is_the_tail_alone() -> None:
    tail = pb.ListBadgesResponse(paging=pb.Paging(total=0, pages=0, next_page=1), total_size=0)
    assert pb.ListBadgesResponse.FromString(tail.SerializeToString()) == tail
    assert list(pb.ListBadgesResponse.FromString(tail.SerializeToString()).badges) == []


def test_message_field_of_an_empty_payload() -> None:
    # A present but empty Badge: key 0x0a, length 0.
    assert wire.message_field(1, b"") == b"\x0a\x00"
    parsed = pb.ListBadgesResponse.FromString(wire.message_field(1, b""))
    assert list(parsed.badges) == [pb.Badge()]


EDGES = [0, 1, 127, 128, 255, 300, 16_383, 16_384, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1]


def protobuf_varint(value: int) -> bytes:
    """protobuf's own varint of ``value``: a uint64 field's encoding without its key."""
    if value == 0:
        # proto3 leaves a zero uint64 out; an optional (explicit presence) field keeps it.
        encoded = pb.Paging(next_page=0).SerializeToString()
        assert encoded[:1] == b"\x18"
        return encoded[1:]
    encoded = wrappers_pb2.UInt64Value(value=value).SerializeToString()
    assert encoded[:1] == b"\x08"
    return encoded[1:]


def test_varint_edges_match_protobuf() -> None:
    for value in EDGES:
        assert wire.varint(value) == protobuf_varint(value), value
    assert wire.varint(0) == b"\x00"
    assert wire.varint(127) == b"\x7f"
    assert wire.varint(128) == b"\x80\x01"
    assert wire.varint(2**63 - 1) == b"\xff" * 8 + b"\x7f"
    assert len(wire.varint(2**64 - 1)) == 10


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    assert wire.varint(value) == protobuf_varint(value)


def test_field_keys() -> None:
    # Key = field number << 3 | wire type, itself a varint.
    assert wire.varint_field(1, 5) == b"\x08\x05"
    assert wire.varint_field(16, 1) == b"\x80\x01\x01"
    assert wire.message_field(2, b"ab") == b"\x12\x02ab"
    assert wire.message_field(16, b"") == b"\x82\x01\x00"
    long = b"x" * 200
    assert wire.message_field(1, long) == b"\x0a\xc8\x01" + long
    for badge_id in (1, 127, 128, 2**63 - 1):
        assert wire.varint_field(1, badge_id) == pb.Badge(id=badge_id).SerializeToString()


# Servicers registered from the service descriptors (rpc.wire.add_servicer).

NO_DB = cast(Database, object())
BASE_URL = "https://badges.example.com"


def definition_servicers() -> list[tuple[ServiceDescriptor, object]]:
    """The servicers server.start registers with wire.add_servicer, with their services."""
    return [
        (
            custom_field_pb2.DESCRIPTOR.services_by_name["CustomFieldService"],
            CustomFieldServicer(NO_DB),
        ),
        (pb.DESCRIPTOR.services_by_name["BadgeService"], BadgeServicer(NO_DB)),
        (issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"], IssuerServicer(NO_DB, BASE_URL)),
        (
            badge_class_pb2.DESCRIPTOR.services_by_name["BadgeClassService"],
            BadgeClassServicer(NO_DB, BASE_URL),
        ),
        (
            badge_template_pb2.DESCRIPTOR.services_by_name["BadgeTemplateService"],
            BadgeTemplateServicer(NO_DB, BASE_URL),
        ),
    ]


def test_handlers_follow_the_contract_and_send_marked_replies_as_they_are() -> None:
    for service, servicer in definition_servicers():
        handlers = wire.method_handlers(service, servicer)
        assert set(handlers) == {m.name for m in service.methods}
        for method in service.methods:
            handler = handlers[method.name]
            request = GetMessageClass(method.input_type)
            reply = GetMessageClass(method.output_type)
            assert handler.request_deserializer == request.FromString
            marked = wire.serialized_reply(getattr(servicer, method.name))
            if marked is None:
                assert handler.response_serializer == reply.SerializeToString
            else:
                assert marked is reply
                assert handler.response_serializer is None  # the bytes go out as they are
    badge_service = pb.DESCRIPTOR.services_by_name["BadgeService"]
    bytes_methods = {
        m.name
        for m in badge_service.methods
        if wire.serialized_reply(getattr(BadgeServicer(NO_DB), m.name)) is not None
    }
    assert bytes_methods == {"GetBadge", "ListBadges", "CreateBadge", "UpdateBadge"}


def test_servicer_methods_are_typed_as_the_contract_says() -> None:
    """What mypy checked against the generated bases, which these servicers do not subclass:
    each method takes its request message and returns its reply message, or bytes when it is
    marked as answering with that message serialized."""
    for service, servicer in definition_servicers():
        for method in service.methods:
            hints = typing.get_type_hints(getattr(type(servicer), method.name))
            assert hints["request"] is GetMessageClass(method.input_type), method.full_name
            if wire.serialized_reply(getattr(servicer, method.name)) is None:
                assert hints["return"] is GetMessageClass(method.output_type), method.full_name
            else:
                assert hints["return"] in (bytes, Awaitable[bytes]), method.full_name


def test_a_servicer_missing_a_method_of_the_contract_is_refused() -> None:
    class Partial:
        async def GetBadge(self, request: pb.GetBadgeRequest, context: object) -> pb.Badge:
            return pb.Badge()

    with pytest.raises(TypeError, match=r"lacks badges\.v1\.BadgeService\.ListBadges"):
        wire.method_handlers(pb.DESCRIPTOR.services_by_name["BadgeService"], Partial())


def test_a_method_marked_with_another_message_is_refused() -> None:
    class Wrong(BadgeServicer):
        @wire.serialized(pb.ListBadgesResponse)
        async def UpdateBadge(
            self, request: pb.UpdateBadgeRequest, context: grpc.aio.ServicerContext
        ) -> bytes:
            return b""

    with pytest.raises(TypeError, match=r"with badges\.v1\.ListBadgesResponse"):
        wire.method_handlers(pb.DESCRIPTOR.services_by_name["BadgeService"], Wrong(NO_DB))
