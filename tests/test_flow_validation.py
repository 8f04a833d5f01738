"""Validator cases of the issue-16 keys beyond the one-mistake golden files: each
message with its position (tests/golden/invalid/ has one case per code)."""

from __future__ import annotations

import pytest

from engine.chart.chart import compile_text
from engine.chart.errors import ChartErrors

BASE = """\
chart: flows
version: 1
initial: IDLE
contracts:
  microphone: [open, closed]
  playback: [stopped, streaming]
data:
  tries: int
  size: {type: float, default: 1}
  name: str
events:
  go: {payload: {n: int, text: str, maybe: "int?"}}
  stop: {}
states:
  IDLE:
    contract: {microphone: closed, playback: stopped}
    on: {go: CALL}
  CALL:
    parallel: true
    on: {stop: IDLE}
    states:
      TURN:
        initial: T1
        states:
          T1: {contract: {microphone: open, playback: stopped}, on: {go: T1}}
      FLOW:
        initial: F1
        states:
          F1: {on: {go: F2}}
          F2: {final: true}
"""


def problems(text: str) -> list[str]:
    try:
        compile_text(text, "flows.yaml")
    except ChartErrors as exc:
        return [str(e) for e in exc.errors]
    return []


def test_the_base_chart_compiles() -> None:
    chart = compile_text(BASE, "flows.yaml")
    assert chart.initial_configuration() == ("IDLE",)
    assert "done.state.FLOW" in chart.events and "done.state.CALL" not in chart.events


@pytest.mark.parametrize("old, new, expected", [
    # two regions set the same turn-policy key: both places named
    ("          T1: {contract: {microphone: open, playback: stopped}, on: {go: T1}}\n",
     "          T1: {contract: {microphone: open, playback: stopped}, turn: {patience_ms: 300},"
     " on: {go: T1}}\n",
     None),
    ("open, playback: stopped}, on: {go: T1}}\n      FLOW:\n        initial: F1\n        states:\n"
     "          F1: {on: {go: F2}}\n",
     "open, playback: stopped}, turn: {patience_ms: 300}, on: {go: T1}}\n      FLOW:\n"
     "        initial: F1\n        states:\n"
     "          F1: {turn: {patience_ms: 900}, on: {go: F2}}\n",
     "flows.yaml:29:23: E155 turn-policy key 'patience_ms' is set in two regions of parallel "
     "state 'CALL': 'FLOW' here and 'TURN' at line 25, column 72; only one region may set it"),
    ("    parallel: true\n", "    parallel: true\n    initial: TURN\n",
     "flows.yaml:20:14: E122 parallel state 'CALL' has 'initial': all its children are entered "
     "at once, so it takes none"),
    ("    parallel: true\n", "    parallel: true\n    history: deep\n",
     "flows.yaml:20:14: E176 parallel state 'CALL' has 'history': put it on the regions that "
     "should resume"),
    ("    on: {stop: IDLE}\n", "    on: {stop: IDLE, done.state.CALL: IDLE}\n",
     "flows.yaml:20:22: E132 done event 'done.state.CALL' can never happen: every region of "
     "state 'CALL' needs a child with final: true"),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, set: {name: {add: 1}}}}\n",
     "flows.yaml:17:41: E182 set name add 1: data field 'name' is str; add needs an int field "
     "(or a float one)"),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, set: {tries: {add: 0.5}}}}\n",
     "flows.yaml:17:42: E182 set tries add 0.5: data field 'tries' is int; add needs an int "
     "field (or a float one)"),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, set: {tries: {from: maybe}}}}\n", None),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, set: {size: {from: n}}}}\n", None),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, set: {tries: true}}}\n",
     "flows.yaml:17:42: E182 set tries to True: data field 'tries' is int"),
    ("    on: {go: CALL}\n",
     "    on: {go: {target: CALL, guard: {name: field_equals, args: {field: name, value: 3}}}}\n",
     "flows.yaml:17:84: E183 bad argument value=3 for guard 'field_equals': expected a str"),
    ("    on: {go: CALL}\n",
     "    on: {go: {target: CALL, guard: {name: has_text, args: {x: 1}}}}\n",
     "flows.yaml:17:63: E183 guard 'has_text' takes no arguments, not 'x'"),
    ("    on: {go: CALL}\n", "    on: {go: {target: CALL, guard: field_is_set}}\n",
     "flows.yaml:17:36: E183 guard 'field_is_set' needs argument 'field' (field)"),
    ("    on: {go: CALL}\n",
     "    on: {go: {target: CALL, guard: {name: field_below, args: {field: name, value: 1}}}}\n",
     "flows.yaml:17:70: E183 bad argument field='name' for guard 'field_below': data field "
     "'name' is str, not a number"),
])
def test_flow_keys(old: str, new: str, expected: str | None) -> None:
    assert BASE.count(old) == 1
    found = problems(BASE.replace(old, new))
    assert found == ([expected] if expected else []), found


def test_a_channel_set_by_another_region_is_not_missing() -> None:
    # FLOW's leaves set no contract at all: TURN owns both channels.
    assert problems(BASE) == []
    # Without the TURN region's values, the FLOW leaves do miss them.
    text = BASE.replace("          T1: {contract: {microphone: open, playback: stopped}, "
                        "on: {go: T1}}\n", "          T1: {on: {go: T1}}\n")
    assert [p.split(": ", 1)[1][:4] for p in problems(text)] == ["E150", "E150", "E150"]


def test_the_turn_policy_in_force_merges_the_regions() -> None:
    text = BASE.replace(
        "          T1: {contract: {microphone: open, playback: stopped}, on: {go: T1}}\n",
        "          T1: {contract: {microphone: open, playback: stopped},"
        " turn: {barge_in: {speaking_ms: 150}}, on: {go: T1}}\n").replace(
        "          F1: {on: {go: F2}}\n",
        "          F1: {turn: {patience_ms: 1200}, on: {go: F2}}\n")
    chart = compile_text(text, "flows.yaml")
    policy = chart.turn_of(("CALL", "TURN", "T1", "FLOW", "F1"))
    assert (policy.patience_ms, policy.barge_in_speaking_ms) == (1200, 150)
    assert chart.turn_of(("CALL", "TURN", "T1", "FLOW", "F2")).patience_ms is None
    assert chart.turn_of(("IDLE",)).empty
