"""Record docs/tutorial/calls.jsonl: real calls to a real `turnchart serve`.

Run it as `scripts/record-tutorial [OUT]`. It starts `turnchart serve` (the
shipped chart, real speech models, a free loopback port), makes three calls
over FastRTC's WebSocket transport and keeps the server's stdout, which is what
`turnchart replay` reads:

- s1: "hello", the whole answer, then a hang-up;
- s2: "tell me a story", and half a second into the answer the caller says
  "stop" (eSpeak speech sent as 16 kHz mu-law in real time, so the server's own
  VAD hears the barge-in and its STT the word, which is a turn of its own),
  then, once the line listens again, a hang-up;
- s3: "tell me a story" and a hang-up in the middle of the answer.

The questions are sent as `transcript` messages (the same `stt_final` path as
speech); the "stop" is audio. The only change made to the lines is that the
repository's absolute path is cut from them (the `chart_path` of
`session_started`), so the recording replays from any clone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.speech.samples import padded_speech  # noqa: E402

WS_RATE = 16000     # /websocket/offer: G.711 mu-law at the handler's 16 kHz (not phone mode)
FRAME = 320         # 20 ms


def mulaw(pcm: np.ndarray[Any, Any]) -> bytes:
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) * 0x80
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out = tmp / "stdout.jsonl"
        config = tmp / "config.yaml"
        config.write_text(f"server: {{host: 127.0.0.1, port: {self.port}, watch_charts: false}}\n"
                          f"charts: [{ROOT / 'charts' / 'voice_turn.yaml'}]\n"
                          "log: {level: INFO}\n")
        exe = Path(sys.executable).with_name("turnchart")
        with self.out.open("wb") as out, (tmp / "stderr.txt").open("wb") as err:
            self.proc = subprocess.Popen([str(exe), "serve", "--config", str(config)],
                                         stdout=out, stderr=err, cwd=tmp,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("turnchart serve exited:\n" + self.out.read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{self.base}/health", timeout=1).json().get("voice") == "running":
                    return
            time.sleep(0.2)
        raise SystemExit("turnchart serve did not start")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event_type" in record:
                    out.append(record)
        return out

    def moves(self, session: str) -> list[str]:
        return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
                for r in self.records()
                if r["event_type"] == "state_transition" and r["session_id"] == session]

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while not predicate():
            if time.time() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Caller:
    def __init__(self, server: Server, session: str) -> None:
        self.server, self.session = server, session
        self.ws = connect(server.base.replace("http://", "ws://") + "/websocket/offer",
                          open_timeout=20)
        self.frames = 0
        self.ws.send(json.dumps({"event": "start", "websocket_id": session}))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        server.wait(f"{session} to connect", lambda: bool(server.moves(session)))

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self.ws:
                if json.loads(raw).get("event") == "media":
                    self.frames += 1

    def say_text(self, text: str) -> None:
        self.ws.send(json.dumps({"event": "transcript", "text": text, "final": True}))

    def say_audio(self, pcm: np.ndarray[Any, Any]) -> None:
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), FRAME)):
            payload = base64.b64encode(mulaw(pcm[i:i + FRAME])).decode()
            self.ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
            time.sleep(max(0.0, start + (n + 1) * FRAME / WS_RATE - time.monotonic()))

    def last(self, move: str) -> Callable[[], bool]:
        return lambda: move in self.server.moves(self.session)

    def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.send(json.dumps({"event": "stop"}))
        self.ws.close()
        self.reader.join(5)
        self.server.wait(f"{self.session} to end",
                         lambda: any(r["event_type"] == "session_closed"
                                     and r["session_id"] == self.session
                                     for r in self.server.records()))


def record(server: Server) -> None:
    s1 = Caller(server, "s1")                        # a whole turn, then a hang-up
    s1.say_text("hello")
    server.wait("s1's answer", s1.last("SPEAKING → LISTENING (playback_done)"))
    time.sleep(0.5)
    s1.hang_up()

    s2 = Caller(server, "s2")                        # "stop" over the answer
    s2.say_text("tell me a story")
    server.wait("s2's answer", s2.last("THINKING → SPEAKING (response_ready)"))
    time.sleep(0.5)
    s2.say_audio(padded_speech("stop", lead_ms=100, tail_ms=900, rate=WS_RATE))
    server.wait("s2's barge-in", s2.last("SPEAKING → INTERRUPT (barge_in)"))
    time.sleep(2.5)             # the words after the onset reach STT: maybe a turn of their own
    server.wait("s2 to listen again", lambda: server.moves("s2")[-1].split(" (")[0]
                .endswith("→ LISTENING"))
    time.sleep(0.5)
    s2.hang_up()

    s3 = Caller(server, "s3")                        # a hang-up in the middle of the answer
    s3.say_text("tell me a story")
    server.wait("s3's answer", s3.last("THINKING → SPEAKING (response_ready)"))
    time.sleep(0.8)
    s3.hang_up()


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "tutorial" / "calls.jsonl"
    with tempfile.TemporaryDirectory(prefix="record-tutorial-") as tmp:
        server = Server(Path(tmp))
        try:
            record(server)
        except BaseException:
            server.stop()
            failed = out.with_name(out.name + ".failed")
            failed.write_bytes(server.out.read_bytes())
            print(f"the server's log is in {failed}", file=sys.stderr)
            raise
        server.stop()
        lines = [line.replace(f"{ROOT}/", "") for line in
                 server.out.read_text(encoding="utf-8").splitlines()]
    out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    sessions = {"s1", "s2", "s3"}
    moves = sum(1 for line in lines if '"state_transition"' in line
                and json.loads(line)["session_id"] in sessions)
    print(f"wrote {out}: {len(lines)} line(s), 3 call(s), {moves} transition(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
