"""The FastRTC stream handler: one per connection, routing audio by contract.

Not `ReplyOnPause`, which only reacts at the end of an utterance: barge-in
must fire at speech onset. Every input frame goes where the session's
current contract says:

- microphone `open`   → VAD + STT (partials become `stt_partial`, a final
  non-empty transcript becomes `stt_final`);
- microphone `gated`  → the barge-in detector only (no transcript while the
  assistant talks); ≥ `min_speech_ms` of speech posts `barge_in` and clears
  the output queue at once;
- microphone `closed` → dropped.

Output frames leave only while the contract's playback is `streaming`, or
when they are filler (its own channel).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from fastrtc import AsyncStreamHandler
from fastrtc.utils import get_current_context

from adapters.fastrtc.output import OutputStream
from adapters.turn.gate import EndOfTurnModel, TurnGate
from engine.turn import TurnPolicy

INPUT_RATE = 16_000


class VadEventLike(Protocol):
    kind: str


class Detector(Protocol):
    """Per-connection speech detector (adapters.speech.vad.SpeechDetector)."""

    speaking: bool

    def feed(self, pcm: np.ndarray[Any, Any]) -> Sequence[VadEventLike]: ...

    def reset(self) -> None: ...

    def preroll(self) -> np.ndarray[Any, Any]: ...


class Utterance(Protocol):
    async def feed(self, pcm: np.ndarray[Any, Any]) -> str | None: ...

    async def finish(self) -> str: ...

    async def cancel(self) -> None:
        """Throw the utterance away without decoding it (the floor was taken away)."""
        ...


class Transcriber(Protocol):
    def open_utterance(self) -> Utterance: ...


class VoiceBackend(Protocol):
    """What a connection needs from the running service (adapters.server.voice)."""

    stt: Transcriber
    false_interruption_ms: float

    def new_detector(self) -> Detector: ...

    async def connect(self, connection_id: str, handler: TurnStreamHandler) -> str: ...

    async def disconnect(self, connection_id: str) -> None: ...

    def contract(self, session_id: str) -> Mapping[str, str]: ...

    # the current state's turn policy (engine/turn.py) and the end-of-turn model, if any
    end_of_turn: EndOfTurnModel | None

    def turn_policy(self, session_id: str) -> TurnPolicy: ...

    def note_end_of_turn(self, session_id: str, decision: Any, held: bool) -> None: ...

    def post(self, session_id: str, event_type: str, payload: dict[str, Any]) -> bool: ...

    def record_barge_in(self, session_id: str, decided_at: float, dropped: int) -> None: ...

    def record_first_audio(self, session_id: str, turn_latency_s: float) -> None: ...

    def note_false_interruption(self, session_id: str) -> None: ...

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
        self.turn: TurnGate | None = None   # the state's turn policy on this connection
        self.utterance: Utterance | None = None
        self.last_partial = ""
        self.barge_pending: asyncio.TimerHandle | None = None
        self.speech_ended_at: float | None = None
        self._closed = False

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
        self.turn = TurnGate(self.vad, self.service.end_of_turn, self._note_end_of_turn)
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
        if self.utterance is not None:
            await self.utterance.cancel()
            self.utterance = None
        if self.connection_id is not None:
            await self.service.disconnect(self.connection_id)

    # input -------------------------------------------------------------------------
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
        if mic == "closed":
            self.vad.reset()
            return
        self.turn.configure(self.service.turn_policy(self.session_id), contract)
        events = self.vad.feed(pcm)
        if mic == "open":
            await self._listen(pcm, await self.turn.listen(pcm, [e.kind for e in events]))
        else:
            await self._guard_barge_in([e.kind for e in events])

    async def _listen(self, pcm: np.ndarray[Any, Any], kinds: list[str]) -> None:
        assert self.session_id is not None and self.vad is not None
        if "speech_start" in kinds and self.utterance is None:
            self.utterance = self.service.stt.open_utterance()
            self.last_partial = ""
            partial = await self.utterance.feed(self.vad.preroll())
        elif self.utterance is not None:
            partial = await self.utterance.feed(pcm)
        else:
            return
        if partial and partial != self.last_partial:
            self.last_partial = partial
            self.service.post(self.session_id, "stt_partial", {"text": partial})
        if "speech_end" in kinds:
            self.speech_ended_at = time.monotonic()
            await self._finish_utterance()

    async def _finish_utterance(self) -> None:
        assert self.session_id is not None
        utterance, self.utterance = self.utterance, None
        if utterance is None:
            return
        text = (await utterance.finish()).strip()
        if text:  # empty transcripts never start a turn
            self.service.post(self.session_id, "stt_final", {"text": text, "is_final": True})

    async def _guard_barge_in(self, kinds: list[str]) -> None:
        assert self.session_id is not None
        if self.utterance is not None:  # the floor was taken away mid-utterance
            await self.utterance.cancel()
            self.utterance = None
        if "speech_confirmed" not in kinds:
            if "speech_end" in kinds and self.barge_pending is not None:
                pass  # the false-interruption timer decides
            return
        false_ms = self.service.false_interruption_ms
        if false_ms:
            self._tentative_barge_in(false_ms)
            return
        self.barge_in("speech onset")

    def barge_in(self, reason: str) -> None:
        """Silence now (every queued frame of this connection), then tell the chart."""
        assert self.session_id is not None
        decided = time.monotonic()
        self.output.resume()
        dropped = self.output.clear()
        self.service.record_barge_in(self.session_id, decided, dropped)
        self.service.post(self.session_id, "barge_in", {"reason": reason})

    def _tentative_barge_in(self, false_ms: float) -> None:
        """False-interruption mode: pause playback; if the speech turns out to be
        real (it goes on past `false_ms`) barge in, else resume where it paused."""
        if self.barge_pending is not None:
            return
        self.output.pause()
        loop = asyncio.get_running_loop()

        def decide() -> None:
            self.barge_pending = None
            if self.vad is not None and self.vad.speaking:
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
        if self.speech_ended_at is not None and self.session_id is not None:
            waited = time.monotonic() - self.speech_ended_at
            self.service.record_first_audio(self.session_id, waited)
            self.speech_ended_at = None
        return self.output_sample_rate, frame.pcm.reshape(1, -1)
