"""Chart validation: every problem at once, each at its `file:line:col`.

Two passes. The pydantic spec checks the shape (unknown keys, types, delays,
payload types); its error locations are mapped back through the source map.
Then the semantic pass checks what a shape cannot: names, targets, events,
the registry, contracts, reachability, dead ends and ambiguity. A chart that
passes both can be compiled and run.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from statemachine import StateChart

from engine.chart.data import check_argument, payload_fits
from engine.chart.data import fits as data_fits
from engine.chart.errors import ChartError, ChartErrors, did_you_mean, sort_problems
from engine.chart.registry import Registry
from engine.chart.source import LoadedSource, PathKey, SourceMap
from engine.chart.spec import (
    DATA_TYPES,
    DONE_PREFIX,
    NAME_RE,
    BargeInSpec,
    ChartSpec,
    DataFieldSpec,
    EventSpec,
    GuardCallSpec,
    SetAdd,
    SetFrom,
    StateSpec,
    TransitionSpec,
    TurnSpec,
)
from engine.chart.turn import END_MODES, MAX_TURN_MS

# Names that clash with attributes of python-statemachine's StateChart: a state
# or event called `send` silently hijacks `sm.send`, `model` crashes, etc.
# The metaclass also reads `listeners` and a few flags from the class body, so a
# state with one of those names breaks the class before our checks could help.
RESERVED_NAMES: frozenset[str] = frozenset(
    {n for n in dir(StateChart) if not n.startswith("__")}
    | {"send", "model", "configuration", "state", "states", "events"}
    | {"listeners", "listeners_inherit", "validate_disconnected_states",
       "validate_trap_states", "validate_final_reachability", "state_field", "start_value"}
)
UNHANDLED_POLICIES = ("error", "warn", "ignore")

# What a YAML author should have written, by pydantic error type.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
_TRANSITION_SHAPE = "a target state name, a mapping {target, guard, do}, or a list of them"
_TRANSITION_ITEM = "a target state name or a mapping {target, guard, do}"

_SHAPE_CODES = {
    "extra_forbidden": "E102",
    "missing": "E103",
    "chart_name": "E110",
    "payload_type": "E160",
    "delay": "E161",
}


@dataclass(frozen=True)
class StateNode:
    """A state in the tree with what validation and compilation need to know."""

    name: str
    spec: StateSpec
    parent: str | None
    path: PathKey
    depth: int


@dataclass
class ValidatedChart:
    """A chart that passed validation, with where everything came from."""

    spec: ChartSpec
    source_map: SourceMap
    warnings: list[ChartError] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.source_map.path


def iter_states(states: dict[str, StateSpec], parent: str | None = None,
                prefix: PathKey = (), depth: int = 0) -> Iterator[StateNode]:
    """Depth-first over the state tree, parents before children."""
    for name, spec in states.items():
        path = (*prefix, "states", name)
        yield StateNode(name, spec, parent, path, depth)
        yield from iter_states(spec.states, name, path, depth + 1)


def validate(loaded: LoadedSource, registry: Registry) -> ValidatedChart:
    """Validate a loaded chart; raise `ChartErrors` with every problem found."""
    smap = loaded.source_map
    problems = list(loaded.problems)
    data = loaded.data
    if not isinstance(data, dict):
        problems.append(smap.error((), "E104", "a chart must be a mapping with chart, version, "
                                   "initial, contracts, events and states"))
        raise ChartErrors(problems)
    spec, shape_errors, only_unknown_keys = _check_shape(data, smap)
    problems.extend(shape_errors)
    warnings: list[ChartError] = []
    if spec is not None and (not shape_errors or only_unknown_keys):
        semantic = _Semantic(spec, smap, registry)
        semantic.run()
        problems.extend(semantic.errors)
        warnings.extend(semantic.warnings)
    if problems:
        raise ChartErrors(problems, warnings)
    assert spec is not None
    return ValidatedChart(spec, smap, sort_problems(warnings))


# ---------------------------------------------------------------- shape pass

def _check_shape(data: dict[str, Any], smap: SourceMap
                 ) -> tuple[ChartSpec | None, list[ChartError], bool]:
    """Validate with pydantic; on unknown keys only, retry without them."""
    try:
        return ChartSpec.model_validate(data), [], True
    except ValidationError as exc:
        errors = _collapse_set_unions(exc.errors(include_url=False))
    problems = [_shape_error(e, smap, data) for e in errors]
    only_unknown = all(e["type"] == "extra_forbidden" for e in errors)
    if not only_unknown:
        return None, problems, False
    pruned = copy.deepcopy(data)
    for e in errors:
        _delete(pruned, smap, e["loc"])
    try:
        return ChartSpec.model_validate(pruned), problems, True
    except ValidationError:
        return None, problems, False


_SET_MEMBERS = ("SetFrom", "SetAdd", "bool", "int", "float", "str")


def _collapse_set_unions(errors: list[Any]) -> list[Any]:
    """A bad `set:` value fails every member of its union; report it once."""
    out: list[Any] = []
    seen: set[tuple[Any, ...]] = set()
    for err in errors:
        loc = tuple(err["loc"])
        k = next((i for i, part in enumerate(loc[:-2]) if part == "set"
                  and loc[i + 2] in _SET_MEMBERS), None)
        if k is None:
            out.append(err)
            continue
        key = loc[:k + 2]
        if key not in seen:
            seen.add(key)
            value = err["input"] if len(loc) == k + 3 else None
            out.append({"type": "set_value", "loc": key, "input": value, "msg": ""})
    return out


def _source_loc(smap: SourceMap, loc: tuple[Any, ...]) -> tuple[PathKey, bool]:
    """Map a pydantic error location onto the document path; True if it names a key."""
    current: PathKey = ()
    for part in loc:
        if part == "[key]":
            return current, True
        candidate = (*current, part)
        if candidate in smap.keys or candidate in smap.values:
            current = candidate
        elif isinstance(part, int):
            continue  # a single transition mapping normalised to a one-item list
        else:
            current = candidate
    return current, False


def _delete(data: Any, smap: SourceMap, loc: tuple[Any, ...]) -> None:
    path, _ = _source_loc(smap, loc)
    node = data
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _model_at(path: PathKey) -> type[BaseModel]:
    """Which spec model a mapping at this document path is checked against."""
    model: type[BaseModel] = ChartSpec
    i = 0
    while i < len(path):
        part = path[i]
        if model is ChartSpec and part == "events":
            model, i = EventSpec, i + 2
        elif model is ChartSpec and part == "data":
            model, i = DataFieldSpec, i + 2
        elif model is TransitionSpec and part == "guard":
            model, i = GuardCallSpec, i + 1
            if i < len(path) and isinstance(path[i], int):
                i += 1
        elif model in (ChartSpec, StateSpec) and part == "states":
            model, i = StateSpec, i + 2
        elif model is StateSpec and part == "turn":
            model, i = TurnSpec, i + 1
        elif model is TurnSpec and part == "barge_in":
            model, i = BargeInSpec, i + 1
        elif model is StateSpec and part == "on":
            model, i = TransitionSpec, i + 2
            if i < len(path) and isinstance(path[i], int):
                i += 1
        else:
            i += 1
    return model


def describe(path: PathKey) -> str:
    """A human name for a place in the chart: "state 'IDLE'", "event 'x'", …"""
    what = "the chart"
    i = 0
    while i < len(path):
        part = path[i]
        if part == "states" and i + 1 < len(path):
            what, i = f"state '{path[i + 1]}'", i + 2
        elif part == "events" and i + 1 < len(path):
            what, i = f"event '{path[i + 1]}'", i + 2
        elif part == "contracts" and i == 0:
            what, i = "contracts", i + 1
        elif part == "on" and i + 1 < len(path):
            what, i = f"transition on '{path[i + 1]}' of {what}", i + 2
        elif part == "turn" and i >= 2 and path[i - 2] == "states":
            what, i = f"the turn policy of {what}", i + 1
        elif part == "barge_in" and i >= 1 and path[i - 1] == "turn":
            what, i = f"'barge_in' in {what}", i + 1
        else:
            i += 1
    return what


def _shape_error(err: Any, smap: SourceMap, data: Any) -> ChartError:
    loc: tuple[Any, ...] = tuple(err["loc"])
    kind: str = err["type"]
    path, at_key = _source_loc(smap, loc)
    code = _SHAPE_CODES.get(kind, "E104")
    if kind == "extra_forbidden":
        key = str(path[-1])
        allowed = _model_at(path[:-1]).model_fields
        msg = f"unknown key '{key}' in {describe(path[:-1])}{did_you_mean(key, allowed)}"
        return smap.error(path, code, msg, at_key=True)
    if kind == "missing":
        key = str(loc[-1])
        if path == ("initial",):
            return smap.error((), "E120", "missing 'initial': name the state the chart starts in")
        return smap.error(path[:-1], code, f"missing required key '{key}' in {describe(path[:-1])}",
                          at_key=True)
    if kind == "set_value":
        return smap.error(path, "E182", f"bad set value for '{loc[-1]}' in {describe(path)}: "
                          "write a constant (text, number, true/false), {from: PAYLOAD_FIELD} "
                          "or {add: NUMBER}")
    if kind == "literal_error" and len(loc) == 3 and loc[0] == "data" and loc[-1] == "type":
        value = err.get("input")
        hint = did_you_mean(value, DATA_TYPES) if isinstance(value, str) else ""
        return smap.error(path, "E180", f"bad type {_short(value)} for data field '{loc[1]}': "
                          f"use str, int, float or bool{hint}")
    if kind == "literal_error" and loc and loc[-1] == "history":
        value = err.get("input")
        hint = did_you_mean(value, ("shallow", "deep")) if isinstance(value, str) else ""
        return smap.error(path, "E163", f"bad history {_short(value)} in {describe(path)}: "
                          f"use shallow or deep{hint}")
    if kind == "literal_error" and loc and loc[-1] == "unhandled":
        value = err.get("input")
        hint = did_you_mean(value, UNHANDLED_POLICIES) if isinstance(value, str) else ""
        return smap.error(path, "E162", f"bad unhandled policy {_short(value)} in "
                          f"{describe(path)}: use error, warn or ignore{hint}")
    turn = _turn_error(path, kind, err)
    if turn is not None:
        return smap.error(path, turn[0], turn[1])
    if code != "E104":
        return smap.error(path, code, str(err["msg"]), at_key=at_key)
    return smap.error(path, code, _bad_value_message(path, kind, err), at_key=at_key)


_TURN_MS_KEYS = ("patience_ms", "speaking_ms", "thinking_ms")


def _turn_error(path: PathKey, kind: str, err: Any) -> tuple[str, str] | None:
    """E153 / E154 for a bad value inside a state's `turn:` policy, else None."""
    in_turn = any(part == "turn" and i >= 2 and path[i - 2] == "states"
                  for i, part in enumerate(path[:-1]))
    if not in_turn or kind in ("model_type", "model_attributes_type", "dict_type"):
        return None
    key, value = path[-1], err.get("input")
    where = describe(path[:-1])
    if key == "end" and path[-2] == "turn":
        hint = did_you_mean(value, END_MODES) if isinstance(value, str) else ""
        return "E153", (f"bad end-of-turn mode {_short(value)} in {where}: use "
                        f"{', '.join(END_MODES[:-1])} or {END_MODES[-1]}{hint}")
    if key in _TURN_MS_KEYS:
        return "E154", (f"bad {key} {_short(value)} in {where}: write whole milliseconds "
                        f"from 0 to {MAX_TURN_MS}, e.g. 700")
    return None


def _bad_value_message(path: PathKey, kind: str, err: Any) -> str:
    """`bad value for 'version' in the chart: expected an integer, got 'one'`."""
    expected = _EXPECTED.get(kind)
    item = bool(path) and isinstance(path[-1], int)
    owner = path[:-1] if item else path
    if len(owner) >= 2 and owner[-2] == "on" and kind in ("tuple_type", "model_type",
                                                            "dict_type"):
        expected = _TRANSITION_ITEM if item else _TRANSITION_SHAPE
    elif path and path[-1] == "on" and kind == "dict_type":
        expected = "a mapping from event names to transitions"
    elif len(path) >= 2 and path[-2] == "after" and kind == "string_type":
        expected = "an event name"
    wanted = f"expected {expected}" if expected else str(err["msg"]).lower()
    got = _short(err.get("input"))
    if item:
        return f"bad item {int(path[-1]) + 1} of {_what(owner)}: {wanted}, got {got}"
    return f"bad value for {_what(path)}: {wanted}, got {got}"


def _what(path: PathKey) -> str:
    """"state 'IDLE'" when the path names a thing, else "'field' in state 'IDLE'"."""
    if not path:
        return "the chart"
    own, owner = describe(path), describe(path[:-1])
    return own if own != owner else f"'{path[-1]}' in {owner}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------- semantic pass

class _Semantic:
    """Cross-reference checks over a shape-valid spec."""

    def __init__(self, spec: ChartSpec, smap: SourceMap, registry: Registry) -> None:
        self.spec = spec
        self.smap = smap
        self.registry = registry
        self.errors: list[ChartError] = []
        self.warnings: list[ChartError] = []
        self.nodes: dict[str, StateNode] = {}
        self.used_events: set[str] = set()

    def err(self, path: PathKey, code: str, msg: str, *, at_key: bool = False) -> None:
        self.errors.append(self.smap.error(path, code, msg, at_key=at_key))

    def warn(self, path: PathKey, code: str, msg: str, *, at_key: bool = False) -> None:
        self.warnings.append(self.smap.error(path, code, msg, at_key=at_key, severity="warning"))

    def run(self) -> None:
        self._collect_states()
        self._check_event_names()
        self._check_initials()
        for node in self.nodes.values():
            self._check_state(node)
        self._check_regions()
        self._check_data()
        self._check_unused_events()
        if not self.errors:
            self._check_graph()

    # names -----------------------------------------------------------------
    def _name_problem(self, name: str) -> str | None:
        if not NAME_RE.match(name) or name.startswith("_"):
            return ("must be a letter followed by letters, digits or _ "
                    "(no spaces, dots or leading _)")
        if name in RESERVED_NAMES:
            return f"clashes with python-statemachine's StateChart.{name}"
        return None

    def _collect_states(self) -> None:
        for node in iter_states(self.spec.states):
            problem = self._name_problem(node.name)
            if problem:
                self.err(node.path, "E111", f"bad state name '{node.name}': {problem}", at_key=True)
            if node.name in self.nodes:
                first = self.smap.key(self.nodes[node.name].path)
                self.err(node.path, "E112", f"state name '{node.name}' is used twice "
                         f"(first at line {first.line}); state names are global", at_key=True)
                continue
            self.nodes[node.name] = node

    def _check_event_names(self) -> None:
        for name in self.spec.events:
            path = ("events", name)
            problem = self._name_problem(name)
            if problem:
                self.err(path, "E111", f"bad event name '{name}': {problem}", at_key=True)
            elif name in self.nodes:
                where = self.smap.key(self.nodes[name].path)
                self.err(path, "E111", f"bad event name '{name}': the state at line {where.line} "
                         "has the same name (events and states share one namespace)",
                         at_key=True)

    def _check_initials(self) -> None:
        if self.spec.initial not in self.spec.states:
            self._unknown_initial(("initial",), self.spec.initial, list(self.spec.states), "chart")
        for node in self.nodes.values():
            spec = node.spec
            if spec.parallel:
                self._check_parallel(node)
                continue
            if spec.states and spec.initial is None:
                self.err(node.path, "E120", f"compound state '{node.name}' has no 'initial' "
                         "child", at_key=True)
            elif spec.initial is not None and not spec.states:
                self.err((*node.path, "initial"), "E121", f"state '{node.name}' has 'initial' "
                         "but no child states")
            elif spec.initial is not None and spec.initial not in spec.states:
                self._unknown_initial((*node.path, "initial"), spec.initial, list(spec.states),
                                      f"state '{node.name}'")

    def _check_parallel(self, node: StateNode) -> None:
        """A parallel state runs every child (region) at once: children, no initial."""
        spec = node.spec
        if not spec.states:
            self.err((*node.path, "parallel"), "E122", f"parallel state '{node.name}' has no "
                     "child states: each child is a region that runs at the same time")
        if spec.initial is not None:
            self.err((*node.path, "initial"), "E122", f"parallel state '{node.name}' has "
                     "'initial': all its children are entered at once, so it takes none")

    def _unknown_initial(self, path: PathKey, name: str, options: list[str], owner: str) -> None:
        where = "a top-level state" if owner == "chart" else f"a child of {owner}"
        self.err(path, "E121", f"unknown initial state '{name}': it must be {where}"
                 f"{did_you_mean(name, options)}")

    # one state ---------------------------------------------------------------
    def _check_state(self, node: StateNode) -> None:
        spec, path = node.spec, node.path
        if spec.final and (spec.on or spec.after or spec.invoke or spec.states):
            self.err(path, "E173", f"final state '{node.name}' must have no on, after, invoke or "
                     "child states", at_key=True)
        if spec.history is not None and not spec.states:
            self.err((*node.path, "history"), "E176", f"state '{node.name}' has 'history' but "
                     "no child states: only a compound state can resume its last child")
        elif spec.history is not None and spec.parallel:
            self.err((*node.path, "history"), "E176", f"parallel state '{node.name}' has "
                     "'history': put it on the regions that should resume")
        self._check_contract(node)
        for slot in ("enter", "exit"):
            for i, name in enumerate(getattr(spec, slot)):
                self._check_registered("effect", "E141", name, (*path, slot, i))
        for i, name in enumerate(spec.invoke):
            loc = (*path, "invoke", i) if len(spec.invoke) > 1 or (*path, "invoke", 0) in \
                self.smap.values else (*path, "invoke")
            self._check_registered("activity", "E142", name, loc)
        for delay, event in spec.after.items():
            self._check_event((*path, "after", delay), event, at_key=False)
        for event, alternatives in spec.on.items():
            self._check_event((*path, "on", event), event, at_key=True)
            self._check_alternatives(node, event, alternatives)
        self._check_dialogue(node)

    def _check_dialogue(self, node: StateNode) -> None:
        """`prompt:` and `tools:` (issue 16 §4): E185 a tool that is not a declared
        event, E186 tools where no prompt (own or a parent's) says what they are for,
        E187 a tool nothing here handles, E188 a prompt naming no data field, E189 a
        tool listed twice."""
        spec, path = node.spec, node.path
        if spec.prompt is not None:
            self._check_prompt(spec.prompt, (*path, "prompt"))
        seen: set[str] = set()
        for i, tool in enumerate(spec.tools):
            loc = (*path, "tools", i)
            if tool in seen:
                self.err(loc, "E189", f"tool '{tool}' is listed twice in state '{node.name}'")
                continue
            seen.add(tool)
            self.used_events.add(tool)
            if tool not in self.spec.events:
                self.err(loc, "E185", f"tool '{tool}' of state '{node.name}' is not a declared "
                         f"event{did_you_mean(tool, self.spec.events)}: a tool is an event "
                         "whose payload is its parameters")
                continue
            chain = [node.name, *self._ancestors(node.name)]
            if not any(tool in self.nodes[s].spec.on for s in chain):
                self.err(loc, "E187", f"tool '{tool}' is never handled: neither state "
                         f"'{node.name}' nor a parent has a transition on it, so every "
                         "call would be rejected")
        if spec.tools and not any(self.nodes[s].spec.prompt
                                  for s in [node.name, *self._ancestors(node.name)]):
            self.err((*path, "tools"), "E186", f"state '{node.name}' has tools but no prompt "
                     "(on itself or a parent): say what the responder is asked here")

    def _check_prompt(self, prompt: str, loc: PathKey) -> None:
        """A prompt may name data fields as `{field}` (filled in when asked); nothing else."""
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(prompt)
                      if f is not None]
        except ValueError as exc:
            self.err(loc, "E188", f"bad prompt: {exc} (write {{{{ for a literal brace)")
            return
        names = [f for f, _, _ in fields]
        for name, spec, conv in fields:
            if spec or conv:
                self.err(loc, "E188", f"bad prompt: '{{{name}...}}' has a conversion or "
                         "format; write just {field}")
                return
        for name in names:
            if name not in self.spec.data:
                self.err(loc, "E188", f"prompt names '{{{name}}}', which is not a data field"
                         f"{did_you_mean(name, self.spec.data)}")

    def _check_registered(self, kind: str, code: str, name: str, path: PathKey) -> None:
        known = self.registry.names(kind)  # type: ignore[arg-type]
        if name not in known:
            self.err(path, code, f"unregistered {kind} '{name}'{did_you_mean(name, known)}")

    def _check_event(self, path: PathKey, event: str, *, at_key: bool) -> None:
        self.used_events.add(event)
        if event.startswith(DONE_PREFIX) and event not in self.spec.events:
            self._check_done_event(path, event, at_key=at_key)
            return
        if event not in self.spec.events:
            self.err(path, "E131", f"event '{event}' is not declared in events"
                     f"{did_you_mean(event, self.spec.events)}", at_key=at_key)

    def _check_done_event(self, path: PathKey, event: str, *, at_key: bool) -> None:
        """`done.state.NAME`: NAME must be a compound state that can finish: a final
        child (a parallel state: a final child in every region)."""
        name = event[len(DONE_PREFIX):]
        node = self.nodes.get(name)
        if node is None or not node.spec.states:
            compound = [n for n, c in self.nodes.items() if c.spec.states]
            self.err(path, "E132", f"done event '{event}' names no compound state"
                     f"{did_you_mean(name, compound)}", at_key=at_key)
            return
        regions = list(node.spec.states.values()) if node.spec.parallel else [node.spec]
        if not all(any(child.final for child in r.states.values()) for r in regions):
            what = "every region of " if node.spec.parallel else ""
            self.err(path, "E132", f"done event '{event}' can never happen: {what}state "
                     f"'{name}' needs a child with final: true", at_key=at_key)

    def _alt_path(self, node: StateNode, event: str, index: int) -> PathKey:
        listed = (*node.path, "on", event, index)
        return listed if listed in self.smap.values else (*node.path, "on", event)

    def _check_alternatives(self, node: StateNode, event: str,
                            alternatives: tuple[TransitionSpec, ...]) -> None:
        unguarded_at: int | None = None
        for i, alt in enumerate(alternatives):
            base = self._alt_path(node, event, i)
            if alt.target is not None and alt.target not in self.nodes:
                where = (*base, "target") if (*base, "target") in self.smap.values else base
                self.err(where, "E130", f"unknown target state '{alt.target}'"
                         f"{did_you_mean(alt.target, self.nodes)}")
            for j, text in enumerate(alt.guard):
                gpath = (*base, "guard", j) if (*base, "guard", j) in self.smap.values \
                    else (*base, "guard")
                if not isinstance(text, str):   # {name, args, not}: a guard with arguments
                    self._check_guard_call(text.name, text.args, gpath)
                    continue
                words = text.split()
                if not (len(words) == 1 or (len(words) == 2 and words[0] == "not")) or \
                        not words[-1].isidentifier() or words == ["not"]:
                    self.err(gpath, "E143", f"bad guard '{text}': write a guard name or "
                             "'not name'; use a list for 'all of'")
                    continue
                self._check_registered("guard", "E140", words[-1], gpath)
                if words[-1] in self.registry.names("guard"):
                    self._check_guard_call(words[-1], {}, gpath)
            for j, name in enumerate(alt.do):
                self._check_registered("effect", "E141", name, (*base, "do", j))
            self._check_sets(event, alt, base)
            if unguarded_at is not None:
                first = self.smap.value(self._alt_path(node, event, unguarded_at))
                self.err(base, "E172", f"ambiguous transitions on '{event}' in state "
                         f"'{node.name}': the unguarded one at line {first.line} always wins, "
                         "so this one can never fire")
            elif not alt.guard:
                unguarded_at = i

    # typed data (engine/chart/data.py) -------------------------------------------
    def _check_data(self) -> None:
        for name, spec in self.spec.data.items():
            path = ("data", name)
            if not NAME_RE.match(name) or name.startswith("_"):
                self.err(path, "E111", f"bad data field name '{name}': must be a letter "
                         "followed by letters, digits or _", at_key=True)
            if spec.default is not None and not data_fits(spec.type, spec.default):
                where = (*path, "default") if (*path, "default") in self.smap.values else path
                article = "an" if spec.type == "int" else "a"
                self.err(where, "E184", f"default {_short(spec.default)} of data field "
                         f"'{name}' is not {article} {spec.type}")

    def _check_sets(self, event: str, alt: TransitionSpec, base: PathKey) -> None:
        fields = self.spec.data
        payload = self.spec.events[event].payload if event in self.spec.events else {}
        for name, how in alt.set.items():
            loc = (*base, "set", name)
            if name not in fields:
                self.err(loc, "E181", f"unknown data field '{name}' in set"
                         f"{did_you_mean(name, fields)}", at_key=True)
                continue
            kind = fields[name].type
            if isinstance(how, SetFrom):
                floc = (*loc, "from") if (*loc, "from") in self.smap.values else loc
                if how.from_ not in payload:
                    self.err(floc, "E182", f"set {name} from '{how.from_}': event '{event}' has "
                             f"no payload field '{how.from_}'{did_you_mean(how.from_, payload)}")
                elif not payload_fits(kind, payload[how.from_]):
                    self.err(floc, "E182", f"set {name} from '{how.from_}': payload field is "
                             f"{payload[how.from_]}, data field '{name}' is {kind}")
            elif isinstance(how, SetAdd):
                if kind not in ("int", "float") or (kind == "int" and isinstance(how.add, float)):
                    self.err(loc, "E182", f"set {name} add {how.add}: data field '{name}' is "
                             f"{kind}; add needs an int field (or a float one)")
            elif not data_fits(kind, how):
                self.err(loc, "E182", f"set {name} to {_short(how)}: data field '{name}' is "
                         f"{kind}")

    def _check_guard_call(self, name: str, args: dict[str, Any], path: PathKey) -> None:
        """E183: a guard's arguments against the parameters it declares."""
        if name not in self.registry.names("guard"):
            self._check_registered("guard", "E140", name, path)
            return
        params = self.registry.get("guard", name).params
        loc = (*path, "args") if (*path, "args") in self.smap.values else path
        for arg in args:
            if arg not in params:
                what = f"takes {', '.join(params)}" if params else "takes no arguments"
                self.err((*loc, arg) if (*loc, arg) in self.smap.values else loc, "E183",
                         f"guard '{name}' {what}, not '{arg}'{did_you_mean(arg, params)}")
        field_arg = args.get("field")
        field_type = self.spec.data[field_arg].type if isinstance(field_arg, str) and \
            field_arg in self.spec.data else None
        for param, kind in params.items():
            if param not in args:
                self.err(loc, "E183", f"guard '{name}' needs argument '{param}' ({kind})")
                continue
            problem = check_argument(kind, args[param], self.spec.data, field_type)
            if problem:
                where = (*loc, param) if (*loc, param) in self.smap.values else loc
                hint = did_you_mean(args[param], self.spec.data) \
                    if problem == "unknown data field" and isinstance(args[param], str) else ""
                self.err(where, "E183", f"bad argument {param}={_short(args[param])} for guard "
                         f"'{name}': {problem}{hint}")

    def _check_contract(self, node: StateNode) -> None:
        channels = self.spec.contracts
        for channel, value in node.spec.contract.items():
            cpath = (*node.path, "contract", channel)
            if channel not in channels:
                self.err(cpath, "E152", f"unknown contract channel '{channel}'"
                         f"{did_you_mean(channel, channels)}", at_key=True)
            elif value not in channels[channel]:
                self.err(cpath, "E151", f"contract value '{value}' is not allowed for "
                         f"'{channel}': use one of {', '.join(channels[channel])}"
                         f"{did_you_mean(value, channels[channel])}")
        if node.spec.states:
            return  # only leaf states are ever current; parents may set part of it
        effective = self.effective_contract(node.name)
        elsewhere = self._set_by_other_regions(node.name)
        missing = [c for c in channels if c not in effective and c not in elsewhere]
        if missing:
            self.err(node.path, "E150", f"state '{node.name}' has no contract value for "
                     f"{', '.join(repr(m) for m in missing)} (not set on it or a parent)",
                     at_key=True)

    def _region_settings(self, region: str) -> dict[str, PathKey]:
        """Contract channels and turn-policy keys set anywhere in a region (first place)."""
        found: dict[str, PathKey] = {}
        todo = [region]
        while todo:
            node = self.nodes.get(todo.pop(0))
            if node is None:
                continue
            for channel in node.spec.contract:
                found.setdefault(f"contract channel '{channel}'",
                                 (*node.path, "contract", channel))
            turn = getattr(node.spec, "turn", None)
            if turn is not None:
                for key, value in turn.model_dump(exclude_none=True).items():
                    subkeys = value if isinstance(value, dict) else {None: value}
                    for sub in subkeys:
                        name = key if sub is None else f"{key}.{sub}"
                        loc = (*node.path, "turn", key) if sub is None else \
                            (*node.path, "turn", key, str(sub))
                        found.setdefault(f"turn-policy key '{name}'", loc)
            todo.extend(node.spec.states)
        return found

    def _set_by_other_regions(self, name: str) -> set[str]:
        """Channels some sibling region of a parallel ancestor sets (that region owns them)."""
        out: set[str] = set()
        child = name
        for ancestor in self._ancestors(name):
            if self.nodes[ancestor].spec.parallel:
                for region in self.nodes[ancestor].spec.states:
                    if region != child:
                        out.update(k.split("'")[1] for k in self._region_settings(region)
                                   if k.startswith("contract channel"))
            child = ancestor
        return out

    def _check_regions(self) -> None:
        """E155: two regions of one parallel state may not set the same channel or key:
        both would run at once, and only one value can hold."""
        for node in self.nodes.values():
            if not node.spec.parallel:
                continue
            owner: dict[str, tuple[str, PathKey]] = {}
            for region in node.spec.states:
                for what, loc in self._region_settings(region).items():
                    if what not in owner:
                        owner[what] = (region, loc)
                        continue
                    first_region, first_loc = owner[what]
                    pos = self.smap.key(first_loc)
                    self.err(loc, "E155", f"{what} is set in two regions of parallel state "
                             f"'{node.name}': '{region}' here and '{first_region}' at line "
                             f"{pos.line}, column {pos.col}; only one region may set it",
                             at_key=True)

    def effective_contract(self, name: str) -> dict[str, str]:
        chain: list[StateNode] = []
        current: str | None = name
        while current is not None:
            chain.append(self.nodes[current])
            current = self.nodes[current].parent
        merged: dict[str, str] = {}
        for n in reversed(chain):
            merged.update(n.spec.contract)
        return merged

    def _check_unused_events(self) -> None:
        for name, event in self.spec.events.items():
            if name not in self.used_events and event.unhandled != "ignore":
                self.warn(("events", name), "W200", f"event '{name}' is declared but no state "
                          "handles it (set unhandled: ignore if that is on purpose)", at_key=True)

    # graph -------------------------------------------------------------------
    def _ancestors(self, name: str) -> list[str]:
        out: list[str] = []
        current = self.nodes[name].parent
        while current is not None:
            out.append(current)
            current = self.nodes[current].parent
        return out

    def _initial_leaf_chain(self, name: str) -> list[str]:
        """What entering `name` enters below it: the initial children down to a leaf,
        every region of a parallel state."""
        chain = [name]
        spec = self.nodes[name].spec
        if spec.parallel:
            for region in spec.states:
                chain.extend(self._initial_leaf_chain(region))
        elif spec.states and spec.initial in spec.states:
            chain.extend(self._initial_leaf_chain(spec.initial))
        return chain

    def _entry_set(self, target: str) -> set[str]:
        """Every state active after entering `target`: its ancestors, its default
        descendants, and the default descendants of the other regions of each
        parallel ancestor (they are entered with it)."""
        out = set(self._initial_leaf_chain(target))
        child = target
        for ancestor in self._ancestors(target):
            out.add(ancestor)
            if self.nodes[ancestor].spec.parallel:
                for region in self.nodes[ancestor].spec.states:
                    if region != child:
                        out.update(self._initial_leaf_chain(region))
            child = ancestor
        return out

    def _check_graph(self) -> None:
        reached: set[str] = set()
        entered: set[str] = set()
        todo = [self.spec.initial]
        while todo:
            target = todo.pop()
            if target in entered:
                continue
            entered.add(target)
            active = self._entry_set(target)
            reached.update(active)
            for owner in active:
                for alternatives in self.nodes[owner].spec.on.values():
                    todo.extend(a.target for a in alternatives if a.target is not None)
        for name, node in self.nodes.items():
            if name not in reached:
                self.err(node.path, "E170", f"state '{name}' is unreachable from the initial "
                         f"state '{self.spec.initial}'", at_key=True)
        for name, node in self.nodes.items():
            if node.spec.states or node.spec.final:
                continue
            owners = (name, *self._ancestors(name))
            if not any(a.target is not None for o in owners
                       for alts in self.nodes[o].spec.on.values() for a in alts):
                self.err(node.path, "E171", f"state '{name}' is a dead end: no transition leaves "
                         "it (add one, or mark it final: true)", at_key=True)
            else:
                self._check_region_dead_end(name, node, owners)
        self._check_final_reachability()
        for name, node in self.nodes.items():
            for delay, event in node.spec.after.items():
                if not any(event in self.nodes[o].spec.on for o in (name, *self._ancestors(name))):
                    self.warn((*node.path, "after", delay), "W201", f"timer event '{event}' of "
                              f"state '{name}' is not handled there; it will be rejected")

    def _check_region_dead_end(self, name: str, node: StateNode, owners: tuple[str, ...]
                               ) -> None:
        """E175: a leaf inside a region of a parallel state whose only ways out leave the
        whole parallel state (a hang-up): its region is stuck there for the rest of the
        call, a dialogue step nothing moves on from."""
        regional = []
        for owner in owners:
            parent = self.nodes[owner].parent
            regional.append(owner)
            if parent is not None and self.nodes[parent].spec.parallel:
                region, parallel = owner, parent
                break
        else:
            return
        if not any(a.target is not None for o in regional
                   for alts in self.nodes[o].spec.on.values() for a in alts):
            where = (f"a region of '{parallel}'" if region == name
                     else f"in region '{region}' of '{parallel}'")
            self.err(node.path, "E175", f"state '{name}' ({where}) is a dead end: only leaving "
                     f"'{parallel}' ends it (add a transition inside the region, or mark it "
                     "final: true)", at_key=True)

    def _check_final_reachability(self) -> None:
        """Once a chart has a top-level final state, every top-level state needs a path to a
        final state (python-statemachine refuses the chart otherwise)."""
        tops = [n for n in self.nodes.values() if n.parent is None]
        finals = [n.name for n in tops if n.spec.final]
        if not finals:
            return
        for node in tops:
            if node.spec.final or self._reaches_final(node.name):
                continue
            names = ", ".join(f"'{f}'" for f in finals)
            self.err(node.path, "E174", f"state '{node.name}' can never reach a final state "
                     f"({names}): once a chart has a final state, every top-level state needs "
                     "a path to one", at_key=True)

    def _reaches_final(self, start: str) -> bool:
        """Walk what python-statemachine walks: targets, initial children and parents."""
        seen: set[str] = set()
        todo = [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            spec = self.nodes[name].spec
            if spec.final:
                return True
            todo.extend(a.target for alts in spec.on.values() for a in alts
                        if a.target is not None)
            if spec.initial is not None:
                todo.append(spec.initial)
            if spec.parallel:
                todo.extend(spec.states)
            parent = self.nodes[name].parent
            if parent is not None:
                todo.append(parent)
        return False
