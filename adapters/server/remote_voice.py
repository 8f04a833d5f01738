"""Live voice when sessions run on Redis workers (`turnchart serve --redis URL`).

This front-end holds the callers' audio connections; the sessions themselves
run on `turnchart worker` processes. Events go out on the session streams
(`RedisEventBus`); contracts and answer audio come back on the output streams
(`OutputFollower`, see adapters/redis/output_link.py). A worker that dies
mid-turn is replaced by another that resumes the session from its snapshot;
the caller's connection stays here and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from adapters.config import BACKCHANNEL_END_MS, BACKCHANNEL_MAX_MS, DEFAULT_BACKCHANNELS
from adapters.redaction import redact_credentials
from adapters.redis.bus import RedisEventBus
from adapters.redis.connection import CONNECTION_ERRORS, Client, error_text, open_client
from adapters.redis.output_link import OutputFollower
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceFrontEnd
from adapters.server.voice_host import SessionInfo
from engine.chart.catalog import VersionUse
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.chart.turn import NO_POLICY, TurnPolicy
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog
from engine.runtime.ports import AudioChunk
from engine.runtime.trace import Contract, WorkerSessionReleased, WorkerState

_CLOSED: Mapping[str, str] = MappingProxyType({"microphone": "closed", "playback": "stopped"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _active(value: Any) -> tuple[str, ...] | None:
    """A contract op's `active` field (charts with parallel regions): a JSON list of
    leaf states; None when absent, or not such a list."""
    if value is None:
        return None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        leaves = json.loads(_text(value))
        if isinstance(leaves, list) and leaves and all(isinstance(s, str) for s in leaves):
            return tuple(leaves)
    return None


class RemoteVoiceService(VoiceFrontEnd):
    """The Redis `VoiceHost`: the sessions live on Redis workers; what it knows of
    them is what the live workers report (`Keys.worker_sessions`, once a second)."""

    def __init__(self, chart: CompiledChart, registry: Registry, log: EventLog,
                 metrics: Metrics, *, redis_url: str, stt: Any, detector_factory: Any,
                 filler: AudioChunk | None = None, false_interruption_ms: float = 0.0,
                 output_rate: int = 24_000, backchannels: Any = DEFAULT_BACKCHANNELS,
                 backchannel_max_ms: float = BACKCHANNEL_MAX_MS,
                 backchannel_end_ms: float = BACKCHANNEL_END_MS,
                 **_on_the_workers: Any) -> None:
        # registry, speech and responder (`_on_the_workers`) are the workers' business.
        super().__init__(chart, log, metrics, stt=stt, detector_factory=detector_factory,
                         filler=filler, false_interruption_ms=false_interruption_ms,
                         output_rate=output_rate, backchannels=backchannels,
                         backchannel_max_ms=backchannel_max_ms,
                         backchannel_end_ms=backchannel_end_ms)
        self.redis_url = redis_url
        self.bus = RedisEventBus.from_url(redis_url, self.log)
        self.out_redis: Client = open_client(redis_url)   # bytes: audio stays binary
        self.follower = OutputFollower(self.out_redis, self._on_op, url=redis_url)
        self.contracts: dict[str, Mapping[str, str]] = {}
        self.worker_states: dict[str, str] = {}   # the state each worker last reported
        # ... and the configuration it makes in this front-end's chart (root first; with
        # parallel regions every region's leaf and their parents): the turn policy's key
        self.configurations: dict[str, tuple[str, ...]] = {}
        self.muted: set[str] = set()   # barge-in decided here; drop audio until the clear
        self._outbox: asyncio.Queue[VoiceEvent] = asyncio.Queue()
        self.publish_retry_s = 10.0   # how long an event waits out a Redis outage, in order
        self._lifetime: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._loops_running())
            self._lifetime = stack.pop_all()
        await self._say_if_unreachable()

    @contextlib.asynccontextmanager
    async def _loops_running(self) -> AsyncIterator[None]:
        """The output follower and the publisher, in one task group, until `stop()`."""
        async with asyncio.TaskGroup() as tg:
            loops = [tg.create_task(self.follower.run(), name="redis-output-follower"),
                     tg.create_task(self._publisher(), name="redis-publisher")]
            try:
                yield
            finally:
                self.follower.stop()   # ends even if its cancellation is lost in redis-py
                for task in loops:
                    task.cancel()

    async def _say_if_unreachable(self) -> None:
        """Redis down at start-up is said at once; the server still starts, /health
        answers 503 with the reason, and calls work as soon as Redis is back."""
        try:
            await asyncio.wait_for(self.out_redis.ping(), 2.0)
        except Exception as exc:
            where = redact_credentials(self.redis_url)
            self.log.emit("WARNING", "-", "redis_unavailable",
                          f"🔌 front-end: Redis at {where} is unreachable: {error_text(exc)}; "
                          f"serving anyway (/health: 503 until it is back)",
                          {"client": "front-end", "url": where, "error": error_text(exc)})

    async def stop(self) -> None:
        for connection_id in list(self.handlers):
            await self.disconnect(connection_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 5.0)
        lifetime, self._lifetime = self._lifetime, None
        if lifetime is not None:
            await lifetime.aclose()
        await self.bus.aclose()
        await self.out_redis.aclose()

    async def health(self) -> dict[str, Any]:
        """Redis reachability and, per session held here, its stream's lag."""
        try:
            await asyncio.wait_for(self.out_redis.ping(), 2.0)
        except Exception as exc:
            return {"redis": f"unreachable: {error_text(exc)}"}
        workers: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            workers = await self._live_worker_stats()
        streams = {}
        for session_id in list(self.router.streams)[:50]:
            with contextlib.suppress(Exception):
                stats = await self.bus.stream_stats(session_id)
                streams[session_id] = {"pending": stats.get("pending"), "lag": stats.get("lag")}
        return {"redis": "ok", "streams": streams, "workers": workers}

    async def _live_workers(self) -> list[str]:
        """Workers heard from in the last 2 s (they heartbeat every tick)."""
        seconds, micros = await self.out_redis.time()
        now_ms = seconds * 1000 + micros // 1000
        return sorted(_text(w) for w in await self.out_redis.zrangebyscore(
            self.bus.keys.workers, now_ms - 2000, "+inf"))

    async def _live_worker_stats(self) -> dict[str, Any]:
        """The stats each live worker published."""
        alive = set(await self._live_workers())
        return {_text(worker): json.loads(raw)
                for worker, raw in (await self.out_redis.hgetall(
                    self.bus.keys.worker_stats)).items()
                if _text(worker) in alive}

    # the host's view of its sessions ----------------------------------------------
    def _connected_sessions(self) -> list[str]:
        """A connection resolves to the session this front-end opened for it."""
        return list(self.router.streams)

    async def _reported_sessions(self) -> dict[str, SessionInfo]:
        """Every session the live workers report running. A session moving between
        two workers may be in both reports for a moment: the newer report wins."""
        workers = await self._live_workers()
        if not workers:
            return {}
        found: dict[str, tuple[int, SessionInfo]] = {}
        raws = await self.out_redis.hmget(self.bus.keys.worker_sessions, workers)
        for worker, raw in zip(workers, raws, strict=True):
            if raw is None:
                continue
            report = json.loads(raw)
            at_ms = int(report.get("at_ms", 0))
            for sid, body in report.get("sessions", {}).items():
                if sid not in found or found[sid][0] < at_ms:
                    found[sid] = (at_ms, SessionInfo.from_report(sid, body, worker))
        return {sid: info for sid, (_, info) in found.items()}

    async def live_sessions(self) -> list[SessionInfo]:
        """Every live session on the live workers (none while Redis is down)."""
        try:
            found = await asyncio.wait_for(self._reported_sessions(), 2.0)
        except Exception:
            return []
        return [found[sid] for sid in sorted(found)]

    async def session_info(self, session_id: str) -> SessionInfo | None:
        try:
            found = await asyncio.wait_for(self._reported_sessions(), 2.0)
        except Exception:
            return None
        return found.get(session_id)

    async def session_count(self) -> int:
        return len(await self.live_sessions())

    def use_chart(self, chart: CompiledChart) -> None:
        """Hot reload: the workers watch their own chart files; this front-end only
        names the chart in its own log lines."""
        self.chart = chart
        self.load_end_of_turn(chart)

    async def version_uses(self) -> list[VersionUse]:
        """Sessions per chart version, summed over the live workers (they run
        the sessions and watch their own chart files); none while Redis is down."""
        try:
            stats = await asyncio.wait_for(self._live_worker_stats(), 2.0)
        except Exception:
            return []
        return [VersionUse.from_dict(v) for s in stats.values() for v in s.get("versions", [])]

    async def _publisher(self) -> None:
        """One task publishes in order; an outage holds the queue (see `_send`)."""
        while True:
            event = await self._outbox.get()
            try:
                await self._send(event.session_id, event.event_type,
                                 functools.partial(self.bus.publish, event))
            finally:
                self._outbox.task_done()

    async def _send(self, session_id: str, what: str,
                    call: Callable[[], Awaitable[object]]) -> None:
        """Publish, trying again while Redis is unreachable, for `publish_retry_s`
        (the bus de-duplicates a try that did arrive, so nothing is added twice).
        What Redis still has not taken then is reported lost by name: never silently."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.publish_retry_s
        tries = 0
        while True:
            try:
                await call()
                return
            except CONNECTION_ERRORS as exc:
                tries += 1
                if loop.time() < give_up:
                    await asyncio.sleep(min(0.5, 0.05 * 2 ** tries))
                    continue
                self.log.emit("ERROR", session_id, "event_lost",
                              f"💥 {what} for {session_id} lost: Redis did not take it within "
                              f"{self.publish_retry_s:g} s ({error_text(exc)})",
                              {"event": what, "tries": tries, "error": error_text(exc)})
                return
            except Exception as exc:
                self.report_error(session_id, "publish", exc)
                return

    # connections -------------------------------------------------------------------
    async def _open(self, session_id: str) -> None:
        """The session runs on a worker: follow its output stream from here."""
        self.follower.follow(session_id)

    async def disconnect(self, connection_id: str) -> None:
        handler = self.handlers.pop(connection_id, None)
        session_id = handler.session_id if handler else None
        if session_id is not None:
            self.post(session_id, "client_disconnected", {})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 5.0)
            await self._send(session_id, "end of session",
                             functools.partial(self.bus.end_session, session_id))
            self.follower.unfollow(session_id)
            self.router.detach(session_id)
            self.worker_states.pop(session_id, None)
            self.configurations.pop(session_id, None)
            if self.contracts.pop(session_id, None) is not None:
                self.log.publish(WorkerSessionReleased(*self.log.stamp(session_id)))
        self.connections.unregister(connection_id)

    def _note_worker_state(self, session_id: str, state: str, contract: Mapping[str, str],
                           active: tuple[str, ...] | None = None) -> None:
        """The session's state as its worker reported it with the contract (and, with
        parallel regions, every active leaf): the front-end's own log (and so
        /inspect) sees the session move."""
        if not state:
            return
        self.log.publish(WorkerState(*self.log.stamp(session_id), chart=self.chart.name,
                                     version=self.chart.version,
                                     version_hash=self.chart.version_hash, state=state,
                                     contract=Contract.of(contract), active=active))

    def _configuration(self, state: str, active: tuple[str, ...] | None) -> tuple[str, ...]:
        """The states the reported leaves make active in this front-end's chart, root
        first; () when it does not know one of them (a worker on another version)."""
        leaves = active or ((state,) if state else ())
        if not leaves or any(leaf not in self.chart.states for leaf in leaves):
            return ()
        return self.chart.ordered(s for leaf in leaves for s in self.chart.configuration_of(leaf))

    # events ------------------------------------------------------------------------
    def contract(self, session_id: str) -> Mapping[str, str]:
        return self.contracts.get(session_id, _CLOSED)

    def turn_policy(self, session_id: str) -> TurnPolicy:
        """The reported states' policy, looked up in this front-end's chart (the worker
        sends the state, with parallel regions every active leaf, with each contract;
        the policy is the chart's: `turn_of` merges every region's own keys)."""
        configuration = self.configurations.get(session_id, ())
        return self.chart.turn_of(configuration) if configuration else NO_POLICY

    def post(self, session_id: str, event_type: str, payload: dict[str, Any],
             *, ack: Any = None, source: str = "fastrtc") -> bool:
        if session_id not in self.router.streams:
            return False
        self._outbox.put_nowait(VoiceEvent.model_construct(
            event_type=event_type, session_id=session_id, source=source, timestamp=time.time(),
            correlation_id=None, payload=payload, metadata={}))
        return True

    def record_barge_in(self, session_id: str, decided_at: float, dropped: int) -> None:
        self.muted.add(session_id)
        super().record_barge_in(session_id, decided_at, dropped)

    async def _on_op(self, session_id: str, fields: dict[str, Any]) -> None:
        op = _text(fields.get("op", b""))
        stream = self.router.streams.get(session_id)
        if op == "contract":
            contract = {"microphone": _text(fields.get("microphone", "closed")),
                        "playback": _text(fields.get("playback", "stopped"))}
            # the worker merged the contract over its regions (contract_of): route by it
            self.contracts[session_id] = MappingProxyType(contract)
            state, active = _text(fields.get("state", "")), _active(fields.get("active"))
            self.worker_states[session_id] = state
            self.configurations[session_id] = self._configuration(state, active)
            self._note_worker_state(session_id, state, contract, active)
        elif stream is None:
            return
        elif op == "start":
            # A new answer begins. Audio still queued from an earlier one is stale:
            # e.g. its worker died mid-answer and the new owner speaks it again.
            self.muted.discard(session_id)
            stream.clear()
        elif op == "audio" and session_id not in self.muted:
            stream.push(AudioChunk(bytes(fields.get("pcm", b"")), float(_text(fields["ms"]))))
        elif op == "clear":
            self.muted.discard(session_id)
            stream.clear()
        elif op == "filler":
            stream.push(AudioChunk(bytes(fields.get("pcm", b"")), float(_text(fields["ms"]))),
                        filler=True)
            stream.flush(filler=True)
        elif op == "filler_cancel":
            stream.clear(filler_only=True)
