"""The live voice path over FastRTC's WebSocket transport, with deterministic
speech stand-ins (tests/support/voice_fakes.py): routing by contract, barge-in,
isolation between callers, the unified transcript path and bad input."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from adapters.config import Settings, VoiceSettings
from adapters.server.app import create_app
from engine.runtime.logs import ListSink
from tests.support.voice_fakes import (
    EnergyDetector,
    fake_voice_factory,
    mulaw_encode,
    silence,
    tone,
)
from tests.support.waiting import wait_for

FRAME = 320  # 20 ms at 16 kHz


def media(pcm: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {"event": "media", "media": {"payload": base64.b64encode(mulaw_encode(pcm)).decode()}}


def send_audio(ws: Any, pcm: np.ndarray[Any, Any], realtime: bool = False) -> None:
    for i in range(0, len(pcm), FRAME):
        ws.send_json(media(pcm[i:i + FRAME]))
        if realtime:
            time.sleep(0.02)


def transitions(sink: ListSink, session: str) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
            for r in sink.of_type("state_transition", session)]


def answering(ws: Any, sink: ListSink, session_id: str) -> None:
    """Open the call as `session_id` and ask a first question; returns once the answer
    plays (SPEAKING), ready for whatever is said over it."""
    ws.send_json({"event": "start", "websocket_id": session_id})
    assert wait_for(lambda: transitions(sink, session_id))
    send_audio(ws, np.concatenate([tone(500), silence(400)]))
    assert wait_for(lambda: "THINKING → SPEAKING (response_ready)"
                    in transitions(sink, session_id), 10)




@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def make_client(sink: ListSink, script: list[str], **voice: Any) -> TestClient:
    settings = Settings(voice=VoiceSettings(**voice))
    return TestClient(create_app(settings, voice_factory=fake_voice_factory(script, **{}),
                                 log_sink=sink))


@pytest.fixture
def client(sink: ListSink) -> Iterator[TestClient]:
    with make_client(sink, ["hello"]) as c:
        yield c


def test_a_turn_over_the_websocket(client: TestClient, sink: ListSink) -> None:
    with client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-turn"})
        assert wait_for(lambda: transitions(sink, "ws-turn"))
        send_audio(ws, np.concatenate([silence(100), tone(500), silence(400)]))
        frames = 0
        while frames < 20:
            if ws.receive_json().get("event") == "media":
                frames += 1
        assert wait_for(lambda: len(transitions(sink, "ws-turn")) >= 4, 10)
        ws.send_json({"event": "stop"})
    assert wait_for(lambda: sink.of_type("session_closed", "ws-turn"))
    assert transitions(sink, "ws-turn") == [
        "IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)",
        "THINKING → SPEAKING (response_ready)", "SPEAKING → LISTENING (playback_done)",
        "LISTENING → IDLE (client_disconnected)"]
    assert [r for r in sink.records if r["level"] == "ERROR"] == []
    said = [r["data"]["payload"]["text"] for r in sink.of_type("event_received", "ws-turn")
            if r["data"]["event"] == "stt_final"]
    assert said == ["hello"]


def test_barge_in_silences_the_answer(sink: ListSink) -> None:
    arrivals: list[float] = []
    stop_reading = threading.Event()

    def reader(ws: Any) -> None:  # timestamps every answer frame as it arrives
        while not stop_reading.is_set():
            try:
                message = ws.receive_json()
            except Exception:
                return
            if message.get("event") == "media":
                arrivals.append(time.time())

    with make_client(sink, ["tell me a story", "stop"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-barge"})
        assert wait_for(lambda: transitions(sink, "ws-barge"))
        thread = threading.Thread(target=reader, args=(ws,), daemon=True)
        thread.start()
        send_audio(ws, np.concatenate([tone(500), silence(400)]))
        assert wait_for(lambda: "THINKING → SPEAKING (response_ready)"
                        in transitions(sink, "ws-barge"), 10)
        time.sleep(0.6)  # hear a little of the answer
        heard_before = len(arrivals)
        send_audio(ws, tone(400), realtime=True)  # the user talks over it
        assert wait_for(lambda: sink.of_type("playback_cleared", "ws-barge"), 5)
        time.sleep(1.0)
        stop_reading.set()
        ws.send_json({"event": "stop"})
        thread.join(2)
    moves = transitions(sink, "ws-barge")
    assert "SPEAKING → INTERRUPT (barge_in)" in moves
    assert "INTERRUPT → LISTENING (ready_after_interrupt)" in moves
    assert heard_before > 10, "the answer was playing before the barge-in"
    detected = sink.of_type("barge_in_detected", "ws-barge")[0]
    decided = datetime.fromisoformat(detected["ts"].replace("Z", "+00:00")).timestamp()
    late = [t for t in arrivals if t > decided + 0.005]
    # After the decision, at most what was already handed over: our pacing keeps
    # lead_ms (60 ms = 3 frames) ahead and FastRTC's WebSocket sender holds one more.
    assert len(late) <= 4, f"{len(late)} answer frames arrived after the barge-in decision"
    assert detected["data"]["time_to_silence_ms"] < 50


def test_two_callers_only_hear_their_own_session(client: TestClient, sink: ListSink) -> None:
    with client.websocket_connect("/websocket/offer") as a, \
            client.websocket_connect("/websocket/offer") as b:
        a.send_json({"event": "start", "websocket_id": "caller-a"})
        b.send_json({"event": "start", "websocket_id": "caller-b"})
        assert wait_for(lambda: transitions(sink, "caller-a") and transitions(sink, "caller-b"))
        send_audio(a, np.concatenate([tone(500), silence(400)]))  # only A speaks
        frames = 0
        while frames < 10:
            if a.receive_json().get("event") == "media":
                frames += 1
        b.send_json({"event": "ping"})
        assert b.receive_json() == {"event": "pong"}  # B got no audio before its pong
        a.send_json({"event": "stop"})
        b.send_json({"event": "stop"})
    assert "LISTENING → THINKING (stt_final)" in transitions(sink, "caller-a")
    assert transitions(sink, "caller-b") == ["IDLE → LISTENING (client_connected)",
                                             "LISTENING → IDLE (client_disconnected)"]


def test_transcript_messages_take_the_same_path(client: TestClient, sink: ListSink) -> None:
    with client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-text"})
        assert wait_for(lambda: transitions(sink, "ws-text"))
        ws.send_json({"event": "transcript", "text": "   ", "final": True})  # empty: no turn
        ws.send_json({"event": "transcript", "text": "what time is it", "final": True})
        assert wait_for(lambda: "LISTENING → THINKING (stt_final)" in transitions(sink, "ws-text"))
        ws.send_json({"event": "stop"})
    received = [r for r in sink.of_type("event_received", "ws-text")
                if r["data"]["event"] == "stt_final"]
    assert [r["data"]["source"] for r in received] == ["websocket"]


def test_bad_websocket_messages_get_an_error_and_the_call_goes_on(client: TestClient,
                                                                  sink: ListSink) -> None:
    with client.websocket_connect("/websocket/offer") as ws:
        ws.send_text("{not json")
        assert ws.receive_json()["event"] == "error"
        ws.send_json(["a", "list"])
        assert "JSON object" in ws.receive_json()["error"]
        ws.send_json({"event": "dance"})
        assert "unknown event" in ws.receive_json()["error"]
        ws.send_json({"event": "media", "media": {"payload": "***"}})
        assert "base64" in ws.receive_json()["error"]
        ws.send_json({"event": "transcript", "text": "hello"})
        assert "no session" in ws.receive_json()["error"]
        ws.send_json({"event": "start", "websocket_id": "ws-bad"})
        assert wait_for(lambda: transitions(sink, "ws-bad"))
        ws.send_json({"event": "ping"})
        assert ws.receive_json() == {"event": "pong"}
        ws.send_json({"event": "stop"})
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{nope", 400, "not JSON"),
    (b'{"type": "offer", "webrtc_id": "x"}', 400, "sdp is required"),
    (b'{"type": "offer", "sdp": "v=0", "webrtc_id": "bad id!"}', 400, "webrtc_id"),
    (b'{"type": "offer", "sdp": "garbage", "webrtc_id": "x1"}', 400, "SDP could not be used"),
    (b'{"type": "bogus", "sdp": "v=0", "webrtc_id": "x2"}', 400, "type must be"),
    (b'{"type": "ice-candidate", "candidate": {"candidate": "c"}, "webrtc_id": "nope"}', 404,
     "unknown_connection"),
    (b'{"type": "offer", "sdp": "v=0", "webrtc_id": "x3", "extra": 1}', 400, "extra"),
])
def test_bad_offers_get_4xx_json(client: TestClient, body: bytes, status: int,
                                 fragment: str) -> None:
    response = client.post("/webrtc/offer", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"] or fragment in response.text


def test_huge_offer_is_refused(client: TestClient) -> None:
    response = client.post("/webrtc/offer", content=b"x" * 100_000)
    assert response.status_code == 413


def test_session_routes(client: TestClient, sink: ListSink) -> None:
    assert client.get("/latency/nobody").status_code == 404
    assert client.get("/latency/nobody").json()["error"] == "no session 'nobody'"
    with client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-routes"})
        assert wait_for(lambda: transitions(sink, "ws-routes"))
        listed = client.get("/sessions").json()["sessions"]
        assert [s["session_id"] for s in listed] == ["ws-routes"]
        assert listed[0]["state"] == "LISTENING"
        assert listed[0]["contract"] == {"microphone": "open", "playback": "stopped"}
        stats = client.get("/latency/ws-routes").json()["transitions"]
        assert stats["IDLE→LISTENING"]["count"] == 1
        metrics = client.get("/metrics").text
        assert "turnchart_active_sessions 1.0" in metrics
        assert 'turnchart_transitions_total{source="IDLE",target="LISTENING"}' in metrics
        ws.send_json({"event": "stop"})


def test_the_page_is_served(client: TestClient) -> None:
    page = client.get("/fastrtc")
    assert page.status_code == 200
    assert "Record" in page.text and "/webrtc/offer" in page.text


def test_without_voice_the_transports_say_so(sink: ListSink) -> None:
    app = create_app(Settings(voice=VoiceSettings(enabled=False)), log_sink=sink)
    with TestClient(app) as client:
        assert client.post("/webrtc/offer", json={"type": "offer", "sdp": "v=0",
                                                  "webrtc_id": "a"}).status_code == 503
        with pytest.raises(WebSocketDisconnect), \
                client.websocket_connect("/websocket/offer") as ws:
            ws.receive_json()


def test_false_interruptions_resume_the_answer_when_enabled(sink: ListSink) -> None:
    with make_client(sink, ["tell me a story"], false_interruption_ms=300) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-cough")
        send_audio(ws, np.concatenate([tone(260), silence(600)]), realtime=True)  # a cough
        assert wait_for(lambda: sink.of_type("false_interruption", "ws-cough"), 5)
        assert "SPEAKING → INTERRUPT (barge_in)" not in transitions(sink, "ws-cough")
        send_audio(ws, tone(900), realtime=True)  # real speech: goes on past the pause
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "ws-cough"), 5)
        ws.send_json({"event": "stop"})


def test_a_cough_in_the_hangover_is_not_a_barge_in_with_little_speech_needed(
        sink: ListSink) -> None:
    """False-interruption mode asks whether the caller is still voicing when the pause
    ends, not whether the detector is still in its hangover: with 120 ms of speech
    needed, a 260 ms cough confirms, and 400 ms later it has been silent 260 ms (inside
    the 320 ms hangover). It resumes the answer; speech still going on barges in, also
    when it comes back inside the hangover after a short gap."""
    settings = Settings(voice=VoiceSettings(false_interruption_ms=400))
    factory = fake_voice_factory(["tell me a story"], detector=lambda: EnergyDetector(
        min_speech_ms=120, hangover_ms=320))
    with TestClient(create_app(settings, voice_factory=factory, log_sink=sink)) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-hang")
        send_audio(ws, np.concatenate([tone(260), silence(700)]), realtime=True)  # a cough
        assert wait_for(lambda: sink.of_type("false_interruption", "ws-hang"), 5)
        assert "SPEAKING → INTERRUPT (barge_in)" not in transitions(sink, "ws-hang")
        # speech with a gap: silent when the pause ends, voicing again before the hangover
        send_audio(ws, np.concatenate([tone(250), silence(280), tone(700)]), realtime=True)
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "ws-hang"), 5)
        assert len(sink.of_type("false_interruption", "ws-hang")) == 1
        ws.send_json({"event": "stop"})


def test_less_speech_barges_in_over_the_answer_than_while_it_is_prepared(
        sink: ListSink) -> None:
    """The server's `speech.barge_in_speaking_ms` (the detector's `barge_in_speaking_ms`)
    is the speech needed over streaming answer audio when the chart leaves
    `barge_in.speaking_ms` unset (the shipped chart does): 160 ms of speech is a barge-in
    with it at 120 ms although `min_speech_ms` is 200."""
    factory = fake_voice_factory(["tell me a story"], detector=lambda: EnergyDetector(
        min_speech_ms=200, barge_in_speaking_ms=120))
    with TestClient(create_app(Settings(), voice_factory=factory, log_sink=sink)) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-short")
        send_audio(ws, np.concatenate([tone(160), silence(400)]), realtime=True)
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "ws-short"), 5)
        ws.send_json({"event": "stop"})


def test_false_interruption_handling_is_off_by_default(sink: ListSink) -> None:
    with make_client(sink, ["tell me a story"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-cough2")
        send_audio(ws, np.concatenate([tone(260), silence(100)]), realtime=True)
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "ws-cough2"), 5)
        assert sink.of_type("false_interruption", "ws-cough2") == []
        ws.send_json({"event": "stop"})


def test_talk_over_keeps_the_words(sink: ListSink) -> None:
    """Speech over the answer is a barge-in AND the caller's next turn (issue 14): the
    held audio, pre-roll included, opens the utterance that is transcribed and answered."""
    with make_client(sink, ["tell me a story", "what time is it"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-over")
        time.sleep(0.3)
        send_audio(ws, np.concatenate([tone(600), silence(400)]), realtime=True)
        assert wait_for(lambda: transitions(sink, "ws-over").count(
            "THINKING → SPEAKING (response_ready)") == 2, 10)
        ws.send_json({"event": "stop"})
    moves = transitions(sink, "ws-over")
    assert moves[:7] == [
        "IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)",
        "THINKING → SPEAKING (response_ready)", "SPEAKING → INTERRUPT (barge_in)",
        "INTERRUPT → LISTENING (ready_after_interrupt)", "LISTENING → THINKING (stt_final)",
        "THINKING → SPEAKING (response_ready)"]
    said = [r["data"]["payload"]["text"] for r in sink.of_type("event_received", "ws-over")
            if r["data"]["event"] == "stt_final"]
    assert said == ["tell me a story", "what time is it"]
    answers = [r["data"]["payload"]["text"] for r in sink.of_type("event_received", "ws-over")
               if r["data"]["event"] == "response_ready"]
    assert answers[1].startswith("It is"), answers
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


def test_speech_too_short_for_a_barge_in_is_not_a_turn(sink: ListSink) -> None:
    """A short noise over the answer is neither a barge-in nor a transcript."""
    with make_client(sink, ["tell me a story", "what time is it"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "ws-click")
        send_audio(ws, np.concatenate([tone(100), silence(400)]), realtime=True)
        assert wait_for(lambda: "SPEAKING → LISTENING (playback_done)"
                        in transitions(sink, "ws-click"), 10)
        ws.send_json({"event": "stop"})
    said = [r["data"]["payload"]["text"] for r in sink.of_type("event_received", "ws-click")
            if r["data"]["event"] == "stt_final"]
    assert said == ["tell me a story"]
