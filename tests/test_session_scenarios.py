"""Scenarios (CHART_FORMAT.md §4) run through the simulator on the virtual clock.

Each scenario under tests/scenarios/ is a conversation a user could have; each
check reads the trace (the §3 log lines) the way a user debugging a call would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.context import EffectContext
from engine.runtime.logs import Record
from engine.tools.simulator import ScenarioError, load_scenario, simulate_file, transitions

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "scenarios"
TURNCHART = Path(sys.executable).with_name("turnchart")
FIELDS = {"ts", "t_ms", "level", "session_id", "event_type", "message", "data"}

Trace = list[Record]


# ----------------------------------------------------------------- helpers
def of(trace: Trace, event_type: str, **data: Any) -> list[Record]:
    """The lines of one event_type whose data has all the given items."""
    return [r for r in trace if r["event_type"] == event_type
            and all(r["data"].get(k) == v for k, v in data.items())]


def index_of(trace: Trace, event_type: str, **data: Any) -> int:
    """Position of the first matching line (fails the test when there is none)."""
    for i, r in enumerate(trace):
        if r["event_type"] == event_type and all(r["data"].get(k) == v for k, v in data.items()):
            return i
    raise AssertionError(f"no {event_type} line with {data}")


def errors(trace: Trace) -> list[Record]:
    return [r for r in trace if r["level"] == "ERROR"]


def explode_registry() -> Registry:
    """The default registry plus the effects tests/charts/runtime_effects.yaml names."""
    registry = default_registry()

    @registry.effect("explode")
    async def explode(ctx: EffectContext) -> None:
        raise RuntimeError(f"kaboom in {ctx.state}")

    async def note(ctx: EffectContext) -> None:
        ctx.log("INFO", "note", f"note in {ctx.state}", {"state": ctx.state})

    registry.effect("note_do")(note)
    registry.effect("note_enter")(note)
    return registry


def run(name: str, registry: Registry | None = None) -> Trace:
    return simulate_file(SCENARIOS / f"{name}.yaml", registry=registry)


# ------------------------------------------------------- the scenario table
def check_clean_turn(trace: Trace) -> None:
    assert transitions(trace) == [
        "IDLE → LISTENING (client_connected)",
        "LISTENING → THINKING (stt_final)",
        "THINKING → SPEAKING (response_ready)",
        "SPEAKING → LISTENING (playback_done)",
    ]
    assert errors(trace) == []
    # the answer was heard: 1200 ms of speech in 40 ms chunks, all while streaming
    assert len(of(trace, "audio_out")) == 30
    assert {r["data"]["state"] for r in of(trace, "audio_out")} == {"SPEAKING"}
    speaking = of(trace, "state_transition", to="SPEAKING")[0]
    back = of(trace, "state_transition", to="LISTENING", event="playback_done")[0]
    assert (speaking["t_ms"], back["t_ms"]) == (400.0, 1600.0)


def check_barge_in_speaking(trace: Trace) -> None:
    moves = transitions(trace)
    assert moves[:3] == ["IDLE → LISTENING (client_connected)",
                         "LISTENING → THINKING (stt_final)",
                         "THINKING → SPEAKING (response_ready)"]
    assert moves[3:] == ["SPEAKING → INTERRUPT (barge_in)",
                         "INTERRUPT → LISTENING (ready_after_interrupt)"]
    barge = index_of(trace, "event_received", event="barge_in")
    assert of(trace[:barge], "audio_out"), "the answer was playing before the barge-in"
    assert of(trace[barge:], "audio_out") == [], "audio left after the barge-in"
    assert of(trace[barge:], "activity_cancelled", activity="speak", reason="state_exit")
    cleared = [r for r in of(trace[barge:], "playback_cleared")
               if r["data"]["ms_since_barge_in"] is not None]
    assert cleared and cleared[0]["data"]["state"] == "INTERRUPT"
    assert cleared[0]["data"]["ms_since_barge_in"] == 0.0   # virtual clock: same instant
    assert not of(trace, "state_transition", event="playback_done")
    assert errors(trace) == []


def check_double_final(trace: Trace) -> None:
    assert len(of(trace, "activity_started", activity="respond")) == 1
    applied = [r for r in of(trace, "state_transition") if r["data"]["event"] == "response_ready"]
    assert len(applied) == 1
    assert len(of(trace, "state_transition", to="SPEAKING")) == 1
    rejected = of(trace, "transition_rejected", event="stt_final")
    assert len(rejected) == 1
    assert rejected[0]["data"]["state"] == "THINKING"
    assert rejected[0]["data"]["reason"] == "no_transition"
    assert rejected[0]["t_ms"] == 110.0


def check_barge_in_thinking(trace: Trace) -> None:
    assert "THINKING → INTERRUPT (barge_in)" in transitions(trace)
    assert not of(trace, "state_transition", to="SPEAKING")
    assert of(trace, "audio_out") == []
    answers = of(trace, "event_received", event="response_ready")
    stale = of(trace, "event_stale", event="response_ready")
    assert len(answers) == len(stale), "an answer to the interrupted turn was applied"
    assert of(trace, "activity_cancelled", activity="respond", reason="state_exit")
    assert transitions(trace)[-1] == "INTERRUPT → LISTENING (ready_after_interrupt)"


def check_no_transition(trace: Trace) -> None:
    [line] = of(trace, "transition_rejected")
    assert line["level"] == "ERROR"
    assert line["data"]["reason"] == "no_transition"
    assert line["data"]["event"] == "playback_done"
    assert line["data"]["state"] == "LISTENING"
    # the parent's transitions count too: CONNECTED handles disconnect and error
    assert line["data"]["valid_events"] == ["client_disconnected", "error", "stt_final"]
    assert line["data"]["valid_next_states"] == ["IDLE", "LISTENING", "THINKING"]
    assert transitions(trace) == ["IDLE → LISTENING (client_connected)"]


def check_empty_and_partial(trace: Trace) -> None:
    assert transitions(trace) == ["IDLE → LISTENING (client_connected)"]
    finals = of(trace, "transition_rejected", event="stt_final")
    assert [r["t_ms"] for r in finals] == [100.0, 200.0]
    for r in finals:
        assert r["level"] == "INFO"
        assert r["data"]["reason"] == "guard_failed:has_final_text"
    [partial] = of(trace, "transition_rejected", event="stt_partial")
    assert partial["level"] == "DEBUG"
    assert partial["data"]["reason"] == "no_transition"
    assert errors(trace) == []
    assert of(trace, "activity_started") == []


def check_filler_slow(trace: Trace) -> None:
    [fired] = of(trace, "timer_fired", event="filler_due")
    assert fired["t_ms"] == 700.0 and fired["data"]["state"] == "THINKING"
    [internal] = of(trace, "internal_transition", event="filler_due")
    assert internal["data"]["state"] == "THINKING"
    assert index_of(trace, "timer_fired") < index_of(trace, "internal_transition")
    assert of(trace, "effect_done", effect="play_immediate_filler", state="THINKING")
    # the internal transition neither left THINKING nor restarted the answer
    assert not of(trace, "state_transition", event="filler_due")
    assert len(of(trace, "activity_started", activity="respond")) == 1
    speaking = index_of(trace, "state_transition", to="SPEAKING")
    assert trace[speaking]["t_ms"] == 1100.0
    entered = [i for i, r in enumerate(trace) if r["event_type"] == "effect_done"
               and r["data"] == {"effect": "cancel_filler", "state": "SPEAKING", "error": None}]
    assert entered and index_of(trace, "internal_transition") < entered[0] < speaking


def check_filler_fast(trace: Trace) -> None:
    assert of(trace, "timer_fired") == []
    assert of(trace, "internal_transition") == []
    assert not of(trace, "effect_done", effect="play_immediate_filler")
    assert "THINKING → SPEAKING (response_ready)" in transitions(trace)


def check_disconnect_speaking(trace: Trace) -> None:
    assert transitions(trace)[-1] == "SPEAKING → IDLE (client_disconnected)"
    gone = index_of(trace, "event_received", event="client_disconnected")
    assert of(trace[:gone], "audio_out")
    assert of(trace[gone:], "audio_out") == []
    [cancelled] = of(trace, "activity_cancelled", activity="speak")
    assert cancelled["data"]["reason"] == "state_exit"
    contracts = of(trace[gone:], "contract_applied")
    assert contracts[-1]["data"] == {"state": "IDLE", "microphone": "closed", "playback": "stopped"}
    assert errors(trace) == []


def check_effect_raises(trace: Trace) -> None:
    failed = of(trace, "effect_failed")
    assert [(r["level"], r["data"]["state"]) for r in failed] == [("ERROR", "IDLE"),
                                                                  ("ERROR", "BUSY")]
    assert all("kaboom" in r["data"]["error"] and r["data"]["effect"] == "explode"
               for r in failed)
    # the effect after the failing one, in the same list, still ran
    notes = [r["data"]["state"] for r in of(trace, "note")]
    assert notes == ["IDLE", "BUSY"]
    assert index_of(trace, "effect_failed") < index_of(trace, "note")
    assert transitions(trace) == ["IDLE → BUSY (go)", "BUSY → IDLE (back)"]


def check_responder_error(trace: Trace) -> None:
    assert transitions(trace) == [
        "IDLE → LISTENING (client_connected)",
        "LISTENING → THINKING (stt_final)",
        "THINKING → LISTENING (error)",
    ]
    [received] = of(trace, "event_received", event="error")
    assert received["data"]["source"] == "activity:respond"
    assert received["t_ms"] == 300.0
    assert of(trace, "audio_out") == []
    # the transition's own effects ran and the floor is the user's again
    assert of(trace, "playback_cleared", state="LISTENING")
    assert of(trace, "contract_applied")[-1]["data"]["microphone"] == "open"


INVALID_FIELDS = ["timestamp", "payload.text", "payload.duration_ms", "event_type",
                  "session_id", "(event)", "(json)", "colour", "timestamp"]


def check_invalid_raw(trace: Trace) -> None:
    invalid = of(trace, "event_invalid")
    assert [r["data"]["field"] for r in invalid] == INVALID_FIELDS
    assert [r["t_ms"] for r in invalid] == [100.0 + 10 * i for i in range(len(INVALID_FIELDS))]
    for r in invalid:
        assert r["level"] == "WARNING"
        assert r["data"]["error"].startswith(r["data"]["field"] + ":")
        assert isinstance(r["data"]["raw"], str) and r["data"]["raw"]
    assert "colour" in invalid[7]["data"]["raw"]
    # lines that name a session carry it; input without one is logged under "-"
    assert [r["session_id"] for r in invalid] == ["s1"] * 4 + ["-"] * 3 + ["s1"] * 2
    # nothing else happened: no event reached the chart, the state did not move
    first = index_of(trace, "event_invalid")
    after = {r["event_type"] for r in trace[first:]}
    assert after == {"event_invalid", "session_closed"}
    assert transitions(trace) == ["IDLE → LISTENING (client_connected)"]
    assert of(trace, "session_closed")[0]["data"]["state"] == "LISTENING"


TABLE: dict[str, tuple[Callable[[Trace], None], Callable[[], Registry] | None]] = {
    "clean_turn": (check_clean_turn, None),
    "barge_in_speaking": (check_barge_in_speaking, None),
    "double_final": (check_double_final, None),
    "barge_in_thinking": (check_barge_in_thinking, None),
    "no_transition": (check_no_transition, None),
    "empty_and_partial": (check_empty_and_partial, None),
    "filler_slow": (check_filler_slow, None),
    "filler_fast": (check_filler_fast, None),
    "disconnect_speaking": (check_disconnect_speaking, None),
    "effect_raises": (check_effect_raises, explode_registry),
    "responder_error": (check_responder_error, None),
    "invalid_raw": (check_invalid_raw, None),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_scenario(name: str) -> None:
    check, make_registry = TABLE[name]
    trace = run(name, make_registry() if make_registry else None)
    check(trace)
    # every line has the §3 shape, whatever the scenario
    for line in trace:
        assert set(line) == FIELDS, line
        assert isinstance(line["data"], dict) and isinstance(line["t_ms"], float)
        assert line["ts"].endswith("Z") and line["session_id"]
    assert of(trace, "contract_violation") == []


def test_every_scenario_file_is_in_the_table() -> None:
    assert sorted(p.stem for p in SCENARIOS.glob("*.yaml")) == sorted(TABLE)


def test_shipped_example_scenarios_run_cleanly() -> None:
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        trace = simulate_file(path)
        assert transitions(trace)[0] == "IDLE → LISTENING (client_connected)", path
        assert errors(trace) == [], path


def test_the_same_scenario_gives_the_same_trace() -> None:
    first, second = run("barge_in_speaking"), run("barge_in_speaking")
    assert first == second
    assert [r["ts"] for r in first] == [r["ts"] for r in second]


# ---------------------------------------------------------------------- CLI
def turnchart(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TURNCHART), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_cli_simulate_writes_the_trace(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    done = turnchart("simulate", str(SCENARIOS / "clean_turn.yaml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == run("clean_turn")
    assert "4 transition(s), 0 ERROR line(s)" in done.stderr


def test_cli_simulate_rejects_a_bad_scenario_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"chart: {ROOT / 'charts' / 'voice_turn.yaml'}\n"
                   "steps:\n"
                   "  - {at: 0, event: client_connected}\n"
                   "  - {at: 10, evnt: stt_final}\n", encoding="utf-8")
    out = tmp_path / "trace.jsonl"
    done = turnchart("simulate", str(bad), "--out", str(out))
    assert done.returncode == 2
    assert f"{bad}:4:14: steps.1.evnt" in done.stderr
    assert "Extra inputs are not permitted" in done.stderr


def test_cli_simulate_reports_a_missing_chart(tmp_path: Path) -> None:
    scenario = tmp_path / "lost.yaml"
    scenario.write_text("chart: no/such/chart.yaml\nsteps: [{at: 0, event: client_connected}]\n",
                        encoding="utf-8")
    done = turnchart("simulate", str(scenario), cwd=tmp_path)
    assert done.returncode == 2
    assert "no/such/chart.yaml" in done.stderr
    assert done.stdout == ""


def test_scenario_errors_name_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fakes: {respond_ms: -5}\nuntil: 100\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(bad)
    lines = str(caught.value).splitlines()
    assert f"{bad}:1:21: fakes.respond_ms: Input should be greater than or equal to 0" in lines
    assert f"{bad}:2:1: until: Extra inputs are not permitted" in lines
