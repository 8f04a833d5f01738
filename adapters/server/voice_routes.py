"""HTTP and WebSocket routes of the live voice side.

`/webrtc/offer` and `/websocket/offer` (FastRTC transports), `/fastrtc` (the
browser page), `/sessions`, `/sessions/{id}`, `/sessions/{id}/events`
(server-sent log lines for the page), `/latency/{id}` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from adapters.fastrtc.handler import TurnStreamHandler
from adapters.fastrtc.transport import TurnRTC, bad_request, serve_websocket
from adapters.server.loghub import LogHub
from adapters.server.metrics import Metrics
from adapters.server.voice import VoiceFrontEnd

PAGE = Path(__file__).with_name("static") / "fastrtc.html"
WEBRTC_OFFER, WEBSOCKET_OFFER = "/webrtc/offer", "/websocket/offer"
OFFER_PATHS = frozenset({WEBRTC_OFFER, WEBSOCKET_OFFER})   # rate limited (limits.py)
JSON_PATHS = frozenset({WEBRTC_OFFER})   # POSTs that must say application/json (origin.py)


class VoiceState:
    """What the routes share: set by the app's lifespan once the service runs."""

    def __init__(self, hub: LogHub, metrics: Metrics) -> None:
        self.hub = hub
        self.metrics = metrics
        self.service: VoiceFrontEnd | None = None   # and a VoiceHost (voice_host.py)
        self.rtc: TurnRTC | None = None
        self.session_count = 0       # what `turnchart_active_sessions` shows (at scrape)
        # An ended call's latency, kept as long as the inspector keeps the call (the app
        # sets it to Inspector.ended_latency); None: ended calls are 404 at once.
        self.ended_latency: Callable[[str], dict[str, Any] | None] | None = None


def voice_routes(state: VoiceState) -> list[BaseRoute]:
    def unavailable() -> JSONResponse:
        return bad_request("live voice is not running on this server", 503)

    async def offer(request: Request) -> Response:
        if state.rtc is None:
            return unavailable()
        return await state.rtc.offer_endpoint(request)

    async def websocket_offer(websocket: WebSocket) -> None:
        service = state.service
        if service is None:
            await websocket.close(code=1013)
            return

        async def on_transcript(connection_id: str | None, text: str, final: bool) -> bool:
            if connection_id is None:
                return False
            return service.post_transcript(connection_id, text, final=final, source="websocket")

        async def on_closed(handler: TurnStreamHandler) -> None:
            await handler.detach()

        await serve_websocket(websocket, service.new_handler(), on_transcript, on_closed)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def sessions(request: Request) -> JSONResponse:
        service = state.service
        if service is None:
            return JSONResponse({"sessions": []})
        return JSONResponse({"sessions": [s.summary() for s in await service.live_sessions()]})

    async def unknown_session(session_id: str) -> JSONResponse:
        active = ([s.session_id for s in await state.service.live_sessions()]
                  if state.service else [])
        return JSONResponse({"error": f"no session '{session_id}'", "active_sessions": active[:50]},
                            status_code=404)

    async def session_detail(request: Request) -> JSONResponse:
        sid = request.path_params["session_id"]
        info = await state.service.session_info(sid) if state.service else None
        if info is None:
            return await unknown_session(sid)
        return JSONResponse(info.detail())

    async def latency(request: Request) -> JSONResponse:
        sid = request.path_params["session_id"]
        info = await state.service.session_info(sid) if state.service else None
        if info is None:
            ended = state.ended_latency(sid) if state.ended_latency else None
            if ended is None:
                return await unknown_session(sid)
            return JSONResponse({"session_id": sid, "transitions": ended, "ended": True})
        return JSONResponse({"session_id": sid, "transitions": dict(info.latency),
                             "ended": False})

    async def events(request: Request) -> Response:
        sid = request.path_params["session_id"]
        queue = state.hub.subscribe(sid)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        record = await asyncio.wait_for(queue.get(), 15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if record is None:   # the server is stopping
                        return
                    yield f"data: {json.dumps(record, ensure_ascii=False, default=str)}\n\n"
            finally:
                state.hub.unsubscribe(sid, queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        if state.service is not None:
            state.session_count = await state.service.session_count()
            health = await state.service.health()
            streams = health.get("streams", {})
            for kind in ("claimed", "delivered", "acked", "duplicates", "invalid"):
                if health.get("workers"):
                    state.metrics.worker_counters.labels(kind).set(
                        sum(int(w.get(kind, 0)) for w in health["workers"].values()))
            if streams:  # Redis mode: refresh the stream gauges at scrape time
                state.metrics.stream_pending.set(sum(s.get("pending") or 0
                                                     for s in streams.values()))
                state.metrics.stream_lag.set(sum(s.get("lag") or 0 for s in streams.values()))
        return Response(state.metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return [
        Route(WEBRTC_OFFER, offer, methods=["POST"]),
        WebSocketRoute(WEBSOCKET_OFFER, websocket_offer),
        Route("/fastrtc", page, methods=["GET"]),
        Route("/sessions", sessions, methods=["GET"]),
        Route("/sessions/{session_id}", session_detail, methods=["GET"]),
        Route("/sessions/{session_id}/events", events, methods=["GET"]),
        Route("/latency/{session_id}", latency, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
