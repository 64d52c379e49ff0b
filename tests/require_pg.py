"""A pytest plugin that makes skipped PostgreSQL tests fail where they must run.

The PostgreSQL half of the suite skips, naming ``BADGE_SERVICE_TEST_PG_URL`` in its reason,
when that variable is unset: right on a laptop, wrong in CI, where a typo or an unreachable
server would otherwise pass with half the suite unrun. With ``BADGE_SERVICE_REQUIRE_PG=1``
(``.ci/run`` sets it) such a skip is reported as a failure of its test instead, and the session
ends with a line saying why. Skips for any other reason (cases that only exist on SQLite, a
missing tool) stay skips.

``tests/conftest.py`` loads it; ``tests/test_require_pg.py`` runs pytest on small test files
with it to check the rule.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

PG_ENV = "BADGE_SERVICE_TEST_PG_URL"
REQUIRE_ENV = "BADGE_SERVICE_REQUIRE_PG"


def required() -> bool:
    """Whether skips for want of PostgreSQL must fail this run."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason of a skipped report ("" when there is none to read)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def _for_want_of_pg(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """The skip reason if ``report`` is a skip for want of PostgreSQL that must fail."""
    if not report.skipped or hasattr(report, "wasxfail") or not required():
        return None
    reason = _skip_reason(report)
    return reason if PG_ENV in reason else None


def _message(reason: str) -> str:
    return (
        f"{REQUIRE_ENV} is set, so PostgreSQL tests must run, but this one was skipped: "
        f"{reason.removeprefix('Skipped: ')}\nSet {PG_ENV} to a reachable PostgreSQL URL "
        f"(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test), or unset {REQUIRE_ENV}."
    )


# Node ids turned into failures in this session, for the summary line.
_FAILED = pytest.StashKey[list[str]]()


def _failed(config: pytest.Config) -> list[str]:
    return config.stash.setdefault(_FAILED, [])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turns a skip for want of PostgreSQL (in setup, by a marker or in the test) into a
    failure when PostgreSQL is required."""
    report = yield
    reason = _for_want_of_pg(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = _message(reason)
        _failed(item.config).append(item.nodeid)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """The same for a whole module skipped at import (``allow_module_level``)."""
    report = yield
    reason = _for_want_of_pg(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = _message(reason)
        _failed(collector.config).append(collector.nodeid)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the end naming the rule, so the failures' cause is not missed."""
    failed = _failed(terminalreporter.config)
    if failed:
        terminalreporter.write_line(
            f"{len(failed)} skip(s) turned into failures: PostgreSQL was required "
            f"({REQUIRE_ENV}) but {PG_ENV} was not usable",
            red=True,
            bold=True,
        )
