"""The phone's routes (Twilio Media Streams, adapters/fastrtc/telephone.py):

- `POST /telephone/incoming` (GET too): the TwiML that connects a call to
  this server's Media Streams WebSocket (the Twilio number's voice webhook);
- `WS /telephone/handler`: the call's audio, one session per `streamSid`,
  running the same chart as `/webrtc` and `/websocket`.

With a Twilio auth token (`telephone.auth_token_env`) both refuse a request whose
`X-Twilio-Signature` does not sign it (adapters/server/twilio_signature.py): 403 for
the webhook, and the handshake refused (close 1008) for the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from adapters.fastrtc.telephone import PhoneStreamHandler, serve_telephone, twiml
from adapters.server.twilio_signature import is_valid
from engine.runtime.logs import EventLog

if TYPE_CHECKING:
    from adapters.server.voice_routes import VoiceState

TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
SIGNATURE = "x-twilio-signature"
PHONE_STREAM = "/telephone/handler"


def telephone_routes(state: VoiceState, log: EventLog, *, auth_token: str | None = None,
                     public_url: str | None = None) -> list[BaseRoute]:
    """`auth_token`: Twilio's, to check signatures (None: unchecked); `public_url`: the
    base URL Twilio uses, when a proxy stands between (None: this request's own)."""

    def signed_url(scheme: str, host: str, path: str, query: bytes) -> str:
        base = public_url.rstrip("/") if public_url else f"{scheme}://{host}"
        if public_url and scheme in ("ws", "wss"):
            base = "ws" + base[len("http"):]   # https://h → wss://h, as the TwiML gives it
        return base + path + (f"?{query.decode('latin-1')}" if query else "")

    def refuse(path: str, headers: Mapping[str, str]) -> None:
        log.emit("WARNING", "-", "request_refused",
                 f"🚫 {path} refused: X-Twilio-Signature "
                 f"{'does not sign this request' if headers.get(SIGNATURE) else 'missing'} "
                 "(telephone.auth_token_env)",
                 {"path": path, "reason": "twilio_signature"})

    async def incoming(request: Request) -> Response:
        if state.service is None:
            return JSONResponse({"error": "live voice is not running on this server"}, 503)
        if auth_token is not None:
            form = await request.form() if request.method == "POST" else None
            params = [(k, str(v)) for k, v in form.multi_items()] if form else []
            url = signed_url(request.url.scheme, request.headers.get("host", ""),
                             request.scope["path"], request.scope.get("query_string", b""))
            if not is_valid(auth_token, url, params, request.headers.get(SIGNATURE)):
                refuse(request.scope["path"], request.headers)
                return JSONResponse({"error": "X-Twilio-Signature does not sign this "
                                     "request (telephone.auth_token_env)"}, 403)
        try:
            body = twiml(request.headers.get("host", ""), public_url)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response(body, media_type="application/xml")

    async def handler(websocket: WebSocket) -> None:
        service = state.service
        if service is None:
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        if auth_token is not None:
            url = signed_url(websocket.url.scheme, websocket.headers.get("host", ""),
                             websocket.scope["path"], websocket.scope.get("query_string", b""))
            if not is_valid(auth_token, url, [], websocket.headers.get(SIGNATURE)):
                refuse(websocket.scope["path"], websocket.headers)
                await websocket.close(code=POLICY_VIOLATION)
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
        WebSocketRoute(PHONE_STREAM, handler),
    ]
