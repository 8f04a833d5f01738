"""redis-server restarted mid-stream (AOF on, fsync always): the producer and
the worker reconnect on their own, and every event produced is applied
exactly once, after a clean shutdown and after a crash (SIGKILL) alike."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from adapters.redis import Keys, RedisEventBus, RedisSnapshotStore, RedisWorker
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.tools.fakes import fake_ports
from tests.support.redis_server import RING_CHART, RedisServer, publish_through, ring_state

KEYS = Keys()
SESSIONS = [f"r{i}" for i in range(10)]
PER_SESSION = 60


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always") as s:
        yield s


def step(sid: str, n: int) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="test", timestamp=time.time(),
                      correlation_id=f"n-{n}", payload={"n": n})


async def produce(bus: RedisEventBus, failures: list[str]) -> None:
    """One event every few ms, round robin; a publish that fails is retried as is
    (the bus de-duplicates it if the first attempt did reach Redis)."""
    for n in range(1, PER_SESSION + 1):
        for sid in SESSIONS:
            await publish_through(bus, step(sid, n), failures)
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("how", "block_all_max"), [
    (signal.SIGTERM, 64), (signal.SIGKILL, 64), (signal.SIGKILL, 0)],
    ids=["shutdown", "crash", "crash-hinted-reads"])
async def test_restarting_redis_mid_stream_loses_and_repeats_nothing(
        server: RedisServer, how: signal.Signals, block_all_max: int) -> None:
    sink = ListSink()
    clock = RealClock()
    log = EventLog(sink, clock, level="INFO")
    registry = default_registry()
    chart = compile_text(RING_CHART, "ring.yaml", registry)
    failures: list[str] = []
    worker = RedisWorker(server.url, chart, registry, fake_ports(clock), log, worker_id="w1",
                         lease_ms=4000, clock=clock, block_all_max=block_all_max)
    async with RedisEventBus.from_url(server.url, log, retries=3) as bus, worker:
        producer = asyncio.create_task(produce(bus, failures))
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.restart, 0.3, how)     # 0.3 s down, then back
            async with asyncio.timeout(30):
                await producer
            async with Redis.from_url(server.url, decode_responses=True) as redis:
                store = RedisSnapshotStore(redis)
                deadline = time.monotonic() + 30.0
                while True:
                    snaps = {sid: await store.load(sid) for sid in SESSIONS}
                    pend = [int((await redis.xpending(KEYS.stream(sid), "turnchart"))
                                ["pending"]) for sid in SESSIONS]
                    if all(s is not None and s.turn == PER_SESSION for s in snaps.values()) \
                            and sum(pend) == 0:
                        break
                    await asyncio.sleep(0.05)
                    assert time.monotonic() < deadline, \
                        f"turns {[s.turn if s else None for s in snaps.values()]} pend {pend}"
                lengths = [await redis.xlen(KEYS.stream(sid)) for sid in SESSIONS]
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
    assert lengths == [PER_SESSION] * len(SESSIONS)      # nothing published twice
    for sid in SESSIONS:
        snap = snaps[sid]
        assert snap is not None and snap.configuration[-1] == ring_state(PER_SESSION)
        applied = [r["data"]["correlation_id"] for r in sink.of_type("state_transition", sid)]
        assert applied == [f"n-{n}" for n in range(1, PER_SESSION + 1)], sid
    kinds = {r["event_type"] for r in sink.records}
    assert "redis_unavailable" in kinds or "redis_retry" in kinds     # it was noticed, logged
    assert "redis_reconnected" in kinds
    assert not sink.of_type("lease_lost")
    assert not sink.of_type("session_failed")

