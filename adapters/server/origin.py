"""Who may start a call or change state: checks of `Origin` and `Content-Type`.

A browser sends `Origin` with every WebSocket opening and every POST, and lets
any page it shows send them: without this check a page on another site, open in
the user's browser, could connect to `ws://127.0.0.1:5204/websocket/offer`,
start a call, inject transcripts and hear the answers. So:

- a WebSocket opening, and an HTTP request that changes state (any method but
  GET, HEAD and OPTIONS), whose `Origin` is neither this server's own (the
  `Host` the request was sent to) nor listed in `server.allowed_origins` gets
  403 JSON (a WebSocket opening gets it instead of `101 Switching Protocols`);
- a request without `Origin` passes: it does not come from a web page (curl,
  aiortc, the test clients), and a page cannot leave the header out;
- a POST to a route that reads JSON must say `Content-Type: application/json`,
  else 415 JSON: a cross-site form or `text/plain` "simple request" needs no
  preflight, a JSON one does.

Every refusal is one WARNING `request_refused` line, like those of the input
limits (limits.py). One ASGI middleware, so routes added later are covered too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.server.limits import NO_SESSION, WS_POLICY_VIOLATION
from engine.runtime.logs import EventLog

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def normalise_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None when
    `origin` is not one (`null`, a path, no host)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"                     # IPv6 literal
    if port is not None and str(port) != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _host_without_default_port(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}") and not host.endswith("]"):
        host = host.removesuffix(f":{default}")
    return host


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class OriginCheck:
    """ASGI middleware enforcing the rules of the module docstring."""

    def __init__(self, app: ASGIApp, *, allowed_origins: Iterable[str] = (),
                 json_paths: Collection[str] = (), log: EventLog | None = None) -> None:
        self.app = app
        self.allowed = frozenset(o for o in (normalise_origin(x) for x in allowed_origins) if o)
        self.json_paths = frozenset(json_paths)
        self.log = log

    def origin_allowed(self, scope: Scope) -> tuple[bool, str | None]:
        """(may pass, the Origin header as sent)."""
        origin = _header(scope, b"origin")
        if origin is None:
            return True, None
        normal = normalise_origin(origin)
        if normal is None:
            return False, origin
        if normal in self.allowed:
            return True, origin
        host = _header(scope, b"host")
        scheme = urlsplit(normal).scheme
        own = _host_without_default_port(host, scheme) if host else None
        return own is not None and normal.split("://", 1)[1] == own, origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            ok, origin = self.origin_allowed(scope)
            if not ok:
                await self._refuse_websocket(scope, receive, send, origin)
                return
        elif scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            ok, origin = self.origin_allowed(scope)
            if not ok:
                await self._refuse(scope, receive, send, 403, "origin_refused",
                                   _origin_error(origin), {"origin": origin})
                return
            if scope["path"] in self.json_paths and not _is_json(_header(scope, b"content-type")):
                given = _header(scope, b"content-type")
                await self._refuse(scope, receive, send, 415, "unsupported_media_type",
                                   f"{scope['path']} takes JSON: send Content-Type: "
                                   f"application/json (got {given or 'none'})",
                                   {"content_type": given})
                return
        await self.app(scope, receive, send)

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send,
                                origin: str | None) -> None:
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await self._refuse(scope, receive, send, 403, "origin_refused",
                               _origin_error(origin), {"origin": origin})
            return
        # Without the extension the server answers a close before accept with 403 itself.
        self._log(scope, "origin_refused", WS_POLICY_VIOLATION, _origin_error(origin),
                  {"origin": origin})
        await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION,
                    "reason": "origin not allowed"})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      reason: str, error: str, data: dict[str, str | None]) -> None:
        self._log(scope, reason, status, error, data)
        await JSONResponse({"error": error}, status_code=status)(scope, receive, send)

    def _log(self, scope: Scope, reason: str, status: int, error: str,
             data: dict[str, str | None]) -> None:
        if self.log is not None:
            client = scope.get("client")
            self.log.emit("WARNING", NO_SESSION, "request_refused", f"🚫 {error}",
                          {"reason": reason, "status": status, "path": scope["path"],
                           "client": str(client[0]) if client else "unknown", **data})


def _origin_error(origin: str | None) -> str:
    return (f"origin {origin!r} may not use this server: only pages it serves itself and "
            "server.allowed_origins (TURNCHART_ALLOWED_ORIGINS) may")


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"
