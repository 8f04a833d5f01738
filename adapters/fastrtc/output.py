"""Per-connection output audio: the engine's `Playback` and `Filler` ports.

FastRTC pulls frames from the handler's `emit()` as fast as it can and paces
them later, so anything handed over is already out of reach of a barge-in.
Here `emit()` hands over a frame only when it is due (at most `lead_ms` ahead
of real time), so the queue that a barge-in clears holds almost everything
not yet heard. `clear()` empties it and FastRTC's own decoded-frame queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.runtime.ports import AudioChunk

FRAME_MS = 20.0


@dataclass
class Frame:
    pcm: np.ndarray        # int16 mono at the output rate
    filler: bool = False


class OutputStream:
    """Frames waiting to be played to one connection, paced in real time."""

    def __init__(self, rate: int, *, lead_ms: float = 60.0, max_ahead_ms: float = 400.0) -> None:
        self.rate = rate
        self.frame_samples = int(rate * FRAME_MS / 1000)
        self.lead_ms = lead_ms
        self.max_ahead_ms = max_ahead_ms
        self.frames: deque[Frame] = deque()
        self._pending = np.zeros(0, dtype=np.int16)
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._playout_end = 0.0          # monotonic time the last handed-over frame ends
        self.clear_downstream: Callable[[], None] | None = None
        self.paused = False
        self.frames_out = 0
        self.first_frame_after: float | None = None  # monotonic time of the first frame out
        self.last_clear_at: float | None = None
        self._handed: deque[tuple[Frame, float]] = deque(maxlen=16)  # frame, playout start

    # writer side -------------------------------------------------------------
    async def write(self, chunk: AudioChunk, *, filler: bool = False) -> None:
        """Queue, then wait while more than `max_ahead_ms` is queued (backpressure)."""
        self.push(chunk, filler=filler)
        while len(self.frames) * FRAME_MS > self.max_ahead_ms:
            self._space.clear()
            await self._space.wait()

    def push(self, chunk: AudioChunk, *, filler: bool = False) -> None:
        """Queue without waiting (the remote worker paces what it sends)."""
        pcm = np.frombuffer(chunk.data, dtype=np.int16)
        self._pending = np.concatenate([self._pending, pcm])
        while len(self._pending) >= self.frame_samples:
            self.frames.append(Frame(self._pending[: self.frame_samples].copy(), filler))
            self._pending = self._pending[self.frame_samples:]
        self._wake.set()

    def flush(self, *, filler: bool = False) -> None:
        """Pad and queue what is left of a partial frame (end of an utterance)."""
        if len(self._pending):
            pad = np.zeros(self.frame_samples - len(self._pending), dtype=np.int16)
            self.frames.append(Frame(np.concatenate([self._pending, pad]), filler))
            self._pending = np.zeros(0, dtype=np.int16)
            self._wake.set()

    def clear(self, *, filler_only: bool = False) -> int:
        """Drop queued frames now (all, or only filler); return how many were dropped."""
        before = len(self.frames)
        if filler_only:
            self.frames = deque(f for f in self.frames if not f.filler)
        else:
            self.frames.clear()
            self._handed.clear()
            self._pending = np.zeros(0, dtype=np.int16)
            if self.clear_downstream is not None:
                self.clear_downstream()
            self._playout_end = time.monotonic()
            self.last_clear_at = time.monotonic()
        self._space.set()
        return before - len(self.frames)

    async def drain(self) -> None:
        """Wait until every frame handed over so far has been played."""
        self.flush()
        while self.frames:
            self._space.clear()
            await self._space.wait()
        remaining = self._playout_end - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    # reader side (the handler's emit) ------------------------------------------
    async def next_frame(self, timeout_s: float = 1.0) -> Frame | None:
        """The next due frame, or None after `timeout_s` with nothing to play."""
        deadline = time.monotonic() + timeout_s
        while not self.frames or self.paused:
            self._wake.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return None
        now = time.monotonic()
        due = self._playout_end - self.lead_ms / 1000.0
        if due > now:
            await asyncio.sleep(due - now)
        if not self.frames or self.paused:  # cleared or paused while waiting
            return None
        frame = self.frames.popleft()
        start = max(self._playout_end, time.monotonic())
        self._playout_end = start + FRAME_MS / 1000.0
        self._handed.append((frame, start))
        self.frames_out += 1
        if self.first_frame_after is None:
            self.first_frame_after = time.monotonic()
        if len(self.frames) * FRAME_MS <= self.max_ahead_ms:
            self._space.set()
        return frame

    def pause(self) -> None:
        self.paused = True

    def hold(self) -> int:
        """Pause at once, as fast as `clear()` silences: the frames handed over but not
        yet due to play (up to `lead_ms`, in the transport's queue) are taken back to
        the front of the queue and the transport's copy dropped, so `resume()` plays
        the answer on from where the caller stopped hearing it. Returns how many."""
        self.paused = True
        now = time.monotonic()
        unplayed = [frame for frame, start in self._handed if start > now]
        self._handed.clear()
        if unplayed:
            self.frames.extendleft(reversed(unplayed))
            if self.clear_downstream is not None:
                self.clear_downstream()
            self._playout_end = now
        return len(unplayed)

    def resume(self) -> None:
        self.paused = False
        self._wake.set()


class OutputRouter:
    """The `Playback` and `Filler` ports for every connection, by session id."""

    def __init__(self, filler_clip: Callable[[], AudioChunk | None] | None = None) -> None:
        self.streams: dict[str, OutputStream] = {}
        self.filler_clip = filler_clip

    def attach(self, session_id: str, stream: OutputStream) -> None:
        self.streams[session_id] = stream

    def detach(self, session_id: str) -> None:
        self.streams.pop(session_id, None)

    # Playback ------------------------------------------------------------------
    async def start(self, session_id: str) -> None:
        return None

    async def write(self, session_id: str, chunk: AudioChunk) -> None:
        stream = self.streams.get(session_id)
        if stream is not None:
            await stream.write(chunk)

    async def drain(self, session_id: str) -> None:
        stream = self.streams.get(session_id)
        if stream is not None:
            await stream.drain()

    async def clear(self, session_id: str) -> int:
        stream = self.streams.get(session_id)
        return stream.clear() if stream is not None else 0

    # Filler ----------------------------------------------------------------------
    async def play(self, session_id: str) -> None:
        """Queue the clip and return: an effect never waits for audio to play (the
        filler's frames are paced out by `emit()` like any other)."""
        stream = self.streams.get(session_id)
        clip = self.filler_clip() if self.filler_clip else None
        if stream is not None and clip is not None:
            stream.push(clip, filler=True)
            stream.flush(filler=True)

    async def cancel(self, session_id: str) -> None:
        stream = self.streams.get(session_id)
        if stream is not None:
            stream.clear(filler_only=True)
