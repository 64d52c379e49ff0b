"""The ``badge-service`` command: serve, migrate, and create organisations and API keys."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from badge_service import logs, metrics
from badge_service.config import Settings, check_address, check_free, check_log_level
from badge_service.domain.auth import ApiKey, Role, parse_duration
from badge_service.domain.errors import DomainError
from badge_service.store import faults, keys, orgs
from badge_service.store.db import Database, DatabaseURLError, parse_database_url
from badge_service.store.migrate import upgrade


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)


def _database(settings: Settings) -> Database:
    return Database(
        settings.database_url,
        statement_timeout=settings.db_statement_timeout,
        connect_timeout=settings.db_connect_timeout,
        statement_cache_size=settings.db_statement_cache,
    )


async def _with_db(settings: Settings, work: Any) -> Any:
    db = _database(settings)
    try:
        await db.probe(write=True)  # unusable storage: one clear error before anything else
        await upgrade(db)
        async with db.write() as conn:
            return await work(conn)
    finally:
        await db.close()


def _in_db(settings: Settings, work: Any) -> Any:
    """Runs ``work(conn)`` in one write transaction; a domain error (an unknown org or key, a
    key in the wrong state) ends the command with its one-line message."""
    try:
        return _run(_with_db(settings, work))
    except DomainError as exc:
        if faults.classify(exc) is not None:
            raise  # the store's fault, not the command's: main() names the database
        raise SystemExit(f"error: {exc.message}") from None


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _key_json(key: ApiKey, now: dt.datetime) -> dict[str, Any]:
    return {
        "key_id": key.id,
        "org_id": key.org_id,
        "role": key.role.value,
        "prefix": key.prefix,
        "created": _iso(key.created_at),
        "last_used": _iso(key.last_used_at),
        "expires": _iso(key.expires_at),
        "revoked": _iso(key.revoked_at),
        "rotated_to": key.rotated_to,
        "state": key.state(now).value,
    }


def _duration(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    """Serves until SIGTERM/SIGINT."""
    from badge_service.rpc.issuers import base_url_of
    from badge_service.server import serve, serve_workers

    if settings.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    if settings.grace_period < 0 or settings.drain_delay < 0:
        raise SystemExit("error: --grace-period and --drain-delay must not be negative")
    for flag, value in (
        ("--watch-max-per-org", settings.watch_max_per_org),
        ("--watch-max-streams", settings.watch_max_streams),
        ("--watch-buffer", settings.watch_buffer),
    ):
        if value < 1:
            raise SystemExit(f"error: {flag} must be at least 1")
    if settings.watch_poll_seconds <= 0 or settings.watch_stall_seconds <= 0:
        raise SystemExit("error: the watch poll and stall seconds must be more than 0")
    if settings.log_format not in ("auto", "json", "text"):
        raise SystemExit("error: BADGE_SERVICE_LOG_FORMAT must be auto, json or text")
    check_log_level(settings.log_level)
    if settings.workers > 1:
        check_address(settings.address)  # workers share the port (SO_REUSEPORT)
        if settings.http_address:
            check_address(settings.http_address, "--http-address")
    else:
        check_free(settings.address)
        if settings.http_address:
            check_free(settings.http_address, "--http-address")
    if settings.http_address and settings.http_address == settings.address:
        raise SystemExit("error: --http-address must differ from --address")
    base_url_of(settings.public_base())  # a bad one stops here, before any log line
    if settings.metrics_address:
        try:
            metrics.parse_address(settings.metrics_address)
        except metrics.MetricsError as exc:
            raise SystemExit(f"error: {exc}") from None
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        raise SystemExit(serve_workers(settings))
    _run(serve(settings))


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    """Applies pending migrations."""

    async def go() -> None:
        db = _database(settings)
        try:
            await db.probe(write=True)
            await upgrade(db)
        finally:
            await db.close()

    _run(go())
    print(f"migrated {_redact(settings.database_url)}")


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def cmd_orgs_create(settings: Settings, args: argparse.Namespace) -> None:
    """Creates an organisation and its first admin key."""

    async def work(conn: Any) -> tuple[orgs.Org, ApiKey, str]:
        now = dt.datetime.now(dt.UTC)
        org = await orgs.create_org(conn, args.name, now, args.uuid, args.id)
        key, secret = await conn.run_sync(keys.create_key, org.id, Role.ADMIN, now)
        return org, key, secret

    org, key, secret = _in_db(settings, work)
    if args.json:
        print(
            json.dumps(
                {
                    "org_id": org.id,
                    "org_uuid": org.uuid,
                    "name": org.name,
                    "key_id": key.id,
                    "role": "admin",
                    "api_key": secret,
                }
            )
        )
    else:
        print(f"org_id:   {org.id}\norg_uuid: {org.uuid}\nname:     {org.name}")
        print(f"api_key:  {secret}   (role admin; shown once, store it now)")


def cmd_orgs_list(settings: Settings, args: argparse.Namespace) -> None:
    """Lists organisations."""

    async def work(conn: Any) -> list[orgs.Org]:
        return await orgs.list_orgs(conn)

    found = _run(_with_db(settings, work))
    if args.json:
        print(json.dumps([{"org_id": o.id, "org_uuid": o.uuid, "name": o.name} for o in found]))
    else:
        for o in found:
            print(f"{o.id}\t{o.uuid}\t{o.name}")


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    """Creates an API key for an organisation."""
    role = Role(args.role)

    async def work(conn: Any) -> tuple[ApiKey, str]:
        now = dt.datetime.now(dt.UTC)
        expires = now + args.expires_in if args.expires_in is not None else None
        made: tuple[ApiKey, str] = await conn.run_sync(
            keys.create_key, args.org, role, now, expires
        )
        return made

    key, secret = _in_db(settings, work)
    _print_new_key(args, key, secret)


def _print_new_key(args: argparse.Namespace, key: ApiKey, secret: str) -> None:
    if args.json:
        print(json.dumps({**_key_json(key, dt.datetime.now(dt.UTC)), "api_key": secret}))
        return
    expiry = f", expires {_iso(key.expires_at)}" if key.expires_at else ""
    print(
        f"api_key: {secret}   (key {key.id}, role {key.role.value}{expiry}; "
        "shown once, store it now)"
    )


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    """Lists an organisation's keys (never their secrets)."""

    async def work(conn: Any) -> list[ApiKey]:
        found: list[ApiKey] = await conn.run_sync(keys.list_keys, args.org)
        return found

    found = _in_db(settings, work)
    now = dt.datetime.now(dt.UTC)
    rows = [_key_json(k, now) for k in found]
    if args.json:
        print(json.dumps(rows))
        return
    columns = ["key_id", "role", "prefix", "created", "last_used", "expires", "state"]
    table = [columns, *([str(r[c] if r[c] is not None else "-") for c in columns] for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Revokes a key; every serving process refuses it within a second."""

    async def work(conn: Any) -> ApiKey:
        revoked: ApiKey = await conn.run_sync(keys.revoke_key, args.key_id, dt.datetime.now(dt.UTC))
        return revoked

    key = _in_db(settings, work)
    if args.json:
        print(json.dumps(_key_json(key, dt.datetime.now(dt.UTC))))
    else:
        print(f"revoked key {key.id} ({key.prefix}, organisation {key.org_id})")


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    """Makes a new key with the same organisation and role; the old one keeps working for the
    grace period, then expires."""

    async def work(conn: Any) -> tuple[ApiKey, ApiKey, str]:
        rotated: tuple[ApiKey, ApiKey, str] = await conn.run_sync(
            keys.rotate_key, args.key_id, args.grace, dt.datetime.now(dt.UTC)
        )
        return rotated

    old, key, secret = _in_db(settings, work)
    if args.json:
        now = dt.datetime.now(dt.UTC)
        print(
            json.dumps({**_key_json(key, now), "api_key": secret, "replaces": _key_json(old, now)})
        )
        return
    _print_new_key(args, key, secret)
    print(f"key {old.id} keeps working until {_iso(old.expires_at)}, then expires")


def cmd_import(settings: Settings, args: argparse.Namespace) -> None:
    """Imports a vendor's API answers into an organisation, every id kept."""
    from badge_service import importer

    async def go() -> importer.Summary:
        db = _database(settings)
        try:
            await db.probe(write=True)
            await upgrade(db)
            async with db.read() as conn:
                org = await orgs.get_org(conn, args.org)
            reader = importer.Reader(args.vendor, org.id, org.uuid, settings.public_base())
            found = importer.scan(args.vendor, args.files)
            records = importer.read_files(reader, args.files, found)
            with _Progress(found.records, args.json) as progress:
                return await importer.run(
                    db,
                    reader,
                    records,
                    atomic=args.atomic,
                    dry_run=args.dry_run,
                    progress=progress.advance,
                    chunk=args.chunk,
                )
        finally:
            await db.close()

    if args.chunk < 1:
        raise SystemExit("error: --chunk must be at least 1")
    try:
        summary = _run(go())
    except importer.Unreadable as exc:
        raise SystemExit(f"error: {exc}") from None
    except OSError as exc:
        if faults.classify(exc) is not None:
            raise
        raise SystemExit(f"error: {exc.filename or ''}: {exc.strerror or exc}") from None
    except DomainError as exc:
        if faults.classify(exc) is not None:
            raise
        raise SystemExit(f"error: {exc.message}") from None
    _print_summary(args, summary)
    if summary.refused:
        raise SystemExit(1)


def _print_summary(args: argparse.Namespace, summary: Any) -> None:
    doc = {
        "vendor": args.vendor,
        "org_id": args.org,
        "dry_run": args.dry_run,
        "atomic": args.atomic,
        "committed": summary.committed,
        "created": summary.created,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "refused": summary.refused,
        "failures": summary.failures,
        "warnings": summary.warnings,
    }
    if args.json:
        print(json.dumps(doc))
        return
    for f in summary.failures:
        where = f"{f['file']} {f['position']}".strip()
        ident = f" id {f['id']}" if f["id"] else ""
        message = f["message"]
        key = ""
        if f["key"]:
            key = f" key {f['key']}:"
            message = message.removeprefix(f"{f['key']}: ")
        print(f"refused: {where}{ident}:{key} {message} ({f['reason']})")
    for w in summary.warnings:
        print(f"warning: {w['file']} {w['position']} id {w['id']}: {w['warning']}")
    counts = (
        f"created {summary.created}, updated {summary.updated}, "
        f"unchanged {summary.unchanged}, refused {summary.refused}"
    )
    if args.dry_run:
        print(f"dry run, nothing written: would have {counts}")
    elif args.atomic and not summary.committed:
        print(f"nothing written (--atomic and {summary.refused} refused): {counts}")
    else:
        print(counts)


class _Progress:
    """Progress of an import on stderr: a rich progress bar on a terminal, else a plain line
    every few seconds and at the end (nothing with --json, whose caller reads stdout)."""

    _EVERY = 2.0

    def __init__(self, total: int, quiet: bool) -> None:
        import sys
        import time

        self._total, self._done, self._clock = total, 0, time.monotonic
        self._last = self._clock()
        self._bar: Any = None
        self._task: Any = None
        self._plain = not quiet and not sys.stderr.isatty()
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                # stderr, as the plain lines: stdout carries the summary.
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task("importing", total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, count: int) -> None:
        """``count`` more records done."""
        import sys

        self._done += count
        if self._bar is not None:
            self._bar.update(self._task, advance=count)
        elif self._plain:
            now = self._clock()
            if now - self._last >= self._EVERY or self._done >= self._total:
                self._last = now
                print(f"imported {self._done}/{self._total} records", file=sys.stderr, flush=True)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (its default adds the usage above them)."""

    def error(self, message: str) -> NoReturn:
        """Exits 2 with ``error: <command>: <message>``."""
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = _Parser(prog="badge-service", description=__doc__)
    p.add_argument("--database-url", help="SQLAlchemy URL (env BADGE_SERVICE_DATABASE_URL)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--address", help="host:port to listen on (default 127.0.0.1:50051)")
    serve.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    serve.add_argument("--log-level")
    serve.add_argument(
        "--log-format",
        choices=["auto", "json", "text"],
        help="log lines as JSON, or readable text (auto: text on a terminal)",
    )
    serve.add_argument(
        "--grace-period", type=float, help="seconds in-flight calls get to finish on shutdown"
    )
    serve.add_argument(
        "--drain-delay",
        type=float,
        help="seconds to keep taking new calls after SIGTERM, health already NOT_SERVING",
    )
    serve.add_argument("--workers", type=int, help="processes sharing the port")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca", help="PEM CA bundle: require client certificates from it (mTLS)"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    serve.add_argument(
        "--db-statement-timeout",
        type=float,
        help="seconds a statement may run before the call is UNAVAILABLE (default 5)",
    )
    serve.add_argument(
        "--db-connect-timeout",
        type=float,
        help="seconds to connect to PostgreSQL or wait for a pooled connection (default 2)",
    )
    serve.add_argument(
        "--db-statement-cache",
        type=int,
        metavar="N",
        help="PostgreSQL statements kept prepared per connection (default 100; 0 behind "
        "PgBouncer in transaction mode)",
    )
    serve.add_argument(
        "--http-address",
        metavar="HOST:PORT",
        help="serve HTTP there: hosted Open Badges, /healthz, /readyz (default: none)",
    )
    serve.add_argument(
        "--public-base-url",
        help="base URL of Open Badges ids (default http://{--http-address} when it is given, "
        "else http://localhost:50051)",
    )
    serve.add_argument(
        "--watch-max-per-org", type=int, help="open WatchAwards streams per org (default 1000)"
    )
    serve.add_argument(
        "--watch-max-streams",
        type=int,
        help="open WatchAwards streams per process (default 10000)",
    )
    serve.add_argument(
        "--watch-buffer",
        type=int,
        help="events a WatchAwards stream may fall behind before it is dropped (default 1000)",
    )
    serve.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (default: none)",
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    migrate.set_defaults(func=cmd_migrate)

    org = sub.add_parser("orgs", help="organisations").add_subparsers(dest="action", required=True)
    create = org.add_parser("create", help="create an organisation and an admin key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.add_argument(
        "--uuid",
        type=_uuid,
        help="the organisation's UUID, kept from elsewhere (Credly's organization id)",
    )
    create.add_argument(
        "--id",
        type=_positive,
        help="the organisation's integer id, kept from elsewhere (Capillary's orgId)",
    )
    create.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    create.set_defaults(func=cmd_orgs_create)
    listing = org.add_parser("list", help="list organisations")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    listing.set_defaults(func=cmd_orgs_list)

    imp = sub.add_parser(
        "import",
        help="import a vendor's API answers, every id kept",
        description="Imports what a vendor's API returned (list pages, single objects, or "
        "files of several pages) into an organisation through the same rules as the RPCs, "
        "keeping every id. Idempotent by id; refused records are reported, the others go in.",
    )
    imp.add_argument("vendor", choices=["capillary", "crowdtwist", "credly", "badgr"])
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--org", type=int, required=True, help="the organisation to import into")
    imp.add_argument("--dry-run", action="store_true", help="check every record, write nothing")
    imp.add_argument(
        "--atomic", action="store_true", help="all or nothing: any refused record writes nothing"
    )
    imp.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    imp.add_argument("--chunk", type=int, default=500, help="records per transaction (default 500)")
    imp.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    imp.set_defaults(func=cmd_import)

    key_cmds = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kc = key_cmds.add_parser("create", help="create an API key")
    kc.add_argument("--org", type=int, required=True)
    kc.add_argument("--role", choices=[r.value for r in Role], default=Role.ADMIN.value)
    kc.add_argument(
        "--expires-in", type=_duration, help="the key expires after this long (90d, 12h, 2w)"
    )
    kc.add_argument("--json", action="store_true")
    kc.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    kc.set_defaults(func=cmd_keys_create)
    kl = key_cmds.add_parser("list", help="list an organisation's keys (never their secrets)")
    kl.add_argument("--org", type=int, required=True)
    kl.add_argument("--json", action="store_true")
    kl.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    kl.set_defaults(func=cmd_keys_list)
    kr = key_cmds.add_parser("revoke", help="revoke a key (refused everywhere within a second)")
    kr.add_argument("key_id", type=int)
    kr.add_argument("--json", action="store_true")
    kr.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    kr.set_defaults(func=cmd_keys_revoke)
    kt = key_cmds.add_parser("rotate", help="replace a key; the old one works for --grace")
    kt.add_argument("key_id", type=int)
    kt.add_argument(
        "--grace",
        type=_duration,
        default=dt.timedelta(hours=24),
        help="how long the old key keeps working (default 24h)",
    )
    kt.add_argument("--json", action="store_true")
    kt.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    kt.set_defaults(func=cmd_keys_rotate)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``badge-service`` command."""
    # gRPC's core writes its own (non-JSON) log lines to stderr, at INFO for every failed TLS
    # handshake: a misconfigured or hostile client would fill the log. Errors only, unless
    # the operator asks otherwise; set before gRPC is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = parser().parse_args(argv)
    settings = Settings.from_env(
        database_url=getattr(args, "sub_database_url", None) or args.database_url,
        address=getattr(args, "address", None),
        log_level=getattr(args, "log_level", None),
        log_format=getattr(args, "log_format", None),
        grace_period=getattr(args, "grace_period", None),
        drain_delay=getattr(args, "drain_delay", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        tls_client_ca=getattr(args, "tls_client_ca", None),
        workers=getattr(args, "workers", None),
        public_base_url=getattr(args, "public_base_url", None),
        http_address=getattr(args, "http_address", None),
        metrics_address=getattr(args, "metrics_address", None),
        db_statement_timeout=getattr(args, "db_statement_timeout", None),
        db_connect_timeout=getattr(args, "db_connect_timeout", None),
        db_statement_cache=getattr(args, "db_statement_cache", None),
        watch_max_per_org=getattr(args, "watch_max_per_org", None),
        watch_max_streams=getattr(args, "watch_max_streams", None),
        watch_buffer=getattr(args, "watch_buffer", None),
        migrate_on_start=False if getattr(args, "no_migrate", False) else None,
    )
    for name in ("db_statement_timeout", "db_connect_timeout"):
        if not getattr(settings, name) > 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be more than 0 seconds")
    if settings.db_statement_cache < 0:
        raise SystemExit("error: --db-statement-cache must be 0 or more")
    try:
        parse_database_url(settings.database_url)
    except DatabaseURLError as exc:
        raise SystemExit(f"error: --database-url: {exc}") from None
    try:
        args.func(settings, args)
    except SystemExit:
        _flush_logs()
        raise
    except Exception as exc:
        # The database down, unwritable or full: one line, not a traceback. A bug still
        # shows its traceback.
        line = faults.unusable(settings.database_url, exc)
        if line is None:
            raise
        _flush_logs()
        raise SystemExit(line) from None


def _flush_logs() -> None:
    """Writes the log lines still batched, so that an error line to exit with comes last."""
    for handler in logging.getLogger().handlers:
        handler.flush()


if __name__ == "__main__":
    main()
