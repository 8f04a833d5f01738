"""A phone as Twilio's Media Streams show it to a server, written from Twilio's
public protocol documentation, not from our server's code.

In: `connected`, `start` (streamSid, callSid, mediaFormat audio/x-mulaw 8000 Hz
mono), a `media` message every 20 ms (160 μ-law bytes, base64, track
`inbound`; quiet room noise when nobody speaks), `mark` echoed once the audio
before it has been played, `stop`. Out, from the server: `media` (played in
real time from a buffer), `mark` (echoed when reached), `clear` (the buffer is
dropped at once; pending marks are echoed, as Twilio does).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.sync.client import ClientConnection, connect

RATE = 8_000
FRAME = 160  # 20 ms


def mulaw_encode(pcm: np.ndarray[Any, Any]) -> bytes:
    """G.711 μ-law of 16-bit PCM."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) * 0x80
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> np.ndarray[Any, Any]:
    """16-bit PCM of G.711 μ-law bytes."""
    u = (~np.frombuffer(data, dtype=np.uint8)).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@dataclass
class Received:
    at: float          # wall time (time.time())
    event: str
    rms: float = 0.0
    name: str = ""


class PhoneCaller:
    """One call to `ws://…/telephone/handler`; threads send the microphone and play
    the answer, so neither side ever waits on the other."""

    def __init__(self, base_url: str, stream_sid: str, *, seed: int = 5) -> None:
        self.stream_sid = stream_sid
        self.url = base_url.replace("http://", "ws://") + "/telephone/handler"
        self.received: list[Received] = []
        self.marks_echoed: list[str] = []
        self._pending: deque[np.ndarray[Any, Any]] = deque()
        self._buffer = np.zeros(0, dtype=np.int16)
        self._playing: deque[tuple[str, Any]] = deque()   # ("media", rms) | ("mark", name)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seq = 0
        self.ws: ClientConnection | None = None
        self._threads: list[threading.Thread] = []

    # protocol ------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self._seq += 1
        message["sequenceNumber"] = str(self._seq)
        with self._lock:
            self.ws.send(json.dumps(message))

    def start(self, media_format: dict[str, Any] | None = None) -> None:
        self.ws = connect(self.url, open_timeout=20)
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send({"event": "start", "streamSid": self.stream_sid, "start": {
            "streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32,
            "callSid": "CA" + self.stream_sid[-32:].rjust(32, "0"), "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": media_format or {"encoding": "audio/x-mulaw", "sampleRate": RATE,
                                            "channels": 1}}})
        for target in (self._microphone, self._read, self._play):
            thread = threading.Thread(target=target, daemon=True, name=f"phone:{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def say(self, pcm8k: np.ndarray[Any, Any]) -> None:
        self._pending.append(pcm8k.astype(np.int16))

    @property
    def speaking(self) -> bool:
        return bool(self._pending) or len(self._buffer) > 0

    def _microphone(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            while len(self._buffer) < FRAME and self._pending:
                self._buffer = np.concatenate([self._buffer, self._pending.popleft()])
            if len(self._buffer) >= FRAME:
                chunk, self._buffer = self._buffer[:FRAME], self._buffer[FRAME:]
            else:
                chunk = self._rng.normal(0, 20, FRAME).astype(np.int16)  # a quiet room
            n += 1
            try:
                self._send({"event": "media", "streamSid": self.stream_sid, "media": {
                    "track": "inbound", "chunk": str(n), "timestamp": str(n * 20),
                    "payload": base64.b64encode(mulaw_encode(chunk)).decode()}})
            except Exception:
                return
            wait = start + n * FRAME / RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            for raw in self.ws:
                message = json.loads(raw)
                event = str(message.get("event"))
                now = time.time()
                if event == "media":
                    pcm = mulaw_decode(base64.b64decode(message["media"]["payload"]))
                    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0
                    self.received.append(Received(now, "media", rms))
                    with self._lock:
                        frames = max(1, len(pcm) // FRAME)
                        self._playing.extend(("media", rms) for _ in range(frames))
                elif event == "mark":
                    name = str(message["mark"]["name"])
                    self.received.append(Received(now, "mark", name=name))
                    with self._lock:
                        self._playing.append(("mark", name))
                elif event == "clear":
                    self.received.append(Received(now, "clear"))
                    with self._lock:
                        marks = [v for kind, v in self._playing if kind == "mark"]
                        self._playing.clear()
                    for name in marks:
                        self._echo(name)
                else:
                    self.received.append(Received(now, event))

    def _play(self) -> None:
        """The phone's speaker: one buffered 20 ms frame per tick; marks echoed when reached."""
        while not self._stop.is_set():
            with self._lock:
                item = self._playing.popleft() if self._playing else None
                while item is not None and item[0] == "mark":
                    self._echo(str(item[1]), locked=True)
                    item = self._playing.popleft() if self._playing else None
            time.sleep(FRAME / RATE)

    def _echo(self, name: str, locked: bool = False) -> None:
        self.marks_echoed.append(name)
        message = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
        with contextlib.suppress(Exception):
            if locked:
                assert self.ws is not None
                self._seq += 1
                message["sequenceNumber"] = str(self._seq)
                self.ws.send(json.dumps(message))
            else:
                self._send(message)

    def send_raw(self, text: str) -> None:
        assert self.ws is not None
        with self._lock:
            self.ws.send(text)

    # what came back -------------------------------------------------------------
    def loud_media(self, since: float = 0.0, until: float = float("inf"),
                   threshold: float = 300.0) -> int:
        return sum(1 for r in self.received
                   if r.event == "media" and since < r.at <= until and r.rms > threshold)

    def events(self, event: str) -> list[Received]:
        return [r for r in self.received if r.event == event]

    def hang_up(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self._send({"event": "stop", "streamSid": self.stream_sid,
                            "stop": {"accountSid": "AC" + "0" * 32, "callSid": "CA"}})
        self._stop.set()
        if self.ws is not None:
            self.ws.close()
        for thread in self._threads:
            thread.join(5)
