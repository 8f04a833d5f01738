"""FastRTC's WebRTC and WebSocket transports behind our own Starlette routes.

We use FastRTC's connection machinery (`WebRTCConnectionMixin`, its
`WebSocketHandler`) without its Gradio UI, and put validation in front of
it: a bad offer, bad JSON or an unknown session gets a 4xx JSON answer,
never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastrtc.webrtc_connection_mixin import WebRTCConnectionMixin
from fastrtc.websocket import WebSocketHandler
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.fastrtc.handler import TurnStreamHandler

CONNECTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_OFFER_BYTES = 64 * 1024
_FAILED_STATUS = {"connection_already_exists": 409, "concurrency_limit_reached": 429,
                  "unknown_connection": 404, "connection_closed": 410,
                  "invalid_candidate_format": 400}


class OfferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sdp: str | None = Field(default=None, max_length=MAX_OFFER_BYTES)
    candidate: dict[str, Any] | None = None
    type: str = Field(max_length=32)
    webrtc_id: str

    @field_validator("webrtc_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not CONNECTION_ID.match(value):
            raise ValueError("webrtc_id must be 1-128 letters, digits or _ . : -")
        return value


def bad_request(message: str, status: int = 400, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class TurnRTC(WebRTCConnectionMixin):
    """The WebRTC side: one `TurnStreamHandler` copy per connection."""

    def __init__(self, handler: TurnStreamHandler, concurrency_limit: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.event_handler = handler
        self.modality = "audio"
        self.mode = "send-receive"
        self.concurrency_limit = concurrency_limit
        self.time_limit = None
        self.allow_extra_tracks = False
        self.rtc_configuration = None
        self.server_rtc_configuration = None

    async def offer_endpoint(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_OFFER_BYTES:
            return bad_request(f"offer too large ({len(raw)} bytes, limit {MAX_OFFER_BYTES})", 413)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return bad_request(f"body is not JSON: {exc}")
        except RecursionError:
            return bad_request("body is not usable JSON: nested too deeply")
        try:
            body = OfferBody.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "(body)"
            return bad_request(f"bad offer: {where}: {first['msg']}")
        if body.type == "offer" and not body.sdp:
            return bad_request("bad offer: sdp is required when type is 'offer'")
        if body.type not in ("offer", "ice-candidate"):
            return bad_request("bad offer: type must be 'offer' or 'ice-candidate'")
        if body.type == "offer" and body.sdp is not None and (
                not body.sdp.lstrip().startswith("v=0") or "m=audio" not in body.sdp):
            return bad_request("bad offer: the SDP could not be used (it must start with v=0 "
                               "and offer an audio section, m=audio)")
        try:
            result = await self.handle_offer(  # type: ignore[no-untyped-call]
                body.model_dump(),
                                             set_outputs=self.set_additional_outputs(body.webrtc_id))
        except Exception as exc:  # aiortc rejects malformed SDP with assorted exceptions
            self.clean_up(body.webrtc_id)
            return bad_request(f"bad offer: the SDP could not be used ({type(exc).__name__}: "
                               f"{str(exc)[:200]})")
        if isinstance(result, Response):
            try:
                content = json.loads(bytes(result.body))
            except ValueError:
                return result
            if content.get("status") == "failed":
                error = str(content.get("meta", {}).get("error", "failed"))
                return bad_request(error, _FAILED_STATUS.get(error, 400), meta=content.get("meta"))
            return JSONResponse(content)
        return JSONResponse(result)


class ValidatingWebSocket:
    """Wraps a WebSocket for FastRTC's `WebSocketHandler`: messages that are not
    valid JSON objects with a known `event` are answered with an error message
    and skipped; `transcript` messages go to the unified transcript path."""

    EVENTS = frozenset({"start", "media", "stop", "ping", "transcript"})

    def __init__(self, websocket: WebSocket,
                 on_transcript: Callable[[str | None, str, bool], Awaitable[bool]]) -> None:
        self._ws = websocket
        self._on_transcript = on_transcript
        self.connection_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def _error(self, message: str) -> None:
        await self._ws.send_json({"event": "error", "error": message})

    async def receive_json(self) -> dict[str, Any]:
        while True:
            received = await self._ws.receive()  # size: limits.max_ws_message_bytes (server)
            if received["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
            text = received.get("text")
            if text is None:
                await self._error("binary messages are not accepted: send JSON text")
                continue
            try:
                message = json.loads(text)
            except ValueError as exc:
                await self._error(f"not JSON: {exc}")
                continue
            except RecursionError:
                await self._error("not usable JSON: nested too deeply")
                continue
            problem = self._problem(message)
            if problem:
                await self._error(problem)
                continue
            if message["event"] == "start":
                self.connection_id = message["websocket_id"]
            if message["event"] == "transcript":
                ok = await self._on_transcript(self.connection_id, message["text"],
                                               bool(message.get("final", True)))
                if not ok:
                    await self._error("transcript not delivered: no session for this "
                                      "connection (send a start event first)")
                continue
            return dict(message)

    def _problem(self, message: Any) -> str | None:
        if not isinstance(message, dict):
            return "a message must be a JSON object"
        event = message.get("event")
        if event not in self.EVENTS:
            return f"unknown event {event!r}: use one of {', '.join(sorted(self.EVENTS))}"
        if event == "start":
            sid = message.get("websocket_id")
            if not isinstance(sid, str) or not CONNECTION_ID.match(sid):
                return "start needs websocket_id: 1-128 letters, digits or _ . : -"
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                return "media needs media.payload: base64 mu-law audio"
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return "media.payload is not valid base64"
            if self.connection_id is None:
                return "send a start event before media"
        if event == "transcript" and not isinstance(message.get("text"), str):
            return "transcript needs text (a string)"
        if event == "transcript" and not _is_unicode(message["text"]):
            return "transcript text is not valid Unicode (an unpaired surrogate such as \\ud800)"
        return None


def _is_unicode(text: str) -> bool:
    """False for text JSON can hold but UTF-8 cannot (`\\ud800`): no log line could carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def serve_websocket(websocket: WebSocket, handler: TurnStreamHandler,
                          on_transcript: Callable[[str | None, str, bool], Awaitable[bool]],
                          on_closed: Callable[[TurnStreamHandler], Awaitable[None]]) -> None:
    """One WebSocket audio connection: FastRTC's handler over a validating socket."""
    handler.phone_mode = False
    wrapped = ValidatingWebSocket(websocket, on_transcript)

    async def set_handler(stream_id: str, ws_handler: WebSocketHandler) -> None:
        return None

    ws = WebSocketHandler(handler, set_handler, lambda stream_id: None,
                          lambda stream_id: lambda outputs: None)
    ws.start_up_task = None  # type: ignore[assignment]  # read on close, set only by `start`
    try:
        await ws.handle_websocket(wrapped)  # type: ignore[arg-type]
    except WebSocketDisconnect:
        pass
    finally:
        await on_closed(handler)
