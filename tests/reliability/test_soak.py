"""Soak: simulated callers on the real clock through the real SessionManager
(`turnchart bench soak`, benchmarks/soak_bench.py), run as a user would run it.

What is asserted is what must hold however fast the machine is: every session
that started ended, nothing of any session is left running, no ERROR line, no
contract violation, every malformed event explained, no caller stuck waiting
for a state, and the soak did what it claims (turns, barge-ins, hang-ups,
call-backs). Throughput, latency and memory figures are reported, not
asserted (docs/reliability.md keeps those of the last run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def soak(tmp_path: Path, sessions: int, duration_s: float) -> dict[str, Any]:
    out = tmp_path / "soak.json"
    exe = Path(sys.executable).with_name("turnchart")
    result = subprocess.run([str(exe), "bench", "soak", "--sessions", str(sessions),
                             "--duration-s", str(duration_s), "--rate-multiplier", "10",
                             "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=duration_s * 4 + 120)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    assert json.loads(out.read_text()) == data
    return data


def check(data: dict[str, Any], sessions: int) -> None:
    assert data["benchmark"] == "soak" and data["sessions"] == sessions
    # everything ended, nothing is left
    assert data["sessions_started"] == data["sessions_closed"] >= sessions
    assert data["sessions_open_at_end"] == 0 and data["sessions_failed"] == 0
    assert data["tasks_alive_after_close"] == 0, data["leftover_tasks"]
    assert data["manager_live_tasks_after_close"] == 0
    assert data["stuck_sessions"] == 0, data["stuck"]
    # nothing went wrong, and what was refused was explained
    assert data["error_lines"] == 0, data["error_lines_by_kind"]
    assert data["contract_violations"] == 0
    assert data["event_invalid_lines"] == data["invalid_sent"] > 0
    assert data["invalid_fields"] == {"payload.text": data["invalid_sent"]}
    # the soak did what it says
    assert data["calls"] > sessions and data["hang_ups"] > 0      # callers called back
    assert data["turns"] > data["calls"] and data["barge_ins"] > 0
    assert data["events_applied"] > 0 and data["step_ms"]["n"] > 0
    assert data["event_to_transition_ms"]["n"] > 0
    assert len(data["rss_samples"]) >= 3
    assert all(data["targets"][k] for k in ("tasks_alive_after_close_is_0", "no_error_lines",
                                            "no_contract_violations", "every_session_ended",
                                            "every_invalid_event_explained"))


def test_a_short_soak_ends_every_session_and_leaves_nothing_running(tmp_path: Path) -> None:
    check(soak(tmp_path, sessions=100, duration_s=5), sessions=100)


@pytest.mark.long
def test_a_thousand_sessions_for_a_minute(tmp_path: Path) -> None:
    check(soak(tmp_path, sessions=1000, duration_s=60), sessions=1000)


def test_bad_soak_arguments_are_a_usage_error() -> None:
    exe = Path(sys.executable).with_name("turnchart")
    result = subprocess.run([str(exe), "bench", "soak", "--sessions", "0", "--duration-s", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "sessions >= 1" in result.stderr and result.stdout == ""
