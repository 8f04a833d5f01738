"""Adoption: a session whose lease this worker just won (or must resume) is
opened from its snapshot, the stream's pending entries are claimed from
earlier owners, and its backlog goes to the dispatcher in entry order.

`floor` = `delivered` = the snapshot's `last_event_id`: pending entries at or
below it were applied already (the previous owner died between save and XACK)
and are acknowledged without being applied again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ResponseError

from adapters.redis.connection import CONNECTION_ERRORS, Client, command_on, error_text
from adapters.redis.dispatch import Dispatcher
from adapters.redis.keys import parse_id
from adapters.redis.owned import OwnedSession, OwnedTable, Phase, RawEntry
from adapters.redis.reader import stream_pairs
from adapters.redis.snapshots import LeaseLost
from engine.runtime.logs import EventLog
from engine.runtime.manager import SessionManager


class Adopter:
    def __init__(self, redis: Client, manager: SessionManager, table: OwnedTable,
                 dispatcher: Dispatcher, *, group: str, worker_id: str, concurrency: int,
                 log: EventLog, stats: dict[str, int],
                 lose: Callable[[OwnedSession, str, str], None],
                 close_local: Callable[[str], Awaitable[None]]) -> None:
        self.redis = redis
        self.manager = manager
        self.table = table
        self.dispatcher = dispatcher
        self.group = group
        self.worker_id = worker_id
        self.log = log
        self.stats = stats
        self.lose = lose
        self.close_local = close_local
        self.gate = asyncio.Semaphore(concurrency)

    async def ensure_group(self, key: str) -> bool:
        """XGROUP CREATE … 0 MKSTREAM; True when it had to be created."""
        try:
            await self.redis.xgroup_create(key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def adopt(self, owned: OwnedSession) -> None:
        sid, key = owned.sid, owned.key
        async with self.gate:
            if not self.table.is_current(owned):
                return
            try:
                await self.ensure_group(key)
                session = await self.manager.open(sid, resume=True)
                owned.floor = owned.delivered = parse_id(session.last_event_id)
                claimed = await self._claim(key)
                pending = await self._read_own_pending(key)
            except CONNECTION_ERRORS as exc:
                self.log.emit("WARNING", sid, "session_adopt_failed",
                              f"🔌 cannot adopt {sid} now: {error_text(exc)}; retrying",
                              {"error": error_text(exc), "retry": True})
                await self.close_local(sid)
                # LIVE without a session: the supervisor adopts it again (with backoff).
                owned.phase = Phase.LIVE
                owned.retry_at = max(owned.retry_at, time.monotonic() + 0.2)
                self.table.watch.add(sid)
                return
            except LeaseLost as exc:
                self.lose(owned, "fenced", f"while adopting it: {exc}")
                return
            except Exception as exc:
                self.log.emit("ERROR", sid, "session_adopt_failed",
                              f"💥 cannot adopt {sid}: {error_text(exc)}",
                              {"error": error_text(exc), "retry": True})
                await self.close_local(sid)
                owned.phase, owned.retry_at = Phase.BROKEN, time.monotonic() + 30.0
                self.table.watch.add(sid)
                return
        if not self.table.is_current(owned) or owned.phase is not Phase.ADOPTING:
            await self.close_local(sid)
            return
        self.stats["adopted"] += 1
        if session.last_event_id is not None or owned.restarts:
            self.stats["resumed"] += 1
        if claimed:
            self.stats["claimed"] += claimed
            self.log.emit("INFO", sid, "entries_claimed",
                          f"📥 {claimed} pending entr{'y' if claimed == 1 else 'ies'} of {sid} "
                          f"claimed from earlier owners", {"count": claimed, "stream": key})
        self.log.emit("INFO", sid, "session_adopted",
                      f"📦 {self.worker_id} runs {sid} from turn {session.turn} "
                      f"(last entry {session.last_event_id}), {len(pending)} pending",
                      {"worker_id": self.worker_id, "turn": session.turn,
                       "last_event_id": session.last_event_id, "state": session.state,
                       "claimed": claimed, "pending": len(pending)})
        owned.phase = Phase.LIVE
        self.table.moved.add(key)     # hinted mode: read what arrived before it went live
        backlog = sorted(pending + owned.buffer, key=lambda e: parse_id(e[0]))
        owned.buffer = []
        self.dispatcher.dispatch(owned, backlog)
        self.table.mark_changed()

    async def _claim(self, key: str) -> int:
        """XAUTOCLAIM every pending entry of the stream to this worker: the
        lease says every other consumer of it is gone."""
        cursor, total = "0-0", 0
        while True:
            reply = await command_on(
                self.redis, key, "XAUTOCLAIM", key, self.group, self.worker_id, 0, cursor,
                "COUNT", 1000, "JUSTID")
            cursor, ids = reply[0], reply[1]
            total += len(ids)
            if cursor in ("0-0", b"0-0"):
                return total

    async def _read_own_pending(self, key: str) -> list[RawEntry]:
        after, entries = "0", list[RawEntry]()
        while True:
            reply = await command_on(
                self.redis, key, "XREADGROUP", "GROUP", self.group, self.worker_id, "COUNT",
                1000, "STREAMS", key, after)
            pairs = stream_pairs(reply)
            batch = pairs[0][1] if pairs else []
            if not batch:
                return entries
            entries.extend((e[0], e[1]) for e in batch)
            after = batch[-1][0]
