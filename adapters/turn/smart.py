"""A learned end of turn: Smart Turn v3.2 (pipecat-ai, BSD-2), run in-process.

Smart Turn is an audio classifier (a Whisper-tiny encoder with a small head, 8.7 MB as
ONNX): given the last 8 s of the caller's utterance it says how likely the caller has
finished their turn, from how they said it (intonation, a trailing "and...", a digit group
left hanging), not from the words. turnchart asks it after a short silence
(adapters/turn/gate.py) instead of waiting out a long silence every time.

Where the model comes from: the `pipecat-ai` wheel ships it
(pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx). pipecat-ai itself is not a
dependency: its own dependencies are heavy (numba, openai, Pillow, resampy, ...) and we need
one file of it. `scripts/_setup.sh` downloads the pinned wheel with `pip download --no-deps`,
checks its sha256, and copies the model and pipecat's licence into
`.venv/share/turnchart/smart-turn/` (`scripts/_smart_turn.py`). Nothing is downloaded at
run time; when the file is not there `load()` says why and returns None, and `end: smart`
falls back to silence.

The input is what `transformers.WhisperFeatureExtractor(chunk_length=8)` makes of 16 kHz
audio, reimplemented here with numpy (no `transformers`, no `torch`): the audio
left-padded with zeros (or cut to its last 8 s) to 128,000 samples, normalised to zero
mean and unit variance, a 400-point periodic-Hann STFT every 160 samples (centre,
reflect padding), the power spectrum through 80 Slaney mel filters (0-8 kHz), log10
floored at 1e-10, the last frame dropped, clamped to 8 below the maximum and scaled as
(x + 4) / 4: an (80, 800) float32 array. The model's output is already a probability.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("turnchart.smart_turn")

SAMPLE_RATE = 16_000
MAX_SECONDS = 8
MAX_SAMPLES = SAMPLE_RATE * MAX_SECONDS      # 128,000
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = MAX_SAMPLES // HOP                  # 800
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
ENV_PATH = "TURNCHART_SMART_TURN_MODEL"
COMPLETE_AT = 0.5
"""A probability above this is a finished turn (pipecat's threshold)."""


def default_model_path() -> Path:
    """`$TURNCHART_SMART_TURN_MODEL`, else where scripts/_setup.sh puts the model."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    return Path(sys.prefix) / "share" / "turnchart" / "smart-turn" / MODEL_FILE


# --------------------------------------------------------------------------- features


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    mel = 3.0 * hz / 200.0
    high = hz >= 1000.0
    mel[high] = 15.0 + np.log(hz[high] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    high = mel >= 15.0
    hz[high] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[high] - 15.0))
    return hz


def _mel_filters() -> npt.NDArray[np.float64]:
    """(N_MELS, N_FFT/2+1) triangular filters, area-normalised ("slaney" norm)."""
    bins = N_FFT // 2 + 1
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, bins)
    edges_mel = np.linspace(_hz_to_mel(np.array([0.0]))[0],
                            _hz_to_mel(np.array([SAMPLE_RATE / 2.0]))[0], N_MELS + 2)
    edges = _mel_to_hz(edges_mel)
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_hz[None, :]               # (N_MELS + 2, bins)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters


_FILTERS = _mel_filters()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)   # periodic Hann


def fit_to_window(pcm: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """16 kHz audio (int16 or float in [-1, 1]) → exactly 8 s of float32: its last 8 s,
    or zeros before it when shorter (the end of the utterance is what matters)."""
    audio = np.asarray(pcm).reshape(-1)
    x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else \
        audio.astype(np.float32)
    if len(x) >= MAX_SAMPLES:
        return np.ascontiguousarray(x[-MAX_SAMPLES:])
    return np.concatenate([np.zeros(MAX_SAMPLES - len(x), dtype=np.float32), x])


def features(pcm: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Whisper log-mel features of the last 8 s of `pcm`: float32, shape (80, 800)."""
    x = fit_to_window(pcm)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]   # (801, 400)
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2               # (801, 201)
    mel = np.maximum(_FILTERS @ power.T, 1e-10)                               # (80, 801)
    logmel = np.log10(mel)[:, :-1]
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    out: npt.NDArray[np.float32] = ((logmel + 4.0) / 4.0).astype(np.float32)
    return out


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of the model: the probability that the turn is complete."""

    probability: float
    cpu_ms: float        # CPU time of this decision (features + inference), this thread
    wall_ms: float

    @property
    def complete(self) -> bool:
        return self.probability > COMPLETE_AT


class SmartTurn:
    """The loaded model; `decide()` is thread-safe (one ONNX session, a lock)."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort  # imported here: the module loads without it

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = path
        self._session = ort.InferenceSession(str(path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def probability(self, pcm: npt.NDArray[Any]) -> float:
        return self.decide(pcm).probability

    def decide(self, pcm: npt.NDArray[Any]) -> Decision:
        """How likely the caller has finished, from the utterance so far (16 kHz)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        batch = features(pcm)[None, :, :]
        with self._lock:
            out = self._session.run(None, {"input_features": batch})
        probability = float(np.asarray(out[0]).reshape(-1)[0])
        return Decision(probability, 1000.0 * (time.thread_time() - cpu),
                        1000.0 * (time.perf_counter() - wall))


_loaded: dict[Path, SmartTurn | None] = {}
_reasons: dict[Path, str] = {}
_load_lock = threading.Lock()


def unavailable_reason(path: Path | None = None) -> str | None:
    """Why `load(path)` returned None (None when it loaded or was not tried)."""
    return _reasons.get(path or default_model_path())


def load(path: Path | None = None) -> SmartTurn | None:
    """The model at `path` (default: `default_model_path()`), loaded once per process;
    None, with the reason logged once, when it is missing or does not load."""
    path = path or default_model_path()
    with _load_lock:
        if path in _loaded:
            return _loaded[path]
        model: SmartTurn | None = None
        if not path.is_file():
            _reasons[path] = (f"{path} is not there (scripts/_setup.sh installs it; or set "
                              f"{ENV_PATH})")
        else:
            try:
                model = SmartTurn(path)
            except Exception as exc:   # a damaged file, an onnxruntime without CPU support
                _reasons[path] = f"{path} did not load: {type(exc).__name__}: {exc}"
        if model is None:
            log.warning("smart turn unavailable, end: smart falls back to silence: %s",
                        _reasons[path])
        _loaded[path] = model
        return model


def measure(model: SmartTurn, decisions: int = 30) -> dict[str, float]:
    """CPU and wall time per decision on synthetic 1, 3 and 8 s utterances (the model
    always hears 8 s, padded, so the cost does not grow with the utterance)."""
    rng = np.random.default_rng(0)
    clips = [np.clip(rng.normal(0, 2000, seconds * SAMPLE_RATE), -32768, 32767).astype(np.int16)
             for seconds in (1, 3, 8)]
    model.decide(clips[0])   # warm-up
    feature_cpu, cpu, wall = [], [], []
    for i in range(decisions):
        clip = clips[i % len(clips)]
        started = time.thread_time()
        features(clip)
        feature_cpu.append(1000.0 * (time.thread_time() - started))
        decision = model.decide(clip)
        cpu.append(decision.cpu_ms)
        wall.append(decision.wall_ms)
    return {"decisions": float(decisions),
            "cpu_ms_p50": float(np.percentile(cpu, 50)),
            "cpu_ms_p95": float(np.percentile(cpu, 95)),
            "wall_ms_p50": float(np.percentile(wall, 50)),
            "wall_ms_p95": float(np.percentile(wall, 95)),
            "features_cpu_ms_p50": float(np.percentile(feature_cpu, 50))}


if __name__ == "__main__":   # python -m adapters.turn.smart: CPU per decision
    loaded = load()
    if loaded is None:
        raise SystemExit(f"no model: {unavailable_reason()}")
    figures = measure(loaded)
    print(f"Smart Turn v3.2, {loaded.path}: {figures['decisions']:.0f} decisions, 1 thread\n"
          f"  CPU per decision  p50 {figures['cpu_ms_p50']:.1f} ms  "
          f"p95 {figures['cpu_ms_p95']:.1f} ms  (features alone p50 "
          f"{figures['features_cpu_ms_p50']:.1f} ms)\n"
          f"  wall per decision p50 {figures['wall_ms_p50']:.1f} ms  "
          f"p95 {figures['wall_ms_p95']:.1f} ms")
