"""The phone's routes (Twilio Media Streams, adapters/fastrtc/telephone.py):

- `POST /telephone/incoming` (GET too): the TwiML that connects a call to
  this server's Media Streams WebSocket (the Twilio number's voice webhook);
- `WS /telephone/handler`: the call's audio, one session per `streamSid`,
  running the same chart as `/webrtc` and `/websocket`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from adapters.fastrtc.telephone import PhoneStreamHandler, serve_telephone, twiml
from engine.runtime.logs import EventLog

if TYPE_CHECKING:
    from adapters.server.voice_routes import VoiceState

TRY_AGAIN_LATER = 1013


def telephone_routes(state: VoiceState, log: EventLog) -> list[BaseRoute]:
    async def incoming(request: Request) -> Response:
        if state.service is None:
            return JSONResponse({"error": "live voice is not running on this server"}, 503)
        try:
            body = twiml(request.headers.get("host", ""))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response(body, media_type="application/xml")

    async def handler(websocket: WebSocket) -> None:
        service = state.service
        if service is None:
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        limit = state.rtc.concurrency_limit if state.rtc is not None else None
        if limit is not None and len(service.handlers) >= limit:
            log.emit("WARNING", "-", "request_refused",
                     f"🚫 phone call refused: {limit} calls already (voice.concurrency_limit)",
                     {"path": "/telephone/handler", "limit": limit})
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        phone = PhoneStreamHandler(service, output_rate=service.output_rate)
        await serve_telephone(websocket, phone, log)

    return [
        Route("/telephone/incoming", incoming, methods=["GET", "POST"]),
        WebSocketRoute("/telephone/handler", handler),
    ]
