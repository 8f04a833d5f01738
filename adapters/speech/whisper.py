"""Optional STT backend: faster-whisper from a LOCAL model directory, never downloaded.

Why optional: it is far more accurate on open speech than pocketsphinx but needs a model
of 75 MB to 3 GB that this project cannot fetch at run time. It is only constructed when
the config names a directory; the package is imported here, lazily, so a server without
it still starts with the default backend. Whisper has no streaming partials: the whole
utterance is decoded at `finish()`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import pcm_bytes, to_float32
from adapters.speech.errors import SpeechConfigError


class WhisperSTT:
    """Transcribes whole utterances with faster-whisper on `workers` threads."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str = "en",
        workers: int = 1,
    ) -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise SpeechConfigError(
                f"whisper_model_dir {str(path)!r} is not a directory: point it at a local "
                "faster-whisper (CTranslate2) model folder, or use stt backend 'pocketsphinx'"
            )
        try:
            import faster_whisper
        except ImportError as exc:
            raise SpeechConfigError(
                "stt backend 'whisper' needs the 'faster-whisper' package, which is not "
                "installed (pip install faster-whisper), or use stt backend 'pocketsphinx'"
            ) from exc
        try:
            self._model: Any = faster_whisper.WhisperModel(
                str(path), device=device, compute_type=compute_type, local_files_only=True
            )
        except Exception as exc:
            raise SpeechConfigError(f"cannot load a whisper model from {str(path)!r}: {exc}") from (
                exc
            )
        self._language = language
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")

    def open_utterance(self) -> WhisperUtterance:
        return WhisperUtterance(self)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def transcribe(self, pcm16k: npt.NDArray[np.int16]) -> str:
        """Text of a whole 16 kHz int16 utterance, decoded off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcribe, pcm16k)

    def _transcribe(self, pcm16k: npt.NDArray[np.int16]) -> str:
        segments, _info = self._model.transcribe(
            to_float32(pcm16k), language=self._language, beam_size=1
        )
        return " ".join(str(s.text).strip() for s in segments).strip()


class WhisperUtterance:
    """Buffers the utterance; whisper decodes it at `finish()` (no partials)."""

    def __init__(self, stt: WhisperSTT) -> None:
        self._stt = stt
        self._audio: list[npt.NDArray[np.int16]] = []

    async def feed(self, pcm16k: npt.NDArray[np.int16] | bytes) -> str | None:
        self._audio.append(np.frombuffer(pcm_bytes(pcm16k), dtype="<i2").astype(np.int16))
        return None

    async def finish(self) -> str:
        audio, self._audio = self._audio, []
        if not audio:
            return ""
        return await self._stt.transcribe(np.concatenate(audio))

    async def cancel(self) -> None:
        self._audio = []
