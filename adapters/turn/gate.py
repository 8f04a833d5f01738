"""The current state's turn policy (engine/chart/turn.py), applied to one connection's audio.

The audio handler calls `configure()` before it feeds each frame to the speech detector
and `listen()` with the detector's events while the microphone is open:

- microphone `open`: the detector's hangover (the silence that ends speech) becomes the
  state's `patience_ms` (`end: silence`), or a short check silence (`end: smart`);
- microphone `gated`: the detector's confirmation (the speech that makes a barge-in)
  becomes `barge_in.speaking_ms` while answer audio streams, `barge_in.thinking_ms`
  otherwise; unset, the detector's `barge_in_speaking_ms` while answer audio streams
  (the server's `speech.barge_in_speaking_ms`) and its `min_speech_ms` otherwise;
- `end: smart`: at the detector's end of speech the Smart Turn model (adapters/turn/
  smart.py) hears the utterance so far. Finished → the end of speech goes through.
  Not finished → it is held back: the utterance stays open (the handler keeps feeding
  it), a new onset continues it, and `patience_ms` of silence ends it anyway. Speech
  that began before the microphone opened (talk-over) was not heard from its onset, so
  the model is not asked; the server's own silence (`speech.vad_hangover_ms`) ends it.
  `ended_silence_ms` says how long the caller had been silent when a turn ended.

- `end: hybrid`: at a short check silence (160 ms) both the words heard so far (the
  speculative transcript the STT started at the first silence, passed to `listen()` as
  `heard`) and Smart Turn are asked; see `HybridDecision` for the rule. Words that
  cannot end a sentence (adapters/turn/words.py) hold the turn up to `patience_ms`
  (1500 ms unset), words that usually go on ("the meeting is on") up to 1000 ms; a
  question, or a complete transcript the model also calls finished, ends it at once; a
  complete transcript the model does not call finished ends after 240 ms (closed with
  "." or "!") or the server's own silence (`speech.vad_hangover_ms`, otherwise).

A state whose policy leaves `end` unset gets the server's `voice.end_of_turn`
(`default_end`). Unset policy keys keep the detector's own settings (the server's
`speech.vad_*`). Without the model `end: smart` is `end: silence` with the same
defaults; without early transcripts (the pocketsphinx backend) `end: hybrid` is
`end: silence`, and without the model it decides on the words alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from adapters.turn.words import final_stop, verdict
from engine.chart.turn import NO_POLICY, TurnPolicy

SAMPLE_RATE = 16_000
SMART_CHECK_MS = 200.0
"""Silence after which the model is asked (pipecat's VAD stop time for Smart Turn)."""
SMART_PATIENCE_MS = 1500.0
"""`end: smart` without `patience_ms`: the longest pause before the turn ends anyway."""
HYBRID_CHECK_MS = 160.0
"""`end: hybrid`: the silence after which the model is asked. Whisper's early decode
starts at the first silent frame and takes ~200 ms here, so the words arrive at about
this time; the model (~50 ms) runs beside that decode, not after it."""
HYBRID_PATIENCE_MS = 1500.0
"""`end: hybrid` without `patience_ms`: how long unfinished words hold the turn."""
HYBRID_UNCERTAIN_MS = 1000.0
"""`end: hybrid`: how long words that usually go on ("the meeting is on") hold the turn
(or `patience_ms`, if shorter): most mid-sentence pauses are shorter than a second (the
silence benchmark: no cut-offs at 1000 ms patience on 400-900 ms pauses)."""
HYBRID_DISAGREE_MS = 240.0
"""`end: hybrid`: the wait when complete words closed with "." or "!" and Smart Turn
disagree (or the server's silence, if shorter); see `HybridDecision` for why."""
MAX_AUDIO_SAMPLES = 8 * SAMPLE_RATE   # the model hears the last 8 s
END_MODES = ("silence", "smart", "hybrid")


class EndOfTurnModel(Protocol):
    def decide(self, pcm: npt.NDArray[Any]) -> Any:
        """An object with `probability` (float) and `complete` (bool); see smart.Decision."""
        ...


class TunableDetector(Protocol):
    hangover_ms: float
    min_speech_ms: float

    def preroll(self) -> npt.NDArray[Any]: ...


DecisionNote = Callable[[Any, bool], None]   # (decision, held) → e.g. a log line


@dataclass(frozen=True, slots=True)
class HybridDecision:
    """One `end: hybrid` decision: the words, what they say, the model's answer and the
    silence (ms) after which the turn ends.

    The rule, in order:
    1. the words cannot end a sentence (`incomplete`) → wait `patience_ms`; the model
       is not needed (a caller who stops at "my number is" has not finished, however
       final the pitch sounds);
    2. the words end where English usually goes on (`uncertain`: "the meeting is on",
       "we should turn off") → wait `HYBRID_UNCERTAIN_MS` (1000, or `patience_ms` if
       shorter); the model is not asked either: on such endings it said "finished" as
       often as not (measured, see words.py);
    3. a question ("what time is it?"), or nothing heard → end now (at the check);
    4. complete words and the model says finished → end now;
    5. complete words and the model says not finished: they disagree, so neither ends
       the turn early. Words Whisper closed with "." or "!" wait `HYBRID_DISAGREE_MS`
       (240 ms); words without a final stop, or with no model at all, the server's own
       silence (`speech.vad_hangover_ms`, 320 ms), as plain silence endpointing would.

    Why 240 ms and not "a final stop ends the turn at the check even if the model
    disagrees": measured offline on 15 paused sentences and 14 whole ones that are in
    neither bench (flite rms and slt, espeak; Whisper tiny.en's early transcript of the
    words before the pause and Smart Turn's probability at the check silence; the
    `uncertain` rule applied), the disagreement case (complete words, p ≤ 0.5) held 13 of
    the 45 first halves and 8 of the 42 whole sentences: it is mostly a caller in
    mid-sentence. Whisper's "." does not tell them apart (12 of those 13 halves had one,
    6 of the 8 whole sentences). Ending at the check would cut those 12 callers off at any
    pause of 160 ms or more; waiting 240 ms costs them only pauses of 240-320 ms (the
    silence baseline already cuts off at 320 ms) and still answers a finished caller the
    model misjudged 80 ms sooner. Without a final stop the data says nothing either way
    (4 of 45 halves, 5 of 35 whole statements), so those keep the server's silence.
    """

    words: str
    verdict: str                  # adapters/turn/words.Verdict
    probability: float | None     # the model's, None when it was not asked (or missing)
    wait_ms: float
    cpu_ms: float = 0.0
    wall_ms: float = 0.0

    @property
    def complete(self) -> bool:
        return self.verdict != "incomplete"


class TurnGate:
    """One per connection; not thread-safe (fed from the connection's task).

    `default_end` is the mode for states whose policy leaves `end` unset (the server's
    `voice.end_of_turn`); `words` says whether `listen()` will be given early
    transcripts (the STT speculates: Whisper does, pocketsphinx does not)."""

    def __init__(self, detector: Any, model: EndOfTurnModel | None = None,
                 note: DecisionNote | None = None, *, default_end: str = "silence",
                 words: bool = False) -> None:
        self.detector = detector
        self.model = model
        self.note = note
        self.default_end = default_end
        self.words = words
        self.base_hangover_ms = float(getattr(detector, "hangover_ms", 0.0))
        self.base_min_speech_ms = float(getattr(detector, "min_speech_ms", 0.0))
        self.base_speaking_ms = float(getattr(detector, "barge_in_speaking_ms",
                                              self.base_min_speech_ms))
        self.policy: TurnPolicy = NO_POLICY
        self.mode = "silence"   # what this frame's state gets: silence, smart or hybrid
        self.patience_ms = self.base_hangover_ms
        self.holding = False
        self.quiet_ms = 0.0
        self.hold_until_ms = 0.0
        self._speaking = False
        self._whole = False   # the utterance was followed from its onset (the model may judge it)
        self._audio: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self._acoustic: asyncio.Future[Any] | None = None   # hybrid: the model, running
        self._decided = True    # hybrid: the held turn's wait is known
        self.ended_silence_ms = 0.0
        """The silence before the last end of speech passed on (the detector's hangover,
        or the whole pause of a held turn): the caller stopped speaking that long ago."""

    @property
    def smart(self) -> bool:
        """`end: smart` with the model loaded (this frame's state)."""
        return self.mode == "smart"

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
                base = self.base_speaking_ms if streaming else self.base_min_speech_ms
                self._set("min_speech_ms", base if wanted is None else float(wanted))
            return
        self._set("min_speech_ms", self.base_min_speech_ms)
        end = policy.end or self.default_end
        if end == "smart" and self.model is not None:
            self.mode = "smart"
        elif end == "hybrid" and self.words:
            self.mode = "hybrid"
        else:   # silence, or a learned end whose inputs are missing
            self.mode = "silence"
        if self.mode == "silence":
            self.patience_ms = self.base_hangover_ms if policy.patience_ms is None \
                else float(policy.patience_ms)
            self._set("hangover_ms", self.patience_ms)
            return
        default, check = (SMART_PATIENCE_MS, SMART_CHECK_MS) if self.smart else \
            (HYBRID_PATIENCE_MS, HYBRID_CHECK_MS)
        self.patience_ms = default if policy.patience_ms is None else float(policy.patience_ms)
        self._set("hangover_ms", min(check, self.patience_ms))

    # while the microphone is open ---------------------------------------------------
    async def listen(self, pcm: npt.NDArray[np.int16], kinds: Sequence[str],
                     heard: str | None = None) -> list[str]:
        """The detector's events for this frame as the handler should act on them.
        `heard`: the utterance's early transcript up to the current silence, when the
        STT has one ready (None otherwise); `end: hybrid` decides with it."""
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
            return await self._while_held(pcm, out, heard)
        if "speech_end" not in out:
            return out
        self._speaking = False
        self.ended_silence_ms = float(getattr(self.detector, "quiet_ms", 0.0))
        if self.mode == "silence":
            self._forget()
            return out
        quiet = float(getattr(self.detector, "hangover_ms", SMART_CHECK_MS))
        if not self._whole:   # not heard from its onset: silence decides, as without a model
            self.hold_until_ms = min(self.patience_ms, self.base_hangover_ms)
            held = self.hold_until_ms > quiet
        elif self.mode == "hybrid":
            self._start_acoustic()
            self.hold_until_ms, self._decided = self.patience_ms, False
            self.quiet_ms = quiet
            await self._decide(heard)
            held = self.hold_until_ms > quiet
        else:
            model = self.model
            assert model is not None
            decision = await asyncio.to_thread(model.decide, self.utterance())
            self.hold_until_ms = self.patience_ms
            held = not decision.complete and self.hold_until_ms > quiet
            if self.note is not None:
                self.note(decision, held)
        if not held:
            self._forget()
            return out
        out.remove("speech_end")
        self.holding = True
        self.quiet_ms = quiet
        return out

    async def _while_held(self, pcm: npt.NDArray[np.int16], out: list[str],
                          heard: str | None) -> list[str]:
        if "speech_start" in out:   # the caller goes on: the same utterance continues
            out.remove("speech_start")
            self.holding, self._speaking = False, True
            self._acoustic, self._decided = None, True
            return out
        self.quiet_ms += 1000.0 * len(pcm) / SAMPLE_RATE
        if self.mode == "hybrid" and not self._decided:
            await self._decide(heard)
        if self.quiet_ms >= self.hold_until_ms or self.mode == "silence":
            self.ended_silence_ms = self.quiet_ms
            self._forget()
            out.append("speech_end")
        return out

    def _start_acoustic(self) -> None:
        """Ask the model about the utterance so far, off the event loop, beside the early
        decode; its answer is awaited only once the words are in and need it."""
        self._acoustic = None
        if self.model is not None:
            self._acoustic = asyncio.ensure_future(
                asyncio.to_thread(self.model.decide, self.utterance()))
            self._acoustic.add_done_callback(_retrieve)

    async def _acoustic_answer(self) -> Any:
        """The model's answer (None: no model, or it failed: the words alone decide)."""
        if self._acoustic is None:
            return None
        try:
            return await self._acoustic
        except Exception:
            return None

    async def _decide(self, heard: str | None) -> None:
        """`end: hybrid`: settle how long this pause may last, once the inputs are in
        (until then the turn is held, at most `patience_ms`). See `HybridDecision`."""
        if heard is None:
            return   # the early decode is still running
        said = verdict(heard)
        probability: float | None = None
        cpu = wall = 0.0
        middle = min(self.base_hangover_ms, self.patience_ms)
        if said == "incomplete":
            wait = self.patience_ms
        elif said == "uncertain":
            wait = min(HYBRID_UNCERTAIN_MS, self.patience_ms)
        elif said in ("question", "unknown"):
            wait = 0.0
        else:
            answer = await self._acoustic_answer()
            if answer is None:
                wait = middle   # no model: complete-looking words alone do not end early
            else:
                probability = float(answer.probability)
                cpu, wall = float(answer.cpu_ms), float(answer.wall_ms)
                disagree = min(HYBRID_DISAGREE_MS, middle) if final_stop(heard) else middle
                wait = 0.0 if answer.complete else disagree
        self._decided = True
        self.hold_until_ms = wait
        if self.note is not None:
            self.note(HybridDecision(heard, said, probability, wait, cpu, wall),
                      wait > self.quiet_ms)

    def utterance(self) -> npt.NDArray[np.int16]:
        """The current utterance's audio (its last 8 s), pre-roll included."""
        if not self._audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._audio)[-MAX_AUDIO_SAMPLES:]

    # helpers -----------------------------------------------------------------------
    def _keep(self, pcm: npt.NDArray[np.int16]) -> None:
        if self.model is None or self.mode == "silence" or len(pcm) == 0:
            return
        self._audio.append(pcm.reshape(-1))
        self._samples += len(pcm)
        while self._audio and self._samples - len(self._audio[0]) >= MAX_AUDIO_SAMPLES:
            self._samples -= len(self._audio.pop(0))

    def _forget(self) -> None:
        self.holding = self._speaking = self._whole = False
        self.quiet_ms = 0.0
        self._audio, self._samples = [], 0
        self._acoustic, self._decided = None, True

    def _set(self, name: str, value: float) -> None:
        if hasattr(self.detector, name):
            setattr(self.detector, name, value)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Consume an abandoned decision's outcome (the caller spoke on before it was read)."""
    if not future.cancelled():
        future.exception()
