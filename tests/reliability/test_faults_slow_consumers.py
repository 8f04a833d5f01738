"""Slow consumers. A speaker that takes audio slower than real time, or not at
all, holds only a bounded amount of it (OutputStream backpressure), and a
session that cannot get its audio out still leaves SPEAKING by its deadline.
A session whose acknowledgements are slow (a slow snapshot store or XACK
path) is never handed more than a bounded number of events: the rest wait
in Redis, and every one is applied once, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from adapters.fastrtc.output import FRAME_MS, OutputRouter, OutputStream
from adapters.redis import RedisEventBus, RedisSnapshotStore, RedisWorker
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock, VirtualClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.ports import AudioChunk
from engine.tools.fakes import FakeSettings, fake_ports
from tests.support.fault_rig import HELLO, FaultRig, other_tasks
from tests.support.redis_server import RING_CHART, RedisServer, ring_state

RATE = 24_000
CHUNK_MS = 60.0


class InstantSpeech:
    """All of an answer's audio at once, as fast as the writer takes it (like espeak)."""

    def __init__(self, total_ms: float) -> None:
        self.total_ms = total_ms

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        samples = int(RATE * CHUNK_MS / 1000)
        done = 0.0
        while done < self.total_ms:
            done += CHUNK_MS
            await asyncio.sleep(0)
            yield AudioChunk(b"\x10\x00" * samples, CHUNK_MS)


class MeteredStream(OutputStream):
    """An OutputStream that remembers the most audio it ever held."""

    def __init__(self) -> None:
        super().__init__(RATE)
        self.peak_frames = 0

    def push(self, chunk: AudioChunk, *, filler: bool = False) -> None:
        super().push(chunk, filler=filler)
        self.peak_frames = max(self.peak_frames, len(self.frames))


def bound_frames(stream: OutputStream) -> int:
    """What backpressure allows: `max_ahead_ms`, plus the one chunk that crossed it."""
    return int((stream.max_ahead_ms + CHUNK_MS) / FRAME_MS)


async def test_a_speaker_at_half_speed_holds_a_bounded_queue_and_hears_everything() -> None:
    clock = RealClock()
    ports = fake_ports(clock, FakeSettings(respond_ms=10))
    ports.speech = InstantSpeech(total_ms=1200)
    router = OutputRouter()
    ports.playback = ports.filler = router
    stream = MeteredStream()
    router.attach("s1", stream)
    played = 0

    async def slow_speaker() -> None:
        nonlocal played
        while True:
            if await stream.next_frame(timeout_s=0.05) is not None:
                played += 1
                await asyncio.sleep(2 * FRAME_MS / 1000)  # a frame takes it twice as long

    rig = FaultRig(clock, ports)
    async with rig, asyncio.TaskGroup() as tg:
        ear = tg.create_task(slow_speaker())
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while rig.state() != "LISTENING" or len(rig.transitions()) < 4:
            assert loop.time() < deadline, rig.transitions()
            await asyncio.sleep(0.02)
        ear.cancel()
    assert rig.transitions()[-1] == "SPEAKING → LISTENING (playback_done)"
    assert played == 1200 / FRAME_MS                      # every frame reached the speaker
    assert 0 < stream.peak_frames <= bound_frames(stream)   # never more than ~0.46 s queued
    [speaking] = [r for r in rig.lines("latency_recorded") if r["data"]["from"] == "SPEAKING"]
    assert speaking["data"]["dwell_ms"] >= 2 * 1200 - 500  # it waited for the slow speaker
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


async def test_a_speaker_that_stops_reading_cannot_hold_the_session_in_speaking() -> None:
    clock = VirtualClock()
    ports = fake_ports(clock, FakeSettings(respond_ms=300))
    ports.speech = InstantSpeech(total_ms=60_000)          # a minute of audio, all at once
    router = OutputRouter()
    ports.playback = ports.filler = router
    stream = MeteredStream()                                # and nobody ever reads it
    router.attach("s1", stream)
    rig = FaultRig(clock, ports)
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await clock.advance(300 + 60_000)
        assert rig.state() == "SPEAKING"                   # blocked on backpressure ...
        assert stream.peak_frames == len(stream.frames) <= bound_frames(stream)
        await clock.advance(60_000)
        assert rig.state() == "LISTENING"                  # ... until SPEAKING's deadline
        assert rig.transitions()[-1] == "SPEAKING → LISTENING (playback_timeout)"
        assert rig.lines("state_timeout")[0]["data"]["state"] == "SPEAKING"
        assert rig.lines("activity_cancelled", activity="speak")[0]["data"]["reason"] == \
            "state_exit"
        assert not stream.frames                          # cleared on the way out
        assert stream.peak_frames <= bound_frames(stream)
        assert rig.overstays() == []
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


# ------------------------------------------------------------ slow acknowledgements
EVENTS = 400


class SlowAck:
    """Worker hook: every acknowledgement takes `delay_s` (a slow store or XACK path)."""

    def __init__(self, worker: list[RedisWorker], delay_s: float) -> None:
        self.worker, self.delay_s = worker, delay_s
        self.peak_in_flight = 0

    async def at(self, point: str, session_id: str, entry_id: str) -> None:
        if point == "before_ack":
            owned = self.worker[0].owned.get(session_id)
            if owned is not None:
                self.peak_in_flight = max(self.peak_in_flight, owned.in_flight)
            await asyncio.sleep(self.delay_s)


async def test_slow_acknowledgements_bound_what_a_session_holds(server: RedisServer) -> None:
    sink = ListSink()
    clock = RealClock()
    log = EventLog(sink, clock, level="INFO")
    registry = default_registry()
    chart = compile_text(RING_CHART, "ring.yaml", registry)
    holder: list[RedisWorker] = []
    slow = SlowAck(holder, delay_s=0.002)
    worker = RedisWorker(server.url, chart, registry, fake_ports(clock), log, worker_id="w1",
                         lease_ms=4000, clock=clock, hooks=slow, max_in_flight=32)
    holder.append(worker)
    events = [VoiceEvent(event_type="step", session_id="slow", source="test",
                         timestamp=time.time(), correlation_id=f"n-{n}", payload={"n": n})
              for n in range(1, EVENTS + 1)]
    async with RedisEventBus.from_url(server.url, log) as bus, worker:
        await bus.publish_many(events)                    # far faster than it is consumed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        store = RedisSnapshotStore(bus.redis)
        while True:
            snap = await store.load("slow")
            if snap is not None and snap.turn == EVENTS:
                break
            assert loop.time() < deadline, snap
            await asyncio.sleep(0.05)
    assert snap.configuration[-1] == ring_state(EVENTS)
    applied = [r["data"]["correlation_id"] for r in sink.of_type("state_transition", "slow")]
    assert applied == [f"n-{n}" for n in range(1, EVENTS + 1)]   # once each, in order
    assert slow.peak_in_flight <= 32 + worker.read_count          # bounded, not 400
    [paused] = sink.of_type("session_throttled", "slow")[:1]
    assert paused["level"] == "INFO" and paused["data"]["in_flight"] >= 32
