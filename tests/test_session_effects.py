"""Effects run in order; one that raises or hangs is logged and the rest still run."""

from __future__ import annotations

import asyncio

from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.context import EffectContext
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.manager import SessionManager
from engine.tools.fakes import fake_ports

CHART = """
chart: effects
version: 1
initial: A
contracts: {microphone: [open, closed], playback: [stopped, streaming]}
events: {go: {}, back: {}}
states:
  A:
    contract: {microphone: open, playback: stopped}
    on: {go: B}
  B:
    contract: {microphone: closed, playback: stopped}
    enter: [first, hangs, raises, last]
    on: {back: A}
"""


async def test_a_hanging_effect_times_out_and_the_rest_still_run() -> None:
    ran: list[str] = []
    registry = default_registry()

    @registry.effect()
    async def first(ctx: EffectContext) -> None:
        ran.append("first")

    @registry.effect()
    async def hangs(ctx: EffectContext) -> None:
        ran.append("hangs")
        await asyncio.Event().wait()

    @registry.effect()
    async def raises(ctx: EffectContext) -> None:
        ran.append("raises")
        raise RuntimeError("boom")

    @registry.effect()
    async def last(ctx: EffectContext) -> None:
        ran.append("last")

    chart = compile_text(CHART, "effects.yaml", registry)
    clock, sink = VirtualClock(), ListSink()
    async with SessionManager(chart, registry, fake_ports(clock), clock, EventLog(sink, clock),
                              effect_timeout_s=0.05) as manager:
        session = await manager.open("s1")
        manager.deliver({"event_type": "go", "session_id": "s1", "timestamp": clock.wall()})
        for _ in range(200):
            if session.state == "B":
                break
            await asyncio.sleep(0.01)
    assert ran == ["first", "hangs", "raises", "last"]
    failed = {r["data"]["effect"]: r["data"]["error"] for r in sink.of_type("effect_failed")}
    assert failed == {"hangs": "TimeoutError: did not finish within 0.05s",
                      "raises": "RuntimeError: boom"}
    assert [r["data"]["effect"] for r in sink.of_type("effect_done")] == ["first", "last"]
    assert [r["data"]["to"] for r in sink.of_type("state_transition")] == ["B"]
