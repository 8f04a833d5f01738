"""Rough edges of the `turnchart` command line (issue 13 §3), run as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.webrtc_client import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("turnchart")
CHART = ROOT / "charts" / "voice_turn.yaml"
TUTORIAL = ROOT / "docs" / "tutorial" / "voice_turn_confirming.yaml"


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def recording(tmp_path: Path) -> Path:
    """A small log of one call, made by `turnchart simulate` (what `replay` reads)."""
    log = tmp_path / "calls.jsonl"
    result = run("simulate", str(ROOT / "scenarios" / "barge_in.yaml"), "--out", str(log))
    assert result.returncode == 0, result.stderr
    return log


# --------------------------------------------------------------------------- 1. closed pipe


@pytest.mark.parametrize("command", [
    ["paths", str(TUTORIAL)],
    ["paths", str(TUTORIAL), "--format", "json"],
    ["validate", "--format", "json", str(CHART)],
    ["render", str(CHART)],
    ["replay", "LOG", "--format", "json"],
    ["replay", "LOG"],
], ids=lambda c: " ".join(c[:1] + c[2:]))
def test_a_closed_pipe_ends_the_command_quietly(command: list[str], tmp_path: Path) -> None:
    """`turnchart paths … | head -1`: the reader is gone before turnchart writes (the read
    end is closed before it starts, so every write fails): no traceback, exit 141 as a
    shell reports for a Unix tool ended by SIGPIPE."""
    if "LOG" in command:
        command[command.index("LOG")] = str(recording(tmp_path))
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([str(EXE), *command], cwd=ROOT, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 141, result.stderr


# --------------------------------------------------------------------------- 6. --version


def test_version_prints_the_installed_version() -> None:
    import tomllib
    want = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"turnchart {want['project']['version']}\n"


# ------------------------------------------------------------ 2, 3, 4, 8. serve's start-up


def config_file(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_taken_port_is_said_on_stderr_at_once(tmp_path: Path) -> None:
    """Before: `serving on …` on stderr, the real error only as a JSON line on stdout,
    exit 3 after 7.7 s (the app and the speech stack were built first)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        started = time.monotonic()
        result = run("serve", "--config", str(config_file(tmp_path, "")), "--port", str(port),
                     timeout=60)
        took = time.monotonic() - started
    finally:
        taken.close()
    assert result.returncode == 3
    assert result.stderr == (f"turnchart: cannot listen on 127.0.0.1:{port}: port {port} is "
                             "already in use (another turnchart serve?); stop that server or "
                             "pick another with --port\n")
    assert result.stdout == ""
    assert took < 5.0, took   # no model, no app: the socket is bound before anything else


def test_serving_on_is_said_once_uvicorn_listens(tmp_path: Path) -> None:
    """The `serving on` line comes after uvicorn's `Application startup complete.`"""
    server = ServerProcess(tmp_path)
    try:
        server.wait_ready()
    finally:
        server.stop()
    text = server.log_path.read_text()
    announce = f"turnchart serving on http://127.0.0.1:{server.port}/charts"
    assert announce in text
    assert text.index("Application startup complete.") < text.index(announce)


@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_a_port_flag_out_of_range_is_one_line(port: str, tmp_path: Path) -> None:
    result = run("serve", "--config", str(config_file(tmp_path, "")), "--port", port)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "serving on" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("turnchart serve: error: argument --port: ")
    assert "is not a port number" in result.stderr


def test_an_unknown_bus_is_a_configuration_error(tmp_path: Path) -> None:
    empty = str(config_file(tmp_path, ""))
    result = run("serve", "--config", empty,
                 env={**os.environ, "TURNCHART_BUS": "kafka://user:secret@x"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("turnchart: TURNCHART_BUS (bus): unknown bus URL scheme "
                                    "'kafka://': write memory, or a Redis URL (redis://")
    assert "secret" not in result.stderr   # only the scheme is quoted

    bad = config_file(tmp_path, "log: {level: INFO}\nbus: kafka://x\n", "bad.yaml")
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"turnchart: {bad}:2:6: bus: unknown bus URL scheme")

    result = run("serve", "--config", empty, "--redis", "kafka://x")
    assert result.returncode == 2
    assert result.stderr.startswith("turnchart: --redis: unknown bus URL scheme 'kafka://'")
    assert "serving on" not in result.stderr


def test_a_yaml_error_in_the_config_names_the_file_line_and_column(tmp_path: Path) -> None:
    bad = config_file(tmp_path, "server: {port: 5204\n")
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr == (f"turnchart: {bad}:2:1: invalid YAML: expected ',' or '}}', but "
                             "got '<stream end>' (while parsing a flow mapping that started at "
                             "line 1, column 9)\n")
    bad = config_file(tmp_path, "server:\n  port: 99999\n")
    assert run("serve", "--config", str(bad)).stderr == (
        f"turnchart: {bad}:2:9: server.port: Input should be less than or equal to 65535\n")


def test_the_config_is_checked_before_the_speech_stack_is_imported(tmp_path: Path) -> None:
    """Config errors took 3.6-7.1 s to appear: the server was imported first."""
    bad = config_file(tmp_path, "server: {port: 99999}\n")
    probe = ("import sys\nfrom adapters.cli.main import main\n"
             f"code = main(['serve', '--config', {str(bad)!r}])\n"
             "heavy = sorted(m for m in ('adapters.server.app', 'adapters.server.voice', "
             "'fastrtc', 'gradio', 'aiortc', 'uvicorn', 'onnxruntime', 'pocketsphinx') "
             "if m in sys.modules)\n"
             "print(code, heavy)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout == "2 []\n", result.stdout + result.stderr
    assert "server.port" in result.stderr


# --------------------------------------------------------------------------- 5. Ctrl-C


def _shutdown_problems(server: ServerProcess) -> list[str]:
    text = server.log_path.read_text()
    problems = [r["message"][:200] for r in server.records() if r["level"] == "ERROR"]
    problems += [w for w in ("Traceback", "KeyboardInterrupt", "Task was destroyed",
                             "CancelledError", "timeout graceful shutdown") if w in text]
    return problems


async def test_ctrl_c_during_live_calls_ends_them_and_exits_within_2_s(tmp_path: Path) -> None:
    """Before: 3.5-6.2 s; after `Shutting down` the call went on (transcribed, answered);
    `ERROR Cancel 1 running task(s), timeout graceful shutdown exceeded`, a CancelledError
    traceback, `Task was destroyed but it is pending!` and a KeyboardInterrupt traceback.
    Here a WebSocket call is answering with its /fastrtc log stream open and the caller
    talking over it, and a WebRTC call is connected."""
    import asyncio
    import threading

    import httpx

    from adapters.speech.audio import resample
    from tests.support.live_clients import WebSocketCaller
    from tests.support.waiting import wait_until
    from tests.support.webrtc_client import RATE, Caller, speech48k

    server = ServerProcess(tmp_path)
    rtc: Caller | None = None
    ws: WebSocketCaller | None = None
    try:
        await asyncio.to_thread(server.wait_ready)
        rtc = Caller(server.base_url, "rtc-call")
        await rtc.connect()
        ws = WebSocketCaller(server.base_url, "ws-call")
        streamed: list[str] = []

        def log_stream() -> None:  # what the /fastrtc page keeps open
            try:
                with httpx.stream("GET", f"{server.base_url}/sessions/ws-call/events",
                                  timeout=30) as response:
                    streamed.extend(response.iter_lines())
                streamed.append("<ended>")
            except httpx.HTTPError as exc:
                streamed.append(f"<{type(exc).__name__}>")

        threading.Thread(target=log_stream, daemon=True).start()
        assert await wait_until(lambda: server.transitions("rtc-call")[:1]
                                == ["IDLE→LISTENING (client_connected)"], 15)
        ws.say_text("tell me a story")
        assert await wait_until(lambda: "THINKING→SPEAKING (response_ready)"
                                in server.transitions("ws-call"), 20), server.transitions("ws-call")
        words = resample(speech48k("what time is it"), RATE, 16_000)

        def keep_talking() -> None:
            assert ws is not None
            with contextlib.suppress(Exception):
                for _ in range(10):
                    ws.say_audio(words)

        threading.Thread(target=keep_talking, daemon=True).start()
        await asyncio.sleep(0.5)
        asked = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(server.proc.wait, 10)
        took = time.monotonic() - asked
    finally:
        if rtc is not None:
            await rtc.close()
        if ws is not None:
            ws.close()
        server.stop()
    assert code == 0
    assert took < 2.0, took
    assert _shutdown_problems(server) == []
    for call in ("ws-call", "rtc-call"):
        lines = [r for r in server.records() if r["session_id"] == call]
        assert server.transitions(call)[-1].endswith("→IDLE (client_disconnected)"), call
        assert lines[-1]["event_type"] == "session_closed", call
    # No new turn after the stop was asked: the last transitions are the hang-up.
    text = server.log_path.read_text()
    after = text[text.index('"Shutting down"'):]
    assert '"state_transition"' not in after and '"stt_final"' not in after
    assert streamed and streamed[-1] == "<ended>", streamed[-3:]


def test_ctrl_c_on_an_idle_server_prints_no_traceback(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    try:
        server.wait_ready()
        asked = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code = server.proc.wait(10)
        took = time.monotonic() - asked
    finally:
        server.stop()
    assert code == 0
    assert took < 2.0, took
    assert _shutdown_problems(server) == []
    last = server.log_path.read_text().rstrip().splitlines()[-1]
    assert f'"message": "Finished server process [{server.proc.pid}]"' in last, last


# --------------------------------------------------------------------------- 7. scenarios


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"],
                         ids=["empty", "blank", "comment"])
def test_an_empty_scenario_is_an_error_naming_the_file(text: str, tmp_path: Path) -> None:
    """Before: `0 transition(s)`, exit 0 (and outside the repository `cannot read chart
    …/charts/voice_turn.yaml`, relative to the scenario)."""
    scenario = tmp_path / "empty.yaml"
    scenario.write_text(text)
    result = run("simulate", str(scenario), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{scenario}:1:1: the scenario is empty" in result.stderr
    assert "cannot read chart" not in result.stderr
    assert result.stdout == ""


def test_a_scenario_without_a_chart_runs_the_shipped_one_from_anywhere(tmp_path: Path) -> None:
    scenario = tmp_path / "hello.yaml"
    scenario.write_text("steps:\n  - {at: 0, event: client_connected}\n"
                        "  - {at: 100, event: stt_final, payload: {text: hello, is_final: true}}\n")
    result = run("simulate", str(scenario), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"simulated {scenario}: 4 transition(s), 0 ERROR line(s)")
    started = [json.loads(line) for line in result.stdout.splitlines()
               if '"session_started"' in line]
    assert Path(started[0]["data"]["chart_path"]) == CHART


# --------------------------------------------------------------------------- 13. config.yaml


def test_the_shipped_config_comments_name_only_what_exists() -> None:
    """It said `redis://host:port arrives with Step 4` long after Redis arrived."""
    import re

    from adapters.config import bus_problem
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    comments = [line.partition("#")[2] for line in text.splitlines() if "#" in line]
    assert not [c for c in comments if re.search(r"\bStep \d|arrives with|coming soon|TODO", c)]
    bus = text[text.index("\nbus:"):].split("\n", 3)[1:3]
    schemes = re.findall(r"([a-z+]+)://", " ".join(bus))
    assert {"redis", "rediss", "unix", "redis+cluster"} <= set(schemes), bus
    assert [s for s in schemes if bus_problem(f"{s}://host:6379") is not None] == []
