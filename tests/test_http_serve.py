"""``badge-service serve --http-address`` as a real process: bad input is one line; started
as ``make run`` starts it, it serves gRPC and HTTP, and the assertion URLs it writes answer on
its HTTP port; on SIGTERM /readyz turns 503 while the drain delay lasts, then it exits 0; with
--workers every worker serves HTTP on the shared port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from badge_service.api.badges.v1 import award_pb2 as pb
from tests.test_award_openbadges import awards
from tests.test_issuers import create_class, create_issuer, small_class
from tests.test_serve import BIN, EXIT_TIMEOUT, free_port, serving, sqlite_url

ROOT = Path(__file__).resolve().parent.parent


def run_serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "serve", *args],
        env={
            **os.environ,
            "BADGE_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'x.db'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--http-address", "nonsense"], "error: --http-address: 'nonsense' is not HOST:PORT"),
        (["--http-address", "127.0.0.1:99999"], "error: --http-address: '127.0.0.1:99999' is not"),
        (["--http-address", "no-such-host.invalid:80"], "error: --http-address: cannot resolve"),
        (
            ["--address", "127.0.0.1:50999", "--http-address", "127.0.0.1:50999"],
            "error: --http-address must differ from --address",
        ),
    ],
)
def test_bad_http_address_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    done = run_serve(tmp_path, *args)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(says), done.stderr


def test_an_http_address_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(
            tmp_path, "--address", "127.0.0.1:0", "--http-address", f"127.0.0.1:{port}"
        )
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"error: --http-address: cannot listen on 127.0.0.1:{port}: the address is in use"
    )


def test_make_run_serves_http_on_8080() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "serve --http-address 127.0.0.1:8080 $(ARGS)" in makefile


async def test_serves_both_ports_and_drains_readyz_on_sigterm(tmp_path: Path) -> None:
    http_port = free_port()
    args = ("--http-address", f"127.0.0.1:{http_port}", "--drain-delay", "3")
    async with serving(tmp_path, sqlite_url(tmp_path), *args) as server:
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            org = server.new_org()
            client = server.client(org["api_key"])
            issuer = await create_issuer(client)
            # The public base URL defaults to the HTTP address: what gRPC writes, HTTP serves.
            assert issuer.open_badge_id == f"{base}/public/issuers/{issuer.entity_id}"
            bc = await create_class(client, small_class(issuer.entity_id))
            made = await awards(client).CreateAward(
                pb.CreateAwardRequest(
                    award=pb.Award(
                        badge_class_id=bc.entity_id, recipient=pb.Recipient(email="a@example.org")
                    )
                )
            )
            assert made.open_badge_id == f"{base}/public/assertions/{made.id}"
            hosted = await http.get(made.open_badge_id)
            assert (hosted.status_code, hosted.json()["id"]) == (200, made.open_badge_id)
            assert hosted.headers["content-type"] == "application/ld+json"
            assert (await http.get(f"{base}/public/badges/{bc.entity_id}")).status_code == 200

            server.proc.send_signal(signal.SIGTERM)
            saw_503 = False
            for _ in range(40):
                try:
                    resp = await http.get("/readyz")
                except httpx.TransportError:
                    break
                if resp.status_code == 503:
                    saw_503 = True
                    assert resp.json() == {"status": "NOT_SERVING"}
                    # Documents are still served while load balancers take the hint.
                    assert (await http.get(made.open_badge_id)).status_code == 200
                    break
                await asyncio.sleep(0.05)
            assert saw_503, server.stderr()
            code = server.proc.wait(EXIT_TIMEOUT)
            assert code == 0, server.stderr()
            with pytest.raises(httpx.TransportError):
                await http.get("/healthz")


async def test_every_worker_serves_http(tmp_path: Path) -> None:
    http_port = free_port()
    args = ("--workers", "2", "--http-address", f"127.0.0.1:{http_port}")
    async with serving(tmp_path, sqlite_url(tmp_path), *args) as server:
        base = f"http://127.0.0.1:{http_port}"
        statuses = []
        for _ in range(20):
            # A new connection each time, so the kernel spreads them over the workers.
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as http:
                statuses.append((await http.get("/healthz")).status_code)
        assert statuses == [200] * 20
        log = server.stderr()
        assert len(re.findall(r'"http listening"', log)) == 2, log
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(EXIT_TIMEOUT) == 0, server.stderr()


def test_without_http_address_no_web_stack_is_loaded() -> None:
    # The HTTP face costs gRPC nothing when it is off: not even an import.
    code = (
        "import sys, badge_service.cli, badge_service.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn') "
        "or m.startswith(('badge_service.http', 'badge_service.service.hosted'))))"
    )
    done = subprocess.run(
        [str(BIN.parent / "python"), "-c", code], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
