"""The embedded default (in-memory bus and snapshots) needs no Redis at all:
with the `redis` package made unimportable, the server answers and sessions
run; nothing under adapters.redis is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import asyncio, sys

    class NoRedis:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("redis", "hiredis"):
                raise ImportError(f"{name} is blocked by the test")
            return None

    sys.meta_path.insert(0, NoRedis())

    from starlette.testclient import TestClient
    from adapters.config import Settings
    from adapters.server.app import create_app
    from engine.runtime.behaviours import default_registry
    from engine.chart.chart import load_chart
    from engine.runtime.clock import VirtualClock
    from engine.tools.fakes import fake_ports
    from engine.runtime.logs import EventLog, ListSink
    from engine.runtime.manager import SessionManager
    from engine.runtime.snapshot import MemorySnapshotStore

    settings = Settings()
    assert settings.bus == "memory", settings.bus
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["bus"] == "memory", health.text

    async def one_turn():
        registry = default_registry()
        chart = load_chart("charts/voice_turn.yaml", registry)
        clock = VirtualClock()
        sink = ListSink()
        store = MemorySnapshotStore()
        async with SessionManager(chart, registry, fake_ports(clock), clock,
                                  EventLog(sink, clock), store) as manager:
            session = await manager.open("s1")
            manager.deliver({"event_type": "client_connected", "session_id": "s1",
                             "timestamp": clock.wall()})
            manager.deliver({"event_type": "stt_final", "session_id": "s1",
                             "timestamp": clock.wall(),
                             "payload": {"text": "hello", "is_final": True}})
            await clock.advance(100)
            assert session.state == "THINKING", session.state
            assert store.snapshots["s1"].configuration[-1] == "THINKING"

    asyncio.run(one_turn())
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("redis", "hiredis") or m.startswith("adapters.redis"))
    print("LOADED", loaded)
""")


def test_the_embedded_default_runs_with_redis_unimportable() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout[-2000:]
