"""Faults in the responder: it hangs (never answers) or raises. Either way the
session leaves THINKING (by its deadline, or by `error`), the floor goes back
to the user with a log line that says why, the next turn works, and nothing
of the session is left running."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.responder.openai_http import OpenAICompatibleResponder
from engine.runtime.clock import RealClock, VirtualClock
from engine.tools.fakes import FakeResponder, FakeSettings, fake_ports
from tests.support.fault_rig import HELLO, VOICE_TURN, FaultRig, deadlines, never, other_tasks
from tests.support.waiting import wait_until

FIRST_TURN = ["IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)"]
GOOD_TURN = ["LISTENING → THINKING (stt_final)", "THINKING → SPEAKING (response_ready)",
             "SPEAKING → LISTENING (playback_done)"]


class FlakyResponder:
    """Fails the first `failures` questions in the given way, then answers like the fake."""

    def __init__(self, answer: FakeResponder, how: str, failures: int = 1) -> None:
        self.answer_with, self.how, self.failures = answer, how, failures
        self.calls = 0
        self.cancelled = 0

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        self.calls += 1
        if self.calls > self.failures:
            async for piece in self.answer_with.answer(text, session_id):
                yield piece
            return
        if self.how == "raise":
            yield "Hi, I was about to"
            raise ConnectionResetError("model server went away")
        try:
            async for piece in never():
                yield piece
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def rig_with(how: str, clock: VirtualClock | RealClock) -> tuple[FaultRig, FlakyResponder]:
    ports = fake_ports(clock, FakeSettings(respond_ms=300, speak_ms=400))
    assert isinstance(ports.responder, FakeResponder)
    flaky = FlakyResponder(ports.responder, how)
    ports.responder = flaky
    return FaultRig(clock, ports), flaky


def test_every_state_that_waits_on_its_own_work_has_a_deadline() -> None:
    """The rule the shipped chart keeps: a state that invokes an activity has a timer
    that takes it out of the state, so a hung dependency cannot hold a session."""
    rig = FaultRig(VirtualClock(), fake_ports(VirtualClock()), chart=VOICE_TURN)
    limits = deadlines(rig.chart)
    waiting = sorted(n for n, s in rig.chart.states.items() if s.invoke)
    assert waiting == ["SPEAKING", "THINKING"]
    assert {n: limits.get(n) for n in waiting} == {"THINKING": 20_000.0, "SPEAKING": 120_000.0}
    assert limits["INTERRUPT"] == 0.0


async def test_a_hanging_responder_is_given_up_at_the_thinking_deadline() -> None:
    clock = VirtualClock()
    rig, responder = rig_with("hang", clock)
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await clock.advance_to(19_999)
        assert rig.state() == "THINKING"          # still waiting, filler played once
        assert [r["data"]["event"] for r in rig.lines("timer_fired")] == ["filler_due"]
        await clock.advance_to(20_000)
        assert rig.state() == "LISTENING"
        assert rig.transitions() == [*FIRST_TURN, "THINKING → LISTENING (response_timeout)"]
        [timeout] = rig.lines("state_timeout")
        assert timeout["level"] == "WARNING" and timeout["t_ms"] == 20_000.0
        assert timeout["message"] == ("⌛ THINKING timed out (response_timeout): gave up "
                                      "waiting, its work is cancelled")
        assert timeout["data"] == {"state": "THINKING", "event": "response_timeout"}
        [cancelled] = rig.lines("activity_cancelled", activity="respond")
        assert cancelled["data"]["reason"] == "state_exit"
        assert responder.cancelled == 1           # the hung call itself was cancelled
        assert rig.lines("playback_cleared", state="LISTENING")
        assert rig.manager.live_tasks() == 1      # the session's consumer, nothing else
        assert rig.overstays() == []
        # The next question is answered normally.
        rig.send("stt_final", HELLO)
        await clock.advance(2_000)
        assert rig.transitions()[3:] == GOOD_TURN
    assert rig.manager.live_tasks() == 0
    assert other_tasks() == []
    assert rig.lines("session_closed")[0]["data"]["state"] == "LISTENING"


async def test_a_raising_responder_gives_the_floor_back_with_the_reason() -> None:
    clock = VirtualClock()
    rig, responder = rig_with("raise", clock)
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await clock.advance(10)
        assert rig.transitions() == [*FIRST_TURN, "THINKING → LISTENING (error)"]
        reason = "responder failed: ConnectionResetError: model server went away"
        [failed] = rig.lines("responder_failed")
        assert failed["level"] == "ERROR" and failed["message"] == f"💥 {reason}"
        assert failed["data"]["state"] == "THINKING"
        [error] = rig.lines("event_received", event="error")
        assert error["data"]["payload"] == {"message": reason}
        assert error["data"]["source"] == "activity:respond"
        assert rig.lines("state_timeout") == []
        assert rig.lines("audio_out") == []       # half an answer is never spoken
        rig.send("stt_final", HELLO)
        await clock.advance(2_000)
        assert rig.transitions()[3:] == GOOD_TURN
        assert rig.overstays() == []
    assert responder.calls == 2
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


# ------------------------------------------------ the real HTTP responder, hung
@pytest.fixture
def silent_llm() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"


@pytest.mark.long
async def test_an_llm_that_never_answers_ends_in_error_before_the_deadline(
        silent_llm: str) -> None:
    """Real clock, real OpenAI-compatible responder: its own `timeout_s` fires first
    (well inside THINKING's deadline), so the log says exactly what was wrong."""
    clock = RealClock()
    ports = fake_ports(clock, FakeSettings(speak_ms=100))
    ports.responder = OpenAICompatibleResponder(silent_llm, "m", timeout_s=0.5)
    rig = FaultRig(clock, ports)
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        assert await wait_until(lambda: len(rig.transitions()) == 3, 10)
        assert rig.transitions() == [*FIRST_TURN, "THINKING → LISTENING (error)"]
        [failed] = rig.lines("responder_failed")
        assert f"LLM at {silent_llm}/chat/completions" in failed["data"]["error"]
        assert "timed out: no data within 0.5 s" in failed["data"]["error"]
        assert rig.overstays() == []
    assert rig.manager.live_tasks() == 0 and other_tasks() == []
