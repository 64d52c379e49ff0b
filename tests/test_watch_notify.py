"""WatchAwards on PostgreSQL is woken by LISTEN/NOTIFY (store.notify): another process's
commit reaches a watcher with polling off; a lost listening connection is reconnected, and
what committed while it was down arrives once it is back; the connection goes to the listen
URL, and one that cannot be reached leaves the hub polling; SQLite has no notices.

A second server on the same database stands for another process (its own Database, bell and
notification connection). The watching server's hub has its polls slowed to NO_POLL, so an
event can arrive only by a notification (or by the wake-up of a reconnection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from badge_service.api.badges.v1 import award_pb2 as apb
from badge_service.api.badges.v1 import badge_pb2 as pb
from badge_service.config import Settings
from badge_service.server import Running, start
from badge_service.service.watch import hub_of
from badge_service.store import notify
from tests.support import Backend, Client, Org
from tests.test_award_events import NO_POLL, progress_of, watching
from tests.test_progress import EARNED, IN_PROGRESS, awards, member, new_badge, record
from tests.test_watch import wait_until


@pytest.fixture
async def second(backend: Backend) -> AsyncIterator[Running]:
    """Another server on the backend's PostgreSQL database."""
    if backend.name != "postgres":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    running = await start(
        Settings(address="127.0.0.1:0", database_url=backend.url, log_level="WARNING")
    )
    try:
        yield running
    finally:
        await running.stop(grace=1)


async def _terminate(url: str, pid: int) -> None:
    """Ends a server process's connection, as a failover or an administrator would."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username, host=parsed.host, port=parsed.port, database=parsed.database
    )
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_sqlite_has_no_notices(backend: Backend, org: Org) -> None:
    if backend.name != "sqlite":
        pytest.skip("SQLite's case")
    async with watching(org.admin):
        assert not hub_of(backend.db).listening


async def test_another_process_commit_wakes_the_watcher_without_polling(
    monkeypatch: pytest.MonkeyPatch, backend: Backend, second: Running, org: Org
) -> None:
    hub = hub_of(backend.db)
    monkeypatch.setattr(hub, "poll_seconds", NO_POLL)
    monkeypatch.setattr(hub, "fallback_seconds", NO_POLL)
    badge = await new_badge(org, "notified")
    elsewhere = Client.connect(second.port, [("authorization", f"Bearer {org.admin_key}")])
    try:
        async with watching(org.admin) as watch:
            await wait_until(lambda: hub.listening, "the hub to listen")
            loop = asyncio.get_running_loop()
            for i in range(5):
                began = loop.time()
                await awards(elsewhere).RecordProgress(
                    apb.RecordProgressRequest(
                        badge_id=badge, recipient=member(f"n-{i}"), state=EARNED
                    )
                )
                (event,) = await watch.take(1)
                assert event.sequence == watch.after + i + 1
                # Far sooner than any poll: the notification woke the hub.
                assert loop.time() - began < 1.0
    finally:
        await elsewhere.channel.close()


async def test_a_lost_listening_connection_is_reconnected_and_nothing_is_missed(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    backend: Backend,
    second: Running,
    org: Org,
) -> None:
    hub = hub_of(backend.db)
    monkeypatch.setattr(hub, "poll_seconds", NO_POLL)
    monkeypatch.setattr(hub, "fallback_seconds", NO_POLL)
    notices = notify.notices_for(backend.db)
    assert notices is not None
    badge = await new_badge(org, "reconnected")
    elsewhere = Client.connect(second.port, [("authorization", f"Bearer {org.admin_key}")])

    async def write(name: str, state: pb.BadgeStateType.ValueType) -> None:
        await awards(elsewhere).RecordProgress(
            apb.RecordProgressRequest(badge_id=badge, recipient=member(name), state=state)
        )

    try:
        async with watching(org.admin) as watch:
            await wait_until(lambda: hub.listening, "the hub to listen")
            connects = notices.connects
            with caplog.at_level(logging.WARNING, logger="badge_service.watch"):
                await _terminate(backend.url, notices.server_pid)
                await wait_until(lambda: not hub.listening, "the hub to notice the loss")
                # Committed while nothing listens: no notification will ever name it.
                await write("while-down", IN_PROGRESS)
                await wait_until(lambda: notices.connects > connects, "a reconnection")
            assert "watch hub stopped listening for notifications; polling until it reconnects" in (
                caplog.messages
            )
            assert hub.listening
            # The reconnection's wake-up read what committed meanwhile; then notifications
            # wake the hub again.
            await write("after", EARNED)
            got = await watch.take(2)
            assert progress_of(got) == [
                (badge, "while-down", IN_PROGRESS, 2),
                (badge, "after", EARNED, 3),
            ]
            assert [e.sequence for e in got] == [watch.after + 1, watch.after + 2]
    finally:
        await elsewhere.channel.close()


async def test_the_listening_connection_goes_to_the_listen_url(backend: Backend, org: Org) -> None:
    """BADGE_SERVICE_DB_LISTEN_URL names where LISTEN goes (the pool's URL is untouched): one
    nobody answers leaves the hub polling, its failures logged as store faults, and streams
    still get every event."""
    if backend.name != "postgres":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    nowhere = make_url(backend.url).set(host="127.0.0.1", port=1)
    nowhere_url = nowhere.render_as_string(hide_password=False)
    server = await start(
        Settings(
            address="127.0.0.1:0",
            database_url=backend.url,
            db_listen_url=nowhere_url,
            log_level="WARNING",
        )
    )
    try:
        hub = hub_of(server.db)
        client = Client.connect(server.port, [("authorization", f"Bearer {org.admin_key}")])
        badge = await new_badge(org, "unheard")
        try:
            async with watching(client) as watch:
                notices = notify.notices_for(server.db)
                assert notices is not None
                await record(org, badge, member("polled"), EARNED)  # through the backend
                (event,) = await watch.take(1)
                assert event.sequence == watch.after + 1
                assert not hub.listening and notices.connects == 0
                # Refused, and classified as the store's fault (logged rate-limited).
                assert notices.failures >= 1
                assert notices.last_fault == "ConnectionRefusedError"
        finally:
            await client.channel.close()
    finally:
        await server.stop(grace=1)
