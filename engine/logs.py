"""Structured JSON log lines (CHART_FORMAT.md §3): one object per line,
`session_id` on every line, emoji only in the human `message`."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from engine.clock import Clock

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
Record = dict[str, Any]


class LogSink(Protocol):
    def write(self, record: Record) -> None: ...


class JsonLinesSink:
    """Writes each record as one JSON line (stdout by default) and flushes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, record: Record) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str)
        try:
            self.stream.write(line + "\n")
        except UnicodeEncodeError:   # text UTF-8 cannot hold (an unpaired surrogate): escape it
            self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


class ListSink:
    """Keeps records in memory: for tests, the simulator and the latency page."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, record: Record) -> None:
        self.records.append(record)

    def of_type(self, event_type: str, session_id: str | None = None) -> list[Record]:
        return [r for r in self.records if r["event_type"] == event_type
                and (session_id is None or r["session_id"] == session_id)]


class NullSink:
    def write(self, record: Record) -> None:
        return None


class FanOutSink:
    def __init__(self, *sinks: LogSink) -> None:
        self.sinks = sinks

    def write(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record)


class LevelFilterSink:
    """Passes on records at or above `level`: lets one log feed a DEBUG reader (the
    live inspector) while stdout keeps the configured level."""

    def __init__(self, sink: LogSink, level: str) -> None:
        self.sink = sink
        self.threshold = LEVELS[level]

    def write(self, record: Record) -> None:
        if LEVELS.get(record["level"], 0) >= self.threshold:
            self.sink.write(record)


_second_cache: tuple[int, str] = (-1, "")


def iso_utc(wall: float) -> str:
    """`2026-11-22T10:00:00.123Z`; the date-time part is formatted once per second
    (a log line is built several times per step, on the hot path)."""
    global _second_cache
    second = int(wall)
    if second != _second_cache[0]:
        _second_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    millis = int((wall - second) * 1000)
    return f"{_second_cache[1]}.{millis:03d}Z"


class EventLog:
    """Builds §3 records and sends those at or above `level` to the sink.

    `counts` counts every record by event_type whatever the level, so metrics
    (contract violations, rejections) never depend on the log level.
    """

    def __init__(self, sink: LogSink, clock: Clock, level: str = "DEBUG") -> None:
        self.sink = sink
        self.clock = clock
        self.threshold = LEVELS[level]
        self.counts: Counter[str] = Counter()

    def emit(self, level: str, session_id: str, event_type: str, message: str,
             data: dict[str, Any]) -> None:
        self.counts[event_type] += 1
        if LEVELS[level] < self.threshold:
            return
        self.sink.write({
            "ts": iso_utc(self.clock.wall()),
            "t_ms": round(self.clock.now_ms(), 3),
            "level": level,
            "session_id": session_id,
            "event_type": event_type,
            "message": message,
            "data": data,
        })
