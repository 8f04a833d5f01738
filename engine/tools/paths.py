"""`turnchart paths`: event sequences generated from the chart graph, run in simulation.

A chart that validates can still strand a caller: a transition no input ever
reaches, a turn that waits for an event nobody posts, an activity that talks
while the speaker is off. Hand-written scenarios only find what their author
thought of; here the chart itself says what to try (XState's path generation,
on our simulator), so users can run it in CI on their own charts.

How the sequences are made (docs/paths.md):

- A breadth-first search over the states a session *rests* in (after the
  initial descent and every zero-delay timer). From each one it tries "wait"
  (let the clock run until a timer or an activity posts the next event) and
  sending every event the state or one of its parents handles, once per guard
  outcome: the shortest path to each transition's source, then the input that
  fires it.
- Guards are code, so inputs come from the examples a guard declares in the
  registry (`Registry.guard(..., examples=...)`); the real guard is evaluated
  on each candidate payload to pick one, with the session's data and the row's
  arguments, exactly as the kernel evaluates it (engine/chart/guards.py). A guard
  without examples gets its outcome *forced* for that one evaluation, and the
  report says so.
- Events that timers and activities post may be injected as outside events (at
  once, as the timer or activity would): every transition is then reached
  deterministically, and the report marks those rows "injected".
- After the last event the clock runs until no timer is pending (the session
  is quiescent); the whole trace is then read back: which transitions fired,
  which guard outcomes were taken, and any problem: a *stuck* session (no way
  back to the start loop or to a final state, or an activity that never
  ends), a *rejected* event the chart's own timers or activities posted, a
  *contract violation*, any other ERROR line.

Every run uses the same fake ports and virtual clock as `turnchart simulate`,
so each kept sequence is also a §4 scenario that replays to the same state.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from engine.chart.compiler import CompiledChart, TransitionRow, compile_chart
from engine.chart.data import defaults as data_defaults
from engine.chart.guards import RowGuard
from engine.chart.registry import GuardFn, GuardInput, Registry
from engine.chart.source import Position, SourceMap
from engine.chart.spec import DONE_PREFIX, parse_payload_type
from engine.chart.validator import ValidatedChart
from engine.runtime.events import EventProblem, VoiceEvent, check_payload
from engine.runtime.logs import Record
from engine.runtime.session import Session
from engine.runtime.trace import (
    SESSION_CLOSED,
    ActivityCancelled,
    ContractViolation,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    LogLine,
    SessionClosed,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TraceEvent,
    TransitionRejected,
)
from engine.tools.fakes import FakeSettings
from engine.tools.sandbox import Sandbox
from engine.tools.simulator import transitions

SESSION_ID = "s1"
SOURCE = "simulate"                   # the source `turnchart simulate` stamps on its steps
HORIZON_MS = 60_000.0                 # how long the clock may run past the last event
_ZERO: dict[type, Any] = {str: "", int: 0, float: 0.0, bool: False, list: [], dict: {}}

_JOIN = "+"
"""Where a session of a chart with parallel regions rests: its active leaves joined
(`LISTENING+ASK_SIZE`); a single leaf otherwise."""
Via = Literal["outside", "timer", "activity", "internal", "injected", "forced"]
_QUALITY: dict[str, int] = {"outside": 3, "timer": 3, "activity": 3, "internal": 3, "injected": 2,
                            "forced": 1}
ProblemKind = Literal["stuck", "rejected", "contract_violation", "error", "unexpected"]
Forced = tuple[tuple[str, bool | None], ...]
"""Per evaluation of a guard without examples, in order: the forced result, or None (real)."""


# --------------------------------------------------------------- the model
@dataclass(frozen=True, slots=True)
class PathStep:
    """One outside event of a generated sequence, at a time on the virtual clock."""

    at: float
    event: str
    payload: Mapping[str, Any]
    forced: Forced = ()
    why: str = ""

    def forced_text(self) -> str:
        return ", ".join(f"{name} forced {str(value).lower()}" for name, value in self.forced
                         if value is not None)


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """One guard of one transition, holding or not (`not g` holds when g is false)."""

    row: int
    position: int
    held: bool


@dataclass(frozen=True, slots=True)
class Hit:
    """How a row or guard outcome was first covered at its best: by which path and input."""

    via: Via
    detail: str
    path: int
    state: str


@dataclass(frozen=True, slots=True)
class RowCoverage:
    row: TransitionRow
    position: Position | None
    hit: Hit | None
    from_states: tuple[str, ...]

    def label(self) -> str:
        return describe_row(self.row)


@dataclass(frozen=True, slots=True)
class GuardCoverage:
    outcome: GuardOutcome
    row: TransitionRow
    guard: str
    position: Position | None
    hit: Hit | None

    def label(self) -> str:
        return (f"{self.row.source} {self.row.event} [{self.guard}] "
                f"{'holds' if self.outcome.held else 'fails'}")


@dataclass(frozen=True, slots=True)
class GeneratedPath:
    """A kept sequence: the steps, how long the clock ran, and where the session ended."""

    number: int
    steps: tuple[PathStep, ...]
    until_ms: float
    final_state: str
    quiescent: bool
    covers: tuple[str, ...] = ()
    transitions: tuple[str, ...] = ()   # "A → B (event)", as `turnchart simulate` shows them

    @property
    def forced(self) -> bool:
        return any(step.forced_text() for step in self.steps)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    path: int
    state: str
    message: str
    line: Record | None               # the log line that shows it


@dataclass(frozen=True)
class PathReport:
    """What `turnchart paths` prints: coverage, the kept sequences and the problems."""

    chart: str
    chart_path: str
    rows: tuple[RowCoverage, ...]
    guards: tuple[GuardCoverage, ...]
    paths: tuple[GeneratedPath, ...]
    problems: tuple[Problem, ...]
    fakes: FakeSettings
    explored: int

    @staticmethod
    def _percent(covered: int, total: int) -> float:
        return 100.0 if total == 0 else round(100.0 * covered / total, 1)

    @property
    def rows_covered(self) -> int:
        return sum(1 for r in self.rows if r.hit is not None)

    @property
    def guards_covered(self) -> int:
        return sum(1 for g in self.guards if g.hit is not None)

    @property
    def transition_percent(self) -> float:
        return self._percent(self.rows_covered, len(self.rows))

    @property
    def guard_percent(self) -> float:
        return self._percent(self.guards_covered, len(self.guards))

    def ok(self, min_coverage: float = 100.0) -> bool:
        """Coverage of transitions and of guard outcomes at least `min_coverage`, no problem."""
        return (self.transition_percent >= min_coverage and self.guard_percent >= min_coverage
                and not self.problems)

    def as_dict(self, min_coverage: float = 100.0) -> dict[str, Any]:
        def where(pos: Position | None) -> dict[str, Any]:
            return {"path": self.chart_path, "line": pos.line if pos else None,
                    "col": pos.col if pos else None}

        def hit(h: Hit | None) -> dict[str, Any]:
            return {"covered": h is not None, "via": h.via if h else None,
                    "detail": h.detail if h else None, "by_path": h.path if h else None}

        return {
            "chart": self.chart, "path": self.chart_path, "ok": self.ok(min_coverage),
            "min_coverage": min_coverage, "sequences_explored": self.explored,
            "transitions": {
                "covered": self.rows_covered, "total": len(self.rows),
                "percent": self.transition_percent,
                "rows": [{**r.row.as_dict(), "label": r.label(), **where(r.position),
                          **hit(r.hit), "from_states": list(r.from_states)} for r in self.rows]},
            "guard_outcomes": {
                "covered": self.guards_covered, "total": len(self.guards),
                "percent": self.guard_percent,
                "outcomes": [{"transition": g.row.as_dict(), "guard": g.guard,
                              "holds": g.outcome.held, "label": g.label(), **where(g.position),
                              **hit(g.hit)} for g in self.guards]},
            "paths": [{"number": p.number, "final_state": p.final_state,
                       "until_ms": p.until_ms, "quiescent": p.quiescent, "forced": p.forced,
                       "covers": list(p.covers), "transitions": list(p.transitions),
                       "steps": [{"at": s.at, "event": s.event, "payload": dict(s.payload),
                                  "why": s.why, "forced": s.forced_text() or None}
                                 for s in p.steps]} for p in self.paths],
            "problems": [{"kind": p.kind, "path": p.path, "state": p.state,
                          "message": p.message, "log_line": p.line} for p in self.problems],
        }


def describe_row(row: TransitionRow) -> str:
    """`THINKING --response_ready--> SPEAKING [has_text]` (internal: `(internal)`)."""
    guards = f" [{', '.join(str(g) for g in row.guards)}]" if row.guards else ""
    return f"{row.source} --{row.event}--> {row.target or '(internal)'}{guards}"


# --------------------------------------------------------------- guards
@dataclass(frozen=True, slots=True)
class _Evaluation:
    """What the kernel does with one event in one state, given a payload (and forcing)."""

    fired: TransitionRow | None
    checks: tuple[tuple[GuardOutcome, bool], ...]   # outcome, forced?
    forced: Forced
    error: str | None = None

    @property
    def forced_count(self) -> int:
        return sum(1 for _, value in self.forced if value is not None)


class _Guards:
    """Evaluates guards the way the kernel does (rows in order, guards in order,
    first failing one stops the row; each guard through engine/chart/guards.py, as the
    kernel's conditions) and knows which can only be forced: a guard with no
    example that fits the event (one naming at least one of its payload fields,
    or empty)."""

    def __init__(self, chart: CompiledChart, registry: Registry) -> None:
        self.bound: dict[tuple[int, int], RowGuard] = {
            (row.index, j): RowGuard.bind(ref, registry.guard_fn(ref.name))
            for row in chart.transitions for j, ref in enumerate(row.guards)}
        self._examples: dict[tuple[str, str], dict[bool, tuple[Mapping[str, Any], ...]]] = {}
        for row in chart.transitions:
            fields = set(chart.events[row.event].payload)
            for ref in row.guards:
                declared = registry.guard_examples(ref.name)
                self._examples[(ref.name, row.event)] = {
                    outcome: tuple(e for e in given if not e or fields & set(e))
                    for outcome, given in declared.items()}
        self.forceable = frozenset(key for key, by_outcome in self._examples.items()
                                   if not any(by_outcome.values()))
        self.forced_names = frozenset(name for name, _ in self.forceable)

    def examples(self, name: str, event: str, outcome: bool) -> tuple[Mapping[str, Any], ...]:
        """The guard's example payloads for `outcome` that fit `event`."""
        return self._examples.get((name, event), {}).get(outcome, ())

    def evaluate(self, rows: Sequence[TransitionRow], event: str, payload: Mapping[str, Any],
                 data: Mapping[str, Any], plan: Forced | None = None) -> list[_Evaluation]:
        """Every way the event can go, given the payload and the session's data. With
        `plan` (a run's forcing), exactly one; without, guards that can only be
        forced branch into both outcomes."""
        inp = GuardInput(event, payload, data)
        queues: dict[str, deque[bool | None]] = {}
        for name, value in plan or ():
            queues.setdefault(name, deque()).append(value)
        out: list[_Evaluation] = []

        def walk(i: int, j: int, checks: tuple[tuple[GuardOutcome, bool], ...],
                 forced: Forced) -> None:
            if i == len(rows):
                out.append(_Evaluation(None, checks, _trim(forced)))
                return
            row = rows[i]
            if j == len(row.guards):
                out.append(_Evaluation(row, checks, _trim(forced)))
                return
            ref = row.guards[j]
            guard = self.bound[(row.index, j)]
            forceable = (ref.name, event) in self.forceable
            choices: list[tuple[bool, bool | None]] = []   # raw result, forced value
            queue = queues.get(ref.name) if forceable else None
            planned = queue.popleft() if queue else None
            if planned is not None:
                choices.append((planned, planned))
            else:
                natural: bool | None = None
                try:
                    natural = guard.answer(inp)
                    choices.append((natural, None))
                except Exception as exc:
                    out.append(_Evaluation(None, checks, _trim(forced),
                                           f"guard_error:{type(exc).__name__}"))
                if forceable and plan is None:
                    choices.extend((value, value) for value in (True, False) if value != natural)
            for raw, forced_value in choices:
                held = guard.holds(raw)
                check = (GuardOutcome(row.index, j, held), forced_value is not None)
                more = ((ref.name, forced_value),) if forceable else ()
                if held:
                    walk(i, j + 1, (*checks, check), (*forced, *more))
                else:
                    walk(i + 1, 0, (*checks, check), (*forced, *more))

        walk(0, 0, (), ())
        return out


def _trim(forced: Forced) -> Forced:
    """Drop trailing natural evaluations: only the forced ones need a plan entry."""
    end = len(forced)
    while end and forced[end - 1][1] is None:
        end -= 1
    return forced[:end]


class _Forcing:
    """Wraps the guards without examples: while armed for one step, their next
    evaluations return the planned results instead of calling the guard."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[bool | None]] = {}

    def arm(self, plan: Forced) -> None:
        self._queues = {}
        for name, value in plan:
            self._queues.setdefault(name, deque()).append(value)

    def disarm(self) -> None:
        self._queues = {}

    def wrap(self, name: str, fn: GuardFn) -> GuardFn:
        def forced_or_real(inp: GuardInput) -> bool:
            queue = self._queues.get(name)
            if queue:
                value = queue.popleft()
                if value is not None:
                    return value
            return fn(inp)

        forced_or_real.__name__ = f"forced_{name}"
        return forced_or_real


# --------------------------------------------------------------- one run
@dataclass(slots=True)
class _Run:
    steps: tuple[PathStep, ...]
    rest_state: str
    rest_ms: float
    until_ms: float
    final_state: str
    quiescent: bool
    pending: tuple[str, ...]
    trace: list[TraceEvent]
    rest_data: Mapping[str, Any] = field(default_factory=dict)   # the session's data at rest


@dataclass(frozen=True, slots=True)
class _Handling:
    """One event the session looked at, the state it was in, and what it did."""

    event: str
    source: str
    payload: Mapping[str, Any]
    state: str
    outcome: Outcome
    step: PathStep | None
    data: Mapping[str, Any]            # the session's data when the event arrived


Outcome = StateTransition | InternalTransition | TransitionRejected | EventStale
_OUTCOMES = (StateTransition, InternalTransition, TransitionRejected, EventStale)


def _handlings(trace: Sequence[TraceEvent], steps: Sequence[PathStep],
               data: Mapping[str, Any]) -> Iterable[_Handling]:
    """What each event did, from the state it found, with the data it found (`data`:
    the chart's defaults, then each `data_changed` line's new values). With parallel
    regions one event may have an outcome line per region, all from the same state
    (`_where`)."""
    state = before = ""
    current, seen = dict(data), dict(data)
    received: EventReceived | None = None
    outside = 0
    step: PathStep | None = None
    for event in trace:
        if isinstance(event, SessionStarted | SessionResumed):
            state = event.state
        elif isinstance(event, LogLine) and event.name == "data_changed":
            changes = event.fields.get("changes") or {}
            current.update({name: change["to"] for name, change in changes.items()})
        elif isinstance(event, EventReceived):
            received, before, seen = event, state, dict(current)
            step = None
            if event.source == SOURCE:
                step = steps[outside] if outside < len(steps) else None
                outside += 1
        elif received is not None and isinstance(event, _OUTCOMES):
            yield _Handling(received.event, received.source, received.payload or {},
                            before, event, step, seen)
            if isinstance(event, StateTransition):
                state = _JOIN.join(event.active) if event.active else event.target
            if not (isinstance(event, StateTransition | InternalTransition)
                    and _JOIN in before):
                received = None   # one outcome per event, except one per parallel region


def _where(session: Session) -> str:
    return _JOIN.join(session.leaves)


# --------------------------------------------------------------- generator
@dataclass(frozen=True, slots=True)
class _Node:
    steps: tuple[PathStep, ...]
    rest_ms: float
    state: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Analysis:
    rows: dict[int, tuple[Via, str, str]] = field(default_factory=dict)
    guards: dict[GuardOutcome, tuple[Via, str, str]] = field(default_factory=dict)
    from_states: dict[int, set[str]] = field(default_factory=dict)
    problems: list[tuple[tuple[str, ...], ProblemKind, str, str, Record | None]] = \
        field(default_factory=list)


class PathGenerator:
    """Explores a chart's sequences on the simulator and builds a `PathReport`."""

    def __init__(self, chart: CompiledChart, registry: Registry,
                 fakes: FakeSettings | None = None) -> None:
        self.chart = chart
        self.registry = registry
        self.fakes = fakes or FakeSettings()
        self.guards = _Guards(chart, registry)
        self.forcing = _Forcing()
        if self.guards.forced_names:
            wrapped = registry.with_guards({n: self.forcing.wrap(n, registry.guard_fn(n))
                                            for n in self.guards.forced_names})
            validated = ValidatedChart(chart.spec, SourceMap(chart.path), list(chart.warnings))
            self.run_chart, self.run_registry = compile_chart(validated, wrapped), wrapped
        else:
            self.run_chart, self.run_registry = chart, registry
        longest = max((t.delay_ms for s in chart.states.values() for t in s.after), default=0.0)
        self.horizon_ms = HORIZON_MS + longest
        self.timer_events: dict[str, str] = {}
        for state in chart.states.values():
            for timer in state.after:
                self.timer_events.setdefault(timer.event, f"timer {timer.delay} of {state.name}")
        self.activity_events: dict[str, str] = {}
        self.home = _home_states(chart)

    # -------------------------------------------------------------- running
    async def _deliver(self, box: Sandbox, step: PathStep) -> None:
        await box.advance_to(step.at)
        if step.forced:
            self.forcing.arm(step.forced)
        box.send(SESSION_ID, step.event, step.payload, source=SOURCE)
        if step.forced:
            await box.settle()   # processed now, while the forcing is armed for it alone
            self.forcing.disarm()

    async def _simulate(self, steps: tuple[PathStep, ...], rest_ms: float,
                        action: PathStep | None, wait: bool) -> _Run | None:
        """Run `steps`, then `action` (or a wait), then the clock until quiescent."""
        async with Sandbox(self.run_chart, self.run_registry, fakes=self.fakes) as box:
            session = await box.open(SESSION_ID)
            await box.advance_to(0.0)
            for step in steps:
                await self._deliver(box, step)
            await box.advance_to(rest_ms)
            if action is not None:
                steps = (*steps, action)
                await self._deliver(box, action)
            elif wait:
                received = box.received()
                limit = rest_ms + self.horizon_ms
                while box.received() == received:
                    due = box.next_due()
                    if due is None or due > limit:
                        return None   # nothing would ever happen by waiting
                    await box.advance_to(due)
            await box.advance_to(box.now_ms())
            rest_state, rest_at, rest_data = _where(session), box.now_ms(), dict(session.context)
            limit = rest_at + self.horizon_ms
            while (due := box.next_due()) is not None and due <= limit:
                await box.advance_to(due)
            quiescent = box.next_due() is None
            until = box.now_ms() if quiescent else limit
            await box.advance_to(until)
            final_state = _where(session)
        pending = tuple(e.activity for e in box.trace
                        if isinstance(e, ActivityCancelled) and e.reason == SESSION_CLOSED)
        return _Run(steps, rest_state, rest_at, until, final_state, quiescent, pending,
                    box.trace, rest_data)

    # ------------------------------------------------------------- planning
    def _payload_candidates(self, event: str, rows: Sequence[TransitionRow]
                            ) -> list[dict[str, Any]]:
        spec = self.chart.events[event]
        base: dict[str, Any] = {}
        for name, type_text in spec.payload.items():
            kind, optional = parse_payload_type(type_text)
            if not optional:
                base[name] = _ZERO[kind]
        names = list(dict.fromkeys(g.name for row in rows for g in row.guards))
        raw: list[Mapping[str, Any]] = []
        for name in names:
            for outcome in (True, False):
                raw.extend(self.guards.examples(name, event, outcome))
        for row in rows:  # every guard of the row holding at once
            merged: dict[str, Any] = {}
            for ref in row.guards:
                examples = self.guards.examples(ref.name, event, not ref.negated)
                merged.update(examples[0] if examples else {})
            raw.append(merged)
        raw.append({})   # the declared fields' zero values: all an unguarded row needs
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for example in raw:
            payload = {**base, **{k: v for k, v in example.items() if k in spec.payload}}
            key = json.dumps(payload, sort_keys=True, default=repr)
            if key not in seen and _fits(self.chart, event, payload):
                seen.add(key)
                out.append(payload)
        return out

    def _actions(self, state: str, at: float, data: Mapping[str, Any]) -> list[PathStep]:
        """One step per distinct way each handled event can go in `state` with the
        session's `data` (with parallel regions: in each region's leaf)."""
        out: list[PathStep] = []
        seen: set[str] = set()
        handled = [(leaf, event) for leaf in state.split(_JOIN)
                   for event in self.chart.valid_events(leaf)
                   if not event.startswith(DONE_PREFIX)]   # the session posts those itself
        for leaf, event in handled:
            rows = [r for r in self.chart.rows_from(leaf) if r.event == event]
            wishes: list[tuple[str, TransitionRow | None, GuardOutcome | None]] = []
            for row in rows:
                wishes.append((f"fire {describe_row(row)}", row, None))
                for j, ref in enumerate(row.guards):
                    for held in (True, False):
                        wishes.append((f"[{ref}] {'holds' if held else 'fails'} for "
                                       f"{describe_row(row)}", None,
                                       GuardOutcome(row.index, j, held)))
            candidates = self._payload_candidates(event, rows)
            for why, wanted, outcome in wishes:
                best: tuple[int, int, dict[str, Any], _Evaluation] | None = None
                for order, payload in enumerate(candidates):
                    for ev in self.guards.evaluate(rows, event, payload, data):
                        if ev.error is not None:
                            continue
                        if (wanted is not None and ev.fired is wanted) or (
                                outcome is not None and any(o == outcome for o, _ in ev.checks)):
                            rank = (ev.forced_count, order)
                            if best is None or rank < best[:2]:
                                best = (*rank, payload, ev)
                if best is None:
                    continue
                _, _, payload, ev = best
                key = json.dumps([event, payload, ev.forced], sort_keys=True, default=repr)
                if key not in seen:
                    seen.add(key)
                    out.append(PathStep(at, event, payload, ev.forced, why))
        # Unforced inputs first: the search reaches each state the natural way when it can.
        return sorted(out, key=lambda step: sum(v is not None for _, v in step.forced))

    # ------------------------------------------------------------ analysis
    def _via(self, handling: _Handling) -> tuple[Via, str]:
        source = handling.source
        if source == "internal":   # done.state.X: the session posted it itself
            return "internal", "posted by the session"
        if source == "timer":
            return "timer", self.timer_events.get(handling.event, "timer")
        if source.startswith("activity:"):
            return "activity", f"activity {source.split(':', 1)[1]}"
        producer = self.timer_events.get(handling.event) or \
            self.activity_events.get(handling.event)
        if producer is not None:
            return "injected", f"sent as {producer} would"
        return "outside", "outside event"

    def _analyse(self, run: _Run) -> _Analysis:
        result = _Analysis()
        for handling in _handlings(run.trace, run.steps, data_defaults(self.chart.data)):
            self._analyse_handling(handling, result)
        for event in run.trace:
            kind = event.event_type
            state = str(getattr(event, "state", run.final_state))
            if isinstance(event, ContractViolation):
                result.problems.append(((kind, state, event.channel),
                                        "contract_violation", state,
                                        f"contract violation in {state}: {event.detail}",
                                        event.to_record()))
            elif isinstance(event, EventInvalid):
                result.problems.append((("invalid", str(event.field)), "rejected", state,
                                        f"an event was dropped as invalid: {event.error}",
                                        event.to_record()))
            elif event.level == "ERROR" and not isinstance(event,
                                                          TransitionRejected | SessionClosed):
                who = getattr(event, "effect", None) or getattr(event, "activity", None)
                result.problems.append(((kind, state, str(who)), "error", state,
                                        f"{kind}: {event.message}", event.to_record()))
        ends = run.final_state.split(_JOIN)
        if not all(self.chart.states[s].final for s in ends) and \
                not any(s in self.home.reach_home for s in ends):
            result.problems.append((("stuck", run.final_state), "stuck", run.final_state,
                                    f"ends in {run.final_state}, which has no way back to "
                                    f"{self.home.describe()} nor to a final state", None))
        elif run.quiescent and run.pending:
            names = ", ".join(sorted(set(run.pending)))
            result.problems.append((("stuck-activity", run.final_state, names), "stuck",
                                    run.final_state,
                                    f"ends in {run.final_state} with activity {names} still "
                                    "running after every timer fired: it never ends", None))
        return result

    def _analyse_handling(self, h: _Handling, result: _Analysis) -> None:
        outcome = h.outcome
        if isinstance(outcome, EventStale):
            return
        leaves = [s for s in h.state.split(_JOIN) if s in self.chart.states]
        region = outcome.source if isinstance(outcome, StateTransition) else outcome.state
        if len(leaves) > 1 and region in leaves and not isinstance(outcome, TransitionRejected):
            leaves = [region]   # parallel regions: the row of the region that moved
        rows = list(dict.fromkeys(r for leaf in leaves for r in self.chart.rows_from(leaf)
                                  if r.event == h.event))
        source = leaves[0] if len(leaves) == 1 else h.state
        plan = h.step.forced if h.step is not None else ()
        predicted = self.guards.evaluate(rows, h.event, h.payload, h.data, plan)[0]
        via, detail = self._via(h)
        internal = h.source != SOURCE
        forced_text = h.step.forced_text() if h.step is not None else ""
        if isinstance(outcome, TransitionRejected):
            reason = outcome.reason
            expected = (predicted.fired is None and (
                (not rows and reason == "no_transition")
                or (predicted.error is not None and reason.startswith(predicted.error))
                or (predicted.error is None and rows and reason.startswith("guard_failed"))))
            if not expected:
                self._unexpected(h, predicted, result)
                return
            if reason.startswith("guard_error") or (internal and outcome.level != "DEBUG"):
                result.problems.append((("rejected", h.state, h.event, reason.split(":")[0]),
                                        "rejected", h.state,
                                        f"{h.event} from {h.source} rejected in {h.state}: "
                                        f"{reason}", outcome.to_record()))
        else:
            row = predicted.fired
            ok = row is not None and (
                (isinstance(outcome, InternalTransition) and row.internal)
                or (isinstance(outcome, StateTransition) and row.target is not None
                    and outcome.source == source
                    and self._lands(row.target, outcome.target)))
            if not ok or row is None:
                self._unexpected(h, predicted, result)
                return
            forced_row = any(forced for _, forced in predicted.checks)
            _better(result.rows, row.index, ("forced", forced_text, h.state) if forced_row
                    else (via, detail, h.state))
            result.from_states.setdefault(row.index, set()).add(h.state)
        for checked, forced in predicted.checks:
            _better(result.guards, checked, ("forced", forced_text, h.state) if forced
                    else (via, detail, h.state))

    def _lands(self, target: str, to: Any) -> bool:
        """Whether a transition to `target` may end in leaf `to`: its initial leaf, or
        (history, parallel regions) any leaf below it."""
        if to == self.chart.initial_leaf(target):
            return True
        resumes = self.chart.has_parallel or any(
            s.history is not None for s in self.chart.states.values())
        return resumes and isinstance(to, str) and to in self.chart.states and (
            to == target or target in self.chart.ancestors(to))

    def _unexpected(self, h: _Handling, predicted: _Evaluation, result: _Analysis) -> None:
        want = describe_row(predicted.fired) if predicted.fired else "a rejection"
        outcome = h.outcome
        if isinstance(outcome, StateTransition):
            got = f"went {outcome.source} → {outcome.target}"
        elif isinstance(outcome, InternalTransition):
            got = "handled it without leaving the state"
        else:
            got = f"rejected it ({getattr(outcome, 'reason', None)})"
        result.problems.append((("unexpected", h.state, h.event), "unexpected", h.state,
                                f"{h.event} in {h.state} should have fired {want} but the "
                                f"session {got}: is a guard not a pure function of the "
                                "payload?", outcome.to_record()))

    # ----------------------------------------------------------- exploring
    async def explore(self) -> PathReport:
        runs: list[_Run] = []
        root = await self._simulate((), 0.0, None, wait=False)
        assert root is not None
        runs.append(root)
        queue = deque([_Node((), root.rest_ms, root.rest_state, root.rest_data)])
        seen = {root.rest_state}
        while queue:
            node = queue.popleft()
            tries: list[tuple[PathStep | None, bool]] = [(None, True)]
            tries.extend((step, False)
                         for step in self._actions(node.state, node.rest_ms, node.data))
            for action, wait in tries:
                run = await self._simulate(node.steps, node.rest_ms, action, wait)
                if run is None:
                    continue
                self._learn_producers(run)
                runs.append(run)
                if run.rest_state not in seen:
                    seen.add(run.rest_state)
                    queue.append(_Node(run.steps, run.rest_ms, run.rest_state, run.rest_data))
        return self._report(runs)

    def _learn_producers(self, run: _Run) -> None:
        for event in run.trace:
            if isinstance(event, EventReceived) and event.source.startswith("activity:"):
                self.activity_events.setdefault(event.event,
                                                f"activity {event.source.split(':', 1)[1]}")

    def _report(self, runs: list[_Run]) -> PathReport:
        best_rows: dict[int, tuple[Via, str, str, int]] = {}
        best_guards: dict[GuardOutcome, tuple[Via, str, str, int]] = {}
        from_states: dict[int, set[str]] = {}   # a parent's row, from each child it fired in
        first_from: dict[tuple[int, str], int] = {}
        problems: dict[tuple[str, ...], tuple[ProblemKind, str, str, Record | None, int]] = {}
        kept: list[int] = []
        for index, run in enumerate(runs):
            analysis = self._analyse(run)
            useful = False
            for key, (via, detail, state) in analysis.rows.items():
                if _improves(best_rows.get(key), via):
                    best_rows[key], useful = (via, detail, state, index), True
            for gkey, (via, detail, state) in analysis.guards.items():
                if _improves(best_guards.get(gkey), via):
                    best_guards[gkey], useful = (via, detail, state, index), True
            for row, states in analysis.from_states.items():
                known = from_states.setdefault(row, set())
                for state in sorted(states - known):
                    first_from[(row, state)], useful = index, True
                known.update(states)
            for pkey, kind, state, message, line in analysis.problems:
                if pkey not in problems:
                    problems[pkey], useful = (kind, state, message, line, index), True
            if useful:
                kept.append(index)
        number = {run_index: n for n, run_index in enumerate(kept, start=1)}
        covers: dict[int, list[str]] = {}

        def hit(best: tuple[Via, str, str, int] | None, label: str) -> Hit | None:
            if best is None:
                return None
            via, detail, state, index = best
            covers.setdefault(index, []).append(label)
            return Hit(via, detail, number[index], state)

        for (row_index, state), index in first_from.items():
            parent_row = self.chart.transitions[row_index]
            if parent_row.source != state and best_rows[row_index][3] != index:
                covers.setdefault(index, []).append(f"{describe_row(parent_row)} from {state}")
        rows = tuple(RowCoverage(r, r.position,
                                 hit(best_rows.get(r.index), describe_row(r)),
                                 tuple(sorted(from_states.get(r.index, ()))))
                     for r in self.chart.transitions)
        guards: list[GuardCoverage] = []
        for r in self.chart.transitions:
            for j, ref in enumerate(r.guards):
                for held in (True, False):
                    outcome = GuardOutcome(r.index, j, held)
                    cov = GuardCoverage(outcome, r, str(ref),
                                        r.guard_positions[j] if j < len(r.guard_positions)
                                        else None, None)
                    guards.append(replace(cov, hit=hit(best_guards.get(outcome), cov.label())))
        paths = tuple(GeneratedPath(number[i], runs[i].steps, runs[i].until_ms,
                                    runs[i].final_state, runs[i].quiescent,
                                    tuple(covers.get(i, ())), tuple(transitions(runs[i].trace)))
                      for i in kept)
        found = tuple(Problem(kind, number[i], state, message, line)
                      for kind, state, message, line, i in problems.values())
        return PathReport(self.chart.name, self.chart.path, rows, tuple(guards), paths, found,
                          self.fakes, len(runs))


def _better(table: dict[Any, tuple[Via, str, str]], key: Any, value: tuple[Via, str, str]
            ) -> None:
    current = table.get(key)
    if current is None or _QUALITY[value[0]] > _QUALITY[current[0]]:
        table[key] = value


def _improves(current: tuple[Via, str, str, int] | None, via: Via) -> bool:
    return current is None or _QUALITY[via] > _QUALITY[current[0]]


def _fits(chart: CompiledChart, event: str, payload: Mapping[str, Any]) -> bool:
    probe = VoiceEvent.model_construct(event_type=event, session_id=SESSION_ID, source=SOURCE,
                                       timestamp=0.0, correlation_id=None, payload=dict(payload),
                                       metadata={})
    try:
        check_payload(probe, chart.events)
    except EventProblem:
        return False
    return True


# ------------------------------------------------------------- home and stuck
@dataclass(frozen=True, slots=True)
class _Home:
    """The loop a session should always be able to get back to (see `_home_states`)."""

    states: frozenset[str]
    reach_home: frozenset[str]     # leaves with a way to `states` or to a final state

    def describe(self) -> str:
        return "the start loop (" + ", ".join(sorted(self.states)) + ")"


def _home_states(chart: CompiledChart) -> _Home:
    """The strongly connected part of the leaf graph holding the start leaf (e.g.
    IDLE → … → IDLE); when nothing leads back to the start, the first loop the
    start leads into (a "listening loop"). Guards are ignored: any transition
    might be taken."""
    leaves = [n for n, s in chart.states.items() if not s.compound]
    edges = {leaf: {s for r in chart.rows_from(leaf) if r.target is not None
                    for s in chart.leaves(chart.default_entry(r.target))} for leaf in leaves}

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {leaf: reach(leaf) for leaf in leaves}
    start = chart.leaves(chart.initial_configuration())[0]
    order = sorted(reachable[start], key=lambda n: _distance(edges, start, n))
    home: frozenset[str] = frozenset({start})
    for leaf in order:
        loop = frozenset(n for n in reachable[leaf] if leaf in reachable[n])
        if any(leaf in edges[n] for n in loop):   # a cycle runs through it
            home = loop
            break
    finals = {n for n in leaves if chart.states[n].final}
    good = frozenset(n for n in leaves if reachable[n] & (home | finals))
    return _Home(home, good)


def _distance(edges: Mapping[str, set[str]], start: str, goal: str) -> float:
    frontier, seen, steps = {start}, {start}, 0
    while frontier:
        if goal in frontier:
            return steps
        frontier = {n for f in frontier for n in edges[f]} - seen
        seen |= frontier
        steps += 1
    return math.inf


# ------------------------------------------------------------- entry points
def generate_paths(chart: CompiledChart, registry: Registry,
                   fakes: FakeSettings | None = None) -> PathReport:
    """Generate, run and check the sequences of `chart` (runs its own event loop)."""
    return asyncio.run(PathGenerator(chart, registry, fakes).explore())


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 6)


def scenario_yaml(path: GeneratedPath, chart_ref: str, fakes: FakeSettings,
                  chart_name: str) -> str:
    """A §4 scenario `turnchart simulate` replays to the same final state (a path
    with a forced guard replays with the real guard and may go elsewhere: its
    header says so)."""
    lines = [f"# Generated by `turnchart paths` from chart {chart_name}: path {path.number}.",
             f"# Ends in {path.final_state} at {_number(path.until_ms)} ms on the virtual clock."]
    lines.extend(f"# covers: {label}" for label in path.covers)
    if path.forced:
        lines.append("# A guard was forced in this path (it declares no examples): "
                     "`turnchart simulate` runs the real guard, so a replay may differ.")
    description = f"generated path {path.number}: ends in {path.final_state}"
    fake_items = ", ".join(f"{k}: {json.dumps(v)}" for k, v in (
        ("respond_ms", _number(fakes.respond_ms)), ("response_text", fakes.response_text),
        ("respond_error", fakes.respond_error), ("speak_ms", _number(fakes.speak_ms)),
        ("tts_chunk_ms", _number(fakes.tts_chunk_ms))))
    lines += [f"description: {json.dumps(description)}", f"chart: {json.dumps(chart_ref)}",
              f"sessions: [{SESSION_ID}]", f"fakes: {{{fake_items}}}", "steps:"]
    for step in path.steps:
        payload = f", payload: {json.dumps(dict(step.payload), ensure_ascii=False)}" \
            if step.payload else ""
        note = step.why + (f" ({step.forced_text()})" if step.forced_text() else "")
        lines.append(f"  - {{at: {_number(step.at)}, event: {step.event}{payload}}}"
                     + (f"  # {note}" if note else ""))
    if not path.steps:
        lines[-1] = "steps: []"
    lines.append(f"until_ms: {_number(path.until_ms)}")
    return "\n".join(lines) + "\n"


def write_scenarios(report: PathReport, out_dir: str | Path, chart_ref: str | None = None
                    ) -> list[Path]:
    """Write every kept path as `path_NN.yaml` under `out_dir`; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if chart_ref is None:
        chart_ref = str(Path(report.chart_path).resolve())
    width = max(2, len(str(len(report.paths))))
    files = []
    for path in report.paths:
        target = out / f"path_{path.number:0{width}d}.yaml"
        target.write_text(scenario_yaml(path, chart_ref, report.fakes, report.chart),
                          encoding="utf-8")
        files.append(target)
    return files


__all__ = ["GeneratedPath", "GuardCoverage", "GuardOutcome", "Hit", "PathGenerator",
           "PathReport", "PathStep", "Problem", "RowCoverage", "describe_row",
           "generate_paths", "scenario_yaml", "write_scenarios"]
