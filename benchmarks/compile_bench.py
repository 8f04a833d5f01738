"""Validate + compile time for the shipped chart and generated N-state charts.

Goal (issue 3): voice_turn.yaml under 50 ms; a 500-state chart under 1 s,
growing linearly. Run: `turnchart bench compile` (JSON on stdout).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import best_of, machine
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry

ROOT = Path(__file__).resolve().parent.parent


def generated_chart(n: int) -> str:
    """A ring of `n` states, each with a contract, an enter effect and a guarded exit."""
    lines = ["chart: generated", "version: 1", "initial: S0", "contracts:",
             "  microphone: [open, gated, closed]", "  playback: [stopped, streaming]",
             "events:", "  go: {payload: {text: str}}", "  back: {}", "states:"]
    for i in range(n):
        lines += [f"  S{i}:", "    contract: {microphone: open, playback: stopped}",
                  "    enter: [cancel_filler]", "    on:",
                  f"      go: {{target: S{(i + 1) % n}, guard: has_text}}",
                  f"      back: S{(i - 1) % n}"]
    return "\n".join(lines) + "\n"


def run(sizes: tuple[int, ...] = (50, 100, 250, 500), repeat: int = 5) -> dict[str, Any]:
    registry = default_registry()
    shipped = (ROOT / "charts" / "voice_turn.yaml").read_text(encoding="utf-8")
    results: dict[str, Any] = {
        "benchmark": "compile", "machine": machine(),
        "voice_turn_ms": round(best_of(partial(compile_text, shipped, "voice_turn.yaml", registry),
                                       repeat) * 1000, 3),
        "generated": []}
    for n in sizes:
        text = generated_chart(n)
        seconds = best_of(partial(compile_text, text, "generated.yaml", registry), repeat)
        ms = seconds * 1000
        results["generated"].append({"states": n, "ms": round(ms, 2),
                                     "us_per_state": round(ms * 1000 / n, 1)})
    per_state = [g["us_per_state"] for g in results["generated"]]
    results["growth_ratio_largest_vs_smallest_per_state"] = round(per_state[-1] / per_state[0], 2)
    results["goals"] = {"voice_turn_under_50ms": results["voice_turn_ms"] < 50,
                        "500_states_under_1s": next(g["ms"] for g in results["generated"]
                                                    if g["states"] == max(sizes)) < 1000}
    return results
