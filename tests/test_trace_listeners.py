"""The trace's listeners get every event whatever the log level; only the JSON log
filters (issue 15: at WARNING a Redis worker sent no contract to the front-end and
/metrics stopped counting, because both sat behind the level filter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from adapters.config import LogSettings, Settings
from adapters.redis.keys import Keys
from adapters.redis.output_link import ContractPublisher, output_key
from adapters.server.app import create_app
from adapters.server.metrics import Metrics
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.manager import SessionManager
from engine.runtime.snapshot import MemorySnapshotStore
from engine.runtime.trace import ContractApplied, StateTransition, TraceEvent
from engine.tools.fakes import FakeSettings, fake_ports

ROOT = Path(__file__).resolve().parent.parent


async def one_transition(log: EventLog) -> None:
    """A session on the shipped chart: started in IDLE, then IDLE → LISTENING."""
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    clock = log.clock
    assert isinstance(clock, VirtualClock)
    ports = fake_ports(clock, FakeSettings())
    async with SessionManager(chart, registry, ports, clock, log, MemorySnapshotStore()) as mgr:
        await mgr.open("s1")
        mgr.deliver({"event_type": "client_connected", "session_id": "s1", "source": "test",
                     "timestamp": clock.wall(), "payload": {}, "metadata": {}})
        await clock.advance(50)


def transitions_counted(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "turnchart_transitions_total", {"source": "IDLE", "target": "LISTENING"})
    return value or 0.0


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
async def test_metrics_count_whatever_the_level_only_the_json_log_filters(level: str) -> None:
    """Wired as `create_app` wires it: the JSON log at the configured level, metrics
    and the inspector subscribed to the trace."""
    sink = ListSink()
    app = create_app(Settings(log=LogSettings(level=level)), log_sink=sink)
    log: EventLog = app.state.log
    log.clock = VirtualClock()            # the app's log, on a clock the test drives
    await one_transition(log)
    assert transitions_counted(app.state.voice.metrics) == 1.0
    written = {r["event_type"] for r in sink.records}
    assert ("state_transition" in written) == (level == "INFO")
    assert app.state.inspector.views["s1"].state == "LISTENING"


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
async def test_a_worker_publishes_every_contract_whatever_the_level(
        level: str, redis: Redis) -> None:
    """Wired as `turnchart worker` wires it (adapters/cli/worker.py): the contract
    publisher subscribed to the trace, the JSON log at the configured level."""
    sink = ListSink()
    publisher = ContractPublisher(redis)
    log = EventLog(sink, VirtualClock(), level=level)
    log.subscribe(publisher)
    publishing = asyncio.create_task(publisher.run())
    try:
        await one_transition(log)
        for _ in range(200):
            if publisher.queue.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        publishing.cancel()
    ops = await redis.xrange(output_key(Keys(), "s1"))
    contracts = [(f["state"], f["microphone"], f["playback"]) for _, f in ops
                 if f["op"] == "contract"]
    assert contracts == [("IDLE", "closed", "stopped"), ("LISTENING", "open", "stopped")]
    assert all(r["level"] == "WARNING" or level == "INFO" for r in sink.records)


async def test_listeners_get_typed_events_in_order_and_can_leave() -> None:
    seen: list[TraceEvent] = []
    log = EventLog(ListSink(), VirtualClock(), level="ERROR")
    log.subscribe(seen.append)
    await one_transition(log)
    kinds = [type(e) for e in seen if isinstance(e, ContractApplied | StateTransition)]
    assert kinds == [ContractApplied, ContractApplied, StateTransition]
    log.unsubscribe(seen.append)
    before = len(seen)
    log.emit("INFO", "s1", "note", "a note", {})
    assert len(seen) == before
    assert log.counts["state_transition"] == 1


def test_behind_serve_redis_a_worker_at_warning_still_drives_the_front_end(
        tmp_path: Path) -> None:
    """A real `turnchart worker` process at log level WARNING (TURNCHART_LOG_LEVEL) and
    a Redis front-end: the caller's microphone opens when the worker's session enters
    LISTENING, because the contract reaches the front-end whatever the level."""
    import os
    import subprocess
    import sys

    from starlette.testclient import TestClient

    from tests.support.redis_server import RedisServer
    from tests.support.waiting import wait_for
    from tests.test_redis_voice import remote_factory

    server = RedisServer(tmp_path / "redis")
    server.start()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as out:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("turnchart")), "worker", "--redis", server.url,
             "--lease-ms", "1000", "--worker-id", "w-warning"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TURNCHART_LOG_LEVEL": "WARNING"})
    try:
        app = create_app(Settings(bus=server.url, log=LogSettings(level="WARNING")),
                         voice_factory=remote_factory(server.url, ["hello"]),
                         log_sink=ListSink())
        with TestClient(app) as client, client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": "warn-call"})
            service = app.state.voice.service
            assert wait_for(lambda: service.contract("warn-call").get("microphone") == "open",
                            30), log_path.read_text()[-2000:]
            ws.send_json({"event": "stop"})
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        server.stop()
    lines = log_path.read_text().splitlines()
    assert not any('"level": "INFO"' in line for line in lines), lines[:5]
