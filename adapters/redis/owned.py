"""The owned-session table of a Redis worker: which sessions this process owns,
in which phase, and which streams the read loop reads.

One `OwnedSession` per session per incarnation (a resume makes a new one); the
table indexes them by session id and by stream key, keeps the list of streams
to read (live and not throttled) up to date, and wakes the read loop when it
changes. No Redis here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from adapters.redis.keys import ZERO_ID, StreamId

RawEntry = tuple[str, list[str] | None]   # (entry id, [field, value, …] or None), as read


class Phase(Enum):
    ADOPTING = "adopting"   # lease won, session not yet resumed: entries are buffered
    LIVE = "live"           # entries are dispatched to the session
    STOPPING = "stopping"   # handed off, lost or ended: entries stay pending in Redis
    BROKEN = "broken"       # adoption failed: the supervisor tries again later


@dataclass(eq=False)
class OwnedSession:
    """One owned session in one incarnation."""

    sid: str
    key: str
    phase: Phase = Phase.ADOPTING
    floor: StreamId = ZERO_ID       # entries ≤ floor are finished (applied+saved or acked)
    delivered: StreamId = ZERO_ID   # entries ≤ delivered were handed to this incarnation
    in_flight: int = 0
    buffer: list[RawEntry] = field(default_factory=list)
    ending: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    restarts: int = 0
    retry_at: float = 0.0
    lost: bool = False
    adopted_at: float = field(default_factory=time.monotonic)
    throttled: bool = False         # holds max_in_flight unapplied entries: not read for now
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class OwnedTable:
    """The sessions this worker owns, and the streams its read loop reads."""

    def __init__(self, on_forget: Callable[[str], None] = lambda sid: None) -> None:
        self.owned: dict[str, OwnedSession] = {}
        self.by_key: dict[str, OwnedSession] = {}
        self.live_keys: list[str] = []
        self.read_keys: list[str] = []       # live and not throttled
        self.dirty = True
        self.changed = asyncio.Event()
        # Streams to read at once in hinted mode (entries arrived before a session
        # went live, a throttled session caught up, a hint named it).
        self.moved: set[str] = set()
        # Sessions the supervisor must look at: their task ended, or adopting
        # them failed (it would cost O(owned) to find them by looking at all).
        self.watch: set[str] = set()
        self._on_forget = on_forget

    def get(self, sid: str) -> OwnedSession | None:
        return self.owned.get(sid)

    def add(self, owned: OwnedSession) -> None:
        self.owned[owned.sid] = owned
        self.by_key[owned.key] = owned

    def replace(self, old: OwnedSession, new: OwnedSession) -> None:
        self.owned[new.sid] = new
        if self.by_key.get(old.key) is old:
            self.by_key[new.key] = new
        self.mark_changed()

    def forget(self, owned: OwnedSession) -> None:
        if self.owned.get(owned.sid) is owned:
            del self.owned[owned.sid]
            self._on_forget(owned.sid)
        if self.by_key.get(owned.key) is owned:
            del self.by_key[owned.key]
        self.mark_changed()

    def is_current(self, owned: OwnedSession) -> bool:
        return self.owned.get(owned.sid) is owned

    def mark_changed(self) -> None:
        """The set of streams to read changed: the read loop replans."""
        self.dirty = True
        self.changed.set()

    def refresh(self) -> None:
        if self.dirty:
            self.dirty = False
            self.changed.clear()
            live = [o for o in self.by_key.values() if o.phase is Phase.LIVE]
            self.live_keys = [o.key for o in live]
            self.read_keys = [o.key for o in live if not o.throttled]

    def holding(self) -> int:
        """Sessions held (anything but stopping): O(owned), once per tick."""
        return sum(1 for o in self.owned.values() if o.phase is not Phase.STOPPING)

    def snapshot(self) -> dict[str, str]:
        return {sid: o.phase.value for sid, o in self.owned.items()}
