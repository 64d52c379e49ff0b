"""The benchmark's wire encoders (bench/frames.py) and its write-load generator (bench/h2gen.py),
the latter against the real server: a frame or header block the server could not parse would
fail every call."""

from __future__ import annotations

import pytest

from badge_service.api.badges.v1 import badge_pb2 as pb
from bench import frames, h2gen
from bench.seed import sample_badge
from tests.support import Backend, Org


def test_grpc_frame_is_flag_length_payload() -> None:
    assert frames.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert frames.grpc_frame(b"") == b"\x00\x00\x00\x00\x00"
    big = bytes(70_000)
    assert frames.grpc_frame(big)[:5] == b"\x00\x00\x01\x11\x70"
    msg = pb.GetBadgeRequest(id=1234567)
    encoded = frames.grpc_message(msg)
    assert frames.parse_grpc_frames(encoded) == [msg.SerializeToString()]
    assert pb.GetBadgeRequest.FromString(frames.parse_grpc_frames(encoded)[0]).id == 1234567


def test_parse_grpc_frames_refuses_truncated_and_compressed() -> None:
    assert frames.parse_grpc_frames(frames.grpc_frame(b"a") + frames.grpc_frame(b"bc")) == [
        b"a",
        b"bc",
    ]
    with pytest.raises(ValueError, match="truncated gRPC message prefix"):
        frames.parse_grpc_frames(b"\x00\x00\x00")
    with pytest.raises(ValueError, match=r"truncated gRPC message$"):
        frames.parse_grpc_frames(b"\x00\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="compressed"):
        frames.parse_grpc_frames(frames.grpc_frame(b"abc", compressed=True))


def test_hpack_integers_match_rfc_7541_examples() -> None:
    # RFC 7541 C.1.1-C.1.3.
    assert frames.hpack_int(10, 5) == b"\x0a"
    assert frames.hpack_int(1337, 5) == b"\x1f\x9a\x0a"
    assert frames.hpack_int(42, 8) == b"\x2a"
    assert frames.hpack_int(127, 7) == b"\x7f\x00"
    assert frames.hpack_int(3, 4, first=0x10) == b"\x13"


def test_hpack_block_is_literals_without_indexing() -> None:
    # RFC 7541 C.2.1 with the "without indexing" representation (0x00 instead of 0x40).
    assert frames.hpack_block([("custom-key", "custom-header")]) == (
        b"\x00\x0acustom-key\x0dcustom-header"
    )
    assert frames.hpack_block([("Authorization", "Bearer k")]) == (
        b"\x00\x0dauthorization\x08Bearer k"
    )
    long_value = "v" * 200
    assert frames.hpack_block([("x", long_value)]) == b"\x00\x01x\x7f\x49" + b"v" * 200


def test_h2_frames_have_length_type_flags_and_stream() -> None:
    assert frames.h2_frame(frames.DATA, frames.END_STREAM, 3, b"xy") == (
        b"\x00\x00\x02\x00\x01\x00\x00\x00\x03xy"
    )
    assert frames.settings_frame({frames.SETTINGS_ENABLE_PUSH: 0}) == (
        b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00"
    )
    assert frames.window_update(0, 1000) == b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x03\xe8"
    both = frames.request_frames(5, b"HB", b"BODY")
    assert both == (
        b"\x00\x00\x02\x01\x04\x00\x00\x00\x05HB" + b"\x00\x00\x04\x00\x01\x00\x00\x00\x05BODY"
    )


def test_workload_replaces_the_placeholder_with_a_fixed_width_counter() -> None:
    get = h2gen.Item(b"g", b"GET")
    create = h2gen.Item(b"c", b"name=~~~~;", placeholder=b"~~~~")
    work = h2gen.Workload([get, get, create])
    sent = [work.next() for _ in range(6)]
    assert sent == [
        (b"g", b"GET"),
        (b"g", b"GET"),
        (b"c", b"name=0000;"),
        (b"g", b"GET"),
        (b"g", b"GET"),
        (b"c", b"name=0001;"),
    ]
    tiny = h2gen.Workload([h2gen.Item(b"c", b"#", placeholder=b"#")])
    assert [tiny.next()[1] for _ in range(10)] == [str(i).encode() for i in range(10)]
    with pytest.raises(OverflowError):
        tiny.next()


def _item(backend: Backend, org: Org, method: str, request: object) -> h2gen.Item:
    headers = frames.grpc_request_headers(
        f"/badges.v1.BadgeService/{method}",
        f"127.0.0.1:{backend.port}",
        [("authorization", f"Bearer {org.admin_key}")],
    )
    assert hasattr(request, "SerializeToString")
    return h2gen.Item(frames.hpack_block(headers), frames.grpc_message(request))  # type: ignore[arg-type]


async def test_h2gen_calls_the_real_server(backend: Backend, org: Org) -> None:
    badge = await org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=sample_badge("b1")))
    found = _item(backend, org, "GetBadge", pb.GetBadgeRequest(id=badge.id))
    result = await h2gen.run(
        "127.0.0.1", backend.port, [found], connections=2, streams=4, duration=0.3, warmup=0.05
    )
    assert result["failed"] == 0
    assert result["ok"] > 10
    assert result["ok_total"] >= result["ok"]
    assert result["unique_ok_total"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]

    # A NOT_FOUND is a trailers-only response: no DATA, so the generator counts it failed.
    missing = _item(backend, org, "GetBadge", pb.GetBadgeRequest(id=badge.id + 10_000_000))
    result = await h2gen.run(
        "127.0.0.1", backend.port, [missing], connections=1, streams=2, duration=0.2, warmup=0
    )
    assert result["ok"] == 0
    assert result["ok_total"] == 0
    assert result["failed"] > 5


async def test_h2gen_sends_a_unique_name_per_create(backend: Backend, org: Org) -> None:
    request = pb.CreateBadgeRequest(badge=sample_badge("gen-~~~~~~~~"))
    base = _item(backend, org, "CreateBadge", request)
    item = h2gen.Item(base.header_block, base.body, placeholder=b"~~~~~~~~")
    result = await h2gen.run(
        "127.0.0.1", backend.port, [item], connections=2, streams=4, duration=0.3, warmup=0
    )
    assert result["failed"] == 0
    assert result["ok_total"] > 5
    assert result["unique_ok_total"] == result["ok_total"]
    names: list[str] = []
    token = ""
    while True:
        page = await org.reader.badges.ListBadges(
            pb.ListBadgesRequest(page_size=25, page_token=token)
        )
        names += [b.name for b in page.badges]
        token = page.next_page_token
        if not token:
            break
    # Every acknowledged create is stored, each under its own name (the counter's values).
    assert page.total_size == result["ok_total"]
    assert sorted(names) == [f"gen-{i:08d}" for i in range(result["ok_total"])]
