"""Faults in text-to-speech: it raises mid-sentence, or stops producing audio
mid-sentence. Playback stops, the session is back in LISTENING with an
ERROR (or timeout) line saying why, the next answer is spoken in full, and
nothing of the session is left running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from adapters.fastrtc.output import OutputRouter, OutputStream
from adapters.speech.espeak import EspeakEngine
from adapters.speech.tts import EspeakTTS
from engine.runtime.clock import RealClock, VirtualClock
from engine.runtime.ports import AudioChunk
from engine.tools.fakes import FakeSettings, FakeSpeech, fake_ports
from tests.support.fault_rig import HELLO, FaultRig, never, other_tasks
from tests.support.waiting import wait_until

RATE = 24_000
SPOKEN_TURN = ["LISTENING → THINKING (stt_final)", "THINKING → SPEAKING (response_ready)",
               "SPEAKING → LISTENING (playback_done)"]


class CrashingEspeak:
    """The real espeak-ng engine, except that its first synthesis dies after a few
    chunks (raised on espeak's worker thread, like a crash in the library would be)."""

    def __init__(self, chunks_before_crash: int) -> None:
        self.real = EspeakEngine.shared()
        self.sample_rate = self.real.sample_rate
        self.executor = self.real.executor
        self.chunks_before_crash = chunks_before_crash
        self.calls = 0

    def configure(self, voice: str, wpm: int) -> None:
        self.real.configure(voice, wpm)

    def synthesize(self, text: str, voice: str, wpm: int, sink: Any) -> None:
        self.calls += 1
        if self.calls > 1:
            self.real.synthesize(text, voice, wpm, sink)
            return
        left = [self.chunks_before_crash]

        def counting(pcm: Any) -> bool:
            left[0] -= 1
            return sink(pcm) and left[0] > 0

        self.real.synthesize(text, voice, wpm, counting)
        raise RuntimeError("espeak-ng crashed mid-sentence")


async def speaker(stream: OutputStream, heard: list[float]) -> None:
    """FastRTC's side of the connection: takes every due frame, in real time."""
    while True:
        if await stream.next_frame(timeout_s=0.05) is not None:
            heard.append(time.monotonic())


async def test_tts_raising_mid_sentence_stops_playback_and_the_next_turn_speaks() -> None:
    clock = RealClock()
    ports = fake_ports(clock, FakeSettings(respond_ms=20,
                                           response_text="Hello there, how can I help you today?"))
    engine = CrashingEspeak(chunks_before_crash=3)
    ports.speech = EspeakTTS(output_rate=RATE, engine=engine)  # type: ignore[arg-type]
    router = OutputRouter()
    ports.playback = ports.filler = router
    stream = OutputStream(RATE)
    heard: list[float] = []
    rig = FaultRig(clock, ports)
    async with rig, asyncio.TaskGroup() as tg:
        ear = tg.create_task(speaker(stream, heard))
        router.attach("s1", stream)
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        assert await wait_until(lambda: len(rig.transitions()) == 4, 10), rig.transitions()
        assert rig.transitions()[1:] == [*SPOKEN_TURN[:2], "SPEAKING → LISTENING (error)"]
        [failed] = rig.lines("activity_failed", activity="speak")
        assert failed["level"] == "ERROR"
        assert failed["message"] == "💥 speak failed: RuntimeError: espeak-ng crashed mid-sentence"
        [error] = rig.lines("event_received", event="error")
        assert error["data"]["payload"] == {
            "message": "speak failed: RuntimeError: espeak-ng crashed mid-sentence"}
        assert 0 < len(rig.lines("audio_out")) <= 3           # what came before the crash
        assert rig.lines("playback_cleared", state="SPEAKING")  # the error transition's own
        assert not stream.frames                                # nothing left to play ...
        cleared_at = stream.last_clear_at
        assert cleared_at is not None
        await asyncio.sleep(0.3)
        assert [t for t in heard if t > cleared_at] == []       # ... and nothing was played
        # The next answer is spoken in full.
        before = len(heard)
        rig.send("stt_final", HELLO)
        assert await wait_until(lambda: len(rig.transitions()) == 7, 15), rig.transitions()
        assert rig.transitions()[4:] == SPOKEN_TURN
        [done] = rig.lines("event_received", event="playback_done")
        spoken_ms = done["data"]["payload"]["duration_ms"]
        assert spoken_ms > 1000                                  # the whole sentence
        assert (len(heard) - before) * 20 >= spoken_ms - 20     # and all of it was played
        assert rig.overstays(slack_ms=1000) == []
        ear.cancel()
    assert engine.calls == 2
    assert rig.manager.live_tasks() == 0 and other_tasks() == []


class StallingSpeech:
    """Speaks two chunks, then never produces another (a wedged TTS process)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.fake = FakeSpeech(clock, FakeSettings(speak_ms=400))
        self.calls = 0
        self.cancelled = 0

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.calls += 1
        count = 0
        async for chunk in self.fake.synthesize(text):
            if self.calls == 1 and count == 2:
                try:
                    async for _ in never():
                        pass
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            count += 1
            yield chunk


async def test_tts_stalling_mid_sentence_is_given_up_at_the_speaking_deadline() -> None:
    clock = VirtualClock()
    ports = fake_ports(clock, FakeSettings(respond_ms=300, speak_ms=400))
    speech = StallingSpeech(clock)
    ports.speech = speech
    rig = FaultRig(clock, ports)
    async with rig:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await clock.advance_to(300 + 120_000 - 1)
        assert rig.state() == "SPEAKING"
        assert len(rig.lines("audio_out")) == 2
        await clock.advance_to(300 + 120_000)
        assert rig.state() == "LISTENING"
        assert rig.transitions()[-1] == "SPEAKING → LISTENING (playback_timeout)"
        [timeout] = rig.lines("state_timeout")
        assert timeout["level"] == "WARNING"
        assert timeout["data"] == {"state": "SPEAKING", "event": "playback_timeout"}
        assert timeout["message"].startswith("⌛ SPEAKING timed out (playback_timeout)")
        assert rig.lines("activity_cancelled", activity="speak")[0]["data"]["reason"] == \
            "state_exit"
        assert speech.cancelled == 1
        assert rig.lines("playback_cleared", state="LISTENING")
        assert rig.overstays() == []
        rig.send("stt_final", HELLO)
        await clock.advance(2_000)
        assert rig.transitions()[-3:] == SPOKEN_TURN
        assert len(rig.lines("audio_out")) == 2 + 10         # the next answer, all of it
    assert rig.manager.live_tasks() == 0 and other_tasks() == []
