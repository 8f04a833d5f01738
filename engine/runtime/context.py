"""What effects and activities see of their session: enough to act, nothing to break.

They never get the session itself: an effect cannot change state, an activity
can only post events (stamped with the epoch that started it, so a late one is
dropped as stale) and emit audio (checked against the current contract).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.chart.spec import EventSpec
from engine.runtime.clock import Clock
from engine.runtime.dialogue import Dialogue
from engine.runtime.ports import AudioChunk, Ports
from engine.runtime.trace import TraceEvent

LogFn = Callable[[str, str, str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class EffectContext:
    session_id: str
    state: str
    event: str
    payload: Mapping[str, Any]
    ports: Ports
    clock: Clock
    log: LogFn
    since_event_ms: Callable[[str], float | None]
    publish: Callable[[TraceEvent], None] | None = None

    def emit(self, event: TraceEvent) -> None:
        """Add a typed event to the session's trace (`log` takes a line by its parts)."""
        _emit(self.publish, self.log, event)


@dataclass(frozen=True, slots=True)
class ActivityContext:
    session_id: str
    activity: str
    state: str
    epoch: int
    correlation_id: str
    payload: Mapping[str, Any]
    ports: Ports
    clock: Clock
    log: LogFn
    post: Callable[[str, dict[str, Any]], None]
    emit_audio: Callable[[AudioChunk], Awaitable[bool]]
    publish: Callable[[TraceEvent], None] | None = None
    # issue 16 §4: the active states' prompt and tools, read when asked (None: the
    # session has no dialogue); `settle` waits until what was posted is handled
    dialogue: Callable[[], Dialogue | None] | None = None
    settle: Callable[[], Awaitable[None]] | None = None
    events: Mapping[str, EventSpec] | None = None

    def emit(self, event: TraceEvent) -> None:
        """Add a typed event to the session's trace (`log` takes a line by its parts)."""
        _emit(self.publish, self.log, event)


def _emit(publish: Callable[[TraceEvent], None] | None, log: LogFn, event: TraceEvent) -> None:
    if publish is not None:
        publish(event)
    else:   # a context built by hand (tests): the line by its parts
        log(event.level, event.event_type, event.message, event.data())
