"""Alembic environment: always run with a connection handed in by badge_service.store.migrate."""

from __future__ import annotations

from alembic import context

from badge_service.store.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `badge-service migrate`, which supplies the database")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
