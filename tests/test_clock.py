"""The virtual clock: deterministic time for tests and `turnchart simulate`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import pytest

from engine.runtime.clock import RealClock, VirtualClock


async def test_timers_fire_in_time_order_whatever_the_order_they_were_set() -> None:
    clock = VirtualClock()
    fired: list[tuple[str, float]] = []
    def record(name: str) -> Callable[[], None]:
        return lambda: fired.append((name, clock.now_ms()))

    for name, seconds in [("c", 0.3), ("a", 0.1), ("d", 1.0), ("b", 0.2)]:
        clock.call_later(seconds, record(name))
    await clock.advance_to(500)
    assert fired == [("a", 100.0), ("b", 200.0), ("c", 300.0)]
    assert clock.now_ms() == 500.0
    await clock.advance_to(1000)
    assert fired[-1] == ("d", 1000.0)


async def test_timers_due_at_the_same_time_fire_in_the_order_they_were_set() -> None:
    clock = VirtualClock()
    fired: list[int] = []
    for i in range(20):
        clock.call_later(0.25, functools.partial(fired.append, i))
    await clock.advance(250)
    assert fired == list(range(20))


async def test_timers_meant_for_the_same_instant_are_equal_despite_float_rounding() -> None:
    """3 × 0.1 s is 300.00000000000006 ms in floating point; it must still be
    the same instant as 300 ms, so FIFO order holds and advance_to(300) fires it."""
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_later(0.1 + 0.1 + 0.1, lambda: fired.append("sum"))
    clock.call_later(0.3, lambda: fired.append("literal"))
    await clock.advance_to(300)
    assert fired == ["sum", "literal"]


@pytest.mark.parametrize("ms", [2007, 2011, 1001, 70, 300, 4099])
async def test_a_timer_fires_exactly_at_its_millisecond(ms: int) -> None:
    clock = VirtualClock()
    fired: list[float] = []
    clock.call_later(ms / 1000, lambda: fired.append(clock.now_ms()))
    await clock.advance_to(ms - 1)
    assert fired == []
    await clock.advance_to(ms)
    assert fired == [float(ms)]


async def test_cancelled_timers_do_not_fire() -> None:
    clock = VirtualClock()
    fired: list[str] = []
    keep = clock.call_later(0.1, lambda: fired.append("keep"))
    drop = clock.call_later(0.1, lambda: fired.append("drop"))
    late = clock.call_later(0.5, lambda: fired.append("late"))
    drop.cancel()
    late.cancel()
    await clock.advance_to(1000)
    assert fired == ["keep"]
    keep.cancel()   # cancelling a timer that already fired is harmless
    assert clock.next_due() is None


async def test_sleep_resumes_at_the_right_virtual_time() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now_ms()))

    tasks = [asyncio.create_task(sleeper("long", 1.5)), asyncio.create_task(sleeper("short", 0.4)),
             asyncio.create_task(sleeper("zero", 0))]
    await clock.advance_to(399)
    assert woke == [("zero", 0.0)]
    await clock.advance_to(10_000)
    assert woke == [("zero", 0.0), ("short", 400.0), ("long", 1500.0)]
    assert clock.now_ms() == 10_000.0
    await asyncio.gather(*tasks)


async def test_a_cancelled_sleep_leaves_no_timer_behind() -> None:
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(5))
    await clock.advance(100)
    assert clock.next_due() == 5000.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.next_due() is None


async def test_advance_to_runs_timers_that_callbacks_set_within_the_window() -> None:
    clock = VirtualClock()
    fired: list[tuple[int, float]] = []

    def tick(n: int) -> None:
        fired.append((n, clock.now_ms()))
        clock.call_later(0.1, lambda: tick(n + 1))

    clock.call_later(0.1, lambda: tick(1))
    await clock.advance_to(450)
    assert fired == [(1, 100.0), (2, 200.0), (3, 300.0), (4, 400.0)]
    assert clock.next_due() == 500.0


async def test_zero_delay_timers_set_by_a_callback_fire_in_the_same_advance() -> None:
    clock = VirtualClock()
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        clock.call_later(0, lambda: fired.append("cascade"))

    clock.call_later(0.2, first)
    clock.call_later(0.2, lambda: fired.append("second"))
    await clock.advance_to(200)
    # the cascaded timer is due at the same instant but was set later: FIFO
    assert fired == ["first", "second", "cascade"]
    assert clock.now_ms() == 200.0


async def test_tasks_woken_by_a_timer_run_before_the_next_timer() -> None:
    """A sleeper that sets a new timer when it wakes is in time for it."""
    clock = VirtualClock()
    order: list[str] = []

    async def chain() -> None:
        await clock.sleep(0.1)
        order.append("woke at 100")
        await clock.sleep(0.1)
        order.append("woke at 200")

    task = asyncio.create_task(chain())
    clock.call_later(0.15, lambda: order.append("timer at 150"))
    await clock.advance_to(300)
    assert order == ["woke at 100", "timer at 150", "woke at 200"]
    await task


async def test_time_never_goes_backwards() -> None:
    clock = VirtualClock()
    await clock.advance_to(500)
    await clock.advance_to(100)
    assert clock.now_ms() == 500.0
    fired: list[float] = []
    clock.call_later(-1, lambda: fired.append(clock.now_ms()))   # negative delay: now
    await clock.advance(0)
    assert fired == [500.0]


async def test_wall_time_follows_virtual_time() -> None:
    clock = VirtualClock(wall_start=1_000.0)
    await clock.advance_to(2500)
    assert clock.wall() == 1_002.5


async def test_real_clock_sleeps_and_calls_later() -> None:
    clock = RealClock()
    called = asyncio.Event()
    handle = clock.call_later(0.001, called.set)
    await asyncio.wait_for(called.wait(), 2)
    handle.cancel()
    before = clock.now_ms()
    await clock.sleep(0.002)
    assert clock.now_ms() - before >= 1.5
    await clock.sleep(-1)   # a negative sleep returns at once
