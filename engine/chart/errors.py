"""Chart problems with a stable code and a `file:line:col` position.

Every problem the loader or the validator finds becomes one `ChartError`.
`ChartErrors` carries all of them at once so a person fixes a chart in one
pass, like with a compiler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from difflib import get_close_matches
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class ChartError:
    """One problem in a chart file. `line` and `col` are 1-based."""

    path: str
    line: int
    col: int
    code: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ChartErrors(Exception):
    """Raised when a chart cannot be used; holds every error found, in file order."""

    def __init__(self, errors: Sequence[ChartError], warnings: Sequence[ChartError] = ()) -> None:
        self.errors: tuple[ChartError, ...] = tuple(sort_problems(errors))
        self.warnings: tuple[ChartError, ...] = tuple(sort_problems(warnings))
        super().__init__("\n".join(str(e) for e in self.errors))


def sort_problems(problems: Iterable[ChartError]) -> list[ChartError]:
    """File order, then code, so the output is stable and golden-testable."""
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda e: (e.path, e.line, e.col, e.code, e.message))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'X'?)` when a close candidate exists, else ``""``."""
    matches = get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
