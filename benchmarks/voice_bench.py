"""Live-voice timings in one process with the offline defaults (issue 5).

Each turn feeds the project's own TTS saying "hello" (16 kHz) into a real
`TurnStreamHandler` of a running `VoiceService` (silero VAD, pocketsphinx,
builtin responder, espeak), waits for the first answer frame to be handed
out, lets it play briefly, then decides a barge-in. Measured per turn:

- turn latency: end of user speech (VAD) → first answer frame dequeued;
- its parts: STT final decode, responder, TTS first chunk;
- orchestration overhead = turn latency − (STT + responder + first TTS chunk);
- time-to-silence: barge-in decision → last answer frame dequeued (0 when
  nothing more is dequeued), and decision → `playback_cleared` by the chart.
Run: `turnchart bench voice` (JSON on stdout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from adapters.config import Settings
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceService
from adapters.server.voice_factory import shared_models
from adapters.speech.audio import resample
from benchmarks.common import machine
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.latency import percentile
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.ports import AudioChunk
from engine.runtime.trace import PlaybackCleared

ROOT = Path(__file__).resolve().parent.parent


class Timings:
    def __init__(self) -> None:
        self.stt_ms: list[float] = []
        self.responder_ms: list[float] = []
        self.tts_first_ms: list[float] = []


class TimedUtterance:
    def __init__(self, inner: Any, timings: Timings) -> None:
        self.inner, self.timings = inner, timings

    async def feed(self, pcm: Any) -> str | None:
        result: str | None = await self.inner.feed(pcm)
        return result

    async def cancel(self) -> None:
        await self.inner.cancel()

    def quiet(self, quiet_ms: float) -> None:
        self.inner.quiet(quiet_ms)

    async def finish(self) -> str:
        start = time.perf_counter()
        text: str = await self.inner.finish()
        self.timings.stt_ms.append((time.perf_counter() - start) * 1000)
        return text


class TimedSTT:
    def __init__(self, inner: Any, timings: Timings) -> None:
        self.inner, self.timings = inner, timings

    def open_utterance(self) -> TimedUtterance:
        return TimedUtterance(self.inner.open_utterance(), self.timings)


class TimedResponder:
    def __init__(self, inner: BuiltinResponder, timings: Timings) -> None:
        self.inner, self.timings = inner, timings

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        start = time.perf_counter()
        pieces = [p async for p in self.inner.answer(text, session_id)]
        self.timings.responder_ms.append((time.perf_counter() - start) * 1000)
        for piece in pieces:
            yield piece


class TimedSpeech:
    def __init__(self, inner: Any, timings: Timings) -> None:
        self.inner, self.timings = inner, timings

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        start = time.perf_counter()
        first = True
        async for chunk in self.inner.synthesize(text):
            if first:
                self.timings.tts_first_ms.append((time.perf_counter() - start) * 1000)
                first = False
            yield chunk


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 3),
            "p99": round(percentile(ordered, 99), 3),
            "max": round(ordered[-1], 3) if ordered else 0.0}


async def _run(turns: int) -> dict[str, Any]:
    settings = Settings()
    models = shared_models(settings)
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    sink = ListSink()
    metrics = Metrics(lambda: 0)
    log = EventLog(sink, RealClock(), level="INFO")
    cleared: list[PlaybackCleared] = []
    log.subscribe(lambda e: cleared.append(e) if isinstance(e, PlaybackCleared) else None)
    timings = Timings()
    service = VoiceService(
        chart, registry, log, metrics, stt=TimedSTT(models.stt, timings),
        detector_factory=models.detector, speech=TimedSpeech(models.tts, timings),
        responder=TimedResponder(BuiltinResponder(Knowledge([])), timings),
        output_rate=settings.voice.output_rate)
    rate, hello = models.tts.synthesize_all("hello")
    rng = np.random.default_rng(1)
    pad = rng.normal(0, 20, 16000 // 2).astype(np.int16)
    utterance = np.concatenate([pad, resample(hello, rate, 16000), pad, pad]).astype(np.int16)
    dequeued: list[float] = []
    turn_ms: list[float] = []
    silence_ms: list[float] = []
    cleared_ms: list[float] = []
    await service.start()
    handler = service.new_handler()
    await handler.attach("bench-voice")
    stop = asyncio.Event()

    async def consumer() -> None:  # stands in for FastRTC pulling frames
        while not stop.is_set():
            frame = await handler.emit()
            if frame is not None:
                dequeued.append(time.monotonic())

    task = asyncio.ensure_future(consumer())
    try:
        for _ in range(turns):
            session = service.manager.get("bench-voice")
            assert session is not None
            while session.state != "LISTENING":
                await asyncio.sleep(0.01)
            mark = len(dequeued)
            for i in range(0, len(utterance), 320):
                await handler.receive((16000, utterance[i:i + 320].reshape(1, -1)))
                if handler.speech_ended_at is not None:
                    break
            ended = handler.speech_ended_at
            while len(dequeued) == mark:
                await asyncio.sleep(0.001)
            if ended is not None:
                turn_ms.append((dequeued[mark] - ended) * 1000)
            await asyncio.sleep(0.2)
            cleared_before = len(cleared)
            decided = time.monotonic()
            handler.barge_in("benchmark")
            while len(cleared) <= cleared_before:
                await asyncio.sleep(0.0005)
            cleared_ms.append((time.monotonic() - decided) * 1000)
            await asyncio.sleep(0.1)
            after = [t for t in dequeued if t > decided]
            silence_ms.append(((after[-1] - decided) * 1000) if after else 0.0)
    finally:
        stop.set()
        task.cancel()
        await handler.detach()
        await service.stop()
    overhead = [t - s - r - f for t, s, r, f in zip(turn_ms, timings.stt_ms,
                                                     timings.responder_ms, timings.tts_first_ms,
                                                     strict=False)]
    errors = [r for r in sink.records if r["level"] == "ERROR"]
    return {
        "benchmark": "voice", "machine": machine(), "turns": turns,
        "models": {"stt": type(models.stt).__name__,
                   "tts": getattr(models.tts, "name", type(models.tts).__name__)},
        "time_to_silence_ms": _summary(silence_ms),
        "barge_in_to_playback_cleared_ms": _summary(cleared_ms),
        "turn_latency_ms": _summary(turn_ms),
        "breakdown_ms": {"stt_final_decode": _summary(timings.stt_ms),
                         "responder": _summary(timings.responder_ms),
                         "tts_first_chunk": _summary(timings.tts_first_ms)},
        "orchestration_overhead_ms": _summary(overhead),
        "error_lines": len(errors),
        "targets": {"time_to_silence_p99_le_20ms": _summary(silence_ms)["p99"] <= 20,
                    "overhead_p99_le_5ms": _summary(overhead)["p99"] <= 5},
        "notes": "turn latency here counts from the VAD's end-of-speech decision (the audio "
                 "is fed faster than real time, so a speculative STT decode has no head "
                 "start); the server's turn_latency lines count from when the caller "
                 "stopped, hangover_ms (320 ms) earlier. tts_first_chunk is the voice's "
                 "time to first audio",
    }


def run(turns: int = 20) -> dict[str, Any]:
    return asyncio.run(_run(turns))
