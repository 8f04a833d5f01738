"""Recognition and voice figures for the offline speech defaults (issue 14).

For 20 ordinary sentences (none of them a phrase of the builtin responder), each voice
(flite slt, the default; eSpeak NG, the fallback) says the sentence at 16 kHz over quiet
room noise, and each recogniser transcribes it:

- Whisper tiny.en (faster-whisper, int8, `threads` decode threads): the default;
- pocketsphinx's open-vocabulary language model (the light backend's fallback decoder).

Reported: word error rate (words compared after the responder's normalisation, numbers
spelled), decode time per utterance (wall p50/p95, per second of audio, and the CPU time
of the process: on a shared machine wall time grows with the load, CPU time does not),
the load average when it ran, and each voice's time to first audio for a one-sentence
and a three-sentence answer.
Run: `python -m benchmarks.speech_bench` (JSON on stdout; about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.responder.text import normalise
from adapters.speech.audio import resample
from adapters.speech.distance import edit_distance
from adapters.speech.flite import FliteTTS
from adapters.speech.samples import noise
from adapters.speech.stt import PocketsphinxSTT
from adapters.speech.tts import EspeakTTS
from adapters.speech.whisper import WhisperSTT
from benchmarks.common import machine
from engine.runtime.latency import percentile

SENTENCES = (
    "I am planning a trip to Paris next week.",
    "Can you book a table for two at seven tonight?",
    "My train was cancelled this morning.",
    "Please send the report to my manager.",
    "The weather looks better than yesterday.",
    "How long does it take to drive to the airport?",
    "I would like to change my delivery address.",
    "Remind me to call my sister on Sunday.",
    "The meeting has been moved to Thursday afternoon.",
    "Turn off the lights in the kitchen.",
    "What is the best way to learn a new language?",
    "My order number is four five six.",
    "The children are playing in the garden.",
    "Could you read me the latest news?",
    "I left my keys at the office.",
    "We need more milk and some bread.",
    "Tell me a joke about computers.",
    "The battery on my phone is almost empty.",
    "Is the museum open on Monday?",
    "Thank you for your help today.",
)
ANSWERS = ("It is ten past three.",
           "A small robot wanted to hear the sea. It rolled to the beach every night. "
           "One morning it answered the waves with a song of its own.")


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, words in the reference), after normalisation."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def _clip(pcm: npt.NDArray[np.int16], rate: int, seed: int) -> npt.NDArray[np.int16]:
    voice = resample(pcm, rate, 16000).astype(np.int32)
    clip = noise(300 + 1000 * len(voice) / 16000 + 400, seed=seed).astype(np.int32)
    start = 16 * 300
    clip[start:start + len(voice)] += voice
    return np.clip(clip, -32768, 32767).astype(np.int16)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(percentile(ordered, 50), 1), "p95": round(percentile(ordered, 95), 1),
            "max": round(ordered[-1], 1)}


async def _first_audio_ms(tts: Any, text: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        stream = tts.synthesize(text)
        await stream.__anext__()
        best = min(best, 1000 * (time.perf_counter() - started))
        await stream.aclose()
    return round(best, 1)


def _recognise(name: str, transcribe: Any, clips: list[tuple[str, npt.NDArray[np.int16]]]
               ) -> dict[str, Any]:
    errors = words = 0
    times: list[float] = []
    cpu: list[float] = []
    per_second: list[float] = []
    worst: list[tuple[str, str]] = []
    for reference, clip in clips:
        started, cpu_started = time.perf_counter(), time.process_time()
        heard = transcribe(clip)
        elapsed = 1000 * (time.perf_counter() - started)
        cpu.append(1000 * (time.process_time() - cpu_started))
        times.append(elapsed)
        per_second.append(elapsed / (len(clip) / 16000))
        e, n = word_errors(reference, heard)
        errors, words = errors + e, words + n
        if e:
            worst.append((reference, heard))
    return {"recogniser": name, "wer_percent": round(100 * errors / words, 1),
            "word_errors": errors, "words": words, "decode_ms": _summary(times),
            "decode_cpu_ms": _summary(cpu),
            "decode_ms_per_audio_second": _summary(per_second), "misheard": worst[:5]}


def run(threads: int = 2) -> dict[str, Any]:
    voices: dict[str, FliteTTS | EspeakTTS] = {
        "flite slt": FliteTTS(output_rate=16000), "espeak-ng en-us": EspeakTTS(output_rate=16000)}
    whisper = WhisperSTT(threads=threads)
    sphinx = PocketsphinxSTT([], pool_size=1, lm_fallback=True)
    sphinx_lm = sphinx._fallback
    assert sphinx_lm is not None
    from adapters.speech.stt import _decode_whole

    def sphinx_open(clip: npt.NDArray[np.int16]) -> str:
        return _decode_whole(sphinx_lm.decoder, [clip.tobytes()])

    results: list[dict[str, Any]] = []
    first_audio: dict[str, dict[str, float]] = {}
    try:
        whisper.transcribe_now(_clip(voices["flite slt"].synthesize_all("Warm up.")[1], 16000, 0))
        for voice_name, tts in voices.items():
            clips = [(s, _clip(tts.synthesize_all(s)[1], 16000, seed))
                     for seed, s in enumerate(SENTENCES)]
            for name, fn in ((f"whisper tiny.en ({threads} threads)", whisper.transcribe_now),
                             ("pocketsphinx open vocabulary", sphinx_open)):
                results.append({"voice": voice_name, **_recognise(name, fn, clips)})
            first_audio[voice_name] = {
                "one_sentence_ms": asyncio.run(_first_audio_ms(tts, ANSWERS[0])),
                "three_sentences_ms": asyncio.run(_first_audio_ms(tts, ANSWERS[1]))}
    finally:
        whisper.close()
        sphinx.close()
    import os
    return {"benchmark": "speech", "machine": machine(), "sentences": len(SENTENCES),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "recognition": results, "tts_first_audio": first_audio,
            "targets": {"wer_le_10_percent_default": results[0]["wer_percent"] <= 10.0}}


if __name__ == "__main__":
    json.dump(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2), sys.stdout, indent=2)
    print()
