"""Input limits in front of the whole app (config `limits:`).

- a request body over `max_body_bytes` gets 413 JSON, whether it announced its
  size (Content-Length) or streams it (chunked): the app never reads past it;
- a WebSocket message over `max_ws_message_bytes` gets an error message, then
  the connection is closed with 1009 and the app sees a plain disconnect (so a
  call ends the usual way, with `client_disconnected`);
- offers (a WebRTC `type: offer` POST, a WebSocket opening) are rate limited per
  client address with a token bucket: over it, 429 JSON with Retry-After.
  Trickled ICE candidates for an offer already made do not count.

One ASGI middleware rather than checks in each route, so that routes added
later are covered too and a refused request never reaches a handler. Every
refusal is one WARNING log line (`request_refused`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Collection
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.runtime.logs import EventLog

NO_SESSION = "-"
WS_MESSAGE_TOO_BIG = 1009       # RFC 6455: "message too big"
WS_POLICY_VIOLATION = 1008      # used to refuse an opening when the server cannot answer 429


class OfferRateLimit:
    """A token bucket per client address: up to `per_minute` offers at once,
    refilled continuously at `per_minute` per 60 s."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        if per_minute < 1:
            raise ValueError(f"offers_per_minute must be at least 1, got {per_minute}")
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0           # tokens per second
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}   # client → (tokens, when)

    def take(self, client: str) -> float:
        """0.0 when `client` may make an offer now (one token taken); otherwise
        the seconds until it may."""
        now = self.clock()
        tokens, when = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)  # most recent last
        if len(self._buckets) > self.max_clients:
            self._forget(now)
        return wait

    def _forget(self, now: float) -> None:
        """Drop buckets that have refilled (the same as no bucket); if a flood of
        addresses leaves none such, drop the least recently seen."""
        full_after = self.capacity / self.rate
        for client in [c for c, (_, when) in self._buckets.items() if now - when >= full_after]:
            del self._buckets[client]
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]


class _BodyTooLarge(Exception):
    """Raised from `receive` inside the app once the body passes the limit."""


class InputLimits:
    """ASGI middleware enforcing the limits of the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_ws_message_bytes: int,
                 offer_paths: Collection[str], offers: OfferRateLimit,
                 log: EventLog | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_ws_message_bytes = max_ws_message_bytes
        self.offer_paths = frozenset(offer_paths)
        self.offers = offers
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # HTTP ----------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._body_refused(scope, receive, send, declared)
            return
        if scope["path"] in self.offer_paths and scope["method"] == "POST":
            await self._offer(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the 413 below is the answer, whatever the app made of it
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):   # raised inside the app by our receive
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._body_refused(scope, receive, send, received)

    async def _offer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The body is small (limited), so read it here: only a real offer counts."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._body_refused(scope, receive, send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _is_an_offer(body):
            wait = self.offers.take(_client(scope))
            if wait > 0.0:
                await self._rate_limited(scope, receive, send, wait)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _body_refused(self, scope: Scope, receive: Receive, send: Send,
                            size: int) -> None:
        limit = self.max_body_bytes
        self._refused(scope, "body_too_large", 413,
                      f"request body too large ({size} bytes or more; limit {limit})",
                      {"bytes": size, "limit_bytes": limit})
        await JSONResponse({"error": f"request body too large: the limit is {limit} bytes "
                                     "(limits.max_body_bytes)", "limit_bytes": limit},
                           status_code=413, headers={"Connection": "close"})(scope, receive, send)

    async def _rate_limited(self, scope: Scope, receive: Receive, send: Send,
                            wait: float) -> None:
        retry_after = max(1, math.ceil(wait))
        per_minute = self.offers.per_minute
        self._refused(scope, "rate_limited", 429,
                      f"too many offers from {_client(scope)} (limit {per_minute}/min)",
                      {"retry_after_s": retry_after, "limit_per_minute": per_minute})
        await JSONResponse({"error": f"too many offers from this address: the limit is "
                                     f"{per_minute} per minute (limits.offers_per_minute); "
                                     f"retry in {retry_after} s",
                            "retry_after_s": retry_after, "limit_per_minute": per_minute},
                           status_code=429,
                           headers={"Retry-After": str(retry_after)})(scope, receive, send)

    # WebSocket -----------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in self.offer_paths:
            wait = self.offers.take(_client(scope))
            if wait > 0.0:
                await receive()  # websocket.connect
                if "websocket.http.response" in scope.get("extensions", {}):
                    await self._rate_limited(scope, receive, send, wait)
                else:
                    self._refused(scope, "rate_limited", WS_POLICY_VIOLATION,
                                  "too many offers", {"retry_after_s": math.ceil(wait)})
                    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION,
                                "reason": "too many offers; retry later"})
                return
        closed = False
        limit = self.max_ws_message_bytes

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] != "websocket.receive":
                return message
            size = _message_size(message, limit)
            if size <= limit:
                return message
            closed = True
            self._refused(scope, "ws_message_too_large", WS_MESSAGE_TOO_BIG,
                          f"WebSocket message too large ({size} bytes; limit {limit}): closed",
                          {"bytes": size, "limit_bytes": limit})
            error = (f"message too large: {size} bytes, the limit is {limit} "
                     "(limits.max_ws_message_bytes); closing")
            await send({"type": "websocket.send",
                        "text": json.dumps({"event": "error", "error": error})})
            await send({"type": "websocket.close", "code": WS_MESSAGE_TOO_BIG,
                        "reason": "message too big"})
            return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG,
                    "reason": "message too big"}

        async def guarded_send(message: Message) -> None:
            if not closed:  # after our close, what the app still sends goes nowhere
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _refused(self, scope: Scope, reason: str, status: int, what: str,
                 data: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.emit("WARNING", NO_SESSION, "request_refused", f"🚫 {what}",
                          {"reason": reason, "status": status, "path": scope["path"],
                           "client": _client(scope), **data})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length itself
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _is_an_offer(body: bytes) -> bool:
    """Everything but a trickled ICE candidate counts, garbage included."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):   # RecursionError: nested too deeply ("[[[…")
        return True
    return not (isinstance(data, dict) and data.get("type") == "ice-candidate")


def _message_size(message: Message, limit: int) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text: str = message.get("text") or ""
    if len(text) > limit or len(text) * 4 <= limit:  # UTF-8: 1 to 4 bytes per character
        return len(text)
    return len(text.encode("utf-8"))
