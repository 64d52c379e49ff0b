"""Settings: command-line flags override BADGE_SERVICE_* environment variables, which override
the defaults here."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, fields, replace
from typing import Any

ENV_PREFIX = "BADGE_SERVICE_"
# The public base URL when none is configured and the HTTP face is off (issue 9's default).
DEFAULT_PUBLIC_BASE_URL = "http://localhost:50051"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be configured with."""

    address: str = "127.0.0.1:50051"
    database_url: str = "sqlite+aiosqlite:///./badges.db"
    log_level: str = "INFO"
    # "json", "text", or "auto": text when stderr is a terminal, else JSON.
    log_format: str = "auto"
    # Seconds in-flight calls get to finish once new calls are refused after SIGTERM/SIGINT.
    grace_period: float = 10.0
    # Seconds to keep taking new calls after SIGTERM/SIGINT while health already says
    # NOT_SERVING, so that load balancers stop sending before calls are refused.
    drain_delay: float = 0.0
    max_message_bytes: int = 16 * 1024 * 1024
    # How often each process checks for created, revoked or rotated keys.
    auth_refresh_seconds: float = 0.5
    migrate_on_start: bool = True
    reflection: bool = True
    workers: int = 1
    db_pool_size: int = 10
    # PostgreSQL: where the WatchAwards LISTEN/NOTIFY connection goes (one per process).
    # Empty: database_url. Set it to the server itself (or a session-mode pooler) when
    # database_url goes through PgBouncer in transaction mode, which cannot LISTEN.
    db_listen_url: str = ""
    # PostgreSQL: statements each connection keeps prepared under a name (SQLAlchemy's and
    # asyncpg's caches). 0: none, every statement is prepared unnamed inside its own round
    # trips, which is what PgBouncer in transaction mode (or any pooler that hands a client's
    # statements to different server connections) needs; it also turns LISTEN/NOTIFY off
    # unless db_listen_url names a connection that keeps its session (docs/deploy.md).
    db_statement_cache: int = 100
    # TLS: the server's PEM certificate chain and key; with a client CA, mTLS (clients must
    # present a certificate that chains to it). Empty: plaintext.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Seconds a call's statement may run (PostgreSQL statement_timeout; on SQLite, the wait
    # for another writer's lock); past it the call is UNAVAILABLE.
    db_statement_timeout: float = 5.0
    # Seconds to open a PostgreSQL connection, or to wait for a free one in the pool.
    db_connect_timeout: float = 2.0
    # Where openBadgeIds of Badgr issuers and badge classes point: {base}/public/issuers/{id}.
    # Empty: http://{http_address} when the HTTP face is on, else DEFAULT_PUBLIC_BASE_URL
    # (see public_base()).
    public_base_url: str = ""
    # HOST:PORT of the HTTP face (hosted Open Badges, /healthz, /readyz); empty: no HTTP.
    http_address: str = ""
    # WatchAwards: open streams allowed per organisation and per process; events a stream may
    # fall behind before it is dropped; how often other processes' events are polled for; how
    # long a stream may stay blocked in one write before it is dropped.
    watch_max_per_org: int = 1000
    watch_max_streams: int = 10_000
    watch_buffer: int = 1000
    watch_poll_seconds: float = 0.5
    watch_stall_seconds: float = 30.0
    # On PostgreSQL, while LISTEN/NOTIFY brings other processes' events: how often the watch
    # hub still polls, for a notification that was lost (a process died before sending it).
    watch_fallback_seconds: float = 5.0
    # HOST:PORT of the Prometheus metrics endpoint; empty: no metrics.
    metrics_address: str = ""

    def public_base(self, http_port: int | None = None) -> str:
        """The public base URL in force: the configured one, else ``http://{http_address}``
        (with ``http_port``, the port actually bound, in place of a port 0) when the HTTP face
        is on, else DEFAULT_PUBLIC_BASE_URL."""
        if self.public_base_url:
            return self.public_base_url
        if not self.http_address:
            return DEFAULT_PUBLIC_BASE_URL
        host, _, port = self.http_address.rpartition(":")
        host = host or "localhost"  # ":8080" listens on every interface
        if http_port is not None and port == "0":
            port = str(http_port)
        return f"http://{host}:{port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then the environment, then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.type, raw, f.name)
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _parse(kind: Any, raw: str, name: str) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SystemExit(f"{ENV_PREFIX}{name.upper()}: cannot use {raw!r} as {kind}") from None
    return raw


def check_address(address: str, flag: str = "--address") -> tuple[str, int]:
    """The (host, port) of a ``host:port`` listening address; SystemExit with one line when
    the port is not 0-65535 or the host does not resolve. gRPC would otherwise accept a port
    such as 99999 and log its own lines before failing."""
    host, sep, port_text = address.rpartition(":")
    bare = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SystemExit(f"error: {flag}: {address!r} is not HOST:PORT with a port 0-65535")
    if bare:
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            try:
                socket.getaddrinfo(bare, int(port_text), type=socket.SOCK_STREAM)
            except OSError:
                raise SystemExit(f"error: {flag}: cannot resolve host {bare!r}") from None
    return bare, int(port_text)


def check_free(address: str, flag: str = "--address") -> None:
    """SystemExit with one line when something already listens on ``address`` (checked by
    binding it for a moment; port 0 is always free)."""
    host, port = check_address(address, flag)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            why = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            named = "" if flag == "--address" else f"{flag}: "  # --address: as it always was
            raise SystemExit(f"error: {named}cannot listen on {address}: {why}") from None


def check_log_level(level: str) -> None:
    """SystemExit with one line unless ``level`` is a logging level name."""
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise SystemExit(
            f"error: --log-level: {level!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
