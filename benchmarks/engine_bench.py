"""Engine cost, measured side by side in one run on the same chart (issue 4).

(a) raw python-statemachine dispatch of the compiled class (one instance),
(b) a full session step (validate, stale check, kernel, exit/enter effects,
    contract, activities and timers started and cancelled, log records built
    and sent to a null sink, snapshot saved), and
(c) a plain dict transition table, the floor.
Plus memory per idle session and the time to create 10,000 sessions.
Run: `turnchart bench engine` (JSON on stdout).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.common import best_of, machine
from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart, StepRecord
from engine.chart.registry import GuardInput
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, NullSink
from engine.runtime.manager import SessionManager
from engine.runtime.session import Envelope
from engine.runtime.snapshot import MemorySnapshotStore
from engine.tools.fakes import fake_ports

ROOT = Path(__file__).resolve().parent.parent
# A loop that returns to LISTENING: LISTENING → THINKING → SPEAKING → LISTENING.
CYCLE: list[tuple[str, dict[str, Any]]] = [
    ("stt_final", {"text": "hello", "is_final": True}),
    ("response_ready", {"text": "Hi there!"}),
    ("playback_done", {"duration_ms": 1200.0}),
]


def _raw_dispatch(chart: CompiledChart, n: int) -> float:
    sm = chart.machine_class()
    sm.send("client_connected", step=StepRecord(GuardInput("client_connected", {})))
    steps = [(e, StepRecord(GuardInput(e, p))) for e, p in CYCLE]

    def loop() -> None:
        for i in range(n):
            event, record = steps[i % 3]
            sm.send(event, step=record)

    return best_of(loop) / n


def _dict_floor(chart: CompiledChart, n: int) -> float:
    table = {(r.source, r.event): r.target for r in chart.transitions if r.order == 0}
    table[("THINKING", "response_ready")] = "SPEAKING"
    events = [e for e, _ in CYCLE]

    def loop() -> None:
        state = "LISTENING"
        for i in range(n):
            state = table[(state, events[i % 3])] or state

    return best_of(loop) / n


async def _session_steps(chart: CompiledChart, n: int, profile: bool) -> tuple[float, str]:
    registry = default_registry()
    clock = VirtualClock()
    log = EventLog(NullSink(), clock, level="DEBUG")
    async with SessionManager(chart, registry, fake_ports(clock), clock, log,
                              MemorySnapshotStore()) as mgr:
        session = await mgr.open("bench")
        await session._step(_env("client_connected", {}, clock))
        envs = [_env(e, p, clock) for e, p in CYCLE]
        profiler = cProfile.Profile() if profile else None
        best = float("inf")
        for _ in range(5):
            gc.collect()
            gc.disable()  # as best_of does for (a) and (c): compare like with like
            try:
                start = time.perf_counter()
                if profiler:
                    profiler.enable()
                for i in range(n):
                    await session._step(envs[i % 3])
                if profiler:
                    profiler.disable()
                best = min(best, time.perf_counter() - start)
            finally:
                gc.enable()
        report = ""
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            report = out.getvalue()
    return best / n, report


def _env(event: str, payload: dict[str, Any], clock: VirtualClock) -> Envelope:
    return Envelope(event=VoiceEvent(event_type=event, session_id="bench", source="bench",
                                     timestamp=clock.wall(), payload=payload))


async def _sessions(chart: CompiledChart, count: int) -> tuple[float, float]:
    """Seconds to open `count` sessions, and bytes per idle session (tracemalloc)."""
    registry = default_registry()
    clock = VirtualClock()
    log = EventLog(NullSink(), clock, level="INFO")
    async with SessionManager(chart, registry, fake_ports(clock), clock, log,
                              MemorySnapshotStore()) as mgr:
        start = time.perf_counter()
        for i in range(count):
            await mgr.open(f"s{i}")
        await clock.settle()
        create_s = time.perf_counter() - start
        await mgr.close_all()
    async with SessionManager(chart, registry, fake_ports(clock), clock, log,
                              MemorySnapshotStore()) as mgr:
        sample = min(count, 2000)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(sample):
            await mgr.open(f"m{i}")
        await clock.settle()
        per_session = (tracemalloc.get_traced_memory()[0] - before) / sample
        tracemalloc.stop()
        await mgr.close_all()
    return create_s, per_session


def run(events: int = 3000, sessions: int = 10_000, profile: bool = False) -> dict[str, Any]:
    # whole cycles, so every timed run ends in the state where it began
    events = max(len(CYCLE), events - events % len(CYCLE))
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", default_registry())
    raw = _raw_dispatch(chart, events)
    floor = _dict_floor(chart, events * 10)
    step, report = asyncio.run(_session_steps(chart, events, profile))
    create_s, per_session = asyncio.run(_sessions(chart, sessions))
    result: dict[str, Any] = {
        "benchmark": "engine", "machine": machine(), "chart": "charts/voice_turn.yaml",
        "events": events,
        "us_per_event": {"a_raw_statemachine": round(raw * 1e6, 2),
                         "b_session_step": round(step * 1e6, 2),
                         "c_dict_floor": round(floor * 1e6, 4)},
        "ratio_b_over_a": round(step / raw, 3),
        "ratio_a_over_c": round(raw / floor, 1),
        "bytes_per_idle_session": round(per_session),
        "sessions_created": sessions, "create_sessions_s": round(create_s, 3),
        "targets": {"b_over_a_le_2": step / raw <= 2.0,
                    "idle_session_le_30KB": per_session <= 30 * 1024,
                    "10k_sessions_le_5s": create_s * 10_000 / sessions <= 5.0},
    }
    if profile:
        result["profile_top"] = report
    return result
