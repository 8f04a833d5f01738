"""False cut-offs and end-of-turn delay: `end: silence` against `end: smart`.

    python -m benchmarks.turn_cutoffs [--takes 3]

Drives the real endpointing (silero VAD through SpeechDetector, the TurnGate, Smart
Turn v3.2 when installed) with synthetic speech (espeak): sentences with a pause where a
caller stops to think ("my number is five five five ... one two three four"), and whole
sentences. A paused sentence is spoken whole with a comma at the pause (so the words
before it carry the intonation of an unfinished sentence, not of a finished fragment),
and espeak's short comma gap is widened to 400, 600 or 900 ms of room noise. Counts

- false cut-offs: a pause that ended the turn (the rest would be a second turn);
- end-of-turn delay: end of the caller's speech → the turn ends, on whole sentences:
  audio time (silence waited) plus the model's own compute (wall time per decision).

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
from adapters.turn import smart
from adapters.turn.gate import TurnGate
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
    whole = speech(f"{first}, {second}")
    guess = len(speech(first))
    energy = np.array([np.sqrt(np.mean(whole[i:i + 160].astype(np.float64) ** 2))
                       for i in range(0, len(whole) - 160, 160)])
    quiet = energy < max(50.0, 0.02 * float(energy.max()))
    best_len, best_end, run = 0, 0, 0
    for i in range(int(guess * 0.6 / 160), min(len(energy), int(guess * 1.3 / 160))):
        run = run + 1 if quiet[i] else 0
        if run > best_len:
            best_len, best_end = run, i
    start = best_end - best_len + 1
    return whole[:start * 160], whole[(best_end + 1) * 160:]
MODES = {"silence (server default, 320 ms)": TurnPolicy(end="silence"),
         "silence, patience 1000 ms": TurnPolicy(end="silence", patience_ms=1000),
         "smart (patience 1500 ms)": TurnPolicy(end="smart")}


@dataclass
class Tally:
    pauses: int = 0
    cut: int = 0
    delays_ms: list[float] = field(default_factory=list)
    decisions: int = 0


async def run(gate: TurnGate, detector: SpeechDetector, policy: TurnPolicy,
              pcm: np.ndarray[Any, Any]) -> list[float]:
    """Audio times (ms) at which the gate ended a turn."""
    detector.reset()
    ends: list[float] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(policy, OPEN)
        kinds = [e.kind for e in detector.feed(frame)]
        if "speech_end" in await gate.listen(frame, kinds):
            ends.append((at + len(frame)) / 16.0)
    return ends


async def measure(takes: int) -> dict[str, Tally]:
    factory = SileroVadFactory(preload=1)
    model = smart.load()
    results: dict[str, Tally] = {}
    walls: list[float] = []
    for name, policy in MODES.items():
        tally = Tally()
        detector = SpeechDetector(factory)

        def note(decision: Any, held: bool, tally: Tally = tally) -> None:
            tally.decisions += 1
            walls.append(decision.wall_ms)

        gate = TurnGate(detector, model, note)
        for take in range(takes):
            for first, second in SPLIT:
                for pause in PAUSES_MS:
                    a, b = paused(first, second)
                    pcm = np.concatenate([noise(300, seed=take), a, noise(pause, seed=take + 1),
                                          b, noise(2500, seed=take + 2)])
                    pause_from, pause_to = (300 + len(a) / 16), (300 + len(a) / 16 + pause)
                    ends = await run(gate, detector, policy, pcm)
                    tally.pauses += 1
                    tally.cut += any(pause_from <= t <= pause_to + 150 for t in ends)
            for text in WHOLE:
                said = speech(text)
                pcm = np.concatenate([noise(300, seed=take), said, noise(2500, seed=take + 3)])
                before = len(walls)
                ends = await run(gate, detector, policy, pcm)
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
