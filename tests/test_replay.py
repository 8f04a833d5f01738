"""`turnchart replay`: recorded calls re-run against the same or an edited chart.

Recordings come from the simulator (the §3 trace), from a real `turnchart
serve` process over its WebSocket transport, and from a session's Redis
stream; each replay is read the way a person regression-testing a flow edit
reads it: which rows are the same, where it first diverges, and why.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.cli.main import main
from adapters.redis.bus import RedisEventBus
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.events import VoiceEvent
from engine.tools.replay import inputs_from_events, parse_log, replay_recording
from engine.tools.simulator import simulate_file, transitions
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for
from tests.support.webrtc_client import ServerProcess

ROOT = Path(__file__).resolve().parent.parent

# A small turn chart, and the same chart with one flow edit in one place:
# THINKING's answer goes through CONFIRMING (200 ms) before SPEAKING.
CHART = """\
chart: turn
version: 1
initial: IDLE
contracts:
  microphone: [open, gated, closed]
  playback: [stopped, streaming]
events:
  client_connected: {}
  stt_final: {payload: {text: str, is_final: bool}}
  response_ready: {payload: {text: str}}
  playback_done: {payload: {duration_ms: float}}
  barge_in: {payload: {reason: str}}
  ready_after_interrupt: {}
  confirmed: {}
  client_disconnected: {}
  error: {payload: {message: str}}
states:
  IDLE:
    contract: {microphone: closed, playback: stopped}
    on: {client_connected: LISTENING}
  LISTENING:
    contract: {microphone: open, playback: stopped}
    on:
      stt_final: {target: THINKING, guard: has_final_text}
      client_disconnected: IDLE
  THINKING:
    contract: {microphone: gated, playback: stopped}
    invoke: respond
    on:
      response_ready: {target: %(answer_target)s, guard: has_text}
      barge_in: INTERRUPT
      error: LISTENING
      client_disconnected: IDLE
%(confirming)s  SPEAKING:
    contract: {microphone: gated, playback: streaming}
    invoke: speak
    on:
      playback_done: LISTENING
%(speaking_barge_in)s      client_disconnected: IDLE
  INTERRUPT:
    contract: {microphone: open, playback: stopped}
    after: {0ms: ready_after_interrupt}
    on: {ready_after_interrupt: LISTENING}
"""
CONFIRMING = """\
  CONFIRMING:
    contract: {microphone: gated, playback: stopped}
    after: {200ms: confirmed}
    on:
      confirmed: SPEAKING
      barge_in: INTERRUPT
      client_disconnected: IDLE
"""

TURN = """\
chart: %(chart)s
fakes: {respond_ms: 300, speak_ms: 1200}
steps:
  - {at: 0, event: client_connected}
  - {at: 100, event: stt_final, payload: {text: "hello", is_final: true}}
  - {at: 2500, event: stt_final, payload: {text: "and tomorrow?", is_final: true}}
until_ms: 5000
"""
BARGE_IN = """\
chart: %(chart)s
fakes: {respond_ms: 300, speak_ms: 2000}
steps:
  - {at: 0, event: client_connected}
  - {at: 100, event: stt_final, payload: {text: "tell me a story", is_final: true}}
  - {at: 900, event: barge_in, payload: {reason: "user said stop"}}
until_ms: 3000
"""


def chart_text(confirming: bool = False, barge_in_while_speaking: str | None = "INTERRUPT"
               ) -> str:
    return CHART % {"answer_target": "CONFIRMING" if confirming else "SPEAKING",
                    "confirming": CONFIRMING if confirming else "",
                    "speaking_barge_in": f"      barge_in: {barge_in_while_speaking}\n"
                    if barge_in_while_speaking else ""}


@pytest.fixture
def charts(tmp_path: Path) -> dict[str, Path]:
    paths = {"base": tmp_path / "turn.yaml", "confirming": tmp_path / "turn_confirming.yaml",
             "no_barge_in": tmp_path / "turn_no_barge_in.yaml"}
    paths["base"].write_text(chart_text())
    paths["confirming"].write_text(chart_text(confirming=True))
    paths["no_barge_in"].write_text(chart_text(barge_in_while_speaking=None))
    return paths


def record(tmp_path: Path, scenario: str, chart: Path, name: str = "trace") -> Path:
    """`turnchart simulate` a scenario on `chart`; return the trace file."""
    scenario_path = tmp_path / f"{name}.scenario.yaml"
    scenario_path.write_text(scenario % {"chart": chart})
    out = tmp_path / f"{name}.jsonl"
    assert main(["simulate", str(scenario_path), "--out", str(out)]) == 0
    return out


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


MARKS = {"=", "≠", "-", "+"}


def table(out: str) -> list[str]:
    """The table's rows: the lines with a marker column."""
    return [line for line in out.splitlines() if any(t in MARKS for t in line.split())]


def _mark(row: str) -> str:
    return next(token for token in row.split() if token in MARKS)


# ------------------------------------------------------------ same chart
def test_replaying_a_simulated_call_on_its_own_chart_is_identical(
        tmp_path: Path, charts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    trace = record(tmp_path, TURN, charts["base"])
    code, out, _ = replay(capsys, str(trace))          # the chart the log says ran
    assert code == 0
    rows = table(out)
    assert len(rows) == 7
    assert all(" = " in row for row in rows)
    assert rows[0].split() == ["0", "IDLE", "→", "LISTENING", "(client_connected)", "=",
                               "0", "IDLE", "→", "LISTENING", "(client_connected)"]
    assert "s1: identical (7 same, 0 changed, 0 missing, 0 extra)" in out


@pytest.mark.parametrize("name", ["barge_in_speaking", "barge_in_thinking", "clean_turn",
                                  "disconnect_speaking", "double_final", "empty_and_partial",
                                  "filler_fast", "filler_slow", "invalid_raw", "no_transition",
                                  "responder_error"])
def test_every_example_scenario_replays_identically(name: str) -> None:
    """Stale answers, fillers, rejections, invalid input, a failing responder:
    answering activities from the recording reproduces each call exactly."""
    registry = default_registry()
    trace = simulate_file(ROOT / "tests" / "scenarios" / f"{name}.yaml", registry=registry)
    lines = [json.dumps(r, ensure_ascii=False) for r in trace]
    [recording] = parse_log(lines, name).recordings
    assert recording.chart.path is not None
    report = replay_recording(recording, load_chart(recording.chart.path, registry), registry)
    moves = [r for r in trace if r["event_type"] in ("state_transition", "internal_transition")]
    assert len(moves) >= len(transitions(trace)) >= 1
    assert [r.mark for r in report.rows] == ["="] * len(moves)
    assert report.notes == [] and report.unanswered == []
    assert not report.diverges


# ---------------------------------------------------------- edited chart
def test_an_edited_chart_diverges_at_the_event_that_now_goes_elsewhere(
        tmp_path: Path, charts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    trace = record(tmp_path, TURN, charts["base"])
    code, out, _ = replay(capsys, str(trace), "--chart", str(charts["confirming"]))
    assert code == 1
    rows = table(out)
    assert [_mark(row) for row in rows] == ["=", "=", "≠", "+", "=", "=", "≠", "+", "="]
    assert rows[2].split() == ["400", "THINKING", "→", "SPEAKING", "(response_ready)", "≠",
                               "400", "THINKING", "→", "CONFIRMING", "(response_ready)"]
    assert rows[3].split() == ["+", "600", "CONFIRMING", "→", "SPEAKING", "(confirmed)"]
    # speak's recorded answer (playback_done 1200 ms after it started) comes 200 ms
    # later, because speaking now starts 200 ms later
    assert rows[4].split() == ["1600", "SPEAKING", "→", "LISTENING", "(playback_done)", "=",
                               "1800", "SPEAKING", "→", "LISTENING", "(playback_done)"]
    assert out.strip().splitlines()[-1] == (
        "s1: DIVERGES (5 same, 2 changed, 0 missing, 2 extra) at 400 ms, response_ready "
        "from activity:respond: recorded THINKING → SPEAKING (response_ready), replayed "
        "THINKING → CONFIRMING (response_ready)")


def test_json_output_names_the_divergence(tmp_path: Path, charts: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    trace = record(tmp_path, TURN, charts["base"])
    code, out, _ = replay(capsys, str(trace), "--chart", str(charts["confirming"]),
                          "--format", "json")
    assert code == 1
    result = json.loads(out)
    assert result["diverges"] is True
    [session] = result["sessions"]
    assert session["divergence"] == {
        "row": 3, "t_ms": 400.0, "event": "response_ready", "source": "activity:respond",
        "mark": "≠", "recorded": "THINKING → SPEAKING (response_ready)",
        "replayed": "THINKING → CONFIRMING (response_ready)"}
    assert session["counts"] == {"same": 5, "changed": 2, "missing": 0, "extra": 2,
                                 "unanswered": 0}
    assert session["recorded_chart"]["version_hash"] != session["chart_hash"]
    third = session["rows"][2]
    assert third["recorded"]["line"] is not None
    assert (third["recorded"]["to"], third["replayed"]["to"]) == ("SPEAKING", "CONFIRMING")


def test_an_activity_kept_running_past_its_recording_is_reported_not_invented(
        tmp_path: Path, charts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The edit drops barge-in while speaking: the recorded speech was cut at the
    barge-in, so what it would have done next is unknown; replay says so."""
    trace = record(tmp_path, BARGE_IN, charts["base"])
    code, out, _ = replay(capsys, str(trace), "--chart", str(charts["no_barge_in"]))
    assert code == 1
    assert [_mark(row) for row in table(out)] == ["=", "=", "=", "-", "-"]
    assert "900  ? speak in SPEAKING: its recorded run was cancelled (state_exit) 500 ms " \
           "after it started" in out
    assert "900  only in the replay: 🚫 barge_in rejected in SPEAKING: no_transition" in out
    assert "DIVERGES (3 same, 0 changed, 2 missing, 0 extra, 1 unanswered) at 900 ms, " \
           "barge_in from simulate: recorded SPEAKING → INTERRUPT (barge_in), not in the " \
           "replay" in out


def test_more_activity_runs_than_recorded_are_unanswered(tmp_path: Path,
                                                         charts: dict[str, Path]) -> None:
    """The recording answered `respond` once; an edit that asks twice gets no
    invented second answer: the run waits and the replay says so."""
    trace = record(tmp_path, BARGE_IN, charts["base"])
    twice = tmp_path / "twice.yaml"
    twice.write_text(chart_text(barge_in_while_speaking="THINKING"))
    registry = default_registry()
    [recording] = parse_log(trace.read_text().splitlines(), str(trace)).recordings
    report = replay_recording(recording, load_chart(twice, registry), registry)
    assert [n.message for n in report.unanswered] == [
        "respond in THINKING: the recording ran respond 1 time(s); run 2 has no recorded answer"]
    assert report.unanswered[0].t_ms == 900.0          # when the barge-in started it again
    assert [(r.mark, r.replayed.text() if r.replayed else None) for r in report.rows[3:]] == [
        ("≠", "SPEAKING → THINKING (barge_in)"), ("-", None)]
    assert report.diverges


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(("line", "message"), [
    ('{"ts": "2025-11-22T22:20:00.100Z", "t_ms": 100.0, "level": "IN',
     ":3: not a JSON line (Unterminated string"),
    ('{"ts": "x", "t_ms": 5, "level": "INFO", "session_id": "s1", '
     '"event_type": "state_transition", "message": "", "data": {"from": "IDLE", "event": "x"}}',
     ":3: state_transition line has no usable data.to"),
    ('{"ts": "x", "t_ms": "soon", "level": "INFO", "session_id": "s1", '
     '"event_type": "event_received", "message": "", "data": {}}',
     ":3: event_received line has no usable t_ms"),
    ('{"ts": "x", "t_ms": 5, "level": "INFO", "session_id": "s1", '
     '"event_type": "event_received", "message": "", "data": {"event": "stt_final", '
     '"source": "fastrtc"}}', ":3: event_received line has no usable data.payload"),
])
def test_a_bad_line_is_an_error_naming_the_line(tmp_path: Path, charts: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str], line: str,
                                                message: str) -> None:
    lines = record(tmp_path, TURN, charts["base"]).read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")
    code, out, err = replay(capsys, str(bad))
    assert code == 2
    assert out == ""
    assert f"turnchart: {bad}{message}" in err


def test_lines_of_other_tools_are_skipped_and_counted(tmp_path: Path, charts: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    lines = record(tmp_path, TURN, charts["base"]).read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(["turnchart serving on http://127.0.0.1:5204/charts",
                                '{"pip": "installing"}', *lines, "", "[1, 2]",
                                '{"ts": "x", "t_ms": null, "level": "INFO", "session_id": "-", '
                                '"event_type": "http_access", "message": "GET /", "data": {}}'])
                     + "\n")
    code, out, _ = replay(capsys, str(mixed))
    assert code == 0
    assert "(3 line(s) that are not turnchart log lines skipped, the first at line 1)" in out


def test_without_a_chart_in_the_log_replay_asks_for_one(tmp_path: Path, charts: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    records = [json.loads(line) for line in
               record(tmp_path, TURN, charts["base"]).read_text().splitlines()]
    for r in records:
        r["data"].pop("chart_path", None)
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    code, _, err = replay(capsys, str(old))
    assert code == 2
    assert "the log does not say which chart session s1 ran; pass --chart PATH" in err
    assert replay(capsys, str(old), "--chart", str(charts["base"]))[0] == 0


def test_a_log_that_begins_mid_call_is_replayed_with_a_warning(
        tmp_path: Path, charts: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A rotated log: the call's start and its first `respond` run are not in it."""
    lines = record(tmp_path, TURN, charts["base"]).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"activity_started"' in line) + 1
    rotated = tmp_path / "rotated.jsonl"
    rotated.write_text("\n".join(lines[cut:]) + "\n")
    code, out, _ = replay(capsys, str(rotated), "--chart", str(charts["base"]))
    assert code == 1
    assert "only in the recording: 1 activity event(s) of runs started before the log " \
           "begins are not replayed" in out
    # the replay starts in IDLE, so the recorded moves are missing and the
    # later question is refused: the log cannot stand for the whole call
    assert [_mark(row) for row in table(out)] == ["-"] * 6
    assert "2400  only in the replay: 🚫 stt_final rejected in IDLE: no_transition" in out


def test_sessions_are_replayed_each_or_picked(tmp_path: Path, charts: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    scenario = TURN.replace("steps:", "sessions: [s1, s2]\nsteps:") + \
        "  - {at: 50, event: client_connected, session: s2}\n"
    scenario = scenario.replace("until_ms: 5000\n", "") + "until_ms: 5000\n"
    trace = record(tmp_path, scenario, charts["base"])
    code, out, _ = replay(capsys, str(trace), "--chart", str(charts["confirming"]))
    assert code == 1                                  # s1 diverges, s2 only connected
    assert "s1: DIVERGES" in out and "s2: identical (1 same" in out
    code, out, _ = replay(capsys, str(trace), "--chart", str(charts["confirming"]),
                          "--session", "s2")
    assert code == 0 and "s1" not in out
    code, _, err = replay(capsys, str(trace), "--session", "s9")
    assert code == 2 and "no session 's9' in the log (found: s1, s2)" in err


def test_unreadable_inputs_are_usage_errors(tmp_path: Path, charts: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(capsys)[0] == 2
    code, _, err = replay(capsys, str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in err
    trace = record(tmp_path, TURN, charts["base"])
    broken = tmp_path / "broken.yaml"
    broken.write_text(chart_text().replace("target: THINKING", "target: THINKNG"))
    code, _, err = replay(capsys, str(trace), "--chart", str(broken))
    assert code == 2 and "unknown target state 'THINKNG'" in err


# ----------------------------------------------------------------- Redis
def publish(url: str, events: list[VoiceEvent]) -> None:
    async def go() -> None:
        async with RedisEventBus.from_url(url, _null_log()) as bus:
            await bus.publish_many(events)
            await bus.end_session(events[0].session_id)
    asyncio.run(go())


def _null_log() -> Any:
    from engine.runtime.clock import RealClock
    from engine.runtime.logs import EventLog, NullSink
    return EventLog(NullSink(), RealClock())


def test_a_redis_stream_is_replayed_alone_or_against_its_log(
        server: RedisServer, tmp_path: Path, charts: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    trace = record(tmp_path, TURN, charts["base"])
    [recording] = parse_log(trace.read_text().splitlines()).recordings
    base = 1_763_900_000.0
    # what a front-end would have published for this call: its outside events
    publish(server.url, [VoiceEvent(event_type=i.event, session_id="s1", source="fastrtc",
                                    timestamp=base + i.t_ms / 1000, correlation_id=i.correlation_id,
                                    payload=dict(i.payload)) for i in recording.inputs])

    code, out, _ = replay(capsys, "--redis", server.url, "--session", "s1",
                          "--chart", str(charts["base"]))
    assert code == 0                       # nothing recorded to compare with
    assert "replayed (no recorded transitions to compare with)" in out
    assert "      0  IDLE → LISTENING (client_connected)" in out
    assert "    100  LISTENING → THINKING (stt_final)" in out
    assert "    100  ? respond in THINKING: the recording ran respond 0 time(s)" in out

    code, out, _ = replay(capsys, str(trace), "--redis", server.url, "--session", "s1")
    assert code == 0 and "s1: identical (7 same" in out
    code, out, _ = replay(capsys, str(trace), "--redis", server.url, "--session", "s1",
                          "--chart", str(charts["confirming"]))
    assert code == 1 and "at 400 ms, response_ready from activity:respond" in out


async def test_a_long_stream_is_read_to_its_end_page_by_page(redis: Any) -> None:
    from adapters.redis.history import read_history
    bus = RedisEventBus(redis)
    texts = [f"question {n}" for n in range(7)]
    await bus.publish_many([VoiceEvent(event_type="stt_final", session_id="long", source="stt",
                                       timestamp=1_763_900_000.0 + n,
                                       payload={"text": text, "is_final": True})
                            for n, text in enumerate(texts)])
    await bus.end_session("long")
    history = await read_history(redis, "long", page=3)
    assert [e["payload"]["text"] for e in history.events] == texts
    assert history.ended and history.unreadable == []
    inputs, skipped = inputs_from_events(history.events, offset_ms=50.0)
    assert [i.t_ms for i in inputs] == [50.0 + 1000.0 * n for n in range(7)] and skipped == 0


def test_a_missing_stream_or_server_is_a_usage_error(server: RedisServer, charts: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = replay(capsys, "--redis", server.url, "--session", "nobody",
                          "--chart", str(charts["base"]))
    assert code == 2 and "no events on voice:stt:session:{nobody}" in err
    assert replay(capsys, "--redis", server.url)[0] == 2          # which session?
    server.stop()
    code, _, err = replay(capsys, "--redis", server.url, "--session", "s1",
                          "--chart", str(charts["base"]))
    assert code == 2 and "cannot read the stream of session s1 from Redis" in err


# ------------------------------------------------------- a real server
def test_a_call_to_a_real_server_replays_identically_and_shows_an_edit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`turnchart serve` with its real responder and TTS, one call over the
    WebSocket transport; its stdout is the recording."""
    from websockets.sync.client import connect

    server = ServerProcess(tmp_path)
    try:
        server.wait_ready()
        with connect(f"ws://127.0.0.1:{server.port}/websocket/offer") as ws:
            ws.send(json.dumps({"event": "start", "websocket_id": "call-1"}))
            assert wait_for(lambda: server.transitions("call-1"), 10)
            ws.send(json.dumps({"event": "transcript", "text": "hello", "final": True}))
            assert wait_for(lambda: "SPEAKING→LISTENING (playback_done)"
                            in server.transitions("call-1"), 30, step=0.1), \
                server.transitions("call-1")
            ws.send(json.dumps({"event": "stop"}))
        assert wait_for(lambda: any(r["event_type"] == "session_closed"
                                    and r["session_id"] == "call-1" for r in server.records()), 10)
    finally:
        server.stop()
    code, out, _ = replay(capsys, str(server.log_path))     # the chart the log names
    assert code == 0, out
    assert "call-1: identical (5 same, 0 changed, 0 missing, 0 extra)" in out

    # The edit: after the answer, the session goes back to IDLE instead of LISTENING.
    product = (ROOT / "charts" / "voice_turn.yaml").read_text()
    edited = product.replace("          playback_done: LISTENING\n",
                             "          playback_done: IDLE\n")
    assert edited != product
    (tmp_path / "edited.yaml").write_text(edited)
    code, out, _ = replay(capsys, str(server.log_path), "--chart", str(tmp_path / "edited.yaml"))
    assert code == 1
    assert [_mark(row) for row in table(out)] == ["=", "=", "=", "≠", "-"]
    assert "playback_done from activity:speak: recorded SPEAKING → LISTENING (playback_done), " \
           "replayed SPEAKING → IDLE (playback_done)" in out
    assert "only in the replay: 🚫 client_disconnected rejected in IDLE: no_transition" in out


def test_the_tutorial_edit_puts_confirming_before_every_spoken_answer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tutorial = ROOT / "docs" / "tutorial" / "voice_turn_confirming.yaml"
    assert main(["validate", str(tutorial)]) == 0
    calls = tmp_path / "calls.jsonl"
    with calls.open("w") as out:
        for scenario in ("turn", "barge_in"):
            trace = tmp_path / f"{scenario}.jsonl"
            assert main(["simulate", str(ROOT / "scenarios" / f"{scenario}.yaml"),
                         "--out", str(trace)]) == 0
            out.write(trace.read_text())
    code, out_text, _ = replay(capsys, str(calls), "--chart", str(tutorial))
    assert code == 1
    assert "s1: DIVERGES (3 same, 1 changed, 0 missing, 1 extra) at 400 ms, response_ready " \
           "from activity:respond: recorded THINKING → SPEAKING (response_ready), replayed " \
           "THINKING → CONFIRMING (response_ready)" in out_text
    # the answer is spoken 400 ms later, so the recorded barge-in (at 900 ms) now
    # cuts it 100 ms into speaking instead of 500 ms: still SPEAKING → INTERRUPT
    assert "900  SPEAKING → INTERRUPT (barge_in)               =     900  SPEAKING → " \
           "INTERRUPT (barge_in)" in out_text
    assert out_text.strip().splitlines()[-1] == "2 session(s): 0 identical, 2 diverging"

    trace = tmp_path / "replayed.jsonl"
    code, out_text, _ = replay(capsys, str(calls), "--chart", str(tutorial), "--session", "s1",
                               "--trace", str(trace))
    assert code == 1
    replayed = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["message"] for r in replayed if r["event_type"] == "state_transition"][2:5] == [
        "🔄 THINKING → CONFIRMING (response_ready)", "🔄 CONFIRMING → SPEAKING (confirmed)",
        "🔄 SPEAKING → LISTENING (playback_done)"]
