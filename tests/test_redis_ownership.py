"""Session ownership across workers: at every sampled moment each session has
exactly one owner; work is shared; when a worker stops (or dies) the other
owns everything within the lease time; nothing is lost or applied twice
across the hand-offs."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from adapters.redis import Keys, RedisEventBus, RedisSnapshotStore, RedisWorker
from adapters.redis.leases import LeaseManager
from adapters.redis.owned import Phase
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink, NullSink
from engine.tools.fakes import fake_ports
from tests.support.redis_server import (
    RING_CHART,
    RedisServer,
    read_log,
    signal_child,
    start_worker_process,
    wait_for_log,
    write_ring_chart,
)

KEYS = Keys()
SIDS = [f"o{i:03d}" for i in range(200)]


def step(sid: str, n: int) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="test", timestamp=time.time(),
                      correlation_id=f"n-{n}", payload={"n": n})


def make_worker(url: str, log: EventLog, worker_id: str, lease_ms: int) -> RedisWorker:
    registry = default_registry()
    chart = compile_text(RING_CHART, "ring.yaml", registry)
    clock = RealClock()
    return RedisWorker(url, chart, registry, fake_ports(clock), log, worker_id=worker_id,
                       lease_ms=lease_ms, clock=clock)


def running(worker: RedisWorker) -> set[str]:
    return {sid for sid, o in worker.owned.items() if o.phase is Phase.LIVE}


async def until(check: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


class Sampler:
    """Every 10 ms: no session runs in two workers (a synchronous cut of both
    workers' state) and every lease key names exactly one live worker (one
    atomic MGET)."""

    def __init__(self, redis: Redis, workers: list[RedisWorker]) -> None:
        self.redis, self.workers = redis, workers
        self.samples = 0
        self.problems: list[str] = []

    async def run(self) -> None:
        names = {w.worker_id for w in self.workers}
        while True:
            for sid in SIDS:
                holders = [w.worker_id for w in self.workers
                           if (o := w.owned.get(sid)) is not None
                           and o.phase in (Phase.ADOPTING, Phase.LIVE)]
                if len(holders) > 1:
                    self.problems.append(f"{sid} runs in {holders}")
            leases = await self.redis.mget([KEYS.lease(sid) for sid in SIDS])
            for sid, holder in zip(SIDS, leases, strict=True):
                if holder not in names:
                    self.problems.append(f"lease of {sid} names {holder!r} "
                                         f"(sample {self.samples})")
            self.samples += 1
            await asyncio.sleep(0.01)


async def test_two_workers_share_then_one_takes_all_with_one_owner_throughout(
        server: RedisServer, redis: Redis) -> None:
    sink = ListSink()
    log = EventLog(sink, RealClock(), level="INFO")
    lease_ms = 1500
    a = make_worker(server.url, log, "A", lease_ms)
    b = make_worker(server.url, log, "B", lease_ms)
    sent = dict.fromkeys(SIDS, 0)
    async with RedisEventBus.from_url(server.url, log) as bus:

        async def publish_round() -> None:
            for sid in SIDS:
                sent[sid] += 1
            await bus.publish_many([step(sid, sent[sid]) for sid in SIDS])

        await publish_round()
        await a.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            await until(lambda: len(running(a)) == len(SIDS), 10, "A runs all 200")
            sampler = Sampler(redis, [a, b])
            sampling = asyncio.create_task(sampler.run())
            tasks.append(sampling)
            await b.start()
            # B joins: A hands quiet sessions over until the share is fair.
            for _ in range(10):
                await publish_round()
                await asyncio.sleep(0.05)
            await until(lambda: abs(len(running(a)) - len(running(b))) <= 4
                        and len(running(a)) + len(running(b)) == len(SIDS), 10, "fair share")
            await publish_round()
            await a.stop()                         # graceful: its leases go to B
            took = await until(lambda: len(running(b)) == len(SIDS), lease_ms / 1000,
                               "B runs all 200 within the lease time")
            for _ in range(3):
                await publish_round()
            await _all_applied(redis, sent)
            sampling.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await a.stop()
            await b.stop()
    assert sampler.samples > 20
    assert sampler.problems == []
    assert took < lease_ms / 1000
    for sid in SIDS:
        applied = [r["data"]["correlation_id"] for r in sink.of_type("state_transition", sid)]
        assert applied == [f"n-{n}" for n in range(1, sent[sid] + 1)], sid
    handed = [r for r in sink.of_type("lease_released") if r["data"]["to"] == "B"]
    assert len(handed) >= len(SIDS) // 2


async def _all_applied(redis: Redis, sent: dict[str, int], timeout: float = 15.0) -> None:
    store = RedisSnapshotStore(redis)
    deadline = time.monotonic() + timeout
    while True:
        turns = {sid: (s.turn if (s := await store.load(sid)) else None) for sid in sent}
        if turns == sent:
            return
        assert time.monotonic() < deadline, {k: v for k, v in turns.items() if v != sent[k]}
        await asyncio.sleep(0.05)


async def test_when_a_worker_process_dies_the_other_owns_all_within_the_lease_time(
        server: RedisServer, redis: Redis, tmp_path: Path) -> None:
    chart = write_ring_chart(tmp_path)
    lease_ms = 1000
    async with RedisEventBus.from_url(server.url, EventLog(NullSink(), RealClock())) as bus:
        await bus.publish_many([step(sid, 1) for sid in SIDS])
        a = start_worker_process(server.url, chart, "A", tmp_path / "a.jsonl", lease_ms=lease_ms)
        b = start_worker_process(server.url, chart, "B", tmp_path / "b.jsonl", lease_ms=lease_ms)
        try:
            await asyncio.to_thread(wait_for_log, tmp_path / "a.jsonl", "worker_started", 20, a)
            await asyncio.to_thread(wait_for_log, tmp_path / "b.jsonl", "worker_started", 20, b)

            async def holders() -> list[str | None]:
                return list(await redis.mget([KEYS.lease(sid) for sid in SIDS]))

            deadline = time.monotonic() + 15
            while True:        # both own some (they shared from the start or rebalanced)
                owners = await holders()
                if None not in owners and {"A", "B"} <= set(owners):
                    break
                assert time.monotonic() < deadline, owners.count(None)
                await asyncio.sleep(0.05)
            signal_child(a, signal.SIGKILL)
            killed = time.monotonic()
            await bus.publish_many([step(sid, 2) for sid in SIDS])
            while True:
                owners = await holders()
                assert set(owners) <= {"A", "B", None}
                if owners.count("B") == len(SIDS):
                    break
                assert time.monotonic() - killed < 10, owners.count("B")
                await asyncio.sleep(0.02)
            took = time.monotonic() - killed
            await _all_applied(redis, dict.fromkeys(SIDS, 2))
        finally:
            signal_child(a, signal.SIGKILL)
            signal_child(b, signal.SIGTERM)
    # A's leases run out; B, alone now, takes every session in its next tick.
    print(f"B owned all {took:.3f}s after A was killed (lease {lease_ms} ms)")
    assert took < lease_ms / 1000 + 0.5, took
    adopted = {r["session_id"] for r in read_log(tmp_path / "b.jsonl")
               if r["event_type"] == "session_adopted"}
    assert adopted == set(SIDS)
    assert b.returncode == 0


async def test_lease_bookkeeping_visits_only_what_is_due(redis: Redis) -> None:
    """Renewal picks the oldest confirmations first and everything due; expiry
    reports each lapsed lease once, and never one a later renewal superseded."""
    leases = LeaseManager(redis, "W", lease_ms=1000)
    await leases.acquire(["a", "b"])
    await asyncio.sleep(0.01)
    await leases.acquire(["c"])
    await leases.renew(["a"])                        # a is now the freshest
    assert list(leases.confirmed) == ["b", "c", "a"]
    now = time.monotonic()
    assert leases.oldest(1, due_before=now - 60) == ["b"]
    assert leases.oldest(2, due_before=now - 60, include=lambda sid: sid != "b") == ["c", "a"]
    assert leases.oldest(0, due_before=now) == ["b", "c", "a"]      # all due
    assert leases.expired(now) == []                                # all valid
    later = now + 0.81                                              # past 0.8 × ttl
    assert sorted(leases.expired(later)) == ["a", "b", "c"]
    assert leases.expired(later) == []                              # reported once
    assert not any(leases.valid(sid, later) for sid in "abc")
    # A renewal after the first confirmation: the old heap entry is stale.
    await leases.acquire(["d"])
    await leases.renew(["d"])
    assert leases.expired(time.monotonic() + 0.81) == ["d"]
    leases.forget("d")
    assert leases.oldest(5, due_before=time.monotonic()) == ["b", "c", "a"]


async def test_a_session_that_stops_on_its_own_is_resumed_and_keeps_its_events(
        server: RedisServer, redis: Redis) -> None:
    """The manager tells the worker which session ended; the supervisor resumes
    it from its snapshot (without scanning every session it owns)."""
    sink = ListSink()
    log = EventLog(sink, RealClock(), level="INFO")
    worker = make_worker(server.url, log, "A", 3000)
    sids = SIDS[:50]
    async with RedisEventBus.from_url(server.url, log) as bus:
        await bus.publish_many([step(sid, 1) for sid in sids])
        await worker.start()
        try:
            await until(lambda: len(running(worker)) == len(sids), 10, "A runs all")
            await until(lambda: len(sink.of_type("state_transition")) == len(sids), 10,
                        "first events applied")
            assert worker.manager is not None
            assert worker.ownership is not None
            worker.ownership.next_full_watch = time.monotonic() + 3600   # no backstop scan
            victim = worker.manager.get(sids[7])
            assert victim is not None
            victim.close()                            # stops on its own, not by the worker
            await victim.finished.wait()
            await until(lambda: bool(sink.of_type("session_restarting", sids[7])), 5,
                        "the supervisor resumes it")
            await until(lambda: (s := worker.manager.get(sids[7])) is not None  # type: ignore[union-attr]
                        and not s.closed, 5, "running again")
            await bus.publish_many([step(sid, 2) for sid in sids])
            await until(lambda: len(sink.of_type("state_transition")) == 2 * len(sids), 10,
                        "second events applied")
        finally:
            await worker.stop()
    assert len(sink.of_type("session_restarting")) == 1
    applied = [r["data"]["correlation_id"] for r in sink.of_type("state_transition", sids[7])]
    assert applied == ["n-1", "n-2"]
    assert worker.manager is not None
