"""Start the app under uvicorn with the settings' host and port.

The default host is 127.0.0.1. Bound wider without an admin token, the server
says so loudly (a WARNING log line and a banner on stderr): anyone who can
reach the address can start calls and read sessions, transcripts and metrics.

The socket is bound first, before the app and its speech stack are even
imported: a port already taken is one line on stderr at once (exit 3), and
`turnchart serving on …` is printed only once uvicorn has started on it.

Stopping (SIGINT, Ctrl-C, or SIGTERM): every live call ends at once (its
`client_disconnected` and `session_closed` lines), the log streams of
`/inspect` and `/fastrtc` end, then uvicorn closes what is left. No signal is
re-raised afterwards (uvicorn would, and Python's SIGINT handler turns that
into a KeyboardInterrupt traceback): the process exits 0 after a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TextIO

import uvicorn

from adapters.config import Settings
from adapters.fastrtc.ice import is_loopback_host
from adapters.server.json_logging import uvicorn_log_config
from engine.runtime.logs import EventLog

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


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not listening yet: uvicorn does that)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """The one line `serve` prints when it cannot have host:port."""
    if exc.errno == errno.EADDRINUSE:
        return (f"turnchart: cannot listen on {host}:{port}: port {port} is already in use "
                "(another turnchart serve?); stop that server or pick another with --port")
    if exc.errno == errno.EACCES:
        return (f"turnchart: cannot listen on {host}:{port}: permission denied (ports below "
                "1024 need privileges); pick another with --port")
    return f"turnchart: cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(settings: Settings) -> int:
    host, port = settings.server.host, settings.server.port
    try:
        sock = bind(host, port)
    except OSError as exc:  # also socket.gaierror: a host name that does not resolve
        print(cannot_listen(host, port, exc), file=sys.stderr)
        return STARTUP_FAILURE
    with contextlib.closing(sock):
        from adapters.fastrtc.ice import restrict_to_loopback
        from adapters.server.app import create_app
        from adapters.server.voice_factory import build_voice
        if is_loopback_host(host):
            restrict_to_loopback()  # WebRTC media stays on loopback like the HTTP side
        from adapters.fastrtc.jitter import shorten_audio_jitter_buffer
        shorten_audio_jitter_buffer()   # the caller's words reach the VAD 60 ms sooner
        app = create_app(settings, voice_factory=build_voice)
        warn_if_exposed(settings, app.state.log, sys.stderr)
        for entry in app.state.catalog.entries.values():
            for err in entry.errors:
                print(str(err), file=sys.stderr)
        if not app.state.catalog.charts():
            print("turnchart: no chart could be loaded; fix the errors above", file=sys.stderr)
            return 1
        shown = f"[{host}]" if ":" in host else host
        listen(app, on_exit=app.state.inspector.close_streams, drain=lambda: drain(app),
               sockets=[sock], announce=f"turnchart serving on http://{shown}:{port}/charts",
               host=host, port=port, log_level=settings.log.level.lower(),
               log_config=uvicorn_log_config(settings.log.level), server_header=False,
               ws_max_size=settings.limits.max_ws_message_bytes * WS_FRAME_CAP_FACTOR)
    return 0


async def drain(app: Any) -> None:
    """The server is stopping: end every live call now (each gets `client_disconnected`
    and `session_closed`; no new turn starts), close the WebRTC peer connections, and
    end the per-session log streams, so uvicorn has nothing left to wait for."""
    voice = app.state.voice
    voice.hub.close_streams()
    service = voice.service
    if service is not None:
        voice.service = None  # calls that arrive now are refused (503), not started
        await service.stop()
    rtc = voice.rtc
    if rtc is not None:
        peers = list(getattr(rtc, "pcs", {}).values())
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)
        for _ in range(3):   # let their connection-state handlers run to the end
            await asyncio.sleep(0)


def listen(app: Any, on_exit: Callable[[], None], *,
           drain: Callable[[], Awaitable[None]] | None = None,
           sockets: list[socket.socket] | None = None, announce: str | None = None,
           **options: Any) -> None:
    """`uvicorn.run(app, **options)` on `sockets`, calling `on_exit` as soon as a stop is
    asked (the inspector's event streams never end by themselves, and uvicorn waits for
    open responses) and awaiting `drain` before uvicorn's own shutdown; `announce` goes
    to stderr once uvicorn has started. What is still open is cut after SHUTDOWN_GRACE_S."""
    server = _Server(uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **options),
                     on_exit, drain, announce)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None],
                 drain: Callable[[], Awaitable[None]] | None = None,
                 announce: str | None = None) -> None:
        super().__init__(config)
        self.on_exit = on_exit
        self.drain = drain
        self.announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.announce and not self.should_exit:
            print(self.announce, file=sys.stderr, flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.drain is not None:
            await self.drain()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's, without remembering the signal: uvicorn re-raises it once stopped,
        which Python turns into a KeyboardInterrupt traceback for SIGINT. A second
        Ctrl-C still forces the exit."""
        self.on_exit()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
