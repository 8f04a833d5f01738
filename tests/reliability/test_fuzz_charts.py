"""Fuzzing charts: structure-aware edits of charts/voice_turn.yaml and every test
chart, made in the text itself so that every problem has a known place.

- Targeted edits (a bad target, a bad delay, a key written twice, a key the
  format does not know, an undeclared event, an unregistered effect or
  activity, a value of the wrong type, a contract value not allowed) must be
  reported with their documented code at the exact line and column edited.
- Any pile of edits, YAML breakage included (unclosed brackets, tabs, stray
  anchors and tags, alias bombs, nesting past the limit, a BOM, control and
  bidi characters, unpaired surrogates, huge lines), gives a compiled chart or
  `ChartErrors` and nothing else; every problem points into the file, carries
  a code documented in docs/errors.md and a one-line message.
- Edits that keep the meaning (every state or event renamed everywhere, keys
  reordered, delays respelt, descriptions in any script, flow or block style,
  quoted scalars) compile to the same chart under the new names.

tests/test_validator_properties.py mutates the parsed document of two seeds;
this module works on the text and checks the places, the codes and the
meaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartError, ChartErrors
from engine.chart.registry import GuardInput, Registry
from engine.chart.source import Position, SourceMap, load_yaml
from engine.chart.spec import DONE_PREFIX, GuardRef
from engine.chart.validator import RESERVED_NAMES
from engine.runtime.behaviours import default_registry
from engine.runtime.context import ActivityContext, EffectContext
from tests.reliability import FUZZ_BUDGETS, fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
SEED_FILES = [ROOT / "charts" / "voice_turn.yaml",
              *sorted((ROOT / "tests" / "charts").glob("*.yaml")),
              *sorted((ROOT / "tests" / "golden" / "valid").glob("*.yaml"))]
SEEDS = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in SEED_FILES}
DOCUMENTED = frozenset(re.findall(r"^\| ([EW]\d{3}) \|", (ROOT / "docs" / "errors.md")
                                  .read_text(encoding="utf-8"), re.MULTILINE))
PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PathKey = tuple[Any, ...]


# ------------------------------------------------------- what a chart names
def states_of(states: Any, prefix: PathKey = ()) -> Iterator[tuple[str, PathKey, dict[str, Any]]]:
    """(name, path, spec) of every state in the tree, parents first."""
    if not isinstance(states, dict):
        return
    for name, spec in states.items():
        path = (*prefix, "states", name)
        if isinstance(spec, dict):
            yield name, path, spec
            yield from states_of(spec.get("states"), path)


def alternatives(spec: dict[str, Any], path: PathKey) -> Iterator[tuple[PathKey, Any]]:
    """(path, alternative) of every transition alternative of one state."""
    for event, value in (spec.get("on") or {}).items():
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            yield ((*path, "on", event, i) if isinstance(value, list)
                   else (*path, "on", event)), item


def names_used(data: dict[str, Any]) -> dict[str, set[str]]:
    """The guards, effects and activities a chart names."""
    used: dict[str, set[str]] = {"guard": set(), "effect": set(), "activity": set()}

    def listed(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]

    for _, path, spec in states_of(data.get("states")):
        used["effect"].update(listed(spec.get("enter")) + listed(spec.get("exit")))
        used["activity"].update(listed(spec.get("invoke")))
        for _, alt in alternatives(spec, path):
            if isinstance(alt, dict):
                used["effect"].update(listed(alt.get("do")))
                used["guard"].update(g.removeprefix("not ").strip()
                                     for g in listed(alt.get("guard")))
    return used


def registry_for_seeds() -> Registry:
    """The default registry plus no-op behaviours for the names test charts use
    (their own tests register real ones; here only the chart's text matters)."""
    registry = default_registry()
    for text in SEEDS.values():
        for kind, names in names_used(load_yaml(text).data).items():
            for name in sorted(names - registry.names(kind)):  # type: ignore[arg-type]
                if kind == "guard":
                    registry.guard(name)(_always)
                elif kind == "effect":
                    registry.effect(name)(_nothing)
                else:
                    registry.activity(name)(_idle)
    return registry


def _always(event: GuardInput) -> bool:
    return True


async def _nothing(ctx: EffectContext) -> None:
    return None


async def _idle(ctx: ActivityContext) -> None:
    return None


REGISTRY = registry_for_seeds()


# ------------------------------------------------------------ the checks
YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")   # what YAML counts as a new line


def check_problem(problem: ChartError, text: str, path: str) -> None:
    lines = YAML_BREAKS.split(text)
    assert problem.path == path, problem
    assert 1 <= problem.line <= len(lines) + 1, f"{problem} (the file has {len(lines)} lines)"
    width = len(lines[problem.line - 1]) if problem.line <= len(lines) else 0
    assert 1 <= problem.col <= width + 1, f"{problem} (line {problem.line} is {width} wide)"
    assert problem.code in DOCUMENTED, f"{problem.code} is not in docs/errors.md: {problem}"
    assert problem.message.strip() and "\n" not in problem.message, problem
    assert str(problem) == f"{path}:{problem.line}:{problem.col}: {problem.code} {problem.message}"


def compile_or_errors(text: str, path: str = "fuzzed.yaml") -> CompiledChart | ChartErrors:
    """Compile; only `ChartErrors` may come out, every problem inside the file."""
    try:
        chart = compile_text(text, path, REGISTRY)
    except ChartErrors as exc:
        assert exc.errors, "ChartErrors without an error"
        for problem in (*exc.errors, *exc.warnings):
            check_problem(problem, text, path)
        return exc
    for problem in chart.warnings:
        check_problem(problem, text, path)
    return chart


# ----------------------------------------------------- edits in the text
class Doc:
    """A chart's text with its parsed data and source map, for edits at known places."""

    def __init__(self, text: str) -> None:
        loaded = load_yaml(text)
        self.text, self.data, self.map = text, loaded.data, loaded.source_map

    def lines(self) -> list[str]:
        return self.text.split("\n")

    def token_at(self, pos: Position, old: str) -> bool:
        line = self.lines()[pos.line - 1]
        return line[pos.col - 1:pos.col - 1 + len(old)] == old

    def replace(self, pos: Position, old: str, new: str) -> str:
        """The text with the plain scalar `old` at `pos` replaced by `new` (quoted when needed)."""
        lines = self.lines()
        line = lines[pos.line - 1]
        written = new if PLAIN.match(new) else json.dumps(new, ensure_ascii=False)
        lines[pos.line - 1] = line[:pos.col - 1] + written + line[pos.col - 1 + len(old):]
        return "\n".join(lines)

    def insert_line(self, after: int, line: str) -> str:
        lines = self.lines()
        return "\n".join([*lines[:after], line, *lines[after:]])


def value_places(doc: Doc, smap_of: SourceMap, paths: list[PathKey]) -> list[tuple[PathKey, str]]:
    """Of `paths` holding plain strings, those whose text is written plainly at their position."""
    out = []
    for path in paths:
        value: Any = doc.data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else value[part]
        if isinstance(value, str) and PLAIN.match(value) and path in smap_of.values \
                and doc.token_at(smap_of.values[path], value):
            out.append((path, value))
    return out


def key_places(doc: Doc, paths: list[PathKey]) -> list[tuple[PathKey, str]]:
    return [(p, p[-1]) for p in paths if p in doc.map.keys
            and doc.token_at(doc.map.keys[p], str(p[-1]))]


def targets(doc: Doc) -> list[PathKey]:
    out = []
    for _, path, spec in states_of(doc.data.get("states")):
        for alt_path, alt in alternatives(spec, path):
            out.append((*alt_path, "target") if isinstance(alt, dict) else alt_path)
    return out


def lists_in(doc: Doc, key: str) -> list[PathKey]:
    out = []
    for _, path, spec in states_of(doc.data.get("states")):
        value = spec.get(key)
        if isinstance(value, list):
            out += [(*path, key, i) for i in range(len(value))]
        elif isinstance(value, str):
            out.append((*path, key))
    return out


BAD_NAMES = ["LISTENNING", "listening", "Idle_", "ÉTAT", "状态", "x" * 200, "a.b", "_hidden"]
BAD_DELAYS = ["600", "-5ms", "1e400s", "NaNms", "∞ms", "5 minutes", "ms", "0x10ms", "1_000ms",
              "600msec", "", " ", "1.5.0s", "٫5s"]
WRONG_TYPES = ["one", "[1]", "{}", "1.5", "true", "null", '"1"']


@st.composite
def targeted(draw: st.DrawFn) -> tuple[str, str, str, Position]:
    """(seed, edited text, expected code, expected position)."""
    seed = draw(st.sampled_from(sorted(SEEDS)))
    doc = Doc(SEEDS[seed])
    smap = doc.map
    state_names = {name for name, _, _ in states_of(doc.data.get("states"))}
    kind = draw(st.sampled_from(["target", "delay", "duplicate", "unknown_key", "event", "effect",
                                 "activity", "version", "contract"]))
    if kind == "target":
        places = value_places(doc, smap, targets(doc))
        assume(places)
        path, old = draw(st.sampled_from(places))
        new = draw(st.sampled_from(BAD_NAMES).filter(lambda n: n not in state_names))
        return seed, doc.replace(smap.values[path], old, new), "E130", smap.values[path]
    if kind == "delay":
        keys = [(*path, "after", delay) for _, path, spec in states_of(doc.data.get("states"))
                if isinstance(spec.get("after"), dict) for delay in spec["after"]]
        places = key_places(doc, keys)
        assume(places)
        path, old = draw(st.sampled_from(places))
        new = draw(st.sampled_from(BAD_DELAYS))
        return seed, doc.replace(smap.keys[path], old, new), "E161", smap.keys[path]
    if kind == "duplicate":
        # a block-style `key: value` written on one line: write the line twice
        one_line = [at for key_path, at in smap.keys.items()
                    if key_path in smap.values and smap.values[key_path].line == at.line
                    and doc.lines()[at.line - 1][:at.col - 1].strip() == ""
                    and _balanced(doc.lines()[at.line - 1])]
        assume(one_line)
        at = draw(st.sampled_from(one_line))
        return (seed, doc.insert_line(at.line, doc.lines()[at.line - 1]), "E101",
                Position(at.line + 1, at.col))
    if kind == "unknown_key":
        blocks = []
        for _, path, spec in states_of(doc.data.get("states")):
            for key in spec:
                first = smap.keys.get((*path, key))
                if first is not None and first.line > smap.keys[path].line \
                        and doc.lines()[first.line - 1][:first.col - 1].strip() == "":
                    blocks.append(first)
                break
        assume(blocks)
        first = draw(st.sampled_from(blocks))
        key = draw(st.sampled_from(["entry", "exits", "transitions", "on_enter", "timeout"]))
        return (seed, doc.insert_line(first.line - 1, " " * (first.col - 1) + f"{key}: x"),
                "E102", first)
    if kind == "event":
        keys = [(*path, "on", event) for _, path, spec in states_of(doc.data.get("states"))
                for event in (spec.get("on") or {})]
        places = key_places(doc, keys)
        assume(places)
        path, old = draw(st.sampled_from(places))
        new = old + draw(st.sampled_from(["_x", "s", "2"]))
        assume(new not in (doc.data.get("events") or {}))
        if old.startswith(DONE_PREFIX):
            # done.state.NAME is posted by the engine, never declared: a misspelt NAME is
            # E132 (names no compound state, docs/errors.md), not E131 (undeclared event)
            assume(new.removeprefix(DONE_PREFIX) not in state_names)
            return seed, doc.replace(smap.keys[path], old, new), "E132", smap.keys[path]
        return seed, doc.replace(smap.keys[path], old, new), "E131", smap.keys[path]
    if kind in ("effect", "activity"):
        paths = (lists_in(doc, "enter") + lists_in(doc, "exit")) if kind == "effect" \
            else lists_in(doc, "invoke")
        places = value_places(doc, smap, paths)
        assume(places)
        path, old = draw(st.sampled_from(places))
        code = "E141" if kind == "effect" else "E142"
        return seed, doc.replace(smap.values[path], old, old + "_typo"), code, smap.values[path]
    if kind == "version":
        where = smap.values[("version",)]
        written = str(doc.data["version"])
        assume(doc.token_at(where, written))
        lines = doc.lines()
        lines[where.line - 1] = (lines[where.line - 1][:where.col - 1]
                                 + draw(st.sampled_from(WRONG_TYPES))
                                 + lines[where.line - 1][where.col - 1 + len(written):])
        return seed, "\n".join(lines), "E104", where
    paths = [(*path, "contract", channel) for _, path, spec in states_of(doc.data.get("states"))
             if isinstance(spec.get("contract"), dict) for channel in spec["contract"]]
    places = value_places(doc, smap, paths)
    assume(places)
    path, old = draw(st.sampled_from(places))
    return seed, doc.replace(smap.values[path], old, old + "ish"), "E151", smap.values[path]


def _balanced(line: str) -> bool:
    code = line.split(" #", 1)[0]
    return code.count("{") == code.count("}") and code.count("[") == code.count("]")


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_targeted_edits_are_reported_with_their_code_where_they_were_made(budget: str) -> None:
    @fuzz_settings(budget, short=120, long=2000)
    @given(case=targeted())
    def run(case: tuple[str, str, str, Position]) -> None:
        seed, text, code, pos = case
        outcome = compile_or_errors(text, seed)
        assert isinstance(outcome, ChartErrors), f"{code} edit at {pos} compiled:\n{text}"
        found = {(e.code, e.line, e.col) for e in outcome.errors}
        assert (code, pos.line, pos.col) in found, \
            f"expected {code} at {pos.line}:{pos.col}, got:\n{outcome}"

    run()


# ------------------------------------------------------------ any edits
BREAKAGE = ["{", "}", "[", "]", ":", ": :", "- ", "\t", "&a ", "*a", "*nowhere", "? ", "|", ">",
            '"', "'", "!!python/object/apply:os.system ['true']", "!!binary x", "%TAG ! tag:x,",
            "---\n", "...\n", "<<: *a", "\ufeff", "\x00", "\x07", "\u202e", "\u200b", "😀",
            "\ud800", "状态", "\r", "\r\n", "#", "@", "`", "%", "[" * 150 + "]" * 150,
            "{a: " * 120, "x" * 100_000]
ALIAS_BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                       [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"
                        for i in range(1, 9)]) + "\n"


@st.composite
def edited(draw: st.DrawFn) -> str:
    text = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["insert", "insert", "drop_line", "copy_line", "swap_lines",
                                     "indent", "targeted", "bomb"]))
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "insert":
            where = draw(st.integers(0, len(text)))
            text = text[:where] + draw(st.one_of(st.sampled_from(BREAKAGE),
                                                 st.text(max_size=8))) + text[where:]
        elif kind == "drop_line":
            text = "\n".join(lines[:at] + lines[at + 1:])
        elif kind == "copy_line":
            text = "\n".join(lines[:at + 1] + lines[at:])
        elif kind == "swap_lines":
            other = draw(st.integers(0, max(0, len(lines) - 1)))
            lines[at], lines[other] = lines[other], lines[at]
            text = "\n".join(lines)
        elif kind == "indent":
            lines[at] = draw(st.sampled_from([" ", "  ", "\t", ""])) + lines[at].lstrip(
                " " if draw(st.booleans()) else "")
            text = "\n".join(lines)
        elif kind == "targeted":
            text = draw(targeted())[1]
        else:
            text = ALIAS_BOMB + text
    return text


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_any_edit_gives_a_chart_or_errors_that_point_into_the_file(budget: str) -> None:
    @fuzz_settings(budget, short=150, long=2000)
    @given(text=edited())
    def run(text: str) -> None:
        compile_or_errors(text)

    run()


def test_the_limits_of_the_loader_are_reported_not_crashed_into() -> None:
    """The edits above that must be refused, one by one: each is one E100 in the file."""
    base = SEEDS["charts/voice_turn.yaml"]
    for text in [ALIAS_BOMB + base, base + "\nx: " + "[" * 150 + "]" * 150,
                 base.replace("chart:", "\ud800chart:"), base.replace("version: 1", "version: *a"),
                 "\t" + base, base + "\n" + "{a: " * 120]:
        outcome = compile_or_errors(text)
        assert isinstance(outcome, ChartErrors) and "E100" in {e.code for e in outcome.errors}, \
            outcome


# ----------------------------------------------- edits that keep the meaning
def signature(chart: CompiledChart, states: dict[str, str], events: dict[str, str]
              ) -> tuple[Any, ...]:
    """What a chart does, with its state and event names mapped back to the originals."""
    def s(name: str | None) -> str | None:
        return None if name is None else states.get(name, name)

    def e(name: str) -> str:
        if name.startswith(DONE_PREFIX):   # done.state.NAME follows its state's name
            return DONE_PREFIX + str(s(name.removeprefix(DONE_PREFIX)))
        return events.get(name, name)

    def guard(g: GuardRef) -> str:   # guard arguments are keywords: their order is no meaning
        return repr((g.name, g.negated, sorted(g.args, key=lambda kv: kv[0])))

    # an internal transition has no target: it sorts first, as "" (no state is named "")
    rows = sorted((s(r.source), e(r.event), s(r.target) or "", [guard(g) for g in r.guards],
                   r.do, r.order, repr(sorted(r.sets, key=lambda kv: kv[0])))
                  for r in chart.transitions)
    infos = sorted((s(i.name), s(i.parent), s(i.initial), i.final,
                    tuple(sorted(i.contract.items())), i.enter, i.exit, i.invoke,
                    tuple(sorted((round(t.delay_ms, 6), e(t.event)) for t in i.after)),
                    i.parallel, i.history)
                   for i in chart.states.values())
    return (chart.name, chart.version, s(chart.initial), tuple(rows), tuple(infos),
            tuple(sorted(e(name) for name in chart.events)))


def rename(data: Any, states: dict[str, str], events: dict[str, str]) -> Any:
    """The chart with every state and event renamed wherever a name is used."""
    out = json.loads(json.dumps(data))
    if isinstance(out.get("initial"), str):
        out["initial"] = states.get(out["initial"], out["initial"])
    out["events"] = {events.get(k, k): v for k, v in (out.get("events") or {}).items()}

    def fix_states(tree: dict[str, Any]) -> dict[str, Any]:
        renamed = {}
        for name, spec in tree.items():
            spec = dict(spec)
            if isinstance(spec.get("initial"), str):
                spec["initial"] = states.get(spec["initial"], spec["initial"])
            if isinstance(spec.get("states"), dict):
                spec["states"] = fix_states(spec["states"])
            if isinstance(spec.get("after"), dict):
                spec["after"] = {k: events.get(v, v) for k, v in spec["after"].items()}
            if isinstance(spec.get("on"), dict):
                spec["on"] = {fix_event(ev): fix_alt(alt) for ev, alt in spec["on"].items()}
            renamed[states.get(name, name)] = spec
        return renamed

    def fix_event(event: str) -> str:
        if event.startswith(DONE_PREFIX):   # done.state.NAME names a state
            name = event.removeprefix(DONE_PREFIX)
            return DONE_PREFIX + states.get(name, name)
        return events.get(event, event)

    def fix_alt(alt: Any) -> Any:
        if isinstance(alt, list):
            return [fix_alt(a) for a in alt]
        if isinstance(alt, str):
            return states.get(alt, alt)
        if isinstance(alt, dict) and isinstance(alt.get("target"), str):
            return {**alt, "target": states.get(alt["target"], alt["target"])}
        return alt

    out["states"] = fix_states(out["states"])
    return out


def shuffled(value: Any, draw: st.DrawFn) -> Any:
    """Mapping keys in another order (lists keep theirs: alternatives are ordered)."""
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {k: shuffled(value[k], draw) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, draw) for v in value]
    return value


def respelt(value: Any, draw: st.DrawFn, key: str | None = None) -> Any:
    """Delays written another way (600ms, 0.6s, 600 ms); descriptions in any script."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if key == "after":
                ms = float(k.strip().removesuffix("ms").removesuffix("s")) * \
                    (1 if k.strip().endswith("ms") else 1000)
                k = draw(st.sampled_from([f"{ms:g}ms", f"{ms / 1000:g}s", f"{ms:g} ms"]))
            out[k] = respelt(v, draw, k)
        if "description" in out or (draw(st.booleans()) and "contract" in out):
            out["description"] = draw(st.text(st.characters(exclude_categories=["Cs", "Cc"]),
                                              max_size=40))
        return out
    if isinstance(value, list):
        return [respelt(v, draw) for v in value]
    return value


suffixes = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def same_meaning(draw: st.DrawFn) -> tuple[str, str, dict[str, str], dict[str, str]]:
    seed = draw(st.sampled_from(sorted(SEEDS)))
    data = load_yaml(SEEDS[seed]).data
    state_names = [name for name, _, _ in states_of(data["states"])]
    event_names = list(data.get("events") or {})
    states = {n: f"S_{n}_{draw(suffixes)}" for n in state_names if draw(st.booleans())}
    events = {n: f"ev_{n}_{draw(suffixes)}" for n in event_names if draw(st.booleans())}
    assume(not (set(states.values()) | set(events.values())) & RESERVED_NAMES)
    new = respelt(shuffled(rename(data, states, events), draw), draw)
    style: dict[str, Any] = draw(st.sampled_from([
        {"default_flow_style": False}, {"default_flow_style": True},
        {"default_flow_style": None}, {"default_style": '"'}]))
    text = yaml.safe_dump(new, sort_keys=False, allow_unicode=True, width=10_000, **style)
    return seed, text, states, events


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_edits_that_keep_the_meaning_compile_to_the_same_chart(budget: str) -> None:
    originals = {seed: signature(compile_text(text, seed, REGISTRY), {}, {})
                 for seed, text in SEEDS.items()}

    @fuzz_settings(budget, short=60, long=800)
    @given(case=same_meaning())
    def run(case: tuple[str, str, dict[str, str], dict[str, str]]) -> None:
        seed, text, states, events = case
        outcome = compile_or_errors(text)
        assert isinstance(outcome, CompiledChart), f"{outcome}\n{text}"
        back_states = {v: k for k, v in states.items()}
        back_events = {v: k for k, v in events.items()}
        assert signature(outcome, back_states, back_events) == originals[seed]

    run()
