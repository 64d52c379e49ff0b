"""Settings: command-line flags override BADGE_SERVICE_* environment variables, which override
the defaults here."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

ENV_PREFIX = "BADGE_SERVICE_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be configured with."""

    address: str = "127.0.0.1:50051"
    database_url: str = "sqlite+aiosqlite:///./badges.db"
    log_level: str = "INFO"
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
    # TLS: the server's PEM certificate chain and key; with a client CA, mTLS (clients must
    # present a certificate that chains to it). Empty: plaintext.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Where openBadgeIds of Badgr issuers and badge classes point: {base}/public/issuers/{id}.
    public_base_url: str = "http://localhost:50051"
    # WatchAwards: open streams allowed per organisation and per process; events a stream may
    # fall behind before it is dropped; how often other processes' events are polled for; how
    # long a stream may stay blocked in one write before it is dropped.
    watch_max_per_org: int = 1000
    watch_max_streams: int = 10_000
    watch_buffer: int = 1000
    watch_poll_seconds: float = 0.5
    watch_stall_seconds: float = 30.0

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
