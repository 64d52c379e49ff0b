"""service.recent.Recent: what the public documents read is kept a few seconds, bounded in
number, and dropped when it changes in this process."""

from __future__ import annotations

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
