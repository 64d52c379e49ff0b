"""The ``badge-service`` command: serve, migrate, and create organisations and API keys."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
from collections.abc import Coroutine, Sequence
from typing import Any

from badge_service import logs
from badge_service.config import Settings
from badge_service.domain.auth import Role, hash_api_key, new_api_key
from badge_service.store import orgs
from badge_service.store.db import Database
from badge_service.store.migrate import upgrade


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _with_db(settings: Settings, work: Any) -> Any:
    db = Database(settings.database_url)
    try:
        await upgrade(db)
        async with db.write() as conn:
            return await work(conn)
    finally:
        await db.close()


def _issue_key(role: Role) -> tuple[str, str, str]:
    key = new_api_key()
    return key, hash_api_key(key), key[:12]


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    """Serves until SIGTERM/SIGINT."""
    from badge_service.server import serve, serve_workers

    if settings.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    if settings.grace_period < 0 or settings.drain_delay < 0:
        raise SystemExit("error: --grace-period and --drain-delay must not be negative")
    logs.configure(settings.log_level)
    if settings.workers > 1:
        raise SystemExit(serve_workers(settings))
    _run(serve(settings))


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    """Applies pending migrations."""

    async def go() -> None:
        db = Database(settings.database_url)
        try:
            await upgrade(db)
        finally:
            await db.close()

    _run(go())
    print(f"migrated {_redact(settings.database_url)}")


def cmd_orgs_create(settings: Settings, args: argparse.Namespace) -> None:
    """Creates an organisation and its first admin key."""
    key, digest, prefix = _issue_key(Role.ADMIN)

    async def work(conn: Any) -> tuple[orgs.Org, int]:
        now = dt.datetime.now(dt.UTC)
        org = await orgs.create_org(conn, args.name, now)
        key_id = await orgs.create_key(conn, org.id, Role.ADMIN, digest, prefix, now)
        return org, key_id

    org, key_id = _run(_with_db(settings, work))
    if args.json:
        print(
            json.dumps(
                {
                    "org_id": org.id,
                    "org_uuid": org.uuid,
                    "name": org.name,
                    "key_id": key_id,
                    "role": "admin",
                    "api_key": key,
                }
            )
        )
    else:
        print(f"org_id:   {org.id}\norg_uuid: {org.uuid}\nname:     {org.name}")
        print(f"api_key:  {key}   (role admin; shown once, store it now)")


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
    key, digest, prefix = _issue_key(role)

    async def work(conn: Any) -> int:
        now = dt.datetime.now(dt.UTC)
        return await orgs.create_key(conn, args.org, role, digest, prefix, now)

    try:
        key_id = _run(_with_db(settings, work))
    except Exception as exc:  # NotFound for an unknown org
        raise SystemExit(f"error: {exc}") from None
    if args.json:
        print(
            json.dumps({"org_id": args.org, "key_id": key_id, "role": role.value, "api_key": key})
        )
    else:
        print(f"api_key: {key}   (role {role.value}; shown once, store it now)")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="badge-service", description=__doc__)
    p.add_argument("--database-url", help="SQLAlchemy URL (env BADGE_SERVICE_DATABASE_URL)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--address", help="host:port to listen on (default 127.0.0.1:50051)")
    serve.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    serve.add_argument("--log-level")
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
        "--public-base-url", help="base URL of Badgr openBadgeIds (default http://localhost:50051)"
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    migrate.set_defaults(func=cmd_migrate)

    org = sub.add_parser("orgs", help="organisations").add_subparsers(dest="action", required=True)
    create = org.add_parser("create", help="create an organisation and an admin key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    create.set_defaults(func=cmd_orgs_create)
    listing = org.add_parser("list", help="list organisations")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    listing.set_defaults(func=cmd_orgs_list)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kc = keys.add_parser("create", help="create an API key")
    kc.add_argument("--org", type=int, required=True)
    kc.add_argument("--role", choices=[r.value for r in Role], default=Role.ADMIN.value)
    kc.add_argument("--json", action="store_true")
    kc.add_argument("--database-url", dest="sub_database_url", help=argparse.SUPPRESS)
    kc.set_defaults(func=cmd_keys_create)
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
        grace_period=getattr(args, "grace_period", None),
        drain_delay=getattr(args, "drain_delay", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        tls_client_ca=getattr(args, "tls_client_ca", None),
        workers=getattr(args, "workers", None),
        public_base_url=getattr(args, "public_base_url", None),
        migrate_on_start=False if getattr(args, "no_migrate", False) else None,
    )
    args.func(settings, args)


if __name__ == "__main__":
    main()
