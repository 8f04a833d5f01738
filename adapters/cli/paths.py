"""`turnchart paths PATH`: generated path tests for a chart, as a CI gate.

The engine (engine/tools/paths.py) generates the sequences, runs them on the
virtual clock and reads the traces back; this module prints the coverage table
and the problems, writes the sequences as scenarios with `--out`, and turns
the result into an exit code: 0 when coverage reaches `--min-coverage` and
nothing went wrong, 1 otherwise, 2 for a chart that cannot be read or loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from engine.chart.chart import load_chart
from engine.chart.errors import ChartErrors
from engine.chart.source import Position
from engine.tools.paths import GeneratedPath, Hit, PathReport, generate_paths, write_scenarios

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage between 0 and 100")
    return value


def add_paths_parser(sub: Any) -> None:
    """Register `paths` on the `turnchart` sub-command parser."""
    p = sub.add_parser("paths", help="generate event sequences covering every transition and "
                                     "guard outcome; run them; report coverage and problems")
    p.add_argument("path", metavar="PATH", help="the chart to cover")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--registry", metavar="MODULE:FACTORY",
                   help="a Registry factory for charts with your own guards/effects/activities")
    p.add_argument("--min-coverage", type=_percent, default=100.0, metavar="PERCENT",
                   help="least transition and guard-outcome coverage that passes (default 100)")
    p.add_argument("--out", metavar="DIR",
                   help="write every generated sequence here as a scenario for "
                        "`turnchart simulate`")
    p.set_defaults(func=cmd_paths)


def cmd_paths(args: argparse.Namespace) -> int:
    from adapters.cli.main import _registry
    registry = _registry(args.registry)
    try:
        chart = load_chart(args.path, registry)
    except ChartErrors as exc:
        print(f"turnchart: cannot generate paths for an invalid chart:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, UnicodeDecodeError) as exc:
        print(f"turnchart: cannot read {args.path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = generate_paths(chart, registry)
    files: list[Path] = []
    if args.out:
        out = Path(args.out)
        try:
            chart_ref = os.path.relpath(Path(args.path).resolve(), out.resolve())
            files = write_scenarios(report, out, chart_ref)
        except OSError as exc:
            print(f"turnchart: cannot write scenarios to {args.out}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.format == "json":
        body = report.as_dict(args.min_coverage)
        body["scenarios"] = [str(f) for f in files]
        print(json.dumps(body, indent=2, ensure_ascii=False, default=str))
    else:
        print(render_text(report, args.min_coverage, files))
    return EXIT_OK if report.ok(args.min_coverage) else EXIT_FAILED


# ------------------------------------------------------------------- text
def _where(path: str, pos: Position | None) -> str:
    return f"{path}:{pos.line}:{pos.col}" if pos else path


def _via(hit: Hit | None) -> str:
    if hit is None:
        return "NOT COVERED"
    if hit.via == "outside":
        return "outside"
    return hit.detail if hit.via in ("timer", "activity") else f"{hit.via}: {hit.detail}"


def _steps(path: GeneratedPath) -> str:
    parts = []
    for step in path.steps:
        payload = f" {json.dumps(dict(step.payload), ensure_ascii=False)}" if step.payload else ""
        forced = f" ({step.forced_text()})" if step.forced_text() else ""
        parts.append(f"{step.event}@{step.at:g}ms{payload}{forced}")
    return ", ".join(parts) or "(no event)"


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    return ["  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]
            for r in rows]


def render_text(report: PathReport, min_coverage: float, files: list[Path]) -> str:
    """The coverage table, the paths and each problem, for a person or a CI log."""
    where = report.chart_path
    lines = [f"{where}: transitions {report.rows_covered}/{len(report.rows)} "
             f"({report.transition_percent:g}%), guard outcomes {report.guards_covered}/"
             f"{len(report.guards)} ({report.guard_percent:g}%), {len(report.paths)} path(s) "
             f"(of {report.explored} tried), {len(report.problems)} problem(s)", "",
             "transitions"]
    rows = []
    for r in report.rows:
        via = _via(r.hit)
        seen = f"path {r.hit.path}" if r.hit else ""
        if r.from_states and r.from_states != (r.row.source,):
            seen += f" (fired in {', '.join(r.from_states)})"
        rows.append((_where(where, r.position), r.label(), via, seen))
    lines += _table(rows)
    if report.guards:
        lines += ["", "guard outcomes"]
        guard_rows = []
        for g in report.guards:
            via = _via(g.hit)
            guard_rows.append((_where(where, g.position), g.label(), via,
                               f"path {g.hit.path}" if g.hit else ""))
        lines += _table(guard_rows)
    lines += ["", "paths"]
    for p in report.paths:
        lines.append(f"  {p.number:>3}. {_steps(p)} → {p.final_state} at {p.until_ms:g} ms"
                     + ("" if p.quiescent else " (timers still pending)"))
    lines += ["", "problems"]
    if not report.problems:
        lines.append("  none")
    for problem in report.problems:
        path = report.paths[problem.path - 1]
        lines.append(f"  {problem.kind} (path {problem.path}, in {problem.state}): "
                     f"{problem.message}")
        lines.append(f"      sequence: {_steps(path)}")
        if problem.line is not None:
            lines.append(f"      log: {json.dumps(problem.line, ensure_ascii=False, default=str)}")
    if files:
        lines += ["", f"wrote {len(files)} scenario(s) to {files[0].parent} "
                      "(replay one with `turnchart simulate FILE`)"]
    verdict = "ok" if report.ok(min_coverage) else "FAILED"
    reasons = []
    if report.transition_percent < min_coverage or report.guard_percent < min_coverage:
        reasons.append(f"coverage below {min_coverage:g}%")
    if report.problems:
        reasons.append(f"{len(report.problems)} problem(s)")
    lines += ["", f"{where}: {verdict}" + (f" ({', '.join(reasons)})" if reasons else "")]
    return "\n".join(lines)
