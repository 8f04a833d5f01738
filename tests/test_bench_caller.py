"""`turnchart bench caller --quick` (issue 14): a real aiortc caller against real
`turnchart serve` processes, defaults and baseline side by side. Checked here:
the structure, and that every verdict follows from the numbers (timings
themselves live in the benchmark's output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapters.speech.distance import edit_distance
from benchmarks.caller_bench import TARGETS, verdicts, words
from engine.runtime.latency import percentile


def _result(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "voice_to_voice_ms": {"n": 4, "p95_ms": 600.0, "unanswered": 0},
        "barge_in_ms": {"n": 3, "p95_ms": 300.1, "missed": 0},
        "false_cutoffs": {"n": 20, "rate": 0.05},
        "false_barge_ins": {"non_speech": {"n": 4, "barged_in": 0}},
        "wer": {"reference_words": 30, "wer": 0.1}}
    base.update(over)
    return base


def test_verdicts_follow_from_the_numbers() -> None:
    got = verdicts(_result())
    assert got["voice_to_voice_p95_ms"] == {"target": "<= 600", "value": 600.0, "met": True}
    assert got["barge_in_p95_ms"]["met"] is False          # 300.1 > 300
    assert got["false_cutoff_rate"]["met"] is True          # 5 % is at the target
    assert got["false_barge_ins_non_speech"] == {"target": "<= 0", "value": 0, "met": True}
    assert got["wer"]["met"] is True
    # What could not be measured is never met.
    missed = verdicts(_result(barge_in_ms={"n": 3, "p95_ms": 10.0, "missed": 1},
                              voice_to_voice_ms={"n": 4, "p95_ms": 10.0, "unanswered": 1},
                              wer={"reference_words": 0, "wer": 0.0}))
    assert missed["barge_in_p95_ms"] == {"target": "<= 300", "value": None, "met": False}
    assert missed["voice_to_voice_p95_ms"]["met"] is False
    assert missed["wer"]["met"] is False
    one_cough = verdicts(_result(false_barge_ins={"non_speech": {"n": 4, "barged_in": 1}}))
    assert one_cough["false_barge_ins_non_speech"]["met"] is False


def test_words_are_normalised_before_counting_errors() -> None:
    assert words("What's the time? 10 of clubs, barge-in") == \
        ["what's", "the", "time", "ten", "of", "clubs", "barge", "in"]
    assert words("555") == ["five", "five", "five"]
    assert edit_distance(words("what time is it"), words("what is the time")) == 3
    assert edit_distance(words("hello"), []) == 1
    assert edit_distance([], words("hello there")) == 2


def test_quick_run_reports_both_configs_and_the_targets(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("turnchart")
    out = tmp_path / "caller.json"
    done = subprocess.run([str(exe), "bench", "caller", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert json.loads(out.read_text()) == result
    assert result["bench"] == "caller" and result["mode"] == "quick"
    assert set(result["configs"]) == {"defaults", "baseline"}
    assert result["baseline_overrides"] or result["baseline_todo"]
    assert result["targets"] == result["configs"]["defaults"]["targets"]
    for name, run in result["configs"].items():
        assert run["error_lines"] == 0, name
        v2v = run["voice_to_voice_ms"]
        assert v2v["n"] + v2v["unanswered"] == 2 == len(run["turns"]), name
        ordered = sorted(v2v["values_ms"])
        assert v2v["p50_ms"] == round(percentile(ordered, 50), 1)
        assert v2v["p95_ms"] == round(percentile(ordered, 95), 1)
        assert all(t["heard"] is not None for t in run["turns"])
        inside = run["server_turn_latency_ms"]   # the server's view of the same turns
        assert 1 <= inside["n"] <= len(run["turns"]), name
        barge = run["barge_in_ms"]
        assert len(barge["rows"]) == 1 and barge["n"] + barge["missed"] == 1, name
        cut = run["false_cutoffs"]
        assert cut["n"] == 1 and cut["rate"] == cut["cut_off"] / cut["n"]
        noise = run["false_barge_ins"]
        assert noise["non_speech"]["n"] == 1 and noise["backchannels"]["n"] == 1
        assert run["wer"]["reference_words"] == len(words("hello")) + len(words("what time is it"))
        capacity = run["capacity"]
        [level] = capacity["levels"]
        assert level["calls"] == 1 and level["server_cpu_cores_per_call"] > 0
        assert capacity["calls_at_voice_to_voice_target"] == (1 if level["at_target"] else 0)
        # Every verdict follows from the numbers reported beside it.
        targets = run["targets"]
        assert set(targets) == set(TARGETS)
        assert targets["voice_to_voice_p95_ms"]["value"] == \
            (v2v["p95_ms"] if v2v["n"] and not v2v["unanswered"] else None)
        assert targets["barge_in_p95_ms"]["value"] == \
            (barge["p95_ms"] if barge["n"] and not barge["missed"] else None)
        assert targets["false_cutoff_rate"]["value"] == cut["rate"]
        assert targets["false_barge_ins_non_speech"]["value"] == noise["non_speech"]["barged_in"]
        assert targets["wer"]["value"] == run["wer"]["wer"]
        for key, verdict in targets.items():
            value = verdict["value"]
            assert verdict["met"] == (value is not None and value <= TARGETS[key]), (name, key)
