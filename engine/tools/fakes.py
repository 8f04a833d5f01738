"""Fake ports for simulation and tests, driven by a scenario's `fakes` block.

They live on the session clock: a "300 ms" answer takes 300 ms of virtual
time, so a simulated turn is exact and instant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.runtime.clock import Clock
from engine.runtime.dialogue import Dialogue, ToolCall
from engine.runtime.ports import AudioChunk, Ports


@dataclass(frozen=True)
class FakeSettings:
    respond_ms: float = 300.0
    response_text: str = "Hi there!"
    respond_error: bool = False
    speak_ms: float = 1200.0
    tts_chunk_ms: float = 40.0
    # in a dialogue state: the caller's words (lower case) → the tool calls made for
    # them, each {event: arguments}; words not listed get the state's prompt
    tools: Mapping[str, Sequence[Mapping[str, Mapping[str, Any]]]] = field(
        default_factory=dict)


class FakeResponder:
    def __init__(self, clock: Clock, settings: FakeSettings) -> None:
        self.clock, self.settings = clock, settings
        self.calls: list[tuple[str, str]] = []

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        self.calls.append((session_id, text))
        await self.clock.sleep(self.settings.respond_ms / 1000.0)
        if self.settings.respond_error:
            raise RuntimeError("fake responder configured to fail")
        yield self.settings.response_text

    async def converse(self, text: str, session_id: str,
                       dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
        """In a dialogue state: the scripted tool calls for `text`, then (asked again
        with their results) an apology for a refused call and the state's prompt."""
        self.calls.append((session_id, text))
        await self.clock.sleep(self.settings.respond_ms / 1000.0)
        if self.settings.respond_error:
            raise RuntimeError("fake responder configured to fail")
        scripted = self.settings.tools.get(" ".join(text.lower().split()))
        if scripted and not dialogue.results:
            for n, call in enumerate(scripted):
                for name, arguments in call.items():
                    yield ToolCall(name, dict(arguments), f"call-{n}")
            return
        refused = [r for r in dialogue.results if not r.ok]
        if refused:
            yield f"Sorry, that did not work ({refused[0].detail})."
        yield dialogue.prompt


class FakeSpeech:
    """One silent 16 kHz 16-bit chunk per `tts_chunk_ms` until `speak_ms` is reached."""

    def __init__(self, clock: Clock, settings: FakeSettings) -> None:
        self.clock, self.settings = clock, settings

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        step = max(1.0, self.settings.tts_chunk_ms)
        elapsed = 0.0
        while elapsed < self.settings.speak_ms:
            ms = min(step, self.settings.speak_ms - elapsed)
            await self.clock.sleep(ms / 1000.0)
            elapsed += ms
            yield AudioChunk(b"\x00\x00" * int(16 * ms), ms)


class FakePlayback:
    def __init__(self) -> None:
        self.written: dict[str, int] = defaultdict(int)
        self.cleared: dict[str, int] = defaultdict(int)

    async def start(self, session_id: str) -> None:
        return None

    async def write(self, session_id: str, chunk: AudioChunk) -> None:
        self.written[session_id] += 1

    async def drain(self, session_id: str) -> None:
        return None

    async def clear(self, session_id: str) -> int:
        self.cleared[session_id] += 1
        return 0


class FakeFiller:
    def __init__(self) -> None:
        self.played: dict[str, int] = defaultdict(int)
        self.cancelled: dict[str, int] = defaultdict(int)

    async def play(self, session_id: str) -> None:
        self.played[session_id] += 1

    async def cancel(self, session_id: str) -> None:
        self.cancelled[session_id] += 1


def fake_ports(clock: Clock, settings: FakeSettings | None = None) -> Ports:
    settings = settings or FakeSettings()
    return Ports(playback=FakePlayback(), filler=FakeFiller(),
                 responder=FakeResponder(clock, settings), speech=FakeSpeech(clock, settings))
