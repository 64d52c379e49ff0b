"""``badge-service serve --workers 2``: two processes on one port (SO_REUSEPORT) over one SQLite
file. A write acknowledged by one worker is seen by the next read on the other; the kernel
spreads fresh connections over both; SIGTERM to the parent stops both gracefully, exit 0.

Which worker holds a connection is read from /proc: the server-side socket of each connection
is an fd of exactly one worker process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.api.badges.v1 import badge_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent / "badge-service"
ESTABLISHED = "01"

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to see which worker serves"
)


def _log_records(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _peer_ports(pid: int, server_port: int) -> set[int]:
    """Client ports of the established connections to ``server_port`` that ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            if state == ESTABLISHED and inode in inodes:
                if int(local.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


class Cluster:
    """A ``serve --workers 2`` parent process and what it logged."""

    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{tmp / 'workers.db'}"
        created = subprocess.run(
            [str(BIN), "--database-url", self.url, "orgs", "create", "Workers", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = json.loads(created.stdout)["api_key"]
        self.log = tmp / "serve.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "--workers", "2", "--address", "127.0.0.1:0"],
                env={**os.environ, "BADGE_SERVICE_DATABASE_URL": self.url},
                stderr=sink,
            )
        deadline = time.monotonic() + 60
        while True:
            records = _log_records(self.log)
            started = [r for r in records if r.get("msg") == "workers started"]
            listening = [r for r in records if r.get("msg") == "listening"]
            if started and len(listening) == 2:
                break
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.workers: list[int] = list(started[0]["workers"])  # type: ignore[call-overload]
        self.port = int(str(started[0]["address"]).rsplit(":", 1)[1])
        assert {int(str(r["port"])) for r in listening} == {self.port}

    def connect(self) -> tuple[grpc.Channel, pb_grpc.BadgeServiceStub, int]:
        """A new TCP connection (no subchannel sharing); returns it and the worker serving it."""
        before = {pid: _peer_ports(pid, self.port) for pid in self.workers}
        channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        stub = pb_grpc.BadgeServiceStub(channel)
        stub.ListBadges(pb.ListBadgesRequest(page_size=1), metadata=self.auth, timeout=10)
        new = {pid for pid in self.workers if _peer_ports(pid, self.port) - before[pid]}
        assert len(new) == 1, new
        return channel, stub, new.pop()

    @property
    def auth(self) -> list[tuple[str, str]]:
        """Call credentials."""
        return [("authorization", f"Bearer {self.key}")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
        for pid in c.workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_writes_on_one_worker_are_read_on_the_other(cluster: Cluster) -> None:
    assert len(set(cluster.workers)) == 2 and cluster.proc.pid not in cluster.workers
    by_worker: dict[int, list[pb_grpc.BadgeServiceStub]] = {pid: [] for pid in cluster.workers}
    channels: list[grpc.Channel] = []
    # Fresh connections land on either worker (the kernel hashes each one); 2**-39 odds that
    # forty all land on the same worker.
    for _ in range(40):
        channel, stub, pid = cluster.connect()
        channels.append(channel)
        by_worker[pid].append(stub)
    assert all(by_worker.values()), {pid: len(s) for pid, s in by_worker.items()}
    a, b = cluster.workers
    try:
        for i in range(20):
            # Alternate the direction: write on one worker, read at once on the other.
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            w = by_worker[writer][i % len(by_worker[writer])]
            r = by_worker[reader][i % len(by_worker[reader])]
            created = w.CreateBadge(
                pb.CreateBadgeRequest(
                    badge=pb.Badge(
                        name=f"w-{i}",
                        title=f"Worker badge {i}",
                        badge_states=[
                            pb.BadgeState(state=pb.BADGE_STATE_TYPE_EARNED, order=1),
                        ],
                    )
                ),
                metadata=cluster.auth,
                timeout=10,
            )
            got = r.GetBadge(pb.GetBadgeRequest(id=created.id), metadata=cluster.auth, timeout=10)
            assert got == created
            listed = r.ListBadges(pb.ListBadgesRequest(page_size=25), metadata=cluster.auth)
            assert listed.total_size == i + 1
            assert [x.name for x in listed.badges][-1] == f"w-{i}"

        # An update on one worker and a delete on the other are seen by the next read too.
        updated = by_worker[a][0].UpdateBadge(
            pb.UpdateBadgeRequest(
                badge=pb.Badge(id=created.id, title="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            ),
            metadata=cluster.auth,
        )
        assert updated.title == "Renamed"
        seen = by_worker[b][0].GetBadge(pb.GetBadgeRequest(id=created.id), metadata=cluster.auth)
        assert seen.title == "Renamed"
        by_worker[b][0].DeleteBadge(pb.DeleteBadgeRequest(id=created.id), metadata=cluster.auth)
        with pytest.raises(grpc.RpcError) as err:
            by_worker[a][0].GetBadge(pb.GetBadgeRequest(id=created.id), metadata=cluster.auth)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for channel in channels:
            channel.close()


def test_a_key_created_while_serving_works_on_every_worker(cluster: Cluster) -> None:
    stubs: dict[int, pb_grpc.BadgeServiceStub] = {}
    channels: list[grpc.Channel] = []
    while len(stubs) < 2 and len(channels) < 60:
        channel, stub, pid = cluster.connect()
        channels.append(channel)
        stubs.setdefault(pid, stub)
    assert len(stubs) == 2
    try:
        # A key nobody has used yet is unknown to both workers' auth caches, so neither can
        # hold a stale negative entry for it: the first call on each worker reads the table.
        made = subprocess.run(
            [str(BIN), "--database-url", cluster.url, "keys", "create", "--org", "1", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        fresh = [("authorization", f"Bearer {json.loads(made.stdout)['api_key']}")]
        for stub in stubs.values():
            listed = stub.ListBadges(pb.ListBadgesRequest(), metadata=fresh, timeout=10)
            assert listed.total_size == 0
        # And a wrong key is refused on both.
        for stub in stubs.values():
            with pytest.raises(grpc.RpcError) as err:
                stub.ListBadges(pb.ListBadgesRequest(), metadata=[("authorization", "Bearer nope")])
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for channel in channels:
            channel.close()


def test_sigterm_stops_every_worker_and_exits_zero(cluster: Cluster) -> None:
    channel, _stub, _pid = cluster.connect()
    channel.close()
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(30) == 0
    for pid in cluster.workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    records = _log_records(cluster.log)
    assert sum(1 for r in records if r.get("msg") == "shutting down") == 2
    assert [r.get("workers") for r in records if r.get("msg") == "stopped"][-1] == 2


def test_workers_stop_when_the_parent_is_killed(cluster: Cluster) -> None:
    # SIGKILL gives the parent no chance to forward anything; each worker notices on its own.
    cluster.proc.kill()
    cluster.proc.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in cluster.workers):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)
    shutdowns = [r for r in _log_records(cluster.log) if r.get("msg") == "shutting down"]
    assert len(shutdowns) == 2


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "Z"
