"""Per-session transition latency and dwell statistics, from durations only.

Percentiles are computed from the recorded durations (never by averaging
timestamps); each `from→to` pair keeps its most recent `window` samples.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


class LatencyStats:
    def __init__(self, window: int = 512) -> None:
        self.window = window
        self._latency: dict[str, deque[float]] = {}
        self._dwell: dict[str, deque[float]] = {}
        self._count: dict[str, int] = {}

    def record(self, source: str, target: str, latency_ms: float, dwell_ms: float) -> None:
        key = f"{source}→{target}"
        if key not in self._latency:
            self._latency[key] = deque(maxlen=self.window)
            self._dwell[key] = deque(maxlen=self.window)
            self._count[key] = 0
        self._latency[key].append(latency_ms)
        self._dwell[key].append(dwell_ms)
        self._count[key] += 1

    @staticmethod
    def _summary(values: deque[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"p50": round(percentile(ordered, 50), 3), "p95": round(percentile(ordered, 95), 3),
                "max": round(ordered[-1], 3) if ordered else 0.0}

    def as_dict(self) -> dict[str, Any]:
        """`{"LISTENING→THINKING": {"count", "latency_ms": {p50,p95,max}, "dwell_ms": {…}}}`."""
        return {key: {"count": self._count[key],
                      "latency_ms": self._summary(self._latency[key]),
                      "dwell_ms": self._summary(self._dwell[key])}
                for key in self._latency}
