"""Talk-over with real speech and the default models (issue 14): a caller on the
WebSocket transport of `turnchart serve` says "tell me a story", then "what time is it"
over the answer. The story stops, and the words said over it are the next turn:
transcribed by Whisper and answered, with no ERROR line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.responder.text import normalise
from adapters.speech.samples import padded_speech
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("talk-over"))
    process.wait_ready()
    yield process
    process.stop()


def events(server: ServerProcess, session: str, name: str) -> list[str]:
    return [str(r["data"]["payload"]["text"]) for r in server.records()
            if r["session_id"] == session and r["event_type"] == "event_received"
            and r["data"]["event"] == name]


def test_words_said_over_the_answer_are_the_next_turn(server: ServerProcess) -> None:
    caller = WebSocketCaller(server.base_url, "ws-talk-over")
    try:
        assert wait_for(lambda: server.transitions("ws-talk-over"), 20)
        caller.say_audio(padded_speech("tell me a story", lead_ms=300, tail_ms=700))
        assert wait_for(lambda: "THINKING→SPEAKING (response_ready)"
                        in server.transitions("ws-talk-over"), 20)
        time.sleep(1.0)   # hear a little of the story
        frames_before = caller.audio_frames
        caller.say_audio(padded_speech("what time is it", lead_ms=100, tail_ms=900))
        assert wait_for(lambda: len(events(server, "ws-talk-over", "response_ready")) >= 2, 20)
        assert wait_for(lambda: "SPEAKING→LISTENING (playback_done)"
                        in server.transitions("ws-talk-over"), 20)
    finally:
        caller.close()
    moves = server.transitions("ws-talk-over")
    assert moves[:7] == [
        "IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)", "SPEAKING→INTERRUPT (barge_in)",
        "INTERRUPT→LISTENING (ready_after_interrupt)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)"], moves
    said = [normalise(t) for t in events(server, "ws-talk-over", "stt_final")]
    assert said == ["tell me a story", "what time is it"], said
    answers = events(server, "ws-talk-over", "response_ready")
    assert answers[1].startswith("It is"), answers
    assert frames_before > 10   # the story was playing when the caller talked over it
    assert [r for r in server.records() if r["level"] == "ERROR"] == []
    assert "Traceback" not in Path(server.log_path).read_text()
