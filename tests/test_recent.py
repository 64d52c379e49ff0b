"""service.recent.Recent: what the public documents read is kept a few seconds, bounded in
number, and dropped when it changes in this process."""

from __future__ import annotations

import asyncio
import time

import pytest

from badge_service.service import recent as hosted
from badge_service.service.recent import Recent


def test_entries_live_recent_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    recent: Recent[str] = Recent()
    recent.put("a", "first")
    clock[0] += hosted.RECENT_SECONDS - 0.01
    assert recent.get("a") == "first"
    clock[0] += 0.02
    assert recent.get("a") is None
    assert recent.get("missing") is None


def test_forget_drops_an_entry() -> None:
    recent: Recent[int] = Recent()
    recent.put("a", 1)
    recent.put("b", 2)
    recent.forget("a")
    recent.forget("never")
    assert (recent.get("a"), recent.get("b")) == (None, 2)


def test_the_oldest_make_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosted, "RECENT_MAX", 3)
    recent: Recent[int] = Recent()
    for i in range(5):
        recent.put(i, i)
    assert [recent.get(i) for i in range(5)] == [None, None, 2, 3, 4]
    recent.put(2, 20)  # put again: the newest now
    recent.put(5, 5)
    assert [recent.get(i) for i in (2, 3, 4, 5)] == [20, None, 4, 5]


class _Reads:
    """A load function that counts its calls and waits until released."""

    def __init__(self, value: int | Exception) -> None:
        self.value = value
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


async def test_callers_that_miss_together_share_one_read() -> None:
    recent: Recent[int] = Recent()
    load = _Reads(7)
    callers = [asyncio.ensure_future(recent.fetch("a", load)) for _ in range(32)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*callers) == [7] * 32
    assert load.calls == 1
    assert recent.get("a") == 7
    assert await recent.fetch("a", _Reads(8)) == 7  # kept: no read at all


async def test_a_failed_read_fails_every_waiting_caller_and_is_not_kept() -> None:
    recent: Recent[int] = Recent()
    load = _Reads(LookupError("gone"))
    callers = [asyncio.ensure_future(recent.fetch("a", load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(o) for o in outcomes] == [LookupError] * 3
    assert load.calls == 1 and recent.get("a") is None
    again = _Reads(9)
    again.release.set()
    assert await recent.fetch("a", again) == 9 and again.calls == 1


async def test_a_caller_that_leaves_does_not_cancel_the_read_for_the_others() -> None:
    recent: Recent[int] = Recent()
    load = _Reads(5)
    leaving = asyncio.ensure_future(recent.fetch("a", load))
    staying = asyncio.ensure_future(recent.fetch("a", load))
    await asyncio.sleep(0)
    leaving.cancel()
    load.release.set()
    assert await staying == 5
    assert leaving.cancelled() and load.calls == 1 and recent.get("a") == 5


async def test_a_read_under_way_when_its_key_changes_is_not_kept() -> None:
    recent: Recent[int] = Recent()
    load = _Reads(1)  # what the read saw before the change committed
    caller = asyncio.ensure_future(recent.fetch("a", load))
    await asyncio.sleep(0)
    recent.forget("a")  # e.g. a revocation in this process
    load.release.set()
    assert await caller == 1
    assert recent.get("a") is None  # the next caller reads again
