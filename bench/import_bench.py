"""The import row of the benchmark: ``badge-service import crowdtwist`` of 100,000 badges,
timed end to end as a team would run it (the console script, a file of CrowdTwist list pages
appended one after another, a new organisation). ``python -m bench.run --only Import`` runs it
alone, without seeding the rest of the benchmark's data; the full run includes it.

The issue's target: 100,000 CrowdTwist badges import in under a minute on SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMPORT = "Import"
BADGES = 100_000
SMOKE_BADGES = 1_000
TARGET_SECONDS = 60.0
_PAGE = 25  # CrowdTwist's largest page
_BIN = Path(sys.executable).parent / "badge-service"


@dataclass
class ImportRun:
    """One timed import: how many badges, the seconds it took and its summary."""

    badges: int
    seconds: float
    summary: dict[str, Any]
    database: str


def _badge(badge_id: int) -> dict[str, Any]:
    """A badge as CrowdTwist's list answers it (seed 001's sample, its own key spellings)."""
    return {
        "id": str(badge_id),
        "name": f"badge_{badge_id}",
        "title": f"Game Attendance {badge_id}",
        "badge_states ": [
            {"state": "unearned", "order": 1, "description": "Attend a game"},
            {"state": "earned", "order": 2, "description": "You attended a game, way to go!"},
        ],
        "date_start": "2019-05-03T19:01:23.000Z",
        "date_end": None,
        "display_date_start": "2019-05-03T19:01:23.000Z",
        "display_date_end": None,
        "is_enabled": 1,
        "frequency": {
            "freq_cap": 1,
            "freq_period_id": 1,
            "freq_period_name": "week",
            "freq_max": 5,
        },
        "tags": [{"tag_name": "Football", "tag_id": 1}],
        "badge_extra_data": {"customer_variable": "customer data"},
        "segment": [
            {"name": "Canada Members", "subscription_id": 1043, "eligibility_type": "inclusion"}
        ],
    }


# Far above the ids of the badges the full run seeds first (about 1.1 million): kept ids that
# another organisation's badge holds are refused, as they must be.
FIRST_ID = 10_000_001


def write_pages(path: Path, count: int, first_id: int = FIRST_ID) -> None:
    """``count`` badges as CrowdTwist list pages of 25, one JSON document a line."""
    pages = -(-count // _PAGE)
    with path.open("w") as out:
        for number in range(1, pages + 1):
            start = first_id + (number - 1) * _PAGE
            ids = range(start, min(start + _PAGE, first_id + count))
            doc = {
                "paging": {"total": count, "pages": pages, "next_page": None, "prev_page": None},
                "badges": [_badge(i) for i in ids],
            }
            out.write(json.dumps(doc) + "\n")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": url}
    return subprocess.run([str(_BIN), *args], env=env, capture_output=True, text=True, check=False)


def measure(url: str, work: Path, *, smoke: bool) -> ImportRun:
    """Imports the badges into a new organisation of the database at ``url``; raises with
    the command's output when it fails or refuses a record."""
    count = SMOKE_BADGES if smoke else BADGES
    path = work / "crowdtwist-import.json"
    write_pages(path, count)
    made = _cli(url, "orgs", "create", "Import Bench", "--json")
    if made.returncode != 0:
        raise RuntimeError(f"orgs create failed: {made.stderr}")
    org_id = json.loads(made.stdout)["org_id"]
    started = time.monotonic()
    done = _cli(url, "import", "crowdtwist", str(path), "--org", str(org_id), "--json")
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"import failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr}"
        )
    summary = json.loads(done.stdout)
    if summary["created"] != count:
        raise RuntimeError(f"import created {summary['created']} of {count}")
    database = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return ImportRun(count, seconds, summary, database)


def render(run: ImportRun, targets: list[tuple[str, str, bool | str]]) -> list[str]:
    """The import section, and its target (SQLite's; on PostgreSQL shown without verdict)."""
    rate = run.badges / run.seconds if run.seconds else 0.0
    lines = [
        "## Import (badge-service import crowdtwist)",
        "",
        f"{run.badges:,} CrowdTwist badges (list pages of 25, one per line, seed 001's shape) "
        f"into a new organisation on {run.database}, the console script timed end to end "
        "(start, migrations check, reading and decoding the file, every create rule, "
        "500 records a transaction with a savepoint each).",
        "",
        "| badges | seconds | badges/s | created | refused |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {run.badges:,} | {run.seconds:.1f} | {rate:,.0f} | {run.summary['created']:,} | "
        f"{run.summary['refused']:,} |",
        "",
    ]
    label = f"Import of {BADGES:,} CrowdTwist badges < {TARGET_SECONDS:.0f} s (SQLite)"
    verdict: bool | str = run.seconds < TARGET_SECONDS
    if run.database != "SQLite":
        verdict = "n/a on PostgreSQL"
    if run.badges != BADGES:
        verdict = f"n/a ({run.badges:,} badges)"
    targets.append((label, f"{run.seconds:.1f} s", verdict))
    return lines


def render_alone(run: ImportRun) -> str:
    """The report of ``--only Import``: the section and its target."""
    targets: list[tuple[str, str, bool | str]] = []
    lines = ["# Benchmark results (import only)", "", *render(run, targets)]
    lines += ["## Targets", "", "| target | measured | result |", "| --- | ---: | --- |"]
    for label, measured, passed in targets:
        verdict = passed if isinstance(passed, str) else ("**pass**" if passed else "**MISS**")
        lines.append(f"| {label} | {measured} | {verdict} |")
    return "\n".join(lines) + "\n"
