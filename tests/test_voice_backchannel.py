"""Backchannels over the answer (`voice.backchannels`): "uh-huh" said while the assistant
talks pauses the answer and resumes it; other words, or speech longer than a
backchannel, are a barge-in as before. Over FastRTC's WebSocket transport with the
deterministic fakes (tests/support/voice_fakes.py): what the STT hears is scripted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from adapters.config import DEFAULT_BACKCHANNELS, Settings, VoiceSettings
from adapters.fastrtc.backchannel import is_backchannel, phrases
from adapters.server.app import create_app
from engine.runtime.logs import ListSink
from tests.support.live_clients import serve_app
from tests.support.phone_client import PhoneCaller
from tests.support.voice_fakes import fake_voice_factory, silence, tone
from tests.support.waiting import wait_for
from tests.test_voice_phone import RATE as PHONE_RATE
from tests.test_voice_phone import moves, tone8k, wall
from tests.test_voice_ws import answering, send_audio, transitions


def said(sink: ListSink, session: str, event: str) -> list[dict[str, Any]]:
    return [r["data"]["payload"] for r in sink.of_type("event_received", session)
            if r["data"]["event"] == event]


def client_for(sink: ListSink, script: list[str], **voice: Any) -> TestClient:
    # 60 ms a word: the story plays for a couple of seconds, long enough to talk over
    factory = fake_voice_factory(script, ms_per_word=60.0)
    return TestClient(create_app(Settings(voice=VoiceSettings(**voice)),
                                 voice_factory=factory, log_sink=sink))


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def test_uh_huh_over_the_answer_resumes_it(sink: ListSink) -> None:
    with client_for(sink, ["tell me a story", "uh-huh"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "bc-uh")
        send_audio(ws, np.concatenate([tone(300), silence(400)]), realtime=True)
        assert wait_for(lambda: "SPEAKING → LISTENING (playback_done)"
                        in transitions(sink, "bc-uh"), 10)
        ws.send_json({"event": "stop"})
    moves = transitions(sink, "bc-uh")
    assert "SPEAKING → INTERRUPT (barge_in)" not in moves
    assert moves[:4] == [
        "IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)",
        "THINKING → SPEAKING (response_ready)", "SPEAKING → LISTENING (playback_done)"]
    assert [r["data"]["words"] for r in sink.of_type("backchannel", "bc-uh")] == ["uh-huh"]
    assert [p["text"] for p in said(sink, "bc-uh", "stt_final")] == ["tell me a story"]
    assert said(sink, "bc-uh", "barge_in") == []
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


def test_stop_over_the_answer_is_a_barge_in_and_the_next_turn(sink: ListSink) -> None:
    with client_for(sink, ["tell me a story", "stop"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "bc-stop")
        send_audio(ws, np.concatenate([tone(300), silence(400)]), realtime=True)
        assert wait_for(lambda: len(said(sink, "bc-stop", "stt_final")) == 2, 10)
        ws.send_json({"event": "stop"})
    moves = transitions(sink, "bc-stop")
    assert moves[3:5] == ["SPEAKING → INTERRUPT (barge_in)",
                          "INTERRUPT → LISTENING (ready_after_interrupt)"]
    assert [p["text"] for p in said(sink, "bc-stop", "stt_final")] == [
        "tell me a story", "stop"]   # talk-over keeps the word
    assert sink.of_type("backchannel", "bc-stop") == []


def test_a_long_interruption_barges_in_before_it_ends(sink: ListSink) -> None:
    """Speech longer than `backchannel_max_ms` is a barge-in whatever the words (here
    the script would even hear a backchannel): decided while the caller still talks."""
    with client_for(sink, ["tell me a story", "okay"], backchannel_max_ms=500) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "bc-long")
        send_audio(ws, tone(800), realtime=True)   # still talking: no silence yet
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "bc-long"), 5)
        assert [p["reason"] for p in said(sink, "bc-long", "barge_in")] == [
            "speech onset (longer than a backchannel)"]
        send_audio(ws, np.concatenate([tone(400), silence(400)]), realtime=True)
        ws.send_json({"event": "stop"})
    assert sink.of_type("backchannel", "bc-long") == []


def test_without_backchannels_every_word_over_the_answer_barges_in(sink: ListSink) -> None:
    with client_for(sink, ["tell me a story", "uh-huh"], backchannels=[]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "bc-off")
        send_audio(ws, tone(300), realtime=True)   # no silence: decided at the onset
        assert wait_for(lambda: "SPEAKING → INTERRUPT (barge_in)"
                        in transitions(sink, "bc-off"), 5)
        assert [p["reason"] for p in said(sink, "bc-off", "barge_in")] == ["speech onset"]
        ws.send_json({"event": "stop"})
    assert sink.of_type("backchannel", "bc-off") == []


def test_hanging_up_while_the_answer_is_paused_closes_the_call(sink: ListSink) -> None:
    with client_for(sink, ["tell me a story", "uh-huh"]) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        answering(ws, sink, "bc-hang")
        send_audio(ws, tone(300), realtime=True)   # paused, the speech not over yet
        ws.send_json({"event": "stop"})
    assert wait_for(lambda: sink.of_type("session_closed", "bc-hang"), 5)
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


def test_uh_huh_on_the_phone_resumes_the_answer(sink: ListSink) -> None:
    """The phone drops what it buffered when the answer pauses (`clear`); the frames it
    had not played are sent again when the answer resumes, and the answer finishes."""
    app = create_app(Settings(), voice_factory=fake_voice_factory(
        ["tell me a story", "uh-huh"], ms_per_word=60.0), log_sink=sink)
    with serve_app(app) as served:
        phone = PhoneCaller(served.base_url, "MZphone-bc")
        phone.start()
        try:
            assert wait_for(lambda: moves(sink.records, "MZphone-bc"), 30)
            phone.say(np.concatenate([tone8k(500), np.zeros(int(PHONE_RATE * 0.4), np.int16)]))
            assert wait_for(lambda: any(m == "THINKING→SPEAKING (response_ready)"
                                        for m, _ in moves(sink.records, "MZphone-bc")), 30)
            phone.say(np.concatenate([tone8k(300), np.zeros(int(PHONE_RATE * 0.4), np.int16)]))
            assert wait_for(lambda: any(m == "SPEAKING→LISTENING (playback_done)"
                                        for m, _ in moves(sink.records, "MZphone-bc")), 30)
        finally:
            phone.hang_up()
        assert wait_for(lambda: sink.of_type("session_closed", "MZphone-bc"), 10)
    names = [m for m, _ in moves(sink.records, "MZphone-bc")]
    assert "SPEAKING→INTERRUPT (barge_in)" not in names
    resumed = wall(sink.of_type("backchannel", "MZphone-bc")[0])
    assert phone.loud_media(since=resumed) >= 10, "the answer did not go on after uh-huh"
    assert [r for r in sink.records if r["level"] == "ERROR"] == []


@pytest.mark.parametrize("text", ["Uh-huh.", "uh huh", "Mm-hmm", "mhm", "Yeah, yeah. Okay.",
                                  "I see.", "Got it!", "OK", "Right.", "Mm hm", "M-H-M-M",
                                  "you"])
def test_backchannel_words(text: str) -> None:
    assert is_backchannel(text, phrases(DEFAULT_BACKCHANNELS))


@pytest.mark.parametrize("text", ["", "Stop.", "wait", "hold on", "yeah but why",
                                  "what time is it", "okay stop",
                                  "thank you", "you stop"])
def test_words_that_interrupt(text: str) -> None:
    assert not is_backchannel(text, phrases(DEFAULT_BACKCHANNELS))
