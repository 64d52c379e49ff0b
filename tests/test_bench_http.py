"""The benchmark's HTTP rows (bench/run.py, bench/http_baseline.py and bench/serve_bench.py
with --http-address): the h2load --h1 command and how its summary is read, the bare app's
answers and the CrowdTwist probe's two outcomes, and, against a real service process on each
database, the hosted-assertion check and the HTTP counts a load run is judged by. No timing
is asserted, and h2load itself is not needed (CI installs it only for make bench-smoke)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from badge_service.api.badges.v1 import (
    award_pb2_grpc,
    badge_class_pb2,
    badge_class_pb2_grpc,
    issuer_pb2,
    issuer_pb2_grpc,
)
from badge_service.http.server import HttpServer, bind
from bench import http_baseline, run, seed
from tests.support import Backend, Org

# h2load --h1's summary of a run with answers of every class (10 done: 6 2xx, 1 3xx, 2 4xx,
# 1 5xx) and one request timed out.
H2LOAD_SUMMARY = """\
finished in 1.00s, 10.00 req/s, 8.00KB/s
requests: 11 total, 12 started, 10 done, 7 succeeded, 3 failed, 0 errored, 1 timeout
status codes: 6 2xx, 1 3xx, 2 4xx, 1 5xx
"""
# Its --log-file: start time, status, microseconds until the end of the answer.
H2LOAD_LOG = "".join(f"{i}\t200\t{(i + 1) * 1000}\n" for i in range(10))


def test_http_argv_is_http_1_1_with_one_request_per_connection(tmp_path: Path) -> None:
    loader = run.Loader("/usr/bin/h2load", run.SMOKE, tmp_path)
    assert loader.http_argv("/public/assertions/ab", 8080, 8, 1.0) == [
        "/usr/bin/h2load",
        "--h1",
        "-c",
        "8",
        "-m",
        "1",
        "-t",
        "1",
        "-D",
        "1000ms",
        "--warm-up-time",
        "300ms",
        "-H",
        "accept: application/ld+json",
        "http://127.0.0.1:8080/public/assertions/ab",
    ]
    # The load beside gRPC runs from its start: no warm-up.
    beside = loader.http_argv("/p?q=1", 1, 4, 3.3, warmup=False)
    assert beside[beside.index("-D") + 1] == "3300ms"
    assert "--warm-up-time" not in beside
    assert beside[-1] == "http://127.0.0.1:1/p?q=1"


def test_h2load_http_summary_counts_every_answer_but_a_2xx_as_failed() -> None:
    # 3 failed (2 4xx, 1 5xx) + 1 timeout + 1 3xx.
    assert run.http_failures(H2LOAD_SUMMARY) == 5
    result = run.parse_h2load_http(H2LOAD_SUMMARY, H2LOAD_LOG, 1.0)
    assert (result.rps, result.failed, result.requests) == (10.0, 5, 10)
    # Nearest-rank percentiles of the log's 1..10 ms.
    assert [result.p50_ms, result.p99_ms] == pytest.approx([6.0, 10.0])
    clean = H2LOAD_SUMMARY.replace("7 succeeded, 3 failed", "10 succeeded, 0 failed")
    clean = clean.replace("1 timeout", "0 timeout").replace(
        "6 2xx, 1 3xx, 2 4xx, 1 5xx", "10 2xx, 0 3xx, 0 4xx, 0 5xx"
    )
    assert run.parse_h2load_http(clean, H2LOAD_LOG, 1.0).failed == 0
    with pytest.raises(RuntimeError, match="cannot read h2load's summary"):
        run.http_failures("requests: 1 total, 1 started, 1 done, 1 succeeded, 0 failed")


REPLIES = {
    "/public/assertions/abc": {
        "status": 200,
        "media_type": "application/ld+json",
        "body": base64.b64encode(b'{"type":"Assertion"}').decode(),
    }
}


async def test_bare_app_answers_each_recorded_body_and_counts_requests() -> None:
    before = http_baseline.Calls.count
    transport = httpx.ASGITransport(app=http_baseline.app(REPLIES))
    async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
        got = await client.get("/public/assertions/abc")
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/ld+json"
        assert got.content == b'{"type":"Assertion"}'
        assert (await client.get("/public/assertions/other")).status_code == 404
    assert http_baseline.Calls.count == before + 1
    assert http_baseline.protocol() in ("H11Protocol", "HttpToolsProtocol")


@asynccontextmanager
async def serving(replies: dict[str, Any]) -> AsyncIterator[int]:
    """The bare app on a real socket, answering ``replies``; its port."""
    server = HttpServer(http_baseline.app(replies), bind("127.0.0.1:0", reuse_port=False))
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop(0.0)


async def test_crowdtwist_probe_measures_a_served_page_and_skips_a_404() -> None:
    page = {"paging": {"total": 30, "pages": 2}, "badges": [{"id": i} for i in range(25)]}
    listed = {
        "/v2.1/badges": {
            "status": 200,
            "media_type": "application/json",
            "body": base64.b64encode(json.dumps(page).encode()).decode(),
        }
    }
    # The probe is a blocking client: off the loop that serves the app.
    async with serving(listed) as port:
        served = await asyncio.to_thread(run.check_crowdtwist_list, port, "k")
    assert served == ("application/json", json.dumps(page).encode())
    assert run.crowdtwist_path("k") == "/v2.1/badges?page_size=25&api_key=k"
    # Until the CrowdTwist route is served the face answers 404: the row is skipped, not failed.
    async with serving(REPLIES) as port:
        skipped = await asyncio.to_thread(run.check_crowdtwist_list, port, "k")
    assert skipped == "n/a: route not served (first probe answered 404)"


async def _hosted_award(org: Org) -> str:
    """An issuer, a badge class and an award of it (the benchmark's seeds); the award's id."""
    issuer = await org.admin.stub(issuer_pb2_grpc.IssuerServiceStub).CreateIssuer(
        issuer_pb2.CreateIssuerRequest(issuer=seed.hosted_issuer())
    )
    bc = await org.admin.stub(badge_class_pb2_grpc.BadgeClassServiceStub).CreateBadgeClass(
        badge_class_pb2.CreateBadgeClassRequest(badge_class=seed.hosted_class(issuer.entity_id))
    )
    award = await org.admin.stub(award_pb2_grpc.AwardServiceStub).CreateAward(
        seed.hosted_award(bc.entity_id)
    )
    return str(award.id)


async def test_service_process_serves_the_hosted_assertion_and_counts_http_answers(
    backend: Backend, org: Org, tmp_path: Path
) -> None:
    award_id = await _hosted_award(org)
    # The harness's own service process (bench/serve_bench.py --http-address) on this database.
    service = await asyncio.to_thread(
        run.ServiceServer,
        "service",
        [
            sys.executable,
            "-m",
            "bench.serve_bench",
            "--database-url",
            backend.url,
            "--http-address",
            "127.0.0.1:0",
        ],
        tmp_path / "service.log",
    )
    try:
        face = run.HttpFace(service)
        assert face.port != service.port
        assert face.counts().calls == 0
        media_type, body = await asyncio.to_thread(run.check_hosted_assertion, face.port, award_id)
        assert media_type == "application/ld+json"
        doc = json.loads(body)
        assert doc["id"] == f"http://127.0.0.1:{face.port}/public/assertions/{award_id}"
        status, _, _ = await asyncio.to_thread(run.http_get, face.port, "/public/assertions/ffff")
        assert status == 404
        counts = face.counts()
        assert (counts.calls, counts.failed, counts.cancelled) == (2, 1, 0)
        assert counts.statuses == {"200": 1, "404": 1}
        # gRPC's own counts are apart from them.
        assert service.counts().calls == 0
    finally:
        await asyncio.to_thread(service.stop)
