"""The live audio handler and the effects it serves (issue 14), with deterministic speech
stand-ins: a filler is queued and the effect returns, so the answer that arrives while
it plays moves the chart at once; turn latency counts the ANSWER's first audio, never
the filler's; the recogniser hears of the silence up to the end of speech (speculative
decoding); speech that begins while the microphone is gated keeps its start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceService
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.ports import AudioChunk
from tests.support.voice_fakes import EnergyDetector, ScriptedTranscriber, ToneSpeech

ROOT = Path(__file__).resolve().parent.parent
RATE = 24_000


class SlowResponder:
    """Answers after `delay_s`: long enough for THINKING's 600 ms filler to start."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        await asyncio.sleep(self.delay_s)
        yield "Here it is."


def filler(ms: float) -> AudioChunk:
    n = int(RATE * ms / 1000)
    pcm = (np.sin(2 * np.pi * 220 * np.arange(n) / RATE) * 6000).astype(np.int16)
    return AudioChunk(pcm.tobytes(), ms)


async def run_turn(sink: ListSink, chart_path: Path = ROOT / "charts" / "voice_turn.yaml",
                   delay_s: float = 0.8) -> None:
    registry = default_registry()
    chart = load_chart(chart_path, registry)
    log = EventLog(sink, RealClock(), level="DEBUG")
    service = VoiceService(chart, registry, log, Metrics(lambda: 0),
                           stt=ScriptedTranscriber(["hello"]), detector_factory=EnergyDetector,
                           speech=ToneSpeech(RATE, 100.0), responder=SlowResponder(delay_s),
                           filler=filler(3000.0), output_rate=RATE)
    await service.start()
    handler = service.new_handler()
    await handler.attach("fx")
    stop = asyncio.Event()

    async def consumer() -> None:   # stands in for FastRTC pulling frames
        while not stop.is_set():
            await handler.emit()

    task = asyncio.ensure_future(consumer())
    try:
        handler.speech_stopped_at = time.monotonic()   # as if the caller just stopped
        service.post("fx", "stt_final", {"text": "hello", "is_final": True})
        deadline = time.monotonic() + 10
        while not sink.of_type("turn_latency", "fx") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await handler.detach()
        await service.stop()


def test_a_playing_filler_never_delays_the_answer() -> None:
    sink = ListSink()
    asyncio.run(run_turn(sink))
    moves = {(r["data"]["from"], r["data"]["to"]): r["data"]["latency_ms"]
             for r in sink.of_type("state_transition", "fx")}
    played = [r for r in sink.of_type("effect_done", "fx")
              if r["data"]["effect"] == "play_immediate_filler"]
    assert played, "the filler was due (the answer took 0.8 s) and played"
    # The 3 s clip is still playing when the answer arrives: the step that applies
    # response_ready must not wait for it (before issue 14 it waited ~0.3-0.8 s).
    assert moves[("THINKING", "SPEAKING")] < 50.0, moves
    assert not sink.of_type("effect_slow", "fx")
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


def test_turn_latency_counts_the_answer_not_the_filler() -> None:
    sink = ListSink()
    asyncio.run(run_turn(sink))
    [latency] = sink.of_type("turn_latency", "fx")
    # The filler started ~600 ms after the end of speech, the answer ~800 ms after it.
    assert latency["data"]["turn_latency_ms"] >= 790.0, latency["data"]


async def test_the_recogniser_hears_of_the_silence_until_the_end_of_speech() -> None:
    """A speculative decoder (Whisper) starts at the first silence; the silence must still
    be reported on the frame that ends speech, or its early result would be thrown away."""
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    stt = ScriptedTranscriber(["hello"])
    service = VoiceService(chart, registry, EventLog(ListSink(), RealClock()), Metrics(lambda: 0),
                           stt=stt, detector_factory=EnergyDetector, speech=ToneSpeech(RATE),
                           responder=SlowResponder(0.0), output_rate=RATE)
    await service.start()
    handler = service.new_handler()
    await handler.attach("quiet")
    try:
        while service.contract("quiet").get("microphone") != "open":
            await asyncio.sleep(0.005)
        tone = (np.sin(2 * np.pi * 300 * np.arange(320 * 25) / 16000) * 8000).astype(np.int16)
        pcm = np.concatenate([tone, np.zeros(320 * 15, dtype=np.int16)])
        for at in range(0, len(pcm), 320):
            await handler.receive((16000, pcm[at:at + 320].reshape(1, -1)))
    finally:
        await handler.detach()
        await service.stop()
    [utterance] = stt.opened
    calls = utterance.quiet_calls
    assert calls[0] == 0.0 and calls[-1] >= 200.0   # speech, then the hangover's silence
    first_quiet = next(i for i, ms in enumerate(calls) if ms > 0)
    assert all(ms > 0 for ms in calls[first_quiet:]), calls


def test_the_tutorial_cue_never_delays_confirming() -> None:
    """The README tutorial's CONFIRMING state plays a cue on entry (before issue 14 the
    step waited for it: THINKING → CONFIRMING logged 802-809 ms)."""
    sink = ListSink()
    asyncio.run(run_turn(sink, ROOT / "docs" / "tutorial" / "voice_turn_confirming.yaml", 0.0))
    moves = {(r["data"]["from"], r["data"]["to"]): r["data"]["latency_ms"]
             for r in sink.of_type("state_transition", "fx")}
    assert moves[("THINKING", "CONFIRMING")] < 50.0, moves
    assert moves[("CONFIRMING", "SPEAKING")] < 50.0, moves
    assert not sink.of_type("effect_slow", "fx")


async def test_speech_that_starts_as_the_answer_ends_is_heard_from_its_start() -> None:
    """A caller who answers back as the last words play: the onset lands while the
    microphone is still gated (too short for a barge-in), the rest after it opens.
    The utterance is the whole of it, pre-roll included (before issue 14 the onset was
    spent on the barge-in detector and the words never reached STT)."""
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    stt = ScriptedTranscriber(["what time is it"])
    sink = ListSink()
    service = VoiceService(chart, registry, EventLog(sink, RealClock()), Metrics(lambda: 0),
                           stt=stt, detector_factory=EnergyDetector, speech=ToneSpeech(RATE),
                           responder=SlowResponder(0.0), output_rate=RATE)
    await service.start()
    handler = service.new_handler()
    await handler.attach("edge")
    mic = {"microphone": "gated", "playback": "streaming"}
    service.contract = lambda session_id: mic   # type: ignore[method-assign]
    try:
        tone = (np.sin(2 * np.pi * 300 * np.arange(320) / 16000) * 8000).astype(np.int16)
        quiet = np.zeros(320, dtype=np.int16)
        for n in range(40):
            if n == 5:   # 100 ms of speech while gated, then the answer ends
                mic = {"microphone": "open", "playback": "stopped"}
            await handler.receive((16000, (tone if n < 25 else quiet).reshape(1, -1)))
    finally:
        await handler.detach()
        await service.stop()
    [utterance] = stt.opened
    assert utterance.samples >= 25 * 320   # every frame of the speech, the gated ones too
    assert not sink.of_type("barge_in_detected", "edge")
    finals = [r for r in sink.of_type("event_received", "edge")
              if r["data"]["event"] == "stt_final"]
    assert [r["data"]["payload"]["text"] for r in finals] == ["what time is it"]
