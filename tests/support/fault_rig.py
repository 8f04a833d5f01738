"""A session manager rigged for fault-injection tests (tests/reliability/test_faults_*).

The shipped chart on a chosen clock with chosen ports, the trace in memory,
and the checks every fault test ends with: the session is in a state of the
chart, no state was held past its deadline (read from the chart, not
hard-coded), and nothing of the session is still running after close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import Clock
from engine.runtime.logs import EventLog, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.ports import Ports
from engine.runtime.snapshot import SnapshotStore

ROOT = Path(__file__).resolve().parents[2]
VOICE_TURN = ROOT / "charts" / "voice_turn.yaml"
HELLO = {"text": "hello", "is_final": True}


def deadlines(chart: CompiledChart) -> dict[str, float]:
    """Leaf state → ms after which one of its own timers takes it out of the state
    (a timer whose event has a transition with a target there). States waiting only
    for the outside world (IDLE, LISTENING) have none."""
    out: dict[str, float] = {}
    for name, info in chart.states.items():
        leaving = [t.delay_ms for t in info.after
                   if any(r.event == t.event and r.target is not None
                          for r in chart.rows_from(name))]
        if leaving and not info.compound:
            out[name] = min(leaving)
    return out


class FaultRig:
    """`SessionManager` + `ListSink` on the shipped chart; use as `async with rig:`."""

    def __init__(self, clock: Clock, ports: Ports, *, chart: Path = VOICE_TURN,
                 registry: Registry | None = None, store: SnapshotStore | None = None,
                 **manager_options: Any) -> None:
        self.registry = registry or default_registry()
        self.chart = load_chart(chart, self.registry)
        self.clock = clock
        self.ports = ports
        self.sink = ListSink()
        self.log = EventLog(self.sink, clock, level="DEBUG")
        self.manager = SessionManager(self.chart, self.registry, ports, clock, self.log, store,
                                      **manager_options)

    async def __aenter__(self) -> FaultRig:
        await self.manager.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.manager.__aexit__(*exc)

    def send(self, event: str, payload: dict[str, Any] | None = None, *, sid: str = "s1",
             timestamp: float | None = None) -> bool:
        return self.manager.deliver({
            "event_type": event, "session_id": sid, "source": "test",
            "timestamp": self.clock.wall() if timestamp is None else timestamp,
            "payload": payload or {}})

    def lines(self, event_type: str, sid: str | None = "s1", **data: Any) -> list[Record]:
        return [r for r in self.sink.of_type(event_type, sid)
                if all(r["data"].get(k) == v for k, v in data.items())]

    def transitions(self, sid: str = "s1") -> list[str]:
        return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
                for r in self.lines("state_transition", sid)]

    def state(self, sid: str = "s1") -> str | None:
        session = self.manager.get(sid)
        return session.state if session is not None else None

    def overstays(self, sid: str = "s1", slack_ms: float = 0.0) -> list[str]:
        """Every time a state was held longer than its deadline (+ slack), including
        the current one: empty when the chart's timeouts did their job."""
        limits = deadlines(self.chart)
        found = [f"{r['data']['from']} held {r['data']['dwell_ms']} ms"
                 for r in self.lines("latency_recorded", sid)
                 if r["data"]["dwell_ms"] > limits.get(r["data"]["from"], float("inf")) + slack_ms]
        session = self.manager.get(sid)
        if session is not None:
            held = self.clock.now_ms() - session.entered_at
            if held > limits.get(session.state, float("inf")) + slack_ms:
                found.append(f"{session.state} held {held} ms (still)")
        return found


def other_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of this event loop other than the test's own, still running."""
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def never() -> AsyncIterator[str]:
    """An async iterator that never yields: a dependency that hangs."""
    await asyncio.Event().wait()
    yield ""  # pragma: no cover - never reached
