"""Prometheus metrics, fed by the same trace the log is written from.

A trace listener (engine/runtime/trace.py): each typed event becomes counter/histogram
updates, whatever the log level, so what `/metrics` shows never disagrees with
the log and never depends on its level. Each app gets its own
`CollectorRegistry` (tests start several apps in one process).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.runtime.trace import (
    ActivityFailed,
    ContractViolation,
    EffectFailed,
    EventInvalid,
    EventStale,
    PlaybackCleared,
    RoutingRejected,
    SessionUnknown,
    StateTransition,
    TraceEvent,
    TransitionRejected,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TURN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self, active_sessions: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transitions = Counter("turnchart_transitions", "State transitions applied",
                                   ["source", "target"], registry=r)
        self.rejections = Counter("turnchart_rejections", "Events rejected by the chart",
                                  ["reason"], registry=r)
        self.invalid = Counter("turnchart_invalid_events", "Events dropped as invalid",
                               registry=r)
        self.stale = Counter("turnchart_stale_events", "Events dropped as stale", registry=r)
        self.effect_failures = Counter("turnchart_effect_failures", "Effects that raised",
                                       ["effect"], registry=r)
        self.activity_failures = Counter("turnchart_activity_failures", "Activities that raised",
                                         ["activity"], registry=r)
        self.violations = Counter("turnchart_contract_violations", "Contract violations",
                                  ["channel"], registry=r)
        self.barge_ins = Counter("turnchart_barge_ins", "Barge-ins decided by the audio adapter",
                                 registry=r)
        self.false_interruptions = Counter("turnchart_false_interruptions",
                                           "Tentative barge-ins that resumed playback", registry=r)
        self.backchannels = Counter("turnchart_backchannels",
                                    "Backchannels over the answer that resumed it", registry=r)
        self.transition_latency = Histogram(
            "turnchart_transition_latency_seconds", "Event timestamp → transition done",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.turn_latency = Histogram(
            "turnchart_turn_latency_seconds", "End of user speech → first answer audio",
            buckets=_TURN_BUCKETS, registry=r)
        self.time_to_silence = Histogram(
            "turnchart_time_to_silence_seconds", "Barge-in → playback cleared",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.stream_pending = Gauge(
            "turnchart_redis_pending_entries",
            "Redis mode: delivered but unacknowledged entries, summed over held sessions",
            registry=r)
        self.stream_lag = Gauge(
            "turnchart_redis_stream_lag_entries",
            "Redis mode: entries not yet delivered to a worker, summed over held sessions",
            registry=r)
        self.worker_counters = Gauge(
            "turnchart_redis_worker_entries",
            "Redis mode: entries handled by the live workers since they started "
            "(claimed from dead owners, delivered, acked, duplicates, invalid)",
            ["kind"], registry=r)
        gauge = Gauge("turnchart_active_sessions", "Sessions alive in this process", registry=r)
        gauge.set_function(lambda: float(active_sessions()))

    def __call__(self, event: TraceEvent) -> None:
        """The trace listener (`EventLog.subscribe(metrics)`)."""
        if isinstance(event, StateTransition):
            self.transitions.labels(event.source, event.target).inc()
            self.transition_latency.observe(float(event.latency_ms or 0.0) / 1000.0)
        elif isinstance(event, TransitionRejected):
            self.rejections.labels(event.reason.split(":")[0]).inc()
        elif isinstance(event, EventInvalid | SessionUnknown | RoutingRejected):
            self.invalid.inc()
        elif isinstance(event, EventStale):
            self.stale.inc()
        elif isinstance(event, EffectFailed):
            self.effect_failures.labels(event.effect).inc()
        elif isinstance(event, ActivityFailed):
            self.activity_failures.labels(event.activity).inc()
        elif isinstance(event, ContractViolation):
            self.violations.labels(event.channel).inc()
        elif isinstance(event, PlaybackCleared) and event.ms_since_barge_in is not None:
            self.time_to_silence.observe(float(event.ms_since_barge_in) / 1000.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
