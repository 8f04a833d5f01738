"""`turnchart paths`: generated sequences cover a chart and catch what validation cannot.

Each test runs the command (or the engine call behind it) on a chart and reads
what a user would read: the coverage numbers, the rows with their lines, the
problems with their sequences, the exit code, and the scenarios it writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.chart.chart import load_chart
from engine.chart.registry import GuardInput, Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.context import ActivityContext
from engine.tools.paths import generate_paths, scenario_yaml
from engine.tools.simulator import simulate_file, transitions

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "voice_turn.yaml"
CHARTS = ROOT / "tests" / "charts"
TURNCHART = Path(sys.executable).with_name("turnchart")


def turnchart(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TURNCHART), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def paths_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = turnchart("paths", *args, "--format", "json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def custom_registry() -> Registry:
    """The default registry plus what tests/charts/paths_custom.yaml names."""
    registry = default_registry()

    @registry.guard()
    def is_vip(event: GuardInput) -> bool:
        """A caller on the VIP list (no examples: path generation must force it)."""
        return event.payload.get("caller") == "the boss"

    @registry.activity()
    async def hang(ctx: ActivityContext) -> None:
        """Waits for something nobody ever sends."""
        await asyncio.Event().wait()

    return registry


# ------------------------------------------------------------- the product chart
def test_voice_turn_is_fully_covered_with_no_problem() -> None:
    code, body = paths_json(str(CHART))
    chart = load_chart(CHART)
    assert code == 0, body["problems"]
    assert body["ok"] is True and body["problems"] == []
    rows = body["transitions"]
    assert (rows["covered"], rows["total"], rows["percent"]) == \
        (len(chart.transitions), len(chart.transitions), 100.0)
    assert all(r["covered"] and r["by_path"] for r in rows["rows"])
    guards = body["guard_outcomes"]
    assert guards["percent"] == 100.0 and guards["covered"] == guards["total"]
    assert {(g["guard"], g["holds"]) for g in guards["outcomes"]} >= {
        ("has_final_text", True), ("has_final_text", False),
        ("has_text", True), ("has_text", False)}
    # Built-in guards have examples: none of their outcomes needed forcing.
    assert not [g for g in guards["outcomes"] if g["via"] == "forced"]


def test_rows_say_how_they_were_reached() -> None:
    report = generate_paths(load_chart(CHART), default_registry())
    by_label = {r.label(): r for r in report.rows}
    # The responder's answer comes from the fake `respond` activity itself ...
    natural = by_label["THINKING --response_ready--> SPEAKING [has_text]"].hit
    assert natural is not None and natural.via == "activity"
    # ... an empty answer is injected, as the activity would post it ...
    empty = by_label["THINKING --response_ready--> LISTENING"].hit
    assert empty is not None and empty.via == "injected" and "respond" in empty.detail
    # ... a timer's event arrives from the timer when nothing else comes first.
    timer = by_label["INTERRUPT --ready_after_interrupt--> LISTENING"].hit
    assert timer is not None and timer.via == "timer"
    # A parent's transition is taken from every child it can be taken in.
    hangup = by_label["CONNECTED --client_disconnected--> IDLE"]
    assert {"LISTENING", "THINKING", "SPEAKING"} <= set(hangup.from_states)


def test_text_report_points_at_each_transition_line() -> None:
    result = turnchart("paths", str(CHART.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    line = line_of(CHART, "stt_final: {target: THINKING, guard: has_final_text}")
    assert any(row.startswith(f"  charts/voice_turn.yaml:{line}:")
               and "LISTENING --stt_final--> THINKING [has_final_text]" in row
               for row in result.stdout.splitlines())
    assert "LISTENING stt_final [has_final_text] fails" in result.stdout
    assert result.stdout.rstrip().endswith("charts/voice_turn.yaml: ok")


def test_out_scenarios_replay_to_the_same_states(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    code, body = paths_json(str(CHART), "--out", str(out))
    assert code == 0
    files = sorted(out.glob("*.yaml"))
    assert [str(f) for f in files] == body["scenarios"] and len(files) == len(body["paths"])
    for path, file in zip(body["paths"], files, strict=True):
        trace = simulate_file(file)
        closed = [r for r in trace if r["event_type"] == "session_closed"]
        assert closed[-1]["data"]["state"] == path["final_state"], file.read_text()
        assert transitions(trace) == path["transitions"], file.read_text()
    # The CLI runs them too, as a user keeping them as regression tests would.
    longest = max(body["paths"], key=lambda p: len(p["transitions"]))
    result = turnchart("simulate", str(files[longest["number"] - 1]),
                       "--out", str(tmp_path / "trace.jsonl"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert transitions(lines) == longest["transitions"]


# ------------------------------------------------------------- charts with problems
def test_a_trap_the_validator_allows_is_reported_stuck() -> None:
    chart = CHARTS / "paths_trap.yaml"
    assert turnchart("validate", str(chart)).returncode == 0
    code, body = paths_json(str(chart))
    assert code == 1 and body["ok"] is False
    stuck = {p["state"]: p for p in body["problems"] if p["kind"] == "stuck"}
    assert set(stuck) == {"LIMBO", "LIMBO_TOO"}
    path = body["paths"][stuck["LIMBO"]["path"] - 1]
    assert [s["event"] for s in path["steps"]] == ["start", "detour"]
    assert "no way back" in stuck["LIMBO"]["message"]
    assert body["transitions"]["percent"] == 100.0   # covered, and still wrong


def test_contract_violation_and_rejected_event_are_reported() -> None:
    chart = CHARTS / "paths_problems.yaml"
    result = turnchart("paths", str(chart))
    assert result.returncode == 1
    assert "contract_violation (path" in result.stdout and "in MUTED" in result.stdout
    assert "rejected (path" in result.stdout
    code, body = paths_json(str(chart))
    assert code == 1
    kinds = {p["kind"]: p for p in body["problems"]}
    violation = kinds["contract_violation"]
    assert violation["state"] == "MUTED"
    assert violation["log_line"]["event_type"] == "contract_violation"
    assert violation["log_line"]["data"]["channel"] == "playback"
    rejected = kinds["rejected"]
    assert rejected["state"] == "ASKING"
    assert rejected["log_line"]["data"] | {"valid_events": None} == {
        "state": "ASKING", "event": "response_ready", "reason": "no_transition",
        "valid_events": None, "valid_next_states": ["IDLE"]}
    steps = body["paths"][rejected["path"] - 1]["steps"]
    assert [s["event"] for s in steps] == ["ask"]


def test_a_transition_no_sequence_reaches_is_uncovered_with_its_line() -> None:
    chart = CHARTS / "paths_shadowed.yaml"
    line = line_of(chart, "hangup: IDLE        # never fires")
    result = turnchart("paths", str(chart))
    assert result.returncode == 1
    uncovered = [r for r in result.stdout.splitlines() if "NOT COVERED" in r]
    assert len(uncovered) == 1
    assert uncovered[0].strip().startswith(f"{chart}:{line}:") \
        and "CALL --hangup--> IDLE" in uncovered[0]
    assert "coverage below 100%" in result.stdout
    # What is reachable is covered: a lower bar passes.
    code, body = paths_json(str(chart), "--min-coverage", "80")
    assert code == 0 and body["transitions"]["percent"] == 80.0


def test_a_guard_without_examples_is_forced_and_says_so() -> None:
    report = generate_paths(load_chart(CHARTS / "paths_custom.yaml", custom_registry()),
                            custom_registry())
    assert report.transition_percent == 100.0 and report.guard_percent == 100.0
    holds = next(g for g in report.guards if g.guard == "is_vip" and g.outcome.held)
    assert holds.hit is not None and holds.hit.via == "forced"
    assert "is_vip forced true" in holds.hit.detail
    fails = next(g for g in report.guards if g.guard == "is_vip" and not g.outcome.held)
    assert fails.hit is not None and fails.hit.via != "forced"   # the real guard says no
    assert not [p for p in report.problems if p.kind == "unexpected"]
    forced = report.paths[holds.hit.path - 1]
    assert forced.final_state == "VIP" and forced.transitions[-1] == "IDLE → VIP (call)"
    text = scenario_yaml(forced, "paths_custom.yaml", report.fakes, report.chart)
    assert "is_vip forced true" in text and "replay may differ" in text


def test_an_activity_that_never_ends_is_reported_stuck() -> None:
    registry = custom_registry()
    report = generate_paths(load_chart(CHARTS / "paths_custom.yaml", registry), registry)
    stuck = [p for p in report.problems if p.kind == "stuck"]
    assert len(stuck) == 1 and stuck[0].state == "WAITING"
    assert "hang" in stuck[0].message and "never ends" in stuck[0].message
    assert report.paths[stuck[0].path - 1].steps[-1].event == "call"
    assert not report.ok()


def test_a_guard_that_is_not_pure_is_caught() -> None:
    registry = custom_registry().copy()
    calls = itertools.count()
    flipping = registry.with_guards({"is_vip": lambda event: next(calls) % 2 == 0})
    flipping.add_guard_examples("is_vip", {True: {"caller": "x"}, False: {"caller": "y"}})
    report = generate_paths(load_chart(CHARTS / "paths_custom.yaml", flipping), flipping)
    unexpected = [p for p in report.problems if p.kind == "unexpected"]
    assert unexpected and unexpected[0].state == "IDLE"
    assert "not a pure function" in unexpected[0].message
    assert unexpected[0].line is not None


# ------------------------------------------------------------- guard examples
@pytest.mark.parametrize("name", ["has_text", "has_final_text"])
def test_builtin_guard_examples_give_the_outcome_they_claim(name: str) -> None:
    registry = default_registry()
    guard = registry.guard_fn(name)
    examples = registry.guard_examples(name)
    assert examples[True] and examples[False]
    for outcome, payloads in examples.items():
        for payload in payloads:
            assert guard(GuardInput("stt_final", payload)) is outcome, payload


def test_guard_examples_are_checked_when_registered() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="must be True or False"):
        registry.guard("loud", examples={"yes": {"volume": 9}})(  # type: ignore[dict-item]
            lambda event: True)
    registry.guard("quiet", examples={True: {"volume": 1}})(lambda event: True)
    registry.add_guard_examples("quiet", {False: [{"volume": 9}, {"volume": 10}]})
    assert [dict(p) for p in registry.guard_examples("quiet")[False]] == [
        {"volume": 9}, {"volume": 10}]
    with pytest.raises(ValueError, match="payload mapping"):
        registry.add_guard_examples("quiet", {True: ["volume"]})  # type: ignore[list-item]


# ------------------------------------------------------------- usage
def test_unreadable_or_invalid_chart_and_bad_options_are_usage_errors(tmp_path: Path) -> None:
    missing = turnchart("paths", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHART.read_text().replace("playback_done: LISTENING", "playback_done: LISTEN"))
    invalid = turnchart("paths", str(bad))
    assert invalid.returncode == 2 and "E130" in invalid.stderr
    over = turnchart("paths", str(CHART), "--min-coverage", "150")
    assert over.returncode == 2 and "between 0 and 100" in over.stderr
