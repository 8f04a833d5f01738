"""Real WebRTC calls over loopback: an aiortc caller against `turnchart serve`,
with the offline speech models, speech made at test time by the project's TTS."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from adapters.responder.text import normalise
from tests.support.waiting import wait_until
from tests.support.webrtc_client import Caller, ServerProcess, speech48k


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server"))
    process.wait_ready()
    yield process
    process.stop()




def wall(record: dict[str, object]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


async def test_hello_gets_an_answer(server: ServerProcess) -> None:
    caller = Caller(server.base_url, "rtc-hello")
    await caller.connect()
    try:
        await asyncio.sleep(0.8)
        caller.mic.say(speech48k("hello"))
        assert await wait_until(
            lambda: "SPEAKING→LISTENING (playback_done)" in server.transitions("rtc-hello"), 20)
        heard = caller.loud_since(0)
    finally:
        await caller.close()
    assert await wait_until(lambda: len(server.transitions("rtc-hello")) >= 5, 10)
    assert server.transitions("rtc-hello") == [
        "IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
        "THINKING→SPEAKING (response_ready)", "SPEAKING→LISTENING (playback_done)",
        "LISTENING→IDLE (client_disconnected)"]
    records = [r for r in server.records() if r["session_id"] == "rtc-hello"]
    assert [r for r in records if r["level"] == "ERROR"] == []
    finals = [r["data"]["payload"]["text"] for r in records
              if r["event_type"] == "event_received" and r["data"]["event"] == "stt_final"]
    assert [normalise(f) for f in finals] == ["hello"]   # whisper writes "Hello."
    assert heard >= 20, f"only {heard} loud answer frames (20 ms each) reached the caller"
    assert "Traceback" not in server.log_path.read_text()


async def test_stop_over_the_answer_silences_it(server: ServerProcess) -> None:
    caller = Caller(server.base_url, "rtc-barge")
    await caller.connect()
    try:
        await asyncio.sleep(0.8)
        caller.mic.say(speech48k("tell me a story"))
        assert await wait_until(
            lambda: "THINKING→SPEAKING (response_ready)" in server.transitions("rtc-barge"), 20)
        await asyncio.sleep(1.0)  # let the story play for a second
        heard_before = caller.loud_since(0)
        caller.mic.say(speech48k("stop"))
        assert await wait_until(lambda: any(
            r["event_type"] == "playback_cleared" and r["session_id"] == "rtc-barge"
            for r in server.records()), 10)
        await asyncio.sleep(1.5)
    finally:
        await caller.close()
    moves = server.transitions("rtc-barge")
    assert "SPEAKING→INTERRUPT (barge_in)" in moves
    assert "INTERRUPT→LISTENING (ready_after_interrupt)" in moves
    # the words of the barge-in are heard too ("stop"), and answered with silence
    after = moves[moves.index("INTERRUPT→LISTENING (ready_after_interrupt)") + 1:]
    assert after[:2] == ["LISTENING→THINKING (stt_final)", "THINKING→LISTENING (response_ready)"]
    assert "THINKING→SPEAKING (response_ready)" not in after
    records = [r for r in server.records() if r["session_id"] == "rtc-barge"]
    decided = wall(next(r for r in records if r["event_type"] == "barge_in_detected"))
    cleared = wall(next(r for r in records if r["event_type"] == "playback_cleared"
                        and r["data"]["ms_since_barge_in"] is not None))
    assert heard_before >= 20
    # Allowance: one jitter buffer. What FastRTC and aiortc had already taken
    # (our 60 ms lead) plus network and the receiver's own buffering: 100 ms.
    late = caller.loud_since(cleared + 0.100)
    assert late == 0, f"{late} loud frames reached the caller >100 ms after playback_cleared"
    assert cleared - decided < 0.25
    assert [r for r in records if r["level"] == "ERROR"] == []


async def test_two_callers_each_hear_only_their_own_answer(server: ServerProcess) -> None:
    talker, quiet = Caller(server.base_url, "rtc-talker"), Caller(server.base_url, "rtc-quiet")
    await talker.connect()
    await quiet.connect()
    try:
        await asyncio.sleep(0.8)
        talker.mic.say(speech48k("hello"))
        assert await wait_until(
            lambda: "SPEAKING→LISTENING (playback_done)" in server.transitions("rtc-talker"), 20)
    finally:
        await talker.close()
        await quiet.close()
    assert talker.loud_since(0) >= 20
    assert quiet.loud_since(0) == 0
    assert await wait_until(lambda: len(server.transitions("rtc-quiet")) >= 2, 10)
    assert server.transitions("rtc-quiet") == ["IDLE→LISTENING (client_connected)",
                                               "LISTENING→IDLE (client_disconnected)"]


async def test_sigterm_closes_live_sessions_cleanly(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path)
    process.wait_ready()
    caller = Caller(process.base_url, "rtc-term")
    await caller.connect()
    assert await wait_until(lambda: process.transitions("rtc-term"), 10)
    process.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.proc.wait, 20)
    await caller.close()
    process.stop()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert process.transitions("rtc-term")[-1] == "LISTENING→IDLE (client_disconnected)"
    kinds = [r["event_type"] for r in process.records() if r["session_id"] == "rtc-term"]
    assert kinds[-1] == "session_closed"
    assert "Application shutdown complete." in process.log_path.read_text()
