"""The voice-host port in Redis mode (issue 15 §4): behind `turnchart serve --redis`
with two `turnchart worker` processes, a WebSocket caller's transcripts reach its
session, and `/sessions`, `/sessions/{id}`, `/latency/{id}`, `/health` and
`turnchart_active_sessions` show the live call from the workers' reports.

Everything here is a real process on a private redis-server: the front-end is
`turnchart serve`, not an app built in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.redis_server import ROOT, RedisServer, free_port, read_log
from tests.support.waiting import wait_for


class Proc:
    """A `turnchart` command in its own process, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        exe = str(Path(sys.executable).with_name("turnchart"))
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen([exe, *args], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log_path)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, list[Proc], Proc]]:
    """A private Redis, workers w1 and w2, and `turnchart serve --redis` on a free port."""
    with RedisServer(tmp_path / "redis") as server:
        workers = [Proc(["worker", "--redis", server.url, "--lease-ms", "1000",
                         "--worker-id", name], tmp_path / f"{name}.log") for name in ("w1", "w2")]
        port = free_port()
        serve = Proc(["serve", "--redis", server.url, "--host", "127.0.0.1", "--port", str(port)],
                     tmp_path / "serve.log")
        base = f"http://127.0.0.1:{port}"
        try:
            def up() -> bool:
                if serve.proc.poll() is not None:
                    raise AssertionError(f"serve exited:\n{serve.tail()}")
                try:
                    return httpx.get(f"{base}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False
            assert wait_for(up, 90, 0.2), serve.tail()
            yield base, workers, serve
        finally:
            for p in (serve, *workers):
                p.stop()


def _received(workers: list[Proc], sid: str, event: str) -> list[dict[str, Any]]:
    return [r for w in workers for r in w.records()
            if r.get("session_id") == sid and r.get("event_type") == "event_received"
            and r["data"]["event"] == event]


def test_websocket_transcripts_are_routed_and_sessions_listed(
        front: tuple[str, list[Proc], Proc]) -> None:
    base, workers, serve = front
    sid = "ws-remote"
    get = lambda path: httpx.get(f"{base}{path}", timeout=5)  # noqa: E731
    with connect(base.replace("http", "ws") + "/websocket/offer") as ws:
        ws.send(json.dumps({"event": "start", "websocket_id": sid}))

        def listed() -> dict[str, Any] | None:
            rows = get("/sessions").json()["sessions"]
            return next((r for r in rows if r["session_id"] == sid
                         and r["state"] == "LISTENING"), None)
        assert wait_for(listed, 30, 0.2), (get("/sessions").text, workers[0].tail())
        row = listed()
        assert row is not None and row["worker"] in ("w1", "w2")
        assert row["contract"] == {"microphone": "open", "playback": "stopped"}
        assert row["chart"] == "voice_turn"

        ws.send(json.dumps({"event": "transcript", "text": "what time is it", "final": True}))
        assert wait_for(lambda: _received(workers, sid, "stt_final"), 20), serve.tail()
        # the WebSocket's transcript was taken, not refused
        refused = [r for r in serve.records() if r.get("event_type") == "routing_rejected"]
        assert refused == []

        # the turn the transcript opened is seen in the details the workers report
        assert wait_for(lambda: get(f"/sessions/{sid}").json().get("turn", 0) >= 2, 10)
        detail = get(f"/sessions/{sid}").json()
        assert detail["session_id"] == sid and detail["worker"] == row["worker"]
        assert detail["configuration"][-1] == detail["state"]
        # a worker refreshes a session's latency summary at most every 5 s
        assert wait_for(lambda: "LISTENING→THINKING"
                        in get(f"/latency/{sid}").json()["transitions"], 15)
        latency = get(f"/latency/{sid}").json()["transitions"]
        assert latency["IDLE→LISTENING"]["count"] == 1
        assert get("/health").json()["sessions"] == 1
        assert "turnchart_active_sessions 1.0" in get("/metrics").text
        missing = get("/sessions/nobody")
        assert missing.status_code == 404 and missing.json()["active_sessions"] == [sid]
        ws.send(json.dumps({"event": "stop"}))

    # correlation ids are made as in local mode: the turn the event opens
    [connected] = _received(workers, sid, "client_connected")
    [final] = _received(workers, sid, "stt_final")
    assert connected["data"]["correlation_id"] == "turn-1"
    assert final["data"]["correlation_id"] == "turn-2"
    assert final["data"]["source"] == "websocket"
    # once the call ended, the workers stop reporting it
    assert wait_for(lambda: get("/sessions").json()["sessions"] == [], 15)
    assert get("/health").json()["sessions"] == 0
