"""Speech to text: pocketsphinx with a command grammar (default), or a local faster-whisper.

Why the shape: decoding holds the GIL, so it never runs on the event loop. Each of the
`pool_size` command decoders has its own worker thread (a lane, see `lanes.py`); an
utterance holds one lane from its first frame to `finish()`. Audio is handed to the
decoder in pieces of at most 50 ms so that the GIL is released between them.

Grammar results are checked against the phrases: when no final state is reached,
pocketsphinx silently returns a partial path ('what time') or nothing instead of a
phrase. Such an utterance is re-decoded by one shared open-vocabulary decoder (the
language model: slower and less accurate on synthetic voices, but honest about speech
outside the grammar). Silence decodes to "" either way; loud noise can come back from
the language model as a short word ('if'), so callers should only finish utterances the
VAD confirmed as speech and `cancel()` the others.

Measured on 2 cores (pocketsphinx 5.1.1, en-us model, RSS): a command decoder with only
the grammar's words loads in 10-15 ms and costs 3.5-5.5 MB; the language-model decoder
(full dictionary + LM) 0.3-0.45 s and about 91 MB, once per process; a stock `Decoder()`
per lane would cost 91 MB and 0.3 s each. Feeding a 1-2 s command in 20 ms frames takes
25-45 ms in all, `finish()` about 1 ms; the language-model fallback 200-850 ms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import pcm_bytes
from adapters.speech.errors import SpeechConfigError
from adapters.speech.grammar import Grammar, normalize_phrase, pronunciations
from adapters.speech.lanes import Lane, LanePool
from adapters.speech.whisper import WhisperSTT, WhisperUtterance

__all__ = [
    "PocketsphinxSTT",
    "PocketsphinxUtterance",
    "SpeechToText",
    "Utterance",
    "WhisperSTT",
    "WhisperUtterance",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_PIECE_BYTES = 2 * 800  # 50 ms of 16 kHz int16: bounds how long one call holds the GIL
_GRAMMAR = "commands"

Pcm = npt.NDArray[np.int16] | bytes  # 16 kHz mono; bytes are little-endian int16


class Utterance(Protocol):
    """One utterance's decoding: feed frames in order, then `finish` or `cancel` once."""

    async def feed(self, pcm16k: Pcm) -> str | None:
        """Add 16 kHz int16 audio; return the partial transcript when it changed, else None."""
        ...

    async def finish(self) -> str:
        """The final transcript; "" when nothing was recognised."""
        ...

    async def cancel(self) -> None:
        """Abandon the utterance and free what it holds."""
        ...

    def quiet(self, quiet_ms: float) -> None:
        """The VAD's silence so far inside the utterance (0 while speech goes on): a
        backend may start decoding what it has, speculatively."""
        ...


class SpeechToText(Protocol):
    def open_utterance(self) -> Utterance: ...

    def close(self) -> None: ...


class PocketsphinxSTT:
    """Offline STT from the model inside the pocketsphinx wheel; load once per process."""

    def __init__(
        self,
        phrases: Iterable[str],
        *,
        pool_size: int = 2,
        lm_fallback: bool = True,
        dither: bool = True,
    ) -> None:
        if pool_size < 1:
            raise SpeechConfigError(f"decoder_pool must be at least 1, got {pool_size}")
        try:
            from pocketsphinx import Config, Decoder, set_loglevel
        except ImportError as exc:
            raise SpeechConfigError("STT needs the 'pocketsphinx' package") from exc
        set_loglevel("FATAL")  # it logs every search (and every grammar miss) otherwise
        phrases = list(phrases)  # iterated twice below
        dictionary = Config()["dict"]
        wanted = [normalize_phrase(p) for p in (*phrases, "stop")]
        prons = pronunciations(dictionary, {w for p in wanted for w in p.split()})
        self.grammar = Grammar.build(phrases, lambda word: word in prons)
        for phrase, reason in self.grammar.dropped:
            log.warning("stt_phrase_dropped phrase=%r reason=%s", phrase, reason)
        self.load_ms: dict[str, float] = {}
        lanes = []
        for index in range(pool_size):
            started = time.perf_counter()
            # dither: digital-zero padding otherwise turns "stop" into "tell" 2 times in 5
            decoder = Decoder(lm=None, dict=os.devnull, dither=dither, loglevel="FATAL")
            for word, phones in prons.items():
                decoder.add_word(word, phones, False)
            decoder.add_jsgf_string(_GRAMMAR, self.grammar.jsgf(_GRAMMAR))
            decoder.activate_search(_GRAMMAR)
            self.load_ms[f"grammar-{index}"] = 1000 * (time.perf_counter() - started)
            lanes.append(Lane(decoder, f"stt-{index}"))
        self._pool = LanePool(lanes)
        self._fallback: Lane | None = None
        if lm_fallback:
            started = time.perf_counter()
            decoder = Decoder(dither=dither, loglevel="FATAL")
            self.load_ms["language-model"] = 1000 * (time.perf_counter() - started)
            self._fallback = Lane(decoder, "stt-lm")

    @property
    def phrases(self) -> tuple[str, ...]:
        return self.grammar.phrases

    def open_utterance(self) -> PocketsphinxUtterance:
        return PocketsphinxUtterance(self)

    def close(self) -> None:
        """Stop the decoder threads once the work they already have is done."""
        self._pool.close()
        if self._fallback is not None:
            self._fallback.close()


def _process(decoder: Any, data: bytes) -> str | None:
    """Feed audio in small pieces (each call holds the GIL); return the partial result."""
    for at in range(0, len(data), _PIECE_BYTES):
        decoder.process_raw(data[at : at + _PIECE_BYTES], False, False)
    return _hypothesis(decoder)


def _end(decoder: Any) -> str:
    decoder.end_utt()
    return _hypothesis(decoder) or ""


def _end_quietly(decoder: Any) -> None:
    try:
        decoder.end_utt()
    except Exception:  # no utterance was in progress
        log.debug("stt_end_without_utterance", exc_info=True)


def _decode_whole(decoder: Any, audio: Sequence[bytes]) -> str:
    decoder.start_utt()
    for data in audio:
        _process(decoder, data)
    return _end(decoder)


def _hypothesis(decoder: Any) -> str | None:
    hyp = decoder.hyp()
    return normalize_phrase(hyp.hypstr) if hyp is not None else None


class PocketsphinxUtterance:
    """Holds one command-decoder lane from the first non-empty `feed` to `finish`/`cancel`.

    Overlapping `feed`/`finish` calls are queued in call order (an asyncio lock), so a
    `finish` from another task waits for the feed in flight. `cancel` (for discarding:
    it never runs the language-model fallback) may come at any time.
    """

    def __init__(self, stt: PocketsphinxSTT) -> None:
        self._stt = stt
        self._lane: Lane | None = None
        self._audio: list[bytes] = []  # kept for the language-model fallback
        self._partial: str | None = None
        self._done = False
        self._lock = asyncio.Lock()  # binds to the loop of first use: utterances stay in one

    async def feed(self, pcm16k: Pcm) -> str | None:
        data = pcm_bytes(pcm16k)
        async with self._lock:
            self._check()
            if not data:
                return None
            lane = await self._take_lane()
            self._audio.append(data)
            partial = await lane.run(_process, lane.decoder, data)
        if partial and partial != self._partial:
            self._partial = partial
            return partial
        return None

    async def finish(self) -> str:
        async with self._lock:
            self._check()
            self._done = True
            lane, self._lane = self._lane, None
            audio, self._audio = self._audio, []
        return await self._final(lane, audio)

    async def _final(self, lane: Lane | None, audio: list[bytes]) -> str:
        if lane is None:  # nothing was fed
            return ""
        try:
            text = await lane.run(_end, lane.decoder)
        finally:
            self._stt._pool.release(lane)  # safe even if cancelled: the lane runs in order
        if text in self._stt.grammar:
            return text
        log.info("stt_grammar_miss result=%r", text)
        fallback = self._stt._fallback
        if fallback is None:
            return ""
        return await fallback.run(_decode_whole, fallback.decoder, audio)

    def quiet(self, quiet_ms: float) -> None:
        """Nothing to do: the grammar decoder works as the audio comes."""
        return None

    async def cancel(self) -> None:
        self._done = True
        lane, self._lane = self._lane, None
        self._audio = []
        if lane is not None:
            try:
                await lane.run(_end, lane.decoder)
            finally:
                self._stt._pool.release(lane)

    async def _take_lane(self) -> Lane:
        if self._lane is None:
            lane = await self._stt._pool.acquire()
            try:
                await lane.run(lane.decoder.start_utt)
            except BaseException:  # e.g. cancelled: end whatever started, in lane order
                lane.executor.submit(_end_quietly, lane.decoder)
                self._stt._pool.release(lane)
                raise
            if self._done:  # cancelled while we waited for the lane
                lane.executor.submit(_end_quietly, lane.decoder)
                self._stt._pool.release(lane)
                raise RuntimeError("this utterance was cancelled")
            self._lane = lane
        return self._lane

    def _check(self) -> None:
        if self._done:
            raise RuntimeError("this utterance is finished")
