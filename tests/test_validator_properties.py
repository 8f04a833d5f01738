"""Property tests: no chart, however mangled, crashes the loader or the validator.

Each example starts from a valid chart, applies a few structure-aware
mutations (rename a target, drop a key, swap two values, replace a value with
a random scalar, list, mapping or deep nesting, rename a key) and compiles the
result. The only acceptable outcomes are a `CompiledChart` or `ChartErrors`
whose every problem has a position, a code and a message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartError, ChartErrors
from engine.chart.source import load_yaml

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {
    "minimal": (ROOT / "tests" / "golden" / "valid" / "minimal.yaml").read_text(encoding="utf-8"),
    "shipped": (ROOT / "charts" / "voice_turn.yaml").read_text(encoding="utf-8"),
}
CODE_RE = re.compile(r"^[EW]\d{3}$")
NAMES = ["IDLE", "LISTENING", "THINKING", "SPEAKING", "INTERRUPT", "CONNECTED", "LISTENNING",
         "send", "model", "on", "yes", "no", "true", "null", "has_text", "not has_text",
         "600ms", "1.5s", "barge_in", "filler_due", "microphone", "open", "", " ", "a.b",
         "ÉTAT", "状态", "🎤", "_hidden", "x" * 300]
KEYWORDS = ["chart", "version", "initial", "contracts", "events", "states", "description",
            "payload", "unhandled", "contract", "enter", "exit", "on", "invoke", "after",
            "final", "target", "guard", "do", "listeners"]

PROFILE = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(NAMES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(NAMES), st.integers()),
                        inner, max_size=4),
    ),
    max_leaves=12,
)


def deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"states": value}
    return value


PathT = tuple[Any, ...]


def paths(node: Any, prefix: PathT = ()) -> list[PathT]:
    """Every place in the document that holds a value (not the root)."""
    out: list[PathT] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


def get(doc: Any, path: PathT) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def put(doc: Any, path: PathT, value: Any) -> None:
    get(doc, path[:-1])[path[-1]] = value


def mutate(doc: Any, data: st.DataObject) -> Any:
    places = paths(doc)
    if not places:
        return data.draw(values)
    kind = data.draw(st.sampled_from(
        ["rename_value", "drop", "swap", "replace", "rename_key", "deep", "root", "inject"]))
    path = data.draw(st.sampled_from(places))
    parent = get(doc, path[:-1])
    if kind == "rename_value":
        strings = [p for p in places if isinstance(get(doc, p), str)]
        if strings:
            target = data.draw(st.sampled_from(strings))
            old = get(doc, target)
            new = data.draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=12),
                                      st.just(old[:-1]), st.just(old + old[-1:])))
            put(doc, target, new)
    elif kind == "drop":
        del parent[path[-1]]
    elif kind == "swap":
        other = data.draw(st.sampled_from(places))
        if other[:len(path)] != path and path[:len(other)] != other:
            a, b = get(doc, path), get(doc, other)
            put(doc, path, b)
            put(doc, other, a)
    elif kind == "replace":
        put(doc, path, data.draw(values))
    elif kind == "rename_key" and isinstance(parent, dict):
        new_key = data.draw(st.one_of(st.sampled_from(NAMES + KEYWORDS), st.text(max_size=12),
                                      st.integers(), st.none(), st.booleans()))
        parent[new_key] = parent.pop(path[-1])
    elif kind == "deep":
        put(doc, path, deep(data.draw(st.integers(10, 60)), data.draw(scalars)))
    elif kind == "root":
        return data.draw(values)
    elif kind == "inject":
        mappings = [p for p in places if isinstance(get(doc, p), dict)]
        if mappings:
            where = get(doc, data.draw(st.sampled_from(mappings)))
            key = data.draw(st.sampled_from(KEYWORDS + NAMES))
            where[key] = data.draw(st.one_of(st.just(True), st.sampled_from(NAMES), values))
    return doc


def check_problem(problem: ChartError, path: str) -> None:
    assert problem.path == path
    assert problem.line >= 1 and problem.col >= 1, problem
    assert CODE_RE.match(problem.code), problem
    assert problem.message.strip(), problem
    assert (problem.severity == "warning") == problem.code.startswith("W"), problem
    assert str(problem).startswith(f"{path}:{problem.line}:{problem.col}: {problem.code} ")


def compile_never_crashes(text: str) -> None:
    try:
        compiled = compile_text(text, "mutant.yaml")
    except ChartErrors as exc:
        assert exc.errors, "ChartErrors raised without an error"
        for problem in (*exc.errors, *exc.warnings):
            check_problem(problem, "mutant.yaml")
        return
    assert isinstance(compiled, CompiledChart)
    for problem in compiled.warnings:
        check_problem(problem, "mutant.yaml")


@PROFILE
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_structural_mutations_never_crash(seed: str, data: st.DataObject) -> None:
    doc = load_yaml(SEEDS[seed], seed).data
    for _ in range(data.draw(st.integers(1, 4))):
        doc = mutate(doc, data)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    compile_never_crashes(text)


@PROFILE
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_text_mutations_never_crash(seed: str, data: st.DataObject) -> None:
    text = SEEDS[seed]
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        insert = data.draw(st.one_of(
            st.text(max_size=6),
            st.sampled_from([":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!python/name:os.system",
                             "\t", "\n  ", "? ", "<<: *a", "%YAML 1.1\n", "---\n", "'", '"'])))
        text = text[:at] + insert + text[at + cut:]
    compile_never_crashes(text)


@st.composite
def random_charts(draw: st.DrawFn) -> dict[str, Any]:
    """Shape-valid charts with random state trees, transitions and final states."""
    names = [f"S{i}" for i in range(draw(st.integers(1, 7)))]
    events = ["e0", "e1", "e2"]
    parents: dict[str, str | None] = {}
    for i, name in enumerate(names):
        parents[name] = draw(st.sampled_from([None, *names[:i]])) if i else None
    specs: dict[str, dict[str, Any]] = {n: {"contract": {"mic": "open"}} for n in names}
    for name in names:
        spec = specs[name]
        children = [c for c in names if parents[c] == name]
        if children:
            spec["states"] = {c: specs[c] for c in children}
            spec["initial"] = draw(st.sampled_from(children))
        elif draw(st.integers(0, 3)) == 0:
            spec["final"] = True
            continue
        on: dict[str, Any] = {}
        for event in draw(st.lists(st.sampled_from(events), max_size=2, unique=True)):
            count = draw(st.integers(1, 2))
            alts = []
            for i in range(count):
                alt: dict[str, Any] = {}
                if draw(st.integers(0, 3)):
                    alt["target"] = draw(st.sampled_from(names))
                if i < count - 1 or draw(st.booleans()):
                    alt["guard"] = "has_text"
                alts.append(alt)
            on[event] = alts
        if on:
            spec["on"] = on
        if draw(st.integers(0, 4)) == 0:
            spec["after"] = {"10ms": draw(st.sampled_from(events))}
    tops = [n for n in names if parents[n] is None]
    return {"chart": "random", "version": 1, "initial": draw(st.sampled_from(tops)),
            "contracts": {"mic": ["open"]}, "events": {e: {} for e in events},
            "states": {n: specs[n] for n in tops}}


@PROFILE
@given(chart=random_charts())
def test_what_the_validator_accepts_compiles(chart: dict[str, Any]) -> None:
    """E190 is a safety net: python-statemachine never rejects a chart we accept."""
    text = yaml.safe_dump(chart, sort_keys=False)
    try:
        compile_text(text, "random.yaml")
    except ChartErrors as exc:
        assert "E190" not in {e.code for e in exc.errors}, str(exc)
