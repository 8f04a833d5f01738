"""Clients for a server that streams: an ASGI app served by uvicorn in a thread (the
TestClient cannot read an endless response), a server-sent-events reader and a
WebSocket caller that speaks the transport's JSON messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import uvicorn
from websockets.sync.client import ClientConnection, connect

from tests.support.voice_fakes import mulaw_encode
from tests.support.webrtc_client import free_port


@dataclass
class Served:
    base_url: str
    loop: asyncio.AbstractEventLoop

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the server's event loop (asyncio objects are not thread-safe)."""
        self.loop.call_soon_threadsafe(fn)


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[Served]:
    """`app` under uvicorn on a free loopback port, lifespan included, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),),
                              daemon=True, name=f"uvicorn:{port}")
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", loop)
    finally:
        server.should_exit = True
        thread.join(15)
        loop.close()


class EventStream:
    """Reads `text/event-stream` in a thread; `next()` returns (event, data) pairs,
    data parsed as JSON; comment lines come as ("comment", text).

    A plain socket rather than an HTTP client: `close()` shuts the socket down,
    which ends the blocked read at once (an idle stream only sends a heartbeat
    every few seconds)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
        self._sock.settimeout(None)
        self._sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode())
        self._file = self._sock.makefile("rb")
        status = self._file.readline().decode()
        headers = {}
        while (line := self._file.readline().decode().strip()):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if " 200 " not in status or not headers.get("content-type", "").startswith(
                "text/event-stream"):
            raise AssertionError(f"not an event stream: {status.strip()} {headers}")
        self._chunked = headers.get("transfer-encoding") == "chunked"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[str]:
        """The body's text, chunk by chunk (or as it comes when not chunked)."""
        while True:
            if not self._chunked:
                data = self._file.read1(65536)
            else:
                size = int(self._file.readline().split(b";")[0].strip() or b"0", 16)
                data = self._file.read(size) if size else b""
                self._file.readline()  # the CRLF after the chunk
            if not data:
                return
            yield data.decode()

    def _read(self) -> None:
        event, data, pending = "message", [], ""
        try:
            for text in self._body():
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    if line.startswith(":"):
                        self.events.put(("comment", line[1:].strip()))
                    elif line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data.append(line.removeprefix("data:").strip())
                    elif line == "" and data:
                        self.events.put((event, json.loads("\n".join(data))))
                        event, data = "message", []
        except (OSError, ValueError) as exc:  # closed by close(), or the server went away
            self.events.put(("closed", repr(exc)))
        else:
            self.events.put(("closed", "end of stream"))

    def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return self.events.get(timeout=timeout)

    def until(self, predicate: Callable[[str, Any], bool], timeout: float = 10.0,
              ) -> tuple[str, Any]:
        """The first (event, data) that satisfies `predicate`, skipping the rest."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("the event stream did not send what was expected in time")
            try:
                event, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if predicate(event, data):
                return event, data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._file.close()
        self._sock.close()


class WebSocketCaller:
    """A caller on FastRTC's WebSocket transport (`/websocket/offer`): start, transcript
    messages, audio as mu-law frames in real time, stop. Answer audio is read and
    counted in a thread so the server never waits on this caller."""

    def __init__(self, base_url: str, session_id: str) -> None:
        self.session_id = session_id
        self.ws: ClientConnection = connect(base_url.replace("http://", "ws://")
                                            + "/websocket/offer", open_timeout=20)
        self.audio_frames = 0
        self.errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.ws.send(json.dumps({"event": "start", "websocket_id": session_id}))
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self.ws:
                message = json.loads(raw)
                if message.get("event") == "media":
                    self.audio_frames += 1
                elif message.get("event") == "error":
                    self.errors.append(str(message.get("error")))

    def say_text(self, text: str) -> None:
        self.ws.send(json.dumps({"event": "transcript", "text": text, "final": True}))

    def say_audio(self, pcm16k: np.ndarray[Any, Any], frame: int = 320) -> None:
        """Send 16 kHz speech as 20 ms mu-law frames, paced like a live microphone."""
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm16k), frame)):
            payload = base64.b64encode(mulaw_encode(pcm16k[i:i + frame])).decode()
            self.ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
            wait = start + (n + 1) * frame / 16_000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.send(json.dumps({"event": "stop"}))
        self.ws.close()
        self._reader.join(5)

