"""`benchmarks/redis_bench.run()` runs end to end and reports what it promises
(a tiny run: structure, not timings; the numbers live in the benchmark output)."""

from __future__ import annotations

import json

from benchmarks.redis_bench import run, run_quick
from tests.support.redis_server import redis_server_binary


def test_redis_bench_reports_ceiling_latency_and_throughput() -> None:
    redis_server_binary()          # a clear failure when redis-server is missing
    result = run(ceiling_ops=300, latency_events=60, active_sessions=80, rate_hz=300,
                 rate_one_hz=150, sweep_rates=(150.0, 300.0), throughput_sessions=20,
                 throughput_events=400, worker_counts=(1,))
    json.dumps(result)             # JSON-able
    ceiling = result["xadd_ceiling"]
    assert ceiling["redis_py_xadd_per_s"] > 0 and ceiling["redis_py_xadd_pipelined_per_s"] > 0
    runs = {"1_session_inline", "80_sessions_inline", "1_session_process", "80_sessions_process"}
    assert set(result["latency"]) == runs | {f"{name}_before" for name in runs}
    for name, lat in result["latency"].items():
        assert lat["publish_to_applied"]["n"] == 60, name
        assert lat["error_lines"] == 0, name
    # Side by side: the old read path (activity hints above 64 streams) and lanes.
    assert result["latency"]["80_sessions_inline_before"]["read_mode"] == "hints"
    assert result["latency"]["80_sessions_inline"]["read_mode"] == "lanes:3"
    assert result["latency"]["1_session_process"]["read_mode"] == "lanes:1"
    assert "at 80 sessions" in result["targets"]["latency_summary"]
    # The load sweep: the headline run plus the lighter loads, with CPU use.
    sweep = result["load_sweep"]
    assert [row["rate_hz"] for row in sweep] == [150.0, 300.0]
    for row in sweep:
        assert row["sessions"] == 80 and row["publish_to_applied"]["n"] == 60
        assert row["cores_busy"] > 0 and row["cores"] >= 1
        assert row["floor_xadd_to_blocked_xread"]["n"] == 60
    assert sweep[1]["publish_to_applied"] == \
        result["latency"]["80_sessions_process"]["publish_to_applied"]
    cost = result["targets"]["session_count_cost"]
    assert cost["rate_hz"] == 150 and cost["1_session"]["n"] == 60 \
        and cost["80_sessions"]["n"] == 60
    assert "Load sweep at 80 sessions" in result["targets"]["load_summary"]
    highest = result["targets"]["highest_rate_with_p99_le_2ms_at_many_sessions"]
    met = [row["rate_hz"] for row in sweep if row["publish_to_applied"]["p99_ms"] <= 2.0]
    assert highest == (max(met) if met else None)
    assert result["targets"]["rates_where_the_floor_alone_misses_2ms"] == [
        row["rate_hz"] for row in sweep if row["floor_xadd_to_blocked_xread"]["p99_ms"] > 2.0]
    assert result["machine_hiccups"]["oversleep"]["n"] > 100
    [one] = result["throughput"].values()
    assert one["events"] == 400 and one["events_per_s"] > 0
    assert set(result["targets"]) >= {"p99_le_2ms_at_many_sessions",
                                      "throughput_ge_half_redis_py_xadd",
                                      "worker_cpu_per_event_le_1_5x_step"}
    cost = result["targets"]["worker_cpu_per_event_over_step"]
    assert cost["session_step_cpu_us"] > 0 and cost["sessions"] == 80
    assert cost["ratio"] == round(cost["worker_cpu_us_per_event"] / cost["session_step_cpu_us"], 2)
    assert cost["session_step"] == "back_to_back"
    assert result["targets"]["worker_cpu_per_event_le_1_5x_step"] is cost["met"]
    assert "session step (back to back, same run)" in result["targets"]["cost_summary"]


def test_quick_redis_bench_reports_worker_cpu_over_the_session_step() -> None:
    result = run_quick(sessions=20, events=200, rate_hz=400)
    json.dumps(result)
    cost = result["worker_cpu_per_event_over_step"]
    assert result["session_step"]["events"] == 200 and result["worker"]["error_lines"] == 0
    assert result["worker"]["publish_to_applied"]["n"] == 200
    assert cost["worker_cpu_us_per_event"] == result["worker"]["cpu_us_per_event"]["worker"]
    assert cost["ratio"] > 0 and cost["target_ratio_le"] == 1.5
    # the headline ratio is to the same steps back to back (issue 15's measure);
    # the step paced as the worker's events arrive is reported beside it
    step = result["session_step"]
    assert cost["session_step"] == "back_to_back" and step["rate_hz"] == 400
    assert cost["session_step_cpu_us"] == step["back_to_back_cpu_us_per_event"] > 0
    assert cost["ratio"] == round(cost["worker_cpu_us_per_event"] / cost["session_step_cpu_us"],
                                  2)
    assert cost["session_step_paced_cpu_us"] == step["paced_cpu_us_per_event"] > 0
    assert cost["ratio_to_paced_step"] == round(
        cost["worker_cpu_us_per_event"] / cost["session_step_paced_cpu_us"], 2)
    assert cost["paced_step_over_back_to_back"] == round(
        cost["session_step_paced_cpu_us"] / cost["session_step_cpu_us"], 2)
    # `targets` says whether it is met, and says so in words
    targets = result["targets"]
    assert targets["worker_cpu_per_event_over_step"] == cost
    assert targets["worker_cpu_per_event_le_1_5x_step"] is cost["met"] is (cost["ratio"] <= 1.5)
    assert ("NOT MET" in targets["cost_summary"]) is not cost["met"]
