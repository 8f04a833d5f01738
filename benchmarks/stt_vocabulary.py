"""Whisper with and without the domain vocabulary, offline, on the same audio.

    python -m benchmarks.stt_vocabulary

Why: the vocabulary (the responder's knowledge questions, `WhisperSTT(vocabulary=...)`)
must fix the product's own words without changing anything else. Corpora: the caller
bench's 8 questions in its caller voice (`caller_bench.Voice`: flite `rms`), each also
re-cut 3 ways (another noise floor, 7 samples later, only 30 ms of trailing room, as a
speculative decode sees it); its backchannels and a few short words; its non-speech
(coughs, noise, a tone; 3 seeds each) plus silence and room noise; the speech bench's 20
ordinary sentences (flite slt) and the same sentences in the caller voice. Prints JSON:
words wrong / words per corpus, what was heard where it differs, and the decode time
(both recognisers interleaved on the question clips, so load hits both alike).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.responder.knowledge import Knowledge
from adapters.speech.audio import resample
from adapters.speech.flite import FliteTTS
from adapters.speech.whisper import WhisperSTT
from benchmarks import caller_bench as cb
from benchmarks.common import machine
from benchmarks.speech_bench import SENTENCES, word_errors
from benchmarks.speech_bench import _clip as bench_clip

Clip = tuple[str, str, npt.NDArray[np.int16]]   # corpus, words said, 16 kHz audio


def _to16(clip: cb.Clip) -> npt.NDArray[np.int16]:
    return resample(clip.pcm, cb.RATE, 16_000).astype(np.int16)


def corpora(workdir: Path) -> list[Clip]:
    voice, rng = cb.Voice(workdir), np.random.default_rng(11)
    clips: list[Clip] = []
    for text in cb.QUESTIONS:
        sound = voice.say(text)
        clips.append(("questions", text, _to16(cb._clip(text, "q", text, sound, rng))))
        for cut in range(3):
            pcm = _to16(cb._clip(text, "q", text, sound[cut * 7:],
                                 np.random.default_rng(100 + cut)))
            clips.append(("questions re-cut", text, pcm[: len(pcm) - 16 * 170]
                          if cut == 1 else pcm))
    for text in [*cb.BACKCHANNELS, "stop", "hold on", "yes", "no"]:
        clips.append(("short", text, _to16(cb._clip(text, "s", text, voice.say(text), rng))))
    for name in cb.NON_SPEECH:
        for seed in range(3):
            sound = cb.non_speech(name, np.random.default_rng(seed))
            clips.append(("non-speech", "", _to16(cb._clip(name, "n", "", sound, rng))))
    clips.append(("non-speech", "", np.zeros(16_000, dtype=np.int16)))
    clips.append(("non-speech", "",
                  np.random.default_rng(3).normal(0, 30, 16_000).astype(np.int16)))
    slt = FliteTTS(output_rate=16_000)
    for seed, text in enumerate(SENTENCES):
        clips.append(("ordinary, slt", text, bench_clip(slt.synthesize_all(text)[1], 16_000,
                                                        seed)))
    for text in SENTENCES:
        clips.append(("ordinary, caller voice", text,
                      _to16(cb._clip(text, "o", text, voice.say(text), rng))))
    return clips


def _score(stt: WhisperSTT, clips: list[Clip]) -> dict[str, Any]:
    totals: dict[str, list[int]] = {}
    heard: list[tuple[str, str, str]] = []
    for corpus, said, pcm in clips:
        text = stt.transcribe_now(pcm)
        wrong, words = word_errors(said, text) if said else (len(text.split()), 0)
        total = totals.setdefault(corpus, [0, 0])
        total[0] += wrong
        total[1] += words
        heard.append((corpus, said, text))
    return {"words_wrong": {k: f"{v[0]}/{v[1]}" for k, v in totals.items()}, "heard": heard}


def run(threads: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stt-vocabulary-") as tmp:
        clips = corpora(Path(tmp))
    load_before = os.getloadavg()[0]
    plain = WhisperSTT(threads=threads)
    biased = WhisperSTT(threads=threads, vocabulary=Knowledge.default().questions())
    try:
        plain.transcribe_now(clips[0][2])
        biased.transcribe_now(clips[0][2])
        times: dict[str, list[float]] = {"without": [], "with": []}
        questions = [pcm for corpus, _, pcm in clips if corpus == "questions"]
        for rep in range(3):
            for pcm in questions:
                pair = ((plain, "without"), (biased, "with"))
                for stt, name in pair if rep % 2 == 0 else pair[::-1]:
                    started = time.perf_counter()
                    stt.transcribe_now(pcm)
                    times[name].append(1000 * (time.perf_counter() - started))
        without, with_ = _score(plain, clips), _score(biased, clips)
    finally:
        plain.close()
        biased.close()
    differs = [{"corpus": a[0], "said": a[1], "without": a[2], "with": b[2]}
               for a, b in zip(without.pop("heard"), with_.pop("heard"), strict=True)
               if a[2] != b[2]]
    return {"benchmark": "stt_vocabulary", "machine": machine(),
            "load_average_1m": {"before": round(load_before, 2),
                                "after": round(os.getloadavg()[0], 2)},
            "vocabulary": biased.vocabulary.text, "key_words": sorted(biased.vocabulary.key_words),
            "without": without, "with": with_, "heard_differently": differs,
            "decode_ms_p50": {k: round(statistics.median(v), 1) for k, v in times.items()}}


if __name__ == "__main__":
    json.dump(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2), sys.stdout, indent=2)
    print()
