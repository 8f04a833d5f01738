"""Structured JSON log lines (docs/chart-format.md §3): one object per line,
`session_id` on every line, emoji only in the human `message`.

`EventLog` is where the trace goes: sessions, the manager and the adapters
publish typed events (engine/runtime/trace.py) to it, and it tells every subscribed
listener (metrics, the Redis contract publisher, the inspector, OpenTelemetry)
whatever the level. The JSON log is one more listener, `JsonLog`: the only
place where the log level applies and the only code that turns events into
log dicts (`TraceEvent.to_record`).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any, Protocol, TextIO

from engine.runtime.clock import Clock
from engine.runtime.trace import KINDS as _TYPED
from engine.runtime.trace import Listener, LogLine, TraceEvent, from_record
from engine.runtime.trace import iso_utc as iso_utc  # re-exported: older imports

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
_NOTHING = 1_000
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


class JsonLog:
    """The JSON log as a trace listener: events at or above `level` become §3
    records for `sink` (stdout, a file, the page's log pane)."""

    def __init__(self, sink: LogSink, level: str = "DEBUG") -> None:
        self.sink = sink
        # A NullSink writes nothing: no record is built for it at all.
        self.threshold = LEVELS[level] if not isinstance(sink, NullSink) else _NOTHING

    def __call__(self, event: TraceEvent) -> None:
        if LEVELS.get(event.level, 0) >= self.threshold:
            self.sink.write(event.to_record())


class EventLog:
    """The trace hub: `publish` tells the JSON log (`sink` at `level`) and every
    listener `subscribe`d, in that order, whatever the level.

    `counts` counts every event by event_type whatever the level, so metrics
    (contract violations, rejections) never depend on the log level.
    """

    def __init__(self, sink: LogSink, clock: Clock, level: str = "DEBUG") -> None:
        self.clock = clock
        self.json = JsonLog(sink, level)
        self.listeners: tuple[Listener, ...] = ()
        self.counts: Counter[str] = Counter()

    @property
    def sink(self) -> LogSink:
        return self.json.sink

    @property
    def threshold(self) -> int:
        return self.json.threshold

    def subscribe(self, listener: Listener) -> None:
        self.listeners = (*self.listeners, listener)

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners = tuple(x for x in self.listeners if x != listener)

    def stamp(self, session_id: str) -> tuple[str, float, float]:
        """`(session_id, t_ms, wall)`, the first fields of every event, now."""
        return session_id, self.clock.now_ms(), self.clock.wall()

    def publish(self, event: TraceEvent) -> None:
        self.counts[event.event_type] += 1
        self.json(event)
        for listener in self.listeners:
            listener(event)

    def emit(self, level: str, session_id: str, event_type: str, message: str,
             data: dict[str, Any]) -> None:
        """Publish a line given by its parts (adapters' own lines, effects' notes):
        a kind with a class in engine/runtime/trace.py becomes that typed event."""
        line = LogLine(session_id, self.clock.now_ms(), self.clock.wall(), level=level,
                       name=event_type, text=message, fields=data)
        if event_type in _TYPED:
            try:
                self.publish(from_record(line.to_record()))
                return
            except ValueError:
                pass
        self.publish(line)
