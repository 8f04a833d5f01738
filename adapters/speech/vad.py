"""Per-stream speech onset/offset detection: what opens a turn and what triggers barge-in.

A raw VAD probability flickers: it drops to 0-0.2 for single windows inside words (stop
consonants, gaps between words) and a cough can look like speech for a window or two. So
the detector adds hysteresis (start at `onset_threshold`, stay in speech while above the
lower `offset_threshold`), a hangover (`speech_end` only after `hangover_ms` below it) and a
confirmation (`speech_confirmed` once `min_speech_ms` of speech has accumulated; barge-in
waits for it, so a short noise never stops the assistant). A pre-roll of audio before the
onset is kept so STT hears the start of the first word.

Models come from a factory (default: `SileroVadFactory.shared()`, see `silero.py` for the
measured costs: 37-41 MB and 65-110 ms for the first silero instance, 9-10 MB and
40-75 ms for each further one); each detector holds one model. Feeding 20 ms frames
costs about 0.11 ms of CPU per frame (0.17 ms per 32 ms window, silero included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import to_float32

SAMPLE_RATE = 16000
VadEventKind = Literal["speech_start", "speech_end", "speech_confirmed"]


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A change in the stream; `t_ms` is the stream position where it was decided."""

    kind: VadEventKind
    t_ms: float


class VadModel(Protocol):
    """One stream's speech-probability model, fed fixed windows of 16 kHz float32."""

    window_samples: int

    def probability(self, window: npt.NDArray[np.float32]) -> float: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


VadModelFactory = Callable[[], VadModel]


class SpeechDetector:
    """Turns 16 kHz int16 frames of any length into speech_start/confirmed/end events.

    Not thread-safe: one detector per stream, fed from one task. Times are in ms of audio
    fed since creation or `reset()`, measured at the end of the window that decided.
    """

    _speaking: bool
    _confirmed: bool
    _speech_ms: float
    _quiet_ms: float
    _voiced_ms: float
    _fed: int  # samples fed
    _windowed: int  # samples consumed by complete windows
    _history: npt.NDArray[np.int16]  # recent audio: unwindowed tail plus pre-roll
    _history_start: int  # stream index of _history[0]
    _preroll: npt.NDArray[np.int16]

    def __init__(
        self,
        model_factory: VadModelFactory,
        *,
        onset_threshold: float = 0.5,
        offset_threshold: float = 0.35,
        min_speech_ms: float = 200,
        hangover_ms: float = 320,
        preroll_ms: float = 160,
        barge_in_speaking_ms: float | None = None,
    ) -> None:
        if not 0.0 < offset_threshold <= onset_threshold <= 1.0:
            raise ValueError(
                "need 0 < offset_threshold <= onset_threshold <= 1, got "
                f"{offset_threshold} and {onset_threshold}"
            )
        speaking_ms = min_speech_ms if barge_in_speaking_ms is None else barge_in_speaking_ms
        if min(min_speech_ms, hangover_ms, preroll_ms, speaking_ms) < 0:
            raise ValueError("min_speech_ms, hangover_ms, preroll_ms and "
                             "barge_in_speaking_ms must be >= 0")
        self.onset_threshold = onset_threshold
        self.offset_threshold = offset_threshold
        self.min_speech_ms = min_speech_ms
        self.barge_in_speaking_ms = speaking_ms
        """Not used here: the `min_speech_ms` the turn gate (adapters/turn/gate.py) sets
        while answer audio streams and the state's policy leaves `barge_in.speaking_ms`
        unset (default: `min_speech_ms`)."""
        self.hangover_ms = hangover_ms
        self._preroll_samples = round(preroll_ms * SAMPLE_RATE / 1000)
        self._model = model_factory()
        self._window = self._model.window_samples
        self._window_ms = 1000.0 * self._window / SAMPLE_RATE
        self._clear()

    @property
    def speaking(self) -> bool:
        """True from speech_start until speech_end."""
        return self._speaking

    @property
    def confirmed(self) -> bool:
        """True once the current speech has lasted min_speech_ms."""
        return self._confirmed

    @property
    def quiet_ms(self) -> float:
        """The current run of silence inside speech (0 while speech goes on); after
        `speech_end`, the silence that ended it (so speech stopped that long before)."""
        return self._quiet_ms

    @property
    def voiced_ms(self) -> float:
        """The current run of speech windows (0 after a window below `offset_threshold`):
        whether the caller is voicing now, unlike `speaking`, which stays true through the
        hangover after the sound stopped (the end of a cough)."""
        return self._voiced_ms

    @property
    def stream_ms(self) -> float:
        """Milliseconds of audio fed since creation or the last reset."""
        return 1000.0 * self._fed / SAMPLE_RATE

    def feed(self, frame: npt.NDArray[np.int16] | bytes) -> list[VadEvent]:
        """Add a frame (int16 samples or little-endian bytes); return the events it caused."""
        pcm = np.frombuffer(frame, dtype="<i2") if isinstance(frame, bytes) else np.asarray(frame)
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise TypeError(f"expected 1-D int16 PCM at 16 kHz, got {pcm.dtype} {pcm.shape}")
        self._history = np.concatenate([self._history, pcm.astype(np.int16)])
        self._fed += len(pcm)
        events: list[VadEvent] = []
        onset_at: int | None = None
        while self._windowed + self._window <= self._fed:
            start = self._windowed - self._history_start
            window = to_float32(self._history[start : start + self._window])
            self._windowed += self._window
            event = self._step(self._model.probability(window))
            for kind in event:
                events.append(VadEvent(kind, 1000.0 * self._windowed / SAMPLE_RATE))
                if kind == "speech_start":
                    onset_at = self._windowed - self._window
        if onset_at is not None:
            keep = max(onset_at - self._preroll_samples, self._history_start) - self._history_start
            self._preroll = self._history[keep:].copy()
        self._trim_history()
        return events

    def preroll(self) -> npt.NDArray[np.int16]:
        """Audio from `preroll_ms` before the last onset window to the end of the frame that
        started speech: give STT this instead of that frame, then the frames after it."""
        return self._preroll

    def reset(self) -> None:
        """Start a new, unrelated stream (model state, buffers and clock)."""
        self._model.reset()
        self._clear()

    def close(self) -> None:
        """Give the model back to its factory; the detector is unusable afterwards."""
        self._model.close()

    def _step(self, p: float) -> tuple[VadEventKind, ...]:
        """Advance the hysteresis/hangover state machine by one window."""
        if not self._speaking:
            if p < self.onset_threshold:
                return ()
            self._speaking, self._confirmed = True, False
            self._speech_ms, self._quiet_ms = self._window_ms, 0.0
            self._voiced_ms = self._window_ms
            if self._speech_ms >= self.min_speech_ms:
                self._confirmed = True
                return ("speech_start", "speech_confirmed")
            return ("speech_start",)
        if p >= self.offset_threshold:
            self._speech_ms += self._window_ms
            self._voiced_ms += self._window_ms
            self._quiet_ms = 0.0
            if not self._confirmed and self._speech_ms >= self.min_speech_ms:
                self._confirmed = True
                return ("speech_confirmed",)
            return ()
        self._quiet_ms += self._window_ms
        self._voiced_ms = 0.0
        if self._quiet_ms >= self.hangover_ms:
            self._speaking = self._confirmed = False
            return ("speech_end",)
        return ()

    def _trim_history(self) -> None:
        """Keep the unwindowed tail plus enough audio for a future onset's pre-roll."""
        keep_from = max(self._history_start, self._windowed - self._preroll_samples)
        drop = keep_from - self._history_start
        if drop > 0:
            self._history = self._history[drop:]
            self._history_start = keep_from

    def _clear(self) -> None:
        self._speaking = False
        self._confirmed = False
        self._speech_ms = 0.0
        self._quiet_ms = 0.0
        self._voiced_ms = 0.0
        self._fed = 0
        self._windowed = 0
        self._history = np.zeros(0, dtype=np.int16)
        self._history_start = 0
        self._preroll = np.zeros(0, dtype=np.int16)
