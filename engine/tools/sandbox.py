"""One sandbox: a chart run on the virtual clock with fake ports, fed inputs, traced.

`turnchart simulate` (engine/tools/simulator.py), `turnchart paths` (engine/tools/paths.py)
and `turnchart replay` (engine/tools/replay.py) all run charts here: the same
`SessionManager` → `Session` path a live server runs, on a `VirtualClock`
(a ten-second call takes milliseconds and gives the same trace every time),
with the ports of engine/tools/fakes.py unless a tool brings its own registry or
ports (replay answers activities from a recording).

The trace is the typed events (engine/runtime/trace.py) in the order they happened,
every level; `records()` gives them as §3 log lines, and `sink` gets each line
as it happens (`turnchart simulate --out`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, LogSink, NullSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.ports import Ports
from engine.runtime.session import Session
from engine.runtime.snapshot import MemorySnapshotStore
from engine.runtime.trace import EventReceived, TraceEvent
from engine.tools.fakes import FakeSettings, fake_ports


class Sandbox:
    """`async with Sandbox(chart, registry) as box:` then `open`, `send`, `advance_to`.

    Everything the sessions own is cancelled when the block ends."""

    def __init__(self, chart: CompiledChart, registry: Registry, *,
                 fakes: FakeSettings | None = None, ports: Ports | None = None,
                 sink: LogSink | None = None) -> None:
        self.clock = VirtualClock()
        self.trace: list[TraceEvent] = []
        self.log = EventLog(sink or NullSink(), self.clock, level="DEBUG")
        self.log.subscribe(self.trace.append)
        self.ports = ports or fake_ports(self.clock, fakes or FakeSettings())
        self.manager = SessionManager(chart, registry, self.ports, self.clock, self.log,
                                      MemorySnapshotStore())
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Sandbox:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.manager)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.__aexit__(*exc)

    # ---------------------------------------------------------------- inputs
    async def open(self, session_id: str) -> Session:
        return await self.manager.open(session_id)

    def send(self, session_id: str, event: str, payload: Mapping[str, Any] | None = None, *,
             source: str, correlation_id: str | None = None) -> bool:
        """An outside event, stamped now; `correlation_id` None: the turn it would open."""
        if correlation_id is None:
            session = self.manager.get(session_id)
            correlation_id = session.next_correlation_id() if session is not None else None
        return self.manager.deliver({
            "event_type": event, "session_id": session_id, "source": source,
            "timestamp": self.clock.wall(), "correlation_id": correlation_id,
            "payload": dict(payload or {}), "metadata": {}})

    def send_raw(self, raw: Any) -> bool:
        """Wire input as it came (a mapping or JSON text): checked like any other."""
        return self.manager.deliver(raw)

    # ----------------------------------------------------------------- clock
    def now_ms(self) -> float:
        return self.clock.now_ms()

    async def advance_to(self, t_ms: float) -> None:
        await self.clock.advance_to(t_ms)

    async def settle(self) -> None:
        await self.clock.settle()

    def next_due(self) -> float | None:
        return self.clock.next_due()

    # ----------------------------------------------------------------- trace
    def received(self) -> int:
        """How many events the sessions have received so far."""
        return sum(1 for e in self.trace if isinstance(e, EventReceived))

    def records(self) -> list[Record]:
        """The trace as §3 log lines."""
        return [event.to_record() for event in self.trace]
