"""The audio adapter enforces the current state's turn policy on every frame
(adapters/turn/gate.py through adapters/fastrtc/handler.py).

The endpointing test drives the real detector (silero VAD through SpeechDetector) with
synthetic speech: words, a 600 ms pause, more words. In a state with `patience_ms: 300`
that is two turns; in one with `patience_ms: 1200`, one. Barge-in thresholds and the
smart-turn hold use the deterministic energy detector and a scripted model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.fastrtc.handler import TurnStreamHandler
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceService
from adapters.speech.samples import noise, speech
from adapters.speech.silero import SileroVadFactory
from adapters.speech.vad import SpeechDetector
from adapters.turn.gate import SMART_CHECK_MS, TurnGate
from engine.chart.chart import load_chart
from engine.chart.turn import TurnPolicy
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, ListSink
from tests.support.voice_fakes import EnergyDetector, ScriptedTranscriber, ToneSpeech, tone
from tests.support.waiting import wait_until

CHART = Path(__file__).resolve().parent / "charts" / "turn_policy.yaml"
FRAME = 320   # 20 ms at 16 kHz
OPEN = {"microphone": "open", "playback": "stopped"}


@dataclass
class Verdict:
    probability: float
    cpu_ms: float = 1.0
    wall_ms: float = 1.0

    @property
    def complete(self) -> bool:
        return self.probability > 0.5


class ScriptedModel:
    """An end-of-turn model that answers from a list (last answer repeats)."""

    def __init__(self, *answers: float) -> None:
        self.answers = list(answers)
        self.heard: list[int] = []

    def decide(self, pcm: Any) -> Verdict:
        self.heard.append(len(pcm))
        return Verdict(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])


@pytest.fixture(scope="module")
def silero() -> Any:
    factory = SileroVadFactory(preload=1)
    yield factory
    factory.close()


async def open_call(sink: ListSink, detector_factory: Any, script: list[str]
                    ) -> tuple[VoiceService, TurnStreamHandler]:
    chart = load_chart(CHART)
    service = VoiceService(chart, _registry(), EventLog(sink, RealClock()), Metrics(lambda: 0),
                           stt=ScriptedTranscriber(script), detector_factory=detector_factory,
                           speech=ToneSpeech(), responder=BuiltinResponder(Knowledge([])))
    await service.start()
    handler = service.new_handler()
    await handler.attach("caller")
    assert await wait_until(lambda: state(service) == "CHAT", 5, 0.01)
    return service, handler


def _registry() -> Any:
    from engine.runtime.behaviours import default_registry
    return default_registry()


def state(service: VoiceService) -> str | None:
    session = service.manager.get("caller")
    return session.state if session is not None else None


async def play(handler: TurnStreamHandler, pcm: np.ndarray[Any, Any]) -> None:
    for at in range(0, len(pcm), FRAME):
        await handler.receive((16_000, pcm[at:at + FRAME]))


def finals(sink: ListSink) -> list[str]:
    return [r["data"]["payload"]["text"] for r in sink.of_type("event_received", "caller")
            if r["data"]["event"] == "stt_final"]


@pytest.fixture
async def closing() -> AsyncIterator[list[VoiceService]]:
    services: list[VoiceService] = []
    yield services
    for service in services:
        await service.stop()


async def test_a_patient_state_waits_out_the_pause_an_impatient_one_does_not(
        silero: Any, closing: list[VoiceService]) -> None:
    sink = ListSink()
    service, handler = await open_call(sink, lambda: SpeechDetector(silero), ["a", "b", "c"])
    closing.append(service)
    said = np.concatenate([noise(300), speech("my number is five five five"),
                           noise(600, seed=1), speech("one two three four"), noise(1500, seed=2)])

    await play(handler, said)                      # CHAT: patience_ms 300 (from CALL)
    assert await wait_until(lambda: len(finals(sink)) >= 2, 5, 0.02)
    assert finals(sink) == ["a", "b"], "the 600 ms pause ended the turn in CHAT"

    service.post("caller", "ask_number", {})
    assert await wait_until(lambda: state(service) == "ASK_NUMBER", 5, 0.01)
    await play(handler, said)                      # ASK_NUMBER: patience_ms 1200
    assert await wait_until(lambda: len(finals(sink)) >= 3, 5, 0.02)
    await play(handler, noise(1000, seed=3))
    assert finals(sink) == ["a", "b", "c"], "ASK_NUMBER heard one turn through the pause"
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


async def test_barge_in_while_thinking_needs_the_states_amount_of_speech(
        closing: list[VoiceService]) -> None:
    sink = ListSink()
    service, handler = await open_call(sink, EnergyDetector, ["x"])
    closing.append(service)

    def barge_ins() -> int:
        return sum(1 for r in sink.of_type("event_received", "caller")
                   if r["data"]["event"] == "barge_in")

    service.post("caller", "hold", {})             # HOLD: thinking_ms 800 (from CALL)
    assert await wait_until(lambda: state(service) == "HOLD", 5, 0.01)
    await play(handler, np.concatenate([tone(500), np.zeros(8000, np.int16)]))
    assert barge_ins() == 0 and state(service) == "HOLD"
    await play(handler, np.concatenate([tone(900), np.zeros(8000, np.int16)]))
    assert await wait_until(lambda: state(service) == "CHAT", 5, 0.01)
    assert barge_ins() == 1

    service.post("caller", "hold_quick", {})       # HOLD_QUICK: thinking_ms 200
    assert await wait_until(lambda: state(service) == "HOLD_QUICK", 5, 0.01)
    await play(handler, np.concatenate([tone(500), np.zeros(8000, np.int16)]))
    assert await wait_until(lambda: state(service) == "CHAT", 5, 0.01)
    assert barge_ins() == 2


def test_policy_sets_the_detector_per_frame_and_unset_keys_keep_its_own() -> None:
    detector = EnergyDetector(min_speech_ms=150, hangover_ms=250)
    gate = TurnGate(detector)
    gate.configure(TurnPolicy(patience_ms=900), OPEN)
    assert (detector.hangover_ms, detector.min_speech_ms) == (900, 150)
    gate.configure(TurnPolicy(), OPEN)
    assert detector.hangover_ms == 250
    policy = TurnPolicy(patience_ms=900, barge_in_speaking_ms=300, barge_in_thinking_ms=600)
    gate.configure(policy, {"microphone": "gated", "playback": "streaming"})
    assert (detector.hangover_ms, detector.min_speech_ms) == (250, 300)
    gate.configure(policy, {"microphone": "gated", "playback": "stopped"})
    assert detector.min_speech_ms == 600
    gate.configure(TurnPolicy(), {"microphone": "gated", "playback": "stopped"})
    assert detector.min_speech_ms == 150
    # end: smart without a model is end: silence with the same defaults
    gate.configure(TurnPolicy(end="smart"), OPEN)
    assert (gate.smart, detector.hangover_ms) == (False, 250)


async def feed(gate: TurnGate, detector: EnergyDetector, pcm: np.ndarray[Any, Any]
               ) -> list[str]:
    out: list[str] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(gate.policy, OPEN)
        out += await gate.listen(frame, [e.kind for e in detector.feed(frame)])
    return out


async def test_smart_end_holds_an_unfinished_turn_until_patience() -> None:
    detector = EnergyDetector(hangover_ms=320)
    model = ScriptedModel(0.1)                     # "not finished", every time
    notes: list[tuple[float, bool]] = []
    gate = TurnGate(detector, model, lambda d, held: notes.append((d.probability, held)))
    gate.configure(TurnPolicy(end="smart", patience_ms=1000), OPEN)
    assert detector.hangover_ms == SMART_CHECK_MS
    events = await feed(gate, detector, np.concatenate([tone(400), np.zeros(8000, np.int16)]))
    assert events == ["speech_start", "speech_confirmed"]   # the end is held back
    assert gate.holding and notes == [(0.1, True)]
    # the caller goes on: the same utterance continues (no second speech_start)
    events = await feed(gate, detector, np.concatenate([tone(400), np.zeros(16000, np.int16)]))
    assert events == ["speech_confirmed", "speech_end"]
    assert notes == [(0.1, True), (0.1, True)]
    assert gate.ended_silence_ms == pytest.approx(1000, abs=40)   # patience ran out
    assert model.heard[1] > model.heard[0] >= 400 * 16   # it heard the whole utterance


async def test_smart_end_ends_a_finished_turn_after_the_short_silence() -> None:
    detector = EnergyDetector(hangover_ms=320)
    gate = TurnGate(detector, ScriptedModel(0.9))
    gate.configure(TurnPolicy(end="smart"), OPEN)
    pcm = np.concatenate([tone(400), np.zeros(8000, np.int16)])
    kinds: list[tuple[int, str]] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(gate.policy, OPEN)
        kinds += [(at, k) for k in await gate.listen(frame,
                                                     [e.kind for e in detector.feed(frame)])]
    end_at = next(at for at, k in kinds if k == "speech_end")
    assert (end_at - 400 * 16) / 16 <= SMART_CHECK_MS + 20   # not the 1500 ms ceiling


async def test_redis_front_end_reads_the_policy_of_the_state_its_worker_reports() -> None:
    """Behind `serve --redis` the contract op names the state; the front-end looks the
    policy up in its chart (no Redis is contacted: only the op handler runs)."""
    from adapters.server.remote_voice import RemoteVoiceService

    sink = ListSink()
    service = RemoteVoiceService(load_chart(CHART), _registry(), EventLog(sink, RealClock()),
                                 Metrics(lambda: 0), redis_url="redis://127.0.0.1:9",
                                 stt=ScriptedTranscriber(["x"]), detector_factory=EnergyDetector)
    try:
        assert service.turn_policy("s1") == TurnPolicy()
        await service._on_op("s1", {"op": "contract", "state": b"ASK_NUMBER",
                                    "microphone": b"open", "playback": b"stopped"})
        assert service.turn_policy("s1") == TurnPolicy("silence", 1200, 200, 800)
        await service._on_op("s1", {"op": "contract", "state": b"HOLD_QUICK",
                                    "microphone": b"gated", "playback": b"stopped"})
        assert service.turn_policy("s1").barge_in_thinking_ms == 200
    finally:
        await service.bus.aclose()
        await service.out_redis.aclose()


async def test_smart_end_does_not_judge_speech_that_began_before_the_mic_opened() -> None:
    """Talk-over: the caller started while the microphone was gated. The model never
    heard the start, so it is not asked; the server's own silence (320 ms) ends it."""
    detector = EnergyDetector(hangover_ms=320)
    model = ScriptedModel(0.1)
    gate = TurnGate(detector, model)
    gate.configure(TurnPolicy(end="smart"), {"microphone": "gated", "playback": "streaming"})
    for at in range(0, 16 * 400, FRAME):           # speech while gated: not given to listen()
        detector.feed(tone(400)[at:at + FRAME])
    gate.configure(TurnPolicy(end="smart"), OPEN)
    pcm = np.zeros(16 * 600, np.int16)
    ended_after: list[float] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(gate.policy, OPEN)
        if "speech_end" in await gate.listen(frame, [e.kind for e in detector.feed(frame)]):
            ended_after.append((at + FRAME) / 16)
    assert model.heard == []
    assert ended_after == [pytest.approx(320, abs=20)]
    assert gate.ended_silence_ms == pytest.approx(320, abs=20)
