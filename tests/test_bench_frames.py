"""The benchmark's wire encoders (bench/frames.py), its write-load generator (bench/h2gen.py) and
its unauthenticated flood (bench/flood.py), the latter two against the real server: a frame or
header block the server could not parse would fail every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc
from badge_service.api.badges.v1 import badge_pb2 as pb
from bench import flood, frames, h2gen, seed
from bench.seed import sample_award, sample_badge, uncapped_badge
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


def _item(
    backend: Backend,
    org: Org,
    method: str,
    request: object,
    service: str = "badges.v1.BadgeService",
) -> h2gen.Item:
    headers = frames.grpc_request_headers(
        f"/{service}/{method}",
        f"127.0.0.1:{backend.port}",
        [("authorization", f"Bearer {org.admin_key}")],
    )
    assert hasattr(request, "SerializeToString")
    return h2gen.Item(frames.hpack_block(headers), frames.grpc_message(request))  # type: ignore[arg-type]


# Runs of the generator are short; on a loaded machine one may see no call complete inside its
# measured window, so a check of the window runs it again, up to this many times.
ATTEMPTS = 50


async def _run_until(
    backend: Backend,
    item: h2gen.Item,
    seen: str,
    check: Callable[[dict[str, Any]], None],
    streams: int,
    duration: float,
) -> dict[str, Any]:
    """Runs h2gen on ``item``, checking each run's result with ``check``, until a run's
    measured window counted at least one ``seen`` ("ok" or "failed") call; returns that run's
    result (fails after ATTEMPTS runs)."""
    for _ in range(ATTEMPTS):
        result = await h2gen.run(
            "127.0.0.1",
            backend.port,
            [item],
            connections=2,
            streams=streams,
            duration=duration,
            warmup=0,
        )
        check(result)
        if result[seen] > 0:
            return result
    raise AssertionError(f"no {seen} call in the window of {ATTEMPTS} runs")


def _all_ok(result: dict[str, Any]) -> None:
    assert result["failed"] == 0
    # Each connection starts its 4 streams at once, and the run waits for them.
    assert result["ok_total"] >= 2 * 4
    assert result["ok_total"] >= result["ok"]
    assert result["unique_ok_total"] == 0


def _none_ok(result: dict[str, Any]) -> None:
    assert (result["ok"], result["ok_total"]) == (0, 0)


async def test_h2gen_calls_the_real_server(backend: Backend, org: Org) -> None:
    badge = await org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=sample_badge("b1")))
    found = _item(backend, org, "GetBadge", pb.GetBadgeRequest(id=badge.id))
    result = await _run_until(backend, found, "ok", _all_ok, streams=4, duration=0.3)
    assert 0 < result["p50_ms"] <= result["p99_ms"]

    # A NOT_FOUND is a trailers-only response: no DATA, so the generator counts it failed.
    missing = _item(backend, org, "GetBadge", pb.GetBadgeRequest(id=badge.id + 10_000_000))
    await _run_until(backend, missing, "failed", _none_ok, streams=2, duration=0.2)


async def _run_unique(backend: Backend, base: h2gen.Item) -> dict[str, Any]:
    """Runs h2gen briefly with a fresh counter in place of "~~~~~~~~" per request; every call
    must succeed, each with its own counter value."""
    item = h2gen.Item(base.header_block, base.body, placeholder=b"~~~~~~~~")
    result = await h2gen.run(
        "127.0.0.1", backend.port, [item], connections=2, streams=4, duration=0.3, warmup=0
    )
    assert result["failed"] == 0
    # Each connection starts its 4 streams at once, and the run waits for them.
    assert result["ok_total"] >= 2 * 4
    assert result["unique_ok_total"] == result["ok_total"]
    return result


async def test_h2gen_sends_a_unique_name_per_create(backend: Backend, org: Org) -> None:
    request = pb.CreateBadgeRequest(badge=sample_badge("gen-~~~~~~~~"))
    result = await _run_unique(backend, _item(backend, org, "CreateBadge", request))
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


def test_award_batches_award_distinct_members_within_the_batch_limit() -> None:
    batches = list(seed.award_batches(7, seed.AWARD_BATCH + 3))
    assert [len(b.requests) for b in batches] == [seed.AWARD_BATCH, 3]
    members = [r.award.recipient.member_id for b in batches for r in b.requests]
    assert members == [seed.award_member(i) for i in range(seed.AWARD_BATCH + 3)]
    assert {r.award.badge_id for b in batches for r in b.requests} == {7}
    assert not uncapped_badge("x").HasField("frequency")


async def test_h2gen_sends_a_unique_recipient_per_award(backend: Backend, org: Org) -> None:
    badge = await org.admin.badges.CreateBadge(
        pb.CreateBadgeRequest(badge=uncapped_badge("award-gen"))
    )
    request = sample_award(badge.id, "gen-~~~~~~~~")
    base = _item(backend, org, "CreateAward", request, "badges.v1.AwardService")
    result = await _run_unique(backend, base)
    awards = org.reader.stub(award_pb2_grpc.AwardServiceStub)
    members: list[str] = []
    token = ""
    while True:
        page = await awards.ListAwards(
            award_pb2.ListAwardsRequest(badge_id=badge.id, page_size=500, page_token=token)
        )
        members += [a.recipient.member_id for a in page.awards]
        token = page.next_page_token
        if not token:
            break
    # Every acknowledged award is stored, each to its own member (the counter's values).
    assert page.total_size == result["ok_total"]
    assert sorted(members) == [f"gen-{i:08d}" for i in range(result["ok_total"])]


def test_flood_keys_are_fresh_and_of_both_shapes() -> None:
    work = flood.RandomKeys("/badges.v1.BadgeService/GetBadge", "h:1", b"body")
    blocks = [work.next_item()[0] for _ in range(4)]
    assert len(set(blocks)) == 4
    # The id-bearing shape with ids far above any key's, then the older shape, in turn.
    assert b"Bearer bsk_1000000000000000_" in blocks[0]
    assert b"Bearer bsk_1000000000000001_" in blocks[2]
    assert b"Bearer bsk_" in blocks[1] and b"Bearer bsk_1000" not in blocks[1]
    assert all(b"S" * 43 not in b for b in blocks)


async def test_flood_is_refused_and_paced(backend: Backend, org: Org) -> None:
    badge = await org.admin.badges.CreateBadge(pb.CreateBadgeRequest(badge=sample_badge("f1")))
    body = frames.grpc_message(pb.GetBadgeRequest(id=badge.id))
    before = dict(backend.running.interceptor.statuses)
    result = await flood.run(
        "127.0.0.1",
        backend.port,
        "/badges.v1.BadgeService/GetBadge",
        body,
        rate=200.0,
        streams=8,
        duration=0.5,
    )
    statuses = backend.running.interceptor.statuses
    refused = statuses.get("UNAUTHENTICATED", 0) - before.get("UNAUTHENTICATED", 0)
    assert result["ok"] == 0  # no random key was served
    # Every call sent was refused as UNAUTHENTICATED (the window counts those that answered
    # in it), and the pacing sent no more than the rate allows.
    assert refused == result["sent"]
    assert 0 < result["refused"] <= result["sent"] <= 200 * 0.5 + 1
