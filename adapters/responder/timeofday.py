"""The time of day as the assistant says it, from an injectable clock.

Answers that mention the time take a `clock_now` callable instead of reading
the system clock, so tests and simulations get the same words every run.
"""

from __future__ import annotations

from datetime import datetime


def local_now() -> datetime:
    """The machine's local time, time-zone aware."""
    return datetime.now().astimezone()


def spoken_time(now: datetime) -> str:
    """`It is 3:07 PM.`: short, and reads well through text-to-speech."""
    hour = now.hour % 12 or 12
    return f"It is {hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}."
