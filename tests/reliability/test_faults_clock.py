"""Clock faults. The virtual clock jumping far ahead fires every due timer once, in
time order, and none of a state already left. The wall clock (`time.time`)
jumping back or forward moves no timer (timers run on monotonic time) and
reorders nothing. Event timestamps from the past or the future change
neither the order events are applied in (arrival order) nor the stale check
(by epoch, not by time): they only show in `latency_ms`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from engine.runtime.clock import RealClock, VirtualClock
from engine.runtime.events import VoiceEvent
from engine.runtime.session import Envelope
from engine.tools.fakes import FakeResponder, FakeSettings, fake_ports
from tests.support.fault_rig import HELLO, FaultRig, never, other_tasks

HOUR = 3600.0


class HungResponder:
    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        async for piece in never():
            yield piece


async def test_a_long_virtual_jump_fires_each_due_timer_once_in_time_order() -> None:
    clock = VirtualClock()
    ports = fake_ports(clock)
    ports.responder = HungResponder()
    rig = FaultRig(clock, ports)
    sids = ["s1", "s2", "s3", "s4"]
    async with rig:
        for sid in sids:
            await rig.manager.open(sid)
            rig.send("client_connected", sid=sid)
        await clock.advance(0)
        for i, sid in enumerate(sids):          # turns start 100 ms apart
            rig.send("stt_final", HELLO, sid=sid)
            if sid == "s4":                      # leaves THINKING at once: its timers die
                rig.send("barge_in", {"reason": "user spoke"}, sid=sid)
            await clock.advance(100 if i < len(sids) - 1 else 0)
        await clock.advance_to(10 * 60_000)      # one jump of ten minutes
        fired = [(r["session_id"], r["data"]["event"], r["t_ms"])
                 for r in rig.lines("timer_fired", None)]
        assert fired == [("s4", "ready_after_interrupt", 300.0),
                         ("s1", "filler_due", 600.0), ("s2", "filler_due", 700.0),
                         ("s3", "filler_due", 800.0), ("s1", "response_timeout", 20_000.0),
                         ("s2", "response_timeout", 20_100.0),
                         ("s3", "response_timeout", 20_200.0)]
        for sid in sids:
            assert rig.state(sid) == "LISTENING"
            assert rig.overstays(sid) == []
        assert [rig.transitions(sid)[-1] for sid in sids] == \
            ["THINKING → LISTENING (response_timeout)"] * 3 + \
            ["INTERRUPT → LISTENING (ready_after_interrupt)"]
        # each fired event was applied once, at the time it fired
        applied = [(r["session_id"], r["data"]["event"], r["t_ms"])
                   for r in rig.lines("event_received", None)
                   if r["data"]["source"] == "timer"]
        assert applied == fired
        assert rig.lines("event_stale", None) == []
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """`time.time` with an offset the test moves (an NTP step, a VM resumed)."""
    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])

    def jump(seconds: float) -> None:
        offset[0] += seconds
    return jump


async def settle(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll on the event loop's (monotonic) time; `time.time` is not to be trusted here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_wall_clock_jumps_move_no_timer_and_reorder_nothing(
        wall: Callable[[float], None]) -> None:
    clock = RealClock()
    rig = FaultRig(clock, fake_ports(clock, FakeSettings(respond_ms=800, speak_ms=300)))
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        assert await settle(lambda: rig.state() == "THINKING", 2)
        wall(-HOUR)                                  # back an hour while THINKING's timers run
        assert await settle(lambda: rig.state() == "SPEAKING", 3)
        wall(+2 * HOUR)                              # then forward two while SPEAKING
        assert await settle(lambda: rig.state() == "LISTENING", 3)
        assert rig.transitions()[1:] == [
            "LISTENING → THINKING (stt_final)", "THINKING → SPEAKING (response_ready)",
            "SPEAKING → LISTENING (playback_done)"]
        thinking = rig.lines("state_transition", to="THINKING")[0]["t_ms"]
        [filler] = rig.lines("timer_fired", event="filler_due")
        assert 600 <= filler["t_ms"] - thinking < 800     # on time, by the monotonic clock
        ready = rig.lines("event_received", event="response_ready")[0]["t_ms"]
        assert 800 <= ready - thinking < 1200
        t_ms = [r["t_ms"] for r in rig.sink.records]
        assert t_ms == sorted(t_ms)                       # log order is time order ...
        stamps = [r["ts"][:13] for r in rig.sink.records]
        assert len(set(stamps)) == 3                      # ... though `ts` jumped twice
        for line in rig.lines("state_transition"):
            assert line["data"]["latency_ms"] >= 0
        assert rig.overstays(slack_ms=500) == []
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


async def test_event_timestamps_from_the_past_or_future_change_no_order_and_no_staleness(
        ) -> None:
    clock = VirtualClock()
    ports = fake_ports(clock, FakeSettings(respond_ms=300, speak_ms=400))
    assert isinstance(ports.responder, FakeResponder)
    rig = FaultRig(clock, ports)
    async with rig:
        session = await rig.manager.open("s1")
        rig.send("client_connected", timestamp=clock.wall() - HOUR)
        rig.send("stt_final", HELLO, timestamp=clock.wall() + HOUR)
        rig.send("barge_in", {"reason": "stop"}, timestamp=clock.wall() - 24 * HOUR)
        await clock.advance(0)
        # arrival order, whatever the stamps say
        assert rig.transitions() == ["IDLE → LISTENING (client_connected)",
                                     "LISTENING → THINKING (stt_final)",
                                     "THINKING → INTERRUPT (barge_in)",
                                     "INTERRUPT → LISTENING (ready_after_interrupt)"]
        latencies = [r["data"]["latency_ms"] for r in rig.lines("state_transition")]
        assert latencies == [HOUR * 1000, 0.0, 24 * HOUR * 1000, 0.0]  # the future clamps to 0
        # An activity's event from an epoch already left is stale, even stamped in the future;
        # one from the current epoch is applied, even stamped a day ago.
        old, now = session.epoch - 1, session.epoch

        def posted(name: str, payload: dict[str, object], stamp: float, epoch: int) -> None:
            session.post(Envelope(event=VoiceEvent(
                event_type=name, session_id="s1", source="activity:respond", timestamp=stamp,
                correlation_id=session.correlation_id, payload=payload), epoch=epoch))

        posted("stt_final", HELLO, clock.wall() + HOUR, old)
        posted("stt_final", HELLO, clock.wall() - 24 * HOUR, now)
        await clock.advance(0)
        [stale] = rig.lines("event_stale")
        assert stale["data"]["event_epoch"] == old and stale["data"]["current_epoch"] == now
        assert rig.transitions()[-1] == "LISTENING → THINKING (stt_final)"
        await clock.advance(1_000)
        assert rig.transitions()[-2:] == ["THINKING → SPEAKING (response_ready)",
                                          "SPEAKING → LISTENING (playback_done)"]
        assert rig.overstays() == []
    assert rig.manager.live_tasks() == 0 and other_tasks() == []
