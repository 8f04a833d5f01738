"""The typed trace (engine/runtime/trace.py) writes exactly the log lines the engine
wrote before it was typed: the log format is public API (docs/chart-format.md §3).

tests/golden/trace/ holds lines captured from the engine as it was before the
trace was typed: every scenario of scenarios/ and tests/scenarios/ simulated
(`*.jsonl`), and `kinds.jsonl` for the kinds no scenario produces (stale and
invalid events, contract violations, resumes, a failing snapshot store, routing
lines, a replay's unanswered run). `<repo>` stands for the checkout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.runtime.trace import KINDS, Contract, LogLine, StateTransition, from_record
from engine.tools.simulator import simulate_file
from tests.test_session_scenarios import explode_registry

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "trace"


def golden_lines() -> list[str]:
    return [line for path in sorted(GOLDEN.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_golden_line_round_trips_byte_for_byte() -> None:
    lines = golden_lines()
    assert len(lines) > 500
    for line in lines:
        event = from_record(json.loads(line))
        assert json.dumps(event.to_record(), ensure_ascii=False) == line
        # the message comes from the fields, not from a copy of the recorded one
        assert event.recorded_message is None or isinstance(event, LogLine), line


def test_every_kind_has_a_class_and_a_golden_line() -> None:
    seen: dict[str, type] = {}
    for line in golden_lines():
        record = json.loads(line)
        seen[record["event_type"]] = type(from_record(record))
    assert {k for k, cls in seen.items() if cls is not LogLine} == set(KINDS) - {"effect_slow"}
    for kind, cls in seen.items():
        assert cls is KINDS.get(kind, LogLine), kind


def scenario_paths() -> list[Path]:
    return sorted([*(ROOT / "scenarios").glob("*.yaml"),
                   *(ROOT / "tests/scenarios").glob("*.yaml")])


@pytest.mark.parametrize("path", scenario_paths(), ids=lambda p: p.stem)
def test_the_engine_still_writes_the_golden_trace(path: Path) -> None:
    """Simulated now, through the typed trace and the JSON-log listener."""
    name = ("tests_" if path.parent.name == "scenarios" and path.parent.parent.name == "tests"
            else "") + path.stem
    trace = simulate_file(path, registry=explode_registry() if path.stem == "effect_raises"
                          else None)
    now = [json.dumps(r, ensure_ascii=False).replace(str(ROOT) + "/", "<repo>/") for r in trace]
    assert now == (GOLDEN / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


def test_new_kind_effect_slow_round_trips() -> None:
    record = {"ts": "2025-11-22T22:20:00.000Z", "t_ms": 0.0, "level": "WARNING",
              "session_id": "s1", "event_type": "effect_slow",
              "message": "🐢 effect cancel_tts in SPEAKING took 61.2 ms (budget 50 ms): "
                         "it held the step",
              "data": {"effect": "cancel_tts", "state": "SPEAKING", "elapsed_ms": 61.234,
                       "budget_ms": 50.0}}
    assert from_record(record).to_record() == record


def test_from_record_keeps_unknown_fields_and_messages() -> None:
    record = json.loads(golden_lines()[0])
    record["data"] = {**record["data"], "added_later": 1}
    record["message"] = "an older wording"
    event = from_record(record)
    assert event.to_record() == record
    with pytest.raises(ValueError, match="event_type"):
        from_record({"message": "not a log line"})


def test_typed_fields_read_without_parsing_strings() -> None:
    line = next(line for line in golden_lines() if '"state_transition"' in line)
    event = from_record(json.loads(line))
    assert isinstance(event, StateTransition)
    assert (event.source, event.target, event.event) == ("IDLE", "LISTENING", "client_connected")
    contract = Contract.of({"microphone": "open", "playback": "stopped"})
    assert (contract.microphone, contract.playback, dict(contract)) == \
        ("open", "stopped", {"microphone": "open", "playback": "stopped"})
    assert Contract().playback is None
