"""Redis down at start (real processes, nothing listening on the port).

`turnchart worker` waits for Redis (`--redis-wait`, default 30 s), saying so
once per attempt: when Redis comes up in time it connects and runs sessions;
when it does not, it exits 1 with one clear line on stderr and an ERROR line
in its log, never a traceback. `turnchart serve --redis` starts anyway, logs
that Redis is unreachable, answers /health with 503 and the reason, and
recovers on its own when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.redis import RedisEventBus
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, NullSink
from tests.support.redis_server import RedisServer, free_port, read_log, wait_for_log
from tests.support.webrtc_client import ServerProcess

TURNCHART = str(Path(sys.executable).with_name("turnchart"))


@pytest.fixture
def dead_port() -> int:
    """A loopback port with nothing listening (yet)."""
    return free_port()


class WorkerProcess:
    def __init__(self, url: str, tmp: Path, wait_s: float) -> None:
        self.log_path = tmp / "worker.log"
        self.err_path = tmp / "worker.err"
        with self.log_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [TURNCHART, "worker", "--redis", url, "--headless", "--worker-id", "w1",
                 "--redis-wait", str(wait_s)],
                stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log_path)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(url: str, wait_s: float) -> WorkerProcess:
        worker = WorkerProcess(url, tmp_path, wait_s)
        started.append(worker)
        return worker
    yield start
    for worker in started:
        worker.stop()


def test_a_worker_gives_up_with_one_clear_line_when_redis_never_comes(
        dead_port: int, worker_factory: Any) -> None:
    url = f"redis://127.0.0.1:{dead_port}/0"
    worker = worker_factory(url, 1.5)
    assert worker.proc.wait(20) == 1
    stderr = worker.err_path.read_text()
    assert "Traceback" not in stderr and "Traceback" not in worker.log_path.read_text()
    [line] = stderr.splitlines()
    assert line.startswith(f"turnchart worker: Redis at {url} is unreachable: ConnectionError")
    assert line.endswith("(waited 1.5 s; is redis-server running there?)")
    records = worker.records()
    waiting = [r for r in records if r["event_type"] == "redis_unavailable"]
    assert waiting and all(r["level"] == "WARNING" and r["data"]["url"] == url for r in waiting)
    assert [r["data"]["attempt"] for r in waiting] == list(range(1, len(waiting) + 1))
    last = records[-1]
    assert (last["event_type"], last["level"]) == ("worker_failed", "ERROR")
    assert last["message"] == f"💥 worker cannot start: {line.removeprefix('turnchart worker: ')}"
    assert all(r["session_id"] == "-" for r in records)


async def test_a_worker_started_before_redis_connects_when_it_comes_up(
        dead_port: int, worker_factory: Any, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{dead_port}/0"
    worker = worker_factory(url, 30)
    await asyncio.to_thread(wait_for_log, worker.log_path, "redis_unavailable", 20, worker.proc)
    with RedisServer(tmp_path / "redis", port=dead_port):
        await asyncio.to_thread(wait_for_log, worker.log_path, "worker_started", 20, worker.proc)
        [back] = [r for r in worker.records() if r["event_type"] == "redis_reconnected"]
        assert back["data"]["failures"] >= 1 and back["data"]["client"] == "worker"
        async with RedisEventBus.from_url(url, EventLog(NullSink(), RealClock())) as bus:
            await bus.publish(VoiceEvent(event_type="client_connected", session_id="late",
                                         source="test", timestamp=time.time()))
        deadline = time.monotonic() + 20
        while not any(r["event_type"] == "state_transition" and r["session_id"] == "late"
                      for r in worker.records()):
            assert time.monotonic() < deadline, worker.log_path.read_text()[-2000:]
            await asyncio.sleep(0.05)
        assert worker.stop() == 0
    kinds = [r["event_type"] for r in worker.records()]
    assert kinds.index("redis_reconnected") < kinds.index("worker_started")
    assert "worker_failed" not in kinds and kinds[-1] == "worker_stopped"


def test_serve_with_redis_down_says_503_with_the_reason_and_recovers(
        dead_port: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{dead_port}/0"
    server = ServerProcess(tmp_path, extra_config=f"bus: {url}\n")
    try:
        server.wait_ready()
        down = httpx.get(f"{server.base_url}/health", timeout=10)
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "degraded" and body["voice"] == "running"
        assert body["redis"].startswith("unreachable: ConnectionError")
        [said] = [r for r in server.records() if r["event_type"] == "redis_unavailable"]
        assert said["level"] == "WARNING" and said["data"]["url"] == url
        assert "serving anyway (/health: 503 until it is back)" in said["message"]
        with RedisServer(tmp_path / "redis", port=dead_port):
            deadline = time.monotonic() + 15
            while (up := httpx.get(f"{server.base_url}/health", timeout=10)).status_code != 200:
                assert time.monotonic() < deadline, up.text
                time.sleep(0.2)
            assert up.json()["redis"] == "ok" and up.json()["status"] == "ok"
    finally:
        server.stop()
    assert not [r for r in server.records() if r["level"] == "ERROR"]
