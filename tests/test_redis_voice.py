"""Live voice with sessions on Redis workers: `turnchart serve --redis` front-end
(here the app in-process, with deterministic speech stand-ins on the caller side)
plus two `turnchart worker` processes. Killing the worker that owns the call
mid-answer loses no event and the user's turn completes on the other one."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.config import Settings
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server.app import create_app
from adapters.server.metrics import Metrics
from adapters.server.remote_voice import RemoteVoiceService
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.logs import EventLog, ListSink
from tests.support.redis_server import RedisServer
from tests.support.voice_fakes import (
    EnergyDetector,
    ScriptedTranscriber,
    ToneSpeech,
    mulaw_encode,
    silence,
    tone,
)
from tests.support.waiting import wait_for
from tests.support.webrtc_client import json_records


class Worker:
    def __init__(self, url: str, name: str, tmp: Path) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        exe = str(Path(sys.executable).with_name("turnchart"))
        self._out = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [exe, "worker", "--redis", url, "--lease-ms", "1000", "--worker-id", name],
            stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def records(self) -> list[dict[str, Any]]:
        return json_records(self.log_path)

    def transitions(self, session: str) -> list[str]:
        return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
                for r in self.records()
                if r["event_type"] == "state_transition" and r["session_id"] == session]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def remote_factory(url: str, script: list[str]) -> Any:
    def build(settings: Settings, chart: CompiledChart, registry: Registry, log: EventLog,
              metrics: Metrics) -> RemoteVoiceService:
        return RemoteVoiceService(chart, registry, log, metrics, stt=ScriptedTranscriber(script),
                                  detector_factory=EnergyDetector, speech=ToneSpeech(),
                                  responder=BuiltinResponder(Knowledge([])), redis_url=url)
    return build


def send_audio(ws: Any, pcm: np.ndarray[Any, Any]) -> None:
    for i in range(0, len(pcm), 320):
        payload = base64.b64encode(mulaw_encode(pcm[i:i + 320])).decode()
        ws.send_json({"event": "media", "media": {"payload": payload}})




def owner(workers: list[Worker], session: str) -> Worker | None:
    for w in workers:
        if w.transitions(session):
            return w
    return None


def test_killing_the_owning_worker_mid_answer_loses_nothing(redis_url: str,
                                                             tmp_path: Path) -> None:
    workers = [Worker(redis_url, "w1", tmp_path), Worker(redis_url, "w2", tmp_path)]
    sink = ListSink()
    app = create_app(Settings(bus=redis_url),
                     voice_factory=remote_factory(redis_url, ["tell me a story"]), log_sink=sink)
    session = "remote-call"
    try:
        with TestClient(app) as client, client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": session})
            health = client.get("/health").json()
            assert health["redis"] == "ok" and session in health["streams"]
            assert "turnchart_redis_pending_entries" in client.get("/metrics").text
            assert wait_for(lambda: owner(workers, session) is not None, 20), "no worker adopted"
            first = owner(workers, session)
            assert first is not None
            assert wait_for(lambda: "IDLE → LISTENING (client_connected)"
                            in first.transitions(session), 10)
            time.sleep(0.3)  # the LISTENING contract reaches the front-end
            send_audio(ws, np.concatenate([silence(100), tone(500), silence(400)]))
            assert wait_for(lambda: "THINKING → SPEAKING (response_ready)"
                            in first.transitions(session), 15)
            frames = 0
            while frames < 10:  # the answer is playing
                if ws.receive_json().get("event") == "media":
                    frames += 1
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(5)
            second = next(w for w in workers if w is not first)
            assert wait_for(lambda: "SPEAKING → LISTENING (playback_done)"
                            in second.transitions(session), 30), second.log_path.read_text()[-2000:]
            ws.send_json({"event": "stop"})
            assert wait_for(lambda: "LISTENING → IDLE (client_disconnected)"
                            in second.transitions(session), 10)
            # /inspect on the front-end follows the call through the states its
            # workers report with each contract (worker_state lines)
            view = app.state.inspector.snapshot()["sessions"]
            [mine] = [v for v in view if v["session_id"] == session]
            assert mine["state"] in ("LISTENING", "IDLE") and mine["chart"] == "voice_turn"
            health = client.get("/health").json()
            assert list(health["workers"]) == [second.name]   # the killed one is gone
            assert health["workers"][second.name]["resumed"] >= 1  # it took the call over
            assert 'turnchart_redis_worker_entries{kind="claimed"}' in client.get("/metrics").text
    finally:
        for w in workers:
            w.stop()
    reported = [r["data"]["state"] for r in sink.records
                if r["session_id"] == session and r["event_type"] == "worker_state"]
    moves = [s for i, s in enumerate(reported) if i == 0 or reported[i - 1] != s]
    assert "LISTENING" in moves, reported
    start = moves.index("LISTENING")
    assert moves[start:start + 4] == ["LISTENING", "THINKING", "SPEAKING", "LISTENING"], reported
    assert sink.of_type("worker_session_released", session)
    timeline = app.state.inspector.timeline(session)
    assert timeline is not None
    assert [s["state"] for s in timeline["states"]][start:start + 3] == [
        "LISTENING", "THINKING", "SPEAKING"]
    before = first.transitions(session)
    after = second.transitions(session)
    assert before[:3] == ["IDLE → LISTENING (client_connected)",
                          "LISTENING → THINKING (stt_final)",
                          "THINKING → SPEAKING (response_ready)"]
    resumed = [r for r in second.records() if r["session_id"] == session
               and r["event_type"] == "session_resumed"]
    assert resumed and resumed[0]["data"]["state"] == "SPEAKING"
    assert after == ["SPEAKING → LISTENING (playback_done)",
                     "LISTENING → IDLE (client_disconnected)"]
    # exactly once: nothing the first worker applied is applied again by the second
    assert set(before) & set(after) == set()
    assert (before + after).count("LISTENING → THINKING (stt_final)") == 1
    errors = [r for w in workers for r in w.records()
              if r["level"] == "ERROR" and r["session_id"] == session]
    assert errors == []


def test_health_says_when_redis_is_unreachable() -> None:
    from tests.support.webrtc_client import free_port
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(Settings(bus=url), voice_factory=remote_factory(url, ["hello"]),
                     log_sink=ListSink())
    with TestClient(app) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["redis"].startswith("unreachable: ")


async def test_a_new_answer_drops_audio_left_from_an_interrupted_one() -> None:
    """A worker that died mid-answer left frames queued here; the new owner's
    `start` (it speaks the answer again) must not play after them."""
    from adapters.fastrtc.output import OutputStream
    from engine.chart.chart import load_chart
    from engine.runtime.behaviours import default_registry
    from engine.runtime.clock import VirtualClock

    registry = default_registry()
    chart = load_chart(Path(__file__).resolve().parent.parent / "charts" / "voice_turn.yaml",
                       registry)
    service = remote_factory("redis://127.0.0.1:9/0", ["hello"])(
        Settings(), chart, registry, EventLog(ListSink(), VirtualClock()), Metrics(lambda: 0))
    stream = OutputStream(24_000)
    service.router.attach("s1", stream)
    chunk = {"op": b"audio", "pcm": np.zeros(4800, dtype=np.int16).tobytes(), "ms": b"200"}
    await service._on_op("s1", chunk)
    assert len(stream.frames) == 10
    await service._on_op("s1", {"op": b"start"})
    assert len(stream.frames) == 0
    await service._on_op("s1", chunk)
    assert len(stream.frames) == 10
    service.record_barge_in("s1", time.monotonic(), 0)   # decided here: mute until the clear
    await service._on_op("s1", chunk)
    assert len(stream.frames) == 10
    await service._on_op("s1", {"op": b"clear"})
    assert len(stream.frames) == 0
    await service.bus.aclose()
    await service.out_redis.aclose()
