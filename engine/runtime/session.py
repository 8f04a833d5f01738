"""One session: one inbox, one consumer, run-to-completion steps.

A step is: receive → validate → stale check → find the transition (guards in
order) → exit (cancel the state's timers and activities first, then its exit
effects) → `do` effects → enter effects (in order; one failing is logged and
the rest still run) → apply the contract → start the new states' activities
and timers → log → save the snapshot → acknowledge. Nothing else runs on the
session between those phases, so no locks are needed in user code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from statemachine.exceptions import TransitionNotAllowed

from engine.chart.compiler import CompiledChart, StepRecord, Timer, TransitionRow
from engine.chart.data import apply_sets
from engine.chart.data import defaults as data_defaults
from engine.chart.kernel import Kernel
from engine.chart.registry import GuardInput, Registry
from engine.chart.spec import DONE_PREFIX
from engine.runtime.clock import Clock, TimerHandle
from engine.runtime.context import ActivityContext, EffectContext
from engine.runtime.dialogue import Dialogue, dialogue_of
from engine.runtime.events import EventProblem, VoiceEvent, check_payload, parse_event
from engine.runtime.latency import LatencyStats
from engine.runtime.logs import EventLog
from engine.runtime.ports import AudioChunk, Ports
from engine.runtime.snapshot import Snapshot, SnapshotStore
from engine.runtime.trace import (
    SESSION_CLOSED,
    STATE_EXIT,
    SUPERSEDED,
    ActivityCancelled,
    ActivityDone,
    ActivityFailed,
    ActivityStarted,
    AudioOut,
    Contract,
    ContractApplied,
    ContractViolation,
    EffectDone,
    EffectFailed,
    EffectSlow,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    LatencyRecorded,
    SessionClosed,
    SessionFailed,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TimerFired,
    TraceEvent,
    TransitionRejected,
)

Ack = Callable[[], Awaitable[None]]
_INTERNAL_SOURCES = ("activity:", "timer", "internal")
_UNHANDLED_LEVEL = {"error": "ERROR", "warn": "WARNING", "ignore": "DEBUG"}


@dataclass(slots=True)
class Envelope:
    """An inbox item: a parsed event or raw input, plus delivery bookkeeping."""

    event: VoiceEvent | None = None
    raw: Any = None
    epoch: int | None = None          # set for events posted by activities and timers
    owner: str | None = None          # the state whose activity or timer posted it
    entry_id: str | None = None       # bus entry id, for de-duplication (Redis)
    ack: Ack | None = None
    waiter: asyncio.Future[None] | None = None   # `settle()`: resolved when reached


@dataclass
class _Owned:
    task: asyncio.Task[None]
    state: str
    activity: str
    reason: list[str] = field(default_factory=list)


_CLOSE = Envelope()
_PAYLOAD_TEXT_LIMIT = 200
EFFECT_BUDGET_MS = 50.0
"""An effect should return within this (queue work, flip a flag); slower ones are logged
as `effect_slow` WARNINGs. What waits (on audio, the network) is an activity."""


def _loggable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as logged: long strings cut, so a line stays a line (replay reads it)."""
    return {k: (v[:_PAYLOAD_TEXT_LIMIT] + "…" if isinstance(v, str) and len(v) > _PAYLOAD_TEXT_LIMIT
                else v) for k, v in payload.items()}


def _describe(exc: BaseException) -> str:
    """`Type: message` of the first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Session:
    """Runs one session of a chart. Create it, `await run()` in a task group, `post()` to it."""

    def __init__(self, session_id: str, chart: CompiledChart, kernel: Kernel, registry: Registry,
                 ports: Ports, clock: Clock, log: EventLog, store: SnapshotStore | None = None,
                 *, snapshot: Snapshot | None = None, cancel_timeout_s: float = 2.0,
                 effect_timeout_s: float = 5.0) -> None:
        self.id = session_id
        self.chart = chart
        self.kernel = kernel
        self.registry = registry
        self.ports = ports
        self.clock = clock
        self.log_ = log
        self.store = store
        self.cancel_timeout_s = cancel_timeout_s
        self.effect_timeout_s = effect_timeout_s
        self.latency = LatencyStats()
        # the chart's typed data (`data:`, engine/chart/data.py); guards see it, `set:` changes it
        self.context: dict[str, Any] = data_defaults(chart.data)
        self.trigger: dict[str, Any] = {}
        self.epoch = 0
        self.turn = 0
        self._correlation_id: str | None = None
        self.last_event_id: str | None = None
        self.contract = Contract()
        self.contract_violations = 0
        self.closed = False
        self.finished = asyncio.Event()
        self._restored = snapshot
        # state with `history:` → the children it had when last exited (kernel-kept)
        self.history: dict[str, tuple[str, ...]] = {}
        configuration = chart.initial_configuration()
        if snapshot is not None:
            self._check_snapshot(snapshot)
            configuration = (chart.ordered(snapshot.configuration) if chart.has_parallel
                             else chart.configuration_of(snapshot.configuration[-1]))
            self.history = {str(k): tuple(v) for k, v in
                            dict(snapshot.context.get("history") or {}).items()
                            if k in chart.states}
            self.epoch, self.turn = snapshot.epoch, snapshot.turn
            self._correlation_id = snapshot.context.get("correlation_id")
            self.context.update(snapshot.context.get("data") or {})
            self.trigger = dict(snapshot.context.get("trigger", {}))
            self.last_event_id = snapshot.last_event_id
        self.configuration: tuple[str, ...] = configuration
        self.entered_at = clock.now_ms()
        self._inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        self._internal: deque[Envelope] = deque()
        self._slots: dict[str, _Owned] = {}
        self._timers: dict[str, list[TimerHandle]] = {}
        self._last_seen: dict[str, float] = {}
        # state -> the epoch at which it was (last) entered. An activity or timer
        # belongs to its state: what it posts is stale once that state is exited or
        # re-entered, not when a transition elsewhere (say, between its children) happens.
        self._entered: dict[str, int] = {}
        self._entered_ms: dict[str, float] = {}   # state -> when it was entered (dwell)
        self._tg: asyncio.TaskGroup | None = None

    # ------------------------------------------------------------------ API
    @property
    def state(self) -> str:
        """The current leaf state (with parallel regions: the first region's; `leaves`
        has them all)."""
        if self.chart.has_parallel:
            return self.chart.leaves(self.configuration)[0]
        return self.configuration[-1]

    @property
    def leaves(self) -> tuple[str, ...]:
        """Every active leaf state: one, or one per parallel region."""
        if self.chart.has_parallel:
            return self.chart.leaves(self.configuration)
        return (self.configuration[-1],)

    @property
    def correlation_id(self) -> str:
        """The current turn's id: carried by everything activities and timers post."""
        return self._correlation_id or f"turn-{self.turn}"

    def next_correlation_id(self) -> str:
        """What a producer stamps on an outside event: the turn that event would open."""
        return f"turn-{self.turn + 1}"

    def post(self, envelope: Envelope) -> None:
        """Queue an external event (or raw input); it is processed in arrival order."""
        if not self.closed:
            self._inbox.put_nowait(envelope)

    def raise_internal(self, event: VoiceEvent) -> None:
        """Queue an internal event: processed before any external event waiting."""
        self._internal.append(Envelope(event=event, epoch=self.epoch))

    def close(self) -> None:
        """Stop after the current step; everything the session owns is cancelled."""
        if not self.closed:
            self.closed = True
            self._internal.appendleft(_CLOSE)
            self._inbox.put_nowait(_CLOSE)

    def live_tasks(self) -> int:
        return sum(1 for o in self._slots.values() if not o.task.done())

    def snapshot(self) -> Snapshot:
        return Snapshot(chart=self.chart.name, version_hash=self.chart.version_hash,
                        session_id=self.id, configuration=self.configuration, epoch=self.epoch,
                        turn=self.turn, context={"data": self.context, "trigger": self.trigger,
                                              "correlation_id": self._correlation_id,
                                              **({"history": {k: list(v) for k, v in
                                                              self.history.items()}}
                                                 if self.history else {}),
                                              **self._pending_done()},
                        last_event_id=self.last_event_id)

    def _pending_done(self) -> dict[str, Any]:
        """Done events posted but not yet handled (the step that entered a final state
        was saved before them): a session resumed from this snapshot posts them again."""
        names = [env.event.event_type for env in self._internal
                 if env.event is not None and env.event.event_type.startswith(DONE_PREFIX)]
        return {"pending_done": names} if names else {}

    async def run(self) -> None:
        """The consumer: owns every task of the session and cancels them all on exit."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    if self._restored is not None:
                        await self._resume()
                    else:
                        await self._start()
                    while True:
                        env = (self._internal.popleft() if self._internal
                               else await self._inbox.get())
                        if env is _CLOSE:
                            break
                        if env.waiter is not None:   # everything posted before is handled
                            if not env.waiter.done():
                                env.waiter.set_result(None)
                            continue
                        await self._step(env)
                finally:
                    await self._stop_all(SESSION_CLOSED)
        except Exception as exc:
            # Something outside the chart's reach broke (the snapshot store, an
            # ack): say so before the session_closed line, then let the owner know.
            error = _describe(exc)
            self._publish(SessionFailed(*self._stamp(), chart=self.chart.name,
                                        version=self.chart.version, state=self.state,
                                        error=error))
            raise
        finally:
            self.closed = True
            self._publish(SessionClosed(*self._stamp(), chart=self.chart.name,
                                        version=self.chart.version,
                                        version_hash=self.chart.version_hash, state=self.state))
            self.finished.set()

    # ------------------------------------------------------------ lifecycle
    def _check_snapshot(self, snap: Snapshot) -> None:
        unknown = [s for s in snap.configuration if s not in self.chart.states]
        if snap.chart != self.chart.name or unknown or not snap.configuration:
            raise ValueError(f"snapshot of session {snap.session_id} does not fit chart "
                             f"{self.chart.name}: chart={snap.chart}, unknown states={unknown}")

    async def _start(self) -> None:
        self._publish(SessionStarted(*self._stamp(), chart=self.chart.name,
                                     version=self.chart.version,
                                     version_hash=self.chart.version_hash, state=self.state,
                                     chart_path=self.chart.path))
        self.epoch += 1
        self._entered = dict.fromkeys(self.configuration, self.epoch)
        for name in self.configuration:
            await self._run_effects(self.chart.states[name].enter, name, "(start)", {})
        self._apply_contract()
        for name in self.configuration:
            self._start_owned(name)
        await self._save()

    async def _resume(self) -> None:
        """Restore: no enter effects run again; the current states' activities and
        timers restart under a new epoch (anything in flight from before is stale)."""
        self._publish(SessionResumed(*self._stamp(), chart=self.chart.name,
                                     version=self.chart.version,
                                     version_hash=self.chart.version_hash, state=self.state,
                                     epoch=self.epoch, chart_path=self.chart.path))
        self.epoch += 1
        self._entered = dict.fromkeys(self.configuration, self.epoch)
        self._apply_contract()
        for name in self.configuration:
            self._start_owned(name)
        assert self._restored is not None
        for name in self._restored.context.get("pending_done") or ():
            if name in self.chart.events:
                self.raise_internal(self._make_event(str(name), {}, "internal",
                                                     self.correlation_id))
        await self._save()

    # ----------------------------------------------------------------- step
    async def _step(self, env: Envelope) -> None:
        event = self._accept(env)
        if event is None:
            await self._ack(env)
            return
        name = event.event_type
        self._last_seen[name] = self.clock.now_ms()
        self._publish(EventReceived(*self._stamp(), event=name,
                                    correlation_id=event.correlation_id, source=event.source,
                                    payload=_loggable(event.payload)))
        if env.epoch is not None and not self._still_owned(env.owner, env.epoch):
            self._publish(EventStale(*self._stamp(), event=name,
                                     correlation_id=event.correlation_id,
                                     current_epoch=self.epoch, event_epoch=env.epoch,
                                     owner=env.owner))
            await self._ack(env)
            return
        leaves = self.leaves
        if not any(self.chart.handles(leaf, name) for leaf in leaves):
            level = _UNHANDLED_LEVEL[self.chart.events[name].unhandled]
            self._reject(level, name, "no_transition")
            await self._ack(env)
            return
        record = StepRecord(GuardInput(name, event.payload, self.context))
        try:
            new_configuration = self.kernel.fire(self.configuration, name, record, self.history)
        except TransitionNotAllowed:
            failed = record.failed_guards[0] if record.failed_guards else "?"
            self._reject("INFO", name, f"guard_failed:{failed}",
                         failed_guards=record.failed_guards)
            await self._ack(env)
            return
        except Exception as exc:  # a guard raised: the event is not applied
            self._reject("ERROR", name, f"guard_error:{type(exc).__name__}",
                         error=f"{type(exc).__name__}: {exc}")
            await self._ack(env)
            return
        assert record.fired is not None
        # One row, or one per parallel region that handles the event (SCXML).
        rows = [self.chart.transitions[i] for i in (record.fired_all or [record.fired])]
        self._apply_sets(rows, event)
        for row in rows:
            if row.internal:
                leaf = self._leaf_under(row.source, self.configuration)
                await self._run_effects(row.do, leaf, name, event.payload)
                self._publish(InternalTransition(*self._stamp(), state=leaf, event=name,
                                                 correlation_id=event.correlation_id))
        external = [row for row in rows if not row.internal]
        if external:
            await self._transition(external, event, new_configuration)
        self.last_event_id = env.entry_id or self.last_event_id
        await self._save()
        await self._ack(env)

    def _apply_sets(self, rows: Sequence[TransitionRow], event: VoiceEvent) -> None:
        """The fired rows' `set:` (issue 16 §3), in row order; one `data_changed` line
        when a value changed (`changes`: field → {from, to}; `data`: every field)."""
        changes: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.sets:
                for name, (old, new) in apply_sets(dict(row.sets), self.context,
                                                   self.chart.data, event.payload).items():
                    changes[name] = {"from": changes.get(name, {"from": old})["from"],
                                     "to": new}
        if changes:
            text = ", ".join(f"{k}={v['to']!r}" for k, v in changes.items())
            self._log("INFO", "data_changed", f"🧮 {text} ({event.event_type})",
                      {"event": event.event_type, "state": self.state,
                       "correlation_id": event.correlation_id, "changes": changes,
                       "data": _loggable(self.context)})

    def _still_owned(self, owner: str | None, epoch: int) -> bool:
        """Is the state instance that posted an event (entered at `epoch`) still active?
        Without an owner, any transition since makes the event stale."""
        if owner is None:
            return epoch == self.epoch
        return self._entered.get(owner) == epoch

    def _accept(self, env: Envelope) -> VoiceEvent | None:
        """Parse and check an inbox item against the chart; log and drop what is invalid."""
        try:
            event = env.event if env.event is not None else parse_event(env.raw)
            check_payload(event, self.chart.events)
            if event.session_id != self.id:
                raise EventProblem("session_id", f"event for session '{event.session_id}' "
                                   f"reached session '{self.id}'", event.model_dump(mode="json"))
        except EventProblem as problem:
            self._publish(EventInvalid(*self._stamp(), error=f"{problem.field}: {problem.error}",
                                       field=problem.field, raw=problem.raw))
            return None
        return event

    def _reject(self, level: str, event: str, reason: str, *,
                failed_guards: list[str] | None = None, error: str | None = None) -> None:
        leaf = self.state
        valid_events = tuple(self.chart.valid_events(leaf))
        valid_next = tuple(self.chart.valid_next_states(leaf))
        active: tuple[str, ...] | None = None
        if self.chart.has_parallel:
            active = leaves = self.leaves
            valid_events = tuple(sorted({e for s in leaves for e in self.chart.valid_events(s)}))
            valid_next = tuple(sorted({t for s in leaves
                                       for t in self.chart.valid_next_states(s)}))
        self._publish(TransitionRejected(
            *self._stamp(), level=level, state=leaf, event=event, valid_events=valid_events,
            valid_next_states=valid_next, reason=reason, active=active,
            failed_guards=None if failed_guards is None else tuple(failed_guards), error=error))

    async def _transition(self, rows: Sequence[TransitionRow], event: VoiceEvent,
                          new_configuration: tuple[str, ...]) -> None:
        """Take one transition, or one per parallel region that handled the event
        (one step: all exits, every row's `do`, all entries, one epoch)."""
        chart, old_configuration = self.chart, self.configuration
        domains = [self._domain(r.source, r.target) for r in rows if r.target is not None]

        def moved(state: str) -> bool:
            return any(self._below(state, d) for d in domains)

        exited = [s for s in reversed(old_configuration)
                  if moved(s) or s not in new_configuration]
        entered = [s for s in new_configuration if moved(s) or s not in old_configuration]
        now = self.clock.now_ms()
        ends = [(self._leaf_under(r.source, old_configuration),
                 self._leaf_under(r.target or r.source, new_configuration)) for r in rows]
        dwells = [now - self._entered_ms.get(src, self.entered_at) for src, _ in ends]
        for name in exited:
            await self._stop_owned_by(name, STATE_EXIT)
            await self._run_effects(chart.states[name].exit, name, event.event_type, event.payload)
        for row, (source_leaf, _) in zip(rows, ends, strict=True):
            await self._run_effects(row.do, source_leaf, event.event_type, event.payload)
        self.epoch += 1
        for name in exited:
            self._entered.pop(name, None)
        for name in entered:
            self._entered[name] = self.epoch
        if not event.source.startswith(_INTERNAL_SOURCES):
            self.turn += 1
            self._correlation_id = event.correlation_id
        self.configuration = new_configuration
        self.entered_at = self.clock.now_ms()
        for name in exited:
            self._entered_ms.pop(name, None)
        for name in entered:
            self._entered_ms[name] = self.entered_at
        if event.payload or (event.source != "timer"
                             and not event.event_type.startswith(DONE_PREFIX)):
            # A timer carries no data: the states it enters keep working on what
            # entered the state it left (THINKING → CONFIRMING → `after` → SPEAKING
            # still speaks the answer that response_ready brought).
            self.trigger = dict(event.payload)
        for name in entered:
            await self._run_effects(chart.states[name].enter, name, event.event_type,
                                    event.payload)
        self._apply_contract()
        for name in entered:
            self._start_owned(name)
        latency_ms = max(0.0, (self.clock.wall() - event.timestamp) * 1000.0)
        for (source_leaf, target_leaf), dwell_ms in zip(ends, dwells, strict=True):
            self._publish(StateTransition(
                *self._stamp(), source=source_leaf, target=target_leaf, event=event.event_type,
                correlation_id=event.correlation_id, latency_ms=latency_ms,
                active=self.leaves if chart.has_parallel else None))
            self.latency.record(source_leaf, target_leaf, latency_ms, dwell_ms)
            self._publish(LatencyRecorded(*self._stamp(), source=source_leaf, target=target_leaf,
                                          latency_ms=latency_ms, dwell_ms=dwell_ms))
        self._post_done_events(entered)

    def _leaf_under(self, state: str, configuration: tuple[str, ...]) -> str:
        """The active leaf at or below `state` (the first, in document order)."""
        for name in reversed(configuration) if not self.chart.has_parallel else configuration:
            if not self.chart.states[name].children and (
                    name == state or state in self.chart.ancestors(name)):
                return name
        return state

    def _post_done_events(self, entered: Sequence[str]) -> None:
        """SCXML done events: a final child entered posts `done.state.PARENT`; when every
        region of a parallel state is in a final child, `done.state.PARALLEL` follows.
        Internal events: handled before anything waiting outside, never a new turn."""
        chart, posted = self.chart, []
        for name in entered:
            info = chart.states[name]
            if not info.final or info.parent is None:
                continue
            posted.append(info.parent)
            grand = chart.states[info.parent].parent
            if grand is not None and chart.states[grand].parallel and all(
                    any(chart.states[s].final and chart.states[s].parent == region
                        for s in self.configuration)
                    for region in chart.states[grand].children):
                posted.append(grand)
        for state in dict.fromkeys(posted):
            done = DONE_PREFIX + state
            if done in chart.events:
                self.raise_internal(self._make_event(done, {}, "internal", self.correlation_id))

    def _domain(self, source: str, target: str) -> str | None:
        """SCXML transition domain: the deepest proper ancestor of the source that
        is also a proper ancestor of the target and is not a parallel state (SCXML's
        LCCA; None: the whole chart). So a transition between two regions, or one
        that re-enters a region's own state, exits and re-enters the parallel state."""
        target_ancestors = self.chart.ancestors(target)
        for ancestor in self.chart.ancestors(source):
            if ancestor in target_ancestors and not self.chart.states[ancestor].parallel:
                return ancestor
        return None

    def _below(self, state: str, domain: str | None) -> bool:
        return domain is None or domain in self.chart.ancestors(state)

    # ------------------------------------------------------ effects & contract
    async def _run_effects(self, names: tuple[str, ...], state: str, event: str,
                           payload: Mapping[str, Any]) -> None:
        """Run effects in order. One deadline per effect, armed once per list (a
        timer per effect is measurable on the step's hot path): when it fires, the
        effect that hung is logged as failed and the rest run under a fresh one."""
        index = 0
        while index < len(names):
            try:
                async with asyncio.timeout(None) as deadline:
                    while index < len(names):
                        name = names[index]
                        deadline.reschedule(asyncio.get_running_loop().time()
                                            + self.effect_timeout_s)
                        started = self.clock.now_ms()
                        error = await self._call_effect(name, state, event, payload)
                        self._run_effect_outcome(name, state, error,
                                                 self.clock.now_ms() - started)
                        index += 1
            except TimeoutError:
                self._run_effect_outcome(names[index], state,
                                         f"TimeoutError: did not finish within "
                                         f"{self.effect_timeout_s}s")
                index += 1

    async def _call_effect(self, name: str, state: str, event: str,
                           payload: Mapping[str, Any]) -> str | None:
        """Await one effect; return its error text, or None when it succeeded."""
        ctx = EffectContext(self.id, state, event, payload, self.ports, self.clock,
                            self._log, self._since_event_ms, self._publish)
        try:
            await self.registry.effect_fn(name)(ctx)
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    def _run_effect_outcome(self, name: str, state: str, error: str | None,
                            elapsed_ms: float = 0.0) -> None:
        if error is not None:
            self._publish(EffectFailed(*self._stamp(), effect=name, state=state, error=error))
        elif elapsed_ms > EFFECT_BUDGET_MS:
            # An effect holds the session's step: nothing else (a barge-in, the answer)
            # is handled until it returns. Waiting belongs in an activity.
            self._publish(EffectSlow(*self._stamp(), effect=name, state=state,
                                     elapsed_ms=elapsed_ms, budget_ms=EFFECT_BUDGET_MS))
        else:
            self._publish(EffectDone(*self._stamp(), effect=name, state=state))

    def _apply_contract(self) -> None:
        contract = self.chart.contract_of(self.configuration)
        self.contract = contract if isinstance(contract, Contract) else Contract.of(contract)
        self._publish(ContractApplied(*self._stamp(), state=self.state, contract=self.contract,
                                      active=self.leaves if self.chart.has_parallel else None))

    def _since_event_ms(self, event: str) -> float | None:
        seen = self._last_seen.get(event)
        return None if seen is None else self.clock.now_ms() - seen

    # ------------------------------------------------- activities and timers
    def _start_owned(self, state: str) -> None:
        info = self.chart.states[state]
        for activity in info.invoke:
            self._start_activity(activity, state)
        if info.after:
            self._timers[state] = [self._start_timer(t, state) for t in info.after]

    def _start_timer(self, timer: Timer, state: str) -> TimerHandle:
        epoch, cid = self._entered.get(state, self.epoch), self.correlation_id

        def fire() -> None:
            if self.closed or not self._still_owned(state, epoch):
                return
            self._publish(TimerFired(*self._stamp(), event=timer.event, state=state,
                                     delay_ms=timer.delay_ms, delay=timer.delay))
            self.post(Envelope(event=self._make_event(timer.event, {}, "timer", cid), epoch=epoch,
                               owner=state))

        return self.clock.call_later(timer.delay_ms / 1000.0, fire)

    def _make_event(self, name: str, payload: dict[str, Any], source: str,
                    correlation_id: str) -> VoiceEvent:
        return VoiceEvent.model_construct(
            event_type=name, session_id=self.id, source=source, timestamp=self.clock.wall(),
            correlation_id=correlation_id, payload=payload, metadata={})

    def _start_activity(self, activity: str, state: str) -> None:
        assert self._tg is not None
        previous = self._slots.get(activity)
        if previous is not None and not previous.task.done():
            previous.reason.append(SUPERSEDED)
            previous.task.cancel()
        fn = self.registry.activity_fn(activity)
        epoch, cid = self._entered.get(state, self.epoch), self.correlation_id

        def post(name: str, payload: dict[str, Any]) -> None:
            self.post(Envelope(event=self._make_event(name, payload, f"activity:{activity}", cid),
                               epoch=epoch, owner=state))

        ctx = ActivityContext(self.id, activity, state, epoch, cid, dict(self.trigger), self.ports,
                              self.clock, self._log, post, self._emit_audio, self._publish,
                              dialogue=self._dialogue, settle=self._settle,
                              events=self.chart.events)
        reasons: list[str] = []
        # Logged here, not in the task: a task cancelled before its first step
        # never runs its coroutine, and its start and cancellation must still show.
        self._publish(ActivityStarted(*self._stamp(), activity=activity, state=state))
        task = self._tg.create_task(self._activity(fn, ctx), name=f"{self.id}:{activity}")

        def cancelled(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                reason = reasons[0] if reasons else "cancelled"
                self._publish(ActivityCancelled(*self._stamp(), activity=activity, state=state,
                                                reason=reason))

        # Runs before whoever awaits the task (`_cancel`) resumes, so the line
        # comes before the exit effects and the next state's lines.
        task.add_done_callback(cancelled)
        self._slots[activity] = _Owned(task, state, activity, reasons)

    async def _activity(self, fn: Callable[[ActivityContext], Awaitable[None]],
                        ctx: ActivityContext) -> None:
        try:
            await fn(ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._publish(ActivityFailed(*self._stamp(), activity=ctx.activity, state=ctx.state,
                                         reason=error))
            error_spec = self.chart.events.get("error")
            if error_spec is not None and self._still_owned(ctx.state, ctx.epoch):
                # Only the fields the chart declares: `error: {}` must not turn a
                # failure into an invalid event that nothing handles.
                message = f"{ctx.activity} failed: {error}"
                ctx.post("error", {"message": message} if "message" in error_spec.payload else {})
        else:
            self._publish(ActivityDone(*self._stamp(), activity=ctx.activity, state=ctx.state))

    async def _stop_owned_by(self, state: str, reason: str) -> None:
        for handle in self._timers.pop(state, []):
            handle.cancel()
        stopping = [o for o in self._slots.values() if o.state == state and not o.task.done()]
        await self._cancel(stopping, reason)
        for owned in stopping:
            self._slots.pop(owned.activity, None)

    async def _stop_all(self, reason: str) -> None:
        for handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        self._timers.clear()
        await self._cancel([o for o in self._slots.values() if not o.task.done()], reason)
        self._slots.clear()

    async def _cancel(self, owned: list[_Owned], reason: str) -> None:
        if not owned:
            return
        for o in owned:
            o.reason.append(reason)
            o.task.cancel()
        await asyncio.sleep(0)  # most activities end in the loop iteration that cancels them
        pending = [o.task for o in owned if not o.task.done()]
        if pending:
            _, pending_set = await asyncio.wait(pending, timeout=self.cancel_timeout_s)
            pending = list(pending_set)
        for task in pending:
            self._publish(ActivityFailed(*self._stamp(), activity=task.get_name(),
                                         state=self.state, ignored_cancellation=True,
                                         reason=f"did not stop within {self.cancel_timeout_s}s"))

    async def _emit_audio(self, chunk: AudioChunk) -> bool:
        """Activities send audio here; it only flows while playback is `streaming`."""
        playback = self.contract.playback
        if playback != "streaming":
            self.contract_violations += 1
            self._publish(ContractViolation(
                *self._stamp(), state=self.state, channel="playback", playback=playback,
                detail=f"{len(chunk.data)} bytes dropped: playback is {playback}"))
            return False
        await self.ports.playback.write(self.id, chunk)
        self._publish(AudioOut(*self._stamp(), bytes=len(chunk.data), state=self.state))
        return True

    def _dialogue(self) -> Dialogue | None:
        """The responder's brief in the active states now (engine/runtime/dialogue.py)."""
        return dialogue_of(self.chart.states, self.chart.events, self.leaves, self.context)

    async def _settle(self) -> None:
        """Return once every event queued before this call has been handled (an
        activity that posted a tool event reads the dialogue it led to)."""
        if self.closed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(Envelope(waiter=waiter))
        await waiter

    # --------------------------------------------------------------- helpers
    def _log(self, level: str, event_type: str, message: str, data: dict[str, Any]) -> None:
        """What effects and activities log of their own (`ctx.log`)."""
        self.log_.emit(level, self.id, event_type, message, data)

    def _stamp(self) -> tuple[str, float, float]:
        return self.id, self.clock.now_ms(), self.clock.wall()

    def _publish(self, event: TraceEvent) -> None:
        self.log_.publish(event)

    async def _save(self) -> None:
        if self.store is not None:
            await self.store.save(self.snapshot())

    async def _ack(self, env: Envelope) -> None:
        if env.ack is not None:
            await env.ack()

