"""Offline text-to-speech with CMU Flite (Debian's `flite`), in-process: the default voice.

Why flite: a clearer voice than eSpeak NG for a caller. Round trip measured for issue 14
(synthesise 20 sentences, transcribe with Whisper): eSpeak NG 10.1% word error rate,
flite's `slt` voice 0.9%. Licence: flite is under a BSD-style CMU licence (free use,
modification and redistribution with the notice kept; Debian copyright file). It comes
from the Debian package (`apt-get install flite`, done by scripts/_setup.sh), not PyPI:
`libflite.so.1` and `libflite_cmu_us_<voice>.so.1` are bound here with ctypes.

How it streams: the answer is split into sentences and each is synthesised whole
(flite_text_to_wave: about 20-60 ms for a sentence on the development machine), then
handed on in 60 ms chunks, so the first sentence plays while the next is made. Flite
pads every wave with about 200 ms of near-silence at each end; it is trimmed (`trim`),
or the caller would hear the first word 200 ms later. Flite
keeps global state in its voice and lexicon, so every call runs on one worker thread
under one lock (as espeak does). When the library is missing, `SpeechModels` falls back
to eSpeak NG (see models.py).
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import StreamResampler
from adapters.speech.errors import SpeechConfigError
from adapters.speech.process_wide import ProcessWide
from adapters.speech.thread_stream import Put, stream_from_thread
from engine.runtime.ports import AudioChunk

VOICES = ("slt", "rms", "awb", "kal16", "kal")
"""The English voices Debian's flite ships (libflite_cmu_us_<name>.so.1)."""
CHUNK_MS = 60.0
LEVEL = 150          # |sample| above this is sound (flite's silence stays under ~60)
KEEP_BEFORE_MS = 15.0
KEEP_AFTER_MS = 120.0   # the pause between two sentences
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


class _Wave(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


def trim(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    """Cut flite's silence around a sentence: it starts every wave with 190-230 ms of
    near-silence (and ends with as much), which a caller would wait through before the
    answer's first word. Keeps `KEEP_BEFORE_MS` before and `KEEP_AFTER_MS` after."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEVEL)
    if not len(loud):
        return pcm[:0]
    start = max(0, int(loud[0]) - int(rate * KEEP_BEFORE_MS / 1000))
    end = min(len(pcm), int(loud[-1]) + 1 + int(rate * KEEP_AFTER_MS / 1000))
    return pcm[start:end]


def split_sentences(text: str) -> list[str]:
    """Sentences (and clauses ending in ; or :) with their punctuation; no blanks."""
    return [part.strip() for part in _SENTENCE.split(text) if part.strip()]


class FliteEngine(ProcessWide):
    """libflite, loaded once per process; `synthesize` is blocking and serialised."""

    def __init__(self) -> None:
        try:
            # RTLD_GLOBAL: the voice libraries resolve flite's symbols through it
            self._lib = ctypes.CDLL("libflite.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise SpeechConfigError(
                "tts_engine 'flite' needs Debian's flite libraries (apt-get install flite; "
                f"scripts/_setup.sh installs them): {exc}") from exc
        self._lib.flite_init.restype = ctypes.c_int
        self._lib.flite_text_to_wave.restype = ctypes.POINTER(_Wave)
        self._lib.flite_text_to_wave.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        self._lib.delete_wave.argtypes = [ctypes.POINTER(_Wave)]
        self._lib.delete_wave.restype = None
        self._lib.flite_init()
        self._voices: dict[str, int] = {}
        self._keep: list[Any] = []   # the voice libraries stay loaded
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flite")

    def voice(self, name: str) -> int:
        """Register (once) and return the voice `name`; SpeechConfigError if unknown."""
        with self._lock:
            if name in self._voices:
                return self._voices[name]
            if name not in VOICES:
                raise SpeechConfigError(
                    f"flite has no voice named {name!r}; choose one of {', '.join(VOICES)}")
            try:
                lib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1")
            except OSError as exc:
                raise SpeechConfigError(f"flite voice {name!r} is not installed: {exc}") from exc
            register = getattr(lib, f"register_cmu_us_{name}")
            register.restype = ctypes.c_void_p
            register.argtypes = [ctypes.c_char_p]
            handle = register(None)
            if not handle:
                raise SpeechConfigError(f"flite could not register voice {name!r}")
            self._keep.append(lib)
            self._voices[name] = int(handle)
            return self._voices[name]

    def synthesize(self, text: str, voice: str) -> tuple[int, npt.NDArray[np.int16]]:
        """(rate, samples) of `text`; blocking, one call at a time."""
        handle = self.voice(voice)
        with self._lock:
            wave = self._lib.flite_text_to_wave(text.encode("utf-8"), ctypes.c_void_p(handle))
            if not wave:
                raise RuntimeError(f"flite could not synthesise {text[:40]!r}")
            try:
                w = wave.contents
                n = w.num_samples * max(1, w.num_channels)
                pcm = (np.ctypeslib.as_array(w.samples, shape=(n,)).astype(np.int16, copy=True)
                       if n > 0 else np.zeros(0, dtype=np.int16))
                rate = int(w.sample_rate)
            finally:
                self._lib.delete_wave(wave)
        return rate, trim(pcm, rate)


class FliteTTS:
    """`engine.runtime.ports.Speech` with flite: int16 little-endian mono at `sample_rate`."""

    def __init__(self, *, voice: str = "slt", output_rate: int = 24000,
                 engine: FliteEngine | None = None) -> None:
        if output_rate <= 0:
            raise ValueError(f"output_rate must be positive, got {output_rate}")
        self._engine = engine or FliteEngine.shared()
        self._engine.voice(voice)   # fail at start-up, not on the first answer
        self.voice = voice
        self.name = f"flite {voice}"
        self.sample_rate = output_rate

    def synthesize(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """Yield 60 ms chunks, sentence by sentence; closing the iterator stops early."""
        def produce(put: Put, stop: threading.Event) -> None:
            resampler: StreamResampler | None = None
            for sentence in split_sentences(text):
                if stop.is_set():
                    return
                rate, pcm = self._engine.synthesize(sentence, self.voice)
                resampler = resampler or StreamResampler(rate, self.sample_rate)
                self._emit(resampler.push(pcm), put)
            if resampler is not None and not stop.is_set():
                self._emit(resampler.flush(), put)

        return stream_from_thread(self._engine.executor, produce)

    def synthesize_all(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        """(rate, whole clip) synchronously: for filler clips at start-up and for tests."""
        parts: list[npt.NDArray[np.int16]] = []
        resampler: StreamResampler | None = None
        for sentence in split_sentences(text) or [text]:
            rate, pcm = self._engine.synthesize(sentence, self.voice)
            resampler = resampler or StreamResampler(rate, self.sample_rate)
            parts.append(np.asarray(resampler.push(pcm), dtype=np.int16))
        if resampler is not None:
            parts.append(np.asarray(resampler.flush(), dtype=np.int16))
        return self.sample_rate, (np.concatenate(parts) if parts
                                  else np.zeros(0, dtype=np.int16))

    def _emit(self, pcm: npt.NDArray[np.generic], put: Put) -> None:
        step = int(self.sample_rate * CHUNK_MS / 1000)
        for at in range(0, len(pcm), step):
            piece = np.asarray(pcm[at:at + step], dtype="<i2")
            put(AudioChunk(piece.tobytes(), 1000.0 * len(piece) / self.sample_rate))
