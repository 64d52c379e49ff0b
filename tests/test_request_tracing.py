"""Every call has a request id: the caller's ``x-request-id`` when it sends a sane one, else a
generated one; it comes back in the reply's trailers (on success and on failure), in its
initial metadata too when the caller sent it, and is on every log line of the call.
``--log-format text`` writes readable lines instead of JSON."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import grpc

from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc, badge_pb2, org_meta_pb2
from tests.support import Org
from tests.test_serve import GRACE, json_lines, serving, sqlite_url


def trailer(err: grpc.aio.AioRpcError, name: str = "x-request-id") -> str:
    """One trailing metadata value of a failed call."""
    found = [v for k, v in (err.trailing_metadata() or ()) if k == name]
    assert len(found) == 1, err.trailing_metadata()
    return str(found[0])


async def call_trailer(call: grpc.aio.UnaryUnaryCall, name: str = "x-request-id") -> str:
    """One trailing metadata value of a finished successful call."""
    found = [v for k, v in (await call.trailing_metadata() or ()) if k == name]
    assert len(found) == 1, found
    return str(found[0])


async def test_the_callers_request_id_comes_back(org: Org) -> None:
    call = org.reader.meta.GetOrgMeta(
        org_meta_pb2.GetOrgMetaRequest(), metadata=[("x-request-id", "trace-42.a:b")]
    )
    assert ("x-request-id", "trace-42.a:b") in tuple(await call.initial_metadata())
    await call
    assert await call_trailer(call) == "trace-42.a:b"
    failing = org.reader.badges.GetBadge(
        badge_pb2.GetBadgeRequest(id=10**9), metadata=[("x-request-id", "trace-43")]
    )
    try:
        await failing
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert trailer(err) == "trace-43"
        assert ("x-request-id", "trace-43") in tuple(err.initial_metadata() or ())
        # The rich status details are still there beside it.
        assert any(k == "grpc-status-details-bin" for k, _ in err.trailing_metadata() or ())
    else:
        raise AssertionError("a missing badge was found")


async def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(org: Org) -> None:
    seen = set()
    # (gRPC clients refuse to send a value with control characters at all.)
    for sent in (None, "", "x" * 129, "has space"):
        metadata = [] if sent is None else [("x-request-id", sent)]
        call = org.reader.meta.GetOrgMeta(org_meta_pb2.GetOrgMetaRequest(), metadata=metadata)
        await call
        # A made one is in the trailers only (see ServiceInterceptor._admit_known).
        assert all(k != "x-request-id" for k, _ in await call.initial_metadata())
        got = await call_trailer(call)
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", got), got
        seen.add(got)
    assert len(seen) == 4


async def test_every_line_of_a_call_carries_its_request_id(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        org = server.new_org()
        client = server.client(org["api_key"])
        await client.meta.GetOrgMeta(
            org_meta_pb2.GetOrgMetaRequest(), metadata=[("x-request-id", "abc-1")]
        )
        bad = server.client("bsk_1_" + "A" * 43)
        try:
            await bad.meta.GetOrgMeta(
                org_meta_pb2.GetOrgMetaRequest(), metadata=[("x-request-id", "abc-2")]
            )
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert trailer(err) == "abc-2"
            assert ("x-request-id", "abc-2") in tuple(err.initial_metadata() or ())
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, GRACE + 10)
        assert code == 0
    calls = [x for x in json_lines(server.stderr()) if x.get("msg") == "rpc"]
    assert [(c["status"], c["request_id"]) for c in calls] == [
        ("OK", "abc-1"),
        ("UNAUTHENTICATED", "abc-2"),
    ]


async def test_text_log_format(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path), "--log-format", "text") as server:
        org = server.new_org()
        await server.client(org["api_key"]).meta.GetOrgMeta(
            org_meta_pb2.GetOrgMetaRequest(), metadata=[("x-request-id", "abc-9")]
        )
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, GRACE + 10)
        assert code == 0
    lines = server.stderr().splitlines()
    access = [line for line in lines if "badge_service.access: rpc" in line]
    assert len(access) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    badge_service\.access: rpc "
        r"/badges\.v1\.OrgMetaService/GetOrgMeta OK [0-9.]+ms org=\d+ key=\d+ "
        r"peer=ipv4:127\.0\.0\.1:\d+ request_id=abc-9",
        access[0],
    ), access[0]
    assert any(
        re.match(r"\S+ INFO    badge_service\.server: listening address=127\.0\.0\.1:\d+", line)
        for line in lines
    ), lines
    assert not [line for line in lines if line.startswith("{")]


async def test_a_watch_stream_names_its_request_id_in_its_initial_metadata(org: Org) -> None:
    awards = org.reader.stub(award_pb2_grpc.AwardServiceStub)
    for sent in ("watch-7", None):
        metadata = [] if sent is None else [("x-request-id", sent)]
        call = awards.WatchAwards(award_pb2.WatchAwardsRequest(), metadata=metadata)
        initial = dict(await call.initial_metadata())
        call.cancel()
        if sent is not None:
            assert initial["x-request-id"] == sent
        else:
            assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", initial["x-request-id"])
        assert "x-watch-after-sequence" in initial
