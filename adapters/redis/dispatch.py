"""The exactly-once bookkeeping of a Redis worker: which read entries reach a
session, which are acknowledged without being applied, and when.

Per entry id (ids compare numerically), for one `OwnedSession`:

- at or below `floor` (applied and saved by an earlier incarnation, or acked):
  acknowledged again, never applied (`event_duplicate`, applied: true);
- at or below `delivered` (already handed to this incarnation: a PEL sweep
  after a reconnect, a recreated group): dropped (`event_duplicate`, DEBUG);
- after the session's end marker, deleted while pending, or not a valid event:
  acknowledged and never retried (`event_after_end`, `entry_missing`,
  `event_invalid`);
- the end marker: the session ends once everything before it is applied;
- otherwise routed to the session with an ack callback; the session calls it
  after its step saved the snapshot, and only then is the entry acknowledged
  (by the save's own script when `ack_with_save`, else by an XACK).

A session holding `max_in_flight` unapplied entries is throttled (its stream is
not read) until it is down to half. No Redis here: acknowledgements go to an
`Acks` (the auto-pipeline), events to a `Sessions` (the SessionManager); the
unit tests (tests/test_redis_dispatch.py) use fakes for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from adapters.redis.keys import StreamId, format_id, parse_id
from adapters.redis.owned import OwnedSession, OwnedTable
from engine.runtime.events import EventProblem, VoiceEvent, parse_event, truncate_raw
from engine.runtime.logs import EventLog
from engine.runtime.session import Ack, Session
from engine.runtime.trace import EventInvalid


class Acks(Protocol):
    def ack(self, key: str, group: str, entry_id: str) -> None: ...


class Sessions(Protocol):
    def get(self, session_id: str) -> Session | None: ...

    def route(self, event: VoiceEvent, *, ack: Ack | None = None,
              entry_id: str | None = None) -> bool: ...


class DispatchHooks(Protocol):
    async def at(self, point: str, session_id: str, entry_id: str) -> None: ...


class Dispatcher:
    def __init__(self, table: OwnedTable, sessions: Sessions, acks: Acks, *, group: str,
                 max_in_flight: int, log: EventLog, stats: dict[str, int],
                 on_end: Callable[[OwnedSession, str], None],
                 acked_by_save: Callable[[str], str | None] = lambda sid: None,
                 hooks: DispatchHooks | None = None) -> None:
        self.table = table
        self.sessions = sessions
        self.acks = acks
        self.group = group
        self.max_in_flight = max(1, max_in_flight)
        self.log = log
        self.stats = stats
        self.on_end = on_end                  # the end marker: release the session
        self.acked_by_save = acked_by_save    # sid → entry id its last save acknowledged
        self.hooks = hooks

    def dispatch(self, owned: OwnedSession, entries: Iterable[Any]) -> None:
        """Hand `entries` (id, fields) of one owned session's stream to its session."""
        sid = owned.sid
        session = self.sessions.get(sid)
        stats = self.stats
        for entry in entries:
            entry_id, fields = entry[0], entry[1]
            eid = parse_id(entry_id)
            if eid <= owned.floor:
                stats["duplicates"] += 1
                self.acks.ack(owned.key, self.group, entry_id)
                self.log.emit("INFO", sid, "event_duplicate",
                              f"♊ entry {entry_id} was applied before: acknowledged, "
                              f"not applied",
                              {"entry_id": entry_id, "last_event_id": format_id(owned.floor),
                               "applied": True})
                continue
            if eid <= owned.delivered:
                stats["duplicates"] += 1
                self.log.emit("DEBUG", sid, "event_duplicate",
                              f"♊ entry {entry_id} is already in {sid}'s inbox",
                              {"entry_id": entry_id, "last_event_id": format_id(owned.floor),
                               "applied": False})
                continue
            if owned.ending:
                self.finish_entry(owned, entry_id, eid)
                self.log.emit("WARNING", sid, "event_after_end",
                              f"⚠️ entry {entry_id} arrived after the session's end marker: "
                              f"dropped", {"entry_id": entry_id})
                continue
            if fields is None:
                # Deleted from the stream while pending (XDEL, or trimmed by hand).
                self.finish_entry(owned, entry_id, eid)
                self.log.emit("WARNING", sid, "entry_missing",
                              f"🕳️ pending entry {entry_id} no longer exists in {owned.key}",
                              {"entry_id": entry_id})
                continue
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            if values.get("control") == "end":
                owned.delivered = eid
                owned.ending = True
                self.on_end(owned, entry_id)
                continue
            event = self.parse(owned, entry_id, values)
            if event is None:
                self.finish_entry(owned, entry_id, eid)
                continue
            if session is None or session.closed:
                return      # the supervisor resumes it; these stay pending for that
            if event.correlation_id is None:   # made as a local host makes it (voice.py)
                event = event.model_copy(update={"correlation_id":
                                                 session.next_correlation_id()})
            owned.delivered = eid
            owned.in_flight += 1
            owned.drained.clear()
            owned.last_activity = time.monotonic()
            stats["delivered"] += 1
            self.sessions.route(event, ack=self.acker(owned, entry_id, eid), entry_id=entry_id)
        if owned.in_flight >= self.max_in_flight and not owned.throttled:
            owned.throttled = True
            self.log.emit("INFO", sid, "session_throttled",
                          f"⏳ {sid} holds {owned.in_flight} events not yet applied: its "
                          f"stream is not read until it catches up",
                          {"in_flight": owned.in_flight, "max_in_flight": self.max_in_flight})
            self.table.mark_changed()

    def finish_entry(self, owned: OwnedSession, entry_id: str, eid: StreamId) -> None:
        """Acknowledge an entry that will never reach the session."""
        owned.delivered = max(owned.delivered, eid)
        if owned.in_flight == 0:
            owned.floor = max(owned.floor, eid)
        self.acks.ack(owned.key, self.group, entry_id)

    def parse(self, owned: OwnedSession, entry_id: str,
              values: dict[str, str]) -> VoiceEvent | None:
        raw = values.get("event")
        try:
            if raw is None:
                raise EventProblem("(entry)", "stream entry has no `event` field", values)
            event = parse_event(raw)
            if event.session_id != owned.sid:
                raise EventProblem("session_id", f"event for session '{event.session_id}' on "
                                   f"the stream of session '{owned.sid}'", raw)
        except EventProblem as problem:
            self.stats["invalid"] += 1
            self.log.publish(EventInvalid(
                *self.log.stamp(owned.sid), error=f"{problem.field}: {problem.error}",
                field=problem.field,
                raw=problem.raw if raw is not None else truncate_raw(values),
                extra={"entry_id": entry_id}))
            return None
        return event

    def acker(self, owned: OwnedSession, entry_id: str, eid: StreamId) -> Ack:
        """The callback a session calls once the entry's step is applied and saved."""
        async def ack() -> None:
            if self.hooks is not None:
                await self.hooks.at("before_ack", owned.sid, entry_id)
            owned.in_flight -= 1
            if owned.throttled and owned.in_flight <= self.max_in_flight // 2:
                owned.throttled = False       # read it again (hinted mode: at once)
                self.table.moved.add(owned.key)
                self.table.mark_changed()
            if eid > owned.floor:
                owned.floor = eid
            if owned.in_flight <= 0:
                owned.drained.set()
            self.stats["acked"] += 1
            if self.acked_by_save(owned.sid) != entry_id:   # not done by its save
                self.acks.ack(owned.key, self.group, entry_id)
        return ack
