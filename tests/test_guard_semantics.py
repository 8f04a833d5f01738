"""One guard semantics (issue 15 §2): for the same configuration, event, payload and
data, the kernel and `turnchart paths` pick the same row and see the same guards
fail, guards with arguments and `not:` included (both evaluate each guard through
engine/chart/guards.py; this checks the rest of the walk — rows in order, guards in
order, the first failing guard stops its row — agrees with python-statemachine)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine.exceptions import TransitionNotAllowed

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart, StepRecord, TransitionRow
from engine.chart.guards import RowGuard
from engine.chart.kernel import Kernel
from engine.chart.registry import GuardInput
from engine.chart.spec import DONE_PREFIX, GuardRef, parse_payload_type
from engine.runtime.behaviours import default_registry
from engine.tools.paths import PathGenerator

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ["charts/voice_turn.yaml", "tests/charts/guard_args.yaml",
          "tests/charts/flow_parallel.yaml", "tests/charts/nested_example.yaml",
          "tests/charts/render_edge_cases.yaml"]

_VALUES: dict[type, st.SearchStrategy[Any]] = {
    str: st.sampled_from(["", "   ", "hi", "Ada"]), int: st.integers(-1, 4),
    float: st.sampled_from([0.0, 1.5, 3.0]), bool: st.booleans(),
    list: st.just([]), dict: st.just({})}
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "str": _VALUES[str], "int": _VALUES[int], "float": _VALUES[float], "bool": _VALUES[bool]}


def configurations(chart: CompiledChart) -> list[tuple[str, ...]]:
    """Every configuration a session of the chart can be in (each region's leaf)."""
    def of(name: str) -> list[frozenset[str]]:
        info = chart.states[name]
        if not info.children:
            return [frozenset({name})]
        if info.parallel:
            return [frozenset({name}).union(*combo)
                    for combo in itertools.product(*(of(c) for c in info.children))]
        return [frozenset({name}) | sub for child in info.children for sub in of(child)]

    tops = [n for n, s in chart.states.items() if s.parent is None]
    return [chart.ordered(c) for top in tops for c in of(top)]


def cases(chart: CompiledChart) -> list[tuple[tuple[str, ...], str, list[TransitionRow]]]:
    """(configuration, event, its rows in the order paths tries them) wherever one
    leaf's rows are all the rows for the event (with parallel regions: an event
    only one region, or a shared parent, handles; paths then predicts one row)."""
    out = []
    for configuration in configurations(chart):
        for event in chart.events:
            if event.startswith(DONE_PREFIX):
                continue
            per_leaf = [[r for r in chart.rows_from(leaf) if r.event == event]
                        for leaf in chart.leaves(configuration)]
            rows = list(dict.fromkeys(r for rs in per_leaf for r in rs))
            if rows and any(rs == rows for rs in per_leaf):
                out.append((configuration, event, rows))
    return out


def kernel_says(chart: CompiledChart, configuration: tuple[str, ...], event: str,
                payload: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[Any, ...]:
    step = StepRecord(GuardInput(event, payload, data))
    try:
        Kernel(chart).fire(configuration, event, step)
    except TransitionNotAllowed:
        return ("rejected", tuple(step.failed_guards))
    except Exception as exc:
        return ("error", f"guard_error:{type(exc).__name__}")
    return ("fired", tuple(step.fired_all or [step.fired]))


def paths_says(generator: PathGenerator, rows: list[TransitionRow], event: str,
               payload: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[Any, ...]:
    evaluations = generator.guards.evaluate(rows, event, payload, data, ())
    assert len(evaluations) == 1   # nothing forced: exactly the natural outcome
    ev = evaluations[0]
    if ev.error is not None:
        return ("error", ev.error)
    if ev.fired is None:
        by_index = {r.index: r for r in rows}
        return ("rejected", tuple(str(by_index[o.row].guards[o.position])
                                  for o, _ in ev.checks if not o.held))
    return ("fired", (ev.fired.index,))


def inputs(chart: CompiledChart, event: str) -> st.SearchStrategy[tuple[dict[str, Any],
                                                                         dict[str, Any]]]:
    payload: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, type_text in chart.events[event].payload.items():
        kind, is_optional = parse_payload_type(type_text)
        (optional if is_optional else payload)[name] = _VALUES[kind]
    data = st.fixed_dictionaries({name: _FIELDS[f.type] for name, f in chart.data.items()})
    return st.tuples(st.fixed_dictionaries(payload, optional=optional), data)


@pytest.mark.parametrize("chart_path", CHARTS)
def test_kernel_and_paths_agree_on_rows_and_guard_outcomes(chart_path: str) -> None:
    registry = default_registry()
    chart = load_chart(ROOT / chart_path, registry)
    generator = PathGenerator(chart, registry)
    all_cases = cases(chart)
    assert all_cases
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.data())
    def agree(draw: st.DataObject) -> None:
        configuration, event, rows = draw.draw(st.sampled_from(all_cases))
        payload, data = draw.draw(inputs(chart, event))
        kernel = kernel_says(chart, configuration, event, payload, data)
        assert paths_says(generator, rows, event, payload, data) == kernel, \
            (configuration, event, payload, data)
        seen.add(kernel[0])

    agree()
    assert "fired" in seen


def test_guard_args_chart_takes_each_guard_both_ways() -> None:
    """The args/`not:` chart is not trivially agreeing: each of its rows fires and
    each of its negated guards-with-arguments fails for some input."""
    registry = default_registry()
    chart = load_chart(ROOT / "tests/charts/guard_args.yaml", registry)
    asking = chart.configuration_of("ASKING")
    base = {"tries": 0, "size": 0, "name": "", "vip": False}

    def offer(offered: int, said: str, **data: Any) -> tuple[Any, ...]:
        return kernel_says(chart, asking, "offer", {"size": offered, "text": said},
                           {**base, **data})

    first, second, third = (r.index for r in chart.rows_from("ASKING") if r.event == "offer")
    assert offer(5, "", vip=True) == ("fired", (first,))
    assert offer(2, "yes", vip=True, tries=2) == ("fired", (second,))
    assert offer(5, "", tries=3) == ("fired", (third,))
    assert offer(5, "", tries=1) == ("rejected", (   # data size 0 < 3: has_text says no
        "field_equals(field=vip, value=True)", "has_text",
        "not field_equals(field=tries, value=1)"))
    assert offer(1, "yes", tries=1, size=5) == (
        "rejected", ("field_equals(field=vip, value=True)", "field_below(field=size, value=3)",
                     "not field_equals(field=tries, value=1)"))
    idle = chart.configuration_of("IDLE")
    call = chart.rows_from("IDLE")
    assert kernel_says(chart, idle, "call", {"text": "hi"}, {**base, "name": "Ada"}) == \
        ("fired", (call[2].index,))
    assert kernel_says(chart, idle, "call", {"text": "hi"}, base) == ("fired", (call[0].index,))


def test_row_guard_applies_arguments_then_not() -> None:
    seen: list[Mapping[str, Any]] = []

    def at_least(inp: GuardInput) -> bool:
        seen.append(inp.args)
        return bool(inp.context["n"] >= inp.args["value"])

    ref = GuardRef(name="at_least", negated=True, args=(("value", 2),))
    guard = RowGuard.bind(ref, at_least)
    inp = GuardInput("e", {}, {"n": 3}, {"value": 99})
    assert guard.answer(inp) is True and guard.check(inp) is False
    assert seen == [{"value": 2}, {"value": 2}]   # the row's arguments, not the input's
    assert guard.label == "not at_least(value=2)"
    assert RowGuard.bind(GuardRef(name="at_least"), at_least).holds(False) is False

