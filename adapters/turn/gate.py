"""The current state's turn policy (engine/chart/turn.py), applied to one connection's audio.

The audio handler calls `configure()` before it feeds each frame to the speech detector
and `listen()` with the detector's events while the microphone is open:

- microphone `open`: the detector's hangover (the silence that ends speech) becomes the
  state's `patience_ms` (`end: silence`), or a short check silence (`end: smart`);
- microphone `gated`: the detector's confirmation (the speech that makes a barge-in)
  becomes `barge_in.speaking_ms` while answer audio streams, `barge_in.thinking_ms`
  otherwise;
- `end: smart`: at the detector's end of speech the Smart Turn model (adapters/turn/
  smart.py) hears the utterance so far. Finished → the end of speech goes through.
  Not finished → it is held back: the utterance stays open (the handler keeps feeding
  it), a new onset continues it, and `patience_ms` of silence ends it anyway. Speech
  that began before the microphone opened (talk-over) was not heard from its onset, so
  the model is not asked; the server's own silence (`speech.vad_hangover_ms`) ends it.
  `ended_silence_ms` says how long the caller had been silent when a turn ended.

Unset policy keys keep the detector's own settings (the server's `speech.vad_*`).
Without the model `end: smart` is `end: silence` with the same defaults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.chart.turn import NO_POLICY, TurnPolicy

SAMPLE_RATE = 16_000
SMART_CHECK_MS = 200.0
"""Silence after which the model is asked (pipecat's VAD stop time for Smart Turn)."""
SMART_PATIENCE_MS = 1500.0
"""`end: smart` without `patience_ms`: the longest pause before the turn ends anyway."""
MAX_AUDIO_SAMPLES = 8 * SAMPLE_RATE   # the model hears the last 8 s


class EndOfTurnModel(Protocol):
    def decide(self, pcm: npt.NDArray[Any]) -> Any:
        """An object with `probability` (float) and `complete` (bool); see smart.Decision."""
        ...


class TunableDetector(Protocol):
    hangover_ms: float
    min_speech_ms: float

    def preroll(self) -> npt.NDArray[Any]: ...


DecisionNote = Callable[[Any, bool], None]   # (decision, held) → e.g. a log line


class TurnGate:
    """One per connection; not thread-safe (fed from the connection's task)."""

    def __init__(self, detector: Any, model: EndOfTurnModel | None = None,
                 note: DecisionNote | None = None) -> None:
        self.detector = detector
        self.model = model
        self.note = note
        self.base_hangover_ms = float(getattr(detector, "hangover_ms", 0.0))
        self.base_min_speech_ms = float(getattr(detector, "min_speech_ms", 0.0))
        self.policy: TurnPolicy = NO_POLICY
        self.smart = False
        self.patience_ms = self.base_hangover_ms
        self.holding = False
        self.quiet_ms = 0.0
        self.hold_until_ms = 0.0
        self._speaking = False
        self._whole = False   # the utterance was followed from its onset (the model may judge it)
        self._audio: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self.ended_silence_ms = 0.0
        """The silence before the last end of speech passed on (the detector's hangover,
        or the whole pause of a held turn): the caller stopped speaking that long ago."""

    # before each frame -------------------------------------------------------------
    def configure(self, policy: TurnPolicy, contract: Mapping[str, str]) -> None:
        """Set the detector for this frame from the state's policy and contract."""
        self.policy = policy
        mic = contract.get("microphone", "closed")
        if mic != "open":
            self._forget()
            self._set("hangover_ms", self.base_hangover_ms)
            if mic == "gated":
                streaming = contract.get("playback") == "streaming"
                wanted = policy.barge_in_speaking_ms if streaming else \
                    policy.barge_in_thinking_ms
                self._set("min_speech_ms", self.base_min_speech_ms if wanted is None
                          else float(wanted))
            return
        self._set("min_speech_ms", self.base_min_speech_ms)
        self.smart = policy.end == "smart" and self.model is not None
        if self.smart:
            self.patience_ms = SMART_PATIENCE_MS if policy.patience_ms is None \
                else float(policy.patience_ms)
            self._set("hangover_ms", min(SMART_CHECK_MS, self.patience_ms))
        else:
            self.patience_ms = self.base_hangover_ms if policy.patience_ms is None \
                else float(policy.patience_ms)
            self._set("hangover_ms", self.patience_ms)

    # while the microphone is open ---------------------------------------------------
    async def listen(self, pcm: npt.NDArray[np.int16], kinds: Sequence[str]) -> list[str]:
        """The detector's events for this frame as the handler should act on them."""
        out = list(kinds)
        if "speech_start" in out and not self._speaking and not self.holding:
            self._speaking = self._whole = True
            self._audio, self._samples = [], 0
            self._keep(np.asarray(self.detector.preroll(), dtype=np.int16))
        elif self._speaking or self.holding:
            self._keep(pcm)
        elif getattr(self.detector, "speaking", False):
            # speech that began before the microphone opened (talk-over): its start is
            # not here, so the model is not asked about it; silence ends it
            self._speaking, self._whole = True, False
        if self.holding:
            return self._while_held(pcm, out)
        if "speech_end" not in out:
            return out
        self._speaking = False
        self.ended_silence_ms = float(getattr(self.detector, "quiet_ms", 0.0))
        model = self.model
        if not self.smart or model is None:
            self._forget()
            return out
        quiet = float(getattr(self.detector, "hangover_ms", SMART_CHECK_MS))
        if self._whole:
            decision = await asyncio.to_thread(model.decide, self.utterance())
            self.hold_until_ms = self.patience_ms
            held = not decision.complete and self.hold_until_ms > quiet
            if self.note is not None:
                self.note(decision, held)
        else:   # not heard from its onset: silence decides, as without the model
            self.hold_until_ms = min(self.patience_ms, self.base_hangover_ms)
            held = self.hold_until_ms > quiet
        if not held:
            self._forget()
            return out
        out.remove("speech_end")
        self.holding = True
        self.quiet_ms = quiet
        return out

    def _while_held(self, pcm: npt.NDArray[np.int16], out: list[str]) -> list[str]:
        if "speech_start" in out:   # the caller goes on: the same utterance continues
            out.remove("speech_start")
            self.holding, self._speaking = False, True
            return out
        self.quiet_ms += 1000.0 * len(pcm) / SAMPLE_RATE
        if self.quiet_ms >= self.hold_until_ms or not self.smart:
            self.ended_silence_ms = self.quiet_ms
            self._forget()
            out.append("speech_end")
        return out

    def utterance(self) -> npt.NDArray[np.int16]:
        """The current utterance's audio (its last 8 s), pre-roll included."""
        if not self._audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._audio)[-MAX_AUDIO_SAMPLES:]

    # helpers -----------------------------------------------------------------------
    def _keep(self, pcm: npt.NDArray[np.int16]) -> None:
        if not self.smart or len(pcm) == 0:
            return
        self._audio.append(pcm.reshape(-1))
        self._samples += len(pcm)
        while self._audio and self._samples - len(self._audio[0]) >= MAX_AUDIO_SAMPLES:
            self._samples -= len(self._audio.pop(0))

    def _forget(self) -> None:
        self.holding = self._speaking = self._whole = False
        self.quiet_ms = 0.0
        self._audio, self._samples = [], 0

    def _set(self, name: str, value: float) -> None:
        if hasattr(self.detector, name):
            setattr(self.detector, name, value)
