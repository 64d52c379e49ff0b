"""A PostgreSQL cluster of a test's own, which the test may stop, restart and freeze.

The shared server (BADGE_SERVICE_TEST_PG_URL) must never be stopped, so fault tests initdb a
cluster in a directory of their own, on a port of their own, from the binaries of the
installed PostgreSQL (``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin).
initdb and postgres refuse to run as root: as root the cluster runs as the ``postgres`` user
(through setpriv, which execs in place: Popen's own ``user=`` would fork without vfork, and a
plain fork of this process runs gRPC's fork handlers, which crash the child now and then), in
a directory made under the system's temporary directory (pytest's own tmp directories are
private to root).

The postmaster is started directly (not through pg_ctl), so the test holds its process.
``freeze`` SIGSTOPs the postmaster and then every process it started (each backend makes a
process group of its own, so one killpg would reach the postmaster alone), as a hung host
would; ``thaw`` continues them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pg_url


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One initdb'd cluster, its postmaster, and the faults a test may put on it."""

    def __init__(self, bindir: Path, root: Path, log: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = log
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.fail("as root, a private PostgreSQL cluster needs setpriv (util-linux)")
            self._as = [
                setpriv,
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--",
            ]
            os.chown(root, user.pw_uid, user.pw_gid)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def initdb(self) -> None:
        """Creates the cluster (trust authentication, no fsync: it is thrown away)."""
        subprocess.run(
            [
                *self._as,
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Starts the postmaster and waits until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self._as,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=60",
                ],
                stdout=log,
                stderr=log,
                cwd=self.root,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log_text()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start within {timeout}s:\n{self.log_text()}")

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shuts the postmaster down: ``fast`` (SIGINT: sessions are terminated, as an
        operator's ``pg_ctl stop``) or ``immediate`` (SIGQUIT: as a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        sig = signal.SIGINT if mode == "fast" else signal.SIGQUIT
        self.proc.send_signal(sig)
        self.proc.wait(timeout)

    def _children(self) -> list[int]:
        assert self.proc is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # The command may hold spaces and parentheses: the fields follow the last ")".
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
        return found

    def freeze(self) -> None:
        """SIGSTOPs the postmaster and every backend: connections stay open, nothing answers
        (a new connection is accepted by the kernel and then hangs)."""
        assert self.proc is not None
        # The postmaster first, so that it starts no process the loop below would miss.
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Continues a frozen cluster."""
        if self.frozen and self.proc is not None:
            for pid in self._children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.frozen = False

    def log_text(self) -> str:
        """What the postmaster logged."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stops the cluster (hard, if need be) and removes its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            try:
                self.stop("immediate", timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    """A started private cluster, removed afterwards.

    Skips only when BADGE_SERVICE_TEST_PG_URL is unset (CI sets it, and then a missing
    PostgreSQL installation fails the test rather than hiding it)."""
    if pg_url() is None:
        pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL (this starts its own cluster)")
    bindir = _bindir()
    if bindir is None:
        pytest.fail(
            "BADGE_SERVICE_TEST_PG_URL is set but no initdb was found for a private cluster"
        )
    # As root the cluster's user must reach its directory; pytest's are private to root.
    root = Path(tempfile.mkdtemp(prefix="badge-pg-")) if os.geteuid() == 0 else tmp_path / "pg"
    root.mkdir(exist_ok=True)
    cluster = PrivateCluster(bindir, root, tmp_path / "postgres.log")
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.close()
