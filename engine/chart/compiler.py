"""Validated spec → immutable `CompiledChart`.

A compiled chart holds two views of the same flow: a python-statemachine
`StateChart` class (the kernel that sessions run) and a plain transition
table (for rendering, introspection, error messages and tests). Guards are
wrapped so the kernel can evaluate them while the runtime learns which
transition fired and which guard said no.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from statemachine import StateChart
from statemachine.exceptions import InvalidDefinition
from statemachine.io import create_machine_class_from_definition

from engine.chart.contract import Contract
from engine.chart.errors import ChartError, ChartErrors
from engine.chart.guards import RowGuard
from engine.chart.registry import GuardInput, Registry
from engine.chart.source import Position, SourceMap
from engine.chart.spec import (
    DONE_PREFIX,
    ChartSpec,
    DataFieldSpec,
    EventSpec,
    GuardRef,
    SetAdd,
    SetFrom,
    StateSpec,
    parse_delay_ms,
)
from engine.chart.turn import NO_POLICY, TurnPolicy, merge
from engine.chart.validator import ValidatedChart, iter_states


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One alternative of one `on` entry, in the order the chart gives."""

    index: int
    source: str
    event: str
    target: str | None
    guards: tuple[GuardRef, ...]
    do: tuple[str, ...]
    order: int
    sets: tuple[tuple[str, Any], ...] = ()   # `set:` field → SetFrom | SetAdd | constant
    # file:line:col of the row and of each of its guards in the chart file (None: not known)
    position: Position | None = field(default=None, compare=False)
    guard_positions: tuple[Position | None, ...] = field(default=(), compare=False)

    @property
    def internal(self) -> bool:
        """A transition without a target: runs `do`, exits and enters nothing."""
        return self.target is None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "event": self.event, "target": self.target,
            "guards": [str(g) for g in self.guards], "do": list(self.do), "order": self.order}
        if self.sets:
            out["set"] = {name: set_text(how) for name, how in self.sets}
        return out


def set_text(how: Any) -> Any:
    """How a `set:` entry reads in JSON and diagrams: `{from: F}`, `{add: N}` or the constant."""
    if isinstance(how, SetFrom):
        return {"from": how.from_}
    if isinstance(how, SetAdd):
        return {"add": how.add}
    return how


@dataclass(frozen=True, slots=True)
class Timer:
    delay_ms: float
    delay: str
    event: str


@dataclass(frozen=True, slots=True)
class StateInfo:
    """A state with its inherited contract and what it owns."""

    name: str
    parent: str | None
    children: tuple[str, ...]
    initial: str | None
    final: bool
    contract: Mapping[str, str]
    enter: tuple[str, ...]
    exit: tuple[str, ...]
    invoke: tuple[str, ...]
    after: tuple[Timer, ...]
    depth: int
    description: str | None
    turn: TurnPolicy = NO_POLICY   # inherited like the contract (engine/chart/turn.py)
    parallel: bool = False            # every child (region) is active at once
    history: str | None = None        # "shallow" | "deep": entering it resumes its last child
    prompt: str | None = None         # the responder's task here (own, else the nearest parent's)
    tools: tuple[str, ...] = ()       # events the responder may call here (own + parents')

    @property
    def compound(self) -> bool:
        return bool(self.children)


@dataclass
class StepRecord:
    """Filled by the kernel during one `send`: which row fired, which guards said no."""

    guard_input: GuardInput
    fired: int | None = None
    failed_guards: list[str] = field(default_factory=list)
    fired_all: list[int] = field(default_factory=list)   # parallel regions: one row each


@dataclass(frozen=True)
class CompiledChart:
    """Everything a session needs to run a chart; never mutated after compile."""

    name: str
    version: int
    version_hash: str
    path: str
    spec: ChartSpec
    initial: str
    channels: Mapping[str, tuple[str, ...]]
    states: Mapping[str, StateInfo]
    events: Mapping[str, EventSpec]
    transitions: tuple[TransitionRow, ...]
    machine_class: type[StateChart[Any]]
    warnings: tuple[ChartError, ...] = ()
    data: Mapping[str, DataFieldSpec] = field(default_factory=lambda: MappingProxyType({}))

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Parent first, root last (precomputed: the session step asks often)."""
        cache: dict[str, tuple[str, ...]] | None = self.__dict__.get("_ancestors_cache")
        if cache is None:
            cache = {}
            for state in self.states:
                out: list[str] = []
                parent = self.states[state].parent
                while parent is not None:
                    out.append(parent)
                    parent = self.states[parent].parent
                cache[state] = tuple(out)
            object.__setattr__(self, "_ancestors_cache", cache)
        return cache[name]

    def configuration_of(self, leaf: str) -> tuple[str, ...]:
        """The full active configuration for a leaf: root first, leaf last."""
        return (*reversed(self.ancestors(leaf)), leaf)

    @property
    def has_parallel(self) -> bool:
        """Whether several leaf states can be active at once (a `parallel: true` state)."""
        cached: bool | None = self.__dict__.get("_parallel_cache")
        if cached is None:
            cached = any(s.parallel for s in self.states.values())
            object.__setattr__(self, "_parallel_cache", cached)
        return cached

    def turn_of(self, configuration: tuple[str, ...]) -> TurnPolicy:
        """The turn policy in force: the leaf's (inherited); with parallel regions every
        active state's own keys, parents first (regions never set the same key, E155)."""
        if not self.has_parallel:
            return self.states[configuration[-1]].turn
        own: dict[str, Any] | None = self.__dict__.get("_own_turn_cache")
        if own is None:
            own = {node.name: node.spec.turn for node in iter_states(self.spec.states)}
            object.__setattr__(self, "_own_turn_cache", own)
        return merge(own[name] for name in configuration)

    def contract_of(self, configuration: tuple[str, ...]) -> Mapping[str, str]:
        """The contract in force: the leaf's (inherited); with parallel regions each
        region's own values over their parents' (regions never set the same channel)."""
        if not self.has_parallel:
            return self.states[configuration[-1]].contract
        merged: dict[str, str] = {}
        for name in configuration:   # parents first
            info = self.states[name]
            above = self.states[info.parent].contract if info.parent is not None else {}
            merged.update({c: v for c, v in info.contract.items()
                           if above.get(c) != v or c not in merged})
        return MappingProxyType({c: merged[c] for c in self.channels if c in merged})

    def ordered(self, names: Any) -> tuple[str, ...]:
        """States in document order (parents before children, regions in file order)."""
        index: dict[str, int] | None = self.__dict__.get("_order_cache")
        if index is None:
            index = {name: i for i, name in enumerate(self.states)}
            object.__setattr__(self, "_order_cache", index)
        return tuple(sorted(set(names), key=index.__getitem__))

    def default_entry(self, name: str) -> tuple[str, ...]:
        """`name` and what entering it enters by default: initial children down to the
        leaves, every region of a parallel state (document order)."""
        out = [name]
        info = self.states[name]
        children = info.children if info.parallel else \
            ((info.initial,) if info.initial is not None else ())
        for child in children:
            out.extend(self.default_entry(child))
        return self.ordered(out)

    def initial_configuration(self) -> tuple[str, ...]:
        """The configuration a session starts in (root first; all regions when parallel)."""
        return self.default_entry(self.initial)

    def leaves(self, configuration: Any) -> tuple[str, ...]:
        """The active leaf states of a configuration, in document order."""
        return tuple(s for s in configuration if not self.states[s].children)

    def initial_leaf(self, name: str) -> str:
        info = self.states[name]
        while info.initial is not None:
            info = self.states[info.initial]
        return info.name

    def rows_from(self, leaf: str) -> tuple[TransitionRow, ...]:
        """Transitions available in a leaf: its own first, then each ancestor's (cached)."""
        cache: dict[str, tuple[TransitionRow, ...]] = self.__dict__.setdefault("_rows_cache", {})
        rows = cache.get(leaf)
        if rows is None:
            owners = (leaf, *self.ancestors(leaf))
            rows = tuple(r for owner in owners for r in self._by_source.get(owner, ()))
            cache[leaf] = rows
        return rows

    def handles(self, leaf: str, event: str) -> bool:
        """Whether any transition for `event` exists in `leaf` or an ancestor (cached)."""
        cache: dict[str, frozenset[str]] = self.__dict__.setdefault("_events_cache", {})
        events = cache.get(leaf)
        if events is None:
            events = frozenset(r.event for r in self.rows_from(leaf))
            cache[leaf] = events
        return event in events

    def valid_events(self, leaf: str) -> list[str]:
        return sorted({r.event for r in self.rows_from(leaf)})

    def valid_next_states(self, leaf: str) -> list[str]:
        return sorted({r.target for r in self.rows_from(leaf) if r.target is not None})

    @property
    def _by_source(self) -> Mapping[str, tuple[TransitionRow, ...]]:
        cache: dict[str, tuple[TransitionRow, ...]] | None = self.__dict__.get("_by_source_cache")
        if cache is None:
            grouped: dict[str, list[TransitionRow]] = {}
            for row in self.transitions:
                grouped.setdefault(row.source, []).append(row)
            cache = {k: tuple(v) for k, v in grouped.items()}
            object.__setattr__(self, "_by_source_cache", cache)
        return cache

    def table(self) -> list[dict[str, Any]]:
        """The transition table as plain data (for JSON and tests)."""
        return [r.as_dict() for r in self.transitions]


def kernel_event(event: str) -> str:
    """The kernel's name for a chart event. python-statemachine posts its own
    `done.state.X` inside one `send` and would run the transition there; the
    session posts done events itself (one logged step each), so the kernel knows
    them under a name its own never matches."""
    return "_done__" + event[len(DONE_PREFIX):] if event.startswith(DONE_PREFIX) else event


def history_id(state: str) -> str:
    """The id of the history pseudo-state the compiler adds to a state with `history`."""
    return f"_history_{state}"


def done_events(spec_states: Mapping[str, Any]) -> dict[str, EventSpec]:
    """`done.state.X` for every compound state that can finish (a final child; for a
    parallel state, a final child in every region): known events, unhandled: ignore."""
    out: dict[str, EventSpec] = {}
    for node in iter_states(dict(spec_states)):
        s = node.spec
        regions = list(s.states.values()) if s.parallel else [s]
        if s.states and all(any(c.final for c in r.states.values()) for r in regions):
            out[DONE_PREFIX + node.name] = EventSpec(unhandled="ignore")
    return out


def _with_positions(rows: list[TransitionRow], smap: SourceMap,
                    state_paths: Mapping[str, tuple[Any, ...]]) -> list[TransitionRow]:
    """Each row with where it and its guards are written (`turnchart paths` reports them)."""
    out = []
    for row in rows:
        on = (*state_paths[row.source], "on", row.event)
        listed = (*on, row.order)
        base = listed if listed in smap.values else on
        position = smap.value(base) if base is listed else smap.key(on)
        guards = tuple(smap.value(item if (item := (*base, "guard", j)) in smap.values
                                  else (*base, "guard")) for j in range(len(row.guards)))
        out.append(replace(row, position=position, guard_positions=guards))
    return out


def content_hash(spec: ChartSpec) -> str:
    """Stable across key order, comments and formatting; changes with behaviour."""
    canonical = json.dumps(_without_unset_additions(spec.model_dump(mode="json")),
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# State keys added after charts were already hashed, with their defaults: a state that
# leaves one at its default is hashed without it, so a chart that does not use the new
# keys keeps the version hash it always had (snapshots and golden traces name it).
_ADDED_STATE_KEYS: dict[str, Any] = {"turn": None, "parallel": False, "history": None,
                                      "prompt": None, "tools": []}


def _without_unset_additions(dumped: dict[str, Any]) -> dict[str, Any]:
    def states(tree: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, state in tree.items():
            state = {k: v for k, v in state.items()
                     if not (k in _ADDED_STATE_KEYS and v == _ADDED_STATE_KEYS[k])}
            if isinstance(state.get("states"), dict):
                state["states"] = states(state["states"])
            if isinstance(state.get("on"), dict):   # `set:` (issue 16) left out when empty
                state["on"] = {event: [{k: v for k, v in alt.items()
                                        if not (k == "set" and v == {})} for alt in alts]
                               for event, alts in state["on"].items()}
            out[name] = state
        return out

    top = {k: v for k, v in dumped.items() if not (k == "data" and v == {})}
    return {**top, "states": states(dumped.get("states", {}))}


def _dialogue_of(name: str, parents: Mapping[str, str | None],
                 specs: Mapping[str, StateSpec]) -> dict[str, Any]:
    """A state's prompt (its own, else the nearest parent's) and tools (its own, then
    each parent's, nearest first, once each): what the responder gets there."""
    prompt: str | None = None
    tools: list[str] = []
    current: str | None = name
    while current is not None:
        spec = specs[current]
        if prompt is None:
            prompt = spec.prompt
        tools.extend(t for t in spec.tools if t not in tools)
        current = parents[current]
    return {"prompt": prompt, "tools": tuple(tools)}


def _guard_wrapper(ref: GuardRef, fn: Callable[[GuardInput], bool]) -> Callable[..., bool]:
    """A python-statemachine condition: the row's guard (engine/chart/guards.py evaluates it,
    as `turnchart paths` does), recording in the step which guard said no."""
    def guard(step: StepRecord | None = None, **_: Any) -> bool:
        if step is None:
            return False
        result = bound.check(step.guard_input)
        if not result:
            step.failed_guards.append(bound.label)
        return result

    bound = RowGuard.bind(ref, fn)
    guard.__name__ = f"guard_{ref.name}"
    return guard


def _recorder(index: int) -> Callable[..., None]:
    def record(step: StepRecord | None = None, **_: Any) -> None:
        if step is not None:
            if step.fired is None:
                step.fired = index
            if index not in step.fired_all:   # a history transition calls it twice
                step.fired_all.append(index)

    record.__name__ = f"fired_{index}"
    return record


def compile_chart(validated: ValidatedChart, registry: Registry) -> CompiledChart:
    """Build the kernel class and the transition table from a validated chart."""
    spec = validated.spec
    rows: list[TransitionRow] = []
    infos: dict[str, StateInfo] = {}
    nodes = list(iter_states(spec.states))
    parents = {n.name: n.parent for n in nodes}

    def effective_contract(name: str) -> dict[str, str]:
        chain = []
        current: str | None = name
        while current is not None:
            chain.append(current)
            current = parents[current]
        merged: dict[str, str] = {}
        for n in reversed(chain):
            merged.update(by_name[n].contract)
        return merged

    by_name = {n.name: n.spec for n in nodes}

    def effective_turn(name: str) -> TurnPolicy:
        chain: list[str] = []
        current: str | None = name
        while current is not None:
            chain.append(current)
            current = parents[current]
        return merge(by_name[n].turn for n in reversed(chain))

    for node in nodes:
        s = node.spec
        infos[node.name] = StateInfo(
            name=node.name, parent=node.parent, children=tuple(s.states), initial=s.initial,
            final=s.final, contract=Contract.of(effective_contract(node.name)),
            enter=s.enter, exit=s.exit, invoke=s.invoke,
            after=tuple(Timer(parse_delay_ms(d), d, e) for d, e in s.after.items()),
            depth=node.depth, description=s.description, turn=effective_turn(node.name),
            parallel=s.parallel, history=s.history, **_dialogue_of(node.name, parents, by_name))
        for event, alternatives in s.on.items():
            for order, alt in enumerate(alternatives):
                rows.append(TransitionRow(len(rows), node.name, event, alt.target, alt.guards,
                                          alt.do, order, tuple(alt.set.items())))
    rows = _with_positions(rows, validated.source_map, {n.name: n.path for n in nodes})

    rows_by_source: dict[str, list[TransitionRow]] = {}
    for row in rows:
        rows_by_source.setdefault(row.source, []).append(row)

    def definition(states: Mapping[str, Any], initial: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, s in states.items():
            on: dict[str, list[dict[str, Any]]] = {}
            for row in rows_by_source.get(name, ()):
                conds = [_guard_wrapper(g, registry.guard_fn(g.name)) for g in row.guards]
                entry: dict[str, Any] = {"target": kernel_target(row), "on": [_recorder(row.index)]}
                if conds:
                    entry["cond"] = conds
                on.setdefault(kernel_event(row.event), []).append(entry)
            item: dict[str, Any] = {"initial": name == initial, "final": s.final, "on": on}
            if s.parallel:
                item["parallel"] = True
            if s.states:
                item["states"] = definition(s.states, s.initial)
            if s.history is not None and s.initial is not None:
                # SCXML history pseudo-state; with nothing recorded yet it enters `initial`.
                item["history"] = {history_id(name): {"type": s.history,
                                                      "transitions": [{"target": s.initial}]}}
            out[name] = item
        return out

    def kernel_target(row: TransitionRow) -> str | None:
        """A transition into a state with history from outside it resumes its last child."""
        target = row.target
        if target is None or by_name[target].history is None:
            return target
        current: str | None = row.source
        while current is not None:
            if current == target:
                return target   # from inside: an ordinary re-entry at `initial`
            current = parents[current]
        return history_id(target)

    try:
        machine_class = create_machine_class_from_definition(
            f"Chart_{spec.chart}", states=definition(spec.states, spec.initial),
            allow_event_without_transition=False, catch_errors_as_events=False)
    except (InvalidDefinition, KeyError, TypeError, ValueError) as exc:
        smap = validated.source_map
        raise ChartErrors([smap.error((), "E190", f"python-statemachine rejected the chart: "
                                      f"{exc}")]) from None
    return CompiledChart(
        name=spec.chart, version=spec.version, version_hash=content_hash(spec),
        path=validated.path, spec=spec, initial=spec.initial,
        channels=MappingProxyType(dict(spec.contracts)), states=MappingProxyType(infos),
        events=MappingProxyType({**spec.events, **done_events(spec.states)}),
        transitions=tuple(rows),
        machine_class=machine_class, warnings=tuple(validated.warnings),
        data=MappingProxyType(dict(spec.data)))
