"""Many processes on many hosts as one service (issue 14): two "hosts", each a real
``badge-service serve --workers 2`` process group, on 127.0.0.2 and 127.0.0.3 over one fresh
PostgreSQL database, migrated once beforehand (``badge-service migrate``; the hosts start with
``--no-migrate``, as replicas behind a load balancer do). Clients use gRPC's own client-side
``round_robin`` over both addresses, or one host's address where a check needs to pick it.

It checks: read-your-writes across hosts; a frequency cap, a Credly duplicate and a claim
code's use limit exact under 100-way races spread over both hosts; WatchAwards on one host
sees every event written on the other, in sequence order, within 1 s, woken by LISTEN/NOTIFY
(the hub says it listens); a revoked key is refused on every worker of both hosts within 1 s;
and SIGKILL of one host's process group under write load loses no acknowledged write while
the other host keeps serving (last: it kills a host).

PostgreSQL only: the hosts share the database over the network, which SQLite cannot.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import badge_template_pb2_grpc as tpb_grpc
from tests.support import Client, Org, create_pg_database, drop_pg_database, pg_url
from tests.test_awards import awards, make_badge, make_class, make_template, member, new_code
from tests.test_awards_concurrency import outcomes
from tests.test_workers import _log_records, _peer_ports

BIN = Path(sys.executable).parent / "badge-service"
HOSTS = ("127.0.0.2", "127.0.0.3")
# Reads that must see a write on another host right away still get a deadline.
CALL_TIMEOUT = 10.0
# What "within 1 s" is measured against.
WITHIN = 1.0

pytestmark = [
    pytest.mark.skipif(
        pg_url() is None,
        reason="the multi-host test runs two hosts over one PostgreSQL database: it needs "
        "BADGE_SERVICE_TEST_PG_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)",
    ),
    pytest.mark.skipif(
        not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to see which worker serves"
    ),
]


def _cli(url: str, *args: str) -> dict[str, Any]:
    """Runs a ``badge-service`` command on the database and returns its JSON output."""
    done = subprocess.run(
        [str(BIN), "--database-url", url, *args, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@dataclass
class Host:
    """One host: a ``serve --workers 2`` parent and its workers, in a process group."""

    address: str
    log: Path
    proc: subprocess.Popen[bytes]
    port: int = 0
    workers: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, ip: str, url: str, tmp: Path) -> Host:
        """Starts the host (returns at once; ``ready`` waits for it)."""
        log = tmp / f"host-{ip}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(BIN), "serve", "--workers", "2", "--address", f"{ip}:0", "--no-migrate"],
                env={**os.environ, "BADGE_SERVICE_DATABASE_URL": url},
                stderr=sink,
                start_new_session=True,  # its own process group: SIGKILL takes the whole host
            )
        return cls(ip, log, proc)

    def ready(self, deadline: float) -> None:
        """Waits until both workers listen."""
        while True:
            records = _log_records(self.log)
            started = [r for r in records if r.get("msg") == "workers started"]
            listening = [r for r in records if r.get("msg") == "listening"]
            if started and len(listening) == 2:
                break
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.workers = [int(p) for p in started[0]["workers"]]  # type: ignore[attr-defined]
        self.port = int(str(started[0]["address"]).rsplit(":", 1)[1])

    @property
    def target(self) -> str:
        """The host's address for a channel."""
        return f"{self.address}:{self.port}"

    def records(self, msg: str) -> list[dict[str, object]]:
        """The host's log records with this message."""
        return [r for r in _log_records(self.log) if r.get("msg") == msg]

    def kill(self) -> None:
        """SIGKILL to the whole process group: the host is gone, as in a power cut."""
        # The group outlives its leader: workers of a parent that died are still in it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _client(target: str, key: str, *, fresh: bool = False, **options: Any) -> Client:
    """A client on ``target`` sending ``key``; ``fresh`` gives it connections of its own."""
    opts: list[tuple[str, Any]] = list(options.items())
    if fresh:
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return Client.connect(0, [("authorization", f"Bearer {key}")], opts, target=target)


@dataclass
class Cluster:
    """Two hosts over one database, an organisation and its keys."""

    url: str
    hosts: tuple[Host, Host]
    org_id: int
    org_uuid: str
    admin_key: str
    reader_key: str
    clients: list[Client] = field(default_factory=list)

    def balanced(self, key: str | None = None) -> Client:
        """A client balancing calls over both hosts with gRPC's round_robin, on connections
        of its own (so that several such clients reach several workers)."""
        a, b = self.hosts
        c = _client(
            f"ipv4:{a.target},{b.target}",
            key or self.admin_key,
            fresh=True,
            **{"grpc.lb_policy_name": "round_robin"},
        )
        self.clients.append(c)
        return c

    def on(self, host: Host, key: str | None = None, *, fresh: bool = False) -> Client:
        """A client of one host."""
        c = _client(host.target, key or self.admin_key, fresh=fresh)
        self.clients.append(c)
        return c

    def as_org(self, admin: Client) -> Org:
        """The organisation, calling through ``admin`` (for the suite's helpers)."""
        return Org(self.org_id, self.org_uuid, self.admin_key, self.reader_key, admin, admin)


def _set_up(url: str, tmp: Path, hosts: list[Host]) -> Cluster:
    """Migrates once (as a deployment's job does: the replicas start with --no-migrate),
    makes the organisation and starts both hosts, appending each to ``hosts`` as it starts."""
    subprocess.run([str(BIN), "--database-url", url, "migrate"], check=True, capture_output=True)
    org = _cli(url, "orgs", "create", "Multi-host")
    reader = _cli(url, "keys", "create", "--org", str(org["org_id"]), "--role", "reader")
    for ip in HOSTS:
        hosts.append(Host.start(ip, url, tmp))
    deadline = time.monotonic() + 60
    for h in hosts:
        h.ready(deadline)
    return Cluster(
        url,
        (hosts[0], hosts[1]),
        int(org["org_id"]),
        str(org["org_uuid"]),
        str(org["api_key"]),
        str(reader["api_key"]),
    )


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    base = pg_url()
    assert base is not None
    url = await create_pg_database(base)
    hosts: list[Host] = []
    made: Cluster | None = None
    try:
        tmp = tmp_path_factory.mktemp("multihost")
        made = await asyncio.to_thread(_set_up, url, tmp, hosts)
        yield made
    finally:
        if made is not None:
            for c in made.clients:
                await c.channel.close()
        for h in hosts:
            h.kill()
        await drop_pg_database(url)


async def _worker_clients(cluster: Cluster, host: Host, key: str) -> dict[int, Client]:
    """A client per worker of ``host``: fresh connections until each worker holds one (the
    kernel hashes each connection to one of the SO_REUSEPORT workers)."""
    by_worker: dict[int, Client] = {}
    for _ in range(60):
        if len(by_worker) == len(host.workers):
            break
        before = {pid: _peer_ports(pid, host.port) for pid in host.workers}
        client = cluster.on(host, key, fresh=True)
        await client.badges.ListBadges(bpb.ListBadgesRequest(page_size=1), timeout=CALL_TIMEOUT)
        new = [pid for pid in host.workers if _peer_ports(pid, host.port) - before[pid]]
        assert len(new) == 1, new
        by_worker.setdefault(new[0], client)
    assert len(by_worker) == len(host.workers)
    return by_worker


def _badge(name: str) -> bpb.CreateBadgeRequest:
    return bpb.CreateBadgeRequest(
        badge=bpb.Badge(
            name=name,
            title=name,
            badge_states=[bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=1)],
        )
    )


def _spread(cluster: Cluster, n: int = 4) -> list[Client]:
    """Balanced clients whose calls go to both hosts (and, on their own connections, to
    the workers the kernel picks for each)."""
    return [cluster.balanced() for _ in range(n)]


# --- read-your-writes -------------------------------------------------------------------------


async def test_a_write_on_one_host_is_read_at_once_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.hosts
    on = {a.address: cluster.on(a), b.address: cluster.on(b)}
    badge = await make_badge(cluster.as_org(on[a.address]), name="ryw-awards")
    for i in range(10):
        # Alternate the direction: write on one host, read at once on the other.
        w, r = (on[a.address], on[b.address]) if i % 2 == 0 else (on[b.address], on[a.address])
        created = await w.badges.CreateBadge(_badge(f"ryw-{i}"), timeout=CALL_TIMEOUT)
        assert await r.badges.GetBadge(bpb.GetBadgeRequest(id=created.id)) == created
        given = await awards(w).CreateAward(
            apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member(f"m{i}")))
        )
        assert await awards(r).GetAward(apb.GetAwardRequest(id=given.id)) == given


# --- races spread over both hosts ---------------------------------------------------------------


async def test_a_frequency_cap_is_exact_under_a_100_way_race(cluster: Cluster) -> None:
    clients = _spread(cluster)
    badge = await make_badge(
        cluster.as_org(clients[0]),
        name="raced-cap",
        frequency=bpb.Frequency(freq_cap=3, freq_period=bpb.FREQUENCY_PERIOD_DAY),
    )
    req = apb.CreateAwardRequest(award=apb.Award(badge_id=badge.id, recipient=member("racer")))
    ok, failed = await outcomes([awards(clients[i % 4]).CreateAward(req) for i in range(100)])
    assert len(ok) == 3
    assert failed == Counter({("FAILED_PRECONDITION", "FREQUENCY_CAP_REACHED"): 97})
    listed = await awards(clients[1]).ListAwards(apb.ListAwardsRequest(badge_id=badge.id))
    assert sorted(x.id for x in listed.awards) == sorted(x.id for x in ok)


async def test_credly_duplicates_are_refused_exactly_under_100_way_races(
    cluster: Cluster,
) -> None:
    clients = _spread(cluster)
    # One vanity slug asked for by 100 callers: one template has it.
    req = tpb.CreateBadgeTemplateRequest(
        organization_id=cluster.org_uuid,
        badge_template=tpb.BadgeTemplate(
            name="Raced Template", vanity_slug="raced", state=tpb.BADGE_TEMPLATE_STATE_ACTIVE
        ),
    )
    ok, failed = await outcomes(
        [_templates(clients[i % 4]).CreateBadgeTemplate(req) for i in range(100)]
    )
    assert len(ok) == 1 and ok[0].vanity_slug == "raced"
    assert failed == Counter({("ALREADY_EXISTS", "VANITY_SLUG_TAKEN"): 99})
    # The same Credly award (template and recipient) from 100 callers: one award.
    template = await make_template(cluster.as_org(clients[0]), name="Raced Awards")
    award = apb.CreateAwardRequest(
        award=apb.Award(badge_template_id=template.id, recipient=apb.Recipient(email="r@b.co"))
    )
    ok, failed = await outcomes([awards(clients[i % 4]).CreateAward(award) for i in range(100)])
    assert len(ok) == 1
    assert failed == Counter({("ALREADY_EXISTS", "AWARD_DUPLICATE"): 99})
    got = await _templates(clients[1]).GetBadgeTemplate(
        tpb.GetBadgeTemplateRequest(organization_id=cluster.org_uuid, id=template.id)
    )
    assert got.badges_count == 1


def _templates(client: Client) -> tpb_grpc.BadgeTemplateServiceStub:
    return client.stub(tpb_grpc.BadgeTemplateServiceStub)


async def test_a_claim_codes_use_limit_is_exact_under_a_100_way_race(cluster: Cluster) -> None:
    clients = _spread(cluster)
    org = cluster.as_org(clients[0])
    bc = await make_class(org, name="Raced Class")
    code = await new_code(org, bc, use_limit=5)
    calls = [
        awards(clients[i % 4]).RedeemClaimCode(
            apb.RedeemClaimCodeRequest(
                id_or_entity_id=bc.entity_id, claim_code=code.code, recipient=member(f"k{i}")
            )
        )
        for i in range(100)
    ]
    ok, failed = await outcomes(calls)
    assert len(ok) == 5
    assert failed == Counter({("FAILED_PRECONDITION", "CLAIM_CODE_USED_UP"): 95})
    listed = await awards(clients[1]).ListAwards(apb.ListAwardsRequest(badge_class_id=bc.id))
    assert sorted(x.id for x in listed.awards) == sorted(x.id for x in ok)


# --- WatchAwards across hosts -----------------------------------------------------------------


async def test_a_watcher_on_one_host_sees_every_event_of_the_other_within_a_second(
    cluster: Cluster,
) -> None:
    a, b = cluster.hosts
    writer = cluster.on(a)
    badge = await make_badge(cluster.as_org(writer), name="watched")
    call = awards(cluster.on(b, cluster.reader_key)).WatchAwards(apb.WatchAwardsRequest())
    loop = asyncio.get_running_loop()
    # Every event (an award of a CrowdTwist badge is two: PROGRESS to its earned state, then
    # AWARDED), and the AWARDED ones' award ids with their arrival times.
    sequences: list[int] = []
    arrived: list[tuple[str, float]] = []
    try:
        after = int(dict(await call.initial_metadata())["x-watch-after-sequence"])

        async def receive(n: int) -> None:
            while len(arrived) < n:
                event = await call.read()
                assert event is not grpc.aio.EOF
                sequences.append(event.sequence)
                if event.type == apb.AWARD_EVENT_TYPE_AWARDED:
                    arrived.append((event.award.id, loop.time()))

        # One at a time, each measured from its acknowledgement to its arrival on host B.
        acked: dict[str, float] = {}
        for i in range(20):
            give = apb.Award(badge_id=badge.id, recipient=member(f"w{i}"))
            reply = await awards(writer).CreateAward(apb.CreateAwardRequest(award=give))
            acked[reply.id] = loop.time()
            await asyncio.wait_for(receive(i + 1), 5.0)
        # Then a burst from both of host A's workers at once, which must arrive whole.
        burst = [cluster.on(a, fresh=True) for _ in range(2)]
        replies = await asyncio.gather(
            *(
                awards(burst[i % 2]).CreateAward(
                    apb.CreateAwardRequest(
                        award=apb.Award(badge_id=badge.id, recipient=member(f"burst{i}"))
                    )
                )
                for i in range(30)
            )
        )
        done = loop.time()
        await asyncio.wait_for(receive(50), 5.0)
    finally:
        call.cancel()
    # Every event, once, in sequence order, with no gap.
    assert sequences == list(range(after + 1, after + 101))
    assert [award for award, _ in arrived[:20]] == list(acked)
    assert {award for award, _ in arrived[20:]} == {r.id for r in replies}
    latencies = sorted(max(0.0, t - acked[award]) for award, t in arrived[:20])
    burst_last = max(0.0, max(t for _, t in arrived[20:]) - done)
    print(  # the measurement, for the report (pytest -s)
        f"watch latency across hosts: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms; burst of 30: last event "
        f"{burst_last * 1000:.1f} ms after the last reply"
    )
    assert latencies[-1] < WITHIN
    assert burst_last < WITHIN
    # The 0.5 s poll alone would pass the bound above too (measured with the listening
    # connection pointed nowhere: 495 ms at the median, as each write lands just after a
    # poll); a notification wakes the hub within milliseconds (measured: 10-12 ms).
    assert statistics.median(latencies) < 0.25
    # Woken by LISTEN/NOTIFY, not by the 0.5 s poll: host B's hub said it listens.
    assert b.records("watch hub listening for notifications"), b.log.read_text()[-3000:]


# --- revoked keys -----------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_on_every_worker_of_every_host_within_a_second(
    cluster: Cluster,
) -> None:
    made = _cli(cluster.url, "keys", "create", "--org", str(cluster.org_id), "--role", "reader")
    key = str(made["api_key"])
    clients: list[tuple[str, int, Client]] = []
    for host in cluster.hosts:
        # Every worker has taken the key (and cached it) before it is revoked.
        for pid, client in (await _worker_clients(cluster, host, key)).items():
            clients.append((host.address, pid, client))
    await asyncio.to_thread(_cli, cluster.url, "keys", "revoke", str(made["key_id"]))
    loop = asyncio.get_running_loop()
    revoked = loop.time()

    async def refused(client: Client) -> float:
        while True:
            try:
                await client.badges.ListBadges(bpb.ListBadgesRequest(page_size=1))
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
                return loop.time() - revoked
            await asyncio.sleep(0.01)

    took = await asyncio.wait_for(asyncio.gather(*(refused(c) for _, _, c in clients)), 10.0)
    print(
        "revoked key refused after "
        + ", ".join(
            f"{h}/{pid}: {t * 1000:.0f} ms" for (h, pid, _), t in zip(clients, took, strict=True)
        )
    )
    assert len({(h, pid) for h, pid, _ in clients}) == 4
    assert max(took) < WITHIN


# --- a host dies under load (last: it kills host A) -----------------------------------------


async def test_killing_a_host_under_write_load_loses_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    a, b = cluster.hosts
    clients = _spread(cluster)
    badge = await make_badge(cluster.as_org(clients[0]), name="under-load")
    loop = asyncio.get_running_loop()
    acked: list[tuple[str, float]] = []
    failed: Counter[str] = Counter()
    stop = asyncio.Event()
    counter = iter(range(1_000_000))

    async def load(client: Client) -> None:
        stub = awards(client)
        while not stop.is_set():
            req = apb.CreateAwardRequest(
                award=apb.Award(badge_id=badge.id, recipient=member(f"load{next(counter)}"))
            )
            try:
                reply = await stub.CreateAward(req, timeout=5.0)
            except grpc.aio.AioRpcError as err:
                failed[err.code().name] += 1
                continue
            acked.append((reply.id, loop.time()))

    tasks = [asyncio.create_task(load(clients[i % 4])) for i in range(8)]
    try:
        await asyncio.sleep(0.7)
        before = len(acked)
        a.kill()
        killed = loop.time()
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    after_kill = [t for _, t in acked if t > killed + 0.5]
    print(
        f"acknowledged {before} writes before the kill, {len(acked) - before} after; "
        f"failed: {dict(failed)}"
    )
    assert before > 0 and after_kill, (before, len(acked), failed)
    # Host B kept serving, and every acknowledged write is there.
    assert b.proc.poll() is None
    reader = cluster.on(b)
    stored: set[str] = set()
    token = ""
    while True:
        page = await awards(reader).ListAwards(
            apb.ListAwardsRequest(badge_id=badge.id, page_size=100, page_token=token),
            timeout=CALL_TIMEOUT,
        )
        stored.update(x.id for x in page.awards)
        token = page.next_page_token
        if not token:
            break
    assert {award for award, _ in acked} <= stored
    # What failed was refused as unavailable (the host went away), nothing else.
    assert set(failed) <= {"UNAVAILABLE"}, failed
