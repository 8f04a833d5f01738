"""False cut-offs and end-of-turn delay: `end: silence` against `smart` and `hybrid`.

    python -m benchmarks.turn_cutoffs [--takes 3]

Drives the real endpointing (silero VAD through SpeechDetector, the TurnGate, Smart
Turn v3.2 when installed, and for `end: hybrid` Whisper tiny.en's early decode, run in
audio time by `EarlyWords`) with synthetic speech (espeak): sentences with a pause where a
caller stops to think ("my number is five five five ... one two three four"), and whole
sentences. A paused sentence is spoken whole with a comma at the pause (so the words
before it carry the intonation of an unfinished sentence, not of a finished fragment),
and espeak's short comma gap is widened to 400, 600 or 900 ms of room noise. Counts

- false cut-offs: a pause that ended the turn (the rest would be a second turn);
- end-of-turn delay: end of the caller's speech → the turn ends, on whole sentences:
  audio time (silence waited) plus the model's own compute (wall time per decision;
  for hybrid the early decode's wall time is in the audio time: its words count only
  once that much audio has passed).

Audio is fed faster than real time; the figures are in audio time, compute added.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.speech.samples import noise, speech
from adapters.speech.silero import SileroVadFactory
from adapters.speech.vad import SpeechDetector
from adapters.speech.whisper import WhisperSTT
from adapters.turn import smart
from adapters.turn.gate import TurnGate
from benchmarks.paused_speech import split_at_pause
from engine.chart.turn import TurnPolicy

FRAME = 320
OPEN = {"microphone": "open", "playback": "stopped"}
SPLIT = [
    ("my number is five five five", "one two three four."),
    ("I would like to book a table for", "two people tonight."),
    ("the address is twelve", "Baker Street, London."),
    ("I was thinking that maybe", "we could go tomorrow."),
    ("can you tell me", "what time it is?"),
    ("so the thing is", "my flight was cancelled."),
]
WHOLE = ["What time is it?", "Tell me a story.", "Thank you very much.",
         "I would like to book a table for two tonight.", "My flight was cancelled.",
         "Can you call me back tomorrow morning?"]
PAUSES_MS = (400, 600, 900)


def paused(first: str, second: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """`first, second` spoken as one sentence, cut at the comma's gap: (before, after)."""
    return split_at_pause(speech(f"{first}, {second}"), len(speech(first)), 16_000)


MODES = {"silence (320 ms, the baseline)": TurnPolicy(end="silence"),
         "silence, patience 1000 ms": TurnPolicy(end="silence", patience_ms=1000),
         "smart (patience 1500 ms)": TurnPolicy(end="smart"),
         "hybrid (shipped default)": TurnPolicy(end="hybrid")}


class EarlyWords:
    """Whisper's speculative decode as the live path runs it (adapters/speech/whisper.py),
    in audio time: at the first silent frame the utterance so far is decoded; its text
    is there once as much audio has passed as the decode took in wall time, and speech
    that resumes makes it stale until the next silence. `instant`: the text is there at
    the frame the decode started (tests: decisions in audio time only, whatever the load)."""

    def __init__(self, stt: Any, *, instant: bool = False) -> None:
        self.stt = stt
        self.instant = instant
        self.start = 0          # sample where the utterance began (pre-roll included)
        self.ready_at = 0.0     # audio ms when the current decode's text is in
        self.text: str | None = None
        self.decode_ms: list[float] = []

    def heard(self, now_ms: float) -> str | None:
        return self.text if self.text is not None and now_ms >= self.ready_at else None

    def after(self, pcm: np.ndarray[Any, Any], end: int, kinds: list[str],
              detector: SpeechDetector, preroll: int) -> None:
        """Follow the handler: a new utterance at speech_start, a decode at the first
        silence, nothing left after the turn ends."""
        if "speech_end" in kinds:
            self.text = None
            return
        if "speech_start" in kinds:   # a new utterance (a continued one keeps its start)
            self.start = max(0, end - preroll)
        if detector.speaking and detector.quiet_ms == 0:
            self.text = None   # speech goes on: any early text is stale
        elif detector.quiet_ms > 0 and self.text is None:
            started = time.perf_counter()
            self.text = self.stt.transcribe_now(pcm[self.start:end])
            wall = 1000.0 * (time.perf_counter() - started)
            self.decode_ms.append(wall)
            self.ready_at = end / 16.0 + (0.0 if self.instant else wall)


@dataclass
class Tally:
    pauses: int = 0
    cut: int = 0
    delays_ms: list[float] = field(default_factory=list)
    decisions: int = 0


async def run(gate: TurnGate, detector: SpeechDetector, policy: TurnPolicy,
              pcm: np.ndarray[Any, Any], words: EarlyWords | None = None) -> list[float]:
    """Audio times (ms) at which the gate ended a turn."""
    detector.reset()
    if words is not None:
        words.text = None
    ends: list[float] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        now = (at + len(frame)) / 16.0
        gate.configure(policy, OPEN)
        kinds = [e.kind for e in detector.feed(frame)]
        out = await gate.listen(frame, kinds, None if words is None else words.heard(now))
        if words is not None:
            words.after(pcm, at + len(frame), out, detector, len(detector.preroll()))
        if "speech_end" in out:
            ends.append(now)
    return ends


async def measure(takes: int) -> dict[str, Tally]:
    factory = SileroVadFactory(preload=1)
    model = smart.load()
    stt = WhisperSTT(threads=2)
    results: dict[str, Tally] = {}
    walls: list[float] = []
    for name, policy in MODES.items():
        tally = Tally()
        detector = SpeechDetector(factory)

        def note(decision: Any, held: bool, tally: Tally = tally) -> None:
            tally.decisions += 1
            walls.append(decision.wall_ms)

        gate = TurnGate(detector, model, note, words=True)
        words = EarlyWords(stt) if policy.end == "hybrid" else None
        for take in range(takes):
            for first, second in SPLIT:
                for pause in PAUSES_MS:
                    a, b = paused(first, second)
                    pcm = np.concatenate([noise(300, seed=take), a, noise(pause, seed=take + 1),
                                          b, noise(2500, seed=take + 2)])
                    pause_from, pause_to = (300 + len(a) / 16), (300 + len(a) / 16 + pause)
                    ends = await run(gate, detector, policy, pcm, words)
                    tally.pauses += 1
                    tally.cut += any(pause_from <= t <= pause_to + 150 for t in ends)
            for text in WHOLE:
                said = speech(text)
                pcm = np.concatenate([noise(300, seed=take), said, noise(2500, seed=take + 3)])
                before = len(walls)
                ends = await run(gate, detector, policy, pcm, words)
                if ends:
                    compute = sum(walls[before:])
                    tally.delays_ms.append(ends[0] - (300 + len(said) / 16) + compute)
        detector.close()
        results[name] = tally
    factory.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--takes", type=int, default=2)
    args = parser.parse_args()
    if smart.load() is None:
        print(f"(no Smart Turn model: {smart.unavailable_reason()}; smart = silence)")
    started = time.perf_counter()
    results = asyncio.run(measure(args.takes))
    print(f"{'mode':36} {'false cut-offs':>16} {'end delay p50':>14} {'p95':>8}")
    for name, t in results.items():
        p50 = np.percentile(t.delays_ms, 50) if t.delays_ms else float("nan")
        p95 = np.percentile(t.delays_ms, 95) if t.delays_ms else float("nan")
        print(f"{name:36} {t.cut:>5}/{t.pauses:<3} {100 * t.cut / t.pauses:5.1f}% "
              f"{p50:11.0f} ms {p95:5.0f} ms")
    print(f"({len(SPLIT)} paused sentences × pauses {', '.join(map(str, PAUSES_MS))} ms, "
          f"{len(WHOLE)} whole ones, {args.takes} takes; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
