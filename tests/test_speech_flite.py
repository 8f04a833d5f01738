"""The default voice (issue 14): CMU flite's slt, in-process, streamed sentence by
sentence behind the engine's Speech port; a caller (and Whisper) understands it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from adapters.responder.text import normalise
from adapters.speech.audio import resample
from adapters.speech.errors import SpeechConfigError
from adapters.speech.flite import FliteTTS, split_sentences
from adapters.speech.whisper import WhisperSTT
from engine.runtime.ports import Speech

STORY = ("A small robot wanted to hear the sea. It rolled to the beach every night and "
         "listened to the waves. One morning it answered them with a song of its own.")


def test_sentences_keep_their_punctuation() -> None:
    assert split_sentences("Hi there. How are you?  Fine!") == [
        "Hi there.", "How are you?", "Fine!"]
    assert split_sentences("  ") == []


async def test_streams_sentence_by_sentence_at_the_output_rate() -> None:
    tts = FliteTTS(output_rate=24000)
    speech: Speech = tts
    started = time.perf_counter()
    first_at = None
    chunks = []
    async for chunk in speech.synthesize(STORY):
        if first_at is None:
            first_at = time.perf_counter() - started
        chunks.append(chunk)
    whole_s = time.perf_counter() - started
    assert first_at is not None and first_at < whole_s / 2   # the first sentence plays first
    assert all(c.duration_ms <= 60.0 + 1e-6 for c in chunks)
    pcm = np.frombuffer(b"".join(c.data for c in chunks), dtype="<i2")
    assert len(pcm) / 24000 == pytest.approx(sum(c.duration_ms for c in chunks) / 1000)
    assert 5.0 < len(pcm) / 24000 < 15.0 and np.abs(pcm).max() > 3000


async def test_closing_the_stream_stops_early() -> None:
    tts = FliteTTS()
    stream = tts.synthesize(STORY)
    first = await stream.__anext__()
    assert first.data
    await stream.aclose()   # a barge-in: no more sentences are made


def test_an_unknown_voice_is_a_config_error() -> None:
    with pytest.raises(SpeechConfigError, match="slt"):
        FliteTTS(voice="nobody")


async def test_whisper_understands_the_voice(whisper_stt: WhisperSTT) -> None:
    tts = FliteTTS(output_rate=16000)
    for text in ("What time is it?", "Tell me a story.", "The answer is ready now."):
        rate, pcm = tts.synthesize_all(text)
        heard = await whisper_stt.transcribe(resample(pcm, rate, 16000))
        assert normalise(heard) == normalise(text)


def test_the_first_word_is_not_behind_flites_silence() -> None:
    """flite pads each wave with ~200 ms of near-silence at both ends; a caller would
    wait through it before the first word, so it is trimmed (issue 14)."""
    rate, pcm = FliteTTS(output_rate=16000).synthesize_all("It is ten past three.")
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    assert loud[0] < 0.05 * rate                 # was about 0.22 s
    assert len(pcm) - loud[-1] < 0.2 * rate     # about 0.12 s of tail is kept
