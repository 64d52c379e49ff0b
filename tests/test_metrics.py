"""``serve --metrics-address``: a real server scraped over HTTP after real calls (OK,
NOT_FOUND, a refused award, a stream), with the names and labels of go-grpc-prometheus; the
sum over ``--workers 2``; and bad addresses, each refused with one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from badge_service import metrics
from badge_service.api.badges.v1 import award_pb2, award_pb2_grpc, badge_pb2
from badge_service.api.badges.v1 import badge_pb2_grpc as badge_grpc
from badge_service.store.db import Database
from tests.support import Backend, expect_error
from tests.test_serve import BIN, ServeProcess, json_lines, serving, sqlite_url

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]
BADGES = "badges.v1.BadgeService"
AWARDS = "badges.v1.AwardService"
WAIT = 60.0


def scrape(port: int) -> Samples:
    """Every sample of the endpoint, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def rpc(method: str, service: str = BADGES, kind: str = "unary", **extra: str) -> Labels:
    return frozenset(
        {"grpc_service": service, "grpc_method": method, "grpc_type": kind, **extra}.items()
    )


def handled(
    samples: Samples, method: str, service: str = BADGES, kind: str = "unary"
) -> dict[str, float]:
    """A method's non-zero ``grpc_server_handled_total`` by code."""
    out = {}
    for (name, labels), value in samples.items():
        got = dict(labels)
        if name == "grpc_server_handled_total" and value and got["grpc_method"] == method:
            assert (got["grpc_service"], got["grpc_type"]) == (service, kind)
            out[got["grpc_code"]] = value
    return out


async def wait_for(port: int, ok: Callable[[Samples], bool]) -> Samples:
    """Scrapes until ``ok`` holds (calls are counted as they end, after the client's reply)."""
    deadline = time.monotonic() + WAIT
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if ok(samples):
            return samples
        assert time.monotonic() < deadline, "the metrics never reached the expected values"
        await asyncio.sleep(0.05)


async def metrics_port(srv: ServeProcess) -> int:
    """The port of the "metrics listening" log line, waiting for it: the process may still be
    writing its start-up lines when its gRPC port answers."""
    deadline = time.monotonic() + WAIT
    while True:
        stderr = srv.stderr()
        for record in json_lines(stderr):
            if record.get("msg") == "metrics listening":
                return int(record["port"])
        if time.monotonic() > deadline:
            raise AssertionError(f"no metrics listening line:\n{stderr}")
        await asyncio.sleep(0.05)


def capped_badge(name: str) -> badge_pb2.Badge:
    return badge_pb2.Badge(
        name=name,
        title="Capped",
        badge_states=[badge_pb2.BadgeState(state=badge_pb2.BADGE_STATE_TYPE_EARNED, order=1)],
        frequency=badge_pb2.Frequency(
            freq_cap=1, freq_period=badge_pb2.FREQUENCY_PERIOD_WEEK, freq_max=5
        ),
    )


async def test_calls_streams_and_store_are_counted(tmp_path: Path) -> None:
    async with serving(tmp_path, sqlite_url(tmp_path), "--metrics-address", "127.0.0.1:0") as srv:
        port = await metrics_port(srv)
        client = srv.client(srv.new_org()["api_key"])
        awards = client.stub(award_pb2_grpc.AwardServiceStub)

        before = scrape(port)
        # Every method's series exist from the start, at 0 (as go-grpc-prometheus does).
        assert before[("grpc_server_started_total", rpc("GetBadge"))] == 0
        assert before[("grpc_server_handled_total", rpc("GetBadge", grpc_code="NotFound"))] == 0
        assert before[("badge_service_watch_streams", frozenset())] == 0

        badge = await client.badges.CreateBadge(
            badge_pb2.CreateBadgeRequest(badge=capped_badge("capped"))
        )
        await client.badges.GetBadge(badge_pb2.GetBadgeRequest(id=badge.id))
        await expect_error(
            client.badges.GetBadge(badge_pb2.GetBadgeRequest(id=badge.id + 1000)),
            grpc.StatusCode.NOT_FOUND,
        )
        watch = awards.WatchAwards(award_pb2.WatchAwardsRequest())
        await watch.initial_metadata()
        await wait_for(port, lambda m: m[("badge_service_watch_streams", frozenset())] == 1)
        award = award_pb2.CreateAwardRequest(
            award=award_pb2.Award(badge_id=badge.id, recipient=award_pb2.Recipient(member_id="m"))
        )
        await awards.CreateAward(award)
        await expect_error(
            awards.CreateAward(award),
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="FREQUENCY_CAP_REACHED",
        )
        # The award's events: the recipient's PROGRESS to earned, then AWARDED.
        events = [await watch.read(), await watch.read()]
        assert [e.type for e in events] == [
            award_pb2.AWARD_EVENT_TYPE_PROGRESS,
            award_pb2.AWARD_EVENT_TYPE_AWARDED,
        ]
        watch.cancel()
        watch_rpc = rpc("WatchAwards", AWARDS, "server_stream")
        after = await wait_for(
            port,
            lambda m: (
                m[("grpc_server_handled_total", watch_rpc | {("grpc_code", "Canceled")})] == 1
            ),
        )

    assert after[("grpc_server_started_total", rpc("CreateBadge"))] == 1
    assert handled(after, "CreateBadge") == {"OK": 1}
    assert after[("grpc_server_started_total", rpc("GetBadge"))] == 2
    assert handled(after, "GetBadge") == {"OK": 1, "NotFound": 1}
    assert after[("grpc_server_handling_seconds_count", rpc("GetBadge"))] == 2
    assert after[("grpc_server_handling_seconds_bucket", rpc("GetBadge", le="+Inf"))] == 2
    assert after[("grpc_server_handling_seconds_sum", rpc("GetBadge"))] > 0
    assert after[("grpc_server_started_total", rpc("CreateAward", AWARDS))] == 2
    assert handled(after, "CreateAward", AWARDS) == {"OK": 1, "FailedPrecondition": 1}
    # The stream: its one request received, its two events sent, ended by the client.
    assert after[("grpc_server_started_total", watch_rpc)] == 1
    assert after[("grpc_server_msg_received_total", watch_rpc)] == 1
    assert after[("grpc_server_msg_sent_total", watch_rpc)] == 2
    assert handled(after, "WatchAwards", AWARDS, "server_stream") == {"Canceled": 1}
    assert after[("grpc_server_handling_seconds_count", watch_rpc)] == 1
    assert after[("badge_service_watch_streams", frozenset())] == 0
    # Message counts are for streams only; a unary method has no such series.
    assert ("grpc_server_msg_sent_total", rpc("GetBadge")) not in after

    def issued(kind: str) -> float:
        return after[("badge_service_awards_issued_total", frozenset({("kind", kind)}))]

    assert (issued("badge"), issued("template"), issued("class")) == (1, 0, 0)
    refusals = "badge_service_award_cap_refusals_total"
    assert after[(refusals, frozenset({("reason", "FREQUENCY_CAP_REACHED")}))] == 1
    assert after[(refusals, frozenset({("reason", "FREQUENCY_MAX_REACHED")}))] == 0

    # The store: GetBadge reads with fetch, the writes group-commit. Background work (health
    # probes, key refresh, last-use writes) adds calls too, so these compare the window's
    # deltas: every run_write on SQLite is one write of exactly one group commit.
    def delta(name: str, labels: Labels = frozenset()) -> float:
        return after[(name, labels)] - before[(name, labels)]

    fetch = frozenset({("operation", "fetch")})
    write = frozenset({("operation", "run_write")})
    assert delta("badge_service_db_seconds_count", fetch) >= 2
    written = delta("badge_service_db_seconds_count", write)
    assert written >= 3  # CreateBadge, and both CreateAward calls (the refused one rolled back)
    assert delta("badge_service_group_commit_writes_sum") == written
    assert 1 <= delta("badge_service_group_commit_writes_count") <= written


class Workers:
    """``serve --workers 2 --metrics-address``, its log, and its metrics port."""

    def __init__(self, tmp: Path) -> None:
        url = sqlite_url(tmp)
        out = subprocess.run(
            [str(BIN), "--database-url", url, "orgs", "create", "W", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = json.loads(out.stdout)["api_key"]
        self.log = tmp / "workers.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN), "serve", "--workers", "2", "--address", "127.0.0.1:0"),
                    *("--metrics-address", "127.0.0.1:0"),
                ],
                env={**os.environ, "BADGE_SERVICE_DATABASE_URL": url},
                stderr=sink,
            )
        deadline = time.monotonic() + WAIT
        while True:
            records = [json.loads(x) for x in self.log.read_text().splitlines() if x[:1] == "{"]
            started = [r for r in records if r.get("msg") == "workers started"]
            listening = [r for r in records if r.get("msg") == "listening"]
            if started and len(listening) == 2:
                break
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.port = int(started[0]["address"].rsplit(":", 1)[1])
        (metrics,) = [r for r in records if r.get("msg") == "metrics listening"]
        self.metrics_port = int(metrics["port"])
        self.directory = Path(metrics["multiprocess_dir"])

    def call(self) -> str:
        """One ListBadges on a new connection; the request id prefix of the worker that
        answered (each process makes ids with a random prefix of its own)."""
        with grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            _, call = badge_grpc.BadgeServiceStub(channel).ListBadges.with_call(
                badge_pb2.ListBadgesRequest(page_size=1),
                metadata=[("authorization", f"Bearer {self.key}")],
                timeout=30,
            )
        (rid,) = [v for k, v in call.trailing_metadata() if k == "x-request-id"]
        return str(rid).rsplit("-", 1)[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def test_workers_serve_the_sum_of_their_counts(tmp_path: Path) -> None:
    workers = Workers(tmp_path)
    try:
        assert workers.directory.is_dir()
        # New connections until both workers have answered some (the kernel spreads them).
        served: dict[str, int] = {}
        while len(served) < 2:
            assert sum(served.values()) < 200, "every connection went to one worker"
            prefix = workers.call()
            served[prefix] = served.get(prefix, 0) + 1
        calls = sum(served.values())
        samples = scrape(workers.metrics_port)
        assert samples[("grpc_server_started_total", rpc("ListBadges"))] == calls
        assert handled(samples, "ListBadges") == {"OK": calls}
        assert samples[("grpc_server_handling_seconds_count", rpc("ListBadges"))] == calls
        assert samples[("badge_service_watch_streams", frozenset())] == 0
    finally:
        code = workers.stop()
    assert code == 0, workers.log.read_text()
    assert not workers.directory.exists()  # removed at exit


def _refused(tmp: Path, *args: str) -> str:
    """Runs ``serve`` with ``args``, which must fail; returns its stderr's last line."""
    done = subprocess.run(
        [str(BIN), "serve", "--address", "127.0.0.1:0", *args],
        env={**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp)},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("address", "line"),
    [
        ("nonsense", "error: --metrics-address: expected HOST:PORT (e.g. 127.0.0.1:9464), "
         "got 'nonsense'"),
        ("127.0.0.1:70000", "error: --metrics-address: expected HOST:PORT (e.g. "
         "127.0.0.1:9464), got '127.0.0.1:70000'"),
        ("no-such-host.invalid:9464", "error: cannot serve metrics on "
         "no-such-host.invalid:9464: unknown host 'no-such-host.invalid'"),
    ],
)  # fmt: skip
def test_a_malformed_metrics_address_is_one_line(tmp_path: Path, address: str, line: str) -> None:
    assert _refused(tmp_path, "--metrics-address", address) == line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_metrics_port_is_one_line(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        last = _refused(tmp_path, "--workers", workers, "--metrics-address", f"127.0.0.1:{port}")
    assert last == f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"


async def test_off_by_default_nothing_measures(backend: Backend) -> None:
    # Without --metrics-address or OTEL_* the server has neither: the interceptor's wrappers
    # count nothing, the store is a plain Database, and no tracing interceptor runs.
    running = backend.running
    assert metrics.active() is None
    assert running.metrics_endpoint is None and running.tracing is None
    assert type(running.db) is Database
    assert running.interceptor._meter is None


def test_tallies_expose_what_direct_children_would() -> None:
    """The buffered per-call series (see metrics.Tally) expose, after a flush, exactly what
    prometheus-client's own children show for the same increments and observations: bucket
    edges inclusive, +Inf, sum and count; and a second flush adds only what is new."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.parser import text_string_to_metric_families as parse

    bounds = metrics.HANDLING_BUCKETS
    values = [0.0, 0.0005, 0.0004999, 0.00051, 0.01, 0.3, 10.0, 10.5, 99.0, 0.0025]

    def exposed(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        from prometheus_client import generate_latest

        text = generate_latest(registry).decode()
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in parse(text)
            for s in family.samples
            if not s.name.endswith("_created")
        }

    direct, buffered = CollectorRegistry(), CollectorRegistry()
    d_hist = Histogram("h", "h", buckets=bounds, registry=direct)
    d_count = Counter("c", "c", registry=direct)
    b_hist = metrics.TallyHistogram(Histogram("h", "h", buckets=bounds, registry=buffered), bounds)
    b_count = metrics.Tally(Counter("c", "c", registry=buffered))
    for rounds in (values, values[:3]):
        for v in rounds:
            d_hist.observe(v)
            b_hist.observe(v)
            d_count.inc()
            b_count.inc()
        b_hist.flush()
        b_count.flush()
        assert exposed(buffered) == exposed(direct)
    assert exposed(buffered)[("h_count", "")] == 13
    assert exposed(buffered)[("h_bucket", "0.0005")] == 6  # 0.0, 0.0005, 0.0004999, twice


def test_an_award_write_run_again_counts_its_last_run_only() -> None:
    """A PostgreSQL group commit runs a write again when its batch lost a deadlock (every
    write of the batch, rolled back together): the awards metrics take what the committed run
    refused or created, not the sum of the runs."""
    from badge_service.domain.errors import FailedPrecondition
    from badge_service.service.awards import _Tally

    def capped(reason: str) -> FailedPrecondition:
        return FailedPrecondition("the recipient already has it", reason=reason)

    tally = _Tally()
    tally.add([capped("FREQUENCY_MAX_REACHED"), capped("FREQUENCY_CAP_REACHED")])
    tally.add([capped("FREQUENCY_MAX_REACHED"), capped("NOT_A_CAP")])  # the run committed
    assert (tally.issued, tally.refused) == ({}, {"FREQUENCY_MAX_REACHED": 1})
