"""`turnchart replay`: re-run a recorded session against a chart, on the virtual clock.

A recording is the §3 log lines of a live server or a simulation (many
sessions mixed in one file). It holds two kinds of received events, told apart
by their `source`:

- **outside events** (`fastrtc`, `stt`, `client`, `websocket`, `simulate`, …):
  what the caller and the audio front-end did. Replay delivers them again at
  their recorded times (relative to the session's start), through the real
  `SessionManager` → `Session` path.
- **the chart's own events** (`timer`, `internal`, `activity:<name>`): never
  re-sent. The replayed chart's timers run on the virtual clock, so an edited
  `after:` fires when the edit says. An activity is *answered* from the
  recording: the k-th time the replayed chart starts activity `respond`, the
  replay port posts what the k-th recorded run of `respond` posted, at the same
  delays after its start (that is what the real responder and TTS answered).
  When the replayed chart starts an activity more often than the recording
  did, or keeps one running past the point where its recorded run was
  cancelled, the answer is unknown: the run waits (until its state is left)
  and a `replay_unanswered` line says so. That counts as a divergence.

Recorded payloads are the logged ones, with strings over 200 characters cut
(`engine.runtime.session._loggable`); guards only look at whether text is there, so
that is good enough to replay. The Python code of activities is not run (its
recorded outputs stand in for it); guards and effects are the real ones, with
fake ports. The recorded transitions (`state_transition`, and
`internal_transition` as `STATE ↩ event`) are then aligned with the replayed
ones row by row: `=` same, `≠` changed, `-` missing from the replay, `+` extra
in the replay.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.chart.compiler import CompiledChart
from engine.chart.registry import ActivityFn, Kind, Registered, Registry
from engine.runtime.context import ActivityContext
from engine.runtime.events import EventProblem, parse_event
from engine.runtime.logs import LEVELS, Record
from engine.runtime.manager import NO_SESSION
from engine.runtime.trace import (
    SESSION_CLOSED,
    ActivityCancelled,
    ActivityDone,
    ActivityFailed,
    ActivityStarted,
    ContractViolation,
    EffectFailed,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    ReplayUnanswered,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TraceEvent,
    TransitionRejected,
    from_record,
    is_log_line,
)
from engine.tools.sandbox import Sandbox

CHART_SOURCES = ("activity:", "timer", "internal")
"""Sources of events the chart makes itself: never re-sent, the replayed chart makes its own."""

Mark = Literal["=", "≠", "-", "+"]
Side = Literal["replay", "recording"]


def _problem_key(event: TraceEvent) -> tuple[Any, ...] | None:
    """Lines that say something went wrong or was refused: compared as a multiset per
    session, so an edit that adds (or removes) a rejection, a stale event, a
    contract violation or a failure shows up even when the transitions agree."""
    kind = event.event_type
    if isinstance(event, TransitionRejected):
        return (kind, event.event, event.state, event.reason)
    if isinstance(event, EventStale):
        return (kind, event.event)
    if isinstance(event, EventInvalid):
        return (kind, event.error)
    if isinstance(event, ContractViolation):
        return (kind, event.state, event.channel)
    if isinstance(event, EffectFailed):
        return (kind, event.effect, event.state)
    if isinstance(event, ActivityFailed):
        return (kind, event.activity, event.state)
    return None


class LogError(Exception):
    """A log that cannot be replayed; the message names the file and line."""


# ------------------------------------------------------------------ recording
@dataclass(frozen=True, slots=True)
class RecordedInput:
    """An outside event as the session received it; `t_ms` since the session started."""

    t_ms: float
    event: str
    source: str
    payload: Mapping[str, Any]
    correlation_id: str | None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RecordedOutput:
    """An event an activity run posted, `delay_ms` after the run started."""

    delay_ms: float
    event: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class RecordedRun:
    """One run of an activity in the recording: what it posted and how it ended."""

    activity: str
    state: str
    started_ms: float
    line: int
    outputs: list[RecordedOutput] = field(default_factory=list)
    end: str | None = None            # done | cancelled | failed; None: still running
    end_delay_ms: float | None = None
    end_reason: str | None = None     # a cancellation's reason: state_exit, session_closed, …


@dataclass(frozen=True, slots=True)
class Move:
    """A transition: `from → to (event)`, or `state ↩ event` when `internal`."""

    t_ms: float
    source_state: str
    target: str
    event: str
    cause: str | None                 # the source of the event that caused it
    correlation_id: str | None
    internal: bool = False
    line: int | None = None

    @property
    def key(self) -> tuple[str, str, str, bool]:
        return (self.source_state, self.target, self.event, self.internal)

    def text(self) -> str:
        if self.internal:
            return f"{self.source_state} ↩ {self.event}"
        return f"{self.source_state} → {self.target} ({self.event})"

    def to_dict(self) -> dict[str, Any]:
        return {"t_ms": round(self.t_ms, 3), "from": self.source_state, "to": self.target,
                "event": self.event, "source": self.cause,
                "correlation_id": self.correlation_id, "internal": self.internal,
                "line": self.line, "text": self.text()}


@dataclass(frozen=True, slots=True)
class ChartInfo:
    """The chart a recording says it ran (`session_started`)."""

    name: str | None = None
    version: int | None = None
    version_hash: str | None = None
    path: str | None = None


@dataclass(slots=True)
class Recording:
    """One session of a log: its inputs, its activity runs and its transitions."""

    session_id: str
    label: str
    start_ms: float | None = None
    end_ms: float = 0.0
    chart: ChartInfo = field(default_factory=ChartInfo)
    started: bool = False
    resumed_in: str | None = None
    inputs: list[RecordedInput] = field(default_factory=list)
    runs: dict[str, list[RecordedRun]] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    records: list[tuple[int, TraceEvent]] = field(default_factory=list)
    received: int = 0
    orphans: int = 0                  # activity events whose run started before the log did
    cause: tuple[str | None, str | None] = (None, None)   # last received: source, correlation

    def _rel(self, t_ms: float) -> float:
        if self.start_ms is None:
            self.start_ms = t_ms
        return round(t_ms - self.start_ms, 3)


@dataclass(slots=True)
class ParsedLog:
    recordings: list[Recording]
    skipped: int                      # lines that are not §3 log lines (other tools, banners)
    unscoped: int                     # §3 lines of no session (`session_id: "-"`)
    first_skipped: int | None = None  # the line number of the first one skipped

    def select(self, session: str | None) -> list[Recording]:
        """The recordings of `session` (an id, or a label like `s1#2`); all when None."""
        if session is None:
            return list(self.recordings)
        return [r for r in self.recordings if session in (r.session_id, r.label)]


def load_log(path: str | Path) -> ParsedLog:
    """Read and parse a JSON-lines log. Raises `OSError` or `LogError`."""
    with open(path, encoding="utf-8") as stream:
        return parse_log(stream, str(path))


def parse_log(lines: Iterable[str], path: str = "<log>") -> ParsedLog:
    """Split a log into recordings, one per session (a second `session_started`
    of the same id starts another, labelled `id#2`).

    A line that starts like a JSON object but does not parse (cut short, corrupt),
    or a §3 line that lacks a field replay needs, is a `LogError` naming the line.
    Lines of other tools are counted and skipped: plain text (a banner on a
    merged stderr, a traceback) and JSON objects without `event_type` and
    `session_id`."""
    recordings: list[Recording] = []
    current: dict[str, Recording] = {}
    seen: Counter[str] = Counter()
    skipped = unscoped = 0
    first_skipped: int | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        record: Any = None
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError as exc:
                shown = text if len(text) <= 60 else text[:60] + "…"
                raise LogError(f"{path}:{number}: not a JSON line ({exc}): {shown}") from None
        if not is_log_line(record):
            skipped += 1
            first_skipped = first_skipped or number
            continue
        if record["session_id"] == NO_SESSION:
            unscoped += 1
            continue
        try:
            event = from_record(record)
        except ValueError as exc:
            raise LogError(f"{path}:{number}: {exc}") from None
        sid = event.session_id
        rec = current.get(sid)
        if rec is None or (isinstance(event, SessionStarted)
                           and (rec.started or rec.received or rec.moves)):
            seen[sid] += 1
            rec = Recording(sid, sid if seen[sid] == 1 else f"{sid}#{seen[sid]}")
            current[sid] = rec
            recordings.append(rec)
        _add(rec, event, number)
    for rec in recordings:
        if rec.moves and not rec.received:
            raise LogError(f"{path}: session {rec.label} has {len(rec.moves)} transition(s) but "
                           f"no event_received lines: record at log level INFO or DEBUG")
    return ParsedLog(recordings, skipped, unscoped, first_skipped)


def _add(rec: Recording, event: TraceEvent, number: int) -> None:
    rec.records.append((number, event))
    if math.isnan(event.t_ms):
        return
    t = rec._rel(event.t_ms)
    rec.end_ms = max(rec.end_ms, t)
    if isinstance(event, SessionStarted | SessionResumed):
        if isinstance(event, SessionStarted):
            rec.started = True
        elif not rec.started and rec.resumed_in is None:
            rec.resumed_in = event.state
        version = event.version
        rec.chart = ChartInfo(event.chart, version if isinstance(version, int) else None,
                              event.version_hash, event.chart_path)
    elif isinstance(event, EventReceived):
        rec.received += 1
        rec.cause = (event.source, event.correlation_id)
        if event.source.startswith("activity:"):
            _attach_output(rec, event.source.removeprefix("activity:"), t, event.event,
                           event.payload)
        elif not event.source.startswith(CHART_SOURCES):
            rec.inputs.append(RecordedInput(t, event.event, event.source, event.payload,
                                            event.correlation_id, number))
    elif isinstance(event, ActivityStarted):
        rec.runs.setdefault(event.activity, []).append(
            RecordedRun(event.activity, event.state, t, number))
    elif isinstance(event, ActivityDone | ActivityCancelled | ActivityFailed):
        open_runs = [r for r in rec.runs.get(event.activity, []) if r.end is None]
        if open_runs:
            run = open_runs[-1]
            run.end = event.event_type.removeprefix("activity_")
            run.end_delay_ms = round(t - run.started_ms, 3)
            run.end_reason = event.reason
    elif isinstance(event, StateTransition | InternalTransition):
        rec.moves.append(_move(event, t, number, rec.cause))


def _attach_output(rec: Recording, activity: str, t: float, event: str,
                   payload: Mapping[str, Any]) -> None:
    """An activity's event belongs to the latest run of that activity started before it."""
    runs = rec.runs.get(activity)
    if not runs:                      # the log starts after that run did
        rec.orphans += 1
        return
    run = runs[-1]
    run.outputs.append(RecordedOutput(round(max(0.0, t - run.started_ms), 3), event,
                                      dict(payload)))


def _move(event: StateTransition | InternalTransition, t: float, line: int | None,
          cause: tuple[str | None, str | None]) -> Move:
    if isinstance(event, InternalTransition):
        return Move(t, event.state, event.state, event.event, cause[0], cause[1], True, line)
    correlation = event.correlation_id
    return Move(t, event.source, event.target, event.event, cause[0],
                correlation if correlation is not None else cause[1], False, line)


def moves_of(trace: Iterable[TraceEvent], start_ms: float = 0.0) -> list[Move]:
    """The transitions in a trace (one session's events), each with its cause's source."""
    out: list[Move] = []
    cause: tuple[str | None, str | None] = (None, None)
    for event in trace:
        if isinstance(event, EventReceived):
            cause = (event.source, event.correlation_id)
        elif isinstance(event, StateTransition | InternalTransition):
            out.append(_move(event, round(round(event.t_ms, 3) - start_ms, 3), None, cause))
    return out


def inputs_from_events(events: Iterable[Mapping[str, Any]], offset_ms: float = 0.0
                       ) -> tuple[list[RecordedInput], int]:
    """Outside events from raw VoiceEvents (a Redis stream's entries), timed by
    their `timestamp` relative to the first one, plus `offset_ms`. Returns the
    inputs and how many entries were skipped (not valid events, or the chart's own)."""
    parsed = []
    skipped = 0
    for raw in events:
        try:
            event = parse_event(raw)
        except EventProblem:
            skipped += 1
            continue
        if event.source.startswith(CHART_SOURCES):
            skipped += 1
            continue
        parsed.append(event)
    if not parsed:
        return [], skipped
    first = parsed[0].timestamp
    inputs, last = [], 0.0
    for event in parsed:
        t = max(last, round((event.timestamp - first) * 1000.0 + offset_ms, 3))
        last = t
        inputs.append(RecordedInput(t, event.event_type, event.source, event.payload,
                                    event.correlation_id))
    return inputs, skipped


# -------------------------------------------------------------------- replay
class ReplayAnswers:
    """Hands out the recorded runs of each activity, in order, to the replayed chart."""

    def __init__(self, runs: Mapping[str, Sequence[RecordedRun]]) -> None:
        self.runs = {name: list(r) for name, r in runs.items()}
        self._next: Counter[str] = Counter()

    def take(self, activity: str) -> tuple[int, RecordedRun | None]:
        """(1-based run number, the recorded run or None when the recording has no more)."""
        self._next[activity] += 1
        index = self._next[activity]
        runs = self.runs.get(activity, [])
        return index, runs[index - 1] if index <= len(runs) else None

    async def answer(self, ctx: ActivityContext) -> None:
        """The replay port: post what the recorded run posted, at the same delays."""
        number, run = self.take(ctx.activity)
        recorded = len(self.runs.get(ctx.activity, []))
        if run is None:
            _unanswered(ctx, number, f"the recording ran {ctx.activity} {recorded} time(s); "
                        f"run {number} has no recorded answer")
            await _until_cancelled()
            return
        start = ctx.clock.now_ms()
        for output in run.outputs:
            await _sleep_until(ctx, _when(start, run, output.delay_ms))
            ctx.post(output.event, dict(output.payload))
        if run.end in ("done", "failed"):
            await _sleep_until(ctx, _when(start, run, run.end_delay_ms or 0.0))
            return
        if run.end == "cancelled" and run.end_reason != SESSION_CLOSED:
            # Just past the recorded cancellation: an event at that very instant
            # (the barge-in or hang-up that cancelled it) is applied first.
            await _sleep_until(ctx, _when(start, run, run.end_delay_ms or 0.0) + _JUST_AFTER_MS)
            _unanswered(ctx, number, f"its recorded run was cancelled ({run.end_reason}) "
                        f"{run.end_delay_ms:g} ms after it started; what it would have done "
                        f"next is not in the recording")
        await _until_cancelled()


_JUST_AFTER_MS = 0.001
ALIGN_MS = 100.0
"""How much later than the replayed run's start its recorded run may have started and
still be the same run, late by the recording's processing time. A live session spends
real milliseconds between receiving an event and starting the next state's activity
(exit and enter effects reach the audio front-end); the virtual clock spends none. So
an unchanged chart starts each run a little earlier than the recording did, and what
the run posted, and when it ended, are kept at their recorded session times; timed
from the replayed start, they came too early: a cancelled answer was declared
unanswered before the recorded hang-up or barge-in that cancelled it arrived, an
answer raced the caller's words. A chart edited to start the run at another time
(later, or more than this earlier) gets its answers timed from its own start."""


def _when(start_ms: float, run: RecordedRun, delay_ms: float) -> float:
    """The replay time at which something the recorded run did `delay_ms` after its
    start happens again (see ALIGN_MS)."""
    relative = start_ms + delay_ms
    recorded = run.started_ms + delay_ms
    return recorded if 0.0 < recorded - relative <= ALIGN_MS else relative


async def _sleep_until(ctx: ActivityContext, t_ms: float) -> None:
    wait = t_ms - ctx.clock.now_ms()
    if wait > 0:
        await ctx.clock.sleep(wait / 1000.0)


async def _until_cancelled() -> None:
    await asyncio.get_running_loop().create_future()


def _unanswered(ctx: ActivityContext, number: int, why: str) -> None:
    ctx.emit(ReplayUnanswered(ctx.session_id, ctx.clock.now_ms(), ctx.clock.wall(),
                              activity=ctx.activity, state=ctx.state, run=number, reason=why))


class ReplayRegistry(Registry):
    """`base`'s guards and effects; every activity is answered from the recording."""

    def __init__(self, base: Registry, answer: ActivityFn) -> None:
        super().__init__()
        self.base = base
        self._answer = answer

    def get(self, kind: Kind, name: str) -> Registered:
        return self.base.get(kind, name)

    def names(self, kind: Kind) -> frozenset[str]:
        return self.base.names(kind)

    def __iter__(self) -> Iterator[Registered]:
        return iter(self.base)

    def activity_fn(self, name: str) -> ActivityFn:
        self.base.get("activity", name)   # an unknown name fails as it would live
        return self._answer


async def run_replay(recording: Recording, chart: CompiledChart, registry: Registry,
                     inputs: Sequence[RecordedInput] | None = None) -> list[TraceEvent]:
    """Re-run the recording's inputs (or `inputs`) in a sandbox until the recording's
    end; return the replay's trace (every level)."""
    answers = ReplayAnswers(recording.runs)
    feed = list(recording.inputs if inputs is None else inputs)
    end = max([recording.end_ms, *(i.t_ms for i in feed)])
    async with Sandbox(chart, ReplayRegistry(registry, answers.answer)) as box:
        await box.open(recording.session_id)
        for item in feed:
            await box.advance_to(item.t_ms)
            box.send(recording.session_id, item.event, item.payload, source=item.source,
                     correlation_id=item.correlation_id)
        await box.advance_to(end)
    return box.trace


# ---------------------------------------------------------------- comparison
@dataclass(frozen=True, slots=True)
class Row:
    mark: Mark | None                 # None: nothing recorded to compare with
    recorded: Move | None
    replayed: Move | None

    def to_dict(self) -> dict[str, Any]:
        return {"mark": self.mark,
                "recorded": self.recorded.to_dict() if self.recorded else None,
                "replayed": self.replayed.to_dict() if self.replayed else None}


@dataclass(frozen=True, slots=True)
class Note:
    """A line only one side has: `side` is `replay` (new with this chart) or `recording`."""

    side: Side
    t_ms: float
    event_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "t_ms": round(self.t_ms, 3), "event_type": self.event_type,
                "message": self.message}


@dataclass(slots=True)
class Report:
    """One session's replay: the aligned rows, where they first differ, and notes."""

    label: str
    session_id: str
    chart_path: str
    chart_hash: str
    recorded_chart: ChartInfo
    compared: bool
    rows: list[Row]
    notes: list[Note]
    unanswered: list[Note]
    inputs: int
    trace: list[Record] = field(default_factory=list, repr=False)

    @property
    def diverges(self) -> bool:
        """A row differs or an activity had no recorded answer (never without a recording)."""
        return self.compared and (any(r.mark != "=" for r in self.rows) or bool(self.unanswered))

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(r.mark for r in self.rows if r.mark)
        return {"same": counter["="], "changed": counter["≠"], "missing": counter["-"],
                "extra": counter["+"], "unanswered": len(self.unanswered)}

    def divergence(self) -> dict[str, Any] | None:
        """Where the replay first parts from the recording: the first row that
        differs, with the event that caused it, or an unanswered activity if earlier."""
        index, row = next(((i, r) for i, r in enumerate(self.rows) if r.mark not in ("=", None)),
                          (None, None))
        move = (row.recorded or row.replayed) if row is not None else None
        note = self.unanswered[0] if self.unanswered else None
        if note is not None and (move is None or note.t_ms < move.t_ms):
            return {"row": None, "t_ms": round(note.t_ms, 3), "event": None, "source": None,
                    "mark": "?", "recorded": None, "replayed": note.message}
        if row is None or move is None or index is None:
            return None
        return {"row": index + 1, "t_ms": round(move.t_ms, 3), "event": move.event,
                "source": move.cause, "mark": row.mark,
                "recorded": row.recorded.text() if row.recorded else None,
                "replayed": row.replayed.text() if row.replayed else None}

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.label, "session_id": self.session_id, "chart": self.chart_path,
                "chart_hash": self.chart_hash,
                "recorded_chart": {"name": self.recorded_chart.name,
                                   "version": self.recorded_chart.version,
                                   "version_hash": self.recorded_chart.version_hash,
                                   "path": self.recorded_chart.path},
                "compared": self.compared, "diverges": self.diverges, "inputs": self.inputs,
                "counts": self.counts, "divergence": self.divergence(),
                "rows": [r.to_dict() for r in self.rows],
                "unanswered": [n.to_dict() for n in self.unanswered],
                "notes": [n.to_dict() for n in self.notes]}


def align(recorded: Sequence[Move], replayed: Sequence[Move]) -> list[Row]:
    """Side by side, in order: a longest-common-subsequence alignment on
    `(from, to, event)`; a changed stretch pairs rows one to one (`≠`) and the
    rest is `-` (recorded only) or `+` (replayed only)."""
    matcher = difflib.SequenceMatcher(None, [m.key for m in recorded],
                                      [m.key for m in replayed], autojunk=False)
    rows: list[Row] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows += [Row("=", recorded[i], replayed[j]) for i, j in zip(range(i1, i2),
                                                                        range(j1, j2),
                                                                        strict=True)]
            continue
        paired = min(i2 - i1, j2 - j1)
        rows += [Row("≠", recorded[i1 + k], replayed[j1 + k]) for k in range(paired)]
        rows += [Row("-", recorded[i], None) for i in range(i1 + paired, i2)]
        rows += [Row("+", None, replayed[j]) for j in range(j1 + paired, j2)]
    return rows


Timed = tuple[float, TraceEvent]


def _problems(trace: Iterable[Timed]) -> dict[tuple[Any, ...], list[Timed]]:
    found: dict[tuple[Any, ...], list[Timed]] = {}
    for t, event in trace:
        key = _problem_key(event)
        if key is None or LEVELS.get(event.level, 0) < LEVELS["INFO"]:
            continue
        found.setdefault(key, []).append((t, event))
    return found


def compare_problems(recorded: Iterable[Timed], replayed: Iterable[Timed]) -> list[Note]:
    """Rejections, stale/invalid events, violations and failures only one side has
    (INFO and above on both sides, so a recording at INFO compares fairly). The
    recording's invalid inputs were never replayed (they never reached its chart
    either), so `event_invalid` only counts when the replayed chart refuses an
    event the recorded one took."""
    mine = _problems(replayed)
    theirs = {k: v for k, v in _problems(recorded).items() if k[0] != EventInvalid.kind}
    sides: tuple[tuple[Side, dict[tuple[Any, ...], list[Timed]],
                       dict[tuple[Any, ...], list[Timed]]], ...] = (
        ("replay", mine, theirs), ("recording", theirs, mine))
    notes = []
    for side, ours, other in sides:
        for key, lines in ours.items():
            for t, event in lines[len(other.get(key, [])):]:
                notes.append(Note(side, t, event.event_type, event.message))
    return sorted(notes, key=lambda n: (n.t_ms, n.side))


def replay_recording(recording: Recording, chart: CompiledChart, registry: Registry,
                     inputs: Sequence[RecordedInput] | None = None,
                     compare: bool = True) -> Report:
    """Replay one recording and compare. `inputs` replaces the recorded inputs
    (a Redis stream); `compare=False` when there are no recorded transitions."""
    trace = asyncio.run(run_replay(recording, chart, registry, inputs))
    mine = [e for e in trace if e.session_id == recording.session_id]
    replayed = moves_of(mine)
    rows = align(recording.moves, replayed) if compare else [Row(None, None, m)
                                                               for m in replayed]
    start = recording.start_ms or 0.0
    notes = compare_problems(((round(e.t_ms, 3) - start, e) for _, e in recording.records
                              if not math.isnan(e.t_ms)),
                             ((round(e.t_ms, 3), e) for e in mine)) if compare else []
    unanswered = [Note("replay", round(e.t_ms, 3), e.event_type,
                       f"{e.activity} in {e.state}: {e.reason}")
                  for e in mine if isinstance(e, ReplayUnanswered)]
    if recording.resumed_in is not None:
        notes.insert(0, Note("recording", 0.0, SessionResumed.kind,
                             f"the recording starts with a resume in {recording.resumed_in} (the "
                             f"log begins mid-session); the replay starts from the initial state"))
    if recording.orphans:
        notes.insert(0, Note("recording", 0.0, EventReceived.kind,
                             f"{recording.orphans} activity event(s) of runs started before the "
                             f"log begins are not replayed"))
    return Report(recording.label, recording.session_id, chart.path, chart.version_hash,
                  recording.chart, compare, rows, notes, unanswered,
                  len(recording.inputs if inputs is None else inputs),
                  [e.to_record() for e in trace])


__all__ = ["CHART_SOURCES", "ChartInfo", "LogError", "Move", "Note", "ParsedLog",
           "RecordedInput", "RecordedOutput", "RecordedRun", "Recording", "ReplayAnswers",
           "ReplayRegistry", "Report", "Row", "align", "compare_problems", "inputs_from_events",
           "load_log", "moves_of", "parse_log", "replay_recording", "run_replay"]
