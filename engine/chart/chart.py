"""One call from chart text or file to a `CompiledChart` (or every problem in it)."""

from __future__ import annotations

from pathlib import Path

from engine.chart.compiler import CompiledChart, compile_chart
from engine.chart.registry import Registry
from engine.chart.source import load_yaml
from engine.chart.validator import validate


def compile_text(text: str, path: str = "<string>", registry: Registry | None = None
                 ) -> CompiledChart:
    """Load, validate and compile chart text; raise `ChartErrors` with all problems."""
    if registry is None:
        from engine.runtime.behaviours import default_registry
        registry = default_registry()
    validated = validate(load_yaml(text, path), registry)
    return compile_chart(validated, registry)


def load_chart(path: str | Path, registry: Registry | None = None) -> CompiledChart:
    """Read a chart file and compile it. An unreadable file raises `OSError`
    (a usage problem, exit 2 in the CLI), not `ChartErrors`."""
    text = Path(path).read_text(encoding="utf-8")
    return compile_text(text, str(path), registry)
