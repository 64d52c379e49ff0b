"""The benchmark's orchestration and report (bench/run.py): where a run writes its report, the
targets table of each database, the server CPU per call beside the other database's report,
the scale-out section, and, against real ``badge-service serve`` processes on two loopback
addresses over each database, a write run spread over both "hosts" (what the scale-out rows
measure). No timing is asserted, and h2load itself is not needed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from badge_service.api.badges.v1 import badge_pb2 as pb
from bench import run
from bench.seed import sample_badge
from tests.support import Backend, Org


def test_each_database_and_kind_of_run_writes_a_report_of_its_own() -> None:
    outs = {
        (smoke, partial, pg): run.default_out(smoke, partial, pg).relative_to(run.RESULTS)
        for smoke in (False, True)
        for partial in (False, True)
        for pg in (False, True)
    }
    assert {key: str(path) for key, path in outs.items()} == {
        (False, False, False): "latest.md",
        (False, False, True): "latest-pg.md",
        (True, False, False): "smoke.md",
        (True, False, True): "smoke-pg.md",
        # --only wins over --smoke: chosen scenarios are never a whole run.
        (False, True, False): "partial.md",
        (True, True, False): "partial.md",
        (False, True, True): "partial-pg.md",
        (True, True, True): "partial-pg.md",
    }


def _row(rps: float, cpu_us: float, p50_ms: float = 10.0) -> run.Row:
    """A scenario's row of one round."""
    return run.Row([run.Result(rps, p50_ms, 2 * p50_ms, 0, int(rps), server_cpu_us=cpu_us)])


def _report(database: str) -> run.Report:
    """A full run's report with the main scenarios measured: the service at 40% (GetBadge),
    22% (ListBadges(25)), 1,600 writes/s (CreateBadge) and 900 awards/s (CreateAward) of a
    baseline at 4,000 req/s; every write stored."""
    report = run.Report(run.FULL, database)
    service = {"GetBadge": 1600, "ListBadges(25)": 880, "CreateBadge": 1600, "CreateAward": 900}
    for i, (name, rps) in enumerate(service.items()):
        report.rows[name] = {
            "baseline": _row(4000, 250 + i),
            "service": _row(rps, 400 + 100 * i),
        }
    report.stored = {"CreateBadge": (9600, 9600), "CreateAward": (5400, 5400)}
    return report


def _targets(text: str) -> dict[str, tuple[str, str]]:
    """The targets table of a rendered report: label -> (measured, result)."""
    table = text.split("## Targets", 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:]]
    return {label.strip(): (measured.strip(), result.strip()) for label, measured, result in rows}


def test_sqlite_targets_are_the_ones_its_reports_always_had() -> None:
    targets = _targets(run.render(_report("SQLite")))
    assert {k: v for k, v in targets.items() if "org" not in k and "page" not in k} == {
        "GetBadge >= 50% of baseline req/s": ("40%", "**MISS**"),
        "ListBadges(25) >= 25% of baseline req/s": ("22%", "**MISS**"),
        "CreateBadge >= 1,500 writes/s (SQLite)": ("1,600/s", "**pass**"),
        "CreateAward: service/baseline req/s (informational)": ("22% (900/s)", "n/a (no target)"),
        "Service RSS < 200 MB at the end of the run": ("0 MB", "**pass**"),
    }


def test_postgresql_targets_are_issue_14s() -> None:
    report = _report("PostgreSQL")
    targets = _targets(run.render(report))
    assert {k: v for k, v in targets.items() if "org" not in k and "page" not in k} == {
        "GetBadge >= 35% of baseline req/s (PostgreSQL)": ("40%", "**pass**"),
        "ListBadges(25) >= 20% of baseline req/s (PostgreSQL)": ("22%", "**pass**"),
        "CreateBadge >= 1,500 acknowledged and stored writes/s (PostgreSQL)": (
            "1,600/s (40% of baseline)",
            "**pass**",
        ),
        "CreateAward >= 1,000 acknowledged and stored awards/s (PostgreSQL)": (
            "900/s (22% of baseline)",
            "**MISS**",
        ),
        "Service RSS < 200 MB at the end of the run": ("0 MB", "**pass**"),
    }
    # Fast enough but not all stored: not a pass. Not counted at all: not a pass either.
    report.stored["CreateBadge"] = (9600, 9599)
    del report.stored["CreateAward"]
    report.rows["CreateAward"]["service"] = _row(1200, 600)
    targets = _targets(run.render(report))
    label = "CreateBadge >= 1,500 acknowledged and stored writes/s (PostgreSQL)"
    assert targets[label] == (
        "1,600/s (40% of baseline); 9,600 acknowledged, 9,599 stored",
        "**MISS**",
    )
    label = "CreateAward >= 1,000 acknowledged and stored awards/s (PostgreSQL)"
    assert targets[label] == ("1,200/s (30% of baseline); not counted", "**MISS**")


def test_a_scale_row_not_measured_does_not_pass() -> None:
    targets = _targets(run.render(_report("PostgreSQL")))
    # The first page was measured, the deep page was not (a run with --only).
    assert targets["Deep page p50 within 1.5x of the first page's"] == ("0.00x", "**MISS**")


def test_cpu_per_call_is_read_back_from_a_rendered_report() -> None:
    text = run.render(_report("SQLite"))
    assert run.read_service_cpu(text) == {
        "GetBadge": 400.0,
        "ListBadges(25)": 500.0,
        "CreateBadge": 600.0,
        "CreateAward": 700.0,
    }
    # Rows of other sections (the HTTP face's "service" rows among them) are not scenarios.
    other = text + "\n## HTTP face\n\n### Http assertion (h2load --h1)\n\n| service | 1 | 2 |\n"
    assert run.read_service_cpu(other) == run.read_service_cpu(text)


def _cpu_table(text: str) -> list[str]:
    section = text.split("## Server CPU per call", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_cpu_per_call_stands_beside_the_other_databases_latest_report() -> None:
    sqlite = run.render(_report("SQLite"))
    report = _report("PostgreSQL")
    for name, row in report.rows.items():
        row["service"] = _row(row["service"].median("rps"), 2 * run.read_service_cpu(sqlite)[name])
    del report.rows["CreateAward"]
    report.other = run.OtherRun(
        "SQLite", "bench/results/latest.md", "2026-12-07 17:57 UTC; commit 6d549d6", {}
    )
    report.other = replace(report.other, cpu_us=run.read_service_cpu(sqlite))
    text = run.render(report)
    assert "`bench/results/latest.md` (when: 2026-12-07 17:57 UTC; commit 6d549d6)" in text
    # SQLite first on both databases' reports, so that the two read alike.
    assert _cpu_table(text) == [
        "| scenario | baseline | service, SQLite, its latest report | service, PostgreSQL, this "
        "run | PostgreSQL / SQLite |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| GetBadge | 250 | 400 | 800 | 2.0x |",
        "| ListBadges(25) | 251 | 500 | 1,000 | 2.0x |",
        "| CreateBadge | 252 | 600 | 1,200 | 2.0x |",
    ]
    # With no report of the other database: this run's figures alone.
    report.other = None
    text = run.render(report)
    assert "are missing: it has no committed report" in text
    assert _cpu_table(text)[2] == "| GetBadge | 250 | - | 800 | - |"


def test_scale_out_rows_show_rates_ratios_and_cpu_on_postgresql_only() -> None:
    report = _report("PostgreSQL")
    one, two, hosts = run.SCALE_OUT_CONFIGS
    for name, rps, cpu in ((one, 1000, 800), (two, 1500, 900), (hosts, 1800, 1000)):
        report.scale_out[f"GetBadge|{name}"] = _row(rps, cpu)
    report.durable[run.SCALE_OUT_CREATE] = "10 acknowledged, 10 stored"
    text = run.render(report)
    section = text.split(f"## {run.SCALE_OUT} ", 1)[1].split("\n## ", 1)[0]
    assert (
        "| GetBadge | 1,000 | 1,500 | 1,800 | 1.50x | 1.80x | 800 / 900 / 1,000 "
        "| 1,000 / 1,500 / 1,800 |"
    ) in section
    assert "| CreateBadge |" not in section  # not measured
    assert "CreateBadge writes: 10 acknowledged, 10 stored (all runs)." in section
    assert "16 connections x 2 streams" in section  # 4 x 8 in flight, as the other rows
    assert "share this machine's" in section
    # SQLite: a note in its place.
    text = run.render(_report("SQLite"))
    section = text.split(f"## {run.SCALE_OUT} ", 1)[1].split("\n## ", 1)[0]
    assert "PostgreSQL only" in section and "|" not in section


def test_load_spreads_over_targets_and_merges() -> None:
    assert run.split_connections(16, 2) == [8, 8]
    assert run.split_connections(5, 2) == [3, 2]
    assert run.split_connections(1, 2) == [1, 1]  # every target gets a connection
    assert run.scale_out_load(run.FULL) == (16, 2)
    assert run.scale_out_load(run.SMOKE) == (8, 1)
    a = run.Result(100.0, 0, 0, 1, 100, 100, 0.5, latencies=[0.001, 0.002, 0.004])
    b = run.Result(50.0, 0, 0, 2, 50, 40, 0.25, latencies=[0.003])
    merged = run.merge_results([a, b])
    assert (merged.rps, merged.failed, merged.requests) == (150.0, 3, 150)
    assert (merged.writes_acknowledged, merged.client_cpu_s) == (140, 0.75)
    assert merged.latencies == [0.001, 0.002, 0.003, 0.004]
    assert (merged.p50_ms, merged.p99_ms) == (2.0, 4.0)  # nearest rank over both
    assert run.merge_results([a]) is a


async def test_a_write_run_spread_over_two_hosts_counts_and_stores_every_write(
    backend: Backend, org: Org, tmp_path: Path
) -> None:
    hosts = await asyncio.to_thread(
        lambda: run.Hosts(
            "2 hosts",
            [
                run.WorkersServer(1, backend.url, tmp_path / f"{ip}.log", host=ip)
                for ip in run.SCALE_OUT_HOSTS
            ],
        )
    )
    try:
        assert hosts.targets == [
            (ip, srv.port) for ip, srv in zip(run.SCALE_OUT_HOSTS, hosts.servers, strict=True)
        ]
        profile = replace(run.SMOKE, duration=0.5, warmup=0.1)
        loader = run.Loader("h2load (not used)", profile, tmp_path)
        create = run.Call(
            "CreateBadge",
            pb.CreateBadgeRequest(badge=sample_badge(f"bench-{run.PLACEHOLDER}")),
            pb.Badge,
            run._set_badge_name,
        )
        scenario = run.Scenario(
            run.SCALE_OUT_CREATE, [create], org.admin_key, lambda _r: None, "h2gen"
        )
        row = run.Row()
        result = await asyncio.to_thread(
            run.measure, loader, scenario, hosts, row, "t", load=(4, 2)
        )
        per_host = [srv.counts().calls for srv in hosts.servers]
        totals = hosts.counts()
    finally:
        assert await asyncio.to_thread(hosts.stop) == 0
    assert result.failed == 0 and (row.failures, row.cancelled, row.failed_statuses) == (0, 0, {})
    # The access logs' statuses, added up over the hosts.
    assert totals.calls == sum(per_host) == sum(totals.statuses.values())
    assert set(totals.statuses) <= {"OK", "CANCELLED"}
    assert all(n > 0 for n in per_host), per_host  # both hosts served
    assert result.server_cpu_us > 0
    assert result.latencies == []  # not kept once the percentiles are taken
    names: list[str] = []
    token = ""
    while True:
        page = await org.reader.badges.ListBadges(
            pb.ListBadgesRequest(page_size=500, page_token=token)
        )
        names += [b.name for b in page.badges]
        token = page.next_page_token
        if not token:
            break
    # Every acknowledged create is stored, each under its own name: each host's generator
    # counts from 0, under a prefix of its own.
    assert len(names) == len(set(names)) == result.writes_acknowledged == sum(per_host)
    prefixes = {name.rsplit("-", 1)[0] for name in names}
    assert prefixes == {"scaleout-t-1h0", "scaleout-t-1h1"}
