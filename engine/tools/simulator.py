"""`turnchart simulate`: run a scenario (CHART_FORMAT.md §4) on a virtual clock.

The scenario file is loaded with the chart loader, so a bad scenario gets the
same `file:line:col` errors as a bad chart. Fake responder, speech, playback
and filler follow the scenario's `fakes`. The trace is the §3 log lines, all
levels, in order; the same scenario always gives the same trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartErrors
from engine.chart.registry import Registry
from engine.chart.source import load_yaml
from engine.runtime.logs import LogSink, Record
from engine.runtime.trace import StateTransition, TraceEvent, from_record
from engine.tools.fakes import FakeSettings
from engine.tools.sandbox import Sandbox


class Fakes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    respond_ms: float = Field(300.0, ge=0)
    response_text: str = "Hi there!"
    respond_error: bool = False
    speak_ms: float = Field(1200.0, ge=0)
    tts_chunk_ms: float = Field(40.0, gt=0)
    tools: dict[str, list[dict[str, dict[str, Any]]]] = Field(default_factory=dict)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: float = Field(ge=0)
    event: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    session: str | None = None
    correlation_id: str | None = None
    raw: Any = None

    @model_validator(mode="after")
    def _event_or_raw(self) -> Step:
        if (self.event is None) == (self.raw is None):
            raise ValueError("a step needs exactly one of 'event' or 'raw'")
        return self


DEFAULT_CHART = Path(__file__).resolve().parents[2] / "charts" / "voice_turn.yaml"
"""The chart a scenario runs when it names none: the shipped one (`turnchart serve`'s
default too), wherever the scenario file and the working directory are."""


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chart: str | None = None      # None: DEFAULT_CHART
    sessions: list[str] = Field(default_factory=lambda: ["s1"], min_length=1)
    fakes: Fakes = Field(default_factory=Fakes)
    steps: list[Step] = Field(default_factory=list)
    until_ms: float | None = Field(None, ge=0)
    description: str | None = None


class ScenarioError(Exception):
    """A scenario that cannot run; the message says where and why."""


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    try:
        loaded = load_yaml(text, str(path))
    except ChartErrors as exc:
        raise ScenarioError(str(exc)) from None
    if loaded.data is None:
        raise ScenarioError(f"{path}:1:1: the scenario is empty: write its `steps:` (and "
                            "optionally `chart:`, `sessions:`, `fakes:`, `until_ms:`)")
    try:
        return Scenario.model_validate(loaded.data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            pos = loaded.source_map.key(loc) if err["type"] == "extra_forbidden" else \
                loaded.source_map.value(loc)
            where = ".".join(str(x) for x in loc) or "(scenario)"
            lines.append(f"{path}:{pos.line}:{pos.col}: {where}: {err['msg']}")
        raise ScenarioError("\n".join(lines)) from None


def resolve_chart_path(scenario: Scenario, scenario_path: str | Path,
                       override: str | None = None) -> Path:
    """`--chart` wins; else the scenario's chart, relative to the scenario file, then cwd;
    else (no `chart:`) the shipped DEFAULT_CHART."""
    if override:
        return Path(override)
    if scenario.chart is None:
        return DEFAULT_CHART
    candidate = Path(scenario.chart)
    if candidate.is_absolute():
        return candidate
    beside = Path(scenario_path).resolve().parent / candidate
    return beside if beside.exists() else Path.cwd() / candidate


async def run_scenario(scenario: Scenario, chart: CompiledChart, registry: Registry,
                       sink: LogSink | None = None) -> list[Record]:
    """Run in a sandbox (engine/tools/sandbox.py); return the trace as §3 log lines (also
    written to `sink` as they happen)."""
    steps = sorted(enumerate(scenario.steps), key=lambda p: (p[1].at, p[0]))
    last = max((s.at for s in scenario.steps), default=0.0)
    until = scenario.until_ms if scenario.until_ms is not None else last + 10_000.0
    fakes = FakeSettings(**{**scenario.fakes.model_dump(),
                            "tools": {" ".join(k.lower().split()): v
                                      for k, v in scenario.fakes.tools.items()}})
    async with Sandbox(chart, registry, fakes=fakes, sink=sink) as box:
        for sid in scenario.sessions:
            await box.open(sid)
        for _, step in steps:
            if step.at > until:
                break
            await box.advance_to(step.at)
            if step.raw is not None:
                box.send_raw(step.raw)
            else:
                assert step.event is not None
                box.send(step.session or scenario.sessions[0], step.event, step.payload,
                         source="simulate", correlation_id=step.correlation_id)
        await box.advance_to(until)
    return box.records()


def simulate_file(scenario_path: str | Path, chart_path: str | None = None,
                  registry: Registry | None = None, sink: LogSink | None = None
                  ) -> list[Record]:
    """Load, run, return the trace. Raises ScenarioError / ChartErrors / OSError."""
    import asyncio

    from engine.runtime.behaviours import default_registry
    scenario = load_scenario(scenario_path)
    registry = registry or default_registry()
    path = resolve_chart_path(scenario, scenario_path, chart_path)
    try:
        chart = load_chart(path, registry)
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{scenario_path}: cannot read chart {path}: {exc}") from None
    return asyncio.run(run_scenario(scenario, chart, registry, sink))


def transitions(trace: Iterable[TraceEvent | Record], session_id: str | None = None
                ) -> list[str]:
    """`["IDLE → LISTENING (client_connected)", …]`: the seed-log view of a trace."""
    events = (e if isinstance(e, TraceEvent) else from_record(e) for e in trace)
    return [f"{e.source} → {e.target} ({e.event})" for e in events
            if isinstance(e, StateTransition) and (session_id is None
                                                   or e.session_id == session_id)]


__all__ = ["Scenario", "ScenarioError", "load_scenario", "run_scenario",
           "simulate_file", "transitions"]
