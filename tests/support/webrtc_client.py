"""A real WebRTC caller over loopback (aiortc), and a real server process to call.

The caller sends audio from numpy arrays in real time (20 ms frames at 48 kHz,
low noise between utterances, like a quiet room) and records every frame it
hears back with its arrival time.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from av import AudioFrame

from adapters.fastrtc.ice import restrict_to_loopback
from adapters.speech.audio import resample
from benchmarks.caller_bench import dial

RATE = 48_000
FRAME = 960  # 20 ms


class CallerMicrophone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, seed: int = 7) -> None:
        super().__init__()
        self.pending: deque[np.ndarray[Any, Any]] = deque()
        self._buffer = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None
        self._rng = np.random.default_rng(seed)
        self.speaking_until = 0.0

    def say(self, pcm48k: np.ndarray[Any, Any]) -> None:
        self.pending.append(pcm48k.astype(np.int16))

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._pts / RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        while len(self._buffer) < FRAME and self.pending:
            self._buffer = np.concatenate([self._buffer, self.pending.popleft()])
        if len(self._buffer) >= FRAME:
            chunk, self._buffer = self._buffer[:FRAME], self._buffer[FRAME:]
        else:
            chunk = self._rng.normal(0, 20, FRAME).astype(np.int16)  # a quiet room
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class Caller:
    base_url: str
    session_id: str
    mic: CallerMicrophone = field(default_factory=CallerMicrophone)
    heard: list[tuple[float, float]] = field(default_factory=list)  # (wall time, rms)
    pc: RTCPeerConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def connect(self) -> None:
        restrict_to_loopback()
        self.pc = RTCPeerConnection()
        self.pc.addTrack(self.mic)
        self.pc.createDataChannel("text")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._listen(track)))

        await dial(self.pc, self.base_url, self.session_id, timeout=20)

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            pcm = frame.to_ndarray().astype(np.float64)
            self.heard.append((time.time(), float(np.sqrt(np.mean(pcm ** 2)))))

    def loud_since(self, t: float, threshold: float = 300.0) -> int:
        return sum(1 for at, rms in self.heard if at > t and rms > threshold)

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()


def speech48k(text: str) -> np.ndarray[Any, Any]:
    """The project's own TTS saying `text`, at 48 kHz with 300 ms of room noise around."""
    from adapters.speech.tts import EspeakTTS
    rate, pcm = EspeakTTS(output_rate=24_000).synthesize_all(text)
    up = resample(pcm, rate, RATE)
    rng = np.random.default_rng(3)
    pad = rng.normal(0, 20, int(RATE * 0.3)).astype(np.int16)
    return np.concatenate([pad, up, pad]).astype(np.int16)


def json_records(path: Path) -> list[dict[str, Any]]:
    """The §3 log lines in a process's output file (other lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event_type" in record:
            out.append(record)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`turnchart serve` on a free loopback port; its JSON log lines collected."""

    def __init__(self, tmp: Path, extra_config: str = "", chart: Path | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        config = tmp / "config.yaml"
        chart = chart or Path(__file__).resolve().parents[2] / "charts" / "voice_turn.yaml"
        config.write_text(f"server: {{host: 127.0.0.1, port: {self.port}}}\n"
                          f"charts: [{chart}]\nlog: {{level: INFO}}\n{extra_config}")
        exe = Path(sys.executable).with_name("turnchart")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([str(exe), "serve", "--config", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).json().get("voice") == "running":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start:\n" + self.log_path.read_text()[-3000:])

    def records(self) -> list[dict[str, Any]]:
        return json_records(self.log_path)

    def transitions(self, session_id: str) -> list[str]:
        return [f"{r['data']['from']}→{r['data']['to']} ({r['data']['event']})"
                for r in self.records()
                if r["event_type"] == "state_transition" and r["session_id"] == session_id]

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log.close()
        return code
