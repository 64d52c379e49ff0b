"""``badge-service import``, run as the console script on a real database, then read back over
gRPC from a real server: every seed's example answer imports as it is and answers the seed's
lookups by its original ids; idempotence, --dry-run, --atomic, kept ids another org holds,
and messy records named by file, position, key and reason."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from badge_service.api.badges.v1 import badge_class_pb2 as cpb
from badge_service.api.badges.v1 import (
    badge_class_pb2_grpc,
    badge_template_pb2_grpc,
    issuer_pb2_grpc,
)
from badge_service.api.badges.v1 import badge_pb2 as bpb
from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import custom_field_pb2 as fpb
from badge_service.api.badges.v1 import issuer_pb2 as ipb
from badge_service.api.badges.v1 import org_meta_pb2 as mpb
from badge_service.config import Settings
from badge_service.server import start
from tests import test_cli
from tests.support import Client, expect_error
from tests.test_cli import Db, cli

# test_cli's fixture: a fresh SQLite file, and a fresh PostgreSQL database.
db = test_cli.db

DATA = Path(__file__).parent / "data" / "import"
CREDLY_ORG = "3978643a-fbf7-423c-865e-d011dd2428d8"  # the owner of seed 003's list
CREDLY_ORG_4 = "4808bf50-cce5-403c-a876-69dad293384c"  # the owner of its single template


def org(db: Db, name: str, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(db, "orgs", "create", name, "--json", *extra).stdout)
    return result


def run_import(
    db: Db, vendor: str, org_id: int, *files: Path | str, ok: bool = True, **flags: bool
) -> dict[str, Any]:
    """The import's JSON summary (exit 0 when ``ok``: nothing refused, else 1)."""
    args = ["import", vendor, *map(str, files), "--org", str(org_id), "--json"]
    args += [f"--{name.replace('_', '-')}" for name, on in flags.items() if on]
    result = cli(db, *args, check=False)
    assert result.returncode == (0 if ok else 1), (result.returncode, result.stdout, result.stderr)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def counts(summary: dict[str, Any]) -> tuple[int, int, int, int]:
    return (summary["created"], summary["updated"], summary["unchanged"], summary["refused"])


@asynccontextmanager
async def server(db: Db) -> AsyncIterator[Any]:
    running = await start(Settings(address="127.0.0.1:0", database_url=db.url, log_level="ERROR"))
    clients: list[Client] = []

    def client(key: str) -> Client:
        c = Client.connect(running.port, [("authorization", f"Bearer {key}")])
        clients.append(c)
        return c

    try:
        yield client
    finally:
        for c in clients:
            await c.channel.close()
        await running.stop(grace=1)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def seed(name: str) -> Any:
    return json.loads((DATA / name).read_text())


# --- Each seed's example, as is -------------------------------------------------------------


async def test_crowdtwist_seed_page_keeps_its_badge_id(db: Db) -> None:
    acme = org(db, "Acme")
    summary = run_import(db, "crowdtwist", acme["org_id"], DATA / "crowdtwist_badges.json")
    assert counts(summary) == (1, 0, 0, 0) and summary["committed"] is True
    again = run_import(db, "crowdtwist", acme["org_id"], DATA / "crowdtwist_badges.json")
    assert counts(again) == (0, 0, 1, 0)

    async with server(db) as client:
        badges = client(acme["api_key"]).badges
        got = await badges.GetBadge(bpb.GetBadgeRequest(id=123456))
        assert (got.id, got.name, got.title) == (123456, "badge_001", "Game Attendance")
        # The seed's "badge_states " (a blank in the key) is read as badge_states.
        assert [s.description for s in got.badge_states] == [
            "Attend a game to show your fanage",
            "You attended a game, way to go!",
        ]
        assert [s.state for s in got.badge_states] == [
            bpb.BADGE_STATE_TYPE_UNEARNED,
            bpb.BADGE_STATE_TYPE_EARNED,
        ]
        assert got.frequency.freq_period == bpb.FREQUENCY_PERIOD_WEEK
        assert [(t.tag_name, t.tag_id) for t in got.tags] == [("Football", 1), ("Cricket", 2)]
        assert got.badge_extra_data["customer_variable"] == "customer data"
        assert got.date_start.ToJsonString() == "2019-05-03T19:01:23Z"
        page = await badges.ListBadges(bpb.ListBadgesRequest(page=1, page_size=15))
        assert [b.id for b in page.badges] == [123456] and page.paging.total == 1
        # Ids given afterwards come after the kept one (PostgreSQL's sequence was moved).
        made = await badges.CreateBadge(
            bpb.CreateBadgeRequest(
                badge=bpb.Badge(
                    name="badge_002",
                    title="Second",
                    badge_states=[bpb.BadgeState(state=bpb.BADGE_STATE_TYPE_EARNED, order=1)],
                )
            )
        )
        assert made.id > 123456


async def test_capillary_seeds_keep_the_custom_field_id(db: Db) -> None:
    acme = org(db, "Acme")
    files = (DATA / "capillary_org_meta.json", DATA / "capillary_custom_field.json")
    summary = run_import(db, "capillary", acme["org_id"], *files)
    # The org meta replaces the org's (empty) tags: an update; the field is created.
    assert counts(summary) == (1, 1, 0, 0)
    hint = "(orgs create --id keeps Capillary's orgId)"
    assert [w["warning"] for w in summary["warnings"]] == [
        f"orgId 100458 is imported into organisation {acme['org_id']} {hint}",
        f"orgId 100737 is imported into organisation {acme['org_id']} {hint}",
    ]
    assert counts(run_import(db, "capillary", acme["org_id"], *files)) == (0, 0, 2, 0)

    async with server(db) as client:
        c = client(acme["api_key"])
        field = await c.fields.GetCustomField(
            fpb.GetCustomFieldRequest(id="69c0e1c823ba8848e5979a67")
        )
        assert (field.name, field.default_value, field.is_mandatory) == ("CF20 dates", "0", False)
        assert field.created_on_iso == "2026-03-23T06:46:32Z"
        assert field.created_by == 75197372
        meta = await c.meta.GetOrgMeta(mpb.GetOrgMetaRequest())
        assert [(t.key, t.description, t.mandatory) for t in meta.tags] == [
            ("custom field 1", "TEST", True)
        ]


async def test_credly_seeds_keep_template_and_organisation_uuids(db: Db) -> None:
    acme = org(db, "Organization 1", "--uuid", CREDLY_ORG)
    other = org(db, "Organization 4", "--uuid", CREDLY_ORG_4)
    assert (acme["org_uuid"], other["org_uuid"]) == (CREDLY_ORG, CREDLY_ORG_4)
    listing = run_import(db, "credly", acme["org_id"], DATA / "credly_badge_templates.json")
    # Template 1 requires template 2, which comes after it in the page: 2 goes in first.
    assert counts(listing) == (2, 0, 0, 0) and listing["warnings"] == []
    single = run_import(db, "credly", other["org_id"], DATA / "credly_badge_template.json")
    assert counts(single) == (1, 0, 0, 0)
    again = run_import(db, "credly", acme["org_id"], DATA / "credly_badge_templates.json")
    assert counts(again) == (0, 0, 2, 0)

    async with server(db) as client:
        stub = client(acme["api_key"]).stub(badge_template_pb2_grpc.BadgeTemplateServiceStub)
        got = await stub.GetBadgeTemplate(
            tpb.GetBadgeTemplateRequest(
                organization_id=CREDLY_ORG, id="f3d60253-ee6a-4965-be4e-1878aaf9706c"
            )
        )
        assert (got.name, got.vanity_slug, got.state) == (
            "Badge Template 1",
            "badge-template-1",
            tpb.BADGE_TEMPLATE_STATE_ACTIVE,
        )
        assert list(got.skills) == ["Skill 1", "Skill 2", "Skill 3"]
        assert [a.required_badge_template_id for a in got.badge_template_activities] == [
            "",
            "95f6f63a-538d-4f16-b86c-13c7f349b60a",
        ]
        listed = await stub.ListBadgeTemplates(
            tpb.ListBadgeTemplatesRequest(organization_id=CREDLY_ORG, sort="name")
        )
        assert [t.id for t in listed.badge_templates] == [
            "f3d60253-ee6a-4965-be4e-1878aaf9706c",
            "95f6f63a-538d-4f16-b86c-13c7f349b60a",
        ]
        other_stub = client(other["api_key"]).stub(badge_template_pb2_grpc.BadgeTemplateServiceStub)
        single_got = await other_stub.GetBadgeTemplate(
            tpb.GetBadgeTemplateRequest(
                organization_id=CREDLY_ORG_4, id="5700d0ca-00af-4b55-88b0-281c73e6c920"
            )
        )
        assert single_got.owner.id == CREDLY_ORG_4


def class_issuer() -> dict[str, Any]:
    """Seed 004's badge class names an issuer its issuer sample is not (``ZvYydo...``): the
    issuer sample again under that issuer's ids, as a real export would hold it, defining
    the property the class's custom value names, and only that one (the seed's class names
    one no issuer of the seed defines, and lacks the value its issuer requires)."""
    doc = seed("badgr_issuer.json")
    issuer = json.loads(json.dumps(doc["result"][0]))
    issuer.update(
        id="5f16c84d1ff787222b6c4d16",
        entityId="ZvYydoQhRtOKalNzFPZR2A",
        openBadgeId="https://api.badgr.io/public/issuers/ZvYydoQhRtOKalNzFPZR2A",
        name="Mathematics Faculty",
    )
    issuer["preferences"]["customPropertyDefinitions"] = [
        {
            "propertyType": "STRING",
            "targetEntityType": "BADGE_CLASS",
            "propertyId": "67b32887e2a7a7d5f7adabf1",
            "label": "Notes",
            "public": True,
            "required": False,
        }
    ]
    return {**doc, "result": [issuer]}


def cleaned_class() -> dict[str, Any]:
    """Seed 004's badge class with its two placeholders that no rule of the service takes
    made real values: an alignment's ``targetUrl`` of "text" (Open Badges needs a URL) and a
    custom property value that is text, number and list at once."""
    doc = seed("badgr_badge_class.json")
    bc = doc["result"][0]
    bc["alignments"][0]["targetUrl"] = "https://example.org/algebra"
    value = bc["preferences"]["customPropertyValues"][0]
    del value["doubleValue"], value["arrayValue"]
    return doc


async def test_badgr_seeds_keep_ids_and_old_open_badge_ids(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    issuers_2 = write(tmp_path, "issuers-2.json", class_issuer())
    # The seed's class as is: refused, naming its first placeholder and why.
    as_is = run_import(
        db, "badgr", acme["org_id"], issuers_2, DATA / "badgr_badge_class.json", ok=False
    )
    assert counts(as_is) == (1, 0, 0, 1)
    assert [(f["position"], f["id"], f["key"], f["reason"]) for f in as_is["failures"]] == [
        (
            "result[0]",
            "68e9d238c5afe622816febb3",
            "badge_class.alignments[0].target_url",
            "INVALID_FIELD",
        )
    ]
    files = (
        DATA / "badgr_issuer.json",
        issuers_2,
        write(tmp_path, "classes.json", cleaned_class()),
    )
    # The badge class is listed first on purpose: issuers go in before the classes.
    summary = run_import(db, "badgr", acme["org_id"], files[2], files[0], files[1])
    assert counts(summary) == (2, 0, 1, 0), summary
    assert counts(run_import(db, "badgr", acme["org_id"], *files)) == (0, 0, 3, 0)

    old_issuer = "https://api.badgr.ws/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw"
    old_class = "https://api.badgr.io/public/badges/iOMWsaF1QbmMCofM54JlUg"
    async with server(db) as client:
        c = client(acme["api_key"])
        issuers = c.stub(issuer_pb2_grpc.IssuerServiceStub)
        lookups: list[dict[str, Any]] = [
            {"id_or_entity_id": "6016c84d1ff787222b6c4d15"},
            {"id_or_entity_id": "Uu4wd2I1SKmD3vmtMJ19hw"},
            {"issuer_open_badge_id_base64": b64(old_issuer)},
            {"ref": b64(old_issuer)},
            {"ref": old_issuer},
        ]
        for lookup in lookups:
            got = await issuers.GetIssuer(ipb.GetIssuerRequest(**lookup))
            assert (got.id, got.entity_id, got.name) == (
                "6016c84d1ff787222b6c4d15",
                "Uu4wd2I1SKmD3vmtMJ19hw",
                "Credentials Faculty",
            ), lookup
        # The new openBadgeId (under this service's base URL) names it too.
        got = await issuers.GetIssuer(
            ipb.GetIssuerRequest(issuer_open_badge_id_base64=b64(got.open_badge_id))
        )
        assert got.open_badge_id.endswith("/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw")
        assert got.created_at.ToJsonString() == "2025-04-24T21:19:39.363Z"
        classes = c.stub(badge_class_pb2_grpc.BadgeClassServiceStub)
        lookups = [
            {"id_or_entity_id": "68e9d238c5afe622816febb3"},
            {"id_or_entity_id": "iOMWsaF1QbmMCofM54JlUg"},
            {"badge_class_open_badge_id_base64": b64(old_class)},
            {"ref": old_class},
        ]
        for lookup in lookups:
            bc = await classes.GetBadgeClass(cpb.GetBadgeClassRequest(**lookup))
            assert (bc.id, bc.entity_id, bc.name, bc.issuer) == (
                "68e9d238c5afe622816febb3",
                "iOMWsaF1QbmMCofM54JlUg",
                "Math Expert",
                "ZvYydoQhRtOKalNzFPZR2A",
            ), lookup
        assert bc.archived is True
        await expect_error(
            issuers.GetIssuer(
                ipb.GetIssuerRequest(
                    ref="https://api.badgr.io/public/issuers/NotOneOfOurs000000000"
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )

    # Another org cannot take those ids or the old openBadgeId.
    beta = org(db, "Beta")
    taken = run_import(db, "badgr", beta["org_id"], DATA / "badgr_issuer.json", ok=False)
    assert counts(taken) == (0, 0, 0, 1)
    (failure,) = taken["failures"]
    assert failure["reason"] == "KEPT_ID_TAKEN" and failure["id"] == "6016c84d1ff787222b6c4d15"
    assert "another organisation's issuer" in failure["message"]


# --- Idempotence, dry run, atomic, collisions, messy records --------------------------------


def badge(badge_id: int | str | None, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": badge_id,
        "name": name,
        "title": name.title(),
        "badge_states": [{"state": "earned", "order": 1}],
        "date_start": "2019-05-03T19:01:23.000Z",
        "display_date_start": "2019-05-03T19:01:23.000Z",
        "is_enabled": 1,
        **extra,
    }


def page(*badges: dict[str, Any]) -> dict[str, Any]:
    return {"paging": {"total": len(badges), "pages": 1}, "badges": list(badges)}


async def test_a_second_run_updates_what_changed(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    first = write(tmp_path, "p1.json", page(badge(7, "one"), badge(8, "two")))
    assert counts(run_import(db, "crowdtwist", acme["org_id"], first)) == (2, 0, 0, 0)
    changed = write(tmp_path, "p2.json", page(badge(7, "one"), badge(8, "two", title="Renamed")))
    assert counts(run_import(db, "crowdtwist", acme["org_id"], changed)) == (0, 1, 1, 0)
    async with server(db) as client:
        got = await client(acme["api_key"]).badges.GetBadge(bpb.GetBadgeRequest(id=8))
        assert got.title == "Renamed"


async def test_dry_run_writes_nothing(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    path = write(tmp_path, "p.json", page(badge(7, "one"), badge(8, "two")))
    summary = run_import(db, "crowdtwist", acme["org_id"], path, dry_run=True)
    assert counts(summary) == (2, 0, 0, 0) and summary["committed"] is False
    text = cli(db, "import", "crowdtwist", str(path), "--org", str(acme["org_id"]), "--dry-run")
    assert text.stdout.splitlines()[-1] == (
        "dry run, nothing written: would have created 2, updated 0, unchanged 0, refused 0"
    )
    async with server(db) as client:
        badges = client(acme["api_key"]).badges
        await expect_error(badges.GetBadge(bpb.GetBadgeRequest(id=7)), grpc.StatusCode.NOT_FOUND)
        listed = await badges.ListBadges(bpb.ListBadgesRequest())
        assert listed.paging.total == 0


async def test_atomic_is_all_or_nothing(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    # The third badge reuses the first one's name (unique per org): refused.
    path = write(tmp_path, "p.json", page(badge(7, "one"), badge(8, "two"), badge(9, "one")))
    atomic = run_import(db, "crowdtwist", acme["org_id"], path, ok=False, atomic=True)
    assert counts(atomic) == (2, 0, 0, 1) and atomic["committed"] is False
    assert [(f["position"], f["id"], f["reason"]) for f in atomic["failures"]] == [
        ("badges[2]", "9", "BADGE_NAME_TAKEN")
    ]
    async with server(db) as client:
        badges = client(acme["api_key"]).badges
        assert (await badges.ListBadges(bpb.ListBadgesRequest())).paging.total == 0
    # Without --atomic the others go in.
    summary = run_import(db, "crowdtwist", acme["org_id"], path, ok=False)
    assert counts(summary) == (2, 0, 0, 1) and summary["committed"] is True
    async with server(db) as client:
        badges = client(acme["api_key"]).badges
        listed = await badges.ListBadges(bpb.ListBadgesRequest())
        assert [b.id for b in listed.badges] == [7, 8]


async def test_a_kept_id_another_org_holds_is_refused(db: Db, tmp_path: Path) -> None:
    acme, beta = org(db, "Acme"), org(db, "Beta")
    path = write(tmp_path, "p.json", page(badge(7, "one")))
    run_import(db, "crowdtwist", acme["org_id"], path)
    summary = run_import(db, "crowdtwist", beta["org_id"], path, ok=False)
    assert summary["failures"] == [
        {
            "file": str(path),
            "position": "badges[0]",
            "id": "7",
            "kind": "badge",
            "key": "",
            "reason": "KEPT_ID_TAKEN",
            "message": "badge id 7 is already taken by another organisation's badge; "
            "it cannot be kept",
        }
    ]
    result = cli(db, "import", "crowdtwist", str(path), "--org", str(beta["org_id"]), check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"refused: {path} badges[0] id 7: badge id 7 is already taken by another "
        "organisation's badge; it cannot be kept (KEPT_ID_TAKEN)",
        "created 0, updated 0, unchanged 0, refused 1",
    ]
    # The same UUID for a second organisation is refused too.
    org(db, "Credly One", "--uuid", CREDLY_ORG)
    again = cli(db, "orgs", "create", "Credly Two", "--uuid", CREDLY_ORG, check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: organisation UUID {CREDLY_ORG} is already taken"


async def test_messy_records_name_the_record_the_key_and_why(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    bad_order = badge(8, "two", badge_states=[{"state": "earned", "order": "first"}])
    bad_state = badge(9, "three", badge_states=[{"state": "won", "order": 1}])
    no_id = badge(None, "four")
    # Two pages appended to one file, as a paging loop writes them.
    path = tmp_path / "pages.json"
    path.write_text(
        json.dumps(page(badge(7, "one"), bad_order)) + "\n" + json.dumps(page(bad_state, no_id))
    )
    summary = run_import(db, "crowdtwist", acme["org_id"], path, ok=False)
    assert counts(summary) == (1, 0, 0, 3)
    assert [(f["position"], f["id"], f["key"], f["reason"]) for f in summary["failures"]] == [
        ("#1 badges[1]", "8", "badge_states[0].order", "INVALID_FIELD"),
        ("#2 badges[0]", "9", "badge.badge_states[0].state", "INVALID_FIELD"),
        ("#2 badges[1]", "", "id", "INVALID_FIELD"),
    ]
    assert summary["failures"][0]["message"] == "badge_states[0].order: must be a whole number"
    # A file that is not JSON is refused whole, naming where.
    broken = tmp_path / "broken.json"
    broken.write_text('{"badges": [')
    result = cli(db, "import", "crowdtwist", str(broken), "--org", str(acme["org_id"]), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: {broken}: not JSON at line 1 column 13")


async def test_plain_progress_lines_off_a_terminal(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    path = write(tmp_path, "p.json", page(*(badge(i, f"b{i}") for i in range(1, 6))))
    result = cli(
        db, "import", "crowdtwist", str(path), "--org", str(acme["org_id"]), "--chunk", "2"
    )
    assert result.stderr.splitlines()[-1] == "imported 5/5 records"
    assert result.stdout.splitlines() == ["created 5, updated 0, unchanged 0, refused 0"]


async def test_kept_ids_held_elsewhere_are_refused_for_every_vendor(db: Db, tmp_path: Path) -> None:
    acme, beta = org(db, "Acme"), org(db, "Beta")
    field = DATA / "capillary_custom_field.json"
    templates = DATA / "credly_badge_templates.json"
    issuer = DATA / "badgr_issuer.json"
    for vendor, path, created in (
        ("capillary", field, 1),
        ("credly", templates, 2),
        ("badgr", issuer, 1),
    ):
        assert counts(run_import(db, vendor, acme["org_id"], path)) == (created, 0, 0, 0)
        taken = run_import(db, vendor, beta["org_id"], path, ok=False)
        assert counts(taken) == (0, 0, 0, created), (vendor, taken)
        assert {f["reason"] for f in taken["failures"]} == {"KEPT_ID_TAKEN"}, vendor
    assert [f["message"] for f in taken["failures"]] == [
        "issuer id 6016c84d1ff787222b6c4d15/Uu4wd2I1SKmD3vmtMJ19hw is already taken by "
        "another organisation's issuer; it cannot be kept"
    ]

    # In one org: the issuer's entityId under another id, and its old openBadgeId for a class.
    doc = seed("badgr_issuer.json")
    doc["result"][0]["id"] = "6016c84d1ff787222b6c4d99"
    clash = run_import(db, "badgr", acme["org_id"], write(tmp_path, "i.json", doc), ok=False)
    assert [f["message"] for f in clash["failures"]] == [
        "issuer id 6016c84d1ff787222b6c4d99/Uu4wd2I1SKmD3vmtMJ19hw is already taken by this "
        "organisation's issuer 6016c84d1ff787222b6c4d15 (entityId Uu4wd2I1SKmD3vmtMJ19hw); "
        "it cannot be kept"
    ]
    cls = cleaned_class()
    cls["result"][0].update(
        issuer="Uu4wd2I1SKmD3vmtMJ19hw",
        openBadgeId="https://api.badgr.ws/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw",
        alignments=[],
        preferences={
            "customPropertyValues": [
                {"propertyId": "66bf8231d88b51901d49d637", "stringValue": "text"}
            ]
        },
    )
    kind = run_import(db, "badgr", acme["org_id"], write(tmp_path, "c.json", cls), ok=False)
    assert [f["message"] for f in kind["failures"]] == [
        "openBadgeId https://api.badgr.ws/public/issuers/Uu4wd2I1SKmD3vmtMJ19hw is already "
        "taken by this organisation's issuer; it cannot be kept"
    ]


async def test_capillary_changes_update_and_the_org_meta_keeps_its_id(
    db: Db, tmp_path: Path
) -> None:
    acme = org(db, "Acme")
    run_import(db, "capillary", acme["org_id"], DATA / "capillary_org_meta.json")
    doc = seed("capillary_custom_field.json")
    doc["data"]["defaultValue"] = "5"
    changed = run_import(db, "capillary", acme["org_id"], write(tmp_path, "f.json", doc))
    assert counts(changed) == (1, 0, 0, 0)
    doc["data"]["defaultValue"] = "6"
    again = run_import(db, "capillary", acme["org_id"], write(tmp_path, "f.json", doc))
    assert counts(again) == (0, 1, 0, 0)
    async with server(db) as client:
        c = client(acme["api_key"])
        got = await c.fields.GetCustomField(
            fpb.GetCustomFieldRequest(id="69c0e1c823ba8848e5979a67")
        )
        assert got.default_value == "6"
        meta = await c.meta.GetOrgMeta(mpb.GetOrgMetaRequest())
        assert meta.id == "652fe2452aa6a339209b359f"


def test_a_progress_bar_on_a_terminal(db: Db, tmp_path: Path) -> None:
    acme = org(db, "Acme")
    path = write(tmp_path, "p.json", page(*(badge(i, f"b{i}") for i in range(1, 6))))
    primary, secondary = pty.openpty()
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": db.url, "COLUMNS": "100"}
    args = [str(test_cli.BIN), "import", "crowdtwist", str(path), "--org", str(acme["org_id"])]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=secondary) as proc:
        os.close(secondary)
        stdout, _ = proc.communicate(timeout=60)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        os.close(primary)
    assert proc.returncode == 0
    assert stdout.decode().splitlines() == ["created 5, updated 0, unchanged 0, refused 0"]
    text = shown.decode(errors="replace")
    assert "importing" in text and "5/5" in text, text
    assert "imported 5/5 records" not in text  # the plain lines are for non-terminals


async def test_orgs_create_keeps_capillarys_org_id(db: Db) -> None:
    kept = org(db, "Capillary Org", "--id", "100458")
    assert kept["org_id"] == 100458
    summary = run_import(db, "capillary", 100458, DATA / "capillary_org_meta.json")
    assert summary["warnings"] == []
    # Organisations made afterwards get ids past it (PostgreSQL's sequence was moved).
    assert org(db, "Next")["org_id"] > 100458
    again = cli(db, "orgs", "create", "Twice", "--id", "100458", check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == "error: organisation id 100458 is already taken"
    async with server(db) as client:
        meta = await client(kept["api_key"]).meta.GetOrgMeta(mpb.GetOrgMetaRequest())
        assert (meta.org_id, meta.id) == (100458, "652fe2452aa6a339209b359f")


async def test_a_dry_run_sees_its_own_records(db: Db, tmp_path: Path) -> None:
    """A dry run checks every record against the ones before it (a class finds the issuer the
    same import brings), then writes nothing: one transaction, rolled back."""
    acme = org(db, "Acme")
    files = (
        write(tmp_path, "classes.json", cleaned_class()),
        write(tmp_path, "issuers-2.json", class_issuer()),
    )
    summary = run_import(db, "badgr", acme["org_id"], *files, dry_run=True)
    assert counts(summary) == (2, 0, 0, 0) and summary["committed"] is False
    async with server(db) as client:
        issuers = client(acme["api_key"]).stub(issuer_pb2_grpc.IssuerServiceStub)
        listed = await issuers.ListIssuers(ipb.ListIssuersRequest())
        assert list(listed.issuers) == []
    assert counts(run_import(db, "badgr", acme["org_id"], *files)) == (2, 0, 0, 0)
