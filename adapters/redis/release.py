"""Release: how a session stops being this worker's.

- ended (the end marker): once everything before it is applied, the session
  closes for good: snapshot deleted, stream and dedupe set left to expire;
- handed off (rebalance, shutdown): no more deliveries, what it holds is let
  finish (bounded), its lease goes straight to a live peer and it is announced;
- lost (the lease is gone, or can no longer be vouched for): stopped here at
  once, snapshot kept, pending entries left to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, Client, error_text
from adapters.redis.keys import Keys
from adapters.redis.leases import LeaseManager
from adapters.redis.options import WorkerOptions
from adapters.redis.owned import OwnedSession, OwnedTable, Phase
from adapters.redis.pipeline import AutoPipeline
from adapters.redis.snapshots import LeaseLost, RedisSnapshotStore
from engine.runtime.logs import EventLog
from engine.runtime.manager import SessionManager
from engine.runtime.session import Session
from engine.runtime.snapshot import Snapshot

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class OwnerStore:
    """The manager's store: fenced saves; `delete` only for sessions that ended
    (closing a session here for a hand-off, a lost lease or shutdown must keep
    its snapshot for the next owner)."""

    def __init__(self, inner: RedisSnapshotStore,
                 on_lease_lost: Callable[[str, LeaseLost], None]) -> None:
        self.inner = inner
        self.on_lease_lost = on_lease_lost
        self.ending: set[str] = set()

    async def save(self, snapshot: Snapshot) -> None:
        try:
            await self.inner.save(snapshot)
        except LeaseLost as exc:      # the step fails (never acked); stop the session
            self.on_lease_lost(snapshot.session_id, exc)
            raise

    async def load(self, session_id: str) -> Snapshot | None:
        return await self.inner.load(session_id)

    async def delete(self, session_id: str) -> None:
        if session_id in self.ending:
            await self.inner.delete(session_id)


class Releaser:
    def __init__(self, redis: Client, manager: SessionManager, store: OwnerStore,
                 leases: LeaseManager, pipeline: AutoPipeline, table: OwnedTable, *,
                 options: WorkerOptions, keys: Keys, worker_id: str, log: EventLog,
                 stats: dict[str, int], spawn: Spawn,
                 peers: Callable[[], list[str]]) -> None:
        self.redis = redis
        self.manager = manager
        self.store = store
        self.leases = leases
        self.pipeline = pipeline
        self.table = table
        self.options = options
        self.keys = keys
        self.worker_id = worker_id
        self.log = log
        self.stats = stats
        self.spawn = spawn
        self.peers = peers
        self.gate = asyncio.Semaphore(options.adopt_concurrency)

    # ---------------------------------------------------------------- lost
    def fenced(self, sid: str, exc: LeaseLost) -> None:
        owned = self.table.get(sid)
        if owned is not None:
            self.lose(owned, "fenced", f"a snapshot save was refused: {exc}")

    def lose(self, owned: OwnedSession, reason: str, why: str) -> None:
        """The lease is gone (or can no longer be vouched for): stop the session
        here at once, keep its snapshot, leave its pending entries to the owner."""
        if owned.lost or owned.phase is Phase.STOPPING:
            return
        owned.lost = True
        self.stats["lost"] += 1
        self.log.emit("WARNING", owned.sid, "lease_lost",
                      f"🔓 lease of {owned.sid} lost ({why}): stopping it here, snapshot kept",
                      {"worker_id": self.worker_id, "reason": reason})
        self.spawn(self.drop(owned, reason, release=False), f"drop:{owned.sid}")

    # --------------------------------------------------------------- ended
    def end(self, owned: OwnedSession, end_entry: str) -> None:
        """The dispatcher met the end marker."""
        self.spawn(self.finish(owned, end_entry), f"end:{owned.sid}")

    async def wait_drained(self, owned: OwnedSession, timeout: float | None) -> bool:
        """Until the session acked everything handed to it (False: timed out, or
        this incarnation was replaced meanwhile)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while owned.in_flight > 0:
            if not self.table.is_current(owned) and owned.phase is not Phase.STOPPING:
                return False
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await owned.drained.wait()
        return True

    async def finish(self, owned: OwnedSession, end_entry: str) -> None:
        """The end marker: every earlier event applied, then the session closes
        for good: snapshot deleted, stream and dedupe set left to expire."""
        sid = owned.sid
        await self.wait_drained(owned, None)
        if not self.table.is_current(owned):
            return
        async with self.gate:
            self.store.ending.add(sid)
            try:
                await self.manager.close(sid)
            finally:
                self.store.ending.discard(sid)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(owned.key, self.options.group, end_entry)
            pipe.pexpire(owned.key, self.options.ended_ttl_ms)
            pipe.delete(self.keys.dedupe(sid))
            pipe.srem(self.keys.sessions, sid)
            await pipe.execute()
            owned.phase = Phase.STOPPING
            self.table.forget(owned)
            await self.leases.release([sid])
        self.stats["ended"] += 1
        self.log.emit("INFO", sid, "session_ended",
                      f"🏁 {sid} ended: snapshot deleted, stream expires in "
                      f"{self.options.ended_ttl_ms // 1000}s", {"entry_id": end_entry})

    # ------------------------------------------------------------- stopped
    async def close_local(self, sid: str) -> None:
        """Stop the session in this process; its snapshot stays in Redis."""
        session: Session | None = self.manager.get(sid)
        if session is not None:
            session.close()
            await session.finished.wait()

    async def drop(self, owned: OwnedSession, reason: str, *, release: bool) -> None:
        """Stop one session here; `release`: hand its lease to a peer (or free it),
        else (lost) just forget it."""
        if owned.phase is Phase.STOPPING:
            return
        await self.stop_local([owned], drain=release)
        if release:
            async with self.gate:
                await self.hand_back([owned.sid], reason)
        else:
            self.leases.forget(owned.sid)

    async def stop_local(self, owned: list[OwnedSession], *, drain: bool) -> None:
        """No more deliveries; optionally let each finish what it holds (bounded);
        close the sessions here. Their snapshots stay; unacked entries stay pending."""
        live = [o for o in owned if o.phase is Phase.LIVE]
        for o in owned:
            o.phase = Phase.STOPPING
        self.table.mark_changed()
        if drain and live:
            await asyncio.gather(*(self.wait_drained(o, self.options.drain_timeout_s)
                                   for o in live))
        sessions = [s for o in owned if (s := self.manager.get(o.sid)) is not None]
        for session in sessions:
            session.close()
        await self._until_finished(sessions)
        for o in owned:
            self.table.forget(o)

    async def _until_finished(self, sessions: list[Session]) -> None:
        """Wait for closed sessions to finish, but not for ever: one whose activity
        ignores its cancellation must not keep a hand-off, or the worker's shutdown,
        waiting (its saves are fenced by the lease, so it can no longer change state)."""
        waits = {asyncio.ensure_future(s.finished.wait()): s for s in sessions}
        if not waits:
            return
        try:
            _, late = await asyncio.wait(waits, timeout=self.options.close_timeout_s)
        finally:
            for wait in waits:
                wait.cancel()   # no-op for the finished; the late (or all, if we are cancelled)
        for wait in late:
            sid = waits[wait].id
            self.log.emit("WARNING", sid, "session_stop_timeout",
                          f"⏳ {sid} did not finish within {self.options.close_timeout_s:g} s "
                          "of being closed (an activity ignores cancellation); released anyway",
                          {"worker_id": self.worker_id,
                           "timeout_s": self.options.close_timeout_s})

    async def hand_back(self, sids: list[str], reason: str) -> None:
        """Give leases straight to live peers (round robin from a random start), or
        free them; announce the sessions so the peers adopt them at once."""
        if not sids:
            return
        peers = list(self.peers())
        offset = random.randrange(len(peers)) if peers else 0
        plan: dict[str, str | None] = {
            sid: peers[(offset + i) % len(peers)] if peers else None
            for i, sid in enumerate(sids)}
        holders: dict[str, str | None] = dict.fromkeys(sids)
        try:
            await self.pipeline.drained(self.options.drain_timeout_s)  # our XACKs first
            holders = await self.leases.hand_over(plan)
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                pipe.xadd(self.keys.announce, {"session_id": sid}, maxlen=10_000,
                          approximate=True)
            await pipe.execute()
        except CONNECTION_ERRORS as exc:
            self.log.emit("WARNING", NO_SESSION, "lease_release_failed",
                          f"🔓 could not hand back {len(sids)} session(s): {error_text(exc)} "
                          f"(their leases expire)",
                          {"error": error_text(exc), "sessions": len(sids)})
        for sid in sids:
            self.stats["released"] += 1
            to = holders.get(sid)
            self.log.emit("INFO", sid, "lease_released",
                          f"🔓 {self.worker_id} gave up {sid} ({reason})"
                          + (f", handed to {to}" if to else ""),
                          {"worker_id": self.worker_id, "reason": reason, "to": to})
