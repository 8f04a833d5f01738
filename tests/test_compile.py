"""Compile round trip: YAML → transition table → python-statemachine class.

The table must say exactly what the YAML says, and the kernel class must do
exactly what the table says: the row that fires, the guards that refuse, the
configuration after each event. The content hash must ignore formatting and
follow behaviour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from statemachine import StateChart
from statemachine.exceptions import TransitionNotAllowed

from engine.chart.chart import compile_text, load_chart
from engine.chart.compiler import CompiledChart, StepRecord
from engine.chart.registry import GuardInput
from engine.chart.source import load_yaml

ROOT = Path(__file__).resolve().parents[1]
FLAT = ROOT / "tests" / "charts" / "flat_example.yaml"
NESTED = ROOT / "tests" / "charts" / "nested_example.yaml"
SHIPPED = ROOT / "charts" / "voice_turn.yaml"

Row = tuple[str, str, str | None, tuple[str, ...], tuple[str, ...], int]


# --------------------------------------------------------------------------- helpers


def table(chart: CompiledChart) -> list[Row]:
    return [(r.source, r.event, r.target, tuple(str(g) for g in r.guards), r.do, r.order)
            for r in chart.transitions]


def table_from_yaml(text: str) -> list[Row]:
    """An independent reading of `on:` blocks, straight from the YAML text.

    BaseLoader keeps every scalar a string, so `on` stays `on` (PyYAML's safe
    loader would make it True) without going through the engine's own loader.
    """
    def one_or_many(value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    def walk(states: Mapping[str, Any]) -> Iterable[Row]:
        for name, spec in states.items():
            for event, alternatives in (spec.get("on") or {}).items():
                if not isinstance(alternatives, list):
                    alternatives = [alternatives]
                for order, alt in enumerate(alternatives):
                    if isinstance(alt, str):
                        alt = {"target": alt}
                    yield (name, event, alt.get("target"), one_or_many(alt.get("guard")),
                           one_or_many(alt.get("do")), order)
            yield from walk(spec.get("states") or {})

    data = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader builds no objects
    return list(walk(data["states"]))


class Driver:
    """Sends events to a fresh kernel instance the way the session runtime does."""

    def __init__(self, chart: CompiledChart) -> None:
        self.chart = chart
        self.sm: StateChart[Any] = chart.machine_class()
        self.last: StepRecord | None = None

    @property
    def config(self) -> list[str]:
        return [str(v) for v in self.sm.configuration_values]

    def send(self, event: str, **payload: Any) -> StepRecord:
        step = StepRecord(GuardInput(event, payload))
        self.last = step
        self.sm.send(event, step=step)
        return step

    def run(self, events: Iterable[tuple[str, dict[str, Any]]]) -> Driver:
        for event, payload in events:
            self.send(event, **payload)
        return self

    def row(self, source: str, event: str, order: int = 0) -> int:
        """The index of the table row `source --event--> …` (alternative `order`)."""
        matches = [r.index for r in self.chart.transitions
                   if r.source == source and r.event == event and r.order == order]
        assert len(matches) == 1, (source, event, order, matches)
        return matches[0]


HELLO: dict[str, Any] = {"text": "hello", "is_final": True}
Events = list[tuple[str, dict[str, Any]]]


# --------------------------------------------------------------------------- the table


def test_flat_example_is_chart_format_section_1_verbatim() -> None:
    """The example chart of docs/chart-format.md (the contract) is the one tested here."""
    doc = ROOT / "docs" / "chart-format.md"
    section = doc.read_text(encoding="utf-8").split("## 1. A chart", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    assert FLAT.read_text(encoding="utf-8") == block.group(1)


def test_flat_example_table_is_what_the_yaml_says() -> None:
    chart = load_chart(FLAT)
    assert table(chart) == [
        ("IDLE", "client_connected", "LISTENING", (), (), 0),
        ("LISTENING", "stt_final", "THINKING", ("has_final_text",), (), 0),
        ("THINKING", "filler_due", None, (), ("play_immediate_filler",), 0),
        ("THINKING", "response_ready", "SPEAKING", ("has_text",), (), 0),
        ("THINKING", "barge_in", "INTERRUPT", (), (), 0),
        ("THINKING", "error", "LISTENING", (), (), 0),
        ("SPEAKING", "playback_done", "LISTENING", (), (), 0),
        ("SPEAKING", "barge_in", "INTERRUPT", (), (), 0),
        ("SPEAKING", "error", "LISTENING", (), (), 0),
        ("INTERRUPT", "ready_after_interrupt", "LISTENING", (), (), 0),
    ]
    assert [r.index for r in chart.transitions] == list(range(len(chart.transitions)))
    assert chart.transitions[2].internal
    assert chart.table()[1] == {"source": "LISTENING", "event": "stt_final", "target": "THINKING",
                                "guards": ["has_final_text"], "do": [], "order": 0}


def test_flat_example_states() -> None:
    chart = load_chart(FLAT)
    assert list(chart.states) == ["IDLE", "LISTENING", "THINKING", "SPEAKING", "INTERRUPT"]
    assert chart.initial == "IDLE"
    assert all(s.parent is None and not s.compound for s in chart.states.values())
    thinking = chart.states["THINKING"]
    assert dict(thinking.contract) == {"microphone": "gated", "playback": "stopped"}
    assert thinking.enter == ("cancel_previous_filler",)
    assert thinking.invoke == ("respond",)
    assert [(t.delay, t.delay_ms, t.event) for t in thinking.after] == [
        ("600ms", 600.0, "filler_due")]
    assert chart.states["INTERRUPT"].after[0].delay_ms == 0.0
    assert dict(chart.channels) == {"microphone": ("open", "gated", "closed"),
                                    "playback": ("stopped", "streaming")}
    assert chart.events["stt_partial"].unhandled == "ignore"
    assert dict(chart.events["stt_final"].payload) == {"text": "str", "is_final": "bool"}


def test_nested_example_table_is_what_the_yaml_says() -> None:
    chart = load_chart(NESTED)
    assert table(chart) == [
        ("IDLE", "client_connected", "CONNECTED", (), (), 0),
        ("CONNECTED", "client_disconnected", "IDLE", (), (), 0),
        ("CONNECTED", "hang_up", "DONE", (), (), 0),
        ("LISTENING", "stt_final", "CONFIRMING", ("has_final_text",), (), 0),
        ("CONFIRMING", "nudge", None, (), ("play_immediate_filler",), 0),
        ("CONFIRMING", "give_up", "LISTENING", (), (), 0),
        ("CONFIRMING", "barge_in", "AWAITING", (), ("cancel_tts",), 0),
        ("READING_BACK", "playback_done", "AWAITING", (), (), 0),
        ("AWAITING", "answer", "DONE", ("has_text", "has_final_text"), ("cancel_filler",), 0),
        ("AWAITING", "answer", "CONFIRMING", ("not has_text",), (), 1),
        ("AWAITING", "answer", "LISTENING", (), (), 2),
    ]
    negated = chart.transitions[9].guards[0]
    assert (negated.name, negated.negated) == ("has_text", True)


def test_nested_example_tree_and_inherited_contracts() -> None:
    chart = load_chart(NESTED)
    connected, confirming = chart.states["CONNECTED"], chart.states["CONFIRMING"]
    assert (connected.parent, connected.children, connected.initial) == (
        None, ("LISTENING", "CONFIRMING"), "LISTENING")
    assert (confirming.parent, confirming.children, confirming.initial) == (
        "CONNECTED", ("READING_BACK", "AWAITING"), "READING_BACK")
    assert chart.states["AWAITING"].depth == 2
    assert chart.configuration_of("AWAITING") == ("CONNECTED", "CONFIRMING", "AWAITING")
    assert chart.initial_leaf("CONNECTED") == "LISTENING"
    assert chart.initial_leaf("CONFIRMING") == "READING_BACK"
    # Inherited from CONNECTED, overridden where the child says so.
    assert dict(chart.states["AWAITING"].contract) == {
        "microphone": "open", "playback": "stopped", "indicator": "lit"}
    assert dict(chart.states["READING_BACK"].contract) == {
        "microphone": "gated", "playback": "streaming", "indicator": "lit"}
    assert chart.states["DONE"].final
    assert [(t.delay, t.delay_ms) for t in confirming.after] == [("4s", 4000.0), ("10s", 10000.0)]
    # A leaf sees its own rows first, then each ancestor's.
    assert [(r.source, r.event) for r in chart.rows_from("AWAITING")] == [
        ("AWAITING", "answer"), ("AWAITING", "answer"), ("AWAITING", "answer"),
        ("CONFIRMING", "nudge"), ("CONFIRMING", "give_up"), ("CONFIRMING", "barge_in"),
        ("CONNECTED", "client_disconnected"), ("CONNECTED", "hang_up")]


@pytest.mark.parametrize("path", [FLAT, NESTED, SHIPPED], ids=lambda p: p.stem)
def test_table_matches_an_independent_reading_of_the_yaml(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert table(compile_text(text, str(path))) == table_from_yaml(text)


# --------------------------------------------------------------------------- the kernel


def test_flat_kernel_runs_a_turn_and_a_barge_in() -> None:
    d = Driver(load_chart(FLAT))
    assert d.config == ["IDLE"]
    steps: list[tuple[str, dict[str, Any], list[str], tuple[str, str]]] = [
        ("client_connected", {}, ["LISTENING"], ("IDLE", "client_connected")),
        ("stt_final", HELLO, ["THINKING"], ("LISTENING", "stt_final")),
        ("filler_due", {}, ["THINKING"], ("THINKING", "filler_due")),
        ("response_ready", {"text": "Hi!"}, ["SPEAKING"], ("THINKING", "response_ready")),
        ("playback_done", {"duration_ms": 1200.0}, ["LISTENING"], ("SPEAKING", "playback_done")),
        ("stt_final", HELLO, ["THINKING"], ("LISTENING", "stt_final")),
        ("response_ready", {"text": "Well…"}, ["SPEAKING"], ("THINKING", "response_ready")),
        ("barge_in", {"reason": "user said stop"}, ["INTERRUPT"], ("SPEAKING", "barge_in")),
        ("ready_after_interrupt", {}, ["LISTENING"], ("INTERRUPT", "ready_after_interrupt")),
        ("stt_final", HELLO, ["THINKING"], ("LISTENING", "stt_final")),
        ("barge_in", {"reason": "again"}, ["INTERRUPT"], ("THINKING", "barge_in")),
    ]
    for event, payload, config, (source, ev) in steps:
        step = d.send(event, **payload)
        assert d.config == config, event
        assert step.fired == d.row(source, ev), event
        assert step.failed_guards == [], event


def test_shipped_kernel_runs_a_turn_and_a_barge_in() -> None:
    d = Driver(load_chart(SHIPPED))
    assert d.config == ["IDLE"]
    assert d.send("client_connected").fired == d.row("IDLE", "client_connected")
    assert d.config == ["CONNECTED", "LISTENING"]
    assert d.send("stt_final", **HELLO).fired == d.row("LISTENING", "stt_final")
    assert d.config == ["CONNECTED", "THINKING"]
    assert d.send("response_ready", text="Hi!").fired == d.row("THINKING", "response_ready", 0)
    assert d.config == ["CONNECTED", "SPEAKING"]
    assert d.send("barge_in", reason="stop").fired == d.row("SPEAKING", "barge_in")
    assert d.config == ["CONNECTED", "INTERRUPT"]
    assert d.send("ready_after_interrupt").fired == d.row("INTERRUPT", "ready_after_interrupt")
    assert d.config == ["CONNECTED", "LISTENING"]
    # A parent's transition with `do`, into one of its own children.
    d.send("stt_final", **HELLO)
    step = d.send("error", message="responder down")
    assert step.fired == d.row("CONNECTED", "error")
    assert d.chart.transitions[step.fired].do == ("cancel_tts", "cancel_filler")
    assert d.config == ["CONNECTED", "LISTENING"]


def test_a_guard_that_says_no_is_named_and_the_event_is_refused() -> None:
    for path, config in ((FLAT, ["LISTENING"]), (SHIPPED, ["CONNECTED", "LISTENING"])):
        d = Driver(load_chart(path))
        d.send("client_connected")
        for payload in ({"text": "", "is_final": True}, {"text": "   ", "is_final": True},
                        {"text": "hel", "is_final": False}):
            step = StepRecord(GuardInput("stt_final", payload))
            with pytest.raises(TransitionNotAllowed):
                d.sm.send("stt_final", step=step)
            assert step.failed_guards == ["has_final_text"], payload
            assert step.fired is None
            assert d.config == config


def test_a_refused_guard_falls_through_to_the_next_alternative() -> None:
    d = Driver(load_chart(SHIPPED)).run([("client_connected", {}), ("stt_final", HELLO)])
    step = d.send("response_ready", text="")
    assert step.failed_guards == ["has_text"]
    assert step.fired == d.row("THINKING", "response_ready", 1)
    assert d.config == ["CONNECTED", "LISTENING"]


def test_guard_lists_are_all_must_hold_in_order_and_not_is_kept() -> None:
    chart = load_chart(NESTED)
    to_awaiting: Events = [("client_connected", {}), ("stt_final", HELLO),
                   ("playback_done", {"duration_ms": 900.0})]

    d = Driver(chart).run(to_awaiting)
    assert d.config == ["CONNECTED", "CONFIRMING", "AWAITING"]
    step = d.send("answer", text="yes", is_final=True)
    assert (step.fired, step.failed_guards) == (d.row("AWAITING", "answer", 0), [])
    assert d.config == ["DONE"]

    d = Driver(chart).run(to_awaiting)
    step = d.send("answer", text="", is_final=True)          # silence: read the order again
    assert (step.fired, step.failed_guards) == (d.row("AWAITING", "answer", 1), ["has_text"])
    assert d.config == ["CONNECTED", "CONFIRMING", "READING_BACK"]

    d = Driver(chart).run(to_awaiting)
    step = d.send("answer", text="yes", is_final=False)      # first list fails on its 2nd guard
    assert step.failed_guards == ["has_final_text", "not has_text"]
    assert step.fired == d.row("AWAITING", "answer", 2)
    assert d.config == ["CONNECTED", "LISTENING"]


# Event paths from IDLE to every leaf under CONNECTED.
SHIPPED_PATHS: dict[str, Events] = {
    "LISTENING": [("client_connected", {})],
    "THINKING": [("client_connected", {}), ("stt_final", HELLO)],
    "SPEAKING": [("client_connected", {}), ("stt_final", HELLO), ("response_ready", {"text": "a"})],
    "INTERRUPT": [("client_connected", {}), ("stt_final", HELLO), ("barge_in", {"reason": "r"})],
}
NESTED_PATHS: dict[str, Events] = {
    "LISTENING": [("client_connected", {})],
    "READING_BACK": [("client_connected", {}), ("stt_final", HELLO)],
    "AWAITING": [("client_connected", {}), ("stt_final", HELLO),
                 ("playback_done", {"duration_ms": 1.0})],
}


@pytest.mark.parametrize(("path", "paths"), [(SHIPPED, SHIPPED_PATHS), (NESTED, NESTED_PATHS)],
                         ids=["shipped", "nested"])
def test_a_parents_transition_fires_from_every_descendant(
        path: Path, paths: dict[str, Events]) -> None:
    chart = load_chart(path)
    leaves = {n for n, s in chart.states.items()
              if not s.compound and "CONNECTED" in chart.ancestors(n)}
    assert set(paths) == leaves, "every leaf under CONNECTED needs a path"
    for leaf, events in paths.items():
        d = Driver(chart).run(events)
        assert d.config == list(chart.configuration_of(leaf))
        step = d.send("client_disconnected")
        assert step.fired == d.row("CONNECTED", "client_disconnected"), leaf
        assert d.config == ["IDLE"], leaf
    if path == NESTED:
        for leaf, events in paths.items():
            d = Driver(chart).run(events)
            assert d.send("hang_up").fired == d.row("CONNECTED", "hang_up")
            assert d.config == ["DONE"], leaf


def test_a_middle_parents_transition_fires_from_its_children_only() -> None:
    chart = load_chart(NESTED)
    for leaf in ("READING_BACK", "AWAITING"):
        d = Driver(chart).run(NESTED_PATHS[leaf])
        assert d.send("give_up").fired == d.row("CONFIRMING", "give_up")
        assert d.config == ["CONNECTED", "LISTENING"]
    d = Driver(chart).run(NESTED_PATHS["LISTENING"])
    with pytest.raises(TransitionNotAllowed):
        d.send("give_up")
    assert d.config == ["CONNECTED", "LISTENING"]


def test_targetless_transitions_keep_the_configuration() -> None:
    d = Driver(load_chart(SHIPPED)).run(SHIPPED_PATHS["THINKING"])
    for _ in range(3):
        step = d.send("filler_due")
        assert step.fired == d.row("THINKING", "filler_due")
        assert d.chart.transitions[step.fired].internal
        assert d.config == ["CONNECTED", "THINKING"]
    # On a compound state: fires from whichever child is active and leaves it there.
    chart = load_chart(NESTED)
    for leaf in ("READING_BACK", "AWAITING"):
        d = Driver(chart).run(NESTED_PATHS[leaf])
        before = d.config
        assert d.send("nudge").fired == d.row("CONFIRMING", "nudge")
        assert d.config == before


def test_an_event_with_no_transition_is_refused_not_ignored() -> None:
    d = Driver(load_chart(SHIPPED))
    with pytest.raises(TransitionNotAllowed):
        d.send("barge_in", reason="nobody is here")
    assert d.config == ["IDLE"]


def test_every_row_fires_somewhere() -> None:
    """Each row of the shipped table is reached by some event from some leaf."""
    chart = load_chart(SHIPPED)
    payloads: dict[str, dict[str, Any]] = {
        "stt_final": HELLO, "response_ready": {"text": "a"}, "barge_in": {"reason": "r"},
        "playback_done": {"duration_ms": 1.0}, "error": {"message": "m"}}
    fired: set[int] = set()
    paths: dict[str, Events] = {"IDLE": [], **SHIPPED_PATHS}
    for leaf, events in paths.items():
        for row in chart.rows_from(leaf):
            d = Driver(chart).run(events)
            # A later alternative is reached when the earlier guards say no.
            payload = {"text": ""} if row.order else payloads.get(row.event, {})
            step = d.send(row.event, **payload)
            assert step.fired == row.index, (leaf, row)
            fired.add(step.fired)
    assert fired == {r.index for r in chart.transitions}


# --------------------------------------------------------------------------- content hash


def _reorder(value: Any) -> Any:
    """Every mapping with its keys in reverse order (lists keep theirs: they mean order)."""
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


def test_content_hash_ignores_key_order_comments_and_formatting() -> None:
    text = FLAT.read_text(encoding="utf-8")
    original = compile_text(text, "flat.yaml")

    no_comments = "\n".join(re.sub(r"\s+#.*$", "", line) for line in text.splitlines()
                            if not line.lstrip().startswith("#"))
    assert "#" not in no_comments
    commented = "# a header comment\n\n" + text.replace(
        "  LISTENING:\n", "\n  # the user has the floor\n  LISTENING:   # still listening\n")
    data = load_yaml(text).data
    reordered = json.dumps(_reorder(data), indent=1)          # JSON is YAML: flow style
    assert list(json.loads(reordered)) != list(data)
    blocky = yaml.safe_dump(_reorder(data), sort_keys=False, default_flow_style=False)
    blocky = blocky.replace("'on':", "on:")                   # PyYAML quotes `on`; users don't

    for variant in (no_comments, commented, reordered, blocky):
        chart = compile_text(variant, "variant.yaml")
        assert chart.version_hash == original.version_hash
        assert sorted(map(str, table(chart))) == sorted(map(str, table(original)))


def test_content_hash_is_a_short_stable_hex_string() -> None:
    a, b = load_chart(SHIPPED), load_chart(SHIPPED)
    assert a.version_hash == b.version_hash
    assert re.fullmatch(r"[0-9a-f]{16}", a.version_hash)
    assert load_chart(FLAT).version_hash != a.version_hash


@pytest.mark.parametrize(("old", "new"), [
    ("      error: LISTENING\n  SPEAKING:", "      error: IDLE\n  SPEAKING:"),     # a target
    ("guard: has_text}", "guard: not has_text}"),                                   # a guard
    ("after: {600ms: filler_due}", "after: {700ms: filler_due}"),                   # a timer
    ("enter: [cancel_previous_filler]", "enter: [cancel_filler]"),                  # an effect
    ("contract: {microphone: gated, playback: streaming}",
     "contract: {microphone: open, playback: streaming}"),                          # a contract
], ids=["target", "guard", "timer", "enter", "contract"])
def test_content_hash_changes_when_behaviour_changes(old: str, new: str) -> None:
    text = FLAT.read_text(encoding="utf-8")
    assert text.count(old) == 1
    changed = compile_text(text.replace(old, new), "changed.yaml")
    assert changed.version_hash != compile_text(text, "flat.yaml").version_hash
