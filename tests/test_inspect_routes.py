"""The inspector's HTTP side: `/inspect` and its assets, the `/inspect/events` stream
(snapshot, live lines, heartbeats, resync of a subscriber that fell behind) and
`/inspect/sessions/{id}` timelines, against a server with a live call on it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from adapters.config import Settings
from adapters.server.app import create_app
from adapters.server.inspect import Inspector, inspect_routes
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, ListSink, NullSink, Record
from engine.runtime.trace import from_record
from engine.tools.simulator import Scenario, run_scenario
from tests.support.live_clients import EventStream, Served, WebSocketCaller, serve_app
from tests.support.voice_fakes import fake_voice_factory, silence, tone
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "adapters" / "server" / "static"


@pytest.fixture
def live() -> Iterator[tuple[Served, Starlette, ListSink]]:
    sink = ListSink()  # what stdout would get
    app = create_app(Settings(), voice_factory=fake_voice_factory(["stop"]), log_sink=sink)
    with serve_app(app) as served:
        yield served, app, sink


def is_record(session: str, event_type: str, **data: Any) -> Any:
    def match(event: str, record: Any) -> bool:
        return (event == "record" and record["session_id"] == session
                and record["event_type"] == event_type
                and all(record["data"].get(k) == v for k, v in data.items()))
    return match


def snapshot(base_url: str) -> dict[str, Any]:
    stream = EventStream(base_url + "/inspect/events")
    try:
        event, data = stream.next()
    finally:
        stream.close()
    assert event == "snapshot"
    return dict(data)


def test_inspect_events_snapshot_then_live_lines_and_the_timeline(
        live: tuple[Served, Starlette, ListSink]) -> None:
    served, _, sink = live
    stream = EventStream(served.base_url + "/inspect/events")
    caller: WebSocketCaller | None = None
    seen: list[Record] = []

    def watch(session: str, event_type: str, **data: Any) -> Record:
        match = is_record(session, event_type, **data)

        def keep(event: str, record: Any) -> bool:
            if event == "record":
                seen.append(record)
            return bool(match(event, record))
        return dict(stream.until(keep)[1])

    try:
        event, first = stream.next()
        assert event == "snapshot"
        assert first["sessions"] == [] and first["mode"] == "memory"
        assert [(c["name"], c["svg"]) for c in first["charts"]] == [
            ("voice_turn", "/charts/voice_turn.svg")]

        caller = WebSocketCaller(served.base_url, "insp-a")
        watch("insp-a", "state_transition", to="LISTENING")
        now = snapshot(served.base_url)["sessions"]
        assert now == [{
            "session_id": "insp-a", "live": True, "chart": "voice_turn", "version": 1,
            "version_hash": now[0]["version_hash"], "state": "LISTENING",
            "configuration": ["CONNECTED", "LISTENING"],
            "contract": {"microphone": "open", "playback": "stopped"},
            "since": now[0]["since"], "since_t_ms": now[0]["since_t_ms"], "closed_t_ms": None}]

        caller.say_text("tell me a story")
        watch("insp-a", "state_transition", to="SPEAKING")
        assert snapshot(served.base_url)["sessions"][0]["contract"]["playback"] == "streaming"
        caller.say_audio(tone(400))  # the user talks over the answer
        watch("insp-a", "state_transition", **{"from": "SPEAKING", "to": "INTERRUPT"})
        watch("insp-a", "state_transition", **{"from": "INTERRUPT", "to": "LISTENING"})
        caller.say_audio(silence(300))
        caller.close()
        watch("insp-a", "session_closed")
    finally:
        if caller is not None:
            caller.close()
        stream.close()

    # The stream carries DEBUG lines (effects) to the inspector but never answer audio;
    # stdout keeps its level.
    kinds = {r["event_type"] for r in seen}
    assert "effect_done" in kinds and "audio_out" not in kinds
    assert {r["level"] for r in sink.records} <= {"INFO", "WARNING", "ERROR"}
    assert [r for r in sink.records if r["level"] == "ERROR"] == []

    after = snapshot(served.base_url)["sessions"]
    assert [(s["session_id"], s["live"]) for s in after] == [("insp-a", False)]

    timeline = httpx.get(served.base_url + "/inspect/sessions/insp-a", timeout=10).json()
    moves = [f"{t['from']}→{t['to']} ({t['event']})" for t in timeline["transitions"]]
    assert moves[:5] == ["IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
                         "THINKING→SPEAKING (response_ready)", "SPEAKING→INTERRUPT (barge_in)",
                         "INTERRUPT→LISTENING (ready_after_interrupt)"]
    assert moves[-1].endswith("→IDLE (client_disconnected)")
    assert (timeline["closed"], timeline["live"], timeline["state"]) == (True, False, "IDLE")
    assert all(t["latency_ms"] is not None and t["dwell_ms"] >= 0 for t in timeline["transitions"])
    activities = [(b["name"], b["outcome"]) for b in timeline["bars"] if b["kind"] == "activity"]
    assert activities[:2] == [("respond", "done"), ("speak", "cancelled")]
    assert {b["name"] for b in timeline["bars"] if b["kind"] == "effect"} >= {
        "cancel_tts", "cancel_filler", "cancel_previous_filler"}
    [barge_in] = timeline["barge_ins"][:1]
    assert (barge_in["state"], barge_in["outcome"]) == ("SPEAKING", "applied")
    assert barge_in["time_to_silence_ms"] is not None
    assert barge_in["playback_cleared_ms"] is not None


def test_inspect_unknown_session_is_a_404_that_says_what_is_known() -> None:
    client = TestClient(create_app(Settings()))
    response = client.get("/inspect/sessions/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": "no session 'nope' in the inspector (it keeps live sessions and the last 50 "
                 "closed ones)", "sessions": []}


def test_inspect_page_and_assets_load_nothing_from_elsewhere() -> None:
    client = TestClient(create_app(Settings()))
    page = client.get("/inspect")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/inspect/inspect.js">' in page.text
    assert '<link rel="stylesheet" href="/inspect/inspect.css">' in page.text
    for name, media in (("inspect.js", "text/javascript"), ("inspect.css", "text/css")):
        asset = client.get(f"/inspect/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
        assert asset.text == (STATIC / name).read_text(encoding="utf-8")
    texts = {"html": page.text, "css": client.get("/inspect/inspect.css").text,
             "js": client.get("/inspect/inspect.js").text}
    for kind, text in texts.items():
        # The only absolute URL is the SVG namespace, an identifier that is never fetched.
        urls = set(re.findall(r"[a-z]+://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), f"{kind} names {urls}"
        assert "@import" not in text and "//cdn" not in text


def test_inspect_chart_svg_names_each_state_for_the_page() -> None:
    svg = TestClient(create_app(Settings())).get("/charts/voice_turn.svg").text
    for state in ("IDLE", "LISTENING", "THINKING", "SPEAKING", "INTERRUPT"):
        assert re.search(rf'<g id="state&#45;{state}" class="node state">', svg), state
    assert '<g id="state&#45;CONNECTED" class="cluster state compound">' in svg


@pytest.fixture
def small() -> Iterator[tuple[Served, Inspector]]:
    """Only the inspector's routes, with a fast heartbeat and a tiny subscriber queue."""
    clock = RealClock()
    inspector = Inspector(lambda name: None, clock.now_ms, queue_size=4)
    app = Starlette(routes=inspect_routes(inspector, list, heartbeat_s=0.05))
    with serve_app(app) as served:
        yield served, inspector


def test_inspect_events_send_heartbeats_while_nothing_happens(
        small: tuple[Served, Inspector]) -> None:
    served, _ = small
    stream = EventStream(served.base_url + "/inspect/events")
    try:
        assert stream.next()[0] == "snapshot"
        assert stream.next() == ("comment", "keep-alive")
    finally:
        stream.close()


def test_inspect_a_subscriber_that_falls_behind_is_resynced(
        small: tuple[Served, Inspector]) -> None:
    served, inspector = small
    log = EventLog(NullSink(), RealClock())
    log.subscribe(inspector)

    def burst() -> None:  # 50 lines in one go, far more than the queue of 4 holds
        log.emit("INFO", "s-burst", "session_started", "started",
                 {"chart": "c", "version": 1, "version_hash": "h", "state": "S0"})
        for i in range(1, 50):
            log.emit("INFO", "s-burst", "state_transition", "moved",
                     {"from": f"S{i - 1}", "to": f"S{i}", "event": "go", "latency_ms": 0.1})

    stream = EventStream(served.base_url + "/inspect/events")
    try:
        assert stream.until(lambda e, _: e != "comment")[0] == "snapshot"
        served.call_soon(burst)
        event, data = stream.until(lambda e, _: e != "comment")
        assert event == "resync" and "dropped" in data["reason"]
        event, data = stream.until(lambda e, _: e != "comment")
        assert event == "snapshot"
        assert [(s["session_id"], s["state"]) for s in data["sessions"]] == [("s-burst", "S49")]
        # Afterwards lines flow again, one by one.
        served.call_soon(lambda: log.emit("INFO", "s-burst", "session_closed", "closed",
                                          {"chart": "c", "version": 1, "state": "S49"}))
        event, data = stream.until(lambda e, _: e != "comment")
        assert (event, data["event_type"]) == ("record", "session_closed")
    finally:
        stream.close()
    assert wait_for(lambda: inspector.subscribers == set())  # the closed stream unsubscribed


def test_inspect_streams_end_when_the_server_stops(small: tuple[Served, Inspector]) -> None:
    served, inspector = small
    stream = EventStream(served.base_url + "/inspect/events")
    try:
        assert stream.next()[0] == "snapshot"
        served.call_soon(inspector.close_streams)  # what `turnchart serve` does on a stop
        assert stream.until(lambda e, _: e != "comment") == ("closed", "end of stream")
    finally:
        stream.close()


async def simulated(sessions: list[str], steps: list[dict[str, Any]],
                    until_ms: float) -> list[Record]:
    from engine.chart.chart import load_chart
    from engine.runtime.behaviours import default_registry
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    scenario = Scenario(chart="charts/voice_turn.yaml", sessions=sessions, steps=steps,
                        until_ms=until_ms)
    return await run_scenario(scenario, chart, registry)


async def test_inspect_keeps_closed_sessions_a_while_and_bounds_lines() -> None:
    trace = await simulated(["a", "b", "c"], [
        {"at": 0, "event": "client_connected", "session": s} for s in ("a", "b", "c")],
        until_ms=100)
    inspector = Inspector(lambda name: None, lambda: 0.0, keep_closed=2, keep_lines=5)
    for record in trace:
        inspector(from_record(record))
    # The three closed at the end of the run; the two closed last are kept.
    assert sorted(inspector.views) == ["b", "c"]
    assert inspector.timeline("a") is None
    kept = inspector.timeline("c")
    assert kept is not None and kept["closed"] and not kept["live"]
    assert kept["lines"] == 5
    assert kept["dropped_lines"] == sum(1 for r in trace if r["session_id"] == "c") - 5
    # An event for a closed session much later does not make it young again...
    inspector(from_record({**trace[-1], "session_id": "c", "event_type": "session_unknown",
                           "level": "WARNING", "t_ms": 500_000.0,
                           "data": {"event": "stt_final", "active_sessions": [],
                                    "active_count": 0}}))
    # ...so ten minutes after they closed, when another session closes, they go.
    inspector(from_record({**trace[-1], "session_id": "d", "t_ms": 100.0 + 600_001.0}))
    assert sorted(inspector.views) == ["d"]


def test_inspect_on_a_redis_front_end_shows_what_the_front_end_saw() -> None:
    """Sessions run on workers there; the front-end's own lines still show, without states."""
    app = create_app(Settings(bus="redis://127.0.0.1:9/0"))
    inspector: Inspector = app.state.inspector
    log = EventLog(NullSink(), RealClock())
    log.subscribe(inspector)
    log.emit("DEBUG", "rtc-1", "connection_mapped", "mapped",
             {"connection_id": "rtc-1", "rule": "direct_match"})
    log.emit("INFO", "rtc-1", "barge_in_detected", "✋ barge-in",
             {"dropped_frames": 3, "time_to_silence_ms": 0.4})
    snap = inspector.snapshot()
    assert snap["mode"] == "redis"
    [view] = snap["sessions"]
    assert (view["session_id"], view["live"], view["state"], view["closed_t_ms"]) == (
        "rtc-1", False, None, None)
    timeline = inspector.timeline("rtc-1")
    assert timeline is not None and timeline["transitions"] == []
    assert [(b["outcome"], b["time_to_silence_ms"]) for b in timeline["barge_ins"]] == [
        ("pending", 0.4)]


def test_every_page_gets_an_icon_not_a_404() -> None:
    """issue 13 §3.10: `/favicon.ico` was a 404, a console error on every page load."""
    import xml.etree.ElementTree as ET

    response = TestClient(create_app(Settings())).get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert ET.fromstring(response.text).tag == "{http://www.w3.org/2000/svg}svg"


def test_latency_of_an_ended_call_is_kept_as_long_as_the_inspector_keeps_it() -> None:
    """issue 13 §3.9: `/latency/{id}` was a 404 the moment a call ended, while
    `/inspect/sessions/{id}` still had it. Same policy as the inspector: the last
    `keep_closed` ended calls, for `keep_closed_ms`."""
    sink = ListSink()
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    inspector: Inspector = app.state.inspector
    with TestClient(app) as client:
        ended = []
        for call in ("lat-1", "lat-2"):
            with client.websocket_connect("/websocket/offer") as ws:
                ws.send_json({"event": "start", "websocket_id": call})
                ws.send_json({"event": "transcript", "text": "hello", "final": True})
                assert wait_for(lambda c=call: any(
                    r["data"]["to"] == "SPEAKING" for r in sink.of_type("state_transition", c)),
                    10)
                live = client.get(f"/latency/{call}").json()
                assert live["ended"] is False
                assert live["transitions"]["IDLE→LISTENING"]["count"] == 1
                ws.send_json({"event": "stop"})
            assert wait_for(lambda c=call: sink.of_type("session_closed", c), 10)
            ended.append(client.get(f"/latency/{call}"))
            assert ended[-1].status_code == 200, ended[-1].text
            body = ended[-1].json()
            assert body["ended"] is True and body["session_id"] == call
            # what the session itself had measured, transition by transition
            assert body["transitions"].keys() >= {"IDLE→LISTENING", "LISTENING→THINKING",
                                                  "THINKING→SPEAKING"}
            assert body["transitions"]["IDLE→LISTENING"]["count"] == 1
            assert body["transitions"]["IDLE→LISTENING"]["latency_ms"] == \
                live["transitions"]["IDLE→LISTENING"]["latency_ms"]
        assert client.get("/inspect/sessions/lat-1").status_code == 200
        # past the inspector's bound the call is forgotten by both
        inspector.keep_closed = 1
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": "lat-3"})
            ws.send_json({"event": "stop"})
        assert wait_for(lambda: sink.of_type("session_closed", "lat-3"), 10)
        assert client.get("/latency/lat-1").status_code == 404
        assert client.get("/inspect/sessions/lat-1").status_code == 404
        assert client.get("/latency/lat-3").json()["ended"] is True
