"""Database.run_write / run_read / fetch on a scratch table, on SQLite (a temporary file) and on
PostgreSQL (a scratch database) when BADGE_SERVICE_TEST_PG_URL is set.

run_write: every caller gets exactly its own result or its own exception, and the table holds
exactly the rows of the writes that succeeded, also when (on SQLite) many writes share one
group commit and some of them fail halfway; a write that fails alone leaves nothing; a write
whose caller was cancelled before its batch started never runs; close() finishes queued
writes. run_read returns its function's value and sees committed writes (and, on SQLite, not
uncommitted ones, without waiting for them). fetch runs prebuilt statements with named
parameters, one or several in a snapshot, and raises SQLAlchemy's DBAPIError subclasses.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.util import await_only

from badge_service.domain.errors import InvalidArgument
from badge_service.store.db import Database
from badge_service.store.faults import StoreUnavailable
from tests.support import create_pg_database, drop_pg_database, pg_url


@pytest.fixture(scope="module")
async def pg_database() -> AsyncIterator[str | None]:
    """One scratch PostgreSQL database for the module (None without the environment)."""
    base = pg_url()
    if base is None:
        yield None
        return
    url = await create_pg_database(base)
    try:
        yield url
    finally:
        await drop_pg_database(url)


class Scratch:
    """A Database and a scratch table ``rows(id, k unique, note, data)`` on it."""

    def __init__(self, name: str, db: Database) -> None:
        self.name = name
        self.db = db
        self.meta = MetaData()
        suffix = uuid.uuid4().hex[:8]
        self.rows = Table(
            f"gc_rows_{suffix}",
            self.meta,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("k", String(40), nullable=False, unique=True),
            Column("note", String(40)),
            Column("data", LargeBinary),
        )

    @property
    def sqlite(self) -> bool:
        return self.name == "sqlite"

    def put(self, conn: Connection, k: str, note: str | None = None) -> int:
        """Inserts a row; returns its id."""
        result = conn.execute(insert(self.rows).values(k=k, note=note).returning(self.rows.c.id))
        return int(result.scalar_one())

    async def keys(self) -> set[str]:
        """Every k in the table, read after the fact through a fresh read."""

        def read(conn: Connection) -> set[str]:
            return {str(k) for k in conn.execute(select(self.rows.c.k)).scalars()}

        return await self.db.run_read(read)


@pytest.fixture(params=["sqlite", "postgres"])
async def scratch(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None
) -> AsyncIterator[Scratch]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'group.db'}"
    else:
        if pg_database is None:
            pytest.skip("PostgreSQL tests need BADGE_SERVICE_TEST_PG_URL")
        url = pg_database
    s = Scratch(request.param, Database(url))
    async with s.db.write() as conn:
        await conn.run_sync(s.meta.create_all)
    try:
        yield s
    finally:
        if not s.sqlite:
            async with s.db.write() as conn:
                await conn.run_sync(s.meta.drop_all)
        await s.db.close()


# --- run_write --------------------------------------------------------------------------------


async def test_concurrent_writes_each_get_their_own_outcome(scratch: Scratch) -> None:
    """200 writes at once: a third fail after inserting (a domain error, or a UNIQUE
    violation on their second insert); each caller gets exactly its own outcome and only the
    successful writes' rows are left."""
    s = scratch
    await s.db.run_write(s.put, "taken")
    n = 200
    raised: dict[int, InvalidArgument] = {}
    ran: list[tuple[int, Any]] = []  # (job, the transaction it ran in)

    def job(conn: Connection, i: int) -> tuple[int, int]:
        ran.append((i, conn.get_transaction()))
        row_id = s.put(conn, f"k{i}", note=f"n{i}")
        if i % 3 == 1:
            err = InvalidArgument(f"job{i}", "refused after its insert")
            raised[i] = err
            raise err
        if i % 3 == 2:
            s.put(conn, "taken")  # UNIQUE violation after a good insert
        # Reads its own write inside the transaction.
        note = conn.execute(select(s.rows.c.note).where(s.rows.c.id == row_id)).scalar_one()
        assert note == f"n{i}"
        return i, row_id

    outcomes = await asyncio.gather(
        *(s.db.run_write(job, i) for i in range(n)), return_exceptions=True
    )

    ok_ids: dict[int, int] = {}
    for i, got in enumerate(outcomes):
        if i % 3 == 1:
            assert got is raised[i], (i, got)
        elif i % 3 == 2:
            assert isinstance(got, IntegrityError), (i, got)
        else:
            assert isinstance(got, tuple) and got[0] == i, (i, got)
            ok_ids[i] = got[1]
    assert await s.keys() == {"taken"} | {f"k{i}" for i in range(0, n, 3)}
    assert sorted(i for i, _ in ran) == list(range(n))  # each job ran exactly once

    def stored(conn: Connection) -> dict[str, tuple[int, str | None]]:
        rows = conn.execute(select(s.rows.c.k, s.rows.c.id, s.rows.c.note))
        return {str(k): (int(row_id), note) for k, row_id, note in rows}

    by_key = await s.db.run_read(stored)
    for i, row_id in ok_ids.items():
        assert by_key[f"k{i}"] == (row_id, f"n{i}")  # the id each caller was told

    # Group commit: writes shared transactions, and a shared transaction held failed and
    # successful writes alike (only the failed ones were rolled back).
    transactions = {id(tx) for _, tx in ran}
    assert len(transactions) < n
    outcome_of = {i: i % 3 == 0 for i in range(n)}
    mixed = {
        id(tx)
        for tx in {id(tx): tx for _, tx in ran}.values()
        if {outcome_of[i] for i, t in ran if t is tx} == {True, False}
    }
    assert mixed
    if s.sqlite:
        # Queued writes run in call order: the successful ones got increasing ids. (On
        # PostgreSQL batches run side by side on several connections.)
        assert [ok_ids[i] for i in sorted(ok_ids)] == sorted(ok_ids.values())


async def test_a_lone_write_that_fails_leaves_nothing(scratch: Scratch) -> None:
    s = scratch

    def fails(conn: Connection) -> None:
        s.put(conn, "a")
        s.put(conn, "b")
        raise InvalidArgument("x", "no")

    with pytest.raises(InvalidArgument) as caught:
        await s.db.run_write(fails)
    assert caught.value.field == "x"
    assert await s.keys() == set()

    def duplicate(conn: Connection) -> None:
        s.put(conn, "c")
        s.put(conn, "c")

    with pytest.raises(IntegrityError):
        await s.db.run_write(duplicate)
    assert await s.keys() == set()
    # And the next write works.
    assert await s.db.run_write(s.put, "d") > 0
    assert await s.keys() == {"d"}


async def test_keyword_arguments_reach_the_function(scratch: Scratch) -> None:
    s = scratch

    def put_noted(conn: Connection, k: str, *, note: str) -> str:
        s.put(conn, k, note)
        return f"{k}:{note}"

    got = await asyncio.gather(
        s.db.run_write(put_noted, "a", note="x"), s.db.run_write(put_noted, "b", note="y")
    )
    assert list(got) == ["a:x", "b:y"]

    def notes(conn: Connection, *, k: str) -> str | None:
        return conn.execute(select(s.rows.c.note).where(s.rows.c.k == k)).scalar()

    assert await s.db.run_read(notes, k="b") == "y"


# Generous bounds for a loaded machine. A read that must not wait for a held write gives up
# after READ_BESIDE_A_WRITE, well before the Gate lets go by itself (GATE_HOLDS_AT_MOST), so a
# read that did wait fails rather than passing once the write ends.
GATE_HOLDS_AT_MOST = 120.0
READ_BESIDE_A_WRITE = 30.0


class Gate:
    """A write that holds its batch until released: it signals when it runs. On SQLite it
    blocks the writer thread; on PostgreSQL (where the write runs on the event loop, in
    run_sync's greenlet) it awaits an asyncio event, as a slow statement would."""

    def __init__(self, key: str = "held") -> None:
        self.key = key
        self.started = threading.Event()
        self._release = threading.Event()
        self._released = asyncio.Event()

    def hold(self, conn: Connection, s: Scratch) -> str:
        s.put(conn, self.key)
        self.started.set()
        if s.sqlite:
            assert self._release.wait(GATE_HOLDS_AT_MOST)
        else:
            await_only(asyncio.wait_for(self._released.wait(), GATE_HOLDS_AT_MOST))
        return self.key

    def release(self) -> None:
        self._release.set()
        self._released.set()

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, GATE_HOLDS_AT_MOST)


async def test_a_write_cancelled_before_its_batch_never_runs(scratch: Scratch) -> None:
    s = scratch
    gate = Gate()
    held = asyncio.create_task(s.db.run_write(gate.hold, s))
    await gate.wait_started()  # the first batch is running (SQLite: in the writer thread)
    ran: list[str] = []

    def put(conn: Connection, k: str) -> str:
        ran.append(k)
        s.put(conn, k)
        return k

    if not s.sqlite:
        # PostgreSQL runs several batches at once: the other writers are held too, so that
        # a, b and c queue.
        others = [Gate(f"other{i}") for i in range(s.db.writers - 1)]
        holding = [asyncio.create_task(s.db.run_write(g.hold, s)) for g in others]
        for g in others:
            await g.wait_started()
    waiting = {k: asyncio.create_task(s.db.run_write(put, k)) for k in ("a", "b", "c")}
    for _ in range(3):
        await asyncio.sleep(0)  # every one is queued behind the held batch
    assert not any(t.done() for t in waiting.values())
    waiting["b"].cancel()
    gate.release()
    if not s.sqlite:
        for g in others:
            g.release()
        assert await asyncio.gather(*holding) == [g.key for g in others]
    assert await held == "held"
    assert await waiting["a"] == "a"
    assert await waiting["c"] == "c"
    with pytest.raises(asyncio.CancelledError):
        await waiting["b"]
    assert ran == ["a", "c"]
    if s.sqlite:
        assert await s.keys() == {"held", "a", "c"}


async def test_reads_neither_wait_for_nor_see_an_open_write(scratch: Scratch) -> None:
    s = scratch
    await s.db.run_write(s.put, "before")
    gate = Gate()
    held = asyncio.create_task(s.db.run_write(gate.hold, s))
    await gate.wait_started()
    count = select(func.count()).select_from(s.rows)
    try:
        # The writer holds an uncommitted row; reads of either kind go ahead beside it.
        read = s.db.run_read(lambda c: c.execute(count).scalar())
        assert await asyncio.wait_for(read, READ_BESIDE_A_WRITE) == 1
        assert await asyncio.wait_for(s.db.fetch((count, {})), READ_BESIDE_A_WRITE) == [[(1,)]]
    finally:
        gate.release()
    await held
    assert await s.db.run_read(lambda c: c.execute(count).scalar()) == 2
    assert await s.db.fetch((count, {})) == [[(2,)]]


async def test_a_failed_commit_fails_every_write_of_its_batch(scratch: Scratch) -> None:
    """A deferred foreign key is checked only at COMMIT, after every write of the batch ran:
    the COMMIT fails, so nothing of the batch landed and every caller is told so; the next
    write works (no transaction is left open on the connection)."""
    s = scratch
    parents = Table(
        f"gc_parents_{uuid.uuid4().hex[:8]}", s.meta, Column("id", Integer, primary_key=True)
    )
    children = Table(
        f"gc_children_{uuid.uuid4().hex[:8]}",
        s.meta,
        Column("id", Integer, primary_key=True),
        Column(
            "parent",
            Integer,
            ForeignKey(parents.c.id, deferrable=True, initially="DEFERRED"),
            nullable=False,
        ),
    )
    async with s.db.write() as conn:
        await conn.run_sync(s.meta.create_all)

    batch_of: dict[str, Any] = {}  # each write's transaction (held: ids are not reused)

    def good(conn: Connection, k: str) -> str:
        s.put(conn, k)
        batch_of[k] = conn.get_transaction()
        return k

    def orphan(conn: Connection) -> str:
        conn.execute(insert(children).values(id=1, parent=999))  # accepted until COMMIT
        batch_of["orphan"] = conn.get_transaction()
        return "orphan"

    # Queue the five behind held batches (every writer's), so that they are one batch.
    gates = [Gate(f"held{i}") for i in range(1 if s.sqlite else s.db.writers)]
    holding = [asyncio.create_task(s.db.run_write(g.hold, s)) for g in gates]
    for g in gates:
        await g.wait_started()
    calls = [
        s.db.run_write(orphan),
        s.db.run_write(good, "a"),
        s.db.run_write(good, "b"),
        s.db.run_write(good, "c"),
        s.db.run_write(good, "d"),
    ]
    batch = asyncio.gather(*calls, return_exceptions=True)
    await asyncio.sleep(0)
    for g in gates:
        g.release()
    outcomes = dict(zip(["orphan", "a", "b", "c", "d"], await batch, strict=True))
    assert await asyncio.gather(*holding) == [g.key for g in gates]
    # On SQLite the five are one batch; PostgreSQL may spread queued writes over its writers
    # (the first free one takes at least its share, 2 of 5), so there the orphan's batch is
    # the writes that shared its transaction.
    failed = {k for k, tx in batch_of.items() if tx is batch_of["orphan"]}
    assert len(failed) == 5 if s.sqlite else len(failed) >= 2, batch_of
    for k, got in outcomes.items():
        if k in failed:
            assert isinstance(got, IntegrityError), (k, got)
        else:
            assert got == k
    assert await s.keys() == {g.key for g in gates} | (set(outcomes) - failed)
    assert await s.db.run_write(good, "after") == "after"
    assert "after" in await s.keys()
    assert (
        await s.db.run_read(
            lambda c: c.execute(select(func.count()).select_from(children)).scalar()
        )
        == 0
    )


async def test_a_write_that_loses_a_deadlock_runs_again(scratch: Scratch) -> None:
    """PostgreSQL: a write of a batch that deadlocks with another transaction rolls the batch
    back whole (every lock of it, so the other transaction goes on at once), the batch runs
    again and every caller gets its result."""
    s = scratch
    if s.sqlite:
        pytest.skip("SQLite has one writer: no deadlock")
    import asyncpg

    await s.db.run_write(s.put, "r1")
    await s.db.run_write(s.put, "r2")
    table = s.rows.name
    other = await asyncpg.connect(s.db.url.set(drivername="postgresql").render_as_string(False))
    try:
        # The batch's session (deadlock_timeout 1 s) finds the deadlock, so its write is the
        # victim, not this transaction.
        await other.execute("SET deadlock_timeout = '20s'")
        await other.execute("BEGIN")
        await other.execute(f"UPDATE {table} SET note = 'other' WHERE k = 'r2'")
        tries: list[str] = []

        def crossing(conn: Connection) -> str:
            tries.append("try")
            for k in ("r1", "r2"):  # r2 waits for the other transaction
                conn.execute(s.rows.update().where(s.rows.c.k == k).values(note="write"))
            return "crossed"

        def good(conn: Connection, k: str) -> str:
            s.put(conn, k)
            return k

        # Eight queued at once: the first writer's share is the first two.
        names = ["g0", "crossing", *(f"g{i}" for i in range(1, 7))]
        calls = [
            s.db.run_write(crossing) if n == "crossing" else s.db.run_write(good, n) for n in names
        ]
        writes = asyncio.gather(*calls)
        for _ in range(600):  # until the batch's write waits for r2 (a lock not granted)
            if await other.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the batch's write never waited for the row lock")
        # Now this one waits for r1, which the batch's write holds: a deadlock.
        await other.execute(f"UPDATE {table} SET note = 'other' WHERE k = 'r1'")
        await other.execute("COMMIT")
        assert await asyncio.wait_for(writes, 30) == [names[0], "crossed", *names[2:]]
    finally:
        await other.close()
    assert tries == ["try", "try"]
    assert await s.keys() == {"r1", "r2", *names} - {"crossing"}

    def notes(conn: Connection) -> dict[str, str | None]:
        rows = conn.execute(select(s.rows.c.k, s.rows.c.note).where(s.rows.c.k.in_(["r1", "r2"])))
        return {str(k): note for k, note in rows}

    assert await s.db.run_read(notes) == {"r1": "write", "r2": "write"}


async def test_close_finishes_queued_writes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'close.db'}"
    s = Scratch("sqlite", Database(url))
    async with s.db.write() as conn:
        await conn.run_sync(s.meta.create_all)
    tasks = [asyncio.create_task(s.db.run_write(s.put, f"k{i}")) for i in range(50)]
    await asyncio.sleep(0)  # queued, not yet committed
    await s.db.close()
    ids = [t.result() for t in tasks]  # every one answered by the time close() returned
    assert len(set(ids)) == 50
    s.db = Database(url)
    try:
        assert await s.keys() == {f"k{i}" for i in range(50)}
    finally:
        await s.db.close()


# --- run_read ---------------------------------------------------------------------------------


async def test_run_read_returns_the_value_and_sees_committed_writes(scratch: Scratch) -> None:
    s = scratch

    def snapshot(conn: Connection, prefix: str) -> list[tuple[str, str | None]]:
        stmt = select(s.rows.c.k, s.rows.c.note).where(s.rows.c.k.startswith(prefix))
        return [(str(k), note) for k, note in conn.execute(stmt.order_by(s.rows.c.k))]

    assert await s.db.run_read(snapshot, "r") == []
    for i in range(3):
        await s.db.run_write(s.put, f"r{i}", f"note{i}")
        assert await s.db.run_read(snapshot, "r") == [(f"r{j}", f"note{j}") for j in range(i + 1)]

    def boom(conn: Connection) -> None:
        conn.execute(select(s.rows.c.k))
        raise InvalidArgument("read", "failed")

    with pytest.raises(InvalidArgument):
        await s.db.run_read(boom)
    assert len(await asyncio.gather(*(s.db.run_read(snapshot, "r") for _ in range(20)))) == 20


# --- fetch ------------------------------------------------------------------------------------


async def test_fetch_runs_prebuilt_statements_with_named_parameters(scratch: Scratch) -> None:
    s = scratch
    t = s.rows
    for i in range(5):
        await s.db.run_write(s.put, f"f{i}", "even" if i % 2 == 0 else None)

    def set_data(conn: Connection) -> None:
        conn.execute(t.update().where(t.c.k == "f1").values(data=b"\x00\x01\xff"))

    await s.db.run_write(set_data)
    by_key = select(t.c.k, t.c.note, t.c.data).where(t.c.k == bindparam("k"))
    page = (
        select(t.c.k)
        .where(t.c.k.startswith("f"))
        .order_by(t.c.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    # The same name twice in one statement takes the one value.
    either = select(t.c.k).where(or_(t.c.k == bindparam("v"), t.c.note == bindparam("v")))

    def plain(rows: Any) -> list[tuple[Any, ...]]:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    (one,) = await s.db.fetch((by_key, {"k": "f0"}))
    assert plain(one) == [("f0", "even", None)]
    if s.sqlite:
        assert all(type(r) is tuple for r in one)
    (binary,) = await s.db.fetch((by_key, {"k": "f1"}))
    assert plain(binary) == [("f1", None, b"\x00\x01\xff")]
    assert await s.db.fetch((by_key, {"k": "nope"})) == [[]]

    first, second, third = await s.db.fetch(
        (page, {"limit": 2, "offset": 1}), (by_key, {"k": "f4"}), (either, {"v": "even"})
    )
    assert plain(first) == [("f1",), ("f2",)]
    assert plain(second) == [("f4", "even", None)]
    assert plain(third) == [("f0",), ("f2",), ("f4",)]
    # Compiled once, run again with other values.
    (again,) = await s.db.fetch((page, {"limit": 10, "offset": 3}))
    assert plain(again) == [("f3",), ("f4",)]
    (again,) = await s.db.fetch((either, {"v": "f3"}))
    assert plain(again) == [("f3",)]


async def test_fetch_sees_a_write_as_soon_as_it_returns(scratch: Scratch) -> None:
    s = scratch
    stmt = select(s.rows.c.id).where(s.rows.c.k == bindparam("k"))
    for i in range(20):
        row_id = await s.db.run_write(s.put, f"w{i}")
        assert await s.db.fetch((stmt, {"k": f"w{i}"})) == [[(row_id,)]]


async def test_fetch_of_a_missing_table_raises_the_sqlalchemy_error(scratch: Scratch) -> None:
    s = scratch
    missing = Table("gc_no_such_table", MetaData(), Column("x", Integer))
    expected = OperationalError if s.sqlite else ProgrammingError
    batches: list[list[tuple[Any, dict[str, Any]]]] = [
        [(select(missing.c.x), {})],
        [(select(s.rows.c.k), {}), (select(missing.c.x), {})],
    ]
    for queries in batches:
        with pytest.raises(DBAPIError) as caught:
            await s.db.fetch(*queries)
        assert type(caught.value) is expected
    # The failed snapshot was ended: the next fetch sees a new write.
    await s.db.run_write(s.put, "later")
    assert await s.db.fetch((select(s.rows.c.k), {})) == [[("later",)]]


async def test_fetch_cannot_write_on_sqlite(scratch: Scratch) -> None:
    s = scratch
    if not s.sqlite:
        pytest.skip("the read-only raw connection is SQLite's")
    # SQLITE_READONLY, which the unit of work raises as the store unavailable.
    with pytest.raises(StoreUnavailable) as caught:
        await s.db.fetch((insert(s.rows).values(k=bindparam("k")), {"k": "sneaky"}))
    assert isinstance(caught.value.__cause__, OperationalError)
    assert await s.keys() == set()


async def test_fetch_without_a_required_parameter_fails(scratch: Scratch) -> None:
    s = scratch
    await s.db.run_write(s.put, "x")
    stmt = select(s.rows.c.k).where(s.rows.c.note.is_(None), s.rows.c.k != bindparam("k"))
    with pytest.raises(StatementError):
        await s.db.fetch((stmt, {}))


async def test_fetch_waits_for_a_locked_sqlite_off_the_event_loop(tmp_path: Path) -> None:
    """A database locked against readers (here another connection in exclusive locking mode,
    as a crashed process's recovery would) makes fetch() wait in a reader thread: the event
    loop keeps running meanwhile, and the read answers once the lock goes.

    No clock decides it: the lock is released only once the event loop has run while the read
    was pending (or, if the loop never gets to run, by a watchdog thread after LOCK_HELD_AT_MOST,
    which then fails the test). A fetch that waited on the loop's own thread would keep the
    loop from ever saying so."""
    path = tmp_path / "locked.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA journal_mode=WAL")
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("CREATE TABLE rows (k TEXT PRIMARY KEY)")
    blocker.execute("BEGIN EXCLUSIVE")
    blocker.execute("INSERT INTO rows (k) VALUES ('locked')")
    meta = MetaData()
    rows = Table("rows", meta, Column("k", String, primary_key=True))
    db = Database(f"sqlite+aiosqlite:///{path}")
    loop_ran = threading.Event()

    def unlock_when_the_loop_ran() -> bool:
        """Releases the lock once the loop has run, or after the watchdog's wait; returns
        whether the loop ran in time. Shorter than the reader's 30 s busy timeout."""
        ran = loop_ran.wait(LOCK_HELD_AT_MOST)
        blocker.execute("COMMIT")
        blocker.close()  # exclusive locking mode keeps the lock until the connection closes
        return ran

    unlocker = asyncio.create_task(asyncio.to_thread(unlock_when_the_loop_ran))
    try:
        read = asyncio.create_task(db.fetch((select(rows.c.k), {})))
        for _ in range(10):
            await asyncio.sleep(0)  # the loop runs other work while the read is pending...
        assert not read.done()  # ...and the read is waiting for the lock, not failing
        loop_ran.set()
        assert await unlocker, "the event loop was held up while the read waited"
        (found,) = await asyncio.wait_for(read, 60)
        assert [r[0] for r in found] == ["locked"]
        # And the loop's own connection reads again once the lock is gone.
        assert [r[0] for r in (await db.fetch((select(rows.c.k), {})))[0]] == ["locked"]
        # The loop's connection fails fast rather than sleeping in SQLite's busy handler (a
        # short sleep on the loop before falling back would pass the checks above).
        raw = db._raw
        assert raw is not None
        assert raw.execute("PRAGMA busy_timeout").fetchone() == (0,)
    finally:
        loop_ran.set()
        await unlocker
        await db.close()


LOCK_HELD_AT_MOST = 20.0
