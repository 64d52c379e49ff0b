"""The read path's shortcuts keep behaviour: Timestamps built by arithmetic equal
FromDatetime's, a pooled SQLite connection never keeps a transaction open although the
pool's rollback-on-return is off, and a snapshot-free read sees committed data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import text

from badge_service.rpc.convert import ts
from badge_service.store.db import Database

_PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
_MINUS_08 = dt.timezone(dt.timedelta(hours=-8))


class _NoOffset(dt.tzinfo):
    """A tzinfo without an offset: the datetime counts as naive."""

    def utcoffset(self, _value: dt.datetime | None) -> dt.timedelta | None:
        return None

    def dst(self, _value: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, _value: dt.datetime | None) -> str | None:
        return None


def _reference(value: dt.datetime) -> bytes | type[Exception]:
    out = timestamp_pb2.Timestamp()
    try:
        out.FromDatetime(value)
    except (ValueError, OverflowError) as exc:
        return type(exc)
    return out.SerializeToString()


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 23, 14, 5, 6, 789012, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),  # before the epoch
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),  # Timestamp's minimum
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),  # its maximum
        dt.datetime(2026, 3, 1, 12, 0, tzinfo=_PLUS_0530),  # converted to UTC
        dt.datetime(1999, 12, 31, 20, 0, 0, 5, tzinfo=_MINUS_08),
        dt.datetime(2026, 3, 1, 12, 0, 0, 7),  # naive: taken as UTC
        dt.datetime(2026, 3, 1, 12, 0, 0, 7, tzinfo=_NoOffset()),  # naive too
        dt.datetime(1, 1, 1, 0, 30, tzinfo=_PLUS_0530),  # before the minimum in UTC
    ],
)
def test_ts_matches_from_datetime(value: dt.datetime) -> None:
    expected = _reference(value)
    if isinstance(expected, bytes):
        got = ts(value)
        assert got is not None
        assert got.SerializeToString() == expected
    else:
        with pytest.raises(expected):
            ts(value)


def test_ts_of_none_is_none() -> None:
    assert ts(None) is None


async def test_sqlite_connection_returns_to_the_pool_without_a_transaction(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
    db = Database(url)
    try:
        # A transaction SQLAlchemy does not know about, opened on the driver directly: the
        # pool's reset listener must still end it when the connection is checked in.
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
            assert raw.driver_connection.in_transaction  # type: ignore[union-attr]
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert raw.driver_connection.in_transaction is False  # type: ignore[union-attr]
        # A block that fails inside write() leaves nothing open either.
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER)"))
                raise RuntimeError("boom")
        async with db.read(snapshot=False) as conn:
            raw = await conn.get_raw_connection()
            found = await conn.execute(text("SELECT name FROM sqlite_master WHERE name = 't'"))
            assert found.first() is None  # rolled back
            assert raw.driver_connection.in_transaction is False  # type: ignore[union-attr]
    finally:
        await db.close()


async def test_snapshot_free_read_sees_the_latest_commit(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}"
    db = Database(url)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO kv VALUES (1, 'a')"))
        for value in ("b", "c"):
            async with db.write() as conn:
                await conn.execute(text("UPDATE kv SET v = :v WHERE k = 1"), {"v": value})
            async with db.read(snapshot=False) as conn:
                row = (await conn.execute(text("SELECT v FROM kv WHERE k = 1"))).one()
            assert row.v == value
    finally:
        await db.close()
