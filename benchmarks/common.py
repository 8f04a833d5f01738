"""Small timing helpers shared by the benchmarks: best-of-N wall time, JSON output."""

from __future__ import annotations

import gc
import platform
import sys
import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Best wall time in seconds of `repeat` runs (GC off while timing)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def machine() -> dict[str, Any]:
    import os
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count()}
