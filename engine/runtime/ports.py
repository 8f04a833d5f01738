"""What the engine needs from the world, as Protocols. Adapters implement them
(FastRTC playback, offline TTS, the responder); the simulator uses fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.runtime.dialogue import Dialogue, ToolCall


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of output audio; `duration_ms` lets the engine report playback length."""

    data: bytes
    duration_ms: float


class Playback(Protocol):
    """The answer's audio stream to one session's speaker."""

    async def start(self, session_id: str) -> None: ...

    async def write(self, session_id: str, chunk: AudioChunk) -> None: ...

    async def drain(self, session_id: str) -> None:
        """Return once everything written so far has been played."""
        ...

    async def clear(self, session_id: str) -> int:
        """Drop everything queued for the session; return how many chunks were dropped."""
        ...


class Filler(Protocol):
    """Short "hmm" clips while thinking; a separate channel from the answer's playback."""

    async def play(self, session_id: str) -> None: ...

    async def cancel(self, session_id: str) -> None: ...


class Responder(Protocol):
    """Intent and retrieval (run concurrently), then the answer, streamed as text pieces."""

    def answer(self, text: str, session_id: str) -> AsyncIterator[str]: ...


@runtime_checkable
class DialogueResponder(Protocol):
    """A responder that follows the chart's flow: asked with the current state's prompt
    and tools (engine/runtime/dialogue.py), it yields text pieces and tool calls. `dialogue`
    carries the results of this turn's earlier calls, so a bad call is told back."""

    def converse(self, text: str, session_id: str,
                 dialogue: Dialogue) -> AsyncIterator[str | ToolCall]: ...


class Speech(Protocol):
    """Text to audio, chunk by chunk as it is synthesised."""

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]: ...


@dataclass
class Ports:
    playback: Playback
    filler: Filler
    responder: Responder
    speech: Speech
