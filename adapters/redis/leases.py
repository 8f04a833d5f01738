"""Session ownership: one lease key per session, `SET voice:lease:{sid} WORKER NX PX ttl`.

- acquire: SET NX PX (or refresh it when the key already names this worker,
  e.g. after this worker's own restart under the same id);
- renew: PEXPIRE only while the key still names this worker (Lua, atomic);
- release: DEL only while the key still names this worker (Lua, atomic);
- transfer: hand the lease straight to another live worker (Lua, atomic), so
  that during a hand-off (rebalancing, a graceful stop) the key always names
  exactly one worker; the receiver adopts sessions whose lease names it.

A lease is trusted locally only for `safety` × ttl after the moment its last
successful acquire/renew was *sent*: a worker that cannot reach Redis stops
its sessions before anybody else can take them (self-fencing), and the fenced
snapshot save (snapshots.py) covers whatever still slips through.

The workers set (`voice:workers`, a ZSET: worker id → its last heartbeat, in
Redis server time so that machines' clocks do not matter) is how each worker
knows how many peers share the sessions (fair share) and which of them are
fresh enough to be handed a session.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from adapters.redis.connection import Client
from adapters.redis.keys import Keys
from adapters.redis.pipeline import LuaScript

ACQUIRE = LuaScript("""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
""")

RENEW = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""")

RELEASE = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")

TRANSFER = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
""")

HEARTBEAT = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
""")

Call = tuple[LuaScript, Sequence[str], Sequence[Any]]


async def run_scripts(redis: Client, calls: Sequence[Call]) -> list[Any]:
    """Run many scripts in one pipeline round trip; EVAL those Redis forgot."""
    if not calls:
        return []
    pipe = redis.pipeline(transaction=False)
    for script, keys, argv in calls:
        pipe.execute_command(*script.evalsha(keys, argv))
    results: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        pipe = redis.pipeline(transaction=False)
        for i in missing:
            script, keys, argv = calls[i]
            pipe.execute_command(*script.eval(keys, argv))
        for i, r in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
            results[i] = r
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


class LeaseManager:
    def __init__(self, redis: Client, owner: str, lease_ms: int, keys: Keys | None = None, *,
                 safety: float = 0.8, handoff_ms: int | None = None) -> None:
        if lease_ms < 100:
            raise ValueError("lease_ms must be at least 100")
        self.redis = redis
        self.owner = owner
        self.lease_ms = int(lease_ms)
        self.keys = keys or Keys()
        self.safety = safety
        # A handed-over lease lives only this long until the receiver adopts it
        # (and renews it to `lease_ms`): a receiver that died meanwhile costs little.
        self.handoff_ms = min(self.lease_ms, handoff_ms or 500)
        # sid → monotonic time of the confirming request, oldest confirmation first
        # (re-inserted on each one), so the renewal and expiry checks of a worker
        # with thousands of leases look at the few that are due, not at all of them.
        self.confirmed: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []   # heap of (confirmed at, sid)

    def valid(self, session_id: str, now: float | None = None) -> bool:
        """Is the lease still safely ours, as far as this worker can know?"""
        at = self.confirmed.get(session_id)
        now = time.monotonic() if now is None else now
        return at is not None and (now - at) * 1000.0 < self.lease_ms * self.safety

    def _confirm(self, session_ids: Iterable[str], sent: float) -> None:
        for sid in session_ids:
            self.confirmed.pop(sid, None)
            self.confirmed[sid] = sent
            heapq.heappush(self._expiries, (sent, sid))

    def expired(self, now: float | None = None) -> list[str]:
        """Sessions whose lease can no longer be vouched for (`valid` is False),
        each reported once; O(expired) rather than O(held): the heap holds each
        confirmation, and one that a later renewal superseded is skipped."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.lease_ms * self.safety / 1000.0
        out = []
        heap = self._expiries
        while heap and heap[0][0] <= cutoff:
            at, sid = heapq.heappop(heap)
            if self.confirmed.get(sid) == at:
                out.append(sid)
        return out

    def oldest(self, share: int, due_before: float,
               include: Callable[[str], bool] = lambda sid: True) -> list[str]:
        """Leases to renew now (of those `include` accepts): every one confirmed
        at or before `due_before`, and at least the `share` oldest (renewals
        spread over the period)."""
        out: list[str] = []
        for sid, at in self.confirmed.items():
            if at > due_before and len(out) >= share:
                break
            if include(sid):
                out.append(sid)
        return out

    async def acquire(self, session_ids: Sequence[str]) -> list[str]:
        sent = time.monotonic()
        results = await run_scripts(self.redis, [
            (ACQUIRE, [self.keys.lease(s)], [self.owner, self.lease_ms]) for s in session_ids])
        won = [s for s, r in zip(session_ids, results, strict=True) if int(r) == 1]
        self._confirm(won, sent)
        return won

    async def renew(self, session_ids: Sequence[str]) -> list[str]:
        """Renew; return the sessions whose lease is no longer ours."""
        sent = time.monotonic()
        results = await run_scripts(self.redis, [
            (RENEW, [self.keys.lease(s)], [self.owner, self.lease_ms]) for s in session_ids])
        lost = [s for s, r in zip(session_ids, results, strict=True) if int(r) != 1]
        for s in lost:
            self.confirmed.pop(s, None)
        self._confirm((s for s, r in zip(session_ids, results, strict=True) if int(r) == 1),
                      sent)
        return lost

    async def release(self, session_ids: Sequence[str]) -> None:
        for s in session_ids:
            self.confirmed.pop(s, None)
        await run_scripts(self.redis, [(RELEASE, [self.keys.lease(s)], [self.owner])
                                       for s in session_ids])

    async def transfer(self, session_id: str, to: str) -> bool:
        """Give the lease to worker `to` (only while it is ours); True when done."""
        self.confirmed.pop(session_id, None)
        [done] = await run_scripts(self.redis, [
            (TRANSFER, [self.keys.lease(session_id)], [self.owner, to, self.handoff_ms])])
        return int(done) == 1

    async def hand_over(self, plan: dict[str, str | None]) -> dict[str, str | None]:
        """Transfer each session's lease to its planned worker, or release it
        (None, or when the transfer is refused); one round trip for all.
        Returns who holds each now by our doing (None: released or not ours)."""
        for sid in plan:
            self.confirmed.pop(sid, None)
        moves = [(sid, to) for sid, to in plan.items() if to]
        results = await run_scripts(self.redis, [
            (TRANSFER, [self.keys.lease(sid)], [self.owner, to, self.handoff_ms])
            for sid, to in moves])
        done: dict[str, str | None] = dict.fromkeys(plan)
        for (sid, to), ok in zip(moves, results, strict=True):
            if int(ok) == 1:
                done[sid] = to
        rest = [sid for sid, to in done.items() if to is None]
        await run_scripts(self.redis, [(RELEASE, [self.keys.lease(s)], [self.owner])
                                       for s in rest])
        return done

    def forget(self, session_id: str) -> None:
        self.confirmed.pop(session_id, None)

    async def owner_of(self, session_id: str) -> str | None:
        value = await self.redis.get(self.keys.lease(session_id))
        return None if value is None else str(value)

    # ------------------------------------------------------------- workers set
    async def heartbeat(self, ttl_ms: int | None = None) -> tuple[int, dict[str, int]]:
        """Say this worker is alive; return Redis's time (ms) and every live
        worker (heard from within `ttl_ms`) with the time it was last heard from."""
        [result] = await run_scripts(self.redis, [
            (HEARTBEAT, [self.keys.workers], [self.owner, ttl_ms or self.lease_ms])])
        now, flat = int(result[0]), result[1]
        if isinstance(flat, dict):          # RESP3 may give a map
            pairs = list(flat.items())
        else:
            pairs = list(zip(flat[::2], flat[1::2], strict=True))
        seen = {str(w): int(float(score)) for w, score in pairs}
        seen[self.owner] = now
        return now, seen

    async def leave(self) -> None:
        await self.redis.zrem(self.keys.workers, self.owner)
