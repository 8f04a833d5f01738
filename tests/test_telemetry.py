"""OpenTelemetry as a trace listener (adapters/telemetry.py): spans per session, turn
and activity, transitions as span events; off by default and then not even imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from adapters.config import Settings
from adapters.telemetry import start_telemetry, telemetry_wanted
from engine.runtime.trace import from_record
from engine.tools.simulator import simulate_file

ROOT = Path(__file__).resolve().parent.parent


def exported(scenario: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    telemetry = start_telemetry(True, exporter=exporter, batch=False)
    assert telemetry is not None
    for record in simulate_file(ROOT / "scenarios" / scenario):
        telemetry.listener(from_record(record))
    telemetry.shutdown()
    return list(exporter.get_finished_spans())


def test_a_barge_in_call_is_a_session_span_with_turns_and_activities() -> None:
    spans = exported("barge_in.yaml")
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["activity respond", "activity speak", "session s1",
                               "turn turn-1", "turn turn-2", "turn turn-3"]
    session = by_name["session s1"]
    assert session.parent is None
    assert session.attributes is not None and session.attributes["turnchart.chart"] == "voice_turn"
    for name in ("turn turn-1", "turn turn-2", "turn turn-3"):
        assert by_name[name].parent is not None
        assert by_name[name].parent.span_id == session.context.span_id
    # The answer was worked out and spoken in turn 2 and cut by the barge-in (turn 3).
    respond, speak = by_name["activity respond"], by_name["activity speak"]
    turn2 = by_name["turn turn-2"]
    assert respond.parent is not None and respond.parent.span_id == turn2.context.span_id
    assert respond.attributes is not None and respond.attributes["turnchart.outcome"] == "done"
    assert speak.attributes is not None and speak.attributes["turnchart.outcome"] == "cancelled"
    assert speak.attributes["turnchart.reason"] == "state_exit"
    # Transitions are span events of their turn, timed by the trace (virtual clock).
    moves = [(e.attributes or {}).get("from", "") + "→" + (e.attributes or {}).get("to", "")
             for s in sorted(spans, key=lambda s: s.start_time or 0) for e in s.events
             if e.name == "state_transition"]
    assert moves == ["IDLE→LISTENING", "LISTENING→THINKING", "THINKING→SPEAKING",
                     "SPEAKING→INTERRUPT", "INTERRUPT→LISTENING"]
    assert speak.start_time is not None and speak.end_time is not None
    assert (speak.end_time - speak.start_time) / 1e6 == pytest.approx(500.0, abs=1.0)
    assert all(s.end_time is not None for s in spans)


def test_a_turn_span_records_rejections_as_events() -> None:
    spans = exported("turn.yaml")
    assert {s.name for s in spans} >= {"session s1", "activity respond", "activity speak"}


def test_off_by_default_unless_an_otlp_endpoint_is_set() -> None:
    assert telemetry_wanted(None, {}) is False
    assert telemetry_wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert telemetry_wanted(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1"})
    assert telemetry_wanted(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) \
        is False
    assert telemetry_wanted(True, {}) is True
    assert Settings.model_validate({"otel": {"enabled": True}}).otel.enabled is True
    with pytest.raises(ValidationError, match="colour"):
        Settings.model_validate({"otel": {"colour": "red"}})


def test_when_off_nothing_of_opentelemetry_is_loaded() -> None:
    """A fresh interpreter: the server app and the worker's entry point built with the
    default settings import neither the OpenTelemetry tracing SDK nor its exporter, and subscribe
    no listener. (The OpenTelemetry API, and the SDK's metrics, are imported by FastAPI,
    which FastRTC brings, and by redis-py's observability module: not ours to avoid.)"""
    code = ("import sys\n"
            "from adapters.config import Settings\n"
            "from adapters.server.app import create_app\n"
            "import adapters.cli.worker\n"
            "app = create_app(Settings())\n"
            "assert app.state.telemetry is None\n"
            "print(sorted(m for m in sys.modules if m.startswith(\n"
            "    ('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_real_server_exports_its_calls_over_otlp_http(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`turnchart serve` with only the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set,
    pointing at a local collector stand-in: one call, then a stop; the spans arrive
    as OTLP/HTTP protobuf (flushed on shutdown)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tests.support.live_clients import WebSocketCaller
    from tests.support.waiting import wait_for
    from tests.support.webrtc_client import ServerProcess

    bodies: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                       f"http://127.0.0.1:{collector.server_port}/v1/traces")
    server = ServerProcess(tmp_path)
    try:
        server.wait_ready()
        caller = WebSocketCaller(server.base_url, "otel-call")
        assert wait_for(lambda: server.transitions("otel-call"), 15)
        caller.say_text("hello")
        assert wait_for(lambda: "SPEAKING→LISTENING (playback_done)"
                        in server.transitions("otel-call"), 30), server.transitions("otel-call")
        caller.close()
        assert wait_for(lambda: any(r["event_type"] == "session_closed"
                                    for r in server.records()), 10)
    finally:
        assert server.stop() == 0
        collector.shutdown()
        collector.server_close()
    names = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        names += [span.name for rs in request.resource_spans for ss in rs.scope_spans
                  for span in ss.spans]
    assert {"session otel-call", "turn turn-1", "turn turn-2", "activity respond",
            "activity speak"} <= set(names), names
