"""The live inspector: `GET /inspect` shows the chart with every live session on
it, and each session's timeline, from the server's own structured log lines.

`Inspector` is a trace listener (engine/runtime/trace.py): it gets every event,
whatever the log level. It keeps, per session, the last events in a bounded
ring buffer (for the timeline, `engine.tools.timeline`) and a small view of where
the session is (chart, state, contract, since when), built from the events
alone: `session_started` / `session_resumed`, `contract_applied`,
`state_transition`, `session_closed`. Closed sessions are kept a while so
that a call that just ended can still be looked at.

`GET /inspect/events` is a server-sent event stream: a `snapshot` of every
session on connect, then each line as a `record` event, and `: keep-alive`
comments while nothing happens. Each subscriber has a bounded queue: a
browser that cannot keep up never slows the server; its queue is dropped
and it gets `resync` followed by a fresh `snapshot`.

With `--redis`, sessions run on workers and their lines are written there,
not here. The front-end still sees each session move: a worker sends the
contract (with its state) on every state change, and the front-end logs it
as `worker_state`; the timeline then has the front-end's own lines (states as
reported, barge-ins it detected, turn latency), not the worker's effects.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from engine.chart.compiler import CompiledChart
from engine.runtime.latency import LatencyStats
from engine.runtime.manager import NO_SESSION
from engine.runtime.trace import (
    AudioOut,
    ContractApplied,
    LatencyRecorded,
    SessionClosed,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TraceEvent,
    WorkerSessionReleased,
    WorkerState,
    iso_utc,
)
from engine.tools.timeline import build_timeline

STATIC = Path(__file__).with_name("static")
_ASSETS = {"inspect.js": "text/javascript", "inspect.css": "text/css"}
_SKIPPED = (AudioOut,)
"""Events never kept or sent: one per answer-audio chunk, and nothing to draw."""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1f3b57"/>'
    '<circle cx="9" cy="16" r="5" fill="#f4b942"/><circle cx="23" cy="16" r="5" fill="#7fc8f8"/>'
    '<path d="M14 16h5M17 13l3 3-3 3" fill="none" stroke="#fff" stroke-width="2"/></svg>')
"""`/favicon.ico`: two states and a transition (SVG; browsers take it at that address)."""
ChartLookup = Callable[[str], CompiledChart | None]
_CLOSE_CHECK_S = 0.5
"""How often an idle stream looks whether the server is stopping."""


@dataclass
class SessionView:
    """Where a session is, as its lines tell it."""

    session_id: str
    chart: str | None = None
    version: int | None = None
    version_hash: str | None = None
    state: str | None = None
    active: list[str] | None = None   # parallel regions: every active leaf (else None)
    contract: dict[str, str] = field(default_factory=dict)
    since: str | None = None          # `ts` of the line that entered `state`
    since_t_ms: float | None = None
    started: bool = False             # a session_started / session_resumed line was seen
    closed_t_ms: float | None = None
    # the session's own statistics, rebuilt from its latency_recorded lines (one per
    # LatencyStats.record): what /latency/{id} answers once the call has ended
    latency: LatencyStats = field(default_factory=LatencyStats)

    @property
    def live(self) -> bool:
        return self.started and self.closed_t_ms is None

    def apply(self, event: TraceEvent) -> None:
        if isinstance(event, SessionStarted) and self.closed_t_ms is not None:
            self.latency = LatencyStats()   # a new call under an id that ended before
        if isinstance(event, LatencyRecorded):
            self.latency.record(event.source, event.target, event.latency_ms, event.dwell_ms)
        elif isinstance(event, SessionStarted | SessionResumed):
            self.chart, self.version = event.chart, event.version
            self.version_hash = event.version_hash
            self.started, self.closed_t_ms = True, None
            self.active = None
            self._enter(event.state, event)
        elif isinstance(event, StateTransition):
            self._enter(event.target, event)
            self.active = list(event.active) if event.active else None
        elif isinstance(event, ContractApplied):
            self.contract = dict(event.contract)
            if event.active:   # a chart with parallel regions: every active leaf
                self.active = list(event.active)
        elif isinstance(event, WorkerState):      # a Redis front-end: the worker's state
            if not self.started or self.closed_t_ms is not None:
                self.chart, self.version = event.chart, event.version
                self.version_hash = event.version_hash
                self.started, self.closed_t_ms = True, None
            if event.state != self.state:
                self._enter(event.state, event)
            self.active = list(event.active) if event.active else None   # parallel regions
            self.contract = {k: v for k, v in event.contract.items()
                             if k in ("microphone", "playback")}
        elif isinstance(event, SessionClosed | WorkerSessionReleased):
            self.closed_t_ms = round(event.t_ms, 3)

    def _enter(self, state: Any, event: TraceEvent) -> None:
        if isinstance(state, str):
            self.state, self.since = state, iso_utc(event.wall)
            self.since_t_ms = round(event.t_ms, 3)

    def as_dict(self, charts: ChartLookup) -> dict[str, Any]:
        chart = charts(self.chart) if self.chart else None
        configuration = [self.state] if self.state else []
        leaves = self.active or ([self.state] if self.state else [])
        if chart is not None and leaves and all(s in chart.states for s in leaves):
            configuration = list(chart.ordered(
                s for leaf in leaves for s in chart.configuration_of(leaf)))
        return {"session_id": self.session_id, "live": self.live, "chart": self.chart,
                "version": self.version, "version_hash": self.version_hash,
                "state": self.state, "configuration": configuration,
                **({"active": self.active} if self.active else {}),   # parallel regions
                "contract": dict(self.contract), "since": self.since,
                "since_t_ms": self.since_t_ms, "closed_t_ms": self.closed_t_ms}


@dataclass
class _Lines:
    records: deque[TraceEvent]
    dropped: int = 0


RESYNC = ""
"""Queued in place of what a subscriber missed: its stream sends `resync` and a snapshot."""


class Subscriber:
    """One `/inspect/events` stream: a bounded queue of encoded SSE messages."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def offer(self, message: str) -> None:
        if self.overflowed:
            return   # a RESYNC is already queued; the snapshot it brings covers this line
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    def resynced(self) -> None:
        self.overflowed = False


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


class Inspector:
    """A trace listener that keeps what `/inspect` shows; see the module docstring."""

    def __init__(self, charts: ChartLookup, now_t_ms: Callable[[], float], *,
                 mode: str = "memory", keep_lines: int = 600, keep_closed: int = 50,
                 keep_closed_ms: float = 600_000.0, queue_size: int = 1_000) -> None:
        self.charts = charts
        self.now_t_ms = now_t_ms
        self.mode = mode
        self.keep_lines = keep_lines
        self.keep_closed = keep_closed
        self.keep_closed_ms = keep_closed_ms
        self.queue_size = queue_size
        self.views: dict[str, SessionView] = {}
        self.lines: dict[str, _Lines] = {}
        self._closed: OrderedDict[str, float] = OrderedDict()  # session → t_ms closed, oldest first
        self.subscribers: set[Subscriber] = set()
        self.closing = False

    def close_streams(self) -> None:
        """The server is stopping: open streams end within `_CLOSE_CHECK_S` (they never
        end by themselves, and the server waits for open responses). Only sets a flag,
        so a signal handler may call it."""
        self.closing = True

    # -------------------------------------------------------------- listener
    def __call__(self, event: TraceEvent) -> None:
        sid = event.session_id
        if sid == NO_SESSION or isinstance(event, _SKIPPED):
            return
        lines = self.lines.get(sid)
        if lines is None:
            lines = self.lines[sid] = _Lines(deque(maxlen=self.keep_lines))
        if len(lines.records) == self.keep_lines:
            lines.dropped += 1
        lines.records.append(event)
        view = self.views.get(sid)
        if view is None:
            view = self.views[sid] = SessionView(sid)
        view.apply(event)
        if view.live:
            self._closed.pop(sid, None)   # started, or resumed after a close
        else:
            # Closed sessions, and ids with lines but no session here (Redis front-ends),
            # are kept for a while and a number, oldest dropped first. A late line of a
            # closed session does not make it young again.
            at = round(event.t_ms, 3)
            if isinstance(event, SessionClosed) or not view.started:
                self._closed[sid] = at
                self._closed.move_to_end(sid)
            self._evict(at)
        if self.subscribers:
            message = sse("record", event.to_record())
            for subscriber in list(self.subscribers):
                subscriber.offer(message)

    def _evict(self, now_t_ms: float) -> None:
        while self._closed:
            sid, closed_at = next(iter(self._closed.items()))
            recent = now_t_ms - closed_at <= self.keep_closed_ms
            if len(self._closed) <= self.keep_closed and recent:
                return
            del self._closed[sid]
            self.views.pop(sid, None)
            self.lines.pop(sid, None)

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> dict[str, Any]:
        """Every session kept (live first, then recently closed), and the server's time."""
        views = sorted(self.views.values(), key=lambda v: (not v.live, v.session_id))
        return {"server_time": datetime.now(UTC).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "t_ms": round(self.now_t_ms(), 3), "mode": self.mode,
                "sessions": [v.as_dict(self.charts) for v in views]}

    def ended_latency(self, session_id: str) -> dict[str, Any] | None:
        """`/latency/{id}` of a call that has ended: its transitions' latency and dwell,
        kept as long as the call is (`keep_closed` calls, `keep_closed_ms`); None for a
        live or unknown one."""
        view = self.views.get(session_id)
        if view is None or not view.started or view.live:
            return None
        return view.latency.as_dict()

    def timeline(self, session_id: str) -> dict[str, Any] | None:
        lines = self.lines.get(session_id)
        if lines is None:
            return None
        view = self.views.get(session_id)
        now = self.now_t_ms() if view is not None and view.live else None
        timeline = build_timeline(session_id, lines.records, now_t_ms=now,
                                  dropped_lines=lines.dropped)
        return {**timeline.as_dict(), "live": bool(view and view.live)}

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_size)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)


def inspect_routes(inspector: Inspector, charts: Callable[[], list[CompiledChart]], *,
                   heartbeat_s: float = 15.0) -> list[BaseRoute]:
    """`/inspect`, its assets, `/inspect/events` and `/inspect/sessions/{id}`."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse((STATIC / "inspect.html").read_text(encoding="utf-8"))

    def asset(name: str) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            return Response((STATIC / name).read_text(encoding="utf-8"),
                            media_type=f"{_ASSETS[name]}; charset=utf-8")
        return serve

    def snapshot() -> dict[str, Any]:
        return {**inspector.snapshot(), "charts": [
            {"name": c.name, "version": c.version, "version_hash": c.version_hash,
             "svg": f"/charts/{c.name}.svg"} for c in charts()]}

    async def events(request: Request) -> Response:
        subscriber = inspector.subscribe()
        first = sse("snapshot", snapshot())  # taken with the subscription: nothing falls between

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n" + first
                step = min(heartbeat_s, _CLOSE_CHECK_S)
                idle_s = 0.0
                while not inspector.closing:
                    try:
                        message = await asyncio.wait_for(subscriber.queue.get(), step)
                        idle_s = 0.0
                    except TimeoutError:
                        idle_s += step
                        if idle_s < heartbeat_s:
                            continue
                        idle_s, message = 0.0, ": keep-alive\n\n"
                    if message == RESYNC:
                        subscriber.resynced()
                        message = sse("resync", {"reason": "the page fell behind; lines "
                                                 "were dropped"}) + sse("snapshot", snapshot())
                    yield message
            finally:
                inspector.unsubscribe(subscriber)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def session_timeline(request: Request) -> JSONResponse:
        sid = request.path_params["session_id"]
        timeline = inspector.timeline(sid)
        if timeline is None:
            known = sorted(inspector.lines)
            return JSONResponse({"error": f"no session '{sid}' in the inspector (it keeps live "
                                          f"sessions and the last {inspector.keep_closed} closed "
                                          "ones)", "sessions": known[:50]}, status_code=404)
        return JSONResponse(timeline)

    async def favicon(request: Request) -> Response:
        """Every page load asks for it; a 404 was a console error each time."""
        return Response(FAVICON, media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    return [
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/inspect", page, methods=["GET"]),
        Route("/inspect/events", events, methods=["GET"]),
        Route("/inspect/sessions/{session_id}", session_timeline, methods=["GET"]),
        *[Route(f"/inspect/{name}", asset(name), methods=["GET"]) for name in _ASSETS],
    ]
