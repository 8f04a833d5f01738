"""Edit distance (Levenshtein) between two sequences: letters or words.

Why one place: Whisper's vocabulary compares two decodes letter by letter (a question
heard with other word breaks), and the speech benchmarks count word errors (WER) the
same way over words.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Fewest insertions, deletions and substitutions that turn `a` into `b`."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[len(b)]
