"""OpenTelemetry traces: one server span per call with the database spans under it (in-memory
exporter, both databases), a caller's trace continued, a stream traced to its end, and the
OTEL_* environment read by a real ``serve`` (console exporter; a missing exporter is one
line)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc, badge_pb2
from badge_service.config import Settings
from badge_service.server import start
from badge_service.tracing import configured, exporter_names
from tests.support import Backend, create_pg_database, drop_pg_database, expect_error, pg_url
from tests.test_serve import BIN, START_TIMEOUT, ServeProcess, free_port, sqlite_url


class Traced:
    """A server whose spans go to an in-memory exporter."""

    def __init__(self, backend: Backend, exporter: InMemorySpanExporter) -> None:
        self.backend = backend
        self.exporter = exporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    async def wait(self, done: Callable[[], bool]) -> None:
        """Until ``done()``: a span ends when its call ends on the server, a little after
        the client has its reply."""
        async with asyncio.timeout(60):
            while True:
                if done():
                    return
                await asyncio.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgres"])
async def traced(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Traced]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        base = pg_url()
        if base is None:
            pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
        url = await create_pg_database(base)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(address="127.0.0.1:0", database_url=url, log_level="WARNING")
    running = await start(settings, tracer_provider=provider)
    backend = Backend(request.param, url, running, [])
    try:
        yield Traced(backend, exporter)
    finally:
        for c in backend.clients:
            await c.channel.close()
        await running.stop(grace=1)
        provider.shutdown()
        if request.param == "postgres":
            await drop_pg_database(url)


def _capped(name: str) -> badge_pb2.Badge:
    return badge_pb2.Badge(
        name=name,
        title="Traced",
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
    )


async def test_one_server_span_per_call_with_database_spans_under_it(traced: Traced) -> None:
    org = await traced.backend.new_org()
    badges = org.admin.badges
    awards = org.admin.stub(award_pb2_grpc.AwardServiceStub)
    # The key's first use looks it up, and org creation wrote: neither belongs to a call here.
    await badges.ListBadges(badge_pb2.ListBadgesRequest(page_size=1))
    await asyncio.sleep(0)
    traced.exporter.clear()

    badge = await badges.CreateBadge(badge_pb2.CreateBadgeRequest(badge=_capped("traced")))
    await badges.GetBadge(badge_pb2.GetBadgeRequest(id=badge.id))
    await expect_error(
        badges.GetBadge(badge_pb2.GetBadgeRequest(id=badge.id + 1000)), grpc.StatusCode.NOT_FOUND
    )
    watch = awards.WatchAwards(award_pb2.WatchAwardsRequest())
    await watch.initial_metadata()
    await awards.CreateAward(
        award_pb2.CreateAwardRequest(
            award=award_pb2.Award(badge_id=badge.id, recipient=award_pb2.Recipient(member_id="t"))
        )
    )
    assert (await watch.read()).type == award_pb2.AWARD_EVENT_TYPE_PROGRESS
    watch.cancel()

    def server_spans() -> list[ReadableSpan]:
        return [s for s in traced.spans() if s.kind is SpanKind.SERVER]

    # Spans end as their calls end on the server, a little after the client's reply.
    await traced.wait(lambda: len(server_spans()) == 5)
    servers = server_spans()
    assert sorted(s.name for s in servers) == sorted(
        [
            "/badges.v1.BadgeService/CreateBadge",
            "/badges.v1.BadgeService/GetBadge",
            "/badges.v1.BadgeService/GetBadge",
            "/badges.v1.AwardService/CreateAward",
            "/badges.v1.AwardService/WatchAwards",
        ]
    )
    codes = {s.name: [] for s in servers}  # type: dict[str, list[Any]]
    for s in servers:
        assert s.parent is None  # the client sent no trace context
        assert s.attributes is not None
        codes[s.name].append(s.attributes["rpc.grpc.status_code"])
    assert sorted(codes["/badges.v1.BadgeService/GetBadge"]) == [0, 5]  # OK, NOT_FOUND
    assert codes["/badges.v1.AwardService/CreateAward"] == [0]
    assert codes["/badges.v1.AwardService/WatchAwards"] == [1]  # CANCELLED by the client

    by_id = {s.context.span_id: s for s in traced.spans()}
    database = [s for s in traced.spans() if s.name.startswith("Database.")]
    for span in traced.spans():
        if span.kind is SpanKind.SERVER:
            continue
        # Nothing else starts a trace: every other span hangs under a call's server span.
        assert span.parent is not None, span.name
        parent = by_id[span.parent.span_id]
        assert parent.context.trace_id == span.context.trace_id
        if span.name.startswith("Database."):
            assert parent.kind is SpanKind.SERVER, (span.name, parent.name)
        else:  # a statement span of the SQLAlchemy instrumentation
            assert parent.name.startswith("Database."), (span.name, parent.name)

    def database_under(name: str) -> list[str]:
        calls = [s for s in servers if s.name == name]
        ids = {s.context.span_id for s in calls}
        return sorted(d.name for d in database if d.parent and d.parent.span_id in ids)

    assert database_under("/badges.v1.BadgeService/GetBadge") == ["Database.fetch"] * 2
    assert database_under("/badges.v1.BadgeService/CreateBadge") == ["Database.run_write"]
    assert database_under("/badges.v1.AwardService/CreateAward") == ["Database.run_write"]
    # The stream itself reads the org's current sequence; the events come from the process's
    # watch hub, whose reads are no call's (its task must not inherit the first stream's span).
    (watch_span,) = [s for s in servers if s.name.endswith("/WatchAwards")]
    watch_reads = [
        d for d in database if d.parent and d.parent.span_id == watch_span.context.span_id
    ]
    assert [d.name for d in watch_reads] == ["Database.run_read"]
    assert watch_reads[0].attributes is not None
    assert str(watch_reads[0].attributes["code.function.name"]).endswith("last_sequence")
    (created,) = [d for d in database if d.name == "Database.run_write" and d.parent in (
        s.context for s in servers if s.name.endswith("/CreateAward")
    )]  # fmt: skip
    assert created.attributes is not None
    assert str(created.attributes["code.function.name"]).endswith("_create_one")
    assert created.attributes["db.system.name"] == traced.backend.name.replace(
        "postgres", "postgresql"
    )


async def test_a_callers_trace_is_continued(traced: Traced) -> None:
    org = await traced.backend.new_org()
    await org.admin.badges.ListBadges(badge_pb2.ListBadgesRequest(page_size=1))
    traced.exporter.clear()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await org.admin.badges.ListBadges(
        badge_pb2.ListBadgesRequest(page_size=1),
        metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
    )
    await traced.wait(lambda: any(s.kind is SpanKind.SERVER for s in traced.spans()))
    (server,) = [s for s in traced.spans() if s.kind is SpanKind.SERVER]
    assert server.context.trace_id == int(trace_id, 16)
    assert server.parent is not None and server.parent.span_id == int(parent_id, 16)
    assert server.parent.is_remote


@pytest.mark.parametrize(
    ("environ", "on", "names"),
    [
        ({}, False, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, False, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False,
         []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True, ["otlp_proto_grpc"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces",
          "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, True, ["otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True, ["console", "otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False, []),
    ],
)  # fmt: skip
def test_the_otel_environment_turns_traces_on(
    environ: dict[str, str], on: bool, names: list[str]
) -> None:
    assert configured(environ) is on
    if on:
        assert exporter_names(environ) == names


def _spans_on_stdout(text: str) -> list[dict[str, Any]]:
    """The console exporter's spans: JSON objects one after another."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def _serve_to(stdout: Path, stderr: Path, env: dict[str, str]) -> ServeProcess:
    """``serve`` with its stdout (where the console exporter writes) in a file."""
    port = free_port()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--address", f"127.0.0.1:{port}"], env=env, stdout=out, stderr=err
        )
    return ServeProcess(proc, port, env, stderr)


async def test_serve_reads_the_otel_environment(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    env = {
        **os.environ,
        "BADGE_SERVICE_DATABASE_URL": url,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "badges-under-test",
    }
    server = _serve_to(tmp_path / "spans.json", tmp_path / "serve.err", env)
    try:
        await server.wait_serving()
        client = server.client(server.new_org()["api_key"])
        await client.badges.ListBadges(badge_pb2.ListBadgesRequest(page_size=1))
        code, _ = await asyncio.to_thread(server.signal_and_wait, signal.SIGTERM, START_TIMEOUT)
        assert code == 0
    finally:
        await server.close()
    spans = _spans_on_stdout((tmp_path / "spans.json").read_text())
    (call,) = [s for s in spans if s["name"] == "/badges.v1.BadgeService/ListBadges"]
    assert call["kind"] == "SpanKind.SERVER"
    assert call["resource"]["attributes"]["service.name"] == "badges-under-test"
    under = [s for s in spans if s["parent_id"] == call["context"]["span_id"]]
    assert "Database.fetch" in {s["name"] for s in under}
    assert all(s["context"]["trace_id"] == call["context"]["trace_id"] for s in under)


def test_a_missing_exporter_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN), "serve", "--address", "127.0.0.1:0"],
        env={
            **os.environ,
            "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp_path),
            "OTEL_TRACES_EXPORTER": "nosuch",
        },
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: OTEL_TRACES_EXPORTER: no trace exporter 'nosuch' is installed (otlp needs "
        "opentelemetry-exporter-otlp-proto-grpc, or -http for http/protobuf)"
    )
