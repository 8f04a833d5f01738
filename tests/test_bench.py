"""The benchmarks run and report what they promise (numbers are not asserted:
timing targets live in the benchmark output, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> dict[str, object]:
    exe = Path(sys.executable).with_name("turnchart")
    result = subprocess.run([str(exe), "bench", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_compile_bench_reports_shipped_and_generated_charts() -> None:
    data = bench("compile")
    assert data["benchmark"] == "compile"
    assert float(data["voice_turn_ms"]) > 0  # type: ignore[arg-type]
    sizes = [g["states"] for g in data["generated"]]  # type: ignore[attr-defined]
    assert sizes == [50, 100, 250, 500]


def test_engine_bench_reports_the_three_variants(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    data = bench("engine", "--events", "300", "--sessions", "300", "--out", str(out))
    assert json.loads(out.read_text()) == data
    per_event = data["us_per_event"]
    assert set(per_event) == {"a_raw_statemachine", "b_session_step", "c_dict_floor"}  # type: ignore[arg-type]
    assert data["ratio_b_over_a"] > 0  # type: ignore[operator]
    assert data["bytes_per_idle_session"] > 0  # type: ignore[operator]


def test_voice_bench_measures_turns_and_barge_ins() -> None:
    data = bench("voice", "--turns", "2")
    assert data["turns"] == 2
    assert data["error_lines"] == 0
    assert data["turn_latency_ms"]["n"] == 2  # type: ignore[index]
    assert data["time_to_silence_ms"]["n"] == 2  # type: ignore[index]
