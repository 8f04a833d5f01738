"""What one guard of a transition row says: the one implementation (issue 15 §2).

A row's guard is a registered function, the chart's arguments to it (`args:`,
issue 16 §3) and possibly a negation (`not name`, `not: true`). The kernel's
conditions (engine/chart/compiler.py) and `turnchart paths` (engine/tools/paths.py, which
predicts what the kernel will do with an input and may *force* the function's
answer for guards without examples) both evaluate guards through `RowGuard`,
so the two cannot disagree on how arguments are passed or how `not` applies.

The rows themselves are tried in chart order, a row's guards in order, and the
first guard that does not hold stops its row (python-statemachine's semantics;
`turnchart paths` walks rows the same way and tests/test_guard_semantics.py
checks that both give the same row and the same failing guards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from engine.chart.registry import GuardFn, GuardInput
from engine.chart.spec import GuardRef


@dataclass(frozen=True, slots=True)
class RowGuard:
    """A guard as a row uses it: the function, the row's arguments, the negation."""

    ref: GuardRef
    fn: GuardFn
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def bind(cls, ref: GuardRef, fn: GuardFn) -> RowGuard:
        return cls(ref, fn, MappingProxyType(ref.arguments))

    @property
    def label(self) -> str:
        """How the guard is named in logs (`failed_guards`) and reports."""
        return str(self.ref)

    def answer(self, inp: GuardInput) -> bool:
        """The function's own answer (before `not`), given the step's event, payload
        and data; the row's arguments replace any the input carries."""
        return bool(self.fn(replace(inp, args=self.args) if self.args else inp))

    def holds(self, answer: bool) -> bool:
        """Whether the guard holds when its function answers `answer` (`not` flips it)."""
        return answer != self.ref.negated

    def check(self, inp: GuardInput) -> bool:
        """Whether the guard holds for this input (what the kernel asks)."""
        return self.holds(self.answer(inp))


__all__ = ["RowGuard"]
