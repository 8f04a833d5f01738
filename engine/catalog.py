"""The set of charts a process serves, by name, with the problems of any that failed.

A bad chart never replaces a good one: `load` keeps the last good version of a
chart and records the errors of the new one next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.chart import load_chart
from engine.compiler import CompiledChart
from engine.errors import ChartError, ChartErrors
from engine.registry import Registry


@dataclass
class ChartEntry:
    """One chart file: its good compiled version (if any) and its latest problems."""

    path: str
    chart: CompiledChart | None = None
    errors: tuple[ChartError, ...] = ()

    @property
    def name(self) -> str:
        return self.chart.name if self.chart else Path(self.path).stem


@dataclass
class ChartCatalog:
    registry: Registry
    entries: dict[str, ChartEntry] = field(default_factory=dict)

    def load(self, path: str | Path) -> ChartEntry:
        """(Re)load a chart file; on errors keep the previous good version."""
        key = str(path)
        entry = self.entries.get(key) or ChartEntry(key)
        try:
            entry.chart = load_chart(path, self.registry)
            entry.errors = ()
        except ChartErrors as exc:
            entry.errors = exc.errors
        except (OSError, UnicodeDecodeError) as exc:
            entry.errors = (ChartError(key, 1, 1, "E100", f"cannot read chart: {exc}"),)
        self.entries[key] = entry
        return entry

    def by_name(self, name: str) -> ChartEntry | None:
        for entry in self.entries.values():
            if entry.name == name:
                return entry
        return None

    def charts(self) -> list[CompiledChart]:
        return [e.chart for e in self.entries.values() if e.chart is not None]
