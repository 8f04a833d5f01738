"""Synthetic audio made at run time, for tests and benchmarks (no audio files committed).

Speech comes from the project's own espeak TTS. Pads are low-level noise rather than
digital zeros: real microphones never deliver exact zeros, and pocketsphinx decodes
zero-padded clips worse ("stop" → "tell").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from adapters.speech.tts import EspeakTTS

Int16Array = npt.NDArray[np.int16]
_voices: dict[int, EspeakTTS] = {}


def noise(ms: float, *, sigma: float = 20.0, rate: int = 16000, seed: int = 0) -> Int16Array:
    """Gaussian noise (σ=20 is a quiet room through a decent microphone)."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, sigma, round(ms * rate / 1000))
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def tone(hz: float, ms: float, *, amplitude: float = 10000.0, rate: int = 16000) -> Int16Array:
    t = np.arange(round(ms * rate / 1000)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def speech(text: str, *, rate: int = 16000) -> Int16Array:
    """`text` spoken by espeak (default voice), at `rate`, without padding."""
    if rate not in _voices:
        _voices[rate] = EspeakTTS(output_rate=rate)
    return _voices[rate].synthesize_all(text)[1]


def padded_speech(
    text: str,
    *,
    lead_ms: float = 500.0,
    tail_ms: float = 800.0,
    sigma: float = 20.0,
    rate: int = 16000,
    seed: int = 0,
) -> Int16Array:
    """Noise, then `text` spoken over the same noise, then noise: a clip as a mic hears it."""
    voice = speech(text, rate=rate)
    total_ms = lead_ms + 1000 * len(voice) / rate + tail_ms
    clip = noise(total_ms, sigma=sigma, rate=rate, seed=seed).astype(np.int32)
    start = round(lead_ms * rate / 1000)
    clip[start : start + len(voice)] += voice
    return np.clip(clip, -32768, 32767).astype(np.int16)


def onset_ms(pcm: Int16Array, *, rate: int = 16000, level: int = 300) -> float:
    """Time of the first sample louder than `level`: where speech starts in a clip."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    return 1000.0 * float(loud[0]) / rate if len(loud) else float("nan")


def offset_ms(pcm: Int16Array, *, rate: int = 16000, level: int = 300) -> float:
    """Time just after the last sample louder than `level`: where speech ends."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    return 1000.0 * float(loud[-1] + 1) / rate if len(loud) else float("nan")
