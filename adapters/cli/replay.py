"""`turnchart replay`: re-run recorded calls against a chart and show what changes.

    turnchart replay LOG.jsonl [--chart PATH] [--session ID] [--format text|json]
    turnchart replay --redis URL --session ID --chart PATH [LOG.jsonl]

The recorded events come from the log lines (engine/tools/replay.py), or from the
session's Redis stream (adapters/redis/history.py) when `--redis` is given;
the recorded transitions and the activities' answers always come from a log.
Exit codes: 0 every replayed session matches its recording (or there was no
recording to compare with), 1 at least one diverges, 2 usage or I/O error
(unreadable log or line, no such session, bad chart, Redis unreachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartErrors
from engine.chart.registry import Registry
from engine.runtime.logs import JsonLinesSink
from engine.tools.replay import (
    LogError,
    ParsedLog,
    RecordedInput,
    Recording,
    Report,
    inputs_from_events,
    load_log,
    replay_recording,
)

EXIT_SAME, EXIT_DIVERGED, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """Something the user must fix before anything can be replayed (exit 2)."""


def add_replay_command(sub: Any) -> None:
    """Register `replay` on the `turnchart` sub-command parser."""
    p = sub.add_parser("replay", help="re-run recorded calls against a chart; show what changes")
    p.add_argument("log", nargs="?", metavar="LOG.jsonl",
                   help="JSON log lines of a server, worker or `turnchart simulate`")
    p.add_argument("--chart", metavar="PATH",
                   help="the chart to replay against (default: the one the log says ran)")
    p.add_argument("--session", metavar="ID", help="only this session (default: every session)")
    p.add_argument("--redis", metavar="URL",
                   help="take the session's received events from its Redis stream")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--changes-only", action="store_true",
                   help="text: a session that replays identically gets its summary line only")
    p.add_argument("--trace", metavar="FILE",
                   help="also write the replay's own log lines (JSON lines) here")
    p.add_argument("--registry", metavar="MODULE:FACTORY")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from adapters.cli.main import _registry
    try:
        reports, parsed = _replay(args, _registry(args.registry))
    except UsageProblem as exc:
        print(f"turnchart: {exc}", file=sys.stderr)
        return EXIT_USAGE
    diverged = any(r.diverges for r in reports)
    if args.trace:
        try:
            with open(args.trace, "w", encoding="utf-8") as out:
                sink = JsonLinesSink(out)
                for report in reports:
                    for record in report.trace:
                        sink.write(record)
        except OSError as exc:
            print(f"turnchart: cannot write {args.trace}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.format == "json":
        print(json.dumps({"log": args.log, "redis": bool(args.redis),
                          "skipped_lines": parsed.skipped,
                          "lines_without_session": parsed.unscoped,
                          "diverges": diverged, "sessions": [r.to_dict() for r in reports]},
                         indent=2, ensure_ascii=False))
    else:
        for report in reports:
            print(_summary(report) if args.changes_only and not report.diverges
                  else render_text(report))
        if len(reports) > 1:
            changed = sum(1 for r in reports if r.diverges)
            print(f"{len(reports)} session(s): {len(reports) - changed} identical, "
                  f"{changed} diverging")
        if parsed.skipped:
            print(f"({parsed.skipped} line(s) that are not turnchart log lines skipped, the "
                  f"first at line {parsed.first_skipped})")
    return EXIT_DIVERGED if diverged else EXIT_SAME


def _replay(args: argparse.Namespace, registry: Registry) -> tuple[list[Report], ParsedLog]:
    if not args.log and not args.redis:
        raise UsageProblem("replay needs a LOG.jsonl, or --redis URL --session ID")
    if args.redis and not args.session:
        raise UsageProblem("--redis needs --session ID (the stream of which session?)")
    parsed = _read_log(args.log) if args.log else ParsedLog([], 0, 0)
    recordings = parsed.select(args.session) if args.log else [
        Recording(args.session, args.session)]
    if not recordings:
        found = ", ".join(r.label for r in parsed.recordings) or "none"
        raise UsageProblem(f"{args.log}: no session {args.session!r} in the log (found: {found})"
                           if args.session else f"{args.log}: no session log lines in it")
    stream: list[RecordedInput] | None = None
    if args.redis:
        if len(recordings) > 1:
            labels = ", ".join(r.label for r in recordings)
            raise UsageProblem(f"session {args.session} is in the log more than once ({labels});"
                               f" pick one with --session")
        stream = _read_stream(args.redis, args.session, recordings[0])
    charts: dict[Path, CompiledChart] = {}
    reports = []
    for recording in recordings:
        chart = _chart_for(recording, args, registry, charts)
        reports.append(replay_recording(recording, chart, registry, stream,
                                        compare=bool(args.log)))
    return reports, parsed


def _read_log(path: str) -> ParsedLog:
    try:
        return load_log(path)
    except LogError as exc:
        raise UsageProblem(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from None


def _read_stream(url: str, session_id: str, recording: Recording) -> list[RecordedInput]:
    import asyncio

    from redis.exceptions import RedisError

    from adapters.redis.history import read_history_from_url
    try:
        history = asyncio.run(read_history_from_url(url, session_id))
    except (RedisError, OSError) as exc:   # the URL is not printed: it may hold a password
        raise UsageProblem(f"cannot read the stream of session {session_id} from Redis: "
                           f"{type(exc).__name__}: {exc}") from None
    offset = recording.inputs[0].t_ms if recording.inputs else 0.0
    inputs, skipped = inputs_from_events(history.events, offset)
    if not inputs:
        raise UsageProblem(f"no events on {history.key} (a finished session's stream expires "
                           f"10 minutes after its end; replay its log lines instead)")
    if skipped or history.unreadable:
        print(f"turnchart: {history.key}: {skipped + len(history.unreadable)} entr(y/ies) "
              f"that are not valid outside events not replayed", file=sys.stderr)
    return inputs


def _chart_for(recording: Recording, args: argparse.Namespace, registry: Registry,
               cache: dict[Path, CompiledChart]) -> CompiledChart:
    """`--chart`, else the chart the recording says ran (as written, then beside the log)."""
    from engine.chart.chart import load_chart
    given = args.chart or recording.chart.path
    if not given:
        raise UsageProblem(f"the log does not say which chart session {recording.label} ran; "
                           f"pass --chart PATH")
    path = Path(given)
    if not args.chart and not path.is_absolute() and not path.exists() and args.log:
        beside = Path(args.log).resolve().parent / path
        path = beside if beside.exists() else path
    if path not in cache:
        try:
            cache[path] = load_chart(path, registry)
        except ChartErrors as exc:
            raise UsageProblem(f"bad chart {path}:\n{exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            hint = "" if args.chart else " (the chart the log names; pass --chart PATH)"
            raise UsageProblem(f"cannot read chart {path}{hint}: {exc}") from None
    return cache[path]


# ------------------------------------------------------------------- output
def _shown(path: str) -> str:
    """A path as short as it reads: relative to the working directory when inside it."""
    try:
        return str(Path(os.path.normpath(path)).resolve().relative_to(Path.cwd()))
    except ValueError:
        return os.path.normpath(path)


def _ms(t: float | None) -> str:
    if t is None:
        return ""
    return f"{t:.0f}" if abs(t - round(t)) < 0.05 else f"{t:.1f}"


def render_text(report: Report) -> str:
    """The side-by-side table (recorded │ mark │ replayed) and a summary."""
    recorded = report.recorded_chart
    was = (f"{recorded.name} v{recorded.version} ({recorded.version_hash})"
           if recorded.name else "an unnamed chart")
    against = ("the same chart" if recorded.version_hash == report.chart_hash
               else f"{report.chart_hash}")
    lines = [f"replay of {report.label}: recorded with {was}; replayed against "
             f"{_shown(report.chart_path)} ({against}), {report.inputs} outside event(s)"]
    if report.compared:
        left = max([len("recorded"), *(len(r.recorded.text()) for r in report.rows
                                        if r.recorded)])
        lines.append(f"{'ms':>7}  {'recorded':<{left}}   {'ms':>7}  replayed")
        for row in report.rows:
            rec, rep = row.recorded, row.replayed
            lines.append(f"{_ms(rec.t_ms if rec else None):>7}  "
                         f"{rec.text() if rec else '':<{left}} {row.mark} "
                         f"{_ms(rep.t_ms if rep else None):>7}  {rep.text() if rep else ''}"
                         .rstrip())
    else:
        lines.append(f"{'ms':>7}  replayed (no recorded transitions to compare with)")
        lines += [f"{_ms(r.replayed.t_ms):>7}  {r.replayed.text()}" for r in report.rows
                  if r.replayed]
    for note in report.unanswered:
        lines.append(f"{_ms(note.t_ms):>7}  ? {note.message}")
    for note in report.notes:
        where = "only in the replay" if note.side == "replay" else "only in the recording"
        lines.append(f"{_ms(note.t_ms):>7}  {where}: {note.message}")
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _summary(report: Report) -> str:
    counts = report.counts
    if not report.compared:
        return (f"{report.label}: {len(report.rows)} replayed transition(s)"
                + (f", {counts['unanswered']} activity run(s) without a recorded answer"
                   if counts["unanswered"] else ""))
    parts = f"{counts['same']} same, {counts['changed']} changed, {counts['missing']} missing, " \
            f"{counts['extra']} extra" + (f", {counts['unanswered']} unanswered"
                                          if counts["unanswered"] else "")
    first = report.divergence()
    if first is None:
        return f"{report.label}: identical ({parts})"
    if first["mark"] == "?":
        return f"{report.label}: DIVERGES ({parts}) at {_ms(first['t_ms'])} ms: {first['replayed']}"
    cause = f"{first['event']}" + (f" from {first['source']}" if first["source"] else "")
    what = {"≠": f"recorded {first['recorded']}, replayed {first['replayed']}",
            "-": f"recorded {first['recorded']}, not in the replay",
            "+": f"the replay adds {first['replayed']}"}[first["mark"]]
    return f"{report.label}: DIVERGES ({parts}) at {_ms(first['t_ms'])} ms, {cause}: {what}"
