"""The README's shell examples, run as written with bash and grpcurl against a live
``badge-service serve`` (only the port differs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from badge_service.api.badges.v1 import badge_template_pb2 as tpb
from badge_service.api.badges.v1 import badge_template_pb2_grpc
from badge_service.server import SERVICES
from tests.test_serve import ServeProcess, serving, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
README_ADDRESS = "localhost:50051"
MARK = "@@command "
# The default --public-base-url, which Badgr openBadgeIds start with.
PUBLIC_BASE = "http://localhost:50051"
# Printed after the README's commands, so the test can call the org the README made.
SHOW_KEY = 'printf "%s %s\\n" "$KEY" "$ORG_UUID"'
HEX24 = r"[0-9a-f]{24}"
ENTITY_ID = r"[A-Za-z0-9_-]{22}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def sh_blocks() -> list[str]:
    """The README's ```sh blocks."""
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def block_starting(prefix: str) -> str:
    """The one sh block whose first line starts with ``prefix``."""
    found = [b for b in sh_blocks() if b.startswith(prefix)]
    assert len(found) == 1, f"README.md has {len(found)} sh blocks starting with {prefix!r}"
    return found[0]


def block_containing(needle: str) -> str:
    """The one sh block that contains ``needle``."""
    found = [b for b in sh_blocks() if needle in b]
    assert len(found) == 1, f"README.md has {len(found)} sh blocks containing {needle!r}"
    return found[0]


def commands(block: str) -> list[str]:
    """The block's commands: one a line, comments and blank lines dropped."""
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_block(block: str, tmp: Path, env: dict[str, str], port: int | None) -> list[str]:
    """Runs the block's commands in order in one bash (so KEY carries over), from a directory
    where ``.venv/bin/badge-service`` resolves and with grpcurl on PATH; returns each command's
    stdout. Fails on the first command that exits non-zero."""
    cmds = commands(block)
    assert cmds, block
    script = ["set -euo pipefail"]
    for i, cmd in enumerate(cmds):
        if port is not None:
            cmd = cmd.replace(README_ADDRESS, f"localhost:{port}")
        script += [f"printf '\\n{MARK}%d\\n' {i}", cmd]
    workdir = tmp / "readme"
    workdir.mkdir(exist_ok=True)
    venv = workdir / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv")
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=workdir,
        env={**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    parts = result.stdout.split(f"\n{MARK}")[1:]
    outputs = [p.partition("\n")[2] for p in parts]
    if result.returncode != 0:
        failed = cmds[len(outputs) - 1] if outputs else "(before the first command)"
        pytest.fail(
            f"README command exited {result.returncode}: {failed}\n"
            f"stdout: {outputs[-1] if outputs else result.stdout}\nstderr: {result.stderr}"
        )
    assert len(outputs) == len(cmds), result.stdout
    return outputs


def by_method(block: str, outputs: list[str]) -> dict[str, Any]:
    """Each grpcurl call's JSON reply, keyed by the method it called (last word of the line).
    grpcurl 1.8 prints proto field names (snake_case) and 64-bit integers as strings."""
    replies: dict[str, Any] = {}
    for cmd, out in zip(commands(block), outputs, strict=True):
        if cmd.startswith("grpcurl "):
            method = cmd.split()[-1].rsplit("/", 1)[-1]
            assert method not in replies, f"{method} is called twice; key the replies otherwise"
            replies[method] = json.loads(out)
    return replies


def the_command(block: str, method: str) -> str:
    """The block's one grpcurl line that calls ``method``."""
    found = [c for c in commands(block) if c.startswith("grpcurl ") and c.endswith(f"/{method}")]
    assert len(found) == 1, f"{len(found)} commands call {method}"
    return found[0]


async def test_readme_grpcurl_examples(tmp_path: Path) -> None:
    block = block_starting("KEY=$(")
    assert README_ADDRESS in block
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        *outputs, shown = run_block(block + SHOW_KEY + "\n", tmp_path, server.env, server.port)
        key, org_uuid = shown.split()
        # The README's template list again, once the org has templates it must leave out.
        listed_again = await list_templates_again(block, tmp_path, server, key, org_uuid)
    replies = by_method(block, outputs)  # every grpcurl reply is JSON
    assert {
        "CreateCustomField",
        "UpdateOrgMeta",
        "CreateBadge",
        "ListBadges",
        "UpdateBadge",
        "CreateBadgeClass",
        "GetIssuer",
        "CreateBadgeTemplate",
        "ListBadgeTemplates",
        "ListAwards",
        "RevokeAward",
        "VerifyAward",
    } <= set(replies)

    field = replies["CreateCustomField"]
    assert field["name"] == "CF20 dates"
    assert field["data_type"] == "DATA_TYPE_STRING"
    assert field["default_value"] == "0"
    assert field["is_active"] is True
    assert re.fullmatch(r"[0-9a-f]{24}", field["id"]), field
    org_id = field["org_id"]

    meta = replies["UpdateOrgMeta"]
    assert meta["org_id"] == org_id
    assert meta["tags"] == [
        {"key": "Football", "data_type": "DATA_TYPE_STRING", "description": "Sport"}
    ]

    badge = replies["CreateBadge"]
    assert badge["id"] == "1"
    assert (badge["name"], badge["title"]) == ("badge_001", "Game Attendance")
    assert [s["state"] for s in badge["badge_states"]] == [
        "BADGE_STATE_TYPE_UNEARNED",
        "BADGE_STATE_TYPE_EARNED",
    ]
    assert badge["frequency"]["freq_period_name"] == "week"
    assert badge["tags"] == [{"tag_name": "Football", "tag_id": "1"}]
    assert badge["segment"][0]["eligibility_type"] == "ELIGIBILITY_TYPE_INCLUSION"

    listed = replies["ListBadges"]
    assert [b["id"] for b in listed["badges"]] == ["1"]
    assert listed["badges"][0]["title"] == "Game Attendance"
    assert (listed["paging"]["total"], listed["paging"]["pages"]) == (1, 1)

    updated = replies["UpdateBadge"]
    assert (updated["id"], updated["name"], updated["title"]) == ("1", "badge_001", "Game Day")
    assert updated["badge_states"] == badge["badge_states"]
    awarded = replies["ListAwards"]["awards"]
    assert [(a["badge_id"], a["recipient"], a["state"]) for a in awarded] == [
        ("1", {"member_id": "1001"}, "AWARD_STATE_ACTIVE")
    ]
    revoked = replies["RevokeAward"]
    assert (revoked["id"], revoked["state"]) == (awarded[0]["id"], "AWARD_STATE_REVOKED")
    assert revoked["revocation_reason"] == "Issued by mistake"

    # "Verify an assertion by id ...: now VERIFICATION_STATUS_REVOKED."
    verified = replies["VerifyAward"]
    assert verified["status"] == "VERIFICATION_STATUS_REVOKED", verified
    assert verified["award"]["id"] == awarded[0]["id"]
    assert (verified["award"]["state"], verified["award"]["revocation_reason"]) == (
        "AWARD_STATE_REVOKED",
        "Issued by mistake",
    )

    # "the issuer by entity id, with its Open Badges 2.0 Profile in open_badge"; "the service
    # makes its 24-hex id, 22-character entity id and openBadgeId" (under the public base URL).
    issuer = replies["GetIssuer"]
    assert re.fullmatch(HEX24, issuer["id"]), issuer
    assert re.fullmatch(ENTITY_ID, issuer["entity_id"]), issuer
    issuer_url = f"{PUBLIC_BASE}/public/issuers/{issuer['entity_id']}"
    assert issuer["open_badge_id"] == issuer_url
    assert issuer["open_badge"] == {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "Issuer",
        "id": issuer_url,
        "name": "Credentials Faculty",
        "email": "contact@example.com",
        "url": "https://example.com",
        "description": "This is the faculty of the Credentials University.",
        "revocationList": f"{issuer_url}/revocations",
    }

    # "a badge class of that issuer, with an alignment, a tag and a 30-day default expiry"
    badge_class = replies["CreateBadgeClass"]
    assert re.fullmatch(HEX24, badge_class["id"]), badge_class
    assert re.fullmatch(ENTITY_ID, badge_class["entity_id"]), badge_class
    assert badge_class["open_badge_id"] == (
        f"{PUBLIC_BASE}/public/badges/{badge_class['entity_id']}"
    )
    assert (badge_class["issuer"], badge_class["issuer_open_badge_id"]) == (
        issuer["entity_id"],
        issuer_url,
    )
    assert (badge_class["name"], badge_class["criteria_narrative"]) == (
        "Math Expert",
        "Pass the final exam.",
    )
    assert badge_class["alignments"] == [
        {"target_name": "Algebra", "target_url": "https://example.org/algebra"}
    ]
    assert badge_class["tags"] == ["math"]
    assert badge_class["expires"] == {"amount": 30, "duration": "EXPIRES_DURATION_DAYS"}

    # "an active badge template with skills and a reporting tag (its vanity slug comes from
    # the name)", owned by the organisation named by organization_id.
    template = replies["CreateBadgeTemplate"]
    assert re.fullmatch(UUID, template["id"]), template
    assert (template["name"], template["state"], template["level"]) == (
        "Archery Basics",
        "BADGE_TEMPLATE_STATE_ACTIVE",
        "BADGE_TEMPLATE_LEVEL_FOUNDATIONAL",
    )
    assert (template["skills"], template["reporting_tags"]) == (["Archery", "Focus"], ["retail"])
    assert template["vanity_slug"] == "archery-basics"
    assert (template["owner"]["id"], template["owner"]["name"]) == (org_uuid, "Readme Org")

    # "list templates with Credly's filter and sort syntax (50 a page ...)": the filter
    # finds the template, first page of one.
    listed = replies["ListBadgeTemplates"]
    assert [(t["id"], t["vanity_slug"]) for t in listed["badge_templates"]] == [
        (template["id"], "archery-basics")
    ]
    assert listed["metadata"] == {
        "count": 1,
        "current_page": 1,
        "total_count": 1,
        "total_pages": 1,
        "per": 50,
    }
    # With templates the filter must leave out (a draft, one without the skill) and one it
    # must keep, the same command keeps only the active archery ones, sorted by name (both
    # have no badges; newest first, the default sort, would put "Archery Zen" first).
    assert [t["name"] for t in listed_again["badge_templates"]] == [
        "Archery Basics",
        "Archery Zen",
    ]


async def list_templates_again(
    block: str, tmp: Path, server: ServeProcess, key: str, org_uuid: str
) -> Any:
    """Adds three templates to the README's org, then runs the README's ListBadgeTemplates
    command again as written; returns its reply."""
    stub = server.client(key).stub(badge_template_pb2_grpc.BadgeTemplateServiceStub)
    active, draft = tpb.BADGE_TEMPLATE_STATE_ACTIVE, tpb.BADGE_TEMPLATE_STATE_DRAFT
    for name, state, skills in [
        ("Archery Zen", active, ["Archery"]),
        ("Archery Draft", draft, ["Archery"]),
        ("Knitting", active, ["Knitting"]),
    ]:
        await stub.CreateBadgeTemplate(
            tpb.CreateBadgeTemplateRequest(
                organization_id=org_uuid,
                badge_template=tpb.BadgeTemplate(name=name, state=state, skills=skills),
            )
        )
    command = the_command(block, "ListBadgeTemplates")
    env = {**server.env, "KEY": key, "ORG_UUID": org_uuid}
    (out,) = run_block(command + "\n", tmp, env, server.port)
    return json.loads(out)


async def test_readme_commands_without_a_key(tmp_path: Path) -> None:
    block = block_starting("grpcurl -plaintext localhost:50051 list")
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        listed, health = run_block(block, tmp_path, server.env, server.port)
    assert set(listed.split()) == {
        *(s.full_name for s in SERVICES),
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert json.loads(health) == {"status": "SERVING"}


def test_readme_cli_examples(tmp_path: Path) -> None:
    block = block_starting(".venv/bin/badge-service orgs create")
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp_path)}
    text_out, json_out, key_out = run_block(block, tmp_path, env, None)
    assert re.search(r"^org_id:\s+1$", text_out, re.MULTILINE), text_out
    assert re.search(r"^api_key:\s+bsk_\S+", text_out, re.MULTILINE), text_out
    created = json.loads(json_out)
    assert (created["org_id"], created["name"], created["role"]) == (2, "Acme", "admin")
    assert re.search(r"^api_key: bsk_\S+\s+\(key \d+, role reader;", key_out, re.MULTILINE), key_out


def test_readme_examples_match_the_served_services() -> None:
    # Every service a README example calls is one the server serves.
    served = {s.full_name for s in SERVICES}
    called = set(re.findall(r"(badges\.v1\.\w+)/\w+", README.read_text()))
    assert called and called <= served, called - served


async def test_readme_retry_recipe(tmp_path: Path) -> None:
    """The Errors section's request_id recipe, after the main example (which makes KEY and
    badge 1): the retry answers with the same award, and the member has one."""
    setup = block_starting("KEY=$(")
    recipe = block_starting("RID=$(")
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        outputs = run_block(setup + recipe, tmp_path, server.env, server.port)
    first, retried, listed = (json.loads(out) for out in outputs[-3:])
    assert first == retried
    assert first["recipient"] == {"member_id": "1002"}
    assert [a["id"] for a in listed["awards"]] == [first["id"]]


def test_readme_key_lifecycle(tmp_path: Path) -> None:
    """README's keys create/list/rotate/revoke lines, after the orgs create block (which makes
    org 1's admin key 1, org 2's key 2 and org 1's reader key 3, the ids the README uses)."""
    setup = block_starting(".venv/bin/badge-service orgs create")
    block = block_starting(".venv/bin/badge-service keys create --org 1 --role reader --exp")
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp_path)}
    outputs = run_block(setup + block, tmp_path, env, None)
    created, listed, rotated, revoked = outputs[-4:]
    assert re.search(r"key \d+, role reader, expires 20\d\d-", created), created
    header, *rows = listed.splitlines()
    assert header.split()[:3] == ["key_id", "role", "prefix"]
    assert [r.split()[:3] for r in rows] == [
        ["1", "admin", "bsk_1_"],
        ["3", "reader", "bsk_3_"],
        ["4", "reader", "bsk_4_"],
    ]
    assert "key 1 keeps working until" in rotated
    assert revoked.startswith("revoked key 3 (bsk_3_, organisation 1)")


def test_readme_running_in_production(tmp_path: Path) -> None:
    """The "Running in production" lines, as written: certificates and ports made for the
    test (the files named as there), an org so that key 1 exists."""
    from tests.certs import Authority
    from tests.test_serve import free_port

    block = block_containing("--tls-client-ca ca.pem --drain-delay")
    work = tmp_path / "readme"
    work.mkdir()
    ca = Authority.create(work)
    ca.cert_path.rename(work / "ca.pem")
    ca = Authority(ca.name, ca.key, ca.cert, work / "ca.pem")
    ca.issue(work, "server", server=True)
    ca.issue(work, "client", server=False)
    grpc_port, metrics_port = free_port(), free_port()
    block = block.replace("0.0.0.0:50051", f"127.0.0.1:{grpc_port}")
    block = block.replace("127.0.0.1:9464", f"127.0.0.1:{metrics_port}")
    block = block.replace("localhost:9464", f"localhost:{metrics_port}")
    env = {**os.environ, "BADGE_SERVICE_DATABASE_URL": sqlite_url(tmp_path)}
    setup = block_starting(".venv/bin/badge-service orgs create")
    outputs = run_block(setup + block, tmp_path, env, grpc_port)
    health, metrics, _hup, rotated, _stop = outputs[-5:]
    assert json.loads(health) == {"status": "SERVING"}
    started = [line for line in metrics.splitlines() if line.startswith("grpc_server_started")]
    assert started and all('grpc_service="badges.v1.' in line for line in started), metrics
    assert "key 1 keeps working until" in rotated


async def test_readme_over_http(tmp_path: Path) -> None:
    """The "Over HTTP" lines against a server started as `make run` starts it (HTTP on its
    own port in place of 8080): the hosted assertion, its 410 once revoked, the
    revocationList that lists it, and health; then, on the same server, the vendors' paths
    (check_vendor_paths, check_credly_badgr_paths)."""
    from tests.test_serve import free_port

    block = block_containing('curl -s "$ASSERTION"')
    vendors = block_containing("/api_gateway/v1/badges/orgMeta")
    credly_badgr = block_containing("localhost:8080/v2/issuers")
    assert "localhost:8080/organizations/" in credly_badgr
    http_port = free_port()
    block = block.replace("localhost:8080", f"localhost:{http_port}")
    vendors = vendors.replace("localhost:8080", f"localhost:{http_port}")
    credly_badgr = credly_badgr.replace("localhost:8080", f"localhost:{http_port}")
    args = ("--http-address", f"127.0.0.1:{http_port}")
    async with serving(tmp_path, sqlite_url(tmp_path), *args) as server:
        outputs = run_block(block, tmp_path, server.env, server.port)
        # The same server: a second one would add seconds to the suite for nothing.
        check_vendor_paths(run_block(vendors, tmp_path, server.env, server.port))
        credly_badgr_outputs = run_block(credly_badgr, tmp_path, server.env, server.port)
    check_credly_badgr_paths(credly_badgr, credly_badgr_outputs)
    hosted, revoked, gone, listed, healthz, readyz = (outputs[i] for i in (4, 5, 6, 7, 8, 9))
    doc = json.loads(hosted)
    assert doc["type"] == "Assertion"
    assert doc["id"].startswith(f"http://127.0.0.1:{http_port}/public/assertions/")
    assert doc["recipient"]["hashed"] is True and "alice" not in hosted
    assert json.loads(revoked)["state"] == "AWARD_STATE_REVOKED"
    # curl -w prints the status right after the body, which has no newline of its own.
    body, status = gone.rstrip("\n")[:-3], gone.rstrip("\n")[-3:]
    assert status == "410", gone
    assert json.loads(body) == {
        "id": doc["id"],
        "revoked": True,
        "revocationReason": "Issued by mistake",
    }
    assert json.loads(listed)["revokedAssertions"] == [
        {"id": doc["id"], "revocationReason": "Issued by mistake"}
    ]
    assert json.loads(healthz) == {"status": "ok"}
    assert json.loads(readyz) == {"status": "SERVING"}


def check_vendor_paths(outputs: list[str]) -> None:
    """The "Capillary and CrowdTwist at their own paths" lines' answers: each in its vendor's
    form (run by test_readme_over_http)."""
    docs: list[Any] = [json.loads(o) if o.startswith("{") else o for o in outputs]
    _, created, fields, field_id, patched, put, meta, badge_id, badge, listed = docs
    assert created["errors"] == [] and created["data"]["name"] == "CF20 dates"
    assert created["data"]["dataType"] == "STRING" and "createdOnISO" in created["data"]
    assert fields == {"data": [created["data"]], "errors": [], "warnings": []}
    assert field_id == "" and badge_id == ""  # captured into FIELD and BADGE
    assert patched["data"]["id"] == created["data"]["id"]
    assert patched["data"]["isMandatory"] is True
    tag = {"key": "Game", "dataType": "string", "description": "Sport", "mandatory": True}
    assert put["data"]["tags"] == [tag] and put["errors"] is None
    assert meta == put
    assert badge["name"] == "badge_001" and badge["is_enabled"] == 1
    assert badge["frequency"]["freq_period_name"] == "week"
    assert badge["badge_extra_data"] == {"CF20 dates": "0"}  # the field's default, filled in
    assert listed["paging"] == {"total": 1, "pages": 1, "next_page": None, "prev_page": None}
    assert listed["badges"] == [badge]


def _status_and_body(output: str) -> tuple[int, str]:
    """A ``curl -w '%{http_code}\\n'`` output: the status printed after the body."""
    text = output.rstrip("\n")
    return int(text[-3:]), text[:-3]


def check_credly_badgr_paths(block: str, outputs: list[str]) -> None:
    """The "Credly and Badgr at their own paths" lines' answers: every vendor path in its
    vendor's envelope, with its statuses (run by test_readme_over_http)."""
    out = dict(zip(commands(block), outputs, strict=True))

    def reply(needle: str, *, method: str = "") -> Any:
        """The reply of the first line that holds ``needle`` and ``method``."""
        found = [o for c, o in out.items() if needle in c and method in c]
        assert found, (needle, method)
        return json.loads(found[0])

    listed = reply("badge_templates?filter=state::active|query::archery&sort=-name")
    assert [t["name"] for t in listed["data"]] == ["Archery"]
    assert listed["metadata"]["per"] == 50 and listed["metadata"]["next_page_url"] is None
    got = reply('badge_templates/$TEMPLATE"', method='-u "$KEY:" "')
    assert got["data"]["state"] == "active" and got["data"]["skills"] == ["Archery"]
    assert re.fullmatch(UUID, got["data"]["id"]) and got["metadata"] == {}
    assert (
        reply("-X PUT -H 'content-type: application/json' -d '{\"description\": \"Hit")["data"][
            "description"
        ]
        == "Hit the target."
    )
    assert reply("/archive")["data"]["state"] == "archived"
    assert reply("/unarchive")["data"]["state"] == "active"
    assert reply("-X DELETE", method="badge_templates/$TEMPLATE") == {"data": {}, "metadata": {}}
    status, body = _status_and_body(out[next(c for c in out if "colour::red" in c)])
    assert status == 400 and json.loads(body)["data"]["code"] == "INVALID_FILTER"

    issuers = reply('-H "authorization: Bearer $KEY" localhost')
    assert issuers["status"] == {"success": True, "description": "ok"}
    (issuer,) = issuers["result"]
    assert issuer["name"] == "Credentials Faculty" and re.fullmatch(ENTITY_ID, issuer["entityId"])
    for needle in ('issuers/$ISSUER"', 'issuers/openBadgeId/$ISSUER_B64"', "issuers/ref/"):
        assert (
            reply(needle, method='Bearer $KEY" "')["result"][0]["entityId"] == issuer["entityId"]
        ), needle
    assert (
        reply("-X PUT -H 'content-type: application/json' -d '{\"description\": \"The")["result"][
            0
        ]["description"]
        == "The faculty of Credentials University."
    )
    for needle in ("$ISSUER/badgeclasses\"", "badgeclasses?issuer=", 'badgeclasses/$CLASS"',
                   "badgeclasses/openBadgeId/", "badgeclasses/ref/$CLASS\""):  # fmt: skip
        (bc,) = reply(needle, method='Bearer $KEY" "')["result"]
        assert bc["name"] == "Math Expert" and bc["expires"] == {"amount": 30, "duration": "days"}
        assert bc["issuer"] == issuer["entityId"]
    assert reply("-X PATCH")["result"][0]["tags"] == ["math"]
    codes = reply('claim-codes"', method='Bearer $KEY" "')["result"]
    assert len(codes) == 2 and {c["label"] for c in codes} == {"Conference Event"}
    (award,) = reply("/redeem")["result"]
    assert award["state"] == "active" and award["recipient"] == {"email": "alice@example.org"}
    deletes = [c for c in out if "-X DELETE" in c and "Bearer" in c]
    assert len(deletes) == 3
    assert all(out[c] == "204\n" for c in deletes), [out[c] for c in deletes]
    status, body = _status_and_body(outputs[-1])
    assert status == 404
    assert json.loads(body)["status"]["success"] is False


async def test_readme_moving_from_a_vendor(tmp_path: Path) -> None:
    """The "Moving from a vendor" lines, with the seeds' sample answers as the files, against
    a live server on the same database: the badge answers by its CrowdTwist id and the issuer
    by the base64 of its Badgr openBadgeId."""
    block = block_containing("badge-service import crowdtwist")
    data = ROOT / "tests" / "data" / "import"
    workdir = tmp_path / "readme"
    workdir.mkdir()
    for name, seed_file in (
        ("crowdtwist-badges.json", "crowdtwist_badges.json"),
        ("credly-templates.json", "credly_badge_templates.json"),
        ("badgr-issuers.json", "badgr_issuer.json"),
    ):
        (workdir / name).write_text((data / seed_file).read_text())
    async with serving(tmp_path, sqlite_url(tmp_path)) as server:
        outputs = run_block(block, tmp_path, server.env, server.port)
    dry, first, again, credly, badgr, badge, issuer = outputs[2:]
    assert dry.splitlines()[-1] == (
        "dry run, nothing written: would have created 1, updated 0, unchanged 0, refused 0"
    )
    assert first.splitlines() == ["created 1, updated 0, unchanged 0, refused 0"]
    summary = json.loads(again)
    assert (summary["created"], summary["unchanged"], summary["refused"]) == (0, 1, 0)
    assert credly.splitlines() == ["created 2, updated 0, unchanged 0, refused 0"]
    assert badgr.splitlines() == ["created 1, updated 0, unchanged 0, refused 0"]
    assert (json.loads(badge)["id"], json.loads(badge)["name"]) == ("123456", "badge_001")
    assert json.loads(issuer)["entity_id"] == "Uu4wd2I1SKmD3vmtMJ19hw"
