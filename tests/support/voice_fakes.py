"""Deterministic stand-ins for the speech models, for adapter tests that are
about routing, contracts and timing rather than recognition quality."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.config import Settings
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceService
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.logs import EventLog
from engine.runtime.ports import AudioChunk

RATE = 16_000


@dataclass
class Event:
    kind: str
    t_ms: float


class EnergyDetector:
    """Speech = RMS above a threshold; same events as the real SpeechDetector."""

    def __init__(self, min_speech_ms: float = 200.0, hangover_ms: float = 200.0,
                 barge_in_speaking_ms: float | None = None) -> None:
        self.min_speech_ms, self.hangover_ms = min_speech_ms, hangover_ms
        if barge_in_speaking_ms is not None:   # else the gate uses min_speech_ms (as before)
            self.barge_in_speaking_ms = barge_in_speaking_ms
        self.speaking = False
        self.t_ms = 0.0
        self.speech_ms = 0.0
        self.silence_ms = 0.0
        self.voiced_ms = 0.0   # the current run of loud audio (0 after a quiet frame)
        self.confirmed = False
        self._pre: list[np.ndarray[Any, Any]] = []

    def feed(self, pcm: np.ndarray[Any, Any]) -> list[Event]:
        ms = len(pcm) / RATE * 1000.0
        self.t_ms += ms
        loud = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 500.0 if len(pcm) else False
        events: list[Event] = []
        self._pre = ([*self._pre, pcm])[-5:]
        self.voiced_ms = self.voiced_ms + ms if loud else 0.0
        if loud:
            self.silence_ms = 0.0
            if not self.speaking:
                self.speaking, self.speech_ms, self.confirmed = True, 0.0, False
                events.append(Event("speech_start", self.t_ms))
            self.speech_ms += ms
            if not self.confirmed and self.speech_ms >= self.min_speech_ms:
                self.confirmed = True
                events.append(Event("speech_confirmed", self.t_ms))
        elif self.speaking:
            self.silence_ms += ms
            if self.silence_ms >= self.hangover_ms:
                self.speaking = False
                events.append(Event("speech_end", self.t_ms))
        return events

    @property
    def quiet_ms(self) -> float:
        return self.silence_ms

    def reset(self) -> None:
        self.speaking, self.confirmed, self.speech_ms, self.silence_ms = False, False, 0.0, 0.0
        self.voiced_ms = 0.0

    def preroll(self) -> np.ndarray[Any, Any]:
        return np.concatenate(self._pre) if self._pre else np.zeros(0, dtype=np.int16)


class ScriptedUtterance:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = 0
        self.quiet_calls: list[float] = []   # what the handler told a speculative decoder

    async def feed(self, pcm: np.ndarray[Any, Any]) -> str | None:
        self.samples += len(pcm)
        return self.text.split()[0] if self.samples > RATE // 10 else None

    async def finish(self) -> str:
        return self.text if self.samples else ""

    async def cancel(self) -> None:
        self.samples = 0

    def quiet(self, quiet_ms: float) -> None:
        self.quiet_calls.append(quiet_ms)


class ScriptedTranscriber:
    """Every utterance is heard as the next phrase of the script (last one repeats)."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.opened: list[ScriptedUtterance] = []

    def open_utterance(self) -> ScriptedUtterance:
        text = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.opened.append(ScriptedUtterance(text))
        return self.opened[-1]


class ToneSpeech:
    """A 440 Hz tone, `ms_per_word` per word, in 60 ms chunks, at `rate`."""

    def __init__(self, rate: int = 24_000, ms_per_word: float = 300.0) -> None:
        self.rate, self.ms_per_word = rate, ms_per_word

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        total_ms = max(1, len(text.split())) * self.ms_per_word
        n = int(self.rate * 0.06)
        t0 = 0
        done = 0.0
        while done < total_ms:
            t = (np.arange(n) + t0) / self.rate
            pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
            t0 += n
            done += 60.0
            await asyncio.sleep(0)
            yield AudioChunk(pcm.tobytes(), 60.0)


def fake_voice_factory(script: list[str], *, ms_per_word: float = 300.0,
                       knowledge: Knowledge | None = None,
                       detector: Callable[[], EnergyDetector] = EnergyDetector,
                       ) -> Callable[[Settings, CompiledChart, Registry, EventLog, Metrics],
                                     VoiceService]:
    def build(settings: Settings, chart: CompiledChart, registry: Registry, log: EventLog,
              metrics: Metrics) -> VoiceService:
        return VoiceService(
            chart, registry, log, metrics, stt=ScriptedTranscriber(script),
            detector_factory=detector,
            speech=ToneSpeech(settings.voice.output_rate, ms_per_word),
            responder=BuiltinResponder(knowledge or Knowledge([])),
            false_interruption_ms=settings.voice.false_interruption_ms,
            backchannels=settings.voice.backchannels,
            backchannel_max_ms=settings.voice.backchannel_max_ms,
            backchannel_end_ms=settings.voice.backchannel_end_ms,
            output_rate=settings.voice.output_rate)
    return build


def mulaw_encode(pcm: np.ndarray[Any, Any]) -> bytes:
    """G.711 mu-law, as FastRTC's WebSocket transport expects (no audioop)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) * 0x80
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def tone(ms: float, amplitude: float = 6000.0, freq: float = 300.0) -> np.ndarray[Any, Any]:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def silence(ms: float) -> np.ndarray[Any, Any]:
    return np.zeros(int(RATE * ms / 1000), dtype=np.int16)
