"""OpenTelemetry as a trace listener: spans for sessions, turns and activities.

Off by default. On when `otel: {enabled: true}` is in config.yaml, or when
`enabled` is left unset and one of the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables is set; the OTLP/HTTP exporter
reads those and the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
compression) itself. When off, nothing of OpenTelemetry is imported and no
listener is subscribed: no cost at all.

What is exported, from the typed trace (engine/runtime/trace.py), timed by each event's
wall time:

- one span per session (`session <id>`), from `session_started` /
  `session_resumed` to `session_closed`;
- one span per turn (`turn <correlation id>`), a child of its session, from
  the outside event that opened the turn until the next turn opens or the
  session closes;
- one span per activity run (`activity respond`, `activity speak`), a child of
  the turn it started in, ended by `activity_done` / `activity_cancelled` /
  `activity_failed` (status ERROR);
- every transition as a span event (`state_transition`, with from, to, event
  and latency) on its turn's span; rejections, stale and invalid events,
  contract violations and failures as span events too.

The SDK's batch processor exports from its own thread: the listener only
creates and ends spans (microseconds), inside the session's step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.runtime.trace import (
    SESSION_CLOSED,
    ActivityCancelled,
    ActivityDone,
    ActivityFailed,
    ActivityStarted,
    ContractViolation,
    EffectFailed,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    SessionClosed,
    SessionFailed,
    SessionResumed,
    SessionStarted,
    StateTransition,
    TraceEvent,
    TransitionRejected,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_CHART_SOURCES = ("activity:", "timer", "internal")


def telemetry_wanted(enabled: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """`otel.enabled`, or when unset (None): is an OTLP endpoint variable set?"""
    if enabled is not None:
        return enabled
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


@dataclass
class _SessionSpans:
    session_id: str
    session: Span
    turn: Span | None = None
    correlation_id: str | None = None
    activities: dict[str, list[Span]] = field(default_factory=dict)


def _ns(wall: float) -> int:
    return int(wall * 1_000_000_000)


class OtelListener:
    """The trace listener: see the module docstring."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode
        self._trace = trace
        self._error = Status(StatusCode.ERROR)
        self.tracer = tracer
        self.sessions: dict[str, _SessionSpans] = {}

    def __call__(self, event: TraceEvent) -> None:
        if isinstance(event, SessionStarted | SessionResumed):
            self._open_session(event)
            return
        spans = self.sessions.get(event.session_id)
        if spans is None:
            return
        at = _ns(event.wall)
        if isinstance(event, EventReceived):
            if (event.correlation_id and event.correlation_id != spans.correlation_id
                    and not event.source.startswith(_CHART_SOURCES)):
                self._open_turn(spans, event.correlation_id, at)
        elif isinstance(event, ActivityStarted):
            parent = spans.turn or spans.session
            span = self.tracer.start_span(
                f"activity {event.activity}", context=self._trace.set_span_in_context(parent),
                start_time=at, attributes={"turnchart.activity": event.activity,
                                           "turnchart.state": event.state,
                                           "turnchart.session_id": event.session_id})
            spans.activities.setdefault(event.activity, []).append(span)
        elif isinstance(event, ActivityDone | ActivityCancelled | ActivityFailed):
            running = spans.activities.get(event.activity) or \
                spans.activities.get(event.activity.removeprefix(f"{event.session_id}:"))
            if running:
                span = running.pop(0)
                span.set_attribute("turnchart.outcome", event.event_type.removeprefix(
                    "activity_"))
                if event.reason:
                    span.set_attribute("turnchart.reason", event.reason)
                if isinstance(event, ActivityFailed):
                    span.set_status(self._error)
                span.end(end_time=at)
        elif isinstance(event, StateTransition):
            (spans.turn or spans.session).add_event(event.event_type, timestamp=at, attributes={
                "from": event.source, "to": event.target, "event": event.event,
                "latency_ms": round(event.latency_ms, 3)})
            spans.session.set_attribute("turnchart.state", event.target)
        elif isinstance(event, InternalTransition | TransitionRejected | EventStale
                        | EventInvalid | ContractViolation | EffectFailed | SessionFailed):
            attributes = {k: v for k, v in event.data().items()
                          if isinstance(v, str | int | float | bool)}
            (spans.turn or spans.session).add_event(event.event_type, timestamp=at,
                                                    attributes=attributes)
        elif isinstance(event, SessionClosed):
            self._close_session(event.session_id, spans, at)

    def _open_session(self, event: SessionStarted | SessionResumed) -> None:
        previous = self.sessions.pop(event.session_id, None)
        if previous is not None:
            self._close_session(event.session_id, previous, _ns(event.wall))
        span = self.tracer.start_span(
            f"session {event.session_id}", start_time=_ns(event.wall),
            context=self._trace.set_span_in_context(self._trace.INVALID_SPAN),
            attributes={"turnchart.session_id": event.session_id, "turnchart.chart": event.chart,
                        "turnchart.chart_version": str(event.version),
                        "turnchart.version_hash": event.version_hash,
                        "turnchart.resumed": isinstance(event, SessionResumed)})
        self.sessions[event.session_id] = _SessionSpans(event.session_id, span)

    def _open_turn(self, spans: _SessionSpans, correlation_id: str, at: int) -> None:
        if spans.turn is not None:
            spans.turn.end(end_time=at)
        spans.correlation_id = correlation_id
        spans.turn = self.tracer.start_span(
            f"turn {correlation_id}", context=self._trace.set_span_in_context(spans.session),
            start_time=at, attributes={"turnchart.correlation_id": correlation_id,
                                       "turnchart.session_id": spans.session_id})

    def _close_session(self, session_id: str, spans: _SessionSpans, at: int) -> None:
        for running in spans.activities.values():
            for span in running:
                span.set_attribute("turnchart.outcome", SESSION_CLOSED)
                span.end(end_time=at)
        if spans.turn is not None:
            spans.turn.end(end_time=at)
        spans.session.end(end_time=at)
        self.sessions.pop(session_id, None)


@dataclass
class Telemetry:
    listener: OtelListener
    shutdown: Callable[[], None]


def start_telemetry(enabled: bool | None, *, service_name: str = "turnchart",
                    endpoint: str | None = None, exporter: SpanExporter | None = None,
                    batch: bool = True) -> Telemetry | None:
    """The listener and its provider's shutdown, or None when telemetry is off (then
    nothing of OpenTelemetry is imported). `exporter` replaces the OTLP/HTTP one (tests:
    the SDK's InMemorySpanExporter, with `batch=False` to export each span as it ends)."""
    if not telemetry_wanted(enabled):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch
                                else SimpleSpanProcessor(exporter))
    return Telemetry(OtelListener(provider.get_tracer("turnchart")), provider.shutdown)
