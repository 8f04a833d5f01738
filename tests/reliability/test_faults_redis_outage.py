"""Redis lost mid-turn: the private redis-server (AOF, fsync always) is killed
with SIGKILL while a session on a worker is THINKING (SPEAKING in the long
run), and comes back 1.5 s later. The worker says so and rides it out; the
turn completes; an event the caller produced during the outage is applied
exactly once after it; the session ends in a valid state with nothing left
running. The audio front-end holds what it publishes through an outage, and
names what it had to give up."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.fastrtc.output import OutputStream
from adapters.redis import Keys, RedisEventBus, RedisWorker
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server.metrics import Metrics
from adapters.server.remote_voice import RemoteVoiceService
from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink, Record
from engine.tools.fakes import FakeSettings, fake_ports
from tests.support.fault_rig import HELLO, VOICE_TURN, deadlines, other_tasks
from tests.support.redis_server import RedisServer, publish_through
from tests.support.voice_fakes import EnergyDetector, ScriptedTranscriber, ToneSpeech

KEYS = Keys()
SID = "call-1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always") as s:
        yield s


def event(name: str, payload: dict[str, object] | None = None) -> VoiceEvent:
    return VoiceEvent(event_type=name, session_id=SID, source="caller", timestamp=time.time(),
                      payload=payload or {})


async def until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


def moves(sink: ListSink) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
            for r in sink.of_type("state_transition", SID)]


@pytest.mark.parametrize("during", [
    "LISTENING → THINKING (stt_final)",
    pytest.param("THINKING → SPEAKING (response_ready)", marks=pytest.mark.long)],
    ids=["thinking", "speaking"])
async def test_redis_killed_mid_turn_the_turn_completes_and_nothing_is_lost(
        server: RedisServer, during: str) -> None:
    sink = ListSink()
    clock = RealClock()
    log = EventLog(sink, clock, level="DEBUG")
    registry = default_registry()
    chart = load_chart(VOICE_TURN, registry)
    ports = fake_ports(clock, FakeSettings(respond_ms=700, speak_ms=4000, tts_chunk_ms=100))
    worker = RedisWorker(server.url, chart, registry, ports, log, worker_id="w1",
                         lease_ms=4000, clock=clock)
    failures: list[str] = []
    async with RedisEventBus.from_url(server.url, log, retries=2) as bus, worker:
        await bus.publish(event("client_connected"))
        await bus.publish(event("stt_final", HELLO))
        await until(lambda: moves(sink)[-1:] == [during], 15, f"never got to {during}")
        killed_at = len(sink.records)
        await asyncio.to_thread(server.stop, signal.SIGKILL)          # Redis gone mid-turn
        barge = asyncio.create_task(publish_through(
            bus, event("barge_in", {"reason": "user spoke in the outage"}), failures))
        await asyncio.sleep(1.5)
        assert not barge.done()                                       # produced, not taken yet
        await asyncio.to_thread(server.start)                         # back, with its AOF
        async with asyncio.timeout(20):
            await barge
        await until(lambda: moves(sink)[-1:] == ["INTERRUPT → LISTENING (ready_after_interrupt)"],
                    20, f"turn did not finish: {moves(sink)}")
        await bus.end_session(SID)
        await until(lambda: sink.of_type("session_ended", SID), 20, "session never ended")
        length = await bus.redis.xlen(KEYS.stream(SID))
    assert worker.manager is not None and worker.manager.live_tasks() == 0
    assert other_tasks() == []
    assert moves(sink) == ["IDLE → LISTENING (client_connected)",
                           "LISTENING → THINKING (stt_final)",
                           "THINKING → SPEAKING (response_ready)",
                           "SPEAKING → INTERRUPT (barge_in)",
                           "INTERRUPT → LISTENING (ready_after_interrupt)"]
    assert failures                                  # the producer saw the outage ...
    assert length == 4                               # ... and its retries added nothing twice
    barge_ins = [r for r in sink.of_type("event_received", SID) if r["data"]["event"] == "barge_in"]
    assert len(barge_ins) == 1                       # applied exactly once, after the outage
    outage: list[Record] = sink.records[killed_at:]
    said = [r for r in outage if r["event_type"] in ("redis_unavailable", "redis_retry")]
    assert said and all(r["level"] == "WARNING" for r in said)
    assert [r for r in outage if r["event_type"] == "redis_reconnected"]
    for bad in ("lease_lost", "session_failed", "session_restarting", "contract_violation"):
        assert not sink.of_type(bad), bad
    limits = deadlines(chart)
    for r in sink.of_type("latency_recorded", SID):
        assert r["data"]["dwell_ms"] <= limits.get(r["data"]["from"], float("inf")) + 500
    [closed] = sink.of_type("session_closed", SID)
    assert closed["data"]["state"] == "LISTENING"            # ended by its end marker


# ------------------------------------------------------ the audio front-end's side
def front_end(url: str, log: EventLog, chart: CompiledChart, registry: Registry
              ) -> RemoteVoiceService:
    return RemoteVoiceService(chart, registry, log, Metrics(lambda: 0),
                              stt=ScriptedTranscriber(["hello"]), detector_factory=EnergyDetector,
                              speech=ToneSpeech(), responder=BuiltinResponder(Knowledge([])),
                              redis_url=url)


async def test_the_front_end_holds_events_through_an_outage_and_names_what_it_loses(
        server: RedisServer) -> None:
    """`turnchart serve --redis` publishes in order; while Redis is down an event waits
    (up to `publish_retry_s`) and is applied once when Redis is back. One that waited
    longer is reported lost, by name, at ERROR: never dropped silently."""
    registry = default_registry()
    chart = load_chart(VOICE_TURN, registry)
    clock = RealClock()
    front_sink, worker_sink = ListSink(), ListSink()
    worker = RedisWorker(server.url, chart, registry,
                         fake_ports(clock, FakeSettings(respond_ms=100, speak_ms=300)),
                         EventLog(worker_sink, clock, level="INFO"), worker_id="w1",
                         lease_ms=4000, clock=clock)
    service = front_end(server.url, EventLog(front_sink, clock, level="INFO"), chart, registry)
    async with worker:
        await service.start()
        try:
            service.router.attach(SID, OutputStream(24_000))   # a caller is connected here
            service.follower.follow(SID)
            assert service.post(SID, "client_connected", {})
            await until(lambda: moves(worker_sink) == ["IDLE → LISTENING (client_connected)"],
                        15, "the worker never took the call")
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            assert service.post(SID, "stt_final", HELLO)           # said during the outage
            await asyncio.sleep(1.5)
            assert len(moves(worker_sink)) == 1
            await asyncio.to_thread(server.start)
            await until(lambda: moves(worker_sink)[-1:] == ["SPEAKING → LISTENING (playback_done)"],
                        20, f"the held event was not applied: {moves(worker_sink)}")
            assert moves(worker_sink)[1:] == ["LISTENING → THINKING (stt_final)",
                                              "THINKING → SPEAKING (response_ready)",
                                              "SPEAKING → LISTENING (playback_done)"]
            assert not front_sink.of_type("event_lost")
            # A longer outage than the front-end waits: the event is reported lost.
            service.publish_retry_s = 0.5
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            assert service.post(SID, "barge_in", {"reason": "too late"})
            await until(lambda: front_sink.of_type("event_lost", SID), 20, "no event_lost line")
            [lost] = front_sink.of_type("event_lost", SID)
            assert lost["level"] == "ERROR" and lost["data"]["event"] == "barge_in"
            assert lost["message"].startswith(
                f"💥 barge_in for {SID} lost: Redis did not take it within 0.5 s (")
            await asyncio.to_thread(server.start)
            await service._send(SID, "end of session", lambda: service.bus.end_session(SID))
            await until(lambda: worker_sink.of_type("session_ended", SID), 20, "never ended")
        finally:
            await service.stop()
    received = [r["data"]["event"] for r in worker_sink.of_type("event_received", SID)
                if r["data"]["source"] == "fastrtc"]
    assert received == ["client_connected", "stt_final"]       # once each; barge_in never came
    assert worker_sink.of_type("session_closed", SID)[-1]["data"]["state"] == "LISTENING"
    assert worker.manager is not None and worker.manager.live_tasks() == 0
    assert other_tasks() == []
