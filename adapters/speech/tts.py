"""Offline text-to-speech: espeak-ng behind the engine's `Speech` port.

Chunks are streamed as espeak produces them (60 ms each at 22.05 kHz), resampled to the
output rate by one `StreamResampler` per call so chunk edges stay continuous. Calls from
any number of sessions queue on the engine's single worker thread: espeak is process
global and not re-entrant, and a sentence takes only a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import StreamResampler
from adapters.speech.espeak import EspeakEngine
from adapters.speech.thread_stream import Put, stream_from_thread
from engine.runtime.ports import AudioChunk


class EspeakTTS:
    """`engine.runtime.ports.Speech` with espeak-ng: int16 little-endian mono at `sample_rate`."""

    def __init__(
        self,
        *,
        voice: str = "en-us",
        wpm: int = 175,
        output_rate: int = 24000,
        engine: EspeakEngine | None = None,
    ) -> None:
        if output_rate <= 0:
            raise ValueError(f"output_rate must be positive, got {output_rate}")
        self._engine = engine or EspeakEngine.shared()
        self._engine.configure(voice, wpm)  # fail at start-up, not on the first answer
        self.voice = voice
        self.wpm = wpm
        self.sample_rate = output_rate

    def synthesize(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """Yield audio chunks as they are synthesised; closing the iterator stops espeak."""
        resampler = StreamResampler(self._engine.sample_rate, self.sample_rate)

        def produce(put: Put, stop: threading.Event) -> None:
            def sink(pcm: npt.NDArray[np.int16]) -> bool:
                if stop.is_set():
                    return False
                out = resampler.push(pcm)
                if len(out):
                    put(self._chunk(out))
                return True

            self._engine.synthesize(text, self.voice, self.wpm, sink)
            if not stop.is_set():
                tail = resampler.flush()
                if len(tail):
                    put(self._chunk(tail))

        return stream_from_thread(self._engine.executor, produce)

    def synthesize_all(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        """(rate, whole clip) synchronously: for filler clips at start-up and for tests."""
        resampler = StreamResampler(self._engine.sample_rate, self.sample_rate)
        parts: list[npt.NDArray[np.int16]] = []

        def sink(pcm: npt.NDArray[np.int16]) -> bool:
            parts.append(np.asarray(resampler.push(pcm), dtype=np.int16))
            return True

        self._engine.synthesize(text, self.voice, self.wpm, sink)
        parts.append(np.asarray(resampler.flush(), dtype=np.int16))
        return self.sample_rate, np.concatenate(parts)

    def _chunk(self, pcm: npt.NDArray[np.generic]) -> AudioChunk:
        data = np.asarray(pcm, dtype="<i2").tobytes()
        return AudioChunk(data=data, duration_ms=1000.0 * len(pcm) / self.sample_rate)
