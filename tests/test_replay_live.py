"""`turnchart replay` of a real `turnchart serve` recording against the unchanged chart
is identical, including calls where the caller hung up or barged in mid-answer
(issue 15 §3: such calls diverged with `? speak in SPEAKING: its recorded run was
cancelled …`, because a recorded cancellation was timed from the replayed start).

One server, real responder, TTS, VAD and STT; callers on the WebSocket transport.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adapters.cli.main import main
from adapters.speech.audio import resample
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import ServerProcess, speech48k

SPOKEN = "THINKING→SPEAKING (response_ready)"


def test_real_calls_with_hang_ups_and_barge_ins_mid_answer_replay_identically(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = ServerProcess(tmp_path)
    calls: list[str] = []

    def call(name: str) -> WebSocketCaller:
        calls.append(name)
        caller = WebSocketCaller(server.base_url, name)
        assert wait_for(lambda: server.transitions(name), 15), server.log_path.read_text()[-2000:]
        return caller

    def speaking(name: str) -> bool:
        return SPOKEN in server.transitions(name)

    try:
        server.wait_ready()
        stop = resample(speech48k("stop"), 48_000, 16_000)
        # Hang-ups mid-answer, at different points of the answer (a `stop` message
        # and an abrupt close), and one while the answer is being worked out.
        for n, (after_s, abrupt) in enumerate([(0.05, False), (0.3, True), (0.6, False),
                                               (0.15, True), (0.0, False)]):
            name = f"hangup-{n}"
            caller = call(name)
            caller.say_text("tell me a story")
            if after_s or n < 4:
                assert wait_for(lambda name=name: speaking(name), 20), server.transitions(name)
                time.sleep(after_s)
            if abrupt:
                caller.ws.close()
                caller._reader.join(5)
            else:
                caller.close()
        # Barge-ins mid-answer: the caller's own words over the answer.
        for n in range(2):
            name = f"barge-{n}"
            caller = call(name)
            caller.say_text("tell me a story")
            assert wait_for(lambda name=name: speaking(name), 20), server.transitions(name)
            time.sleep(0.2 + 0.2 * n)
            caller.say_audio(stop)
            assert wait_for(lambda name=name: "SPEAKING→INTERRUPT (barge_in)"
                            in server.transitions(name), 20), server.transitions(name)
            time.sleep(0.3)
            caller.close()
        assert wait_for(lambda: {r["session_id"] for r in server.records()
                                 if r["event_type"] == "session_closed"} >= set(calls), 20)
    finally:
        server.stop()
    cancelled = {r["session_id"] for r in server.records()
                 if r["event_type"] == "activity_cancelled"
                 and r["data"]["reason"] == "state_exit"}
    assert len(cancelled) >= 5, cancelled      # answers really were cut mid-run

    capsys.readouterr()
    code = main(["replay", str(server.log_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in calls:
        assert f"{name}: identical" in out, out
