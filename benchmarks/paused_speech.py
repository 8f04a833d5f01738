"""A sentence with a pause in the middle, as a caller says it (shared by the benches).

Why not two halves spoken apart: a TTS voice says "my number is" alone as a finished
sentence, with the falling pitch and final lengthening of an ending. A caller who stops
to think mid-sentence does not: the words before the pause carry the intonation of an
unfinished sentence. So the whole sentence is spoken once with a comma at the pause and
cut at the comma's gap; the caller bench and benchmarks/turn_cutoffs.py then widen that
gap to the pause they test (400-900 ms of room noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_MS = 10


def split_at_pause(whole: np.ndarray[Any, Any], first_alone: int,
                   rate: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """`whole` ("first, second" spoken as one sentence) cut at the comma's gap: (before,
    after), the gap itself dropped. `first_alone` is the length in samples of the first
    part spoken on its own: the gap is the longest quiet run between 0.6 and 1.3 times
    that (10 ms blocks, quiet = below 2% of the loudest block, at least RMS 50)."""
    block = rate * BLOCK_MS // 1000
    n = len(whole) // block
    energy = np.sqrt(np.mean(whole[: n * block].astype(np.float64).reshape(n, block) ** 2,
                             axis=1))
    quiet = energy < max(50.0, 0.02 * float(energy.max()))
    best_len, best_end, run = 0, 0, 0
    for i in range(int(first_alone * 0.6 / block), min(n, int(first_alone * 1.3 / block))):
        run = run + 1 if quiet[i] else 0
        if run > best_len:
            best_len, best_end = run, i
    if best_len == 0:   # no gap found: cut where the first part alone ends
        cut = min(len(whole), first_alone)
        return whole[:cut], whole[cut:]
    start = best_end - best_len + 1
    return whole[: start * block], whole[(best_end + 1) * block:]
