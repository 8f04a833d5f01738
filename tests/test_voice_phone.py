"""The phone (issue 14): Twilio Media Streams on /telephone/incoming and
/telephone/handler, spoken to by a client written from Twilio's protocol
documentation (tests/support/phone_client.py) over loopback. With speech
stand-ins (fast, exact) and against a real `turnchart serve` with the offline
models."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from adapters.config import Settings, VoiceSettings
from adapters.fastrtc.telephone import twiml
from adapters.server.app import create_app
from adapters.speech.audio import resample
from engine.runtime.logs import ListSink
from tests.support.live_clients import serve_app
from tests.support.phone_client import PhoneCaller, mulaw_decode, mulaw_encode
from tests.support.voice_fakes import fake_voice_factory
from tests.support.waiting import wait_for, wait_until
from tests.support.webrtc_client import ServerProcess

RATE = 8_000


def tone8k(ms: float, amplitude: float = 6000.0) -> np.ndarray[Any, Any]:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    return (np.sin(2 * np.pi * 300 * t) * amplitude).astype(np.int16)


def wall(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def moves(records: list[dict[str, Any]], session: str) -> list[tuple[str, float]]:
    return [(f"{r['data']['from']}→{r['data']['to']} ({r['data']['event']})", wall(r))
            for r in records if r["event_type"] == "state_transition"
            and r["session_id"] == session]


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def test_mulaw_round_trip_is_g711() -> None:
    pcm = np.array([0, 1000, -1000, 32000, -32000, 8], dtype=np.int16)
    back = mulaw_decode(mulaw_encode(pcm))
    assert np.all(np.abs(back.astype(int) - pcm) <= np.maximum(16, np.abs(pcm) // 16))
    assert mulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"   # G.711 silence


def test_incoming_call_gets_twiml_that_connects_the_stream(sink: ListSink) -> None:
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client:
        answer = client.post("/telephone/incoming", data={"CallSid": "CA1", "From": "+1555"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/xml")
        assert '<Connect><Stream url="wss://testserver/telephone/handler" />' in answer.text
        local = client.post("/telephone/incoming", headers={"host": "127.0.0.1:5204"})
        assert 'url="ws://127.0.0.1:5204/telephone/handler"' in local.text
        bad = client.post("/telephone/incoming", headers={"host": "evil\"><x"})
        assert bad.status_code == 400 and "Host header" in bad.json()["error"]
    assert 'url="wss://[::1]:9/telephone/handler"' not in twiml("[::1]:9")
    assert 'url="ws://[::1]:9/telephone/handler"' in twiml("[::1]:9")


def test_a_phone_turn_comes_back_as_media_and_a_mark(sink: ListSink) -> None:
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with serve_app(app) as served:
        phone = PhoneCaller(served.base_url, "MZphone-turn")
        phone.start()
        try:
            # generous bounds: the first phone call of a process starts FastRTC's phone
            # handler, and CI runs this beside a thousand other tests on two cores
            assert wait_for(lambda: moves(sink.records, "MZphone-turn"), 30)
            phone.say(np.concatenate([tone8k(500), np.zeros(int(RATE * 0.4), np.int16)]))
            assert wait_for(lambda: any(m == "SPEAKING→LISTENING (playback_done)"
                                        for m, _ in moves(sink.records, "MZphone-turn")), 30)
            assert wait_for(lambda: sink.of_type("phone_mark", "MZphone-turn"), 5)
        finally:
            phone.hang_up()
        assert wait_for(lambda: sink.of_type("session_closed", "MZphone-turn"), 10)
    names = [m for m, _ in moves(sink.records, "MZphone-turn")]
    assert names == ["IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
                     "THINKING→SPEAKING (response_ready)", "SPEAKING→LISTENING (playback_done)",
                     "LISTENING→IDLE (client_disconnected)"]
    speaking = dict(moves(sink.records, "MZphone-turn"))["THINKING→SPEAKING (response_ready)"]
    loud = phone.loud_media()
    assert loud >= 10, f"only {loud} loud answer frames came back"
    # The contract gates output at 8 kHz too: no answer audio before the answer state.
    assert phone.loud_media(until=speaking - 0.01) == 0
    media = phone.events("media")
    mark = phone.events("mark")[0]
    assert mark.at >= media[-1].at and mark.name == "answer-1"
    assert phone.marks_echoed == ["answer-1"]
    logged = sink.of_type("phone_mark", "MZphone-turn")[0]["data"]
    assert logged["mark"] == "answer-1" and logged["known"] is True
    assert phone.events("clear") == []   # nothing was interrupted
    assert [r for r in sink.records if r["level"] in ("ERROR", "WARNING")] == []


def test_barge_in_on_the_phone_sends_clear(sink: ListSink) -> None:
    app = create_app(Settings(), voice_factory=fake_voice_factory(["tell me a story", "stop"]),
                     log_sink=sink)
    with serve_app(app) as served:
        phone = PhoneCaller(served.base_url, "MZphone-barge")
        phone.start()
        try:
            assert wait_for(lambda: moves(sink.records, "MZphone-barge"), 10)
            phone.say(np.concatenate([tone8k(500), np.zeros(int(RATE * 0.4), np.int16)]))
            assert wait_for(lambda: any(m == "THINKING→SPEAKING (response_ready)"
                                        for m, _ in moves(sink.records, "MZphone-barge")), 10)
            time.sleep(0.6)   # hear some of the answer
            heard_before = phone.loud_media()
            phone.say(tone8k(400))   # talk over it
            assert wait_for(lambda: phone.events("clear"), 5)
            time.sleep(0.6)
        finally:
            phone.hang_up()
    records = sink.records
    names = [m for m, _ in moves(records, "MZphone-barge")]
    assert "SPEAKING→INTERRUPT (barge_in)" in names
    assert heard_before >= 10
    clears = phone.events("clear")
    assert len(clears) == 1
    decided = wall(sink.of_type("barge_in_detected", "MZphone-barge")[0])
    assert clears[0].at - decided < 0.2, "clear came late after the barge-in decision"
    # Nothing of the interrupted answer after the clear (a later answer may start).
    later = [t for m, t in moves(records, "MZphone-barge")
             if m.endswith("(response_ready)") and t > clears[0].at]
    assert phone.loud_media(since=clears[0].at, until=min(later, default=float("inf"))) == 0
    assert sink.of_type("phone_clear", "MZphone-barge")
    assert [r for r in records if r["level"] == "ERROR"] == []


def test_bad_media_streams_messages_are_logged_and_skipped(sink: ListSink) -> None:
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client, client.websocket_connect("/telephone/handler") as ws:
        ws.send_text("not json")
        ws.send_json({"event": "media", "media": {"payload": "AAAA"}})   # before start
        ws.send_json({"event": "hello"})
        ws.send_json({"event": "start", "streamSid": "bad sid!"})
        ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        ws.send_json({"event": "start", "streamSid": "MZbad", "start": {"streamSid": "MZbad"}})
        assert wait_for(lambda: sink.of_type("state_transition", "MZbad"), 10)
        ws.send_json({"event": "media", "streamSid": "MZbad", "media": {"payload": "%%%"}})
        ws.send_json({"event": "media", "streamSid": "MZbad",
                      "media": {"track": "outbound", "payload": "AAAA"}})
        ws.send_json({"event": "mark", "streamSid": "MZbad", "mark": {}})
        ws.send_json({"event": "mark", "streamSid": "MZbad", "mark": {"name": "never-sent"}})
        ws.send_json({"event": "dtmf", "streamSid": "MZbad", "dtmf": {"digit": "5"}})
        ws.send_json({"event": "start", "streamSid": "MZbad2"})
        assert wait_for(lambda: sink.of_type("phone_dtmf", "MZbad"), 5)
        ws.send_json({"event": "stop", "streamSid": "MZbad"})
    problems = [r["data"]["problem"] for r in sink.records
                if r["event_type"] == "phone_bad_message"]
    assert [p.split(":")[0] for p in problems] == [
        "not JSON", "media before start", "unknown event 'hello'", "start needs streamSid",
        "media.payload is not valid base64", "media.track 'outbound'",
        "mark needs mark.name (a string)",
        "a second start on one stream"]
    assert sink.of_type("phone_mark", "MZbad")[0]["data"]["known"] is False
    assert wait_for(lambda: sink.of_type("session_closed", "MZbad"), 5)
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


def test_a_stream_in_another_format_is_refused(sink: ListSink) -> None:
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client, client.websocket_connect("/telephone/handler") as ws:
        ws.send_json({"event": "start", "streamSid": "MZpcm", "start": {
            "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}})
        message = ws.receive()
    assert message["type"] == "websocket.close" and message["code"] == 1003
    refused = [r for r in sink.records if r["event_type"] == "phone_bad_message"]
    assert "only audio/x-mulaw, 8000 Hz, 1 channel" in refused[0]["data"]["problem"]
    assert sink.of_type("state_transition", "MZpcm") == []


def test_calls_over_the_limit_are_refused(sink: ListSink) -> None:
    app = create_app(Settings(voice=VoiceSettings(concurrency_limit=1)),
                     voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client, client.websocket_connect("/telephone/handler") as first:
        first.send_json({"event": "start", "streamSid": "MZfirst"})
        assert wait_for(lambda: sink.of_type("state_transition", "MZfirst"), 10)
        with pytest.raises(WebSocketDisconnect) as refused_call, \
                client.websocket_connect("/telephone/handler") as second:
            second.receive()
        assert refused_call.value.code == 1013        # try again later
        first.send_json({"event": "stop", "streamSid": "MZfirst"})
    refused = [r for r in sink.records if r["event_type"] == "request_refused"]
    assert refused and refused[0]["data"]["limit"] == 1


# A real server with the offline models ------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("phone-server"))
    process.wait_ready()
    yield process
    process.stop()


def speech8k(text: str) -> np.ndarray[Any, Any]:
    from adapters.speech.tts import EspeakTTS
    rate, pcm = EspeakTTS(output_rate=24_000).synthesize_all(text)
    pad = np.random.default_rng(3).normal(0, 20, int(RATE * 0.3)).astype(np.int16)
    return np.concatenate([pad, resample(pcm, rate, RATE), pad]).astype(np.int16)


async def test_a_real_phone_call_answers_and_stops_on_barge_in(server: ServerProcess) -> None:
    twiml_text = httpx.post(f"{server.base_url}/telephone/incoming",
                            data={"CallSid": "CA1"}).text
    url = re.search(r'<Stream url="([^"]+)"', twiml_text)
    assert url is not None and url.group(1) == \
        f"{server.base_url.replace('http://', 'ws://')}/telephone/handler"
    session = "MZreal-phone"
    phone = PhoneCaller(server.base_url, session)
    phone.start()
    try:
        assert await wait_until(lambda: server.transitions(session), 10)
        await asyncio.sleep(0.5)
        phone.say(speech8k("tell me a story"))
        assert await wait_until(   # generous: Whisper on a busy 2-core machine takes seconds
            lambda: "THINKING→SPEAKING (response_ready)" in server.transitions(session), 45)
        await asyncio.sleep(1.2)
        heard = phone.loud_media()
        phone.say(speech8k("stop"))
        assert await wait_until(lambda: bool(phone.events("clear")), 20)
        await asyncio.sleep(1.0)
    finally:
        phone.hang_up()
    assert await wait_until(lambda: server.transitions(session)[-1].endswith(
        "→IDLE (client_disconnected)"), 10)   # the words over the answer may be answered
    records = server.records()
    assert heard >= 20, f"only {heard} loud answer frames came back over the phone"
    assert "SPEAKING→INTERRUPT (barge_in)" in server.transitions(session)
    finals = [r["data"]["payload"]["text"] for r in records if r["session_id"] == session
              and r["event_type"] == "event_received" and r["data"]["event"] == "stt_final"]
    assert finals   # what was heard depends on the STT backend at 8 kHz; that a turn ran does not
    clear = phone.events("clear")[0]
    later = [t for m, t in moves(records, session)
             if m.endswith("(response_ready)") and t > clear.at]
    assert phone.loud_media(since=clear.at, until=min(later, default=float("inf"))) == 0
    assert [r for r in records if r["session_id"] == session and r["level"] == "ERROR"] == []
    assert "Traceback" not in server.log_path.read_text()

