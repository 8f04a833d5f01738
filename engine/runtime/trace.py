"""The trace: what a session (and the code around it) observed, as typed events.

Every observation is one frozen dataclass below, one per `event_type` of
docs/chart-format.md §3 (and its extensions). `Session` and `SessionManager`
publish them to the listeners subscribed to their `EventLog`
(engine/runtime/logs.py); the JSON log is one of those listeners and the only place
where the log level applies. Metrics, the Redis contract publisher, the
inspector, OpenTelemetry, `timeline`, `paths`, `replay` and `simulate` read
the typed fields, never a log dict by string name.

`to_record()` gives the §3 log line, byte for byte what the engine wrote before
the trace was typed (tests/test_trace.py compares every kind with recordings
captured then: the log format is public API); `from_record()` is the one
parser of log lines. A line whose `event_type` has no class here (worker and
Redis lines, an effect's own notes) is a `LogLine`: kind, level, message, data.

Field names follow the JSON keys, except `from`/`to` (`source`/`target`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from engine.chart.contract import Contract as Contract  # a state's contract, as traced

Record = dict[str, Any]

_second_cache: tuple[int, str] = (-1, "")


def iso_utc(wall: float) -> str:
    """`2026-11-22T10:00:00.123Z`; the date-time part is formatted once per second
    (a log line is built several times per step, on the hot path)."""
    global _second_cache
    second = int(wall)
    if second != _second_cache[0]:
        _second_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    millis = int((wall - second) * 1000)
    return f"{_second_cache[1]}.{millis:03d}Z"


def _parse_iso(ts: Any) -> float:
    """The wall time `iso_utc` wrote (the middle of its millisecond, so that
    formatting it again gives the same text); 0.0 when unreadable."""
    if not isinstance(ts, str):
        return 0.0
    try:
        head, _, millis = ts.rstrip("Z").partition(".")
        second = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        return second + (int(millis or 0) + 0.5) / 1000.0
    except ValueError:
        return 0.0


def _r3(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) and math.isfinite(value) else value


# ------------------------------------------------------------------ the base
@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One observation: whose (`session_id`, "-" for none), when (`t_ms` on the
    session's clock, `wall` its wall time) and how severe (`level`)."""

    kind: ClassVar[str] = ""
    # (attribute, JSON key) of `data`, in the order of the log line.
    _keys: ClassVar[tuple[tuple[str, str], ...]] = ()
    # attributes left out of `data` while None (extra fields some lines carry)
    _optional: ClassVar[frozenset[str]] = frozenset()
    # attributes rounded to 3 decimals in `data`
    _rounded: ClassVar[frozenset[str]] = frozenset()

    session_id: str
    t_ms: float
    wall: float
    level: str = field(default="INFO", kw_only=True)
    # A recorded line's message when it differs from what `describe()` says now
    # (older recordings, values rounded in the line); keys of `data` no field holds.
    recorded_message: str | None = field(default=None, kw_only=True, compare=False)
    extra: Mapping[str, Any] | None = field(default=None, kw_only=True, compare=False)

    @property
    def event_type(self) -> str:
        return self.kind

    @property
    def message(self) -> str:
        return self.recorded_message if self.recorded_message is not None else self.describe()

    def describe(self) -> str:
        """The human line, emoji included (only here, never in `data`)."""
        return self.event_type

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, key in self._keys:
            value = getattr(self, attr)
            if value is None and attr in self._optional:
                continue
            if attr in self._rounded:
                value = _r3(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        if self.extra:
            out.update(self.extra)
        return out

    def to_record(self) -> Record:
        return {"ts": iso_utc(self.wall), "t_ms": round(self.t_ms, 3), "level": self.level,
                "session_id": self.session_id, "event_type": self.event_type,
                "message": self.message, "data": self.data()}

    @classmethod
    def _from_data(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(field values, keys of `data` no field holds)."""
        values: dict[str, Any] = {}
        known = set()
        for attr, key in cls._keys:
            known.add(key)
            value = data.get(key)
            values[attr] = tuple(value) if isinstance(value, list) else value
        return values, {k: v for k, v in data.items() if k not in known}


_KINDS: dict[str, type[TraceEvent]] = {}


def _kind(cls: type[TraceEvent]) -> type[TraceEvent]:
    _KINDS[cls.kind] = cls
    return cls


# ------------------------------------------------------------- session life
@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(TraceEvent):
    kind: ClassVar[str] = "session_started"
    _keys = (("chart", "chart"), ("version", "version"), ("version_hash", "version_hash"),
             ("state", "state"), ("chart_path", "chart_path"))
    chart: str
    version: Any
    version_hash: str
    state: str
    chart_path: str | None = None

    def describe(self) -> str:
        return f"🟢 session started in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResumed(TraceEvent):
    kind: ClassVar[str] = "session_resumed"
    _keys = (("chart", "chart"), ("version", "version"), ("version_hash", "version_hash"),
             ("state", "state"), ("epoch", "epoch"), ("chart_path", "chart_path"))
    chart: str
    version: Any
    version_hash: str
    state: str
    epoch: int
    chart_path: str | None = None

    def describe(self) -> str:
        return f"♻️ session resumed in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed(TraceEvent):
    kind: ClassVar[str] = "session_closed"
    _keys = (("chart", "chart"), ("version", "version"), ("version_hash", "version_hash"),
             ("state", "state"))
    chart: str
    version: Any
    version_hash: str
    state: str

    def describe(self) -> str:
        return f"🔴 session closed in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed(TraceEvent):
    kind: ClassVar[str] = "session_failed"
    _keys = (("chart", "chart"), ("version", "version"), ("state", "state"), ("error", "error"))
    level: str = "ERROR"
    chart: str
    version: Any
    state: str
    error: str

    def describe(self) -> str:
        return f"💥 session failed in {self.state}: {self.error}"


# ------------------------------------------------------------------- events
@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EventReceived(TraceEvent):
    kind: ClassVar[str] = "event_received"
    _keys = (("event", "event"), ("correlation_id", "correlation_id"), ("source", "source"),
             ("payload", "payload"))
    event: str
    correlation_id: str | None
    source: str
    payload: Mapping[str, Any]

    def describe(self) -> str:
        return f"📨 {self.event} from {self.source}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EventStale(TraceEvent):
    kind: ClassVar[str] = "event_stale"
    _keys = (("event", "event"), ("correlation_id", "correlation_id"),
             ("current_epoch", "current_epoch"), ("event_epoch", "event_epoch"),
             ("owner", "owner"))
    event: str
    correlation_id: str | None
    current_epoch: int
    event_epoch: int | None
    owner: str | None

    def describe(self) -> str:
        owner = f"{self.owner} left" if self.owner else f"now {self.current_epoch}"
        return f"🕰️ stale {self.event} (epoch {self.event_epoch}, {owner}) dropped"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EventInvalid(TraceEvent):
    kind: ClassVar[str] = "event_invalid"
    _keys = (("error", "error"), ("field", "field"), ("raw", "raw"))
    level: str = "WARNING"
    error: str            # "FIELD: what is wrong"
    field: str | None
    raw: Any

    def describe(self) -> str:
        return f"❌ invalid event: {self.error}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUnknown(TraceEvent):
    kind: ClassVar[str] = "session_unknown"
    _keys = (("event", "event"), ("active_sessions", "active_sessions"),
             ("active_count", "active_count"))
    level: str = "WARNING"
    event: str
    active_sessions: tuple[str, ...]
    active_count: int

    def describe(self) -> str:
        return f"❓ {self.event} for unknown session '{self.session_id}'"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionRejected(TraceEvent):
    """`reason`: `no_transition` (level from the event's `unhandled`),
    `guard_failed:NAME` (INFO, with `failed_guards`) or `guard_error:TYPE`
    (ERROR, with `error`)."""

    kind: ClassVar[str] = "transition_rejected"
    _keys = (("state", "state"), ("event", "event"), ("valid_events", "valid_events"),
             ("valid_next_states", "valid_next_states"), ("reason", "reason"),
             ("active", "active"), ("failed_guards", "failed_guards"), ("error", "error"))
    _optional = frozenset({"active", "failed_guards", "error"})
    state: str
    event: str
    valid_events: tuple[str, ...]
    valid_next_states: tuple[str, ...]
    reason: str
    active: tuple[str, ...] | None = None      # charts with parallel regions: every leaf
    failed_guards: tuple[str, ...] | None = None
    error: str | None = None

    def describe(self) -> str:
        return f"🚫 {self.event} rejected in {self.state}: {self.reason}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class InternalTransition(TraceEvent):
    kind: ClassVar[str] = "internal_transition"
    _keys = (("state", "state"), ("event", "event"), ("correlation_id", "correlation_id"))
    state: str
    event: str
    correlation_id: str | None

    def describe(self) -> str:
        return f"↩️ {self.event} handled in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class StateTransition(TraceEvent):
    """Between leaf states; `latency_ms`: the event's timestamp → transition done."""

    kind: ClassVar[str] = "state_transition"
    _keys = (("source", "from"), ("target", "to"), ("event", "event"),
             ("correlation_id", "correlation_id"), ("latency_ms", "latency_ms"),
             ("active", "active"))
    _optional = frozenset({"active"})
    _rounded = frozenset({"latency_ms"})
    source: str
    target: str
    event: str
    correlation_id: str | None
    latency_ms: float
    active: tuple[str, ...] | None = None      # charts with parallel regions: every leaf

    def describe(self) -> str:
        return f"🔄 {self.source} → {self.target} ({self.event})"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyRecorded(TraceEvent):
    kind: ClassVar[str] = "latency_recorded"
    _keys = (("source", "from"), ("target", "to"), ("latency_ms", "latency_ms"),
             ("dwell_ms", "dwell_ms"))
    _rounded = frozenset({"latency_ms", "dwell_ms"})
    level: str = "DEBUG"
    source: str
    target: str
    latency_ms: float
    dwell_ms: float

    def describe(self) -> str:
        return (f"⏱️ {self.source} → {self.target} {self.latency_ms:.1f} ms "
                f"(dwell {self.dwell_ms:.0f} ms)")


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ContractApplied(TraceEvent):
    kind: ClassVar[str] = "contract_applied"
    state: str
    contract: Contract
    active: tuple[str, ...] | None = None      # charts with parallel regions: every leaf

    def describe(self) -> str:
        return (f"🎛️ {self.state}: 🎤 {self.contract.get('microphone', '-')} · "
                f"🔈 {self.contract.get('playback', '-')}")

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, **self.contract}
        if self.active is not None:
            out["active"] = list(self.active)
        return out

    @classmethod
    def _from_data(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        active = data.get("active")
        return ({"state": data.get("state"),
                 "active": tuple(active) if isinstance(active, list) else None,
                 "contract": Contract.of({k: v for k, v in data.items()
                                          if k not in ("state", "active")})}, {})


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ContractViolation(TraceEvent):
    kind: ClassVar[str] = "contract_violation"
    _keys = (("state", "state"), ("channel", "channel"), ("detail", "detail"))
    level: str = "ERROR"
    state: str
    channel: str
    detail: str
    playback: str | None = None      # the channel's value then (in the message)

    def describe(self) -> str:
        return f"⛔ audio emitted in {self.state} while playback is {self.playback}"


# ------------------------------------------------- effects, activities, timers
@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EffectDone(TraceEvent):
    kind: ClassVar[str] = "effect_done"
    _keys = (("effect", "effect"), ("state", "state"), ("error", "error"))
    level: str = "DEBUG"
    effect: str
    state: str
    error: None = None

    def describe(self) -> str:
        return f"✅ {self.effect} in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EffectSlow(TraceEvent):
    """An effect took longer than its budget: it held the step."""

    kind: ClassVar[str] = "effect_slow"
    _keys = (("effect", "effect"), ("state", "state"), ("elapsed_ms", "elapsed_ms"),
             ("budget_ms", "budget_ms"))
    _rounded = frozenset({"elapsed_ms"})
    level: str = "WARNING"
    effect: str
    state: str
    elapsed_ms: float
    budget_ms: float

    def describe(self) -> str:
        return (f"🐢 effect {self.effect} in {self.state} took {self.elapsed_ms:.1f} ms "
                f"(budget {self.budget_ms:.0f} ms): it held the step")


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class EffectFailed(TraceEvent):
    kind: ClassVar[str] = "effect_failed"
    _keys = (("effect", "effect"), ("state", "state"), ("error", "error"))
    level: str = "ERROR"
    effect: str
    state: str
    error: str

    def describe(self) -> str:
        return f"💥 effect {self.effect} failed in {self.state}: {self.error}"


STATE_EXIT = "state_exit"
SUPERSEDED = "superseded"
SESSION_CLOSED = "session_closed"
"""Why an activity was cancelled (`activity_cancelled`'s `reason`): its state was
left, the same activity started again, or the session closed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _ActivityEvent(TraceEvent):
    _keys = (("activity", "activity"), ("state", "state"), ("reason", "reason"))
    activity: str
    state: str
    reason: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityStarted(_ActivityEvent):
    kind: ClassVar[str] = "activity_started"

    def describe(self) -> str:
        return f"▶️ {self.activity} started in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityDone(_ActivityEvent):
    kind: ClassVar[str] = "activity_done"

    def describe(self) -> str:
        return f"🏁 {self.activity} done"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCancelled(_ActivityEvent):
    """`reason`: `state_exit`, `superseded`, `session_closed` or `cancelled`."""

    kind: ClassVar[str] = "activity_cancelled"

    def describe(self) -> str:
        return f"⏹️ {self.activity} cancelled ({self.reason})"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityFailed(_ActivityEvent):
    """It raised (`reason`: the error), or ignored its cancellation
    (`ignored_cancellation`; `activity` is then its task's name)."""

    kind: ClassVar[str] = "activity_failed"
    level: str = "ERROR"
    ignored_cancellation: bool = False

    def describe(self) -> str:
        if self.ignored_cancellation:
            return f"💥 {self.activity} ignored cancellation"
        return f"💥 {self.activity} failed: {self.reason}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(TraceEvent):
    kind: ClassVar[str] = "timer_fired"
    _keys = (("event", "event"), ("state", "state"), ("delay_ms", "delay_ms"))
    event: str
    state: str
    delay_ms: float
    delay: str = ""             # as the chart wrote it (in the message)

    def describe(self) -> str:
        return f"⏰ {self.event} after {self.delay or f'{self.delay_ms:g}ms'} in {self.state}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class AudioOut(TraceEvent):
    kind: ClassVar[str] = "audio_out"
    _keys = (("bytes", "bytes"), ("state", "state"))
    level: str = "DEBUG"
    bytes: int
    state: str

    def describe(self) -> str:
        return f"🔊 {self.bytes} bytes"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackCleared(TraceEvent):
    kind: ClassVar[str] = "playback_cleared"
    _keys = (("state", "state"), ("ms_since_barge_in", "ms_since_barge_in"),
             ("dropped_chunks", "dropped_chunks"))
    _rounded = frozenset({"ms_since_barge_in"})
    state: str
    ms_since_barge_in: float | None
    dropped_chunks: int | None = None

    def describe(self) -> str:
        since = self.ms_since_barge_in
        return f"🔇 playback cleared in {self.state}" + (
            f", {since:.1f} ms after barge-in" if since is not None else "")


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class StateTimeout(TraceEvent):
    kind: ClassVar[str] = "state_timeout"
    _keys = (("state", "state"), ("event", "event"))
    level: str = "WARNING"
    state: str
    event: str

    def describe(self) -> str:
        return (f"⌛ {self.state} timed out ({self.event}): gave up waiting, "
                f"its work is cancelled")


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ResponderFailed(TraceEvent):
    kind: ClassVar[str] = "responder_failed"
    _keys = (("activity", "activity"), ("state", "state"), ("error", "error"))
    level: str = "ERROR"
    activity: str
    state: str
    error: str

    def describe(self) -> str:
        return f"💥 {self.error}"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ChartVersionMissing(TraceEvent):
    kind: ClassVar[str] = "chart_version_missing"
    _keys = (("chart", "chart"), ("version_hash", "version_hash"), ("resumed_on", "resumed_on"))
    level: str = "WARNING"
    chart: str
    version_hash: str
    resumed_on: str

    def describe(self) -> str:
        return (f"🧩 snapshot names {self.chart} {self.version_hash}, not in memory here: "
                f"resuming on {self.resumed_on}")


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayUnanswered(TraceEvent):
    """`turnchart replay`: an activity run the recording has no answer for."""

    kind: ClassVar[str] = "replay_unanswered"
    _keys = (("activity", "activity"), ("state", "state"), ("run", "run"), ("reason", "reason"))
    level: str = "WARNING"
    activity: str
    state: str
    run: int
    reason: str

    def describe(self) -> str:
        return f"❔ {self.activity} in {self.state}: {self.reason}"


# ---------------------------------------------------------- audio front-end
@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRejected(TraceEvent):
    kind: ClassVar[str] = "routing_rejected"
    _keys = (("connection_id", "connection_id"), ("active_sessions", "active_sessions"),
             ("handlers", "handlers"))
    level: str = "WARNING"
    connection_id: str | None
    active_sessions: tuple[str, ...]
    handlers: tuple[str, ...]

    def describe(self) -> str:
        return f"❓ no session for connection '{self.connection_id}'"


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerState(TraceEvent):
    """A Redis front-end: the state and contract a worker reported for a call held here
    (`state`: the first region's leaf; `active`, only for charts with parallel
    regions: every active leaf, as `ContractApplied` has them)."""

    kind: ClassVar[str] = "worker_state"
    chart: str
    version: Any
    version_hash: str
    state: str
    contract: Contract
    active: tuple[str, ...] | None = None

    def describe(self) -> str:
        where = " + ".join(self.active) if self.active else self.state
        return (f"🛰️ worker: {where} (🎤 {self.contract.get('microphone')} · "
                f"🔈 {self.contract.get('playback')})")

    def data(self) -> dict[str, Any]:
        out = {"chart": self.chart, "version": self.version, "version_hash": self.version_hash,
               "state": self.state, **self.contract}
        if self.active is not None:
            out["active"] = list(self.active)
        return {**out, **(self.extra or {})}

    @classmethod
    def _from_data(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        head = ("chart", "version", "version_hash", "state")
        active = data.get("active")
        return ({**{k: data.get(k) for k in head},
                 "active": tuple(active) if isinstance(active, list) else None,
                 "contract": Contract.of({k: v for k, v in data.items()
                                          if k not in head and k != "active"})}, {})


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSessionReleased(TraceEvent):
    kind: ClassVar[str] = "worker_session_released"

    def describe(self) -> str:
        return "🔴 call ended; its worker closes the session"


# ------------------------------------------------------------ anything else
@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine(TraceEvent):
    """A line of a kind without its own class: worker, Redis, chart reload and
    server lines, an effect's or activity's own notes (`ctx.log`)."""

    name: str
    text: str
    fields: Mapping[str, Any]

    @property
    def event_type(self) -> str:
        return self.name

    def describe(self) -> str:
        return self.text

    def data(self) -> dict[str, Any]:
        return dict(self.fields)


def is_log_line(value: Any) -> bool:
    """Does `value` (a parsed JSON line) claim to be a §3 log line: an object with a
    string `event_type` and `session_id`? (Other tools' lines are not.)"""
    return isinstance(value, Mapping) and isinstance(value.get("event_type"), str) \
        and isinstance(value.get("session_id"), str)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def from_record(record: Mapping[str, Any]) -> TraceEvent:
    """The typed event of a §3 log line (a `LogLine` for a kind without a class).
    `from_record(r).to_record() == r` for every line the engine writes.

    Raises `ValueError`, saying what is missing, for what is not a log line or a
    line of a known kind without a field it must have (`t_ms`, `data.to`, …). A
    `LogLine` without a usable `t_ms` gets NaN."""
    kind = record.get("event_type")
    data = record.get("data")
    if not isinstance(kind, str) or not isinstance(data, Mapping):
        raise ValueError("not a log line: needs a string 'event_type' and an object 'data'")
    cls = _KINDS.get(kind)
    raw_t = record.get("t_ms")
    t_ms = float(raw_t) if isinstance(raw_t, int | float) and not isinstance(raw_t, bool) \
        else math.nan
    if math.isnan(t_ms) and cls is not None:
        raise ValueError(f"{kind} line has no usable t_ms (got {_shown(raw_t)})")
    base: dict[str, Any] = {"session_id": str(record.get("session_id", "-")),
                            "t_ms": t_ms, "wall": _parse_iso(record.get("ts")),
                            "level": str(record.get("level", "INFO"))}
    message = record.get("message")
    if cls is None:
        return LogLine(**base, name=kind, text=str(message), fields=dict(data))
    values, extra = cls._from_data(data)
    for attr, key in cls._keys:
        if values.get(attr) is None and attr in _required(cls):
            raise ValueError(f"{kind} line has no usable data.{key} (got {_shown(data.get(key))})")
    try:
        event = cls(**base, **values, extra=extra or None)
    except TypeError as exc:
        raise ValueError(f"{kind} line does not fit its kind: {exc}") from None
    return _keep_message(event, message)


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:40]


_REQUIRED: dict[type[TraceEvent], frozenset[str]] = {}


def _required(cls: type[TraceEvent]) -> frozenset[str]:
    """The fields a line of `cls` cannot do without: no default, and None not allowed."""
    found = _REQUIRED.get(cls)
    if found is None:
        found = _REQUIRED[cls] = frozenset(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
            and "None" not in str(f.type) and f.type != "Any")
    return found


def _keep_message(event: TraceEvent, message: Any) -> TraceEvent:
    """Keep a recorded message that the fields do not say again word for word."""
    if isinstance(event, ActivityFailed) and message == f"💥 {event.activity} ignored cancellation":
        event = _replace(event, ignored_cancellation=True)
    if isinstance(event, TimerFired) and isinstance(message, str):
        head, sep, _ = message.removeprefix(f"⏰ {event.event} after ").rpartition(" in ")
        if sep:
            event = _replace(event, delay=head)
    if isinstance(event, ContractViolation) and isinstance(message, str):
        event = _replace(event, playback=message.rpartition(" while playback is ")[2])
    if message != event.describe():
        event = _replace(event, recorded_message=str(message))
    return event


def _replace(event: TraceEvent, **changes: Any) -> TraceEvent:
    values = {f.name: getattr(event, f.name) for f in fields(event)}
    values.update(changes)
    return type(event)(**values)


KINDS: Mapping[str, type[TraceEvent]] = _KINDS
"""event_type → class, for every kind with a class of its own."""

Listener = Callable[[TraceEvent], None]
"""Told every event, whatever its level, in the order they happen. Quick and
non-blocking (it runs inside the session's step): queue anything slow."""
