"""Polling for something a running server or session will do soon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> bool:
    """True as soon as `predicate()` is truthy; False after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


async def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> bool:
    """`wait_for` for async tests: sleeps on the event loop between looks."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())
