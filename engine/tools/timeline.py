"""A session's timeline, built from its trace (engine/runtime/trace.py; docs/chart-format.md §3).

Pure: typed events (or log records, parsed) in, timeline out, so the live inspector (`GET /inspect`)
and replay tooling reading a saved trace draw the same picture. Every time in
a timeline is milliseconds since its first line (`t_ms` of the session clock),
so a simulated and a live session read alike.

What the lines allow, and so what is shown:

- **States** the session was in, from `session_started` / `session_resumed`
  and each `state_transition` (leaf states, as the lines name them); on a
  Redis front-end, from `worker_state` (spans only: the event is the worker's).
- **Transitions** with their event, `latency_ms` (event timestamp → transition
  done) and `dwell_ms` (time in the state left): the engine's own dwell from
  `latency_recorded` when that DEBUG line is there, else the time since the
  previous transition line.
- **Activities** as bars from `activity_started` to `activity_done` /
  `activity_cancelled` / `activity_failed` (open while still running).
- **Effects** as bars ending at `effect_done` / `effect_failed`. Effects run
  one after another inside a step and only log when they end, so a bar starts
  at the step's previous boundary line (the event received, the session's
  start, the previous effect, an activity cancelled on exit).
- **Barge-ins**: the audio adapter's `barge_in_detected` (with its
  `time_to_silence_ms`) and the chart's `barge_in` event merged into one
  mark, with what the chart did with it and the `ms_since_barge_in` of the
  `playback_cleared` that followed.
- **Marks** for lines a person debugging a turn looks for: rejections (not of
  events the chart says `unhandled: ignore`), stale and invalid events,
  contract violations, timers, internal transitions, turn latency, false
  interruptions and failures.
- **Tool calls** (issue 16 §4) from `tool_called`: the tool, its arguments in
  short, and what became of the call: refused (`invalid`, with the field the
  `event_invalid` line named) or posted, then `moved` / `handled` / `rejected`
  / `stale` once the chart dealt with the tool's event.
- **Data changes** (issue 16 §3) from `data_changed`: each field's old → new
  value, with the event whose `set:` changed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from engine.runtime.trace import (
    SESSION_CLOSED,
    ActivityCancelled,
    ActivityDone,
    ActivityFailed,
    ActivityStarted,
    ContractViolation,
    EffectDone,
    EffectFailed,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    LatencyRecorded,
    LogLine,
    PlaybackCleared,
    Record,
    RoutingRejected,
    SessionClosed,
    SessionFailed,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TimerFired,
    TraceEvent,
    TransitionRejected,
    WorkerState,
    from_record,
    iso_utc,
)

Outcome = Literal["running", "done", "cancelled", "failed"]
BargeInOutcome = Literal["pending", "applied", "rejected", "stale"]
ToolResult = Literal["invalid", "posted", "moved", "handled", "rejected", "stale"]

MARKED = frozenset({
    *(cls.kind for cls in (TransitionRejected, EventStale, EventInvalid, ContractViolation,
                           InternalTransition, TimerFired, SessionFailed, SessionResumed,
                           RoutingRejected)),
    # the audio adapter's own lines (engine/runtime/trace.py LogLine)
    "turn_latency", "false_interruption", "backchannel", "adapter_error",
})
"""Line types shown as marks on the time axis."""


def _ignored_by_the_chart(event: TraceEvent) -> bool:
    """An event the chart declares `unhandled: ignore`, arriving where nothing handles it
    (`stt_partial` while LISTENING): the session logs that at DEBUG, on purpose. It is
    not worth a look, so it is no mark (a rejection by a guard still is)."""
    return (isinstance(event, TransitionRejected) and event.reason == "no_transition"
            and event.level == "DEBUG")

_EFFECT_BOUNDARIES = (EventReceived, SessionStarted, SessionResumed, EffectDone, EffectFailed,
                      ActivityCancelled)
_BARGE_IN_DETECTED = "barge_in_detected"       # the audio adapter's (a LogLine)
_BARGE_IN_EVENT = "barge_in"
_DETECTION_JOINS_EVENT_MS = 2_000.0
"""A `barge_in` event this soon after the adapter's `barge_in_detected` is that same barge-in."""
_TOOL_CALLED = "tool_called"               # engine/runtime/behaviours.py (a LogLine)
_DATA_CHANGED = "data_changed"             # engine/runtime/session.py (a LogLine)
ARGUMENTS_MAX_CHARS = 120
"""A tool call's arguments are shown as `name=value, …`, cut to this many characters."""


@dataclass(frozen=True, slots=True)
class StateSpan:
    """A stretch of time in one (leaf) state; `end_ms` None while it is current."""

    state: str
    start_ms: float
    end_ms: float | None


@dataclass(frozen=True, slots=True)
class Transition:
    at_ms: float
    source: str
    target: str
    event: str
    correlation_id: str | None
    latency_ms: float | None
    dwell_ms: float


@dataclass(frozen=True, slots=True)
class Bar:
    """An activity or an effect over time; `end_ms` None while still running."""

    kind: Literal["activity", "effect"]
    name: str
    state: str
    start_ms: float
    end_ms: float | None
    outcome: Outcome
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BargeIn:
    """One barge-in: detected by the audio adapter, sent to the chart as `barge_in`, or both."""

    at_ms: float
    state: str | None                     # the state it interrupted, once the chart took it
    outcome: BargeInOutcome
    time_to_silence_ms: float | None      # adapter: decision → the caller's audio queue cleared
    playback_cleared_ms: float | None     # chart: `barge_in` received → playback cleared
    dropped_frames: int | None


@dataclass(frozen=True, slots=True)
class ToolUse:
    """One tool call of the responder (a `tool_called` line) and what became of it:
    `invalid` (refused; `field` and `error` say why), `posted` (its event is on the
    way), then `moved` (a transition; `detail` names the target), `handled` (an
    internal transition), `rejected` (`detail`: the reason) or `stale`."""

    at_ms: float
    tool: str
    state: str | None                     # the dialogue state it was called in
    arguments: str                        # `name=value, …` (values as JSON), shortened
    ok: bool
    result: ToolResult
    field: str | None = None              # the refused call's bad field (`payload.date`)
    error: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class DataChange:
    """A transition's `set:` changed the chart's data (a `data_changed` line)."""

    at_ms: float
    event: str | None
    state: str | None
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    at_ms: float
    kind: str
    level: str
    text: str


@dataclass(frozen=True, slots=True)
class Timeline:
    session_id: str
    chart: str | None
    version: int | None
    version_hash: str | None
    started_at: str | None        # `ts` (wall time) of the first line
    origin_t_ms: float            # session-clock `t_ms` that is 0 on this timeline
    end_ms: float                 # the last line, or `now` when given
    state: str | None             # current state (last known)
    closed: bool
    lines: int                    # how many lines it was built from
    dropped_lines: int            # older lines no longer kept (the caller's ring buffer)
    states: tuple[StateSpan, ...] = ()
    transitions: tuple[Transition, ...] = ()
    bars: tuple[Bar, ...] = ()
    barge_ins: tuple[BargeIn, ...] = ()
    marks: tuple[Mark, ...] = ()
    tools: tuple[ToolUse, ...] = ()
    data_changes: tuple[DataChange, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; a transition's `source`/`target` become `from`/`to` as in
        §3, and so do a data change's `old`/`new`."""
        data = asdict(self)
        data["transitions"] = [{"from": t.pop("source"), "to": t.pop("target"), **t}
                               for t in data["transitions"]]
        for change in data["data_changes"]:
            change["changes"] = [{"field": c["field"], "from": c["old"], "to": c["new"]}
                                 for c in change["changes"]]
        return data


def _r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def summarize_arguments(arguments: Any) -> str:
    """`size=4, date="2026-12-12"`: a tool call's arguments in one short line."""
    if not isinstance(arguments, Mapping):
        text = json.dumps(arguments, default=repr, ensure_ascii=False)
    else:
        text = ", ".join(f"{k}={json.dumps(v, default=repr, ensure_ascii=False)}"
                         for k, v in arguments.items())
    return text if len(text) <= ARGUMENTS_MAX_CHARS else text[:ARGUMENTS_MAX_CHARS - 1] + "…"


@dataclass
class _Builder:
    session_id: str
    origin: float
    chart: str | None = None
    version: int | None = None
    version_hash: str | None = None
    started_at: str | None = None
    closed: bool = False
    last_ms: float = 0.0
    boundary_ms: float = 0.0
    states: list[StateSpan] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    open_activities: dict[str, list[int]] = field(default_factory=dict)
    barge_ins: list[BargeIn] = field(default_factory=list)
    awaiting_event: int | None = None     # a detected barge-in whose event has not come yet
    awaiting_clear: int | None = None     # a barge-in whose playback_cleared has not come yet
    marks: list[Mark] = field(default_factory=list)
    tools: list[ToolUse] = field(default_factory=list)
    posted_tools: dict[str, list[int]] = field(default_factory=dict)  # tool → calls in flight
    last_invalid_field: str | None = None  # the `event_invalid` a refused call logs first
    data_changes: list[DataChange] = field(default_factory=list)

    # ---------------------------------------------------------------- states
    def enter(self, state: str, at: float) -> None:
        self.leave(at)
        self.states.append(StateSpan(state, at, None))

    def leave(self, at: float) -> None:
        """End every open span (one; or one per parallel region)."""
        for i, span in enumerate(self.states):
            if span.end_ms is None:
                self.states[i] = replace(span, end_ms=at)

    def session_line(self, event: SessionStarted | SessionResumed | SessionClosed,
                     at: float) -> None:
        self.chart, self.version = event.chart, event.version
        self.version_hash = event.version_hash
        if isinstance(event, SessionClosed):
            self.closed = True
            self.leave(at)
            self.close_bars(at, "cancelled", SESSION_CLOSED)
        else:
            self.closed = False
            self.enter(event.state, at)

    def transition(self, event: StateTransition, at: float) -> None:
        source, target = event.source, event.target
        if event.active is not None:
            dwell = self._region_transition(source, target, event.active, at)
        else:
            if not self.states or self.states[-1].end_ms is not None:
                self.states.append(StateSpan(source, 0.0, None))  # entered before our lines
            dwell = at - self.states[-1].start_ms
            self.enter(target, at)
        self.transitions.append(Transition(at, source, target, event.event,
                                           event.correlation_id,
                                           _float(_r3(event.latency_ms)), round(dwell, 3)))
        if event.event == _BARGE_IN_EVENT and self.awaiting_clear is not None:
            index = self.awaiting_clear
            self.barge_ins[index] = replace(self.barge_ins[index], outcome="applied",
                                            state=source)

    def worker_regions(self, active: tuple[str, ...], at: float) -> None:
        """A worker's report with parallel regions: one span per active leaf; a leaf
        no longer reported ends its span, a newly reported one starts one."""
        spans = {s.state: i for i, s in enumerate(self.states) if s.end_ms is None}
        for state, i in spans.items():
            if state not in active:
                self.states[i] = replace(self.states[i], end_ms=at)
        self.states.extend(StateSpan(s, at, None) for s in active if s not in spans)

    def _region_transition(self, source: str, target: str, active: tuple[str, ...],
                           at: float) -> float:
        """A chart with parallel regions: one span per active leaf. The region that
        moved ends its span and starts the target's; spans of leaves no longer active
        end (the transition left the parallel state), newly active ones start."""
        spans = {s.state: i for i, s in enumerate(self.states) if s.end_ms is None}
        if source not in spans:
            self.states.append(StateSpan(source, 0.0, None))   # entered before our lines
            spans[source] = len(self.states) - 1
        dwell = at - self.states[spans[source]].start_ms
        for state, i in spans.items():
            if state == source or state not in active:
                self.states[i] = replace(self.states[i], end_ms=at)
        still = {s for s in spans if s in active and s != source}
        for leaf in (target, *active):
            if leaf not in still and leaf in active:
                self.states.append(StateSpan(leaf, at, None))
                still.add(leaf)
        return dwell

    def engine_dwell(self, event: LatencyRecorded) -> None:
        """`latency_recorded` follows its `state_transition`: the engine's own dwell wins."""
        dwell = _float(_r3(event.dwell_ms))
        last = self.transitions[-1] if self.transitions else None
        if (dwell is not None and last is not None and last.source == event.source
                and last.target == event.target):
            self.transitions[-1] = replace(last, dwell_ms=dwell)

    # ------------------------------------------------------------------ bars
    def activity_started(self, event: ActivityStarted, at: float) -> None:
        name = event.activity
        self.open_activities.setdefault(name, []).append(len(self.bars))
        self.bars.append(Bar("activity", name, event.state, at, None, "running"))

    def activity_ended(self, event: ActivityDone | ActivityCancelled | ActivityFailed,
                       at: float) -> None:
        name = event.activity
        if name not in self.open_activities:  # "ignored cancellation" names the task
            name = name.removeprefix(f"{self.session_id}:")
        opened = self.open_activities.get(name)
        outcome: Outcome = ("done" if isinstance(event, ActivityDone) else
                            "cancelled" if isinstance(event, ActivityCancelled) else "failed")
        if opened:
            index = opened.pop(0)  # the oldest: a superseded task ends after its successor starts
            self.bars[index] = replace(self.bars[index], end_ms=at, outcome=outcome,
                                       detail=event.reason)
        else:  # started before the lines we have
            self.bars.append(Bar("activity", name, event.state, 0.0, at, outcome, event.reason))

    def close_bars(self, at: float, outcome: Outcome, detail: str) -> None:
        for opened in self.open_activities.values():
            for index in opened:
                self.bars[index] = replace(self.bars[index], end_ms=at, outcome=outcome,
                                           detail=self.bars[index].detail or detail)
        self.open_activities.clear()

    def effect(self, event: EffectDone | EffectFailed, at: float) -> None:
        failed = isinstance(event, EffectFailed)
        self.bars.append(Bar("effect", event.effect, event.state,
                             min(self.boundary_ms, at), at, "failed" if failed else "done",
                             event.error if failed else None))

    # ------------------------------------------------------------- barge-ins
    def barge_in_detected(self, data: Mapping[str, Any], at: float) -> None:
        frames = data.get("dropped_frames")
        self.barge_ins.append(BargeIn(at, None, "pending", _float(data.get("time_to_silence_ms")),
                                      None, frames if isinstance(frames, int) else None))
        self.awaiting_event = self.awaiting_clear = len(self.barge_ins) - 1

    def barge_in_received(self, at: float) -> None:
        index = self.awaiting_event
        if index is None or at - self.barge_ins[index].at_ms > _DETECTION_JOINS_EVENT_MS:
            self.barge_ins.append(BargeIn(at, None, "pending", None, None, None))
            index = len(self.barge_ins) - 1
        self.awaiting_event, self.awaiting_clear = None, index

    def barge_in_refused(self, outcome: BargeInOutcome) -> None:
        if self.awaiting_clear is not None:
            index = self.awaiting_clear
            self.barge_ins[index] = replace(self.barge_ins[index], outcome=outcome)
            self.awaiting_clear = None

    def playback_cleared(self, event: PlaybackCleared) -> None:
        since = _float(_r3(event.ms_since_barge_in))
        if since is not None and self.awaiting_clear is not None:
            index = self.awaiting_clear
            if self.barge_ins[index].playback_cleared_ms is None:
                self.barge_ins[index] = replace(self.barge_ins[index], playback_cleared_ms=since)

    # ----------------------------------------------------- tool calls and data
    def tool_called(self, data: Mapping[str, Any], at: float) -> None:
        tool = str(data.get("tool", "?"))
        ok = data.get("ok") is True
        error = _str(data.get("error"))
        bad_field = None
        if not ok:
            bad_field = self.last_invalid_field or (error.split(":", 1)[0] if error else None)
        self.tools.append(ToolUse(at, tool, _str(data.get("state")),
                                  summarize_arguments(data.get("arguments", {})), ok,
                                  "posted" if ok else "invalid", bad_field, error))
        if ok:
            self.posted_tools.setdefault(tool, []).append(len(self.tools) - 1)

    def tool_event(self, event: str, result: ToolResult, detail: str | None) -> None:
        """The chart dealt with a tool's event: the oldest call of that tool in flight."""
        posted = self.posted_tools.get(event)
        if posted:
            index = posted.pop(0)
            self.tools[index] = replace(self.tools[index], result=result, detail=detail)

    def data_changed(self, data: Mapping[str, Any], at: float) -> None:
        changes = data.get("changes")
        if not isinstance(changes, Mapping):
            return
        fields = tuple(FieldChange(str(name), c.get("from"), c.get("to"))
                       for name, c in changes.items() if isinstance(c, Mapping))
        self.data_changes.append(DataChange(at, _str(data.get("event")),
                                            _str(data.get("state")), fields))

    # ------------------------------------------------------------------ lines
    def add(self, event: TraceEvent) -> None:
        kind = event.event_type
        at = round(round(event.t_ms, 3) - self.origin, 3)
        self.last_ms = max(self.last_ms, at)
        if self.started_at is None:
            self.started_at = iso_utc(event.wall)
        if isinstance(event, SessionStarted | SessionResumed | SessionClosed):
            self.session_line(event, at)
        elif isinstance(event, StateTransition):
            self.transition(event, at)
        elif isinstance(event, WorkerState):  # a Redis front-end: states as the worker reported
            if event.active:
                self.worker_regions(event.active, at)
            elif (not self.states or self.states[-1].state != event.state
                    or self.states[-1].end_ms is not None):
                self.enter(event.state, at)
        elif isinstance(event, LatencyRecorded):
            self.engine_dwell(event)
        elif isinstance(event, ActivityStarted):
            self.activity_started(event, at)
        elif isinstance(event, ActivityDone | ActivityCancelled | ActivityFailed):
            self.activity_ended(event, at)
        elif isinstance(event, EffectDone | EffectFailed):
            self.effect(event, at)
        elif kind == _BARGE_IN_DETECTED:
            self.barge_in_detected(event.data(), at)
        elif isinstance(event, EventReceived) and event.event == _BARGE_IN_EVENT:
            self.barge_in_received(at)
        elif isinstance(event, TransitionRejected) and event.event == _BARGE_IN_EVENT:
            self.barge_in_refused("rejected")
        elif isinstance(event, EventStale) and event.event == _BARGE_IN_EVENT:
            self.barge_in_refused("stale")
        elif isinstance(event, PlaybackCleared):
            self.playback_cleared(event)
        elif isinstance(event, LogLine) and kind == _TOOL_CALLED:
            self.tool_called(event.data(), at)
        elif isinstance(event, LogLine) and kind == _DATA_CHANGED:
            self.data_changed(event.data(), at)
        self.last_invalid_field = event.field if isinstance(event, EventInvalid) else None
        if isinstance(event, StateTransition):
            self.tool_event(event.event, "moved", event.target)
        elif isinstance(event, InternalTransition):
            self.tool_event(event.event, "handled", event.state)
        elif isinstance(event, TransitionRejected):
            self.tool_event(event.event, "rejected", event.reason)
        elif isinstance(event, EventStale):
            self.tool_event(event.event, "stale", None)
        if isinstance(event, _EFFECT_BOUNDARIES):
            self.boundary_ms = at
        if kind in MARKED and not _ignored_by_the_chart(event):
            self.marks.append(Mark(at, kind, event.level, event.message))

    def build(self, now_ms: float | None, lines: int, dropped: int) -> Timeline:
        end = self.last_ms if now_ms is None or self.closed else max(self.last_ms,
                                                                       now_ms - self.origin)
        return Timeline(
            session_id=self.session_id, chart=self.chart, version=self.version,
            version_hash=self.version_hash, started_at=self.started_at,
            origin_t_ms=self.origin, end_ms=round(end, 3),
            state=self.states[-1].state if self.states else None, closed=self.closed,
            lines=lines, dropped_lines=dropped, states=tuple(self.states),
            transitions=tuple(self.transitions), bars=tuple(self.bars),
            barge_ins=tuple(self.barge_ins), marks=tuple(self.marks), tools=tuple(self.tools),
            data_changes=tuple(self.data_changes))


def build_timeline(session_id: str, records: Iterable[TraceEvent | Record], *,
                   now_t_ms: float | None = None, dropped_lines: int = 0) -> Timeline:
    """The timeline of `session_id` from its lines, in the order they were written.

    Lines of other sessions are skipped, so a whole trace can be passed. `now_t_ms`
    (the session clock now) stretches what is still open up to now; `dropped_lines`
    says how many older lines the caller no longer has (shown, never guessed)."""
    events = (r if isinstance(r, TraceEvent) else from_record(r) for r in records)
    mine = [e for e in events if e.session_id == session_id]
    builder = _Builder(session_id, round(mine[0].t_ms, 3) if mine else 0.0)
    for event in mine:
        builder.add(event)
    return builder.build(now_t_ms, len(mine), dropped_lines)


__all__ = [
    "MARKED",
    "Bar",
    "BargeIn",
    "DataChange",
    "FieldChange",
    "Mark",
    "StateSpan",
    "Timeline",
    "ToolUse",
    "Transition",
    "build_timeline",
    "summarize_arguments",
]
