"""The live voice service: sessions, speech, responder and connections, wired.

This is composition, so it lives with the server (the composition root): it
joins the engine's SessionManager to the FastRTC handlers (through their
`VoiceBackend` protocol), the offline speech models and the responder.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from adapters.config import BACKCHANNEL_END_MS, BACKCHANNEL_MAX_MS, DEFAULT_BACKCHANNELS
from adapters.fastrtc.backchannel import phrases
from adapters.fastrtc.handler import Detector, Transcriber, TurnStreamHandler
from adapters.fastrtc.output import OutputRouter
from adapters.fastrtc.registry import ConnectionRegistry
from adapters.redaction import redact_credentials
from adapters.server.metrics import Metrics
from adapters.server.voice_host import SessionInfo
from adapters.turn import smart
from adapters.turn.gate import EndOfTurnModel, TurnGate
from engine.chart.catalog import VersionUse, count_versions
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.chart.turn import NO_POLICY, TurnPolicy
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog
from engine.runtime.manager import SessionManager
from engine.runtime.ports import AudioChunk, Ports, Responder, Speech
from engine.runtime.snapshot import MemorySnapshotStore

_CLOSED: Mapping[str, str] = MappingProxyType({"microphone": "closed", "playback": "stopped"})


@dataclass
class VoiceStats:
    """Raw measurements for /metrics and `turnchart bench voice`."""

    barge_in_decided: dict[str, float] = field(default_factory=dict)
    time_to_silence_ms: list[float] = field(default_factory=list)
    turn_latency_ms: list[float] = field(default_factory=list)


class VoiceFrontEnd:
    """The callers' side of live voice, whichever host runs the sessions: audio
    connections and their handlers (`adapters.fastrtc.handler.VoiceBackend`), the
    output router, the connection registry, the one transcript path and the
    measurements. `VoiceService` (sessions in this process) and
    `RemoteVoiceService` (sessions on Redis workers) add the `VoiceHost` half
    (adapters/server/voice_host.py)."""

    def __init__(self, chart: CompiledChart, log: EventLog, metrics: Metrics, *,
                 stt: Transcriber, detector_factory: Any, filler: AudioChunk | None = None,
                 false_interruption_ms: float = 0.0, output_rate: int = 24_000,
                 backchannels: Iterable[str] = DEFAULT_BACKCHANNELS,
                 backchannel_max_ms: float = BACKCHANNEL_MAX_MS,
                 backchannel_end_ms: float = BACKCHANNEL_END_MS) -> None:
        self.chart = chart
        self.log = log
        self.metrics = metrics
        self.stt = stt
        self.detector_factory = detector_factory
        self.false_interruption_ms = false_interruption_ms
        self.backchannels = phrases(backchannels)   # `voice.backchannels`; empty: off
        self.backchannel_max_ms = backchannel_max_ms
        self.backchannel_end_ms = backchannel_end_ms
        self.output_rate = output_rate
        self.clock = RealClock()
        self.router = OutputRouter(lambda: filler)
        self.connections = ConnectionRegistry(log, self._connected_sessions)
        self.handlers: dict[str, TurnStreamHandler] = {}
        self.stats = VoiceStats()
        self.end_of_turn: EndOfTurnModel | None = None   # Smart Turn, when loaded
        self.default_end = "silence"   # `end` where a state's policy leaves it unset
        self.load_end_of_turn(chart)

    # what each host implements (the `VoiceHost` port and the connection's ends) ----
    def _connected_sessions(self) -> list[str]:
        """The sessions a connection of this process may resolve to."""
        raise NotImplementedError

    async def _open(self, session_id: str) -> None:
        raise NotImplementedError

    async def disconnect(self, connection_id: str) -> None:
        raise NotImplementedError

    def contract(self, session_id: str) -> Mapping[str, str]:
        raise NotImplementedError

    def turn_policy(self, session_id: str) -> TurnPolicy:
        """The current state's turn policy (engine/chart/turn.py), read on every frame."""
        raise NotImplementedError

    def post(self, session_id: str, event_type: str, payload: dict[str, Any],
             *, ack: Any = None, source: str = "fastrtc") -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def health(self) -> dict[str, Any]:
        raise NotImplementedError

    async def live_sessions(self) -> list[SessionInfo]:
        raise NotImplementedError

    async def session_info(self, session_id: str) -> SessionInfo | None:
        raise NotImplementedError

    async def session_count(self) -> int:
        raise NotImplementedError

    async def version_uses(self) -> list[VersionUse]:
        raise NotImplementedError

    def use_chart(self, chart: CompiledChart) -> None:
        raise NotImplementedError

    def load_end_of_turn(self, chart: CompiledChart) -> None:
        """Load Smart Turn (once per process) when a chart has a state with `end: smart`
        or `end: hybrid`, or the server's default end (`voice.end_of_turn`) is one of
        them; missing, it is logged once (smart states end their turns on silence,
        hybrid ones on the words and silence)."""
        learned = ("smart", "hybrid")
        if self.end_of_turn is None and (self.default_end in learned or any(
                s.turn.end in learned for s in chart.states.values())):
            self.end_of_turn = smart.load()

    def use_default_end(self, end: str) -> None:
        """The end of turn for states whose policy leaves `end` unset (`voice.end_of_turn`,
        `hybrid` as shipped); new connections get it."""
        self.default_end = end
        self.load_end_of_turn(self.chart)

    def new_handler(self) -> TurnStreamHandler:
        return TurnStreamHandler(self, output_rate=self.output_rate)

    def new_turn_gate(self, detector: Detector, note: Callable[[Any, bool], None]) -> TurnGate:
        """A connection's turn gate, with the end-of-turn model if one is loaded (the
        composition root joins adapters/turn to the FastRTC handler)."""
        return TurnGate(detector, self.end_of_turn, note, default_end=self.default_end,
                        words=bool(getattr(self.stt, "early_transcripts", False)))

    def new_detector(self) -> Detector:
        detector: Detector = self.detector_factory()
        return detector

    # connections -------------------------------------------------------------------
    async def connect(self, connection_id: str, handler: TurnStreamHandler) -> str:
        session_id = connection_id
        self.handlers[connection_id] = handler
        self.router.attach(session_id, handler.output)
        await self._open(session_id)
        self.connections.register(connection_id, session_id)
        self.post(session_id, "client_connected", {})
        return session_id

    def session_of(self, connection_id: str) -> str | None:
        """The session a caller's connection belongs to (None, logged, when none)."""
        return self.connections.resolve(connection_id)

    def post_transcript(self, connection_id: str, text: str, *, final: bool,
                        source: str) -> bool:
        """The one transcript path: local STT, a WebSocket message or a bus entry all
        become the same `stt_partial` / `stt_final` VoiceEvent here."""
        session_id = self.session_of(connection_id)
        if session_id is None:
            return False
        text = text.strip()
        if final and not text:
            return False  # empty transcripts never start a turn
        if final:
            return self.post(session_id, "stt_final", {"text": text, "is_final": True},
                             source=source)
        return self.post(session_id, "stt_partial", {"text": text}, source=source)

    # measurements --------------------------------------------------------------------
    def record_barge_in(self, session_id: str, decided_at: float, dropped: int) -> None:
        self.stats.barge_in_decided[session_id] = decided_at
        self.metrics.barge_ins.inc()
        handler = next((h for h in self.handlers.values() if h.session_id == session_id), None)
        if handler is not None:
            silence_ms = (time.monotonic() - decided_at) * 1000.0
            self.stats.time_to_silence_ms.append(silence_ms)
            self.log.emit("INFO", session_id, "barge_in_detected",
                          f"✋ barge-in: {dropped} queued frame(s) dropped in "
                          f"{silence_ms:.2f} ms", {"dropped_frames": dropped,
                                                   "time_to_silence_ms": round(silence_ms, 3)})

    def record_first_audio(self, session_id: str, turn_latency_s: float) -> None:
        self.stats.turn_latency_ms.append(turn_latency_s * 1000.0)
        self.metrics.turn_latency.observe(turn_latency_s)
        self.log.emit("INFO", session_id, "turn_latency",
                      f"⏱️ end of speech → first answer audio {turn_latency_s * 1000:.0f} ms",
                      {"turn_latency_ms": round(turn_latency_s * 1000.0, 3)})

    def report_error(self, session_id: str, where: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {redact_credentials(str(exc))}"
        self.log.emit("ERROR", session_id, "adapter_error",
                      f"💥 audio adapter failed in {where}: {error}",
                      {"where": where, "error": error})

    def note_false_interruption(self, session_id: str) -> None:
        self.metrics.false_interruptions.inc()
        self.log.emit("INFO", session_id, "false_interruption",
                      "🤧 speech too short to interrupt: playback resumed", {})

    def note_backchannel(self, session_id: str, words: str) -> None:
        """Speech over the answer was only a backchannel: the answer resumed, the chart
        never heard it (no barge_in, no stt_final)."""
        self.metrics.backchannels.inc()
        self.log.emit("INFO", session_id, "backchannel",
                      f"👂 backchannel {words!r} over the answer: playback resumed",
                      {"words": words})

    def note_end_of_turn(self, session_id: str, decision: Any, held: bool) -> None:
        """One end-of-turn decision (`end: smart`, or `end: hybrid` with the words heard
        and the silence it waits for): the turn ends now, or is held open."""
        verdict = "still talking: listening on" if held else "finished"
        probability = decision.probability
        data: dict[str, Any] = {
            "probability": None if probability is None else round(float(probability), 4),
            "held": held, "cpu_ms": round(float(decision.cpu_ms), 2),
            "wall_ms": round(float(decision.wall_ms), 2)}
        heard = getattr(decision, "words", None)
        if heard is None:
            text = f"🧠 smart turn: {verdict} (p={probability:.2f}, " \
                f"{decision.cpu_ms:.0f} ms CPU)"
        else:
            data.update(words=heard, verdict=decision.verdict,
                        wait_ms=round(float(decision.wait_ms), 1))
            model = "no model" if probability is None else f"p={probability:.2f}"
            text = f"🧠 hybrid turn: {verdict} (words {decision.verdict}: {heard!r}, " \
                f"{model}, ends after {decision.wait_ms:.0f} ms of silence)"
        self.log.emit("INFO", session_id, "end_of_turn", text, data)


class VoiceService(VoiceFrontEnd):
    """The local `VoiceHost`: the sessions run here, in this process's SessionManager."""

    def __init__(self, chart: CompiledChart, registry: Registry, log: EventLog,
                 metrics: Metrics, *, stt: Transcriber, detector_factory: Any,
                 speech: Speech, responder: Responder, filler: AudioChunk | None = None,
                 false_interruption_ms: float = 0.0, output_rate: int = 24_000,
                 **backchannels: Any) -> None:
        super().__init__(chart, log, metrics, stt=stt, detector_factory=detector_factory,
                         filler=filler, false_interruption_ms=false_interruption_ms,
                         output_rate=output_rate, **backchannels)
        ports = Ports(playback=self.router, filler=self.router, responder=responder,
                      speech=speech)
        self.manager = SessionManager(chart, registry, ports, self.clock, log,
                                      MemorySnapshotStore())
        self._lifetime: contextlib.AsyncExitStack | None = None

    def _connected_sessions(self) -> list[str]:
        return list(self.manager.sessions)

    # lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._lifetime is None:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(self.manager)
                self._lifetime = stack.pop_all()

    async def stop(self) -> None:
        """Graceful: every session gets client_disconnected, then everything closes."""
        if self._lifetime is None:
            return
        for connection_id in list(self.handlers):
            await self.disconnect(connection_id)
        lifetime, self._lifetime = self._lifetime, None
        await lifetime.aclose()

    async def health(self) -> dict[str, Any]:
        """Extra `/health` fields; empty when there is nothing beyond this process."""
        return {}

    # the host's view of its sessions ----------------------------------------------
    async def live_sessions(self) -> list[SessionInfo]:
        return [SessionInfo.of(s) for _, s in sorted(self.manager.sessions.items())]

    async def session_info(self, session_id: str) -> SessionInfo | None:
        session = self.manager.get(session_id)
        return SessionInfo.of(session) if session is not None else None

    async def session_count(self) -> int:
        return len(self.manager.sessions)

    # chart versions ----------------------------------------------------------------
    def use_chart(self, chart: CompiledChart) -> None:
        """Hot reload: calls connected from now on run `chart`; calls in progress
        finish on the version they started with."""
        self.chart = chart
        self.manager.use_chart(chart)
        self.load_end_of_turn(chart)

    async def version_uses(self) -> list[VersionUse]:
        """How many live sessions run each chart version (for `/charts`)."""
        return count_versions(s.chart for s in list(self.manager.sessions.values()))

    async def _open(self, session_id: str) -> None:
        """Where the session runs: here, in this process's SessionManager."""
        await self.manager.open(session_id)

    async def disconnect(self, connection_id: str) -> None:
        handler = self.handlers.pop(connection_id, None)
        session_id = handler.session_id if handler else None
        if session_id is None or self.manager.get(session_id) is None:
            self.connections.unregister(connection_id)
            return
        done = asyncio.Event()

        async def ack() -> None:
            done.set()

        session = self.manager.get(session_id)
        if session is not None and "client_disconnected" in session.chart.events:
            self.post(session_id, "client_disconnected", {}, ack=ack)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 5.0)
        await self.manager.close(session_id)
        self.router.detach(session_id)
        self.connections.unregister(connection_id)

    # events ------------------------------------------------------------------------
    def contract(self, session_id: str) -> Mapping[str, str]:
        session = self.manager.get(session_id)
        return session.contract if session is not None else _CLOSED

    def turn_policy(self, session_id: str) -> TurnPolicy:
        session = self.manager.get(session_id)
        # parallel regions: a dialogue region may set the keys the turn-taking one does not
        return session.chart.turn_of(session.configuration) if session is not None \
            else NO_POLICY

    def post(self, session_id: str, event_type: str, payload: dict[str, Any],
             *, ack: Any = None, source: str = "fastrtc") -> bool:
        # The correlation id is the turn the event would open in its session, made
        # where the session runs: here, and on a Redis worker as it dispatches.
        session = self.manager.get(session_id)
        cid = session.next_correlation_id() if session is not None else None
        event = VoiceEvent.model_construct(
            event_type=event_type, session_id=session_id, source=source,
            timestamp=time.time(), correlation_id=cid, payload=payload, metadata={})
        return self.manager.route(event, ack=ack)
