"""Worker lanes: a native decoder plus the one thread allowed to touch it, lent out in turn.

Why: pocketsphinx decoders hold the GIL while decoding and are not thread-safe, so each
one gets its own single-thread executor. Work submitted to a lane runs in submission
order, so an utterance's feeds never overtake each other, and a lane handed to the next
utterance only starts its work after the previous utterance's last call. Waiting for a
free lane works from any event loop (the pool is process-wide; loops may come and go).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Lane:
    """A decoder with its own worker thread."""

    def __init__(self, decoder: Any, name: str) -> None:
        self.decoder = decoder
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on this lane's thread, after everything submitted before it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class LanePool:
    """Lends lanes to callers, first come first served; thread- and loop-safe."""

    def __init__(self, lanes: Sequence[Lane]) -> None:
        self.lanes = tuple(lanes)
        self._free = list(reversed(lanes))
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[Lane]]]
        self._waiters = collections.deque()
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        return len(self._free)

    async def acquire(self) -> Lane:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free:
                return self._free.pop()
            fut: asyncio.Future[Lane] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed over just as we were cancelled
                self.release(fut.result())
            raise

    def release(self, lane: Lane) -> None:
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if fut.done():
                    continue
                try:
                    loop.call_soon_threadsafe(self._hand_over, fut, lane)
                    return
                except RuntimeError:  # that waiter's event loop is closed
                    continue
            self._free.append(lane)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    def _hand_over(self, fut: asyncio.Future[Lane], lane: Lane) -> None:
        if fut.done():  # the waiter gave up meanwhile: pass the lane on
            self.release(lane)
        else:
            fut.set_result(lane)
