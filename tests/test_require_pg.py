"""tests/require_pg.py, the plugin that makes CI fail when the PostgreSQL tests skip: pytest
runs, as a subprocess, small test files that skip the ways the suite does (a fixture, a
marker, the test body, a whole module), with and without BADGE_SERVICE_REQUIRE_PG and the
PostgreSQL URL; only skips for want of BADGE_SERVICE_TEST_PG_URL fail, and only when
PostgreSQL is required."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.require_pg import PG_ENV, REQUIRE_ENV

ROOT = Path(__file__).resolve().parent.parent

SKIPS = f'''
import os

import pytest

PG_REASON = "PostgreSQL tests need {PG_ENV} (e.g. postgresql+asyncpg://...)"


@pytest.fixture
def pg():
    if not os.environ.get("{PG_ENV}"):
        pytest.skip(PG_REASON)
    return os.environ["{PG_ENV}"]


def test_in_a_fixture(pg):
    assert pg


@pytest.mark.skipif(not os.environ.get("{PG_ENV}"), reason=PG_REASON)
def test_by_a_marker():
    pass


def test_in_the_body():
    if not os.environ.get("{PG_ENV}"):
        pytest.skip(PG_REASON)


def test_sqlite_only():
    pytest.skip("the plan of SQLite's on-loop reads")


@pytest.mark.xfail(reason="expected to fail, not a skip", strict=True)
def test_expected_failure():
    raise AssertionError("{PG_ENV}")


def test_passes():
    pass
'''

MODULE_SKIP = f'''
import os

import pytest

if not os.environ.get("{PG_ENV}"):
    pytest.skip("PostgreSQL tests need {PG_ENV}", allow_module_level=True)


def test_never_collected_without_postgresql():
    pass
'''


def run_pytest(tmp: Path, source: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest, with the plugin, on a test file holding ``source`` and one with a passing test;
    the run's environment is ours minus both variables, plus ``env``."""
    (tmp / "test_sample.py").write_text(source)
    (tmp / "test_other.py").write_text("def test_other():\n    pass\n")
    base = {k: v for k, v in os.environ.items() if k not in {PG_ENV, REQUIRE_ENV}}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.require_pg",
            "-p",
            "no:cacheprovider",
            "-rA",
            "--rootdir",
            str(tmp),
            "-c",
            os.devnull,
            str(tmp),
        ],
        cwd=tmp,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcomes(output: str) -> dict[str, str]:
    """Each test's outcome from the -rA summary ("PASSED", "SKIPPED", "FAILED", "ERROR",
    "XFAIL"), keyed by test name."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|XFAIL|SKIPPED) \S*?::(\w+)", line)
        if m:
            found[m.group(2)] = m.group(1)
    skipped = re.findall(r"^SKIPPED \[\d+\] \S+:\d+: (.*)$", output, re.MULTILINE)
    if skipped:  # -rA writes skips by location and reason, not by name
        found["(skipped)"] = " | ".join(skipped)
    return found


def test_without_the_requirement_postgresql_tests_skip(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SKIPS, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"2 passed, 4 skipped, 1 xfailed", result.stdout), result.stdout


def test_required_and_missing_fails_every_skip_for_want_of_it(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SKIPS, {REQUIRE_ENV: "1"})
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    got = outcomes(out)
    # A skip in a fixture or by a marker fails in setup, which pytest reports as an error.
    assert got["test_in_a_fixture"] == "ERROR", got
    assert got["test_by_a_marker"] == "ERROR", got
    assert got["test_in_the_body"] == "FAILED", got
    assert (got["test_passes"], got["test_expected_failure"]) == ("PASSED", "XFAIL"), got
    # The SQLite-only skip stays a skip, and is the only one.
    assert got["(skipped)"] == "the plan of SQLite's on-loop reads", got
    assert re.search(r"1 failed, 2 passed, 1 skipped, 1 xfailed, 2 errors", out), out
    assert f"{REQUIRE_ENV} is set, so PostgreSQL tests must run, but this one was skipped" in out
    assert f"Set {PG_ENV} to a reachable PostgreSQL URL" in out
    assert (
        f"3 skip(s) turned into failures: PostgreSQL was required ({REQUIRE_ENV}) "
        f"but {PG_ENV} was not usable"
    ) in out


def test_required_and_given_runs_them(tmp_path: Path) -> None:
    env = {REQUIRE_ENV: "1", PG_ENV: "postgresql+asyncpg://postgres@127.0.0.1:5432/test"}
    result = run_pytest(tmp_path, SKIPS, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"5 passed, 1 skipped, 1 xfailed", result.stdout), result.stdout


def test_a_module_skipped_for_want_of_postgresql_fails_when_required(tmp_path: Path) -> None:
    for env in ({}, {REQUIRE_ENV: "0"}, {REQUIRE_ENV: ""}):
        result = run_pytest(tmp_path, MODULE_SKIP, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"1 passed, 1 skipped", result.stdout), result.stdout
    result = run_pytest(tmp_path, MODULE_SKIP, {REQUIRE_ENV: "1"})
    assert result.returncode != 0, result.stdout
    assert f"{REQUIRE_ENV} is set, so PostgreSQL tests must run" in result.stdout
    assert "1 skip(s) turned into failures: PostgreSQL was required" in result.stdout
