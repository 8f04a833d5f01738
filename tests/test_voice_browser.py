"""The /fastrtc page in a real browser: Debian's headless Chromium, its microphone a
WAV of the project's TTS saying "hello", calls `turnchart serve` over WebRTC on
loopback, and both the server log and the page show one whole turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.responder.text import normalise
from adapters.speech.audio import wav_bytes
from tests.support.browser import (
    browser_test_server,
    chromium,
    console_lines,
    fake_microphone_wav,
    save_screenshot,
    text_of,
)
from tests.support.waiting import wait_for
from tests.support.webrtc_client import RATE, ServerProcess, speech48k

TURN = ["IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)", "SPEAKING→LISTENING (playback_done)"]




@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with browser_test_server(tmp_path) as process:
        yield process


def test_the_fastrtc_page_holds_a_turn_in_chromium(server: ServerProcess,
                                                   tmp_path: Path) -> None:
    wav = fake_microphone_wav(tmp_path / "microphone.wav", "hello")
    with chromium(wav, tmp_path) as browser:

        def explain() -> str:  # what to look at when an assertion fails
            save_screenshot(browser, tmp_path / "fastrtc_page_failed.png")
            return (f"\npage: state={text_of(browser, 'state')!r} "
                    f"conn={text_of(browser, 'conn')!r} error={text_of(browser, 'error')!r}"
                    f"\ntransitions: {server.transitions(session)}"
                    "\nconsole:\n" + "\n".join(console_lines(browser)[-20:]) +
                    "\nserver log tail:\n" + server.log_path.read_text()[-3000:])

        session = ""
        browser.get(f"{server.base_url}/fastrtc")
        assert text_of(browser, "state") == "—"
        browser.find_element("id", "record").click()
        assert wait_for(lambda: text_of(browser, "session").startswith("session fastrtc_"), 5)
        session = text_of(browser, "session").removeprefix("session ")
        # as rendered, so that an id copied off the screen works in /sessions/{id}
        assert browser.find_element("id", "session").text == f"session {session}"

        assert wait_for(lambda: server.transitions(session)[:1] == TURN[:1], 15), explain()
        assert wait_for(lambda: text_of(browser, "conn") == "connection: connected", 10), \
            explain()
        assert wait_for(lambda: len(server.transitions(session)) >= 4, 30), explain()
        assert server.transitions(session)[:4] == TURN, explain()
        # The page follows the same session through its event stream.
        assert wait_for(lambda: text_of(browser, "answer") != "" and
                        text_of(browser, "state") == "LISTENING", 5), explain()
        assert normalise(text_of(browser, "transcript")) == "hello", explain()
        # in words (issue 13 §3.11): emoji are empty boxes where no emoji font is installed
        assert text_of(browser, "contract") == "microphone open · playback stopped", explain()
        assert text_of(browser, "error") == "", explain()
        assert "state_transition" in text_of(browser, "log"), explain()
        assert browser.find_element("id", "record").text == "Stop"
        shots = save_screenshot(browser, tmp_path / "fastrtc_page.png")
        assert all(p.stat().st_size > 10_000 for p in shots)

        browser.find_element("id", "record").click()  # hang up
        assert wait_for(lambda: "LISTENING→IDLE (client_disconnected)"
                        in server.transitions(session), 10), explain()
        assert text_of(browser, "record") == "Record"

    records = [r for r in server.records() if r["session_id"] == session]
    assert [r for r in server.records() if r["level"] == "ERROR"] == []
    # Exceptions that escape into FastRTC are printed raw, not as JSON ERROR records.
    assert "Traceback" not in server.log_path.read_text(), server.log_path.read_text()[-3000:]
    finals = [r["data"]["payload"]["text"] for r in records
              if r["event_type"] == "event_received" and r["data"]["event"] == "stt_final"]
    assert [normalise(f) for f in finals[:1]] == ["hello"], finals   # whisper: "Hello."


def test_the_pages_say_the_contract_in_words() -> None:
    """issue 13 §3.11: the microphone/playback state was shown only as 🎤/🔈, empty boxes
    where no emoji font is installed. The live call's log lines keep theirs."""
    static = Path(__file__).resolve().parent.parent / "adapters" / "server" / "static"
    for name in ("fastrtc.html", "inspect.js", "inspect.html"):
        text = (static / name).read_text(encoding="utf-8")
        assert "🎤" not in text and "🔈" not in text, name
    page = (static / "fastrtc.html").read_text(encoding="utf-8")
    assert '<div id="contract">microphone — · playback —</div>' in page
    assert '"microphone " + (d.microphone' in page and '" · playback " + (d.playback' in page


def test_talk_over_in_chromium_keeps_the_words(server: ServerProcess, tmp_path: Path) -> None:
    """issue 14: Chromium's microphone says "tell me a story", then "what time is it"
    while the story plays. The story stops and the time is answered; no ERROR line."""
    rng = np.random.default_rng(5)

    def room(seconds: float) -> np.ndarray[Any, Any]:
        return rng.normal(0, 20, int(RATE * seconds)).astype(np.int16)

    def said(text: str) -> np.ndarray[Any, Any]:
        return np.rint(speech48k(text).astype(np.float64) * 0.5).astype(np.int16)

    wav = tmp_path / "talk_over.wav"   # the story starts ~0.5 s after the first phrase
    wav.write_bytes(wav_bytes(np.concatenate([
        room(3.0), said("tell me a story"), room(2.5), said("what time is it"), room(20.0),
    ]).astype(np.int16), RATE))
    with chromium(wav, tmp_path) as browser:
        browser.get(f"{server.base_url}/fastrtc")
        browser.find_element("id", "record").click()
        assert wait_for(lambda: text_of(browser, "session").startswith("session fastrtc_"), 5)
        session = text_of(browser, "session").removeprefix("session ")

        def explain() -> str:
            return (f"\ntransitions: {server.transitions(session)}"
                    "\nserver log tail:\n" + server.log_path.read_text()[-3000:])

        assert wait_for(lambda: server.transitions(session).count(
            "THINKING→SPEAKING (response_ready)") >= 2, 40), explain()
        browser.find_element("id", "record").click()  # hang up
    moves = server.transitions(session)
    assert moves[:7] == [
        "IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)", "SPEAKING→INTERRUPT (barge_in)",
        "INTERRUPT→LISTENING (ready_after_interrupt)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)"], explain()
    records = [r for r in server.records() if r["session_id"] == session]
    finals = [normalise(str(r["data"]["payload"]["text"])) for r in records
              if r["event_type"] == "event_received" and r["data"]["event"] == "stt_final"]
    assert finals[:2] == ["tell me a story", "what time is it"], finals
    answers = [str(r["data"]["payload"]["text"]) for r in records
               if r["event_type"] == "event_received" and r["data"]["event"] == "response_ready"]
    assert answers[1].startswith("It is"), answers
    assert [r for r in server.records() if r["level"] == "ERROR"] == []
