"""The benchmark: ``make bench`` (full) and ``make bench-smoke`` (seconds, run by CI).

One run seeds a database, starts the baseline (``bench.baseline``) and the service
(``bench.serve_bench``), checks every scenario (BadgeService and AwardService calls) once
through a real Python stub on both, then drives both with the same load generator and settings,
alternating, for several rounds. It adds the server CPU per call beside the other database's
latest report, the scale rows (10k vs 1M badges, first vs deep page), the 1- vs 2-worker rows
(``badge-service serve --workers N``), on PostgreSQL the scale-out rows (1 process, 2, and two
"hosts" of 2 on 127.0.0.2 and 127.0.0.3), the server's memory,
the idle-watchers rows (GetBadge with and without thousands of idle WatchAwards streams, and
how long one event takes to reach them all), the HTTP face's rows (a hosted assertion and a
CrowdTwist list against a bare Starlette app on uvicorn, and gRPC GetBadge beside HTTP load),
and writes a Markdown report to
``bench/results/latest.md`` (PostgreSQL: ``latest-pg.md``; smoke: ``smoke.md``/``smoke-pg.md``).
See bench/README.md.

The exit status is 1 when any call failed (a stub check, or a non-OK status during a load run),
whatever the targets say: a benchmark of failing calls measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf.message import Message
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from badge_service.api.badges.v1 import award_pb2 as award_pb
from badge_service.api.badges.v1 import award_pb2_grpc as award_pb_grpc
from badge_service.api.badges.v1 import badge_class_pb2 as class_pb
from badge_service.api.badges.v1 import badge_class_pb2_grpc as class_pb_grpc
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import badge_pb2_grpc as pb_grpc
from badge_service.api.badges.v1 import custom_field_pb2 as field_pb
from badge_service.api.badges.v1 import custom_field_pb2_grpc as field_pb_grpc
from badge_service.api.badges.v1 import issuer_pb2 as issuer_pb
from badge_service.api.badges.v1 import issuer_pb2_grpc as issuer_pb_grpc
from badge_service.api.badges.v1 import org_meta_pb2 as meta_pb
from badge_service.api.badges.v1 import org_meta_pb2_grpc as meta_pb_grpc
from badge_service.domain import limits
from badge_service.store.models import awards as awards_table
from badge_service.store.models import badges as badges_table
from bench import frames, import_bench, seed
from bench.h2gen import percentile
from bench.seed import (
    SeededAwards,
    SeededHosted,
    SeededNoisy,
    SeededOrg,
    sample_award,
    sample_badge,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BADGES = "badges.v1.BadgeService"
AWARDS = "badges.v1.AwardService"
# The generated stub of each benchmarked service (checks call through the real stubs).
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    BADGES: pb_grpc.BadgeServiceStub,
    AWARDS: award_pb_grpc.AwardServiceStub,
}
# Replaced by a per-request counter in what must be unique: CreateBadge names, CreateAward
# recipients.
PLACEHOLDER = "~" * 12
# The scenario that measures one org's CreateAward while another writes at its limits; it
# runs on the service only (the baseline does no work to be slowed down).
NOISY = "Noisy neighbour"
FLOOD = "Unauthenticated flood"
FLOOD_TARGET = 2.0
FLOOD_CALLER_STREAMS = 4
FLOOD_CALLER_RPS = 500  # the legitimate caller's calls a second
# Issue 11's flood: about 1,200 calls a second, each with a new random key.
FLOOD_RATE = 1200.0
# Org A's badge names in that scenario begin so.
NOISY_PREFIX = "noisya-"
# The HTTP face's rows (``--only Http`` selects them all, or one by its name): a hosted
# assertion GET and a CrowdTwist list, each through the face and through a bare app on the
# same HTTP stack; and gRPC GetBadge on the same process while HTTP load runs beside it.
HTTP = "Http"
HTTP_ASSERTION = "Http assertion"
HTTP_CROWDTWIST = "Http CrowdTwist list"
HTTP_BESIDE = "Http beside GetBadge"
HTTP_ROWS = (HTTP_ASSERTION, HTTP_CROWDTWIST, HTTP_BESIDE)
HTTP_ASSERTION_TARGET = 0.40  # of the bare app's req/s
HTTP_BESIDE_TARGET = 0.45  # of the gRPC baseline's req/s
# The HTTP load beside gRPC GetBadge: a fixed, moderate load (HTTP/1.1 connections with one
# request at a time each), not a saturating one: the row asks what serving HTTP costs gRPC.
# A fixed rate too: closed-loop connections would take whatever the loop gives (the cached
# hosted assertion answers some 3,000/s here, which leaves gRPC almost nothing on one loop).
# 500/s is what badgr-server, the open-source peer, serves at most of its cached public
# badge page on a machine like this (480-830/s): a busy public badge site.
HTTP_BESIDE_CONNECTIONS = 4
HTTP_BESIDE_RPS = 500
# What a verifier or backpack asks a hosted document for.
HTTP_ACCEPT = "application/ld+json"


@dataclass(frozen=True)
class Profile:
    """How big and how long: the full run or the smoke run."""

    name: str
    main: int  # badges in the org most scenarios use (deep page is near its end)
    small: int  # the scale rows' small org
    large: int  # the scale rows' large org
    awards: int  # awards of the badge ListAwards lists
    connections: int
    streams: int
    duration: float
    warmup: float
    rounds: int
    watchers: int  # idle WatchAwards streams of the watcher rows
    noisy_streams: int = 1  # org A's writes in flight in the noisy-neighbour scenario
    flood_streams: int = 32  # unauthenticated calls in flight in the flood scenario


FULL = Profile("full", 100_000, 10_000, 1_000_000, 10_000, 4, 8, 5.0, 1.0, 3, 2_000)
SMOKE = Profile("smoke", 2_000, 500, 5_000, 1_000, 2, 4, 1.0, 0.3, 1, 100)
# Writes whose fan-out to the idle watchers is timed, per round.
FAN_OUTS = 5


# --- servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """A server's running totals: calls finished, non-OK calls other than CANCELLED, CANCELLED
    calls, and the CPU seconds its processes used."""

    calls: int
    failed: int
    cancelled: int
    cpu_s: float
    statuses: dict[str, int] = field(default_factory=dict)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess that prints a JSON line with its port once it listens and answers
    SIGUSR1 with a JSON line of counts (the baseline: ``calls``)."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **env} if env else None,
        )
        first = self._line()
        self.info = first  # the first line: the port, and what else the server says of itself
        self.port = int(first["port"])

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited: see {self.log_path}")
        out: dict[str, Any] = json.loads(line)
        return out

    def _ask(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGUSR1)
        return self._line()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def memory(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MB."""
        return memory_mb(self.pid)

    def counts(self) -> Counts:
        """The running totals (the baseline never fails a call it answers)."""
        return Counts(int(self._ask()["calls"]), 0, 0, cpu_seconds([self.pid]))

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class ServiceServer(Server):
    """The real service (``bench.serve_bench``): the interceptor's count of non-OK calls and
    the access log's count per status."""

    def counts(self) -> Counts:
        """The running totals."""
        line = self._ask()
        statuses: dict[str, int] = line["statuses"]
        cancelled = int(statuses.get("CANCELLED", 0))
        return Counts(
            sum(statuses.values()),
            int(line["failures"]) - cancelled,
            cancelled,
            cpu_seconds([self.pid]),
            statuses,
        )

    def http_counts(self) -> Counts:
        """The HTTP face's running totals (``bench.serve_bench --http-address``): requests
        answered; failed: answers other than 2xx, and gRPC calls other than OK and CANCELLED
        (the REST routes call the service's own RPCs); cancelled: requests whose client left
        before an answer began (status 0)."""
        line = self._ask()
        http = {int(code): int(n) for code, n in line.get("http", {}).items()}
        statuses: dict[str, int] = line["statuses"]
        grpc_failed = int(line["failures"]) - int(statuses.get("CANCELLED", 0))
        return Counts(
            sum(http.values()),
            sum(n for code, n in http.items() if code and not 200 <= code < 300) + grpc_failed,
            http.get(0, 0),
            cpu_seconds([self.pid]),
            {str(code): n for code, n in http.items()},
        )


class HttpFace:
    """The HTTP face of a ``ServiceServer`` started with ``--http-address``, as ``measure``
    sees a server: its HTTP port, and its HTTP counts."""

    def __init__(self, service: ServiceServer) -> None:
        self.service = service
        self.name = service.name
        self.port = int(service.info["http_port"])

    def counts(self) -> Counts:
        """The face's running totals."""
        return self.service.http_counts()


# An access log line's gRPC status.
STATUS_FIELD = re.compile(rb'"status": "([A-Z_]+)"')


class WorkersServer:
    """``badge-service serve --workers N`` on ``host``; calls and failures are counted from
    its access log, CPU over its processes (the parent and its workers)."""

    def __init__(
        self,
        workers: int,
        url: str,
        log: Path,
        host: str = "127.0.0.1",
        pool_size: int | None = None,
    ) -> None:
        self.name = f"{workers} worker{'s' if workers > 1 else ''}"
        self.host = host
        self.log_path = log
        self._log = log.open("wb")
        argv = [str(Path(sys.executable).parent / "badge-service"), "serve"]
        argv += ["--workers", str(workers), "--address", f"{host}:0"]
        argv += ["--database-url", url, "--no-migrate"]
        env = dict(os.environ)
        if pool_size is not None:
            env["BADGE_SERVICE_DB_POOL_SIZE"] = str(pool_size)
        self.proc = subprocess.Popen(argv, cwd=REPO, stderr=self._log, env=env)
        self.port = 0
        self.pids = [self.proc.pid]
        deadline = time.monotonic() + 60
        listening = 0
        while listening < workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} did not start: see {log}")
            time.sleep(0.1)
            listening = 0
            for rec in read_json_lines(log):
                if rec.get("msg") == "listening":
                    listening += 1
                    self.port = int(rec["port"])
                elif rec.get("msg") == "workers started":
                    self.pids = [self.proc.pid, *(int(pid) for pid in rec["workers"])]
        self._offset = 0
        self._totals = [0, 0, 0]  # calls, failed, cancelled
        self._statuses: dict[str, int] = {}

    def counts(self) -> Counts:
        """The running totals, reading the log written since the previous call."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if b'"badge_service.access"' not in line:
                continue
            self._totals[0] += 1
            if b'"status": "CANCELLED"' in line:
                self._totals[2] += 1
            elif b'"status": "OK"' not in line:
                self._totals[1] += 1
            found = STATUS_FIELD.search(line)
            status = found.group(1).decode() if found else "(no status)"
            self._statuses[status] = self._statuses.get(status, 0) + 1
        calls, failed, cancelled = self._totals
        return Counts(calls, failed, cancelled, cpu_seconds(self.pids), dict(self._statuses))

    @property
    def targets(self) -> list[tuple[str, int]]:
        """Where clients call it: (host, port)."""
        return [(self.host, self.port)]

    def stop(self) -> int:
        """SIGTERM to the parent; returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


class Hosts:
    """Several ``serve --workers N`` groups on addresses of their own over one database, as
    hosts behind a load balancer are: load spreads over their ``targets``, and their counts
    add up (calls from each one's access log, CPU over all their processes)."""

    def __init__(self, name: str, servers: list[WorkersServer]) -> None:
        self.name = name
        self.servers = servers
        self.port = servers[0].port

    @property
    def targets(self) -> list[tuple[str, int]]:
        """Every host's (address, port)."""
        return [t for srv in self.servers for t in srv.targets]

    def counts(self) -> Counts:
        """The running totals of all the hosts."""
        each = [srv.counts() for srv in self.servers]
        statuses: dict[str, int] = {}
        for c in each:
            for status, n in c.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        return Counts(
            sum(c.calls for c in each),
            sum(c.failed for c in each),
            sum(c.cancelled for c in each),
            sum(c.cpu_s for c in each),
            statuses,
        )

    def stop(self) -> int:
        """SIGTERM to every host; the first non-zero exit status, else 0."""
        codes = [srv.stop() for srv in self.servers]
        return next((c for c in codes if c), 0)


def read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a log file (other lines skipped)."""
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


# --- scenarios -----------------------------------------------------------------------------


def _set_badge_name(request: Message, value: str) -> None:
    assert isinstance(request, pb.CreateBadgeRequest)
    request.badge.name = value


def _set_member_id(request: Message, value: str) -> None:
    assert isinstance(request, award_pb.CreateAwardRequest)
    request.award.recipient.member_id = value


@dataclass
class Call:
    """One kind of request in a scenario. A write whose field must differ per request (a
    badge name, an award recipient) has ``stamp``, which sets that field in a copy."""

    method: str
    request: Message
    reply_type: type[Message]
    stamp: Callable[[Message, str], None] | None = None
    service: str = BADGES

    @property
    def path(self) -> str:
        """The gRPC method path."""
        return f"/{self.service}/{self.method}"

    @property
    def unique(self) -> bool:
        """Whether every request needs its own value (so replies are not recorded)."""
        return self.stamp is not None

    def stamped(self, value: str) -> Message:
        """A copy of the request with its unique field set to ``value``."""
        assert self.stamp is not None
        copy = type(self.request)()
        copy.CopyFrom(self.request)
        self.stamp(copy, value)
        return copy


@dataclass
class Scenario:
    """A benchmarked workload: a cycle of calls and a check of a real reply."""

    name: str
    calls: list[Call]
    key: str
    check: Callable[[Message], None]
    generator: str = "h2load"  # h2load sends one body; h2gen varies bodies per request
    # An HTTP/1.1 GET of this path (and query) instead of gRPC calls (h2load --h1).
    http: str | None = None


def expect(ok: bool, what: str) -> None:
    """Raises with ``what`` unless ``ok``."""
    if not ok:
        raise AssertionError(what)


def scenarios(
    main: SeededOrg,
    writes: SeededOrg,
    awarded: SeededAwards,
    deep_token: str,
    deep_after: int,
) -> list[Scenario]:
    """GetBadge, ListBadges(25), ListBadges deep, CreateBadge, mixed 9:1, CreateAward and
    ListAwards(25). CreateBadge and CreateAward write to an org of their own, so the tens of
    thousands of rows they add do not change the orgs the read scenarios measure (ListBadges
    and ListAwards count what they list)."""
    get = Call("GetBadge", pb.GetBadgeRequest(id=main.middle_id), pb.Badge)
    first = Call("ListBadges", pb.ListBadgesRequest(page_size=25), pb.ListBadgesResponse)
    deep = Call(
        "ListBadges",
        pb.ListBadgesRequest(page_size=25, page_token=deep_token),
        pb.ListBadgesResponse,
    )
    create = Call(
        "CreateBadge",
        pb.CreateBadgeRequest(badge=sample_badge(f"bench-{PLACEHOLDER}")),
        pb.Badge,
        _set_badge_name,
    )
    award = Call(
        "CreateAward",
        sample_award(awarded.write_badge_id, f"bench-{PLACEHOLDER}"),
        award_pb.Award,
        _set_member_id,
        AWARDS,
    )
    list_awards = Call(
        "ListAwards",
        award_pb.ListAwardsRequest(badge_id=awarded.badge_id, page_size=25),
        award_pb.ListAwardsResponse,
        service=AWARDS,
    )

    def check_get(reply: Message) -> None:
        assert isinstance(reply, pb.Badge)
        expect(reply.id == main.middle_id, f"GetBadge returned id {reply.id}")
        expect(reply.name == main.middle_name, f"GetBadge returned name {reply.name}")
        expect(reply.title == "Game Attendance" and len(reply.badge_states) == 2, "GetBadge body")

    def check_first(reply: Message) -> None:
        assert isinstance(reply, pb.ListBadgesResponse)
        ids = [b.id for b in reply.badges]
        expect(ids == list(range(main.first_id, main.first_id + 25)), f"first page ids {ids}")
        expect(reply.total_size >= main.count and bool(reply.next_page_token), "first page")

    def check_deep(reply: Message) -> None:
        assert isinstance(reply, pb.ListBadgesResponse)
        ids = [b.id for b in reply.badges]
        expect(ids == list(range(deep_after + 1, deep_after + 26)), f"deep page ids {ids}")

    def check_create(reply: Message) -> None:
        assert isinstance(reply, pb.Badge)
        expect(reply.id > 0 and reply.name.startswith("check-"), f"CreateBadge {reply.name}")

    def check_mixed(reply: Message) -> None:
        if isinstance(reply, pb.Badge) and reply.id == main.middle_id:
            check_get(reply)
        else:
            check_create(reply)

    def check_award(reply: Message) -> None:
        assert isinstance(reply, award_pb.Award)
        expect(
            len(reply.id) == 24
            and reply.badge_id == awarded.write_badge_id
            and reply.recipient.member_id.startswith("check-")
            and reply.state == award_pb.AWARD_STATE_ACTIVE,
            f"CreateAward {reply.id} of badge {reply.badge_id} to {reply.recipient}",
        )

    def check_list_awards(reply: Message) -> None:
        assert isinstance(reply, award_pb.ListAwardsResponse)
        ids = tuple(a.id for a in reply.awards)
        expect(ids == awarded.first_ids, f"ListAwards first page ids {ids}")
        expect(
            all(a.badge_id == awarded.badge_id for a in reply.awards)
            and [a.recipient.member_id for a in reply.awards]
            == [seed.award_member(i) for i in range(25)],
            "ListAwards page: badge or recipients",
        )
        expect(
            reply.total_size == awarded.count and bool(reply.next_page_token),
            f"ListAwards total_size {reply.total_size}",
        )

    return [
        Scenario("GetBadge", [get], main.key, check_get),
        Scenario("ListBadges(25)", [first], main.key, check_first),
        Scenario("ListBadges deep", [deep], main.key, check_deep),
        Scenario("CreateBadge", [create], writes.key, check_create, "h2gen"),
        Scenario("Mixed 9:1", [get] * 9 + [create], main.key, check_mixed, "h2gen"),
        Scenario("CreateAward", [award], writes.key, check_award, "h2gen"),
        Scenario("ListAwards(25)", [list_awards], awarded.key, check_list_awards),
    ]


def stub_call(
    port: int, key: str, call: Call, name: str, host: str = "127.0.0.1"
) -> tuple[bytes, bytes]:
    """Calls once through the service's real stub; returns (request bytes, reply bytes)."""
    request = call.stamped(f"check-{name}-{time.monotonic_ns()}") if call.unique else call.request
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        method = getattr(STUBS[call.service](channel), call.method)
        reply = method(request, metadata=[("authorization", f"Bearer {key}")], timeout=60)
    return request.SerializeToString(), reply.SerializeToString()


# --- load ----------------------------------------------------------------------------------


@dataclass
class Result:
    """One load run against one server."""

    rps: float
    p50_ms: float
    p99_ms: float
    failed: int
    requests: int
    writes_acknowledged: int = 0  # h2gen: OK creates, warm-up and tail included
    client_cpu_s: float = 0.0  # the generator's CPU seconds (h2gen; h2load --h1)
    server_cpu_us: float = 0.0  # the server's CPU per call it finished (warm-up included)
    # Every measured request's latency in seconds, sorted (to merge generators' runs); not
    # kept once the run is recorded.
    latencies: list[float] = field(default_factory=list, repr=False)


def ensure_h2load() -> str:
    """The h2load binary, installed from Debian's nghttp2-client when missing."""
    found = shutil.which("h2load")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(
            "h2load is missing: install nghttp2-client (apt-get install nghttp2-client)"
        )
    print("installing h2load (nghttp2-client) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, env=env)
    found = shutil.which("h2load")
    if not found:
        raise SystemExit("h2load is still missing after installing nghttp2-client")
    return found


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class Loader:
    """Runs load with the profile's settings and keeps the work files in ``workdir``."""

    def __init__(
        self, h2load: str, profile: Profile, workdir: Path, rps: int | None = None
    ) -> None:
        self.h2load = h2load
        self.profile = profile
        self.workdir = workdir
        self.runs = 0
        # h2load's gRPC runs send at most this many calls a second in all (a paced client);
        # None: each call as soon as one of its streams is free (a closed loop).
        self.rps = rps

    def run(
        self,
        scenario: Scenario,
        port: int,
        tag: str,
        targets: list[tuple[str, int]] | None = None,
        load: tuple[int, int] | None = None,
    ) -> Result:
        """One measured run of ``scenario`` against the server on ``port`` (127.0.0.1), or
        spread over ``targets`` (host, port) at once: one generator per target with its share
        of the connections, the results merged. ``load`` (connections, streams a connection)
        replaces the profile's."""
        self.runs += 1
        if scenario.http is not None:
            return self._h2load_http(scenario.http, port)
        connections, streams = load or (self.profile.connections, self.profile.streams)
        targets = targets or [("127.0.0.1", port)]
        shares = split_connections(connections, len(targets))
        before = children_cpu()
        started: list[tuple[subprocess.Popen[str], Callable[[str], Result]]] = []
        try:
            for i, ((host, target_port), conns) in enumerate(zip(targets, shares, strict=True)):
                # Each generator of a spread run counts from 0: the target keeps names apart.
                name = f"{tag}-{self.runs}" + (f"h{i}" if len(targets) > 1 else "")
                if scenario.generator == "h2gen":
                    argv, parse = self._h2gen(scenario, host, target_port, name, conns, streams)
                else:
                    argv, parse = self._h2load(scenario, host, target_port, name, conns, streams)
                proc = subprocess.Popen(
                    argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                started.append((proc, parse))
            results = []
            for proc, parse in started:
                out, err = proc.communicate(timeout=h2load_timeout(self.profile))
                if proc.returncode != 0:
                    raise RuntimeError(f"{proc.args!r} failed ({proc.returncode}): {out}{err}")
                results.append(parse(out))
        finally:
            for proc, _ in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        result = merge_results(results)
        if scenario.generator != "h2gen":  # h2gen measures its own, without its start-up
            result.client_cpu_s = children_cpu() - before
        return result

    def http_argv(
        self,
        path: str,
        port: int,
        connections: int,
        duration: float,
        warmup: bool = True,
        rps: int | None = None,
    ) -> list[str]:
        """h2load over HTTP/1.1 (``--h1``): ``connections`` connections, one request at a time
        each (no pipelining, as HTTP/1.1 clients do), GETs of ``path`` for ``duration``
        seconds, after the profile's warm-up if ``warmup``; at most ``rps`` requests a second
        in all when given."""
        argv = [self.h2load, "--h1", "-c", str(connections), "-m", "1", "-t", "1"]
        if rps is not None:
            argv.append(f"--rps={max(1, rps // connections)}")  # h2load's rate is per client
        argv += ["-D", _ms(duration)]
        if warmup and self.profile.warmup:
            argv += ["--warm-up-time", _ms(self.profile.warmup)]
        argv += ["-H", f"accept: {HTTP_ACCEPT}"]
        argv.append(f"http://127.0.0.1:{port}{path}")
        return argv

    def _h2load_http(self, path: str, port: int) -> Result:
        p = self.profile
        log = self.workdir / f"h2load-{self.runs}.tsv"
        # As many connections as the gRPC runs have streams in flight.
        argv = self.http_argv(path, port, p.connections * p.streams, p.duration)
        argv[1:1] = ["--log-file", str(log)]
        before = children_cpu()
        out = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=h2load_timeout(p)
        )
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout}{out.stderr}")
        result = parse_h2load_http(out.stdout, log.read_text(), p.duration)
        result.client_cpu_s = children_cpu() - before
        return result

    def _h2load(
        self, scenario: Scenario, host: str, port: int, name: str, connections: int, streams: int
    ) -> tuple[list[str], Callable[[str], Result]]:
        """h2load's command line for one target, and how to read its output."""
        (call,) = scenario.calls
        body = self.workdir / f"body-{name}.bin"
        body.write_bytes(frames.grpc_message(call.request))
        log = self.workdir / f"h2load-{name}.tsv"
        p = self.profile
        argv = [self.h2load, "-c", str(connections), "-m", str(streams), "-t", "1"]
        if self.rps is not None:
            argv.append(f"--rps={max(1, self.rps // connections)}")  # h2load's rate is per client
        argv += ["-D", _ms(p.duration), "--warm-up-time", _ms(p.warmup)]
        argv += ["-d", str(body), "--log-file", str(log)]
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        argv += ["-H", f"authorization: Bearer {scenario.key}"]
        argv.append(f"http://{host}:{port}{call.path}")

        def parse(stdout: str) -> Result:
            return parse_h2load(stdout, log.read_text(), p.duration)

        return argv, parse

    def _h2gen(
        self, scenario: Scenario, host: str, port: int, name: str, connections: int, streams: int
    ) -> tuple[list[str], Callable[[str], Result]]:
        """bench.h2gen's command line for one target, and how to read its output."""
        prefix = write_prefix(scenario.name) + name
        items = []
        for call in scenario.calls:
            request = call.request
            placeholder = None
            if call.unique:
                request = call.stamped(f"{prefix}-{PLACEHOLDER}")
                placeholder = base64.b64encode(PLACEHOLDER.encode()).decode()
            items.append(
                {
                    "path": call.path,
                    "body": base64.b64encode(frames.grpc_message(request)).decode(),
                    "placeholder": placeholder,
                }
            )
        p = self.profile
        latencies = self.workdir / f"h2gen-{name}.latencies"
        spec = {
            "host": host,
            "port": port,
            "metadata": [["authorization", f"Bearer {scenario.key}"]],
            "items": items,
            "connections": connections,
            "streams": streams,
            "duration": p.duration,
            "warmup": p.warmup,
            "latencies_out": str(latencies),
        }
        path = self.workdir / f"h2gen-{name}.json"
        path.write_text(json.dumps(spec))

        def parse(stdout: str) -> Result:
            r = json.loads(stdout)
            return Result(
                r["rps"],
                r["p50_ms"],
                r["p99_ms"],
                r["failed"],
                r["ok"] + r["failed"],
                r["unique_ok_total"],
                r["client_cpu_s"],
                latencies=[float(x) for x in latencies.read_text().split()],
            )

        return [sys.executable, "-m", "bench.h2gen", str(path)], parse


def split_connections(connections: int, targets: int) -> list[int]:
    """``connections`` shared out over ``targets`` as evenly as they go, at least one each."""
    return [
        max(1, connections // targets + (1 if i < connections % targets else 0))
        for i in range(targets)
    ]


def merge_results(results: list[Result]) -> Result:
    """One result of generators that ran at once against several targets: rates, counts and
    CPU added up, percentiles over every request's latency."""
    if len(results) == 1:
        return results[0]
    latencies = sorted(x for r in results for x in r.latencies)
    return Result(
        sum(r.rps for r in results),
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        sum(r.failed for r in results),
        sum(r.requests for r in results),
        sum(r.writes_acknowledged for r in results),
        sum(r.client_cpu_s for r in results),
        latencies=latencies,
    )


def write_prefix(scenario: str) -> str:
    """How the unique values a write scenario's load sends begin (``createba-``, ...): the
    stored rows that begin so are the ones its generators wrote."""
    return re.sub(r"[^a-z0-9]", "", scenario.lower())[:8] + "-"


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def h2load_timeout(p: Profile) -> float:
    """How long an h2load run may take before the harness gives up on it (a server that stops
    answering must not hang the benchmark)."""
    return p.warmup + p.duration + 60.0


def parse_h2load_http(stdout: str, log: str, duration: float) -> Result:
    """``parse_h2load``, with failures counted as ``http_failures`` says."""
    result = parse_h2load(stdout, log, duration)
    result.failed = http_failures(stdout)
    return result


def http_failures(stdout: str) -> int:
    """The requests of an h2load HTTP run that did not get a 2xx, from its summary: its
    "failed" (4xx and 5xx answers, and the "errored" requests, a subset of them), its
    timeouts, and 3xx answers, which h2load counts as successes (a redirect is not the
    document either)."""
    m = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", stdout)
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx", stdout)
    if not m or not codes:
        raise RuntimeError(f"cannot read h2load's summary:\n{stdout}")
    return int(m.group(1)) + int(m.group(3)) + int(codes.group(1))


def parse_h2load(stdout: str, log: str, duration: float) -> Result:
    """Throughput and failures from h2load's summary, latency percentiles from its per-request
    log (microseconds until the end of the response)."""
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        stdout,
    )
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", stdout)
    if not m or not rate:
        raise RuntimeError(f"cannot read h2load's output:\n{stdout}")
    done, succeeded = int(m.group(3)), int(m.group(4))
    failed = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    latencies = sorted(int(row.split("\t")[2]) / 1e6 for row in log.splitlines() if row.strip())
    return Result(
        float(rate.group(1)),
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        failed + (done - succeeded),
        done,
        latencies=latencies,
    )


# --- the run -------------------------------------------------------------------------------


@dataclass
class Row:
    """Results of one scenario on one server across rounds."""

    results: list[Result] = field(default_factory=list)
    failures: int = 0  # non-OK statuses the server counted during these runs
    # Those failures by gRPC status, where the server tells them apart (to say what failed).
    failed_statuses: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0  # CANCELLED calls beyond those a timed run leaves in flight

    def median(self, attr: str) -> float:
        """The median of one measure across rounds."""
        return statistics.median(getattr(r, attr) for r in self.results) if self.results else 0.0


@dataclass
class Noisy:
    """The noisy-neighbour scenario: org B's CreateAward quiet and beside org A's writes, and
    what org A's load did."""

    quiet: Row = field(default_factory=Row)
    loud: Row = field(default_factory=Row)
    a_rps: list[float] = field(default_factory=list)
    a_acknowledged: int = 0  # org A's creates answered OK
    a_request_bytes: int = 0
    a_what: str = ""

    @property
    def ratio(self) -> float:
        """Org B's quiet rate over its rate beside org A (1.0: not slowed at all)."""
        loud = self.loud.median("rps")
        return self.quiet.median("rps") / loud if loud else float("inf")


@dataclass
class Flood:
    """A legitimate caller's GetBadge quiet and beside a flood of calls with random API keys,
    and the flood's rate of (refused) calls."""

    quiet: Row = field(default_factory=Row)
    loud: Row = field(default_factory=Row)
    flood_rps: list[float] = field(default_factory=list)
    flood_cpu: list[float] = field(default_factory=list)  # the generator's share of a core
    # Per loud run: the server's CPU seconds, the caller's calls and the calls refused.
    loud_cpu: list[tuple[float, int, int]] = field(default_factory=list)
    wrongly_served: int = 0  # flood calls answered OK: must stay 0

    @property
    def refused_cpu_us(self) -> float:
        """The server's CPU per refused call (median over the loud runs): its CPU beside the
        flood, less the caller's calls at their quiet cost, over the calls refused."""
        quiet = self.quiet.median("server_cpu_us")
        per_run = [
            (cpu * 1e6 - calls * quiet) / refused
            for cpu, calls, refused in self.loud_cpu
            if refused
        ]
        return statistics.median(per_run) if per_run else 0.0

    @property
    def ratio(self) -> float:
        """The caller's p50 beside the flood over its p50 quiet (1.0: not slowed at all)."""
        quiet = self.quiet.median("p50_ms")
        return self.loud.median("p50_ms") / quiet if quiet else float("inf")


@dataclass
class HttpRows:
    """The HTTP face's rows: per HTTP scenario, the bare app's and the service's runs (or why
    a scenario was not measured); and gRPC GetBadge on the gRPC baseline, on the service with
    its HTTP face quiet, and beside HTTP load, with that load's rate and CPU."""

    protocol: str = ""  # the HTTP/1.1 implementation uvicorn picked (bare app and service)
    rows: dict[str, dict[str, Row]] = field(default_factory=dict)  # scenario -> server -> Row
    body_bytes: dict[str, int] = field(default_factory=dict)  # scenario -> answer body size
    skipped: dict[str, str] = field(default_factory=dict)  # scenario -> "n/a: why"
    beside: dict[str, Row] = field(default_factory=dict)  # "baseline", "quiet", "beside"
    beside_rps: list[float] = field(default_factory=list)  # the HTTP load's rate, per round
    beside_cpu: list[float] = field(default_factory=list)  # its generator's CPU, % of a core
    beside_failed: int = 0  # HTTP requests of that load answered other than 2xx


@dataclass
class Report:
    """Everything the Markdown report shows."""

    profile: Profile
    database: str
    seed_seconds: float = 0.0
    rows: dict[str, dict[str, Row]] = field(default_factory=dict)
    generators: dict[str, str] = field(default_factory=dict)  # scenario -> load generator
    awards: int = 0  # awards seeded for ListAwards
    scale: dict[str, Row] = field(default_factory=dict)
    workers: dict[str, Row] = field(default_factory=dict)
    scale_out: dict[str, Row] = field(default_factory=dict)  # "scenario|configuration"
    observed: dict[str, Row] = field(default_factory=dict)  # GetBadge by variant (_observed)
    watch: dict[str, Row] = field(default_factory=dict)  # GetBadge: "none" / "idle watchers"
    fan_out_ms: list[tuple[float, float]] = field(default_factory=list)  # (from ack, from send)
    watch_idle_cpu: list[float] = field(default_factory=list)  # % of a core, watchers idle
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    durable: dict[str, str] = field(default_factory=dict)
    stored: dict[str, tuple[int, int]] = field(default_factory=dict)  # (acknowledged, stored)
    other: OtherRun | None = None  # the other database's latest CPU figures
    partial: bool = False  # --only: chosen scenarios, no scale, worker or scale-out rows
    noisy: Noisy | None = None
    flood: Flood | None = None
    http: HttpRows | None = None
    imports: import_bench.ImportRun | None = None  # badge-service import (--only Import)
    notes: list[str] = field(default_factory=list)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])
    errors: list[str] = field(default_factory=list)


def measure(
    loader: Loader,
    scenario: Scenario,
    server: Server | WorkersServer | HttpFace | Hosts,
    row: Row,
    tag: str,
    expected: frozenset[str] = frozenset(),
    load: tuple[int, int] | None = None,
) -> Result:
    """One run, plus what the server counted during it: failures (other than the
    ``expected`` statuses another client causes meanwhile), and CPU per call. A ``Hosts``
    server's load spreads over its hosts; ``load`` (connections, streams a connection)
    replaces the profile's."""
    before = server.counts()
    targets = server.targets if isinstance(server, Hosts) else None
    result = loader.run(scenario, server.port, tag, targets, load)
    after = _settled(server)
    calls = after.calls - before.calls
    result.server_cpu_us = (after.cpu_s - before.cpu_s) / calls * 1e6 if calls else 0.0
    result.latencies = []  # the percentiles are taken; a full run would keep millions
    row.results.append(result)
    row.failures += after.failed - before.failed
    caused = sum(after.statuses.get(s, 0) - before.statuses.get(s, 0) for s in expected)
    row.failures = max(0, row.failures - caused)
    for status, n in after.statuses.items():
        # gRPC status names only: an HTTP face's counts are by HTTP status code.
        grew = n - before.statuses.get(status, 0)
        if grew and not status.isdigit() and status not in {"OK", "CANCELLED", *expected}:
            row.failed_statuses[status] = row.failed_statuses.get(status, 0) + grew
    # A timed h2load run stops with up to connections x streams calls in flight; the server
    # sees those as CANCELLED. More than that would be a real problem.
    connections, streams = load or (loader.profile.connections, loader.profile.streams)
    in_flight = connections * streams
    row.cancelled += max(0, after.cancelled - before.cancelled - in_flight)
    return result


def _settled(server: Server | WorkersServer | HttpFace | Hosts) -> Counts:
    """The server's counts once calls stop finishing: calls a stopped generator left in flight
    finish (as CANCELLED) a little after it exits, and belong to this run, not the next."""
    last = server.counts()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = server.counts()
        if now.calls == last.calls:
            return now
        last = now
    return last


@contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    """A scratch directory for the database, logs and request bodies."""
    path = Path(tempfile.mkdtemp(prefix="badge-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work files kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


PG_DATABASE = "badge_bench"


async def _pg_admin(base_url: str, *statements: str) -> None:
    """Runs statements on the database named in ``base_url`` (never ``badge_bench`` itself)."""
    import asyncpg

    admin = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        for stmt in statements:
            await conn.execute(stmt)
    finally:
        await conn.close()


@contextmanager
def database(pg: str | None, work: Path, keep: bool) -> Iterator[str]:
    """The benchmark's database URL: SQLite in ``work``, or a fresh ``badge_bench`` database
    on the PostgreSQL server of ``pg`` (one a previous run left behind is dropped first), which
    is dropped again at the end unless ``keep``."""
    if pg is None:
        yield f"sqlite+aiosqlite:///{work / 'bench.db'}"
        return
    drop = f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'
    asyncio.run(_pg_admin(pg, drop, f'CREATE DATABASE "{PG_DATABASE}"'))
    try:
        yield make_url(pg).set(database=PG_DATABASE).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"database {PG_DATABASE} kept")
        else:
            asyncio.run(_pg_admin(pg, drop))


async def _count_written(url: str, table: str, org_id: int, prefix: str) -> int:
    """How many badges of the org are named ``prefix...`` (table "badges"), or how many awards
    of the org went to a member ``prefix...`` (table "awards")."""
    if table == "badges":
        t, column, pattern = badges_table, badges_table.c.name, f"{prefix}%"
    else:
        t, column, pattern = awards_table, awards_table.c.recipient_key, f"member_id:{prefix}%"
    engine = create_async_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            stmt = (
                select(func.count())
                .select_from(t)
                .where(t.c.org_id == org_id, column.like(pattern))
            )
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


def run(
    profile: Profile, pg: str | None, out: Path, keep: bool, only: frozenset[str] = frozenset()
) -> int:
    """The whole benchmark; returns the exit status. ``only`` (scenario names) runs just those
    scenarios and leaves out the scale and worker rows: for measuring one change quickly."""
    h2load = ensure_h2load()
    with workdir(keep) as work, database(pg, work, keep) as url:
        report = Report(profile, "PostgreSQL" if pg else "SQLite", awards=profile.awards)
        report.partial = bool(only)
        report.other = other_run(report.database)
        if only and only <= {import_bench.IMPORT}:  # alone: no seeded data, no servers
            text = import_bench.render_alone(
                import_bench.measure(url, work, smoke=profile.name == "smoke")
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print(text)
            return 0
        sizes = {"main": profile.main, "small": profile.small, "large": profile.large}
        sizes["writes"] = 1
        seeded = seed_database(url, sizes, profile.awards, work)
        orgs, awarded, noisy = seeded.orgs, seeded.awarded, seeded.noisy
        report.seed_seconds = seeded.seconds
        loader = Loader(h2load, profile, work)
        py = sys.executable
        service = ServiceServer(
            "service",
            [py, "-m", "bench.serve_bench", "--database-url", url],
            work / "service.log",
            # Every idle watcher of the watcher rows watches one org.
            env={"BADGE_SERVICE_WATCH_MAX_PER_ORG": str(max(1000, profile.watchers))},
        )
        baseline: Server | None = None
        try:
            main = orgs["main"]
            # A real token from the service, by numbered page, ten pages before the end.
            deep_page = max(2, main.count // 25 - 10)
            numbered = pb.ListBadgesRequest(page=deep_page, page_size=25)
            _, raw = stub_call(
                service.port, main.key, Call("ListBadges", numbered, pb.ListBadgesResponse), ""
            )
            token = pb.ListBadgesResponse.FromString(raw).next_page_token
            deep_after = main.first_id + deep_page * 25 - 1
            plan = scenarios(main, orgs["writes"], awarded, token, deep_after)
            (get_badge,) = [sc for sc in plan if sc.name == "GetBadge"]
            http_rows = [name for name in HTTP_ROWS if not only or HTTP in only or name in only]
            if only:
                named = {NOISY, FLOOD, HTTP, *HTTP_ROWS, SCALE_OUT, import_bench.IMPORT}
                unknown = only - {sc.name for sc in plan} - named
                if unknown:
                    raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
                plan = [sc for sc in plan if sc.name in only]
            report.generators = {sc.name: sc.generator for sc in plan}
            # The HTTP rows' gRPC GetBadge runs on the gRPC baseline too: it records that reply.
            checked = plan
            if HTTP_BESIDE in http_rows and all(sc.name != "GetBadge" for sc in plan):
                checked = [*plan, get_badge]
            replies: dict[str, dict[str, Any]] = {}
            recorded: dict[tuple[str, bytes], bytes] = {}
            for sc in checked:
                for call in sc.calls:
                    req, rep = stub_call(service.port, sc.key, call, sc.name)
                    sc.check(call.reply_type.FromString(rep))
                    spec = replies.setdefault(call.path, {"default": "", "by_request": {}})
                    spec["default"] = spec["default"] or base64.b64encode(rep).decode()
                    if not call.unique:
                        spec["by_request"][base64.b64encode(req).decode()] = base64.b64encode(
                            rep
                        ).decode()
                        recorded[(call.path, req)] = rep
            (work / "replies.json").write_text(json.dumps(replies))
            baseline = Server(
                "baseline",
                [py, "-m", "bench.baseline", str(work / "replies.json")],
                work / "baseline.log",
            )
            for sc in checked:  # the baseline sends the service's bytes
                for call in sc.calls:
                    req, rep = stub_call(baseline.port, sc.key, call, sc.name)
                    if not call.unique:
                        expect(rep == recorded[(call.path, req)], f"baseline reply of {sc.name}")
            print("stub checks passed on both servers", flush=True)

            servers: list[Server] = [baseline, service]
            for rnd in range(profile.rounds):
                for sc in plan:
                    order = servers if rnd % 2 == 0 else servers[::-1]
                    for srv in order:
                        row = report.rows.setdefault(sc.name, {}).setdefault(srv.name, Row())
                        r = measure(loader, sc, srv, row, f"r{rnd}{srv.name[0]}")
                        print(
                            f"round {rnd + 1} {sc.name:16} {srv.name:8} {r.rps:9.0f} req/s "
                            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms failed {r.failed}",
                            flush=True,
                        )
            if not only or NOISY in only:
                _noisy_neighbour(report, loader, service, orgs["writes"], awarded, noisy, work)
            if not only or FLOOD in only:
                _unauthenticated_flood(report, loader, service, main, work)
            if http_rows:
                http_spec = HttpSpec(main, seeded.hosted, get_badge, http_rows)
                _http(report, loader, baseline, url, http_spec, work)
            _check_writes(report, url, orgs, noisy)
            if not only:
                _scale(report, loader, service, orgs)
            report.memory["service"] = service.memory()
            report.memory["baseline"] = baseline.memory()
            baseline.stop()  # idle from here on: the watcher rows measure the service alone
            if not only:
                _watch(report, loader, service, main, awarded, orgs["writes"].key, work)
        finally:
            service.stop()
            if baseline is not None:
                baseline.stop()
        if not only or import_bench.IMPORT in only:
            report.imports = import_bench.measure(url, work, smoke=profile.name == "smoke")
        if not only:
            _workers(report, loader, url, orgs["main"], work)
        if pg and (not only or SCALE_OUT in only):
            _scale_out(report, loader, url, orgs["main"], orgs["writes"], work)
        elif SCALE_OUT in only:
            report.notes.append(f"{SCALE_OUT}: PostgreSQL only (run with --pg).")
        if not only or "GetBadge" in only:
            _observed(report, loader, orgs["main"], url, work)
        text = render(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    failed = report.errors + _failed_rows(report)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def _failed_rows(report: Report) -> list[str]:
    """A line per row where a call failed (generator or server count)."""
    rows: list[tuple[str, Row]] = [
        (f"{name} on {srv}", row) for name, per in report.rows.items() for srv, row in per.items()
    ]
    rows += [(f"scale {name}", row) for name, row in report.scale.items()]
    if report.noisy is not None:
        rows += [(f"{NOISY} alone", report.noisy.quiet), (f"{NOISY} beside A", report.noisy.loud)]
    rows += [(f"workers {name}", row) for name, row in report.workers.items()]
    rows += [(f"{SCALE_OUT} {name}", row) for name, row in report.scale_out.items()]
    if report.http is not None:
        rows += [
            (f"{name} on {srv}", row)
            for name, per in report.http.rows.items()
            for srv, row in per.items()
        ]
        rows += [(f"{HTTP_BESIDE} {name}", row) for name, row in report.http.beside.items()]
    rows += [(f"watchers GetBadge {name}", row) for name, row in report.watch.items()]
    out = []
    for label, row in rows:
        generator = sum(r.failed for r in row.results)
        if generator or row.failures or row.cancelled:
            which = f" ({row.failed_statuses})" if row.failed_statuses else ""
            out.append(
                f"{label}: {generator} failed at the generator, {row.failures} non-OK statuses"
                f"{which} and {row.cancelled} unexpected CANCELLED at the server"
            )
    return out


@dataclass(frozen=True)
class Seeded:
    """What ``seed_database`` made."""

    orgs: dict[str, SeededOrg]
    awarded: SeededAwards
    noisy: SeededNoisy
    hosted: SeededHosted
    seconds: float


def seed_database(url: str, sizes: dict[str, int], awards: int, work: Path) -> Seeded:
    """Orgs and keys through the store, each org's first badge through a (temporary) service's
    CreateBadge, the rest bulk-copied from it; then, through the same service, an uncapped
    badge in the ``awards`` org awarded to ``awards`` members with BatchCreateAwards (for
    ListAwards), an uncapped badge in the ``writes`` org (for CreateAward), the ``noisy``
    org at its quotas (every org meta tag and custom field it may have), and in the ``hosted``
    org an issuer, a badge class and one award of it (the HTTP rows' hosted assertion)."""
    started = time.perf_counter()
    print(f"seeding {sizes} badges and {awards:,} awards ...", flush=True)
    created = asyncio.run(seed.create_orgs(url, [*sizes, "awards", "noisy", "hosted"]))
    service = ServiceServer(
        "seeder",
        [sys.executable, "-m", "bench.serve_bench", "--database-url", url],
        work / "seeder.log",
    )
    out = {}
    try:
        for label, count in sizes.items():
            org_id, key = created[label]
            call = Call(
                "CreateBadge",
                pb.CreateBadgeRequest(badge=seed.sample_badge(seed.seed_name(0))),
                pb.Badge,
            )
            _, raw = stub_call(service.port, key, call, "seed")
            template = pb.Badge.FromString(raw)
            asyncio.run(seed.copy_badges(url, template.id, count))
            out[label] = SeededOrg(org_id, key, template.id, count)
        # After the copies: copy_badges needs its template to be the newest badge.
        write_badge = _create_badge(service.port, out["writes"].key, "award-target")
        org_id, key = created["awards"]
        listed = _create_badge(service.port, key, "award-listed")
        first_ids = _award_many(service.port, key, listed, awards)[:25]
        seeded_awards = SeededAwards(org_id, key, listed, awards, tuple(first_ids), write_badge)
        noisy = SeededNoisy(*created["noisy"])
        _fill_quotas(service.port, noisy.key)
        org_id, key = created["hosted"]
        hosted = SeededHosted(org_id, key, _hosted_award(service.port, key))
    finally:
        service.stop()
    asyncio.run(seed.settle(url))
    seconds = time.perf_counter() - started
    print(f"seeded in {seconds:.1f}s", flush=True)
    return Seeded(out, seeded_awards, noisy, hosted, seconds)


def _hosted_award(port: int, key: str) -> str:
    """An issuer, a badge class and one award of it, through the service; the award's id."""
    metadata = [("authorization", f"Bearer {key}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        issuer = issuer_pb_grpc.IssuerServiceStub(channel).CreateIssuer(
            issuer_pb.CreateIssuerRequest(issuer=seed.hosted_issuer()),
            metadata=metadata,
            timeout=60,
        )
        bc = class_pb_grpc.BadgeClassServiceStub(channel).CreateBadgeClass(
            class_pb.CreateBadgeClassRequest(badge_class=seed.hosted_class(issuer.entity_id)),
            metadata=metadata,
            timeout=60,
        )
        award = award_pb_grpc.AwardServiceStub(channel).CreateAward(
            seed.hosted_award(bc.entity_id), metadata=metadata, timeout=60
        )
    return str(award.id)


def _fill_quotas(port: int, key: str) -> None:
    """Takes an org to its org meta tag and custom field quotas, through the service."""
    metadata = [("authorization", f"Bearer {key}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        meta_pb_grpc.OrgMetaServiceStub(channel).UpdateOrgMeta(
            meta_pb.UpdateOrgMetaRequest(org_meta=meta_pb.OrgMeta(tags=seed.noisy_meta_tags())),
            metadata=metadata,
            timeout=60,
        )
        fields = field_pb_grpc.CustomFieldServiceStub(channel)
        for f in seed.noisy_fields():
            fields.CreateCustomField(
                field_pb.CreateCustomFieldRequest(custom_field=f), metadata=metadata, timeout=60
            )


def _create_badge(port: int, key: str, name: str) -> int:
    """An uncapped badge, through the service's CreateBadge; its id."""
    call = Call("CreateBadge", pb.CreateBadgeRequest(badge=seed.uncapped_badge(name)), pb.Badge)
    _, raw = stub_call(port, key, call, "seed")
    return pb.Badge.FromString(raw).id


def _award_many(port: int, key: str, badge_id: int, count: int) -> list[str]:
    """Awards ``badge_id`` to ``count`` members through BatchCreateAwards; the award ids, in
    order."""
    ids: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = award_pb_grpc.AwardServiceStub(channel)
        for request in seed.award_batches(badge_id, count):
            reply = stub.BatchCreateAwards(
                request, metadata=[("authorization", f"Bearer {key}")], timeout=300
            )
            for i, result in enumerate(reply.results):
                if result.WhichOneof("result") != "award":
                    raise RuntimeError(f"seeding award {len(ids) + i} failed: {result.error}")
            ids += [r.award.id for r in reply.results]
    if len(ids) != count or ids != sorted(ids):
        raise RuntimeError(f"seeded {len(ids)} awards, not {count} in id order")
    return ids


def _check_writes(report: Report, url: str, orgs: dict[str, SeededOrg], noisy: SeededNoisy) -> None:
    """Every create the generator saw acknowledged is in the database, and no other: badges
    by name, awards by recipient."""
    checks = (
        ("CreateBadge", orgs["writes"].org_id, "badges"),
        ("Mixed 9:1", orgs["main"].org_id, "badges"),
        ("CreateAward", orgs["writes"].org_id, "awards"),
    )
    for sc_name, org_id, table in checks:
        row = report.rows.get(sc_name, {}).get("service")
        if row is None:
            continue
        acknowledged = sum(r.writes_acknowledged for r in row.results)
        _durable(report, sc_name, acknowledged, url, table, org_id, write_prefix(sc_name))
    if report.noisy is not None:
        b = sum(
            r.writes_acknowledged for r in report.noisy.loud.results + report.noisy.quiet.results
        )
        _durable(report, NOISY, b, url, "awards", orgs["writes"].org_id, write_prefix(NOISY))
        a = report.noisy.a_acknowledged
        _durable(report, f"{NOISY} (org A)", a, url, "badges", noisy.org_id, NOISY_PREFIX)


def _durable(
    report: Report, label: str, acknowledged: int, url: str, table: str, org_id: int, prefix: str
) -> None:
    stored = asyncio.run(_count_written(url, table, org_id, prefix))
    report.durable[label] = f"{acknowledged:,} acknowledged, {stored:,} stored"
    report.stored[label] = (acknowledged, stored)
    if stored != acknowledged:
        report.errors.append(f"{label}: {acknowledged} acknowledged but {stored} stored")


def _scale(report: Report, loader: Loader, service: Server, orgs: dict[str, SeededOrg]) -> None:
    """GetBadge and ListBadges(25) on the small and the large org, alternating."""
    p = report.profile
    cases = {}
    for label in ("small", "large"):
        org = orgs[label]
        cases[f"GetBadge {label}"] = Scenario(
            "GetBadge",
            [Call("GetBadge", pb.GetBadgeRequest(id=org.middle_id), pb.Badge)],
            org.key,
            lambda _r: None,
        )
        cases[f"ListBadges(25) {label}"] = Scenario(
            "ListBadges(25)",
            [Call("ListBadges", pb.ListBadgesRequest(page_size=25), pb.ListBadgesResponse)],
            org.key,
            lambda _r: None,
        )
    for name, sc in cases.items():  # each org's calls answer before any load runs
        (call,) = sc.calls
        _, raw = stub_call(service.port, sc.key, call, name)
        reply = call.reply_type.FromString(raw)
        org = orgs[name.rsplit(" ", 1)[1]]
        if isinstance(reply, pb.Badge):
            expect(reply.id == org.middle_id, f"{name}: id {reply.id}")
        else:
            assert isinstance(reply, pb.ListBadgesResponse)
            expect(reply.total_size == org.count and len(reply.badges) == 25, f"{name} page")
    for rnd in range(p.rounds):
        for name, sc in cases.items():
            row = report.scale.setdefault(name, Row())
            r = measure(loader, sc, service, row, f"s{rnd}")
            print(f"scale round {rnd + 1} {name:22} {r.rps:9.0f} req/s p50 {r.p50_ms:6.2f} ms")


def get_badge_scenario(main: SeededOrg) -> Scenario:
    """GetBadge of the main org's middle badge (its answer not checked: the rows that use
    this run after the GetBadge scenario checked it)."""
    return Scenario(
        "GetBadge",
        [Call("GetBadge", pb.GetBadgeRequest(id=main.middle_id), pb.Badge)],
        main.key,
        lambda _r: None,
    )


def _workers(report: Report, loader: Loader, url: str, main: SeededOrg, work: Path) -> None:
    """GetBadge and ListBadges(25) through ``serve --workers 1`` and ``--workers 2``."""
    get = get_badge_scenario(main)
    listing = Scenario(
        "ListBadges(25)",
        [Call("ListBadges", pb.ListBadgesRequest(page_size=25), pb.ListBadgesResponse)],
        main.key,
        lambda _r: None,
    )
    servers = [WorkersServer(n, url, work / f"workers-{n}.log") for n in (1, 2)]
    try:
        for srv in servers:
            for sc in (get, listing):
                (call,) = sc.calls
                _, raw = stub_call(srv.port, sc.key, call, sc.name)
                sc_reply = call.reply_type.FromString(raw)
                expect(sc_reply.ByteSize() > 0, f"{srv.name}: {sc.name} reply")
        for rnd in range(report.profile.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for sc in (get, listing):
                for srv in order:
                    row = report.workers.setdefault(f"{sc.name}|{srv.name}", Row())
                    r = measure(loader, sc, srv, row, f"w{rnd}")
                    print(f"workers round {rnd + 1} {sc.name:16} {srv.name:9} {r.rps:9.0f} req/s")
    finally:
        for srv in servers:
            code = srv.stop()
            if code != 0:
                report.errors.append(f"serve --workers ({srv.name}) exited with {code} on SIGTERM")


SCALE_OUT = "Scale-out"
# Its two "hosts": loopback addresses of their own, as tests/test_multihost.py's.
SCALE_OUT_HOSTS = ("127.0.0.2", "127.0.0.3")
# Its load: as many calls in flight as the other rows' (connections x streams), over more
# connections, so that the kernel's SO_REUSEPORT hash gives every worker some: with 8
# connections a host, a worker is left with none once in 128 runs (with 2, once in 2).
SCALE_OUT_CONNECTIONS = 16
SCALE_OUT_CONFIGS = ("1 process", "2 processes", "2 hosts x 2 processes")
# Each process's BADGE_SERVICE_DB_POOL_SIZE: the section keeps seven processes up at once, and
# each may hold 3 x pool + min(4, pool) + 2 connections (docs/deploy.md); with the default 10
# they outgrew max_connections 100 and the 2-host rows got UNAVAILABLE. 2: 10 a process.
SCALE_OUT_POOL = 2
# Its CreateBadge rows' badge names begin so (the CreateBadge scenario's are "createba-").
SCALE_OUT_CREATE = f"{SCALE_OUT} CreateBadge"


def scale_out_load(p: Profile) -> tuple[int, int]:
    """(connections, streams a connection) of the scale-out rows: the profile's calls in
    flight over up to SCALE_OUT_CONNECTIONS connections."""
    in_flight = p.connections * p.streams
    connections = min(SCALE_OUT_CONNECTIONS, in_flight)
    return connections, max(1, in_flight // connections)


def _scale_out(
    report: Report, loader: Loader, url: str, main: SeededOrg, writes: SeededOrg, work: Path
) -> None:
    """GetBadge and CreateBadge (PostgreSQL only) on one process (``serve``), on two
    (``serve --workers 2``) and on two hosts of two (``serve --workers 2`` on 127.0.0.2 and on
    127.0.0.3, over the same database), the load spread over both hosts; the three in an
    order that turns each round. Every CreateBadge acknowledged must be stored."""
    get = get_badge_scenario(main)
    create = Scenario(
        SCALE_OUT_CREATE,
        [
            Call(
                "CreateBadge",
                pb.CreateBadgeRequest(badge=sample_badge(f"bench-{PLACEHOLDER}")),
                pb.Badge,
                _set_badge_name,
            )
        ],
        writes.key,
        lambda _r: None,
        "h2gen",
    )
    load = scale_out_load(report.profile)
    groups: list[Hosts] = []
    try:
        one, two = SCALE_OUT_CONFIGS[:2]
        pool = SCALE_OUT_POOL
        groups.append(Hosts(one, [WorkersServer(1, url, work / "scale-out-1.log", pool_size=pool)]))
        groups.append(Hosts(two, [WorkersServer(2, url, work / "scale-out-2.log", pool_size=pool)]))
        hosts = [
            WorkersServer(2, url, work / f"scale-out-{ip}.log", host=ip, pool_size=pool)
            for ip in SCALE_OUT_HOSTS
        ]
        groups.append(Hosts(SCALE_OUT_CONFIGS[2], hosts))
        for group in groups:  # every host answers both calls before any load runs
            for host, port in group.targets:
                for sc in (get, create):
                    (call,) = sc.calls
                    _, raw = stub_call(port, sc.key, call, SCALE_OUT, host)
                    reply = pb.Badge.FromString(raw)
                    expect(
                        reply.id == main.middle_id
                        if sc is get
                        else reply.name.startswith("check-"),
                        f"{SCALE_OUT} {group.name} on {host}: {sc.name} reply {reply.id}",
                    )
        for rnd in range(report.profile.rounds):
            shift = rnd % len(groups)
            for sc, label in ((get, "GetBadge"), (create, "CreateBadge")):
                for group in groups[shift:] + groups[:shift]:
                    row = report.scale_out.setdefault(f"{label}|{group.name}", Row())
                    r = measure(loader, sc, group, row, f"x{rnd}", load=load)
                    print(
                        f"scale-out round {rnd + 1} {label:12} {group.name:22} {r.rps:9.0f} req/s "
                        f"CPU {r.server_cpu_us:6.0f} us/call",
                        flush=True,
                    )
    finally:
        for group in groups:
            code = group.stop()
            if code != 0:
                report.errors.append(f"{SCALE_OUT}: {group.name} exited with {code} on SIGTERM")
    acknowledged = sum(
        r.writes_acknowledged
        for key, row in report.scale_out.items()
        if key.startswith("CreateBadge|")
        for r in row.results
    )
    _durable(
        report,
        SCALE_OUT_CREATE,
        acknowledged,
        url,
        "badges",
        writes.org_id,
        write_prefix(SCALE_OUT_CREATE),
    )


def _render_scale_out(report: Report) -> list[str]:
    """The scale-out section: req/s and CPU per call for 1 process, 2 processes and 2 hosts
    x 2 processes; on SQLite, why there is none."""
    head = f"## {SCALE_OUT} (1 process, 2 processes, 2 hosts x 2 processes)"
    if report.database != "PostgreSQL":
        return [
            head,
            "",
            "PostgreSQL only: hosts share the database over the network, which SQLite cannot "
            "(the Workers rows show 1 and 2 processes on SQLite).",
            "",
        ]
    if not report.scale_out:
        return []
    connections, streams = scale_out_load(report.profile)
    one, two, hosts = SCALE_OUT_CONFIGS
    lines = [
        head,
        "",
        f"`badge-service serve` (one process), `serve --workers 2` (two processes sharing a "
        f'port) and two such groups on {" and ".join(SCALE_OUT_HOSTS)} (two "hosts" of two '
        f"processes), all over the one PostgreSQL database; the three in an order that turns "
        f"each round; each process with BADGE_SERVICE_DB_POOL_SIZE={SCALE_OUT_POOL}, so that "
        "all seven fit PostgreSQL's max_connections of 100. "
        f"Load: {connections} connections x {streams} streams (closed loop; as "
        "many calls in flight as the rows above, over more connections so that every worker "
        f"gets some), spread evenly over the hosts (a generator per host), "
        f"{report.profile.warmup:g} s warm-up + {report.profile.duration:g} s measured. CPU "
        "per call: user + system CPU of all the group's processes (parents and workers, from "
        "`/proc`) over the calls their access logs recorded.",
        "",
        f"| scenario | {one} req/s | {two} req/s | {hosts} req/s | 2/1 | 2x2/1 "
        "| CPU us/call, 1 / 2 / 2x2 | per-round req/s, 1 / 2 / 2x2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label in ("GetBadge", "CreateBadge"):
        rows = [report.scale_out.get(f"{label}|{name}", Row()) for name in SCALE_OUT_CONFIGS]
        if not any(row.results for row in rows):
            continue
        rps = [row.median("rps") for row in rows]
        cpu = " / ".join(_fmt(row.median("server_cpu_us"), 0) for row in rows)
        rounds = " / ".join(", ".join(_fmt(r.rps, 0) for r in row.results) for row in rows)
        lines.append(
            f"| {label} | {_fmt(rps[0], 0)} | {_fmt(rps[1], 0)} | {_fmt(rps[2], 0)} | "
            f"{_ratio(rps[1], rps[0]):.2f}x | {_ratio(rps[2], rps[0]):.2f}x | {cpu} | {rounds} |"
        )
    if SCALE_OUT_CREATE in report.durable:
        lines += ["", f"CreateBadge writes: {report.durable[SCALE_OUT_CREATE]} (all runs)."]
    lines += [
        "",
        f"All of them share this machine's {os.cpu_count()} cores with PostgreSQL and the load "
        "generators: two hosts here are four processes on the same cores, so their req/s "
        "cannot grow past what the cores give. The CPU per call is what tells how the service "
        "would scale on hosts of their own: calls/s per core = 1,000,000 / (CPU us/call), as "
        "long as the database keeps up.",
        "",
    ]
    return lines


class Watchers:
    """Processes holding ``streams`` idle WatchAwards streams of one org (``bench.watchers``),
    about 100 to a connection; they report when every stream has received an event."""

    def __init__(self, port: int, key: str, streams: int, work: Path, processes: int) -> None:
        counts = [
            streams // processes + (1 if i < streams % processes else 0) for i in range(processes)
        ]
        self._logs = [(work / f"watchers-{i}.log").open("wb") for i in range(processes)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.watchers",
                    str(port),
                    key,
                    str(n),
                    str(max(1, n // 100)),
                ],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for n, log in zip(counts, self._logs, strict=True)
        ]
        self._lines: list[queue.Queue[str]] = []
        for proc in self.procs:
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
            self._lines.append(lines)
        try:
            afters = {int(self._next(i, 300)["after"]) for i in range(processes)}
            if len(afters) != 1:
                raise RuntimeError(f"watchers subscribed after different sequences: {afters}")
        except BaseException:
            self.stop()
            raise
        (self.after,) = afters

    def _next(self, i: int, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines[i].get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"watchers process {i} said nothing for {timeout:g} s") from None
        if not line:
            raise RuntimeError(f"watchers process {i} exited ({self.procs[i].poll()})")
        record: dict[str, Any] = json.loads(line)
        if "error" in record:
            raise RuntimeError(f"watchers process {i}: {record['error']}")
        return record

    def received(self, sequence: int, timeout: float = 60) -> float:
        """The ``time.monotonic()`` at which the last stream received ``sequence``."""
        last = 0.0
        for i in range(len(self.procs)):
            while True:
                record = self._next(i, timeout)
                if int(record["sequence"]) == sequence:
                    last = max(last, float(record["last"]))
                    break
        return last

    def stop(self) -> None:
        """Ends the processes (their streams end CANCELLED)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def _watcher_processes(streams: int) -> int:
    """Client processes for ``streams`` watchers: one per thousand (at least one), so that the
    clients' own reading does not dominate the fan-out time."""
    return max(1, streams // 1000)


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put("")


def _watch(
    report: Report,
    loader: Loader,
    service: Server,
    main: SeededOrg,
    awarded: SeededAwards,
    writes_key: str,
    work: Path,
) -> None:
    """GetBadge with no watcher and with ``profile.watchers`` idle WatchAwards streams of the
    writes org, alternating; while they are open, the service's idle CPU and the time from a
    CreateAward's reply (and from its request) until every stream has its events."""
    p = report.profile
    get = get_badge_scenario(main)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    create = award_pb_grpc.AwardServiceStub(channel).CreateAward
    metadata = [("authorization", f"Bearer {writes_key}")]
    fan_outs = 0
    try:
        for rnd in range(p.rounds):
            order = ("none", "watched") if rnd % 2 == 0 else ("watched", "none")
            for case in order:
                if case == "none":
                    r = measure(
                        loader, get, service, report.watch.setdefault("none", Row()), f"v{rnd}"
                    )
                    print(
                        f"watchers round {rnd + 1} GetBadge, no watchers  {r.rps:9.0f} req/s",
                        flush=True,
                    )
                    continue
                watchers = Watchers(
                    service.port, writes_key, p.watchers, work, _watcher_processes(p.watchers)
                )
                try:
                    began = cpu_seconds([service.pid])
                    time.sleep(2.0)
                    report.watch_idle_cpu.append((cpu_seconds([service.pid]) - began) / 2.0 * 100)
                    row = report.watch.setdefault("watched", Row())
                    r = measure(loader, get, service, row, f"v{rnd}")
                    print(
                        f"watchers round {rnd + 1} GetBadge, {p.watchers} idle watchers "
                        f"{r.rps:9.0f} req/s",
                        flush=True,
                    )
                    for k in range(FAN_OUTS):
                        # A new member: the award commits a PROGRESS and an AWARDED event.
                        request = sample_award(awarded.write_badge_id, f"fanout-{fan_outs}")
                        sent = time.monotonic()
                        create(request, metadata=metadata, timeout=60)
                        acked = time.monotonic()
                        fan_outs += 1
                        last = watchers.received(watchers.after + 2 * (k + 1))
                        report.fan_out_ms.append(
                            (max(0.0, last - acked) * 1000, (last - sent) * 1000)
                        )
                        time.sleep(0.2)
                finally:
                    watchers.stop()
                _settled(service)  # the streams' CANCELLED lines belong to no load run
                report.memory[f"service, after {p.watchers} watchers"] = service.memory()
    except RuntimeError as exc:
        report.errors.append(f"watchers: {exc}")
    finally:
        channel.close()


def _noisy_neighbour(
    report: Report,
    loader: Loader,
    service: Server,
    writes: SeededOrg,
    awarded: SeededAwards,
    noisy: SeededNoisy,
    work: Path,
) -> None:
    """Org B's CreateAward (the CreateAward scenario's call, under the same load) measured
    alone and while org A, at its org meta tag and custom field quotas, creates badges at
    every limit (bench/noisy.py, ``noisy_streams`` concurrent calls), alternating which comes
    first in each round. A's creates are checked once through the real stub first."""
    p = report.profile
    b_call = Call(
        "CreateAward",
        sample_award(awarded.write_badge_id, f"bench-{PLACEHOLDER}"),
        award_pb.Award,
        _set_member_id,
        AWARDS,
    )
    b = Scenario(NOISY, [b_call], writes.key, lambda _r: None, "h2gen")
    a_request = pb.CreateBadgeRequest(badge=seed.noisy_badge(f"{NOISY_PREFIX}{PLACEHOLDER}"))
    check = Call("CreateBadge", a_request, pb.Badge, _set_badge_name)
    _, raw = stub_call(service.port, noisy.key, check, NOISY)
    made = pb.Badge.FromString(raw)
    expect(
        len(made.tags) == limits.BADGE_TAGS
        and made.badge_extra_data.ByteSize() > limits.BADGE_EXTRA_DATA_BYTES - 100,
        f"{NOISY}: org A's badge {made.name} is not at its limits",
    )

    def a_spec(rnd: int) -> Path:
        # Each round's A process counts from 0: the round keeps its names apart.
        named = pb.CreateBadgeRequest()
        named.CopyFrom(a_request)
        named.badge.name = f"{NOISY_PREFIX}{rnd}-{PLACEHOLDER}"
        body = base64.b64encode(named.SerializeToString()).decode()
        spec = {
            "port": service.port,
            "key": noisy.key,
            "items": [{"path": check.path, "body": body, "placeholder": PLACEHOLDER}],
            "streams": p.noisy_streams,
            # Covers B's whole run: its generator's start, warm-up and measured window.
            "duration": p.warmup + p.duration + 2.0,
        }
        path = work / f"noisy-{rnd}.json"
        path.write_text(json.dumps(spec))
        return path

    result = report.noisy = Noisy(
        a_request_bytes=a_request.ByteSize(),
        a_what=(
            f"CreateBadge with {limits.BADGE_TAGS} tags, {limits.BADGE_SEGMENTS} segments and "
            f"{made.badge_extra_data.ByteSize():,} bytes of extra data, in an org with "
            f"{limits.ORG_META_TAGS_PER_ORG:,} meta tags and {limits.CUSTOM_FIELDS_PER_ORG} "
            f"custom fields, in a closed loop of {p.noisy_streams} call(s) at a time"
        ),
    )
    for rnd in range(p.rounds):
        for mode in ("quiet", "loud") if rnd % 2 == 0 else ("loud", "quiet"):
            if mode == "quiet":
                r = measure(loader, b, service, result.quiet, f"q{rnd}")
            else:
                a = subprocess.Popen(
                    [sys.executable, "-m", "bench.noisy", str(a_spec(rnd))],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(0.5)  # A's channel connects and its calls are under way
                r = measure(loader, b, service, result.loud, f"n{rnd}")
                out, _ = a.communicate(timeout=120)
                a_result = json.loads(out)
                result.a_rps.append(float(a_result["rps"]))
                result.a_acknowledged += int(a_result["unique_ok"])
                if a_result["failed"]:
                    some = sorted(a_result["errors"].items())[:3]
                    report.errors.append(
                        f"{NOISY}: {a_result['failed']} of org A's calls failed, e.g. {some}"
                    )
            print(
                f"round {rnd + 1} {NOISY} org B {mode:5} {r.rps:9.0f} req/s "
                f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms failed {r.failed}",
                flush=True,
            )


def _unauthenticated_flood(
    report: Report, loader: Loader, service: Server, main: SeededOrg, work: Path
) -> None:
    """A legitimate caller's GetBadge (as the GetBadge scenario) measured quiet and while a
    flood of GetBadge calls with a new random API key each (bench/flood.py, ``flood_streams``
    calls at a time) hits the same server, alternating which comes first in each round."""
    p = report.profile
    get = Call("GetBadge", pb.GetBadgeRequest(id=main.middle_id), pb.Badge)
    caller = Scenario(FLOOD, [get], main.key, lambda _r: None)
    # The caller is an ordinary client with a demand of its own (1 connection, at most 4 calls
    # at a time, FLOOD_CALLER_RPS a second), not the saturating closed loop of the other
    # scenarios: a caller that takes all the loop gives it measures how the loop is shared,
    # and any 1,200 more calls a second, valid ones too, would double its p50 that way.
    loader = Loader(
        loader.h2load,
        replace(p, connections=1, streams=FLOOD_CALLER_STREAMS),
        loader.workdir,
        rps=FLOOD_CALLER_RPS,
    )
    spec_path = work / "flood.json"
    spec_path.write_text(
        json.dumps(
            {
                "port": service.port,
                "path": get.path,
                "body": base64.b64encode(frames.grpc_message(get.request)).decode(),
                "streams": p.flood_streams,
                "rate": FLOOD_RATE,
                "duration": p.warmup + p.duration + 2.0,
            }
        )
    )
    result = report.flood = Flood()
    for rnd in range(p.rounds):
        for mode in ("quiet", "loud") if rnd % 2 == 0 else ("loud", "quiet"):
            if mode == "quiet":
                r = measure(loader, caller, service, result.quiet, f"fq{rnd}")
            else:
                before = service.counts()
                flood = subprocess.Popen(
                    [sys.executable, "-m", "bench.flood", str(spec_path)],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(0.5)  # the flood's connection is up and its calls are under way
                r = measure(
                    loader, caller, service, result.loud, f"fl{rnd}", frozenset({"UNAUTHENTICATED"})
                )
                out, _ = flood.communicate(timeout=120)
                after = _settled(service)
                flooded = json.loads(out)
                result.flood_rps.append(float(flooded["rps"]))
                flood_seconds = p.warmup + p.duration + 2.0
                result.flood_cpu.append(float(flooded["client_cpu_s"]) / flood_seconds)
                refused = after.statuses.get("UNAUTHENTICATED", 0) - before.statuses.get(
                    "UNAUTHENTICATED", 0
                )
                result.loud_cpu.append(
                    (after.cpu_s - before.cpu_s, after.calls - before.calls - refused, refused)
                )
                result.wrongly_served += int(flooded["ok"])
                if flooded["ok"] or refused < int(flooded["refused"]):
                    report.errors.append(
                        f"{FLOOD}: {flooded['ok']} random keys were served and "
                        f"{int(flooded['refused']) - refused} refusals were not UNAUTHENTICATED"
                    )
            print(
                f"round {rnd + 1} {FLOOD} caller {mode:5} {r.rps:9.0f} req/s "
                f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms failed {r.failed}",
                flush=True,
            )


def _render_flood(
    flood: Flood, streams: int, targets: list[tuple[str, str, bool | str]]
) -> list[str]:
    """The unauthenticated-flood section, and its target."""
    ratio = flood.ratio
    lines = [
        f"## {FLOOD} (service)",
        "",
        f"A legitimate caller's GetBadge ({FLOOD_CALLER_RPS} calls a second on 1 connection, "
        f"at most {FLOOD_CALLER_STREAMS} at a time) "
        f"quiet, and while another client sends {FLOOD_RATE:,.0f} GetBadge calls a second "
        f"({streams} at most at a time), each with a new random API key (half with ids no key "
        "has, half of the older shape without an id).",
        "",
        "| caller's GetBadge | req/s | p50 ms | p99 ms | failed | per-round p50 ms |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, row in (("quiet", flood.quiet), ("beside the flood", flood.loud)):
        fails = sum(r.failed for r in row.results) + row.failures + row.cancelled
        lines.append(
            f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
            f"{_fmt(row.median('p99_ms'))} | {fails} | "
            + ", ".join(_fmt(r.p50_ms) for r in row.results)
            + " |"
        )
    flood_rps = statistics.median(flood.flood_rps) if flood.flood_rps else 0.0
    lines += [
        f"| p50 beside / quiet | {ratio:.2f}x | | | | |",
        "",
        f"Flood: {flood_rps:,.0f} refused calls/s (median), {flood.wrongly_served} served; "
        f"the service's CPU per refused call {flood.refused_cpu_us:,.0f} us (per caller's call "
        f"quiet: {flood.quiet.median('server_cpu_us'):,.0f} us); the flood's generator "
        f"(bench/flood.py, pre-encoded HTTP/2 frames) used "
        f"{100 * statistics.median(flood.flood_cpu) if flood.flood_cpu else 0:.0f}% of a core.",
        "",
    ]
    targets.append(
        (
            f"{FLOOD}: the caller's p50 within {FLOOD_TARGET}x of quiet",
            f"{ratio:.2f}x",
            ratio <= FLOOD_TARGET and flood.wrongly_served == 0,
        )
    )
    return lines


@dataclass(frozen=True)
class HttpSpec:
    """What the HTTP rows fetch and call: the main org (its key, for the CrowdTwist list),
    the hosted assertion, the GetBadge scenario, and which rows run."""

    main: SeededOrg
    hosted: SeededHosted
    get_badge: Scenario
    rows: list[str]


def http_get(port: int, path: str, accept: str = HTTP_ACCEPT) -> tuple[int, str, bytes]:
    """One GET on 127.0.0.1 (no proxy): (status, content type, body), also for an error."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with opener.open(request, timeout=60) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read()


def crowdtwist_path(key: str) -> str:
    """CrowdTwist v2.1's badge list, first page of 25, with the key as that API passes it."""
    return f"/v2.1/badges?page_size=25&api_key={key}"


def check_hosted_assertion(port: int, award_id: str) -> tuple[str, bytes]:
    """The hosted assertion through the face on ``port``: a 200 Assertion document at the URL
    it names, its recipient hashed. Returns (media type, body)."""
    path = f"/public/assertions/{award_id}"
    status, media_type, body = http_get(port, path)
    expect(status == 200, f"{HTTP_ASSERTION}: status {status}: {body[:200]!r}")
    expect(media_type == "application/ld+json", f"{HTTP_ASSERTION}: content type {media_type}")
    doc = json.loads(body)
    expect(
        doc.get("type") == "Assertion" and doc.get("id") == f"http://127.0.0.1:{port}{path}",
        f"{HTTP_ASSERTION}: document {doc.get('type')} {doc.get('id')}",
    )
    recipient = doc.get("recipient", {})
    expect(
        recipient.get("hashed") is True and "alice" not in json.dumps(recipient),
        f"{HTTP_ASSERTION}: recipient {recipient}",
    )
    return media_type, body


def check_crowdtwist_list(port: int, key: str) -> tuple[str, bytes] | str:
    """The CrowdTwist list through the face: (media type, body) when it answers a page of 25
    badges, else why the row cannot run (``n/a: ...``). Until the route is served it answers
    404, and the row is skipped rather than failed."""
    status, media_type, body = http_get(port, crowdtwist_path(key), "application/json")
    if status != 200:
        return f"n/a: route not served (first probe answered {status})"
    doc = json.loads(body)
    badges = doc.get("badges") if isinstance(doc, dict) else None
    expect(
        isinstance(badges, list) and len(badges) == 25 and "paging" in doc,
        f"{HTTP_CROWDTWIST}: not a page of 25 badges: {body[:200]!r}",
    )
    return media_type.split(";")[0], body


def _http(
    report: Report, loader: Loader, grpc_baseline: Server, url: str, spec: HttpSpec, work: Path
) -> None:
    """The HTTP face's rows on a service process of their own (``--http-address``): each HTTP
    scenario through the face and through a bare Starlette app on uvicorn answering the same
    bytes (``bench.http_baseline``), alternating; then gRPC GetBadge on the gRPC baseline, on
    that service quiet, and on it while another h2load sends hosted-assertion GETs at a fixed
    concurrency (HTTP_BESIDE_CONNECTIONS), alternating."""
    p = report.profile
    result = report.http = HttpRows()
    py = sys.executable
    service = ServiceServer(
        "service",
        [py, "-m", "bench.serve_bench", "--database-url", url, "--http-address", "127.0.0.1:0"],
        work / "service-http.log",
    )
    bare: Server | None = None
    try:
        face = HttpFace(service)
        assertion_path = f"/public/assertions/{spec.hosted.award_id}"
        media_type, body = check_hosted_assertion(face.port, spec.hosted.award_id)
        scenarios: dict[str, Scenario] = {}
        recorded: dict[str, tuple[str, bytes]] = {}
        if HTTP_ASSERTION in spec.rows or HTTP_BESIDE in spec.rows:
            recorded[HTTP_ASSERTION] = (media_type, body)
            if HTTP_ASSERTION in spec.rows:
                scenarios[HTTP_ASSERTION] = _http_scenario(HTTP_ASSERTION, assertion_path)
        if HTTP_CROWDTWIST in spec.rows:
            listed = check_crowdtwist_list(face.port, spec.main.key)
            if isinstance(listed, str):
                result.skipped[HTTP_CROWDTWIST] = listed
                print(f"{HTTP_CROWDTWIST}: {listed}", flush=True)
            else:
                recorded[HTTP_CROWDTWIST] = listed
                path = crowdtwist_path(spec.main.key)
                scenarios[HTTP_CROWDTWIST] = _http_scenario(HTTP_CROWDTWIST, path)
        replies = {}
        for name, (kind, answer) in recorded.items():
            served = scenarios[name].http if name in scenarios else assertion_path
            assert served is not None
            route = served.split("?")[0]
            replies[route] = {
                "status": 200,
                "media_type": kind,
                "body": base64.b64encode(answer).decode(),
            }
            result.body_bytes[name] = len(answer)
        (work / "http-replies.json").write_text(json.dumps(replies))
        bare = Server(
            "bare app",
            [py, "-m", "bench.http_baseline", str(work / "http-replies.json")],
            work / "http-baseline.log",
        )
        result.protocol = str(bare.info.get("http", ""))
        for name, sc in scenarios.items():  # the bare app answers the service's bytes
            assert sc.http is not None
            status, kind, answer = http_get(bare.port, sc.http)
            expect(status == 200 and answer == recorded[name][1], f"{name}: bare app's answer")
        if HTTP_BESIDE in spec.rows:
            (call,) = spec.get_badge.calls
            for port in (service.port, grpc_baseline.port):
                _, raw = stub_call(port, spec.get_badge.key, call, HTTP_BESIDE)
                spec.get_badge.check(pb.Badge.FromString(raw))
        print("HTTP checks passed on the face and the bare app", flush=True)

        servers: list[Server | HttpFace] = [bare, face]
        for rnd in range(p.rounds):
            for name, sc in scenarios.items():
                for srv in servers if rnd % 2 == 0 else servers[::-1]:
                    row = result.rows.setdefault(name, {}).setdefault(srv.name, Row())
                    r = measure(loader, sc, srv, row, f"h{rnd}")
                    print(
                        f"round {rnd + 1} {name:20} {srv.name:8} {r.rps:9.0f} req/s "
                        f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms failed {r.failed} "
                        f"h2load CPU {r.client_cpu_s / p.duration:.0%}",
                        flush=True,
                    )
            if HTTP_BESIDE in spec.rows:
                _http_beside(report, loader, grpc_baseline, service, spec, assertion_path, rnd)
        report.memory["service with the HTTP face"] = service.memory()
        report.memory["bare HTTP app"] = bare.memory()
    finally:
        service.stop()
        if bare is not None:
            bare.stop()


def _http_scenario(name: str, path: str) -> Scenario:
    """An HTTP GET of ``path`` as a scenario (h2load --h1)."""
    return Scenario(name, [], "", lambda _r: None, "h2load --h1", http=path)


def _http_beside(
    report: Report,
    loader: Loader,
    grpc_baseline: Server,
    service: ServiceServer,
    spec: HttpSpec,
    assertion_path: str,
    rnd: int,
) -> None:
    """One round of gRPC GetBadge on the gRPC baseline, on the service with its HTTP face
    quiet, and on it beside HTTP load, in an order that turns each round."""
    p = report.profile
    result = report.http
    assert result is not None
    cases = ["baseline", "quiet", "beside"]
    shift = rnd % len(cases)
    for case in cases[shift:] + cases[:shift]:
        row = result.beside.setdefault(case, Row())
        if case == "baseline":
            r = measure(loader, spec.get_badge, grpc_baseline, row, f"hb{rnd}")
        elif case == "quiet":
            r = measure(loader, spec.get_badge, service, row, f"hq{rnd}")
        else:
            # Covers the measured run: its start, warm-up and measured window.
            seconds = p.warmup + p.duration + 2.0
            port = HttpFace(service).port
            argv = loader.http_argv(
                assertion_path,
                port,
                HTTP_BESIDE_CONNECTIONS,
                seconds,
                warmup=False,
                rps=HTTP_BESIDE_RPS,
            )
            before = children_cpu()
            load = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            try:
                time.sleep(0.5)  # its connections are up and its requests under way
                r = measure(loader, spec.get_badge, service, row, f"hs{rnd}")
                measured_cpu = r.client_cpu_s
                out, _ = load.communicate(timeout=h2load_timeout(p))
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait()
            rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
            if load.returncode != 0 or not rate or "status codes:" not in out:
                report.errors.append(f"{HTTP_BESIDE}: the HTTP load failed: {out[-500:]}")
            else:
                result.beside_rps.append(float(rate.group(1)))
                failed = http_failures(out)
                result.beside_failed += failed
                if failed:
                    report.errors.append(f"{HTTP_BESIDE}: {failed} HTTP answers were not 2xx")
            result.beside_cpu.append((children_cpu() - before - measured_cpu) / seconds * 100)
        print(
            f"round {rnd + 1} {HTTP_BESIDE} {case:8} {r.rps:9.0f} req/s "
            f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms failed {r.failed}",
            flush=True,
        )


def _render_http(report: Report, targets: list[tuple[str, str, bool | str]]) -> list[str]:
    """The HTTP face's section, and its targets."""
    http = report.http
    if http is None:
        return []
    p = report.profile
    lines = [
        "## HTTP face (service with `--http-address`)",
        "",
        f"A service process of its own with the HTTP face on, against a bare Starlette app on "
        f"uvicorn (`bench/http_baseline.py`: the face's own server setup, one process, uvloop, "
        f"uvicorn's {http.protocol or 'default'} HTTP/1.1 parser, no middleware) answering "
        "the service's recorded bytes for the same path, alternating. Load: h2load --h1, "
        f"{p.connections * p.streams} connections with one request at a time each (no "
        f"pipelining), {p.warmup:g} s warm-up + {p.duration:g} s measured; `Accept: "
        f"{HTTP_ACCEPT}`. h2load CPU is its share of one core over the measured seconds.",
        "",
    ]
    for name in (HTTP_ASSERTION, HTTP_CROWDTWIST):
        if name in http.skipped:
            lines += [f"### {name}", "", http.skipped[name], ""]
            continue
        per = http.rows.get(name)
        if per is None:
            continue
        base, svc = per.get("bare app", Row()), per.get("service", Row())
        what = (
            "`GET /public/assertions/{id}`"
            if name == HTTP_ASSERTION
            else ("`GET /v2.1/badges?page_size=25&api_key=...` (main org)")
        )
        lines += [
            f"### {name} (h2load --h1)",
            "",
            f"{what}, {http.body_bytes.get(name, 0):,} bytes a body.",
            "",
            "| server | req/s | p50 ms | p99 ms | server CPU us/req | h2load CPU | failed "
            "| per-round req/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, row in (("bare app", base), ("service", svc)):
            fails = sum(r.failed for r in row.results) + row.failures + row.cancelled
            lines.append(
                f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
                f"{_fmt(row.median('p99_ms'))} | {_fmt(row.median('server_cpu_us'), 0)} | "
                f"{row.median('client_cpu_s') / p.duration:.0%} | {fails} | "
                + ", ".join(_fmt(r.rps, 0) for r in row.results)
                + " |"
            )
        ratio = _ratio(svc.median("rps"), base.median("rps"))
        lat = _ratio(svc.median("p50_ms"), base.median("p50_ms"))
        p99 = _ratio(svc.median("p99_ms"), base.median("p99_ms"))
        cpu = _ratio(svc.median("server_cpu_us"), base.median("server_cpu_us"))
        lines += [
            f"| service/bare app | {ratio:.0%} | {lat:.1f}x | {p99:.1f}x | {cpu:.1f}x | | | |",
            "",
        ]
        if name == HTTP_ASSERTION:
            targets.append(
                (
                    f"{HTTP_ASSERTION} (hosted assertion GET) >= {HTTP_ASSERTION_TARGET:.0%} of "
                    "the bare HTTP app's req/s",
                    f"{ratio:.0%}",
                    ratio >= HTTP_ASSERTION_TARGET,
                )
            )
        else:
            targets.append(
                (
                    f"{HTTP_CROWDTWIST}: service/bare app req/s (informational)",
                    f"{ratio:.0%} ({svc.median('rps'):,.0f}/s)",
                    "n/a (no target)",
                )
            )
    if HTTP_CROWDTWIST in http.skipped:
        targets.append(
            (
                f"{HTTP_CROWDTWIST}: service/bare app req/s (informational)",
                "-",
                http.skipped[HTTP_CROWDTWIST],
            )
        )
    if http.beside:
        base = http.beside.get("baseline", Row())
        quiet, beside = http.beside.get("quiet", Row()), http.beside.get("beside", Row())
        load = statistics.median(http.beside_rps) if http.beside_rps else 0.0
        load_cpu = statistics.median(http.beside_cpu) if http.beside_cpu else 0.0
        lines += [
            f"### {HTTP_BESIDE} (h2load)",
            "",
            "gRPC GetBadge (as the GetBadge scenario) on the gRPC baseline (`bench/baseline.py`), "
            "on the service above with its HTTP face quiet, and on it while a second h2load sends "
            f"hosted-assertion GETs at {HTTP_BESIDE_RPS:,} a second over "
            f"{HTTP_BESIDE_CONNECTIONS} HTTP/1.1 connections, one request at a time each (the "
            "most badgr-server serves of its cached public badge page here); the three in an "
            "order that turns each round.",
            "",
            "| GetBadge | req/s | p50 ms | p99 ms | failed | per-round req/s |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, row in (
            ("gRPC baseline", base),
            ("service, HTTP face quiet", quiet),
            ("service, beside HTTP load", beside),
        ):
            fails = sum(r.failed for r in row.results) + row.failures + row.cancelled
            lines.append(
                f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
                f"{_fmt(row.median('p99_ms'))} | {fails} | "
                + ", ".join(_fmt(r.rps, 0) for r in row.results)
                + " |"
            )
        ratio = _ratio(beside.median("rps"), base.median("rps"))
        lines += [
            f"| beside / gRPC baseline | {ratio:.0%} | | | | |",
            f"| beside / quiet | {_ratio(beside.median('rps'), quiet.median('rps')):.0%} | | | | |",
            "",
            f"HTTP load beside: {load:,.0f} req/s (median over its whole run), "
            f"{http.beside_failed} answered other than 2xx; its h2load used {load_cpu:.0f}% "
            "of a core.",
            "",
        ]
        targets.append(
            (
                f"gRPC GetBadge beside HTTP load >= {HTTP_BESIDE_TARGET:.0%} of the gRPC "
                "baseline's req/s",
                f"{ratio:.0%}",
                ratio >= HTTP_BESIDE_TARGET,
            )
        )
    return lines


# GetBadge on the service as it runs with metrics and traces off, with metrics on, and with
# tracing configured but not sampled (the OTLP exporter set up, every call's sampling decision
# made, nothing recorded or sent): the cost of each, as a ratio to off in the same run.
# Their targets are a 5% difference, about the spread of a 3-round median here (the same
# variants read 92-106% of off across runs): three times the rounds, still a short section,
# since a round is one GetBadge run per variant.
OBSERVED_ROUND_FACTOR = 3
OBSERVED_VARIANTS: dict[str, dict[str, str]] = {
    "off": {},
    "metrics on": {"BADGE_SERVICE_METRICS_ADDRESS": "127.0.0.1:0"},
    "tracing unsampled": {
        "OTEL_TRACES_EXPORTER": "otlp",
        # Nothing listens there; with always_off nothing is ever sent.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_TRACES_SAMPLER": "always_off",
    },
}


def _observed(report: Report, loader: Loader, main: SeededOrg, url: str, work: Path) -> None:
    """GetBadge on one service process per OBSERVED_VARIANTS entry, alternating."""
    get = get_badge_scenario(main)
    (call,) = get.calls
    servers: list[ServiceServer] = []
    try:
        for name, env in OBSERVED_VARIANTS.items():
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable]
            argv += ["-m", "bench.serve_bench", "--database-url", url]
            log = work / f"observed-{name.replace(' ', '-')}.log"
            servers.append(ServiceServer(name, argv, log))
        for srv in servers:
            _, raw = stub_call(srv.port, get.key, call, "observed")
            expect(pb.Badge.FromString(raw).id == main.middle_id, f"{srv.name}: GetBadge reply")
        for rnd in range(report.profile.rounds * OBSERVED_ROUND_FACTOR):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for srv in order:
                row = report.observed.setdefault(srv.name, Row())
                r = measure(loader, get, srv, row, f"o{rnd}")
                print(f"observed round {rnd + 1} GetBadge {srv.name:18} {r.rps:9.0f} req/s")
        # The metrics variant really counted: its endpoint saw every call its server finished.
        metered = servers[1]
        (listening,) = [
            r for r in read_json_lines(metered.log_path) if r.get("msg") == "metrics listening"
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{listening['port']}/", timeout=30) as f:
            text = f.read().decode()
        started = re.search(
            r'grpc_server_started_total\{grpc_method="GetBadge",[^}]*\} ([0-9.e+]+)', text
        )
        counted = float(started.group(1)) if started else 0.0
        if counted < metered.counts().calls:
            report.errors.append(f"metrics on: {counted:.0f} GetBadge counted, fewer than served")
    finally:
        for srv in servers:
            srv.stop()
    for name, row in report.observed.items():
        if sum(r.failed for r in row.results) or row.failures or row.cancelled:
            report.errors.append(f"GetBadge ({name}): calls failed")


def _render_observed(report: Report, targets: list[tuple[str, str, bool | str]]) -> list[str]:
    """The metrics-and-traces section, and its two targets."""
    if not report.observed:
        return []
    off = report.observed.get("off", Row())
    lines = [
        "## Metrics and traces (GetBadge, service only)",
        "",
        "Three service processes on the same data: metrics and traces off; `--metrics-address`;"
        " tracing configured (OTLP exporter) but not sampled (`OTEL_TRACES_SAMPLER=always_off`)"
        f". Alternating, as above, over {OBSERVED_ROUND_FACTOR} times the rounds (the targets"
        " are a 5% difference). *of off* is the median of each round's ratio to off's run in"
        " the same round (runs seconds apart), so that drift in the machine's speed over the"
        " section cancels rather than adds to the spread.",
        "",
        "| variant | req/s | p50 ms | p99 ms | server CPU us/call | of off | per-round req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in report.observed.items():
        ratio = _paired_ratio(row, off)
        lines.append(
            f"| {name} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
            f"{_fmt(row.median('p99_ms'))} | {_fmt(row.median('server_cpu_us'), 0)} | "
            f"{ratio:.1%} | " + ", ".join(_fmt(r.rps, 0) for r in row.results) + " |"
        )
        if name != "off":
            targets.append(
                (f"GetBadge with {name} within 5% of off (req/s)", f"{ratio:.1%}", ratio >= 0.95)
            )
    return [*lines, ""]


# --- the report ----------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _paired_ratio(row: Row, base: Row) -> float:
    """The median over rounds of ``row``'s req/s over ``base``'s in the same round."""
    pairs = [_ratio(r.rps, b.rps) for r, b in zip(row.results, base.results, strict=False)]
    return statistics.median(pairs) if pairs else 0.0


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**MISS**"


@dataclass(frozen=True)
class DatabaseTargets:
    """The main scenarios' targets on one database: GetBadge and ListBadges(25) as shares of
    the baseline's req/s, CreateBadge and CreateAward in acknowledged writes a second (None:
    no target, the row is informational). The scale, memory and other rows' targets are the
    same on both."""

    get_badge: float
    list_badges: float
    create_badge: float
    create_award: float | None


TARGETS = {
    "SQLite": DatabaseTargets(0.50, 0.25, 1500, None),
    # Issue 14: the same machine with PostgreSQL on it.
    "PostgreSQL": DatabaseTargets(0.35, 0.20, 1500, 1000),
}


def scenario_targets(
    report: Report, name: str, ratio: float, rps: float
) -> list[tuple[str, str, bool | str]]:
    """The targets rows of one main scenario on the run's database (none for the others):
    ``ratio`` is the service's req/s over the baseline's, ``rps`` the service's."""
    t = TARGETS[report.database]
    pg = report.database == "PostgreSQL"
    # SQLite's labels are the ones its reports have always had.
    on = " (PostgreSQL)" if pg else ""
    if name == "GetBadge":
        return [
            (
                f"GetBadge >= {t.get_badge:.0%} of baseline req/s{on}",
                f"{ratio:.0%}",
                ratio >= t.get_badge,
            )
        ]
    if name == "ListBadges(25)":
        return [
            (
                f"ListBadges(25) >= {t.list_badges:.0%} of baseline req/s{on}",
                f"{ratio:.0%}",
                ratio >= t.list_badges,
            )
        ]
    if name == "CreateBadge" and not pg:
        return [("CreateBadge >= 1,500 writes/s (SQLite)", f"{rps:,.0f}/s", rps >= t.create_badge)]
    if name in ("CreateBadge", "CreateAward") and pg:
        target = t.create_badge if name == "CreateBadge" else t.create_award
        assert target is not None
        what = "writes" if name == "CreateBadge" else "awards"
        # Acknowledged and stored: the run's count of stored rows matched the acknowledged.
        acked, stored = report.stored.get(name, (0, -1))
        measured = f"{rps:,.0f}/s ({ratio:.0%} of baseline)"
        if acked != stored:
            measured += (
                f"; {acked:,} acknowledged, {stored:,} stored" if stored >= 0 else "; not counted"
            )
        return [
            (
                f"{name} >= {target:,.0f} acknowledged and stored {what}/s{on}",
                measured,
                rps >= target and acked == stored,
            )
        ]
    if name in ("CreateAward", "ListAwards(25)"):
        # No target for these on this database: shown for comparison only.
        return [
            (
                f"{name}: service/baseline req/s (informational)",
                f"{ratio:.0%} ({rps:,.0f}/s)",
                "n/a (no target)",
            )
        ]
    return []


def render(report: Report) -> str:
    """The Markdown report."""
    p = report.profile
    lines = [
        f"# Benchmark results ({p.name})",
        "",
        f"- When: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; commit {_git_commit()}",
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), Python {platform.python_version()}"
        f", grpcio {grpc.__version__}",
        f"- Database: {report.database}; seeded orgs of {p.main:,} (main), {p.small:,} and "
        f"{p.large:,} (scale) badges, one for CreateBadge and CreateAward, and one with "
        f"{report.awards:,} awards of one badge (ListAwards), in {report.seed_seconds:.1f} s",
        f"- Load: {p.connections} connections x {p.streams} streams (closed loop), "
        f"{p.warmup:g} s warm-up + {p.duration:g} s measured, {p.rounds} round(s), "
        "baseline and service alternating; figures are medians across rounds",
        f"- Load average (1 min) of the machine: {report.load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after (other work on the machine skews both servers alike, "
        "as they alternate)",
        "- Generators: h2load (reads; one pre-encoded gRPC body) and bench/h2gen.py (writes; "
        "pre-encoded HTTP/2 frames with a unique badge name or award recipient per request)",
        "",
        "## Scenarios",
        "",
    ]
    # (target, measured, verdict): True/False pass or miss, a string when there is no verdict
    targets: list[tuple[str, str, bool | str]] = []
    for name, per in report.rows.items():
        base, svc = per.get("baseline", Row()), per.get("service", Row())
        gen = report.generators.get(name, "h2load")
        lines += [f"### {name} ({gen})", ""]
        lines += [
            "| server | req/s | p50 ms | p99 ms | server CPU us/call | failed | per-round req/s |"
        ]
        lines += ["| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for label, row in (("baseline", base), ("service", svc)):
            fails = sum(r.failed for r in row.results) + row.failures + row.cancelled
            lines.append(
                f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
                f"{_fmt(row.median('p99_ms'))} | {_fmt(row.median('server_cpu_us'), 0)} | "
                f"{fails} | " + ", ".join(_fmt(r.rps, 0) for r in row.results) + " |"
            )
        ratio = _ratio(svc.median("rps"), base.median("rps"))
        lat = _ratio(svc.median("p50_ms"), base.median("p50_ms"))
        p99 = _ratio(svc.median("p99_ms"), base.median("p99_ms"))
        cpu = _ratio(svc.median("server_cpu_us"), base.median("server_cpu_us"))
        lines.append(
            f"| service/baseline | {ratio:.0%} | {lat:.1f}x | {p99:.1f}x | {cpu:.1f}x | | |"
        )
        if name in report.durable:
            lines += ["", f"Writes: {report.durable[name]} (service, all runs)."]
        lines.append("")
        targets += scenario_targets(report, name, ratio, svc.median("rps"))

    lines += _render_cpu(report)
    if report.noisy is not None:
        lines += _render_noisy(report.noisy, targets)
    if report.flood is not None:
        lines += _render_flood(report.flood, report.profile.flood_streams, targets)
    lines += _render_http(report, targets)
    lines += [
        "## Scale (service)",
        "",
        "| measure | A | B | B/A | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    rows = report.rows
    first = rows.get("ListBadges(25)", {}).get("service", Row()).median("p50_ms")
    deep = rows.get("ListBadges deep", {}).get("service", Row()).median("p50_ms")
    scale_checks = [
        (
            "Deep page p50 within 1.5x of the first page's",
            "ListBadges(25) p50: first page (A) vs a page token near the end (B), main org",
            first,
            deep,
            1.5,
        ),
    ]
    for what in ("GetBadge", "ListBadges(25)"):
        a = report.scale.get(f"{what} small", Row()).median("p50_ms")
        b = report.scale.get(f"{what} large", Row()).median("p50_ms")
        scale_checks.append(
            (
                f"{what} p50 in a {p.large:,}-badge org within 1.3x of a {p.small:,}-badge org's",
                f"{what} p50: {p.small:,}-badge org (A) vs {p.large:,}-badge org (B)",
                a,
                b,
                1.3,
            )
        )
    for target, label, a, b, limit in scale_checks:
        ratio = b / a if a else 0.0
        ok = bool(a) and bool(b) and ratio <= limit  # a row not measured does not pass
        lines.append(
            f"| {label} | {_fmt(a)} ms | {_fmt(b)} ms | {ratio:.2f}x | <= {limit}x {_verdict(ok)} |"
        )
        targets.append((target, f"{ratio:.2f}x", ok))
    lines += ["", "Scale runs (median):", ""]
    for name, row in report.scale.items():
        lines.append(
            f"- {name}: {_fmt(row.median('rps'), 0)} req/s, p50 {_fmt(row.median('p50_ms'))} ms, "
            f"p99 {_fmt(row.median('p99_ms'))} ms, server CPU "
            f"{_fmt(row.median('server_cpu_us'), 0)} us/call"
        )

    lines += ["", "## Workers (`badge-service serve --workers N`, one port, SO_REUSEPORT)", ""]
    lines += [
        "| scenario | 1 worker req/s | 2 workers req/s | 2/1 | CPU us/call, 1 / 2 workers |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for sc_name in ("GetBadge", "ListBadges(25)"):
        one = report.workers.get(f"{sc_name}|1 worker", Row())
        two = report.workers.get(f"{sc_name}|2 workers", Row())
        lines.append(
            f"| {sc_name} | {_fmt(one.median('rps'), 0)} | {_fmt(two.median('rps'), 0)} | "
            f"{_ratio(two.median('rps'), one.median('rps')):.2f}x | "
            f"{_fmt(one.median('server_cpu_us'), 0)} / {_fmt(two.median('server_cpu_us'), 0)} |"
        )
    lines += [
        "",
        f"Both share the machine's {os.cpu_count()} CPUs with the load generator and any other "
        "work on the machine, so the ratio is noisy; the CPU per call shows the cost per call.",
        "",
    ]
    if report.scale_out or (report.database != "PostgreSQL" and not report.partial):
        lines += _render_scale_out(report)
    lines += _render_watch(report, targets)
    lines += [
        "## Memory",
        "",
        "| process | RSS at end MB | peak RSS MB |",
        "| --- | ---: | ---: |",
    ]
    for name, (rss, hwm) in report.memory.items():
        lines.append(f"| {name} | {rss:.0f} | {hwm:.0f} |")
    svc_rss = report.memory.get("service", (0.0, 0.0))[0]
    targets.append(
        ("Service RSS < 200 MB at the end of the run", f"{svc_rss:.0f} MB", svc_rss < 200)
    )

    lines += ["", *_render_observed(report, targets)]
    if report.imports is not None:
        lines += import_bench.render(report.imports, targets)
    lines += ["## Targets", "", "| target | measured | result |", "| --- | ---: | --- |"]
    for label, measured, passed in targets:
        verdict = passed if isinstance(passed, str) else _verdict(passed)
        lines.append(f"| {label} | {measured} | {verdict} |")
    if p.name == "smoke":
        lines += ["", "Smoke run: tiny data and 1-second runs; the verdicts mean nothing here."]
    for note in report.notes + [f"ERROR: {e}" for e in report.errors]:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# The scenarios whose server CPU per call the report puts beside the other database's.
CPU_SCENARIOS = ("GetBadge", "ListBadges(25)", "CreateBadge", "CreateAward")
# Each database's committed full report: where the other database's figures come from.
LATEST = {"SQLite": "latest.md", "PostgreSQL": "latest-pg.md"}


@dataclass(frozen=True)
class OtherRun:
    """The service's CPU per call in the other database's committed report."""

    database: str
    source: str  # the report's path, relative to the repository
    when: str  # its "When:" line (date and commit)
    cpu_us: dict[str, float]  # scenario -> server CPU us/call of the service


def read_service_cpu(text: str) -> dict[str, float]:
    """The service's server CPU us/call per scenario in a report's Scenarios section (its
    ``| service |`` rows; a scenario without a figure is left out)."""
    out: dict[str, float] = {}
    section = scenario = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section, scenario = line[3:].strip(), ""
        elif line.startswith("### ") and section == "Scenarios":
            scenario = line[4:].rsplit(" (", 1)[0].strip()
        elif scenario and line.startswith("| service |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                out[scenario] = float(cells[4].replace(",", ""))
            except (IndexError, ValueError):
                pass
    return out


def other_run(database: str) -> OtherRun | None:
    """The other database's committed report's CPU figures, if it has one."""
    (other,) = [db for db in LATEST if db != database]
    path = RESULTS / LATEST[other]
    try:
        text = path.read_text()
    except OSError:
        return None
    when = re.search(r"^- When: (.+)$", text, re.MULTILINE)
    return OtherRun(
        other,
        str(path.relative_to(REPO)),
        when.group(1).strip() if when else "unknown",
        read_service_cpu(text),
    )


def _render_cpu(report: Report) -> list[str]:
    """The service's CPU per call in the main scenarios, beside the other database's."""
    here = {
        name: report.rows[name]
        for name in CPU_SCENARIOS
        if name in report.rows and "service" in report.rows[name]
    }
    if not here:
        return []
    other = report.other
    this = report.database
    that = other.database if other else next(db for db in LATEST if db != this)
    sqlite_first = this == "SQLite"
    head_this, head_that = f"{this}, this run", f"{that}, its latest report"
    heads = (head_this, head_that) if sqlite_first else (head_that, head_this)
    lines = [
        "## Server CPU per call",
        "",
        "User + system CPU seconds of the server process during each load run (from "
        "`/proc/PID/stat` before and after the run, warm-up included) over the calls it finished "
        "in that time, in microseconds; medians across rounds. The other database's figures "
        + (
            f"are those of `{other.source}` (when: {other.when}), a run of its own: read the "
            "ratio as a guide, machine noise included."
            if other
            else "are missing: it has no committed report."
        ),
        "",
        f"| scenario | baseline | service, {heads[0]} | service, {heads[1]} | "
        "PostgreSQL / SQLite |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, per in here.items():
        mine = per["service"].median("server_cpu_us")
        theirs = other.cpu_us.get(name) if other else None
        base = per.get("baseline", Row()).median("server_cpu_us")
        pair = (mine, theirs) if sqlite_first else (theirs, mine)
        cells = [_fmt(v, 0) if v is not None else "-" for v in pair]
        sqlite, pg = pair
        ratio = f"{pg / sqlite:.1f}x" if sqlite and pg else "-"
        lines.append(f"| {name} | {_fmt(base, 0)} | {cells[0]} | {cells[1]} | {ratio} |")
    return [*lines, ""]


def _render_watch(report: Report, targets: list[tuple[str, str, bool | str]]) -> list[str]:
    """The idle-watchers section, and its two targets."""
    n = report.profile.watchers
    none, watched = report.watch.get("none", Row()), report.watch.get("watched", Row())
    if not none.results and not watched.results:
        return []
    ratio = _ratio(watched.median("rps"), none.median("rps"))
    from_ack = sorted(a for a, _ in report.fan_out_ms)
    from_send = sorted(b for _, b in report.fan_out_ms)
    worst = from_ack[-1] if from_ack else float("inf")
    idle = statistics.median(report.watch_idle_cpu) if report.watch_idle_cpu else 0.0
    mid_ack = statistics.median(from_ack) if from_ack else 0.0
    mid_send = statistics.median(from_send) if from_send else 0.0
    lines = [
        f"## Idle watchers ({n:,} WatchAwards streams of one org, service)",
        "",
        "| GetBadge | req/s | p50 ms | p99 ms | per-round req/s |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, row in (("no watchers", none), (f"{n:,} idle watchers", watched)):
        lines.append(
            f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
            f"{_fmt(row.median('p99_ms'))} | "
            + ", ".join(_fmt(r.rps, 0) for r in row.results)
            + " |"
        )
    lines += [
        f"| with / without | {ratio:.0%} | | | |",
        "",
        f"- Service CPU while the {n:,} streams are open and idle: {idle:.1f}% of a core "
        "(median over rounds, 2 s each).",
        f"- Fan-out: {len(from_ack)} CreateAwards (a PROGRESS and an AWARDED event each) while the "
        f"streams were open; time until the last of the {n:,} streams had the AWARDED event, "
        f"from the write's reply: median {_fmt(mid_ack)} ms, "
        f"max {_fmt(worst)} ms; from the write's request: median "
        f"{_fmt(mid_send)} ms, max "
        f"{_fmt(from_send[-1] if from_send else 0)} ms. The watchers are Python gRPC clients "
        f"({_watcher_processes(n)} process(es), about 100 streams a connection) on the same "
        "machine, so their own reading is part of the time.",
        "",
    ]
    targets.append(
        (
            f"GetBadge with {n:,} idle watchers >= 90% of GetBadge with none",
            f"{ratio:.0%}",
            ratio >= 0.9,
        )
    )
    targets.append(
        (
            f"An event reaches all {n:,} watchers within 1 s of the write's reply (max)",
            f"{_fmt(worst)} ms",
            worst <= 1000,
        )
    )
    return lines


NOISY_TARGET = 1.5


def _render_noisy(noisy: Noisy, targets: list[tuple[str, str, bool | str]]) -> list[str]:
    """The noisy-neighbour section, and its target."""
    ratio = noisy.ratio
    lines = [
        f"## {NOISY} (service)",
        "",
        f"Org B's CreateAward (as the CreateAward scenario) alone, and while org A runs "
        f"{noisy.a_what}: {noisy.a_request_bytes:,} bytes a request.",
        "",
        "| org B's CreateAward | req/s | p50 ms | p99 ms | failed | per-round req/s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, row in (("alone", noisy.quiet), ("beside org A", noisy.loud)):
        fails = sum(r.failed for r in row.results) + row.failures + row.cancelled
        lines.append(
            f"| {label} | {_fmt(row.median('rps'), 0)} | {_fmt(row.median('p50_ms'))} | "
            f"{_fmt(row.median('p99_ms'))} | {fails} | "
            + ", ".join(_fmt(r.rps, 0) for r in row.results)
            + " |"
        )
    a_rps = statistics.median(noisy.a_rps) if noisy.a_rps else 0.0
    lines += [
        f"| alone / beside org A | {ratio:.2f}x | | | | |",
        "",
        f"Org A: {a_rps:,.0f} creates/s (median).",
        "",
    ]
    targets.append(
        (
            f"{NOISY}: org B's CreateAward within {NOISY_TARGET}x of its rate alone",
            f"{ratio:.2f}x",
            ratio <= NOISY_TARGET,
        )
    )
    return lines


def _git_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return (out.stdout.strip() or "unknown") + (
        " (with local changes)" if dirty.stdout.strip() else ""
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def default_out(smoke: bool, partial: bool, pg: bool) -> Path:
    """Where a run writes its report without ``--out``: ``latest.md`` (a full SQLite run),
    ``latest-pg.md`` (a full PostgreSQL run), ``smoke.md``/``smoke-pg.md`` and
    ``partial.md``/``partial-pg.md`` (``--only``), so that a run on one database never
    overwrites the other's committed report."""
    name = "partial" if partial else "smoke" if smoke else "latest"
    return RESULTS / f"{name}{'-pg' if pg else ''}.md"


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.run [--smoke] [--pg URL] [--rounds N] [--out PATH]``."""
    p = argparse.ArgumentParser(description="benchmark the service against a bare gRPC baseline")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1-second runs (CI)")
    p.add_argument(
        "--pg",
        metavar="URL",
        help="PostgreSQL server to use (a badge_bench database is created on it)",
    )
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--out", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the database and logs")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="run only this scenario (repeatable; no scale or worker rows); Http: the HTTP "
        "face's rows",
    )
    p.add_argument("--connections", type=int, help="connections per load run")
    p.add_argument("--streams", type=int, help="concurrent streams per connection")
    p.add_argument("--watchers", type=int, help="idle WatchAwards streams of the watcher rows")
    p.add_argument(
        "--noisy-streams", type=int, help="org A's calls at a time in the noisy-neighbour run"
    )
    args = p.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    if args.rounds:
        profile = Profile(**{**profile.__dict__, "rounds": args.rounds})
    for name in ("duration", "connections", "streams", "watchers", "noisy_streams"):
        if getattr(args, name):
            profile = Profile(**{**profile.__dict__, name: getattr(args, name)})
    out = args.out or default_out(args.smoke, bool(args.only), args.pg is not None)
    sys.exit(run(profile, args.pg, out, args.keep, frozenset(args.only)))


if __name__ == "__main__":
    main()
