"""Build the live `VoiceService` from settings: offline speech models (loaded once
per process), the configured responder, and a filler clip synthesised at start-up."""

from __future__ import annotations

import logging
from typing import Any

from adapters.config import Settings
from adapters.responder.intents import grammar_phrases
from adapters.responder.settings import build_responder, load_knowledge
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceFrontEnd, VoiceService
from adapters.speech.models import SpeechModels
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.logs import EventLog
from engine.runtime.ports import AudioChunk

log = logging.getLogger("turnchart.voice")
FILLER_TEXT = "Hmm, let me think."
_models: SpeechModels | None = None
_vocabulary: list[str] = []


def stt_vocabulary(settings: Settings) -> list[str]:
    """Whisper's domain vocabulary: the responder's knowledge questions (unless
    `speech.stt_vocabulary_from_responder` is off), then `speech.stt_vocabulary`."""
    questions: list[str] = []
    if settings.speech.stt_vocabulary_from_responder:
        # A broken knowledge file is reported by build_responder; not twice here.
        questions = load_knowledge(settings.responder.knowledge_path,
                                   lambda problem: None).questions()
    return list(dict.fromkeys([*questions, *settings.speech.stt_vocabulary]))


def shared_models(settings: Settings) -> SpeechModels:
    """Load the speech models once per process (about half a second cold)."""
    global _models, _vocabulary
    speech = settings.speech.model_copy(update={"output_rate": settings.voice.output_rate})
    vocabulary = stt_vocabulary(settings)
    if _models is None or _models.settings != speech or _vocabulary != vocabulary:
        _models = SpeechModels.load(speech, grammar_phrases(), vocabulary)
        _vocabulary = vocabulary
    return _models


def filler_clip(models: SpeechModels) -> AudioChunk:
    """The "hmm" played while an answer is slow, synthesised once at start-up."""
    rate, pcm = models.tts.synthesize_all(FILLER_TEXT)
    return AudioChunk(pcm.tobytes(), len(pcm) / rate * 1000.0)


def backchannel_settings(settings: Settings) -> dict[str, Any]:
    """`voice.backchannels` and its two bounds, as the voice service takes them."""
    voice = settings.voice
    return {"backchannels": voice.backchannels, "backchannel_max_ms": voice.backchannel_max_ms,
            "backchannel_end_ms": voice.backchannel_end_ms}


def build_voice(settings: Settings, chart: CompiledChart, registry: Registry, event_log: EventLog,
                metrics: Metrics) -> VoiceFrontEnd:
    models = shared_models(settings)
    responder = build_responder(settings.responder,
                                on_problem=lambda problem: log.error("%s", problem))
    filler = filler_clip(models)
    voice: VoiceFrontEnd
    if settings.bus.startswith(("redis://", "rediss://", "unix://", "redis+cluster://",
                                "rediss+cluster://")):
        from adapters.server.remote_voice import RemoteVoiceService
        voice = RemoteVoiceService(chart, registry, event_log, metrics, stt=models.stt,
                                   detector_factory=models.detector, speech=models.tts,
                                   responder=responder, filler=filler,
                                   false_interruption_ms=settings.voice.false_interruption_ms,
                                   **backchannel_settings(settings),
                                   output_rate=settings.voice.output_rate,
                                   redis_url=settings.bus)
    else:
        voice = VoiceService(chart, registry, event_log, metrics, stt=models.stt,
                             detector_factory=models.detector, speech=models.tts,
                             responder=responder, filler=filler,
                             false_interruption_ms=settings.voice.false_interruption_ms,
                             **backchannel_settings(settings),
                             output_rate=settings.voice.output_rate)
    voice.use_default_end(settings.voice.end_of_turn)
    return voice
