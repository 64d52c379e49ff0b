"""Alembic migrations, run programmatically (``badge-service migrate`` and at start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from badge_service.store.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations; ``connection`` is the one to migrate on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # A migration may rewrite a large table: the service's statement timeout is for calls.
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    command.upgrade(alembic_config(connection), "head")


async def upgrade(db: Database) -> None:
    """Applies every pending migration in one transaction."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade)
