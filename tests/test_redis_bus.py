"""Redis Streams bus and worker in one process, against a private redis-server:
publish → applied → acked, order, invalid entries, idempotent publish,
trimming that never drops unacknowledged entries, ending a session."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.redis import Keys, RedisEventBus, RedisSnapshotStore, RedisWorker
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import ListSink
from tests.support.redis_server import (
    RedisServer,
    debug_log,
    ring_state,
    ring_worker,
)

KEYS = Keys()


new_log = debug_log
make_worker = ring_worker


def step(sid: str, n: int, **extra: Any) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="test", timestamp=time.time(),
                      correlation_id=f"n-{n}", payload={"n": n}, **extra)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def turns(redis: Redis, sids: list[str]) -> dict[str, int]:
    store = RedisSnapshotStore(redis)
    out = {}
    for sid in sids:
        snap = await store.load(sid)
        out[sid] = -1 if snap is None else snap.turn
    return out


async def all_applied(redis: Redis, expected: dict[str, int]) -> bool:
    return await turns(redis, list(expected)) == expected


async def pending(redis: Redis, sid: str) -> int:
    summary = await redis.xpending(KEYS.stream(sid), "turnchart")
    return int(summary["pending"])


def transitions(sink: ListSink, sid: str) -> list[str]:
    return [r["data"]["correlation_id"] for r in sink.of_type("state_transition", sid)]


# --------------------------------------------------------------- round trip
async def test_one_session_publish_apply_ack(server: RedisServer, redis: Redis) -> None:
    log, sink = new_log()
    async with RedisEventBus.from_url(server.url, log) as bus:
        first = [await bus.publish(step("s1", n)) for n in range(1, 6)]   # before any worker
        async with make_worker(server.url, log, worker_id="w1") as worker:
            later = [await bus.publish(step("s1", n)) for n in range(6, 21)]
            await eventually(lambda: all_applied(redis, {"s1": 20}), what="20 steps applied")
            await eventually(lambda: _zero(pending(redis, "s1")), what="everything acked")
            session = worker.manager.get("s1") if worker.manager else None
            assert session is not None and session.state == ring_state(20)
            assert session.last_event_id == later[-1]
    ids = first + later
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert transitions(sink, "s1") == [f"n-{n}" for n in range(1, 21)]
    snap = await RedisSnapshotStore(redis).load("s1")
    assert snap is not None and snap.last_event_id == ids[-1]      # stopping kept it
    assert await redis.get(KEYS.lease("s1")) is None               # and released the lease
    [started] = sink.of_type("session_started", "s1")
    assert started["session_id"] == "s1"


async def _zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_two_hundred_sessions_keep_per_session_order(server: RedisServer,
                                                           redis: Redis) -> None:
    log, sink = new_log()
    sids = [f"s{i:03d}" for i in range(200)]
    per_session = 8
    # Interleave sessions randomly, each session's own events in order.
    queue = [sid for sid in sids for _ in range(per_session)]
    random.Random(7).shuffle(queue)
    counters = dict.fromkeys(sids, 0)
    events = []
    for sid in queue:
        counters[sid] += 1
        events.append(step(sid, counters[sid]))
    async with RedisEventBus.from_url(server.url, log) as bus, \
            make_worker(server.url, log, worker_id="w1"):
        for i in range(0, len(events), 100):
            await bus.publish_many(events[i:i + 100])
        await eventually(lambda: all_applied(redis, dict.fromkeys(sids, per_session)),
                         timeout=30, what="all sessions applied")
        await eventually(lambda: _all_acked(redis, sids), what="all acked")
    for sid in sids:
        assert transitions(sink, sid) == [f"n-{n}" for n in range(1, per_session + 1)], sid
    assert sink.of_type("event_invalid") == []
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


async def _all_acked(redis: Redis, sids: list[str]) -> bool:
    return all([await pending(redis, sid) == 0 for sid in sids])


# ------------------------------------------------------------ invalid input
async def test_invalid_entries_are_logged_acked_once_and_never_redelivered(
        server: RedisServer, redis: Redis) -> None:
    log, sink = new_log()
    key = KEYS.stream("s1")
    good = step("s1", 1).model_dump(mode="json")
    bad_entries: list[dict[str, str]] = [
        {"event": "{not json"},
        {"something": "else"},
        {"event": json.dumps({**good, "session_id": "s2"})},
        {"event": json.dumps({**good, "timestamp": "yesterday"})},
        {"event": json.dumps({**good, "event_type": "nope"})},
        {"event": json.dumps({**good, "payload": {"n": "one"}})},
    ]
    await redis.sadd(KEYS.sessions, "s1")
    for fields in bad_entries:
        await redis.xadd(key, fields)   # type: ignore[arg-type]
    async with RedisEventBus.from_url(server.url, log) as bus:
        async with make_worker(server.url, log, worker_id="w1"):
            await bus.publish(step("s1", 1))
            await eventually(lambda: all_applied(redis, {"s1": 1}), what="the good event")
            await eventually(lambda: _zero(pending(redis, "s1")), what="all acked")
        invalid = sink.of_type("event_invalid")
        assert len(invalid) == len(bad_entries)
        assert {r["session_id"] for r in invalid} == {"s1"}
        assert all(r["level"] == "WARNING" and r["data"]["error"] for r in invalid)
        fields = sorted(r["data"]["field"] for r in invalid)
        assert fields == sorted(["(json)", "(entry)", "session_id", "timestamp", "event_type",
                                 "payload.n"])
        # A new worker finds nothing to redeliver.
        before = len(sink.records)
        async with make_worker(server.url, log, worker_id="w2") as again:
            await eventually(lambda: _resumed(again), what="w2 adopts s1")
            await asyncio.sleep(0.3)
        assert [r for r in sink.records[before:] if r["event_type"] == "event_invalid"] == []
    assert transitions(sink, "s1") == ["n-1"]


async def _resumed(worker: RedisWorker) -> bool:
    return worker.stats["adopted"] >= 1


# ------------------------------------------------------- idempotent publish
async def test_publishing_the_same_event_twice_adds_one_entry(server: RedisServer,
                                                              redis: Redis) -> None:
    log, sink = new_log()
    event = step("s1", 1)
    tagged = step("s1", 2, metadata={"event_id": "producer-7"})
    async with RedisEventBus.from_url(server.url, log) as bus:
        first = await bus.publish(event)
        assert await bus.publish(event) == first
        again = step("s1", 2, metadata={"event_id": "producer-7"})   # another timestamp
        assert await bus.publish(tagged) == await bus.publish(again)
        assert bus.published == 2 and bus.duplicates == 2
        assert await redis.xlen(KEYS.stream("s1")) == 2
        async with make_worker(server.url, log, worker_id="w1"):
            await eventually(lambda: all_applied(redis, {"s1": 2}), what="two steps")
    assert transitions(sink, "s1") == ["n-1", "n-2"]


# ----------------------------------------------------------------- trimming
async def test_trimming_never_drops_unacknowledged_entries(server: RedisServer,
                                                           redis: Redis) -> None:
    log, _ = new_log()
    key = KEYS.stream("s1")
    async with RedisEventBus.from_url(server.url, log, maxlen=20) as bus:
        for n in range(1, 301):               # nobody consumes yet: nothing may go
            await bus.publish(step("s1", n))
        assert await redis.xlen(key) == 300
        async with make_worker(server.url, log, worker_id="w1"):
            await eventually(lambda: all_applied(redis, {"s1": 300}), what="300 applied")
            await eventually(lambda: _zero(pending(redis, "s1")), what="acked")
        # Worker gone: what is published now is unread and must all survive.
        for n in range(301, 601):
            await bus.publish(step("s1", n))
        unread = await redis.xrange(key, "(" + (await _last_delivered(redis, key)), "+")
        assert len(unread) == 300
        async with make_worker(server.url, log, worker_id="w2"):
            await eventually(lambda: all_applied(redis, {"s1": 600}), what="600 applied")
            await eventually(lambda: _zero(pending(redis, "s1")), what="acked")
            for n in range(601, 1201):     # consumed as they come: history is trimmed
                await bus.publish(step("s1", n))
            await eventually(lambda: all_applied(redis, {"s1": 1200}), what="1200 applied")
        assert await redis.xlen(key) < 400


async def _last_delivered(redis: Redis, key: str) -> str:
    [group] = await redis.xinfo_groups(key)
    return str(group["last-delivered-id"])


# ------------------------------------------------------------------ the end
async def test_end_marker_applies_everything_then_closes_the_session(
        server: RedisServer, redis: Redis) -> None:
    log, sink = new_log()
    async with RedisEventBus.from_url(server.url, log) as bus, \
            make_worker(server.url, log, worker_id="w1") as worker:
        for n in range(1, 6):
            await bus.publish(step("s1", n))
        await bus.end_session("s1")

        async def ended() -> bool:
            return worker.stats["ended"] == 1
        await eventually(ended, what="session ended")
        assert transitions(sink, "s1") == [f"n-{n}" for n in range(1, 6)]
        assert await redis.get(KEYS.snapshot("s1")) is None
        assert not await redis.sismember(KEYS.sessions, "s1")
        assert await redis.get(KEYS.lease("s1")) is None
        assert 0 < await redis.pttl(KEYS.stream("s1")) <= 600_000
        assert await pending(redis, "s1") == 0
        assert "s1" not in worker.owned
    [closed] = sink.of_type("session_closed", "s1")
    assert closed["data"]["state"] == ring_state(5)


# ------------------------------------------------------- NOGROUP, lost lease
async def test_a_deleted_consumer_group_is_recreated_and_nothing_applies_twice(
        server: RedisServer, redis: Redis) -> None:
    log, sink = new_log()
    async with RedisEventBus.from_url(server.url, log) as bus, \
            make_worker(server.url, log, worker_id="w1"):
        for n in range(1, 11):
            await bus.publish(step("s1", n))
        await eventually(lambda: all_applied(redis, {"s1": 10}), what="first ten")
        await redis.xgroup_destroy(KEYS.stream("s1"), "turnchart")
        for n in range(11, 21):
            await bus.publish(step("s1", n))
        await eventually(lambda: all_applied(redis, {"s1": 20}), what="the next ten")
        await eventually(lambda: _zero(pending(redis, "s1")), what="all acked")
    assert transitions(sink, "s1") == [f"n-{n}" for n in range(1, 21)]
    [recreated] = sink.of_type("group_recreated", "s1")
    assert recreated["level"] == "WARNING"
    # The history the new group delivered again was recognised, not re-applied.
    assert len([r for r in sink.of_type("event_duplicate", "s1") if r["data"]["applied"]]) >= 10


async def test_a_lost_lease_stops_the_session_here_and_keeps_its_snapshot(
        server: RedisServer, redis: Redis) -> None:
    log, sink = new_log()
    async with RedisEventBus.from_url(server.url, log) as bus, \
            make_worker(server.url, log, worker_id="w1", lease_ms=600) as worker:
        await bus.publish(step("s1", 1))
        await eventually(lambda: all_applied(redis, {"s1": 1}), what="one step")
        await redis.set(KEYS.lease("s1"), "intruder", px=60_000)     # someone else owns it

        async def gone() -> bool:
            return "s1" not in worker.owned
        await eventually(gone, timeout=3, what="w1 stops s1")
        [lost] = sink.of_type("lease_lost", "s1")
        assert lost["level"] == "WARNING"
        snap = await RedisSnapshotStore(redis).load("s1")
        assert snap is not None and snap.turn == 1                     # kept for the owner
        # A fenced save from w1 can no longer overwrite it.
        fenced = RedisSnapshotStore(redis, owner="w1")
        from adapters.redis import LeaseLost
        with pytest.raises(LeaseLost):
            await fenced.save(snap)
        await bus.publish(step("s1", 2))                               # not w1's to apply
        await asyncio.sleep(0.3)
        assert transitions(sink, "s1") == ["n-1"]
        assert await redis.get(KEYS.lease("s1")) == "intruder"
