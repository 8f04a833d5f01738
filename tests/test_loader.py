"""The chart loader: YAML quirks, duplicate keys, positions, all problems at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from engine.chart.chart import compile_text, load_chart
from engine.chart.errors import ChartErrors
from engine.chart.source import MAX_DEPTH, load_yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "charts" / "voice_turn.yaml"
MINIMAL = (ROOT / "tests" / "golden" / "valid" / "minimal.yaml").read_text(encoding="utf-8")


def problems_of(text: str, path: str = "chart.yaml") -> list[str]:
    with pytest.raises(ChartErrors) as info:
        compile_text(text, path)
    return [str(e) for e in info.value.errors]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ------------------------------------------------------------- YAML words

def test_on_off_yes_no_keys_stay_strings() -> None:
    data = load_yaml("on: 1\noff: 2\nyes: 3\nno: 4\nOn: 5\nNO: 6\n").data
    assert data == {"on": 1, "off": 2, "yes": 3, "no": 4, "On": 5, "NO": 6}
    assert all(isinstance(k, str) for k in data)


def test_on_off_yes_no_values_stay_strings() -> None:
    data = load_yaml("a: on\nb: off\nc: yes\nd: no\ne: Yes\nf: OFF\n").data
    assert data == {"a": "on", "b": "off", "c": "yes", "d": "no", "e": "Yes", "f": "OFF"}


@pytest.mark.parametrize(("word", "value"), [("true", True), ("false", False),
                                             ("True", True), ("FALSE", False)])
def test_true_and_false_stay_booleans(word: str, value: bool) -> None:
    data = load_yaml(f"final: {word}\nlist: [{word}]\n").data
    assert data["final"] is value
    assert data["list"] == [value] and isinstance(data["list"][0], bool)


def test_numbers_and_null_values_keep_their_types() -> None:
    data = load_yaml("a: 1\nb: 1.5\nc: ~\nd: null\ne: '1'\n").data
    assert data == {"a": 1, "b": 1.5, "c": None, "d": None, "e": "1"}


def test_every_key_is_the_text_written_in_the_file() -> None:
    data = load_yaml("600: a\n1.5: b\ntrue: c\n~: d\n2024-01-01: e\n").data
    assert list(data) == ["600", "1.5", "true", "~", "2024-01-01"]


def test_dates_stay_text() -> None:
    assert load_yaml("description: 2024-01-01\n").data == {"description": "2024-01-01"}


def test_the_on_key_of_a_chart_is_the_transitions_key() -> None:
    compiled = compile_text(MINIMAL, "minimal.yaml")
    assert {(r.source, r.event, r.target) for r in compiled.transitions} >= {
        ("IDLE", "client_connected", "LISTENING"), ("SPEAKING", "barge_in", "LISTENING")}


def test_a_delay_key_without_a_unit_is_a_bad_delay_not_a_type_error() -> None:
    text = replace_once(MINIMAL, "after: {600ms: filler_due}", "after: {600: filler_due}")
    assert problems_of(text) == [
        "chart.yaml:30:13: E161 bad delay '600': write a number followed by ms or s, "
        "e.g. 250ms or 1.5s"]


# ------------------------------------------------------------- positions

def test_source_map_holds_key_and_value_positions() -> None:
    loaded = load_yaml("chart: x\nstates:\n  IDLE:\n    on: {go: B}\n", "p.yaml")
    smap = loaded.source_map
    assert smap.key(("states", "IDLE")) == (smap.keys[("states", "IDLE")])
    assert (smap.key(("states", "IDLE")).line, smap.key(("states", "IDLE")).col) == (3, 3)
    go = smap.value(("states", "IDLE", "on", "go"))
    assert (go.line, go.col) == (4, 14)
    # a place that does not exist falls back to the nearest enclosing one
    missing = smap.value(("states", "IDLE", "on", "nope"))
    assert (missing.line, missing.col) == (4, 9)


# ------------------------------------------------------------- duplicates

def test_duplicate_keys_are_reported_with_both_lines() -> None:
    text = replace_once(MINIMAL, "      playback_done: LISTENING\n",
                        "      playback_done: LISTENING\n      playback_done: IDLE\n")
    assert problems_of(text) == [
        "chart.yaml:40:7: E101 duplicate key 'playback_done' (first defined at line 39, "
        "column 7; YAML would silently keep only the last one)"]


def test_duplicate_top_level_and_state_keys() -> None:
    text = replace_once(MINIMAL, "version: 1\n", "version: 1\nversion: 2\n")
    text = replace_once(text, "  SPEAKING:\n", "  IDLE:\n    final: true\n  SPEAKING:\n")
    lines = problems_of(text)
    assert lines[0] == ("chart.yaml:3:1: E101 duplicate key 'version' (first defined at line 2, "
                        "column 1; YAML would silently keep only the last one)")
    assert lines[1].startswith("chart.yaml:36:3: E101 duplicate key 'IDLE' (first defined at "
                               "line 19, column 3;")


def test_keys_that_differ_only_in_yaml_spelling_are_duplicates() -> None:
    loaded = load_yaml("600: a\n'600': b\n", "d.yaml")
    assert loaded.data == {"600": "a"}
    assert [str(p) for p in loaded.problems] == [
        "d.yaml:2:1: E101 duplicate key '600' (first defined at line 1, column 1; "
        "YAML would silently keep only the last one)"]


def test_a_merge_key_may_be_overridden_without_a_duplicate_error() -> None:
    text = ("defaults: &quiet {microphone: closed, playback: stopped}\n"
            "IDLE:\n  <<: *quiet\n  microphone: open\n"
            "AGAIN:\n  <<: *quiet\n")
    loaded = load_yaml(text)
    assert loaded.problems == []
    assert loaded.data["IDLE"] == {"microphone": "open", "playback": "stopped"}
    assert loaded.data["AGAIN"] == {"microphone": "closed", "playback": "stopped"}
    assert loaded.data == yaml.safe_load(text)


# ------------------------------------------------------------- all at once

def test_different_errors_are_reported_together_in_file_order() -> None:
    text = replace_once(MINIMAL, "    enter: [cancel_tts, cancel_filler]",
                        "    entry: [cancel_tts, cancel_filler]")             # E102, line 24
    text = replace_once(text, "invoke: respond", "invoke: respnd")            # E142, line 29
    text = replace_once(text, "      playback_done: LISTENING\n",
                        "      playback_done: LISTENNING\n")                  # E130, line 39
    text = replace_once(text, "      barge_in: LISTENING\n  SPEAKING",
                        "      barge_in: LISTENING\n      barge_in: IDLE\n  SPEAKING")  # E101
    assert problems_of(text) == [
        "chart.yaml:24:5: E102 unknown key 'entry' in state 'LISTENING' (did you mean 'enter'?)",
        "chart.yaml:29:13: E142 unregistered activity 'respnd' (did you mean 'respond'?)",
        "chart.yaml:35:7: E101 duplicate key 'barge_in' (first defined at line 34, column 7; "
        "YAML would silently keep only the last one)",
        "chart.yaml:40:22: E130 unknown target state 'LISTENNING' (did you mean 'LISTENING'?)",
    ]


def test_errors_and_warnings_travel_together() -> None:
    text = replace_once(MINIMAL, "  filler_due: {}", "  filler_due: {}\n  hang_up: {}")
    text = replace_once(text, "invoke: respond", "invoke: respnd")
    with pytest.raises(ChartErrors) as info:
        compile_text(text, "chart.yaml")
    assert [e.code for e in info.value.errors] == ["E142"]
    assert [w.code for w in info.value.warnings] == ["W200"]
    assert str(info.value) == ("chart.yaml:30:13: E142 unregistered activity 'respnd' "
                               "(did you mean 'respond'?)")


# ------------------------------------------------------------- YAML syntax

@pytest.mark.parametrize("text", [
    "chart: x\nstates:\n  A: {on: {go: B}\n  B: {}\n",
    "chart: x\n  version: 1\n",
    "a: [1, 2\nb: 3\n",
    "a: 'unterminated\n",
    "a:\n\t- tab\n",
    "- a\nb: c\n",
    "a: *nowhere\n",
    "a: !!python/object:os.system x\n",
])
def test_yaml_syntax_errors_keep_yamls_own_line_and_column(text: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as yaml_info:
        yaml.safe_load(text)
    mark = yaml_info.value.problem_mark or yaml_info.value.context_mark
    assert mark is not None
    with pytest.raises(ChartErrors) as info:
        load_yaml(text, "bad.yaml")
    (error,) = info.value.errors
    assert (error.code, error.line, error.col) == ("E100", mark.line + 1, mark.column + 1)
    assert error.message.startswith("YAML syntax error: ")
    assert (yaml_info.value.problem or "").strip() in error.message


def test_a_syntax_error_says_where_the_unclosed_construct_started() -> None:
    lines = problems_of("chart: x\nstates:\n  A: {on: {go: B}\n  B: {}\n", "s.yaml")
    assert lines == ["s.yaml:4:3: E100 YAML syntax error: expected ',' or '}', but got "
                     "'<scalar>' "
                     "(while parsing a flow mapping that started at line 3, column 6)"]


def test_unprintable_characters_are_a_syntax_error_at_their_position() -> None:
    assert problems_of("chart: x\nversion: 1\x1f\n", "c.yaml") == [
        "c.yaml:2:11: E100 YAML syntax error: unacceptable character #x001f: "
        "special characters are not allowed"]


# ------------------------------------------------------------- refusals

def test_a_recursive_alias_is_refused() -> None:
    lines = problems_of("a: &x [1, *x]\n", "r.yaml")
    assert lines == ["r.yaml:1:4: E100 YAML document refused: an alias refers to a value that "
                     "contains it (a recursive structure)"]


def test_nesting_too_deep_is_refused_not_a_crash() -> None:
    deep = "a: " + "[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50) + "\n"
    (line,) = problems_of(deep, "d.yaml")
    assert line.startswith("d.yaml:1:") and f"nesting deeper than {MAX_DEPTH} levels" in line
    ok = "a: " + "[" * (MAX_DEPTH - 10) + "]" * (MAX_DEPTH - 10) + "\n"
    assert load_yaml(ok).data is not None


def test_an_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    started = time.perf_counter()
    (line,) = problems_of("\n".join(lines) + "\n", "bomb.yaml")
    assert "E100 YAML document refused: the document expands to more than" in line
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n", "just text\n"])
def test_a_document_that_is_not_a_mapping(text: str) -> None:
    assert problems_of(text, "n.yaml") == [
        "n.yaml:1:1: E104 a chart must be a mapping with chart, version, initial, contracts, "
        "events and states"]


# ------------------------------------------------------------- shipped chart

def test_the_shipped_chart_compiles_with_no_errors_or_warnings() -> None:
    compiled = load_chart(SHIPPED)
    assert compiled.name == "voice_turn"
    assert compiled.warnings == ()
    assert compiled.path == str(SHIPPED)


def test_an_unreadable_chart_is_an_os_error_not_a_chart_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_chart(tmp_path / "missing.yaml")
