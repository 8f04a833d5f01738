"""examples/booking (issue 16 §6): the table booking validates, reaches every
transition and guard outcome with `turnchart paths`, simulates its scenarios
(a barge-in during the confirmation, one during a dialogue transition, a tool
call with a bad date, the handover, a detour that resumes), and books a table
offline over a live WebSocket call to `turnchart serve --config`."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from engine.tools.simulator import simulate_file
from examples.booking.registry import build_registry
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import json_records
from tests.test_example_support import serve, stop

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "booking"
SPEC = "examples.booking.registry:registry"
TURNCHART = str(Path(sys.executable).with_name("turnchart"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TURNCHART, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_example_validates_and_paths_covers_every_transition_and_guard_outcome() -> None:
    chart = str(EXAMPLE / "chart.yaml")
    done = run("validate", chart, "--registry", SPEC)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run("paths", chart, "--registry", SPEC)
    assert done.returncode == 0, done.stdout + done.stderr
    head = done.stdout.splitlines()[0]
    assert "transitions 23/23 (100%), guard outcomes 14/14 (100%)" in head, head
    assert head.endswith(", 0 problem(s)")


def test_the_example_renders_both_regions() -> None:
    done = run("render", str(EXAMPLE / "chart.yaml"), "--registry", SPEC, "--format",
               "mermaid")
    assert done.returncode == 0, done.stderr
    assert "--" in done.stdout.split("as CALL {", 1)[1]     # the concurrency divider
    for state in ("LISTENING", "SPEAKING", "ASK_SIZE", "CONFIRM", "HANDOVER"):
        assert state in done.stdout


def _simulate(name: str) -> list[dict[str, Any]]:
    return simulate_file(EXAMPLE / "scenarios" / f"{name}.yaml", registry=build_registry())


def _moves(trace: list[dict[str, Any]]) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']}" for r in trace
            if r["event_type"] == "state_transition"]


def _said(trace: list[dict[str, Any]]) -> list[str]:
    return [r["data"]["payload"]["text"] for r in trace if r["event_type"] == "event_received"
            and r["data"]["event"] == "response_ready"]


def test_book_a_table_in_simulation() -> None:
    trace = _simulate("book_a_table")
    assert [m for m in _moves(trace) if "THINKING" not in m and "SPEAKING" not in m
            and "LISTENING" not in m] == [
        "ASK_SIZE → ASK_DATE", "ASK_DATE → ASK_TIME", "ASK_TIME → CONFIRM", "CONFIRM → DONE",
        "DONE → BOOKED"]
    assert _said(trace)[-1] == ("Your table for 4 on 2026-12-12 at 19:30 is booked. "
                                "Thank you, goodbye!")
    assert not [r for r in trace if r["level"] == "ERROR"]


def test_a_tool_call_with_a_bad_date() -> None:
    trace = _simulate("bad_date")
    [invalid] = [r for r in trace if r["event_type"] == "event_invalid"]
    assert invalid["data"]["field"] == "payload.date"
    said = _said(trace)
    assert said[1].startswith("Sorry, that did not work (payload.date: expected str, got int")
    assert said[1].endswith("Which day would you like?")            # told, and asked again
    rejected = [r["data"]["reason"] for r in trace if r["event_type"] == "transition_rejected"
                and r["data"]["event"] == "set_date"]
    assert rejected == ["guard_failed:is_calendar_date"]            # "2027-02-30"
    assert "ASK_DATE → ASK_TIME" in _moves(trace)                   # then a good one


def test_a_barge_in_during_the_confirmation_keeps_the_flow() -> None:
    trace = _simulate("barge_in_confirm")
    moves = _moves(trace)
    assert moves.index("SPEAKING → INTERRUPT") < moves.index("CONFIRM → DONE")
    assert moves[-3:] == ["DONE → BOOKED", "THINKING → SPEAKING", "SPEAKING → LISTENING"]
    assert not [r for r in trace if r["event_type"] == "audio_out"
                and 8500 < r["t_ms"] <= 9000]                        # silence after it


def test_a_barge_in_during_a_dialogue_transition_neither_sticks_the_flow_nor_answers_twice(
        ) -> None:
    trace = _simulate("barge_in_transition")
    moves = _moves(trace)
    # the tool call moved the flow in one step; the barge-in came while the
    # responder was being asked for the words after it
    assert moves.index("DONE → BOOKED") < moves.index("THINKING → INTERRUPT")
    cancelled = [r for r in trace if r["event_type"] == "activity_cancelled"]
    assert [(r["data"]["activity"], r["t_ms"]) for r in cancelled] == [("respond", 9950.0)]
    said = _said(trace)
    booked = "Your table for 2 on 2025-11-23 at 20:00 is booked. Thank you, goodbye!"
    assert said.count(booked) == 1                                   # not answered twice
    per_turn = Counter(r["data"]["correlation_id"] for r in trace
                       if r["event_type"] == "event_received"
                       and r["data"]["event"] == "response_ready")
    assert set(per_turn.values()) == {1}
    assert moves[-2:] == ["THINKING → SPEAKING", "SPEAKING → LISTENING"]   # not stuck
    assert not [r for r in trace if r["level"] == "ERROR"]


def test_two_misunderstandings_hand_over_and_a_detour_resumes_where_it_was() -> None:
    trace = _simulate("handover")
    assert "ASK_SIZE → HANDOVER" in _moves(trace)
    assert _said(trace)[-1].endswith("I am putting you through to a colleague.")
    trace = _simulate("opening_hours")
    assert _moves(trace).count("HOURS → ASK_DATE") == 1              # history: not ASK_SIZE
    assert _said(trace)[-1] == "A table for 6. Which day would you like?"


def test_a_live_websocket_call_books_a_table_offline(tmp_path: Path) -> None:
    proc, base, log = serve(tmp_path, "--config", str(EXAMPLE / "config.yaml"))
    sid = "booking-1"

    def flow() -> list[str]:
        return [r["data"]["to"] for r in json_records(log) if r["session_id"] == sid
                and r["event_type"] == "state_transition"
                and r["data"]["to"] not in ("LISTENING", "THINKING", "SPEAKING", "INTERRUPT")]

    def answered(n: int) -> bool:
        return sum(1 for r in json_records(log) if r["session_id"] == sid
                   and r["event_type"] == "state_transition"
                   and r["data"]["from"] == "SPEAKING") >= n

    try:
        charts = httpx.get(f"{base}/charts").json()["charts"]
        assert [c["name"] for c in charts] == ["booking"] and not charts[0]["errors"]
        page = httpx.get(f"{base}/charts/booking").text        # the chart page's States table
        assert "<th>prompt · tools</th>" in page
        assert "💬 A table for {party_size}. Which day would you like?<br>🛠️ <code>set_date" \
            in page
        states = httpx.get(f"{base}/charts/booking.json").json()["states"]
        assert states["CONFIRM"]["tools"] == ["confirm_booking", "ask_opening_hours",
                                              "not_understood"]
        caller = WebSocketCaller(base, sid)
        try:
            for n, words in enumerate(["a table for four please", "tomorrow",
                                       "half past seven", "yes please"], 1):
                caller.say_text(words)
                assert wait_for(lambda n=n: answered(n), 60), (   # a loaded machine
                    flow(), [(r["event_type"], r["message"]) for r in json_records(log)][-25:])
            assert caller.audio_frames > 20 and caller.errors == []
        finally:
            caller.close()
    finally:
        stop(proc)
    assert flow() == ["ASK_DATE", "ASK_TIME", "CONFIRM", "DONE", "BOOKED", "IDLE"]   # hung up
    records = [r for r in json_records(log) if r["session_id"] == sid]
    data = [r["data"]["data"] for r in records if r["event_type"] == "data_changed"][-1]
    assert data["party_size"] == 4 and data["time"] == "19:30" and data["date"]
    tools = [r["data"]["tool"] for r in records if r["event_type"] == "tool_called"]
    assert tools == ["set_party_size", "set_date", "set_time", "confirm_booking"]
    answers = [r["data"]["payload"]["text"] for r in records if r["event_type"] ==
               "event_received" and r["data"]["event"] == "response_ready"]
    assert answers[-1].startswith("Your table for 4 on ") and "19:30" in answers[-1]
    assert not [r for r in json_records(log) if r["level"] == "ERROR"]
