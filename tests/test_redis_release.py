"""Releasing sessions on a worker (adapters/redis/release.py), Redis-free: a closed
session that never finishes (an activity that ignores its cancellation) must not hold a
hand-off or the worker's shutdown for ever."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from adapters.redis.keys import Keys
from adapters.redis.options import WorkerOptions
from adapters.redis.owned import OwnedSession, OwnedTable, Phase
from adapters.redis.release import Releaser
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink


class FakeSession:
    def __init__(self, sid: str, finishes: bool) -> None:
        self.id = sid
        self.finishes = finishes
        self.finished = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if self.finishes:
            self.finished.set()


class FakeManager:
    def __init__(self, sessions: list[FakeSession]) -> None:
        self.sessions = {s.id: s for s in sessions}

    def get(self, sid: str) -> FakeSession | None:
        return self.sessions.get(sid)


def releaser(manager: FakeManager, table: OwnedTable, sink: ListSink,
             close_timeout_s: float) -> Releaser:
    unused = cast(Any, None)   # stop_local touches no Redis, store, leases or pipeline
    return Releaser(unused, cast(Any, manager), unused, unused, unused, table,
                    options=WorkerOptions(close_timeout_s=close_timeout_s), keys=Keys(),
                    worker_id="w1", log=EventLog(sink, VirtualClock(), level="DEBUG"),
                    stats={}, spawn=lambda coro, name: None, peers=lambda: [])


async def test_a_session_that_never_finishes_is_released_after_the_bound() -> None:
    sink, table = ListSink(), OwnedTable()
    stuck, fine = FakeSession("stuck", finishes=False), FakeSession("fine", finishes=True)
    owned = [OwnedSession(s.id, Keys().stream(s.id), phase=Phase.LIVE) for s in (stuck, fine)]
    for o in owned:
        table.add(o)
    release = releaser(FakeManager([stuck, fine]), table, sink, close_timeout_s=0.05)
    await asyncio.wait_for(release.stop_local(owned, drain=False), 5)
    assert stuck.closed and fine.closed
    assert table.get("stuck") is None and table.get("fine") is None
    late = [r for r in sink.records if r["event_type"] == "session_stop_timeout"]
    assert [(r["session_id"], r["level"], r["data"]["timeout_s"]) for r in late] == \
        [("stuck", "WARNING", 0.05)]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_sessions_that_finish_are_released_without_a_warning() -> None:
    sink, table = ListSink(), OwnedTable()
    fine = FakeSession("fine", finishes=True)
    owned = [OwnedSession("fine", Keys().stream("fine"), phase=Phase.LIVE)]
    table.add(owned[0])
    await releaser(FakeManager([fine]), table, sink, close_timeout_s=30).stop_local(
        owned, drain=False)
    assert table.get("fine") is None
    assert not [r for r in sink.records if r["event_type"] == "session_stop_timeout"]
