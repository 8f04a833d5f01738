"""espeak TTS behind the engine's Speech port: streamed chunks, rate, serialised access."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from adapters.speech.errors import SpeechConfigError
from adapters.speech.tts import EspeakTTS
from engine.runtime.ports import AudioChunk, Speech

SENTENCE = "Please tell me what the weather will be like tomorrow."  # 10 words


async def collect(tts: EspeakTTS, text: str) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text)]


def samples(chunks: list[AudioChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(c.data for c in chunks), dtype="<i2")


async def test_streams_several_chunks_at_the_output_rate() -> None:
    tts = EspeakTTS()
    speech: Speech = tts  # satisfies the engine's port
    assert tts.sample_rate == 24000
    chunks = [chunk async for chunk in speech.synthesize(SENTENCE)]
    assert len(chunks) >= 5
    for chunk in chunks:
        assert len(chunk.data) % 2 == 0 and chunk.data
        assert chunk.duration_ms == pytest.approx(1000 * len(chunk.data) / 2 / 24000)
    total_s = sum(c.duration_ms for c in chunks) / 1000
    expected_s = 10 / tts.wpm * 60  # 10 words at 175 words per minute: about 3.4 s
    assert 0.5 * expected_s < total_s < 1.5 * expected_s
    pcm = samples(chunks)
    assert np.abs(pcm).max() > 3000  # audible speech, not silence or junk


async def test_first_chunk_arrives_long_before_the_sentence_is_done() -> None:
    tts = EspeakTTS()
    started = time.perf_counter()
    stream = tts.synthesize(SENTENCE)
    first = await anext(stream)
    first_ms = 1000 * (time.perf_counter() - started)
    rest = [chunk async for chunk in stream]
    assert first.duration_ms < 200 and rest
    assert first_ms < 250  # about 1 ms measured; generous for loaded CI machines


async def test_words_per_minute_changes_the_duration() -> None:
    slow = sum(c.duration_ms for c in await collect(EspeakTTS(wpm=120), SENTENCE))
    fast = sum(c.duration_ms for c in await collect(EspeakTTS(wpm=300), SENTENCE))
    assert fast < 0.7 * slow


async def test_concurrent_calls_from_many_tasks_each_get_their_own_audio() -> None:
    tts = EspeakTTS()
    texts = ["yes", "one two three", "the quick brown fox jumps over the lazy dog", "stop",
             "tell me a story about the sea", "hello"] * 2
    results = await asyncio.gather(*(collect(tts, text) for text in texts))
    durations = [sum(c.duration_ms for c in chunks) for chunks in results]
    for text, duration in zip(texts, durations, strict=True):
        _, alone = tts.synthesize_all(text)  # the same text synthesised on its own
        assert duration == pytest.approx(1000 * len(alone) / 24000, rel=0.05), text
    assert durations[2] > 3 * durations[0]  # a long text's audio did not go to a short one


async def test_closing_the_stream_early_stops_synthesis_and_frees_espeak() -> None:
    tts = EspeakTTS()
    stream = tts.synthesize(SENTENCE * 3)
    first = await anext(stream)
    await stream.aclose()
    assert first.data
    assert sum(c.duration_ms for c in await collect(tts, "hello")) > 200


async def test_cancelled_consumer_does_not_break_the_next_call() -> None:
    tts = EspeakTTS()

    async def consume_slowly() -> None:
        async for _ in tts.synthesize(SENTENCE):
            await asyncio.sleep(1)

    task = asyncio.create_task(consume_slowly())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await collect(tts, "stop")


def test_synthesize_all_returns_the_whole_clip_at_the_configured_rate() -> None:
    rate, pcm = EspeakTTS(output_rate=16000).synthesize_all("hello world")
    assert rate == 16000 and pcm.dtype == np.int16
    assert 0.4 < len(pcm) / rate < 2.0
    native_rate, native = EspeakTTS(output_rate=22050).synthesize_all("hello world")
    assert native_rate == 22050
    assert len(native) / 22050 == pytest.approx(len(pcm) / 16000, rel=0.05)


def test_empty_text_gives_no_audio() -> None:
    assert len(EspeakTTS().synthesize_all("")[1]) < 2400  # at most 0.1 s of silence


def test_unknown_voice_and_bad_speed_fail_at_construction() -> None:
    with pytest.raises(SpeechConfigError, match="no voice named"):
        EspeakTTS(voice="xx-nonexistent")
    with pytest.raises(SpeechConfigError, match="tts_wpm"):
        EspeakTTS(wpm=5)
    assert len(EspeakTTS().synthesize_all("ok")[1]) > 0  # the failures left espeak usable
