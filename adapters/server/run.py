"""Start the app under uvicorn with the settings' host and port.

The default host is 127.0.0.1. Bound wider without an admin token, the server
says so loudly (a WARNING log line and a banner on stderr): anyone who can
reach the address can start calls and read sessions, transcripts and metrics.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

import uvicorn

from adapters.config import Settings
from adapters.fastrtc.ice import is_loopback_host
from adapters.server.app import create_app
from adapters.server.json_logging import uvicorn_log_config
from engine.logs import EventLog

# uvicorn drops (1009, no message) WebSocket frames this many times over the limit;
# up to there the app's limit answers with an error message first (limits.py).
WS_FRAME_CAP_FACTOR = 4
SHUTDOWN_GRACE_S = 3
STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot start


def warn_if_exposed(settings: Settings, log: EventLog, stderr: TextIO) -> bool:
    """True (and a WARNING line plus a stderr banner) when the server would listen
    beyond loopback with no admin token; a one-line note when a token is set."""
    host = settings.server.host
    if is_loopback_host(host):
        return False
    if settings.server.admin_token:
        print(f"turnchart: serving on {host}, reachable from other machines "
              "(admin routes need the token)", file=stderr)
        return False
    where = f"{host}:{settings.server.port}"
    log.emit("WARNING", "-", "insecure_bind",
             f"⚠️ listening on {where}, beyond loopback, with no admin token",
             {"host": host, "port": settings.server.port, "admin_token": False,
              "fix": "bind 127.0.0.1 (the default) behind a proxy, or set "
                     "TURNCHART_ADMIN_TOKEN / server.admin_token"})
    rule = "!" * 78
    print("\n".join([
        rule,
        f"!! turnchart WARNING: listening on {where}, reachable from other machines,",
        "!! with no admin token set. Anyone who can reach it can start calls and read",
        "!! /sessions, live transcripts (/sessions/{id}/events) and /metrics.",
        "!! Bind 127.0.0.1 (the default) behind an authenticating proxy, or set",
        "!! TURNCHART_ADMIN_TOKEN (server.admin_token) and restrict the network.",
        rule]), file=stderr)
    return True


def serve(settings: Settings) -> int:
    from adapters.fastrtc.ice import restrict_to_loopback
    from adapters.server.voice_factory import build_voice
    if is_loopback_host(settings.server.host):
        restrict_to_loopback()  # WebRTC media stays on loopback like the HTTP side
    app = create_app(settings, voice_factory=build_voice)
    warn_if_exposed(settings, app.state.log, sys.stderr)
    for entry in app.state.catalog.entries.values():
        for err in entry.errors:
            print(str(err), file=sys.stderr)
    if not app.state.catalog.charts():
        print("turnchart: no chart could be loaded; fix the errors above", file=sys.stderr)
        return 1
    host, port = settings.server.host, settings.server.port
    print(f"turnchart serving on http://{host}:{port}/charts", file=sys.stderr)
    listen(app, on_exit=app.state.inspector.close_streams, host=host, port=port,
           log_level=settings.log.level.lower(),
           log_config=uvicorn_log_config(settings.log.level), server_header=False,
           ws_max_size=settings.limits.max_ws_message_bytes * WS_FRAME_CAP_FACTOR)
    return 0


def listen(app: Any, on_exit: Callable[[], None], **options: Any) -> None:
    """`uvicorn.run(app, **options)`, calling `on_exit` as soon as a stop is asked: the
    inspector's event streams never end by themselves, and uvicorn waits for open
    responses. Others (the /fastrtc page's log) are cut after SHUTDOWN_GRACE_S."""
    server = _Server(uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **options),
                     on_exit)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
