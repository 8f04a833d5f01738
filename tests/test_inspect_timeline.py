"""engine.tools.timeline: a session's timeline from its log lines, checked on the lines
the simulator writes for the shipped scenarios (the same lines a live server writes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.context import EffectContext
from engine.runtime.logs import EventLog, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.snapshot import MemorySnapshotStore
from engine.tools.fakes import FakeSettings, fake_ports
from engine.tools.simulator import Scenario, run_scenario, simulate_file
from engine.tools.timeline import Timeline, build_timeline

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "voice_turn.yaml"


def spans(timeline: Timeline) -> list[tuple[str, float, float | None]]:
    return [(s.state, s.start_ms, s.end_ms) for s in timeline.states]


def moves(timeline: Timeline) -> list[str]:
    return [f"{t.source}→{t.target} ({t.event})" for t in timeline.transitions]


def bars(timeline: Timeline, kind: str) -> list[tuple[str, str, float, float | None, str]]:
    return [(b.name, b.state, b.start_ms, b.end_ms, b.outcome) for b in timeline.bars
            if b.kind == kind]


@pytest.fixture(scope="module")
def barge_in_trace() -> list[Record]:
    return simulate_file(ROOT / "scenarios" / "barge_in.yaml")


def test_inspect_timeline_of_a_barge_in(barge_in_trace: list[Record]) -> None:
    timeline = build_timeline("s1", barge_in_trace)
    assert (timeline.chart, timeline.version, timeline.closed) == ("voice_turn", 1, True)
    assert moves(timeline) == [
        "IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)", "SPEAKING→INTERRUPT (barge_in)",
        "INTERRUPT→LISTENING (ready_after_interrupt)"]
    assert spans(timeline) == [("IDLE", 0.0, 0.0), ("LISTENING", 0.0, 100.0),
                               ("THINKING", 100.0, 400.0), ("SPEAKING", 400.0, 900.0),
                               ("INTERRUPT", 900.0, 900.0), ("LISTENING", 900.0, 3000.0)]
    assert [t.dwell_ms for t in timeline.transitions] == [0.0, 100.0, 300.0, 500.0, 0.0]
    assert all(t.latency_ms == 0.0 for t in timeline.transitions)  # virtual clock
    # The answer was being spoken when the user barged in: `speak` was cut at 900 ms.
    assert bars(timeline, "activity") == [("respond", "THINKING", 100.0, 400.0, "done"),
                                          ("speak", "SPEAKING", 400.0, 900.0, "cancelled")]
    assert [b.detail for b in timeline.bars if b.name == "speak"] == ["state_exit"]
    assert ("cancel_tts", "INTERRUPT", 900.0, 900.0, "done") in bars(timeline, "effect")
    [barge_in] = timeline.barge_ins
    assert (barge_in.at_ms, barge_in.state, barge_in.outcome) == (900.0, "SPEAKING", "applied")
    assert barge_in.playback_cleared_ms == 0.0
    assert barge_in.time_to_silence_ms is None  # no audio adapter in a simulation
    assert [(m.kind, m.at_ms) for m in timeline.marks] == [("timer_fired", 900.0)]


def test_inspect_timeline_skips_other_sessions_and_reads_a_saved_trace(
        barge_in_trace: list[Record], tmp_path: Path) -> None:
    saved = tmp_path / "trace.jsonl"
    saved.write_text("".join(json.dumps(r) + "\n" for r in barge_in_trace))
    replayed = [json.loads(line) for line in saved.read_text().splitlines()]
    timeline = build_timeline("s1", replayed)
    assert timeline == build_timeline("s1", barge_in_trace)
    # The invalid raw step is logged under session "-", not on s1's timeline.
    assert timeline.lines == sum(1 for r in barge_in_trace if r["session_id"] == "s1")
    assert build_timeline("-", barge_in_trace).marks[0].kind == "event_invalid"
    assert build_timeline("nobody", barge_in_trace).lines == 0


def test_inspect_timeline_as_json_names_transitions_like_the_log(
        barge_in_trace: list[Record]) -> None:
    data = build_timeline("s1", barge_in_trace).as_dict()
    json.dumps(data)  # plain data
    assert data["transitions"][1] == {"from": "LISTENING", "to": "THINKING", "event": "stt_final",
                                      "at_ms": 100.0, "correlation_id": "turn-2",
                                      "latency_ms": 0.0, "dwell_ms": 100.0}
    assert data["barge_ins"][0]["outcome"] == "applied"
    assert data["bars"][0] == {"kind": "effect", "name": "cancel_tts", "state": "LISTENING",
                               "start_ms": 0.0, "end_ms": 0.0, "outcome": "done", "detail": None}


def test_inspect_timeline_of_a_session_still_speaking(barge_in_trace: list[Record]) -> None:
    # The lines up to 600 ms: the answer is playing; `now` is 650 ms on the session clock.
    so_far = [r for r in barge_in_trace if r["t_ms"] <= 600]
    timeline = build_timeline("s1", so_far, now_t_ms=650.0)
    assert not timeline.closed
    assert timeline.state == "SPEAKING"
    assert spans(timeline)[-1] == ("SPEAKING", 400.0, None)
    assert bars(timeline, "activity")[-1] == ("speak", "SPEAKING", 400.0, None, "running")
    assert timeline.end_ms == 650.0


def test_inspect_timeline_from_a_ring_buffer_that_lost_the_start(
        barge_in_trace: list[Record]) -> None:
    mine = [r for r in barge_in_trace if r["session_id"] == "s1"]
    start = next(i for i, r in enumerate(mine) if r["event_type"] == "activity_done")
    timeline = build_timeline("s1", mine[start:], dropped_lines=start)
    assert timeline.dropped_lines == start
    assert timeline.origin_t_ms == 400.0
    # THINKING was entered before the kept lines: its span and `respond` start at 0.
    assert spans(timeline)[0] == ("THINKING", 0.0, 0.0)
    assert bars(timeline, "activity")[0] == ("respond", "THINKING", 0.0, 0.0, "done")
    assert moves(timeline)[0] == "THINKING→SPEAKING (response_ready)"


def test_inspect_timeline_marks_a_barge_in_the_chart_rejects() -> None:
    scenario = Scenario(chart=str(CHART), steps=[
        {"at": 0, "event": "client_connected"},
        {"at": 50, "event": "barge_in", "payload": {"reason": "cough"}}], until_ms=100)
    registry = default_registry()
    trace = asyncio.run(run_scenario(scenario, load_chart(CHART, registry), registry))
    timeline = build_timeline("s1", trace)
    [barge_in] = timeline.barge_ins
    assert (barge_in.at_ms, barge_in.outcome, barge_in.state) == (50.0, "rejected", None)
    [rejected] = [m for m in timeline.marks if m.kind == "transition_rejected"]
    assert (rejected.at_ms, rejected.level) == (50.0, "ERROR")
    assert "barge_in rejected in LISTENING" in rejected.text


def test_inspect_timeline_joins_the_adapters_barge_in_with_the_charts() -> None:
    """Live, the audio adapter logs `barge_in_detected` (with time to silence) and then
    posts `barge_in`: one barge-in, with both measures."""

    async def call() -> list[Record]:
        clock, sink = VirtualClock(), ListSink()
        log = EventLog(sink, clock)
        registry = default_registry()
        chart = load_chart(CHART, registry)
        ports = fake_ports(clock, FakeSettings(respond_ms=100, speak_ms=2000))
        async with SessionManager(chart, registry, ports, clock, log,
                                  MemorySnapshotStore()) as manager:
            await manager.open("live-1")

            def send(event: str, **payload: object) -> None:
                manager.deliver({"event_type": event, "session_id": "live-1",
                                 "source": "fastrtc", "timestamp": clock.wall(),
                                 "payload": payload})

            send("client_connected")
            await clock.advance_to(10)
            send("stt_final", text="tell me a story", is_final=True)
            await clock.advance_to(500)
            log.emit("INFO", "live-1", "barge_in_detected", "✋ barge-in",
                     {"dropped_frames": 7, "time_to_silence_ms": 1.25})
            await clock.advance_to(503)
            send("barge_in", reason="speech onset")
            await clock.advance_to(600)
            send("client_disconnected")
            await clock.advance_to(700)
        return sink.records

    timeline = build_timeline("live-1", asyncio.run(call()))
    [barge_in] = timeline.barge_ins
    assert (barge_in.at_ms, barge_in.state, barge_in.outcome) == (500.0, "SPEAKING", "applied")
    assert (barge_in.time_to_silence_ms, barge_in.dropped_frames) == (1.25, 7)
    assert barge_in.playback_cleared_ms == 0.0
    assert moves(timeline)[-3:] == ["SPEAKING→INTERRUPT (barge_in)",
                                    "INTERRUPT→LISTENING (ready_after_interrupt)",
                                    "LISTENING→IDLE (client_disconnected)"]


def test_inspect_timeline_shows_a_failing_effect_as_a_failed_bar(tmp_path: Path) -> None:
    chart_file = tmp_path / "explode.yaml"
    chart_file.write_text(
        "chart: explode\nversion: 1\ninitial: IDLE\n"
        "contracts: {microphone: [open, closed], playback: [stopped]}\n"
        "events: {client_connected: {}, client_disconnected: {}}\n"
        "states:\n"
        "  IDLE:\n    contract: {microphone: closed, playback: stopped}\n"
        "    on: {client_connected: ON}\n"
        "  ON:\n    contract: {microphone: open, playback: stopped}\n"
        "    enter: [explode, cancel_filler]\n    on: {client_disconnected: IDLE}\n")
    registry = default_registry()

    @registry.effect("explode")
    async def explode(ctx: EffectContext) -> None:
        raise RuntimeError("boom")

    scenario = Scenario(chart=str(chart_file), steps=[{"at": 5, "event": "client_connected"}],
                        until_ms=10)
    trace = asyncio.run(run_scenario(scenario, load_chart(chart_file, registry), registry))
    timeline = build_timeline("s1", trace)
    effects = [(b.name, b.state, b.outcome, b.detail) for b in timeline.bars
               if b.kind == "effect"]
    assert effects == [("explode", "ON", "failed", "RuntimeError: boom"),
                       ("cancel_filler", "ON", "done", None)]
    assert [b.start_ms for b in timeline.bars] == [5.0, 5.0]


def test_an_event_the_chart_ignores_is_not_worth_a_look() -> None:
    """issue 13 §3.12: `stt_partial` (`unhandled: ignore` in the shipped chart) while
    LISTENING is logged at DEBUG on purpose; it filled the inspector's "worth a look"
    list. A rejection the chart does not ignore is still marked."""
    scenario = Scenario(chart=str(CHART), steps=[
        {"at": 0, "event": "client_connected"},
        {"at": 20, "event": "stt_partial", "payload": {"text": "hel"}},
        {"at": 30, "event": "stt_partial", "payload": {"text": "hello"}},
        {"at": 50, "event": "barge_in", "payload": {"reason": "cough"}}], until_ms=100)
    registry = default_registry()
    trace = asyncio.run(run_scenario(scenario, load_chart(CHART, registry), registry))
    assert [r["level"] for r in trace if r["event_type"] == "transition_rejected"
            and r["data"]["event"] == "stt_partial"] == ["DEBUG", "DEBUG"]
    timeline = build_timeline("s1", trace)
    assert [(m.kind, m.at_ms, m.level) for m in timeline.marks
            if m.kind == "transition_rejected"] == [("transition_rejected", 50.0, "ERROR")]


# ------------------------------------------------- issue 16: tool calls and data changes
def _booking_trace(name: str) -> list[Record]:
    from examples.booking.registry import build_registry
    return simulate_file(ROOT / "examples" / "booking" / "scenarios" / f"{name}.yaml",
                         registry=build_registry())


def _booking_timeline(name: str) -> Timeline:
    return build_timeline("s1", _booking_trace(name))


def test_inspect_timeline_shows_tool_calls_and_what_became_of_them() -> None:
    """examples/booking's bad date: a call refused for its field, one the chart's guard
    rejects, then one that moves the flow; each with its arguments in short."""
    timeline = _booking_timeline("bad_date")
    assert [(c.at_ms, c.tool, c.state, c.arguments, c.ok, c.result, c.field, c.detail)
            for c in timeline.tools] == [
        (800.0, "set_party_size", "ASK_SIZE", "size=4", True, "moved", None, "ASK_DATE"),
        (3800.0, "set_date", "ASK_DATE", "date=31", False, "invalid", "payload.date", None),
        (7300.0, "set_date", "ASK_DATE", 'date="2027-02-30"', True, "rejected", None,
         "guard_failed:is_calendar_date"),
        (10800.0, "set_date", "ASK_DATE", 'date="2026-12-11"', True, "moved", None,
         "ASK_TIME")]
    assert timeline.tools[1].error == "payload.date: expected str, got int 31"
    # the refused call is also worth a look, as its event_invalid line
    assert ("event_invalid", 3800.0) in [(m.kind, m.at_ms) for m in timeline.marks]


def test_inspect_timeline_shows_data_changes_old_to_new() -> None:
    timeline = _booking_timeline("book_a_table")
    assert [(d.at_ms, d.event, [(c.field, c.old, c.new) for c in d.changes])
            for d in timeline.data_changes] == [
        (800.0, "set_party_size", [("party_size", 0, 4)]),
        (3800.0, "set_date", [("date", "", "2026-12-12")]),
        (6800.0, "set_time", [("time", "", "19:30")])]
    assert [(c.tool, c.result) for c in timeline.tools] == [
        ("set_party_size", "moved"), ("set_date", "moved"), ("set_time", "moved"),
        ("confirm_booking", "moved")]
    # JSON: new keys only (the old ones as they were), a change's old/new as from/to like §3
    data = timeline.as_dict()
    assert {"states", "transitions", "bars", "barge_ins", "marks"} < set(data)
    assert data["data_changes"][0] == {
        "at_ms": 800.0, "event": "set_party_size", "state": "THINKING",
        "changes": [{"field": "party_size", "from": 0, "to": 4}]}
    assert data["tools"][3] == {
        "at_ms": 9800.0, "tool": "confirm_booking", "state": "CONFIRM",
        "arguments": "yes=true", "ok": True, "result": "moved", "field": None, "error": None,
        "detail": "DONE"}
    assert json.loads(json.dumps(data))["tools"][1]["arguments"] == 'date="2026-12-12"'


def test_inspect_timeline_tool_calls_in_flight_and_long_arguments() -> None:
    """A detour and back (each call moves the flow), a call still in flight when the
    lines end says `posted`; arguments that run long are cut."""
    timeline = _booking_timeline("opening_hours")
    assert [(c.tool, c.result, c.detail) for c in timeline.tools] == [
        ("set_party_size", "moved", "ASK_DATE"), ("ask_opening_hours", "moved", "HOURS"),
        ("continue_booking", "moved", "ASK_DATE")]
    trace = _booking_trace("book_a_table")
    first_call = next(i for i, r in enumerate(trace) if r["event_type"] == "tool_called")
    cut = build_timeline("s1", trace[:first_call + 1])
    assert [(c.tool, c.result) for c in cut.tools] == [("set_party_size", "posted")]
    long = {"event_type": "tool_called", "session_id": "s1", "t_ms": 5.0, "level": "INFO",
            "ts": "2025-11-22T22:20:00.005Z", "message": "🛠️ note(...)",
            "data": {"tool": "note", "arguments": {"text": "x" * 500}, "ok": True,
                     "state": "ASK_SIZE"}}
    [call] = build_timeline("s1", [long]).tools
    assert len(call.arguments) == 120 and call.arguments.startswith('text="xxx')
    assert call.arguments.endswith("…")


def test_inspect_timeline_a_tool_event_handled_in_place_or_dropped_as_stale() -> None:
    from engine.runtime.trace import EventStale, InternalTransition, LogLine

    def called(t_ms: float, tool: str) -> LogLine:
        return LogLine("s1", t_ms, 0.0, name="tool_called", text=f"🛠️ {tool}({{}})",
                       fields={"tool": tool, "arguments": {}, "ok": True, "state": "CONFIRM"})

    timeline = build_timeline("s1", [
        called(0.0, "repeat"), called(1.0, "confirm_booking"),
        InternalTransition("s1", 2.0, 0.0, state="CONFIRM", event="repeat",
                           correlation_id=None),
        EventStale("s1", 3.0, 0.0, event="confirm_booking", correlation_id=None,
                   current_epoch=4, event_epoch=3, owner="THINKING")])
    assert [(c.tool, c.arguments, c.result, c.detail) for c in timeline.tools] == [
        ("repeat", "", "handled", "CONFIRM"), ("confirm_booking", "", "stale", None)]
