"""The booking line's own guards, next to turnchart's (engine/runtime/behaviours.py).

The tools' payload types are checked before any of these run (a date that is
not a `str` never gets here: `event_invalid`, and the responder is told); these
guards check what a type cannot say:

- `sensible_party`: 1 to 20 people;
- `is_calendar_date`: `date` is a real day written YYYY-MM-DD ("2027-02-30" is not);
- `is_clock_time`: `time` is HH:MM on a 24-hour clock;
- `said_yes`: the caller confirmed (`yes: true`).

Each has examples of both outcomes, so `turnchart paths` covers them (docs/paths.md).
`registry()` is the factory `--registry examples.booking.registry:registry` names.
"""

from __future__ import annotations

import re
from datetime import date

from engine.chart.registry import GuardInput, Registry
from engine.runtime.behaviours import default_registry

MAX_PARTY = 20


def sensible_party(event: GuardInput) -> bool:
    """1 to MAX_PARTY people."""
    size = event.payload.get("size")
    return isinstance(size, int) and 1 <= size <= MAX_PARTY


def is_calendar_date(event: GuardInput) -> bool:
    """`date` is a day that exists, as YYYY-MM-DD."""
    text = event.payload.get("date")
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def is_clock_time(event: GuardInput) -> bool:
    """`time` is HH:MM, 00:00 to 23:59."""
    text = event.payload.get("time")
    return isinstance(text, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", text) is not None


def said_yes(event: GuardInput) -> bool:
    """The caller confirmed."""
    return event.payload.get("yes") is True


def build_registry() -> Registry:
    """turnchart's behaviours plus the booking line's guards."""
    reg = default_registry()
    reg.guard("sensible_party", examples={True: {"size": 4},
                                          False: [{"size": 0}, {"size": 45}]})(sensible_party)
    reg.guard("is_calendar_date", examples={
        True: {"date": "2026-12-12"}, False: [{"date": "2027-02-30"}, {"date": "friday"}]},
    )(is_calendar_date)
    reg.guard("is_clock_time", examples={True: {"time": "19:30"},
                                         False: [{"time": "25:00"}, {"time": "7pm"}]}
              )(is_clock_time)
    reg.guard("said_yes", examples={True: {"yes": True}, False: {"yes": False}})(said_yes)
    return reg


def registry() -> Registry:
    """The factory for `--registry examples.booking.registry:registry`."""
    return build_registry()
