"""Speech settings and the once-per-process bundle of loaded models."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydantic import ValidationError

import adapters.speech.models as models_module
from adapters.responder.text import normalise
from adapters.speech.audio import resample
from adapters.speech.errors import SpeechConfigError
from adapters.speech.flite import FliteTTS
from adapters.speech.models import SpeechModels, SpeechSettings, build_tts
from adapters.speech.samples import padded_speech
from adapters.speech.tts import EspeakTTS
from adapters.speech.whisper import WhisperSTT


def test_settings_default_to_the_offline_models_and_refuse_unknown_keys() -> None:
    settings = SpeechSettings()
    assert settings.stt_backend == "whisper" and settings.whisper_model_dir is None
    assert settings.tts_engine == "flite" and settings.flite_voice == "slt"
    assert settings.output_rate == 24000
    assert settings.decoder_pool == 2
    with pytest.raises(ValidationError, match="extra"):
        SpeechSettings.model_validate({"vad_threshold": 0.5})


@pytest.mark.parametrize(("raw", "message"), [
    ({"vad_onset_threshold": 0.3, "vad_offset_threshold": 0.4}, "must not exceed"),
    ({"flite_voice": "bob"}, "slt"),
    ({"tts_engine": "piper"}, "flite"),
    ({"whisper_threads": 0}, "greater than or equal to 1"),
    ({"stt_backend": "vosk"}, "pocketsphinx"),
    ({"decoder_pool": 0}, "greater than or equal to 1"),
    ({"tts_wpm": 20}, "greater than or equal to 80"),
])
def test_settings_explain_what_is_wrong(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SpeechSettings.model_validate(raw)


async def test_loaded_models_detect_transcribe_and_speak() -> None:
    models = SpeechModels.load(SpeechSettings(stt_backend="pocketsphinx", decoder_pool=1,
                                              tts_engine="espeak"), ["hello"])
    try:
        assert set(models.load_ms) == {"vad", "stt", "tts"}
        clip = padded_speech("stop", lead_ms=300, tail_ms=600)
        detector = models.detector()
        utterance = models.stt.open_utterance()
        kinds = []
        for at in range(0, len(clip), 320):
            events = detector.feed(clip[at : at + 320])
            kinds += [e.kind for e in events]
            if "speech_start" in [e.kind for e in events]:
                await utterance.feed(detector.preroll())
            elif detector.speaking:
                await utterance.feed(clip[at : at + 320])
        detector.close()
        assert kinds == ["speech_start", "speech_confirmed", "speech_end"]
        assert await utterance.finish() == "stop"
        rate, pcm = models.tts.synthesize_all("hello")
        assert rate == 24000 and models.tts.sample_rate == 24000
        back = resample(pcm, 24000, 16000)
        assert back.dtype == np.int16 and len(back) == -(-len(pcm) * 2 // 3)
    finally:
        models.close()


async def test_the_defaults_load_whisper_and_flite() -> None:
    models = SpeechModels.load(SpeechSettings(), ["hello"])
    try:
        assert isinstance(models.stt, WhisperSTT) and isinstance(models.tts, FliteTTS)
        utterance = models.stt.open_utterance()
        await utterance.feed(padded_speech("tell me a joke", lead_ms=200, tail_ms=300))
        assert normalise(await utterance.finish()) == "tell me a joke"
    finally:
        models.close()


def test_without_flite_the_voice_falls_back_to_espeak(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def missing(**_: object) -> FliteTTS:
        raise SpeechConfigError("tts_engine 'flite' needs Debian's flite libraries")

    monkeypatch.setattr(models_module, "FliteTTS", missing)
    with caplog.at_level(logging.WARNING):
        tts = build_tts(SpeechSettings())
    assert isinstance(tts, EspeakTTS)
    assert "tts_fallback" in caplog.text and "flite" in caplog.text
