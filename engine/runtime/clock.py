"""Time as a port. Sessions never call `time` or `asyncio.sleep` directly.

`RealClock` uses the running event loop. `VirtualClock` only moves when told
to: `advance_to(t)` lets every ready task run, fires due timers in order, and
repeats, so a simulated minute takes milliseconds and every run gives the
same trace.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> float:
        """Milliseconds on this clock since it started (the `t_ms` of log lines)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, as an event producer would stamp them."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle: ...


class RealClock:
    """Event-loop time; `wall()` is `time.time()`."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now_ms(self) -> float:
        return (time.monotonic() - self._start) * 1000.0

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


_DUE_DIGITS = 6  # virtual time resolution: 1e-6 ms


class _VirtualTimer:
    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that advances only in `advance_to`/`advance`; deterministic."""

    def __init__(self, wall_start: float = 1_763_850_000.0) -> None:
        self._now = 0.0
        self._wall_start = wall_start
        self._heap: list[tuple[float, int, _VirtualTimer]] = []
        self._seq = itertools.count()

    def now_ms(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_start + self._now / 1000.0

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        # Rounded to a nanosecond so that `sleep(ms / 1000)` lands exactly on `ms`
        # (2007 / 1000 * 1000 is 2007.0000000000002 in floating point): a timer
        # due "at 2007 ms" must fire in `advance_to(2007)`, and timers meant for
        # the same instant must compare equal to keep their FIFO order.
        due = round(self._now + max(0.0, seconds) * 1000.0, _DUE_DIGITS)
        timer = _VirtualTimer(due, callback)
        heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    async def settle(self) -> None:
        """Let every ready task run until nothing is runnable without time moving."""
        loop = asyncio.get_running_loop()
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            quiet = quiet + 1 if not ready else 0

    def next_due(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def advance_to(self, t_ms: float) -> None:
        """Run everything due up to and including `t_ms`, in time order."""
        await self.settle()
        while True:
            due = self.next_due()
            if due is None or due > t_ms:
                break
            _, _, timer = heapq.heappop(self._heap)
            self._now = float(max(self._now, timer.due))
            timer.callback()
            await self.settle()
        self._now = float(max(self._now, t_ms))
        await self.settle()

    async def advance(self, ms: float) -> None:
        await self.advance_to(self._now + ms)
