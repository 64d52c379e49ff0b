"""Fixtures: one real server per database (SQLite always, PostgreSQL when
BADGE_SERVICE_TEST_PG_URL is set), reached through real channels on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from badge_service.config import Settings
from badge_service.server import start
from tests.support import Backend, Org, create_pg_database, drop_pg_database, pg_url

# Skips for want of BADGE_SERVICE_TEST_PG_URL fail the run when BADGE_SERVICE_REQUIRE_PG=1.
pytest_plugins = ["tests.require_pg"]

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    """A migrated database and a started server on it, for the whole session."""
    name = request.param
    if name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'badges.db'}"
    else:
        base = pg_url()
        if base is None:
            pytest.skip(
                "PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL "
                "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
            )
        url = await create_pg_database(base)
    settings = Settings(address="127.0.0.1:0", database_url=url, log_level="WARNING")
    running = await start(settings)
    b = Backend(name, url, running, [])
    try:
        yield b
    finally:
        for c in b.clients:
            await c.channel.close()
        await running.stop(grace=1)
        if name == "postgres":
            await drop_pg_database(url)


@pytest.fixture
async def org(backend: Backend) -> Org:
    """A fresh organisation (so tests never see each other's data) with admin/reader keys."""
    return await backend.new_org()


@pytest.fixture
async def other_org(backend: Backend) -> Org:
    """A second organisation, for tenancy tests."""
    return await backend.new_org()
