"""Hardening: no code evaluation anywhere in the source tree, Redis credentials
never shown (/health, /metrics, log lines, error messages), no raw audio in the
log lines of a live call, and a loud warning when `serve` binds beyond loopback
without an admin token."""

from __future__ import annotations

import ast
import base64
import io
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_sync
from starlette.testclient import TestClient

from adapters.config import LogSettings, ServerSettings, Settings, VoiceSettings
from adapters.redaction import redact_credentials
from adapters.redis import RedisEventBus, RedisWorker
from adapters.responder.builtin import BuiltinResponder
from adapters.responder.knowledge import Knowledge
from adapters.server import run as server_run
from adapters.server.app import create_app
from adapters.server.json_logging import JsonFormatter
from adapters.server.metrics import Metrics
from adapters.server.remote_voice import RemoteVoiceService
from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock, VirtualClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.tools.fakes import fake_ports
from tests.support.redis_server import RING_CHART, RedisServer, free_port
from tests.support.voice_fakes import (
    EnergyDetector,
    ScriptedTranscriber,
    ToneSpeech,
    fake_voice_factory,
    mulaw_encode,
    silence,
    tone,
)
from tests.support.waiting import wait_for, wait_until

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("engine", "adapters", "benchmarks", "scripts")
SECRET = "Sup3r-S3cret-pw"


# ------------------------------------------------------- code that runs strings
_BUILTINS = {"eval", "exec", "__import__"}
_SERIALIZERS = {"pickle", "cPickle", "_pickle", "shelve", "marshal", "dill", "cloudpickle"}
_UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "Loader",
                "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}
_SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _python_problems(source: str) -> list[tuple[int, str]]:
    """(line, what) for each use of a construct that runs or unpickles data."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            called = _name(node.func)
            if called in _BUILTINS or called in {f"builtins.{b}" for b in _BUILTINS}:
                found.append((line, f"{called}("))
            if called in {"os.system", "os.popen"}:
                found.append((line, f"{called}( (a shell)"))
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant)
                                             and k.value.value is False) for k in node.keywords):
                found.append((line, "shell=True"))
            if called in {"yaml.load", "yaml.load_all"}:
                loader = next((k.value for k in node.keywords if k.arg == "Loader"),
                              node.args[1] if len(node.args) > 1 else None)
                if loader is None or _name(loader).split(".")[-1] not in _SAFE_LOADERS:
                    found.append((line, f"{called}( without SafeLoader"))
        elif isinstance(node, ast.Attribute) and _name(node.value) == "yaml" \
                and node.attr in _UNSAFE_YAML:
            found.append((line, f"yaml.{node.attr}"))
        elif isinstance(node, ast.Import):
            found += [(line, f"import {a.name}") for a in node.names
                      if a.name.split(".")[0] in _SERIALIZERS]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _SERIALIZERS:
                found.append((line, f"from {node.module} import"))
            if node.module == "yaml":
                found += [(line, f"from yaml import {a.name}") for a in node.names
                          if a.name in _UNSAFE_YAML]
    return found


_SHELL_EVAL = re.compile(r"^\s*[^#]*\beval\b")


def _shell_problems(text: str) -> list[tuple[int, str]]:
    return [(n, "eval (shell)") for n, line in enumerate(text.splitlines(), 1)
            if _SHELL_EVAL.match(line)]


def source_problems() -> list[str]:
    problems = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".py":
                hits = _python_problems(text)
            elif path.suffix in ("", ".sh") and text.startswith(("#!", "#", "set ")):
                hits = _shell_problems(text)
            else:
                continue
            problems += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in hits]
    return problems


def test_no_source_file_evaluates_strings_unpickles_or_uses_a_shell() -> None:
    assert source_problems() == []


@pytest.mark.parametrize(("snippet", "expected"), [
    ("x = eval('1')", "eval("),
    ("exec(code)", "exec("),
    ("m = __import__(name)", "__import__("),
    ("import pickle", "import pickle"),
    ("from pickle import loads", "from pickle import"),
    ("subprocess.run(cmd, shell=True)", "shell=True"),
    ("os.system('ls')", "os.system( (a shell)"),
    ("yaml.load(text)", "yaml.load( without SafeLoader"),
    ("yaml.load(text, Loader=yaml.Loader)", "yaml.load( without SafeLoader"),
    ("yaml.unsafe_load(text)", "yaml.unsafe_load"),
    ("from yaml import UnsafeLoader", "from yaml import UnsafeLoader"),
])
def test_the_scan_catches_each_forbidden_construct(snippet: str, expected: str) -> None:
    assert expected in [what for _, what in _python_problems(snippet)]


@pytest.mark.parametrize("snippet", [
    "yaml.safe_load(text)", "yaml.load(text, Loader=yaml.SafeLoader)",
    "yaml.compose(text, Loader=yaml.SafeLoader)", "redis.eval(script, 1, key)",
    "self.eval(keys, argv)", "asyncio.create_subprocess_exec('redis-server')",
    "'''mentions eval( and pickle in a docstring'''",
])
def test_the_scan_leaves_safe_code_alone(snippet: str) -> None:
    assert _python_problems(snippet) == []


# ------------------------------------------------------------- credentials
@pytest.mark.parametrize(("text", "shown"), [
    ("redis://app:s3cret@db.internal:6379/0", "redis://app:***@db.internal:6379/0"),
    ("rediss://:s3cret@db:6380/1", "rediss://:***@db:6380/1"),
    ("redis://tokenonly@db:6379", "redis://***@db:6379"),
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
    ("failed on redis://a:b@h:1/0 then redis://c:d@k:2/0", "failed on redis://a:***@h:1/0 "
                                                            "then redis://c:***@k:2/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("memory", "memory"),
])
def test_credentials_are_masked_in_any_text(text: str, shown: str) -> None:
    assert redact_credentials(text) == shown


def test_server_log_lines_mask_credentials_too() -> None:
    """uvicorn's own lines (errors with tracebacks, access lines with a query)."""
    try:
        raise ConnectionError(f"cannot reach redis://app:{SECRET}@db:6379/0")
    except ConnectionError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                   "GET /health?token=%s failed", (SECRET,), sys.exc_info())
    line = JsonFormatter().format(record)
    assert SECRET not in line
    assert "redis://app:***@db:6379/0" in json.loads(line)["data"]["exception"]
    assert json.loads(line)["message"] == "GET /health?token=*** failed"


def _remote_factory(url: str) -> Any:
    def build(settings: Settings, chart: CompiledChart, registry: Registry, log: EventLog,
              metrics: Metrics) -> RemoteVoiceService:
        return RemoteVoiceService(chart, registry, log, metrics, stt=ScriptedTranscriber(["hi"]),
                                  detector_factory=EnergyDetector, speech=ToneSpeech(),
                                  responder=BuiltinResponder(Knowledge([])), redis_url=url)
    return build


def _lines(sink: ListSink) -> list[str]:
    return [json.dumps(r, ensure_ascii=False, default=str) for r in sink.records]


def test_an_unreachable_redis_url_with_a_password_is_never_shown() -> None:
    port = free_port()   # nothing listens there
    url = f"redis://app:{SECRET}@127.0.0.1:{port}/0"
    sink = ListSink()
    app = create_app(Settings(bus=url), voice_factory=_remote_factory(url), log_sink=sink)
    with TestClient(app) as client:
        health = client.get("/health")
        metrics = client.get("/metrics")
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": "pw-call"})  # publishing fails
            assert wait_for(lambda: sink.of_type("redis_retry"), 10)
            ws.send_json({"event": "stop"})
    assert health.status_code == 503
    assert health.json()["bus"] == f"redis://app:***@127.0.0.1:{port}/0"
    assert health.json()["redis"].startswith("unreachable: ")
    assert SECRET not in health.text
    assert SECRET not in metrics.text
    lines = _lines(sink)
    assert any("redis_retry" in line for line in lines)
    assert [line for line in lines if SECRET in line] == []


@pytest.fixture
def password_server(server: RedisServer) -> RedisServer:
    """The private redis-server of tests/conftest.py, with a password required."""
    with redis_sync.Redis.from_url(server.url) as admin:
        admin.config_set("requirepass", SECRET)
    return server


def test_a_front_end_on_a_password_protected_redis_shows_no_password(
        password_server: RedisServer) -> None:
    url = f"redis://default:{SECRET}@127.0.0.1:{password_server.port}/0"
    sink = ListSink()
    app = create_app(Settings(bus=url), voice_factory=_remote_factory(url), log_sink=sink)
    with TestClient(app) as client:
        health = client.get("/health")
        metrics = client.get("/metrics")
    assert health.status_code == 200, health.text
    assert health.json()["redis"] == "ok"
    assert health.json()["bus"] == f"redis://default:***@127.0.0.1:{password_server.port}/0"
    assert SECRET not in health.text + metrics.text
    assert [line for line in _lines(sink) if SECRET in line] == []


async def test_a_worker_with_a_password_url_logs_no_password(
        password_server: RedisServer) -> None:
    good = f"redis://default:{SECRET}@127.0.0.1:{password_server.port}/0"
    wrong = f"redis://default:{SECRET}-wrong@127.0.0.1:{password_server.port}/0"
    sink = ListSink()
    log = EventLog(sink, RealClock(), level="DEBUG")
    registry = default_registry()
    chart = compile_text(RING_CHART, "ring.yaml", registry)
    clock = RealClock()
    async with RedisEventBus.from_url(good, log) as bus, \
            RedisWorker(good, chart, registry, fake_ports(clock), log, clock=clock,
                        worker_id="pw-worker", lease_ms=2000):
        await bus.publish(VoiceEvent(event_type="step", session_id="pw-s", source="test",
                                     timestamp=time.time(), payload={"n": 1}))
        assert await wait_until(lambda: sink.of_type("state_transition", "pw-s"), 10)
    refused: list[str] = []
    async with RedisEventBus.from_url(wrong, log, retries=1) as bad_bus:
        try:
            await bad_bus.publish(VoiceEvent(event_type="step", session_id="pw-s",
                                             source="test", timestamp=time.time(),
                                             payload={"n": 2}))
        except Exception as exc:   # the server refuses the password
            refused.append(f"{type(exc).__name__}: {exc}")
    assert refused and "AuthenticationError" in refused[0]
    assert SECRET not in refused[0]
    lines = _lines(sink)
    assert any('"worker_started"' in line for line in lines)
    assert [line for line in lines if SECRET in line] == []


# ------------------------------------------------------------ no raw audio
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def _audio_like(value: Any, where: str = "") -> list[str]:
    """Places in a log record that hold sample arrays, bytes or long base64 blobs."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _audio_like(v, f"{where}.{k}")]
    if isinstance(value, list | tuple):
        numbers = sum(isinstance(v, int | float) for v in value)
        found = [f"{where}: {len(value)} numbers"] if numbers > 64 else []
        return found + [p for i, v in enumerate(value) for p in _audio_like(v, f"{where}[{i}]")]
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray):
        return [f"{where}: {type(value).__name__}"]
    if isinstance(value, str) and _LONG_BASE64.search(value):
        return [f"{where}: a long base64-like string"]
    return []


@pytest.mark.parametrize("data", [
    {"pcm": list(range(320))}, {"chunk": b"\x00\x01" * 100},
    {"frame": np.zeros(160, dtype=np.int16)},
    {"payload": {"media": base64.b64encode(bytes(range(256)) * 2).decode()}},
])
def test_the_audio_check_recognises_audio(data: dict[str, Any]) -> None:
    assert _audio_like({"data": data}) != []


def test_the_log_lines_of_a_live_call_hold_no_raw_audio() -> None:
    sink = ListSink()
    settings = Settings(log=LogSettings(level="DEBUG"))
    app = create_app(settings, voice_factory=fake_voice_factory(["tell me a story", "stop"]),
                     log_sink=sink)
    payloads: list[str] = []

    def send(ws: Any, pcm: np.ndarray[Any, Any]) -> None:
        for i in range(0, len(pcm), 320):
            payloads.append(base64.b64encode(mulaw_encode(pcm[i:i + 320])).decode())
            ws.send_json({"event": "media", "media": {"payload": payloads[-1]}})

    with TestClient(app) as client, client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-audio"})
        assert wait_for(lambda: sink.of_type("state_transition", "ws-audio"))
        send(ws, np.concatenate([tone(500), silence(400)]))
        frames = 0
        while frames < 20:   # the answer is playing
            if ws.receive_json().get("event") == "media":
                frames += 1
        send(ws, np.concatenate([tone(400), silence(400)]))   # barge-in: "stop"
        assert wait_for(lambda: sink.of_type("playback_cleared", "ws-audio"), 10)
        ws.send_json({"event": "stop"})
    assert wait_for(lambda: sink.of_type("session_closed", "ws-audio"))
    types = {r["event_type"] for r in sink.records}
    assert {"event_received", "state_transition", "barge_in_detected"} <= types
    lines = _lines(sink)
    assert max(len(line.encode()) for line in lines) < 4096
    assert [p for r in sink.records for p in _audio_like(r, r["event_type"])] == []
    sent = [p[:48] for p in payloads if len(p) >= 48]
    assert [line for line in lines if any(p in line for p in sent)] == []


# ------------------------------------------------------------ bind warning
def test_the_default_bind_is_loopback_and_quiet() -> None:
    sink = ListSink()
    stderr = io.StringIO()
    assert Settings().server.host == "127.0.0.1"
    assert server_run.warn_if_exposed(Settings(), EventLog(sink, VirtualClock()), stderr) is False
    assert sink.records == [] and stderr.getvalue() == ""


def test_binding_wider_without_a_token_warns_loudly() -> None:
    sink = ListSink()
    stderr = io.StringIO()
    settings = Settings(server=ServerSettings(host="0.0.0.0", port=5204))
    assert server_run.warn_if_exposed(settings, EventLog(sink, VirtualClock()), stderr)
    [line] = sink.of_type("insecure_bind")
    assert line["level"] == "WARNING" and line["session_id"] == "-"
    assert line["data"]["host"] == "0.0.0.0" and line["data"]["admin_token"] is False
    banner = stderr.getvalue()
    assert "WARNING" in banner and "0.0.0.0:5204" in banner and "TURNCHART_ADMIN_TOKEN" in banner


def test_binding_wider_with_a_token_only_notes_it() -> None:
    sink = ListSink()
    stderr = io.StringIO()
    settings = Settings(server=ServerSettings(host="0.0.0.0", admin_token="t" * 32))
    assert server_run.warn_if_exposed(settings, EventLog(sink, VirtualClock()), stderr) is False
    assert sink.of_type("insecure_bind") == []
    assert "reachable from other machines" in stderr.getvalue()
    assert "t" * 32 not in stderr.getvalue()


def test_serve_warns_before_it_listens_and_caps_websocket_frames(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    started: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:   # stands in for uvicorn: no socket
        started.update(options)

    monkeypatch.setattr(server_run, "listen", fake_run)
    settings = Settings(server=ServerSettings(host="0.0.0.0", port=5299),
                        voice=VoiceSettings(enabled=False))
    assert server_run.serve(settings) == 0
    out, err = capsys.readouterr()
    warnings = [json.loads(line) for line in out.splitlines() if '"insecure_bind"' in line]
    assert warnings and warnings[0]["level"] == "WARNING"
    assert "0.0.0.0:5299" in err and "no admin token" in err
    assert started["host"] == "0.0.0.0"
    assert started["ws_max_size"] >= settings.limits.max_ws_message_bytes
