"""The FastRTC stream handler: one per connection, routing audio by contract.

Not `ReplyOnPause`, which only reacts at the end of an utterance: barge-in
must fire at speech onset. Every input frame goes where the session's
current contract says:

- microphone `open`   → VAD + STT (partials become `stt_partial`, a final
  non-empty transcript becomes `stt_final`);
- microphone `gated`  → the barge-in detector; the speech it hears is held
  (pre-roll included) but not transcribed. ≥ `min_speech_ms` of speech posts
  `barge_in` and clears the output queue at once, and the held audio becomes
  the start of the caller's next utterance (talk-over keeps the words); speech
  that ends before it makes a barge-in is dropped. Over a streaming answer
  (with `voice.backchannels` set) the threshold pauses the answer instead:
  speech that goes on past `backchannel_max_ms` barges in; speech that ends
  before is transcribed, and only backchannel words ("uh-huh") or none resume
  the answer, anything else barges in (adapters/fastrtc/backchannel.py);
- microphone `closed` → dropped.

Output frames leave only while the contract's playback is `streaming`, or
when they are filler (its own channel).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Protocol

import av
import numpy as np
from fastrtc import AsyncStreamHandler
from fastrtc.utils import get_current_context

from adapters.fastrtc.backchannel import is_backchannel
from adapters.fastrtc.output import OutputStream
from engine.chart.turn import TurnPolicy

INPUT_RATE = 16_000
VOICING_MS = 60.0
"""False-interruption mode: speech this long without a quiet window (two silero windows)
means the caller is still voicing; less, after a quiet one, may be the end of a cough."""
RECHECK_S = 0.02   # while the detector is in its hangover, look again every frame
LISTENING_POLLS = 200   # × 5 ms: how long a talk-over transcript waits for LISTENING
RECENT_FRAMES = 8  # ~160 ms of gated input: the onset of speech that follows a backchannel


class VadEventLike(Protocol):
    kind: str


class Detector(Protocol):
    """Per-connection speech detector (adapters.speech.vad.SpeechDetector)."""

    speaking: bool
    quiet_ms: float   # the current run of silence inside speech (0 while speech goes on)
    voiced_ms: float  # the current run of speech (0 once a quiet window comes: hangover)

    def feed(self, pcm: np.ndarray[Any, Any]) -> Sequence[VadEventLike]: ...

    def reset(self) -> None: ...

    def preroll(self) -> np.ndarray[Any, Any]: ...


class Utterance(Protocol):
    async def feed(self, pcm: np.ndarray[Any, Any]) -> str | None: ...

    async def finish(self) -> str: ...

    async def cancel(self) -> None:
        """Throw the utterance away without decoding it (the floor was taken away)."""
        ...

    def quiet(self, quiet_ms: float) -> None:
        """The silence so far inside the utterance (0: speech goes on); a backend may
        start decoding speculatively so the transcript is ready at the end of turn."""
        ...

    # optional: `early_transcript() -> str | None`, that early decode's text once it
    # covers all the speech so far (Whisper has it); the turn gate reads the words with it


class Transcriber(Protocol):
    def open_utterance(self) -> Utterance: ...


class TurnGateLike(Protocol):
    """The state's turn policy on one connection (adapters/turn/gate.py `TurnGate`,
    made by the service: this package does not import another adapter package)."""

    ended_silence_ms: float

    def configure(self, policy: TurnPolicy, contract: Mapping[str, str]) -> None: ...

    async def listen(self, pcm: np.ndarray[Any, Any], kinds: Sequence[str],
                     heard: str | None = None) -> list[str]: ...


class VoiceBackend(Protocol):
    """What a connection needs from the running service (adapters.server.voice)."""

    stt: Transcriber
    false_interruption_ms: float
    backchannels: frozenset[str]   # normalised phrases (backchannel.phrases); empty: off
    backchannel_max_ms: float      # speech over the answer this long barges in
    backchannel_end_ms: float      # silence that ends a possible backchannel

    def new_detector(self) -> Detector: ...

    async def connect(self, connection_id: str, handler: TurnStreamHandler) -> str: ...

    async def disconnect(self, connection_id: str) -> None: ...

    def contract(self, session_id: str) -> Mapping[str, str]: ...

    # the current state's turn policy (engine/chart/turn.py); the gate that applies it, with
    # the end-of-turn model if one is loaded
    def new_turn_gate(self, detector: Detector,
                      note: Callable[[Any, bool], None]) -> TurnGateLike: ...

    def turn_policy(self, session_id: str) -> TurnPolicy: ...

    def note_end_of_turn(self, session_id: str, decision: Any, held: bool) -> None: ...

    def post(self, session_id: str, event_type: str, payload: dict[str, Any]) -> bool: ...

    def record_barge_in(self, session_id: str, decided_at: float, dropped: int) -> None: ...

    def record_first_audio(self, session_id: str, turn_latency_s: float) -> None: ...

    def note_false_interruption(self, session_id: str) -> None: ...

    def note_backchannel(self, session_id: str, words: str) -> None: ...

    def report_error(self, session_id: str, where: str, exc: BaseException) -> None: ...


class TurnStreamHandler(AsyncStreamHandler):
    def __init__(self, service: VoiceBackend, *, output_rate: int = 24_000) -> None:
        super().__init__(expected_layout="mono", output_sample_rate=output_rate,
                         input_sample_rate=INPUT_RATE)
        self.service = service
        self.session_id: str | None = None
        self.connection_id: str | None = None
        self.output = OutputStream(output_rate)
        self.vad: Detector | None = None
        self.turn: TurnGateLike | None = None   # the state's turn policy on this connection
        self.utterance: Utterance | None = None
        self.last_partial = ""
        self.barge_pending: asyncio.TimerHandle | None = None
        self.speech_ended_at: float | None = None   # when the VAD decided speech ended
        self.speech_stopped_at: float | None = None  # when the caller's speech stopped
        self._held: list[np.ndarray[Any, Any]] | None = None  # gated speech, not yet a barge-in
        self._talk_over = False    # the utterance began while the mic was gated
        self._deciding = False     # the answer is paused over speech: backchannel or not?
        self._deciding_voiced_ms = 0.0
        self._transcribing = False
        self._decide_timer: asyncio.TimerHandle | None = None
        self._decision: asyncio.Task[None] | None = None
        self._after_backchannel = False   # the detector is still in that speech's hangover
        self._recent: deque[np.ndarray[Any, Any]] = deque(maxlen=RECENT_FRAMES)
        self._closed = False
        self._input_resampler: av.AudioResampler | None = None

    def copy(self) -> TurnStreamHandler:
        return TurnStreamHandler(self.service, output_rate=self.output_sample_rate)

    # lifecycle -------------------------------------------------------------------
    async def start_up(self) -> None:
        connection_id = get_current_context().webrtc_id
        await self.attach(connection_id)

    async def attach(self, connection_id: str) -> None:
        """Open (or join) the session for this connection and announce the caller."""
        self.connection_id = connection_id
        self.output.clear_downstream = self._clear_downstream
        self.vad = self.service.new_detector()
        self.turn = self.service.new_turn_gate(self.vad, self._note_end_of_turn)
        self.session_id = await self.service.connect(connection_id, self)

    def _note_end_of_turn(self, decision: Any, held: bool) -> None:
        if self.session_id is not None:
            self.service.note_end_of_turn(self.session_id, decision, held)

    def _clear_downstream(self) -> None:
        try:
            self.clear_queue()
        except Exception:  # no FastRTC track yet (WebSocket, tests): nothing queued there
            return

    async def shutdown(self) -> None:
        await self.detach()

    async def detach(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._held = None
        self._stop_deciding()
        if self.utterance is not None:
            await self.utterance.cancel()
            self.utterance = None
        if self.connection_id is not None:
            await self.service.disconnect(self.connection_id)

    # input -------------------------------------------------------------------------
    def resample(self, frame: av.AudioFrame) -> Generator[av.AudioFrame, None, None]:
        """Each WebRTC frame at 16 kHz as soon as it is resampled. FastRTC's own resampler
        emits frames of the input frame's sample count at the output rate: a 20 ms frame
        at 48 kHz (960 samples) became 60 ms at 16 kHz, so the detector heard the caller
        in 60 ms chunks, up to 40 ms late (a barge-in, an end of speech decided that much
        later). Without a fixed output size, nothing waits."""
        if self._input_resampler is None:
            self._input_resampler = av.AudioResampler(
                format="s16", layout=self.expected_layout, rate=self.input_sample_rate)
        yield from self._input_resampler.resample(frame)

    async def receive(self, frame: tuple[int, np.ndarray[Any, Any]]) -> None:
        if self.session_id is None or self.vad is None or self._closed:
            return
        try:
            await self._route(frame)
        except Exception as exc:  # one bad frame must not end the call, nor go unlogged
            self.service.report_error(self.session_id, "receive", exc)

    async def _route(self, frame: tuple[int, np.ndarray[Any, Any]]) -> None:
        assert self.session_id is not None and self.vad is not None
        _, data = frame
        pcm = np.asarray(data, dtype=np.int16).reshape(-1)
        assert self.turn is not None
        contract = self.service.contract(self.session_id)
        mic = contract.get("microphone", "closed")
        streaming = contract.get("playback") == "streaming"
        if self._deciding and not (mic == "gated" and streaming):
            self._stop_deciding()   # the chart moved on (answer over, timeout, hang-up)
        if mic == "closed":
            self.vad.reset()
            self._held = None
            if self.utterance is not None:   # frees its decoder (and any early decode)
                await self.utterance.cancel()
                self.utterance, self._talk_over = None, False
            return
        self.turn.configure(self.service.turn_policy(self.session_id), contract)
        events = self.vad.feed(pcm)
        if mic == "open":
            kinds = await self.turn.listen(pcm, [e.kind for e in events], self._heard())
            await self._listen(pcm, kinds)
        else:
            await self._guard_barge_in(pcm, [e.kind for e in events], streaming)

    def _heard(self) -> str | None:
        """The open utterance's early transcript, when its STT has one ready (`end:
        hybrid` decides with the words; None: not yet, or no early decodes)."""
        early = getattr(self.utterance, "early_transcript", None)
        return early() if early is not None else None

    async def _listen(self, pcm: np.ndarray[Any, Any], kinds: list[str]) -> None:
        assert self.session_id is not None and self.vad is not None
        if self._held is not None:  # speech that began while gated: the caller's words
            await self._keep_talk_over()
        if "speech_start" in kinds and self.utterance is None:
            self.utterance = self.service.stt.open_utterance()
            self.last_partial = ""
            partial = await self.utterance.feed(self.vad.preroll())
        elif self.utterance is not None:
            partial = await self.utterance.feed(pcm)
        else:
            return
        self._note_partial(partial)
        if self.utterance is not None:   # after speech_end: the silence that ended it
            self.utterance.quiet(self.vad.quiet_ms)
        if "speech_end" in kinds:   # the turn gate says how long the caller had been silent
            self._speech_ended(self.turn.ended_silence_ms if self.turn is not None
                               else self.vad.quiet_ms)
            await self._finish_utterance()

    def _note_partial(self, partial: str | None) -> None:
        assert self.session_id is not None
        if partial and partial != self.last_partial:
            self.last_partial = partial
            self.service.post(self.session_id, "stt_partial", {"text": partial})

    def _speech_ended(self, silence_ms: float) -> None:
        """Speech was decided over, `silence_ms` (the hangover, or a held pause) after the
        caller stopped: turn latency counts from then."""
        self.speech_ended_at = time.monotonic()
        self.speech_stopped_at = self.speech_ended_at - silence_ms / 1000.0

    async def _finish_utterance(self) -> None:
        assert self.session_id is not None
        utterance, self.utterance = self.utterance, None
        talk_over, self._talk_over = self._talk_over, False
        if utterance is None:
            return
        text = (await utterance.finish()).strip()
        if text and talk_over:
            await self._until_listening()
        if text:  # empty transcripts never start a turn
            self.service.post(self.session_id, "stt_final", {"text": text, "is_final": True})
        else:
            self.speech_stopped_at = None   # no turn: no answer to time

    async def _until_listening(self) -> None:
        """A barge-in decided at the end of the speech (not a backchannel) is followed at
        once by its transcript: give the chart the moment it takes to go through
        INTERRUPT to LISTENING first, or the words would arrive where nothing takes them."""
        assert self.session_id is not None
        for _ in range(LISTENING_POLLS):
            if self._closed or self.service.contract(self.session_id).get(
                    "microphone") != "gated":
                return
            await asyncio.sleep(RECHECK_S / 4)

    async def _keep_talk_over(self) -> None:
        """The held speech is the start of the caller's next utterance: open it with
        everything heard so far (pre-roll included); later frames continue it."""
        held, self._held = self._held, None
        if not held or self.utterance is not None:
            return
        self.utterance = self.service.stt.open_utterance()
        self._talk_over = True
        self.last_partial = ""
        self._note_partial(await self.utterance.feed(np.concatenate(held)))

    async def _guard_barge_in(self, pcm: np.ndarray[Any, Any], kinds: list[str],
                              streaming: bool = False) -> None:
        assert self.session_id is not None and self.vad is not None
        self._recent.append(pcm)
        if self.utterance is not None and not self._talk_over:
            await self.utterance.cancel()  # the floor was taken away mid-utterance
            self.utterance = None
        if "speech_start" in kinds and self.utterance is None:
            self._held = [self.vad.preroll()]   # maybe a barge-in: keep the words
        elif self._held is not None:
            self._held.append(pcm)
        elif self.utterance is not None:   # talk-over after the barge-in, still gated
            self._note_partial(await self.utterance.feed(pcm))
        elif self._after_backchannel and self.vad.speaking and \
                self.vad.voiced_ms >= VOICING_MS:
            # voicing again inside the hangover of a backchannel ("uh-huh ... wait"): the
            # detector starts no new speech, so this is the onset of the next candidate
            self._after_backchannel = False
            self._held = list(self._recent)
            kinds = [*kinds, "speech_confirmed"]
        if "speech_confirmed" in kinds:
            false_ms = self.service.false_interruption_ms
            if false_ms:
                self._tentative_barge_in(false_ms)
            elif streaming and self.service.backchannels and self.utterance is None:
                self._start_deciding()
            else:
                self.barge_in("speech onset")
        elif self._deciding:
            await self._decide_step(pcm, kinds)
        if self._talk_over and self._held is not None:
            await self._keep_talk_over()
        if "speech_end" in kinds:
            self._after_backchannel = False
            if self.utterance is not None and self._talk_over:
                self._speech_ended(self.vad.quiet_ms)
                await self._finish_utterance()
            elif not self._deciding:
                self._held = None   # too short for a barge-in (or a false interruption)

    # backchannels ------------------------------------------------------------------
    def _start_deciding(self) -> None:
        """Speech over a streaming answer: silence it now (as fast as a barge-in), keep
        it resumable, and decide once the speech is longer than a backchannel or over."""
        assert self.vad is not None
        self.output.hold()
        self._deciding = True
        self._deciding_voiced_ms = self.vad.voiced_ms
        self._arm_decide_timer()

    async def _decide_step(self, pcm: np.ndarray[Any, Any], kinds: list[str]) -> None:
        assert self.vad is not None
        if self._transcribing:
            return   # the words are being read; the frames are held meanwhile
        if self.vad.voiced_ms > 0:
            self._deciding_voiced_ms += 1000.0 * len(pcm) / INPUT_RATE
        if self._deciding_voiced_ms >= self.service.backchannel_max_ms:
            self.barge_in("speech onset (longer than a backchannel)")
        elif "speech_end" in kinds or not self.vad.speaking or \
                self.vad.quiet_ms >= self.service.backchannel_end_ms:
            await self._decide_by_words()
        else:
            self._arm_decide_timer()

    def _arm_decide_timer(self) -> None:
        """No input for `backchannel_end_ms` ends the speech too (a transport that sends
        nothing in silence): a paused answer never waits on frames that do not come."""
        if self._decide_timer is not None:
            self._decide_timer.cancel()
        loop = asyncio.get_running_loop()

        def quiet() -> None:
            self._decide_timer = None
            if self._deciding and not self._transcribing and not self._closed:
                self._decision = loop.create_task(self._decide_by_words())

        self._decide_timer = loop.call_later(self.service.backchannel_end_ms / 1000.0, quiet)

    async def _decide_by_words(self) -> None:
        """Transcribe the held speech: only backchannel words, or none (a cough, noise),
        resume the answer where it paused; any other word is a barge-in, as before."""
        assert self.session_id is not None
        if self._decide_timer is not None:
            self._decide_timer.cancel()
            self._decide_timer = None
        held = list(self._held or [])
        self._transcribing = True
        try:
            utterance = self.service.stt.open_utterance()
            if held:
                await utterance.feed(np.concatenate(held))
            text = (await utterance.finish()).strip()
        except Exception as exc:
            self.service.report_error(self.session_id, "backchannel", exc)
            text = "?"   # unread words: a barge-in, the safe side
        finally:
            self._transcribing = False
        if self._closed or not self._deciding:
            return   # hung up, or the chart moved on while the words were read
        if text and not is_backchannel(text, self.service.backchannels):
            self.barge_in("speech onset (not a backchannel)")
            if self.vad is not None and not self.vad.speaking:
                # the speech ended while its words were read (no frame will say so again):
                # the talk-over is the whole utterance
                await self._keep_talk_over()
                self._speech_ended(self.vad.quiet_ms)
                await self._finish_utterance()
            return
        self._stop_deciding()
        self._held = None
        self._after_backchannel = self.vad is not None and self.vad.speaking
        if text:
            self.service.note_backchannel(self.session_id, text)
        else:
            self.service.note_false_interruption(self.session_id)

    def _stop_deciding(self) -> None:
        """Resume the paused answer (what the chart stopped meanwhile stays stopped)."""
        if self._decide_timer is not None:
            self._decide_timer.cancel()
            self._decide_timer = None
        if self._deciding:
            self._deciding = False
            self.output.resume()

    def barge_in(self, reason: str) -> None:
        """Silence now (every queued frame of this connection), then tell the chart."""
        assert self.session_id is not None
        decided = time.monotonic()
        self._deciding = False
        if self._decide_timer is not None:
            self._decide_timer.cancel()
            self._decide_timer = None
        self.output.resume()
        dropped = self.output.clear()
        if self._held is not None:
            self._talk_over = True   # the next frame opens the utterance with the held audio
        self.service.record_barge_in(self.session_id, decided, dropped)
        self.service.post(self.session_id, "barge_in", {"reason": reason})

    def _tentative_barge_in(self, false_ms: float) -> None:
        """False-interruption mode: pause playback; if the speech turns out to be
        real (the caller is still voicing `false_ms` later) barge in, else resume where
        it paused. The detector's `speaking` stays true through its hangover (~320 ms of
        silence), so a cough that stopped counts only if voicing comes back before it ends:
        until then the answer stays paused and the question is asked again every frame."""
        if self.barge_pending is not None:
            return
        self.output.pause()
        loop = asyncio.get_running_loop()

        def decide() -> None:
            self.barge_pending = None
            vad = self.vad
            if self._closed:
                return
            if vad is not None and vad.speaking and vad.voiced_ms < VOICING_MS:
                # in the hangover (or a flicker of sound after it): not yet decided
                self.barge_pending = loop.call_later(RECHECK_S, decide)
            elif vad is not None and vad.speaking:
                self.barge_in("speech onset (confirmed after pause)")
            else:
                self.output.resume()
                if self.session_id is not None:
                    self.service.note_false_interruption(self.session_id)

        self.barge_pending = loop.call_later(false_ms / 1000.0, decide)

    # output ------------------------------------------------------------------------
    async def emit(self) -> tuple[int, np.ndarray[Any, Any]] | None:
        if self._closed:
            await asyncio.sleep(0.05)
            return None
        frame = await self.output.next_frame(timeout_s=0.5)
        if frame is None or self.session_id is None:
            return None
        if not frame.filler and \
                self.service.contract(self.session_id).get("playback") != "streaming":
            return None  # answer audio never leaves while playback is stopped
        if not frame.filler and self.speech_stopped_at is not None:
            # turn latency: the caller stopped speaking → the first audio of the ANSWER
            # (a filler or cue is not an answer), hangover and STT included
            waited = time.monotonic() - self.speech_stopped_at
            self.service.record_first_audio(self.session_id, waited)
            self.speech_stopped_at = self.speech_ended_at = None
        return self.output_sample_rate, frame.pcm.reshape(1, -1)
