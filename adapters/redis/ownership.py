"""The ownership loop of a Redis worker, every `tick_s`:

- heartbeat in the workers set (and who else is alive: the fair-share divisor
  and the hand-off targets are never older than one tick);
- a few times a second (`slow_tick_s`): lease renewal (the due slice, oldest
  first), fencing (what lapsed), supervision (the watch list), and once a
  second the counters and session reports for front-ends;
- session discovery (the announce stream every tick, a full index rescan now
  and then), fair-share acquisition and hand-off of quiet sessions when over
  the share.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from adapters.redis.adoption import Adopter
from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, Client, command_on, error_text
from adapters.redis.keys import Keys
from adapters.redis.leases import LeaseManager
from adapters.redis.options import WorkerOptions
from adapters.redis.owned import OwnedSession, OwnedTable, Phase
from adapters.redis.reader import stream_pairs
from adapters.redis.release import Releaser
from engine.chart.catalog import count_versions
from engine.runtime.logs import EventLog
from engine.runtime.manager import SessionManager

Spawn = Callable[[Coroutine[Any, Any, None], str], None]
REPORT_LATENCY_EVERY_S = 5.0   # a reported latency summary is at most this much older
                               # than the session's last move


class OwnershipLoop:
    def __init__(self, redis: Client, leases: LeaseManager, manager: SessionManager,
                 table: OwnedTable, adopter: Adopter, releaser: Releaser, *,
                 options: WorkerOptions, keys: Keys, worker_id: str, log: EventLog,
                 stats: dict[str, int], spawn: Spawn, announce_cursor: str) -> None:
        self.redis = redis
        self.leases = leases
        self.manager = manager
        self.table = table
        self.adopter = adopter
        self.releaser = releaser
        self.options = options
        self.keys = keys
        self.worker_id = worker_id
        self.log = log
        self.stats = stats
        self.spawn = spawn
        self.stopping = False
        # Set when the worker shuts down: the loop ends at its next turn even if its
        # cancellation was lost (seen once under load: a worker kept looping on a
        # dead Redis for 20 minutes after SIGTERM, its task group never left).
        self.closed = False
        self.alive = 1
        self.peers: list[str] = []
        self.known: set[str] = set()
        self.announce_cursor = announce_cursor
        self.next_rescan = 0.0
        self.next_renew = 0.0
        self.next_stats = 0.0
        self.next_full_watch = 0.0
        self._free_since: dict[str, float] = {}
        self._frozen_at_adopted = 0
        self._next_full_gc = time.monotonic() + options.full_gc_every_s
        self._reports: dict[str, tuple[tuple[int, ...], str, float, Any, tuple[int, ...]]] = {}

    async def run(self) -> None:
        failures = 0
        options = self.options
        while not self.closed:
            try:
                now = time.monotonic()
                if not self.stopping:
                    await self._heartbeat()
                if now >= self.next_renew:
                    # O(owned) work, a few times a second rather than every tick,
                    # in slices with the event loop given back in between: a
                    # step that is due runs between them, not after all of them
                    # (with 1,000 sessions each slice is 0.1-0.3 ms of CPU).
                    self.next_renew = now + options.slow_tick_s
                    await self._renew()
                    await asyncio.sleep(0)
                    self.fence()
                    await asyncio.sleep(0)
                    self._supervise()
                    if now >= self.next_stats:
                        self.next_stats = now + options.stats_every_s
                        await asyncio.sleep(0)
                        await self.publish_stats()
                if not self.stopping:
                    await self._discover()
                if options.freeze_gc:
                    self._freeze_gc()
                if failures:
                    self.log.emit("INFO", NO_SESSION, "redis_reconnected",
                                  f"🔌 ownership loop reaches redis again after {failures} "
                                  f"failure(s)", {"client": "ownership", "failures": failures})
                failures = 0
            except CONNECTION_ERRORS as exc:
                failures += 1
                self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                              f"🔌 ownership loop: {error_text(exc)}",
                              {"client": "ownership", "error": error_text(exc),
                               "attempt": failures})
                self.fence()
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
                continue
            await asyncio.sleep(options.tick_s)

    # ------------------------------------------------------- for front-ends
    async def publish_stats(self) -> None:
        """Counters and the sessions run here, for front-ends (workers serve no HTTP)."""
        versions = count_versions(s.chart for s in self.manager.sessions.values())
        at_ms = int(time.time() * 1000)
        body = json.dumps({**self.stats, "owned": len(self.table.owned),
                           "versions": [v.to_dict() for v in versions], "at_ms": at_ms})
        sessions = f'{{"at_ms": {at_ms}, "sessions": {{{self.session_reports()}}}}}'
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.worker_stats, self.worker_id, body)
        pipe.hset(self.keys.worker_sessions, self.worker_id, sessions)
        await pipe.execute()

    def session_reports(self) -> str:
        """What a front-end lists of each live session here (its `VoiceHost` reads
        it), as the members of a JSON object. Cheap enough for once a second with
        many sessions: a session's member is rebuilt only after it moved (epoch,
        turn), and its latency summary (percentiles: sorting its windows) at most
        every `REPORT_LATENCY_EVERY_S`."""
        members: list[str] = []
        cache, fresh = self._reports, {}
        now = time.monotonic()
        for sid, session in self.manager.sessions.items():
            if session.closed:
                continue
            key = (session.epoch, session.turn, id(session))
            cached = cache.get(sid)
            # (key, member, latency computed at, latency, key it was computed at)
            stale = cached is not None and cached[4] != key \
                and now - cached[2] >= REPORT_LATENCY_EVERY_S
            if cached is None or cached[0] != key or stale:
                if cached is not None and cached[0][2] == key[2] and not stale \
                        and now - cached[2] < REPORT_LATENCY_EVERY_S:
                    latency, latency_at, latency_key = cached[3], cached[2], cached[4]
                else:
                    latency, latency_at, latency_key = session.latency.as_dict(), now, key
                member = json.dumps(sid) + ": " + json.dumps(
                    {"state": session.state, "configuration": list(session.configuration),
                     "contract": dict(session.contract), "turn": session.turn,
                     "epoch": session.epoch, "chart": session.chart.name,
                     "version_hash": session.chart.version_hash, "latency": latency})
                cached = (key, member, latency_at, latency, latency_key)
            fresh[sid] = cached
            members.append(cached[1])
        self._reports = fresh
        return ", ".join(members)

    def _freeze_gc(self) -> None:
        """DESIGN.md: collector pauses over many long-lived session objects make
        p99 spiky. What adoptions built (sessions, their machines) is moved out
        of the collector's sight once each burst of adoptions settles (freezing
        is O(1)). Cyclic garbage of sessions closed meanwhile would stay
        frozen, so every `full_gc_every_s` one full collection runs first."""
        now = time.monotonic()
        if now >= self._next_full_gc:
            self._next_full_gc = now + self.options.full_gc_every_s
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._frozen_at_adopted = self.stats["adopted"]
        elif self.stats["adopted"] != self._frozen_at_adopted \
                and not any(o.phase is Phase.ADOPTING for o in self.table.owned.values()):
            gc.freeze()
            self._frozen_at_adopted = self.stats["adopted"]

    # -------------------------------------------------------------- leases
    async def _heartbeat(self) -> None:
        """Every tick: say we are alive, learn who else is (the fair-share divisor
        and the hand-off targets are never older than one tick)."""
        now_ms, workers = await self.leases.heartbeat(self.options.lease_ms)
        if len(workers) != self.alive:
            self.next_rescan = 0.0   # the fair share moved: look at everything now
        self.alive = len(workers)
        # Hand-offs go only to peers heard from very recently (alive, not stopping).
        fresh_ms = max(250.0, 5000.0 * self.options.tick_s)
        self.peers = sorted(w for w, seen in workers.items()
                            if w != self.worker_id and now_ms - seen <= fresh_ms)

    async def _renew(self) -> None:
        """Renew every lease that is due, and at least a steady slice of the
        oldest ones each time: leases acquired together (a burst of adoptions)
        spread over the renewal period instead of all coming due on one tick
        (a thousand scripts at once is a pause every session feels). The lease
        manager keeps them oldest first, so this looks at the slice only."""
        options = self.options
        due_before = time.monotonic() - options.renew_s
        owned = self.table.owned
        share = math.ceil(len(owned) * options.slow_tick_s / options.renew_s)

        def renewable(sid: str) -> bool:
            o = owned.get(sid)
            return o is not None and o.phase is not Phase.STOPPING

        held = self.leases.oldest(share, due_before, renewable)
        if not held:
            return
        for sid in await self.leases.renew(held):
            lost = owned.get(sid)
            if lost is not None:
                self.releaser.lose(lost, "renew_refused", "another worker holds it now")

    def fence(self) -> None:
        """Stop sessions whose lease this worker can no longer vouch for (only the
        leases that expired since the last look are visited)."""
        for sid in self.leases.expired():
            owned = self.table.get(sid)
            if owned is not None:
                self.releaser.lose(owned, "not_renewed", "not renewed in time")

    def _supervise(self) -> None:
        """A session whose task ended on its own (a failed save, an ack that
        raised) is resumed from its snapshot while the lease is ours; one whose
        adoption failed is adopted again. Only the sessions on the watch list
        are visited (the manager reports each ended session, a failed adoption
        adds itself), plus all of them every `supervise_all_s` as a backstop."""
        now = time.monotonic()
        table, watch = self.table, self.table.watch
        if now >= self.next_full_watch:
            self.next_full_watch = now + self.options.supervise_all_s
            watch.update(table.owned)
        for sid in list(watch):
            owned = table.get(sid)
            if owned is None or owned.phase is Phase.STOPPING or owned.ending:
                watch.discard(sid)
            elif owned.phase is Phase.LIVE:
                session = self.manager.get(sid)
                if session is not None and not session.closed:
                    watch.discard(sid)
                elif now >= owned.retry_at:
                    watch.discard(sid)
                    self.stats["restarted"] += 1
                    fresh = OwnedSession(sid, owned.key, restarts=owned.restarts + 1)
                    fresh.retry_at = now + min(5.0, 0.2 * 2 ** fresh.restarts)
                    table.replace(owned, fresh)
                    self.log.emit("WARNING", sid, "session_restarting",
                                  f"♻️ session {sid} stopped unexpectedly; resuming it from its "
                                  f"snapshot", {"restarts": fresh.restarts})
                    self.spawn(self.adopter.adopt(fresh), f"adopt:{sid}")
            elif owned.phase is Phase.BROKEN and now >= owned.retry_at:
                watch.discard(sid)
                fresh = OwnedSession(sid, owned.key, restarts=owned.restarts + 1)
                table.replace(owned, fresh)
                self.spawn(self.adopter.adopt(fresh), f"adopt:{sid}")
            # ADOPTING, or BROKEN before its retry time: looked at again next time

    # ----------------------------------------------------------- discovery
    async def _discover(self) -> None:
        now = time.monotonic()
        keys, options, table = self.keys, self.options, self.table
        candidates: set[str] = set()
        announced: set[str] = set()
        reply = await command_on(self.redis, keys.announce, "XREAD", "COUNT", 1000,
                                 "STREAMS", keys.announce, self.announce_cursor or "0-0")
        for _stream, entries in stream_pairs(reply):
            for entry_id, fields in entries:
                self.announce_cursor = entry_id
                values = dict(zip(fields[::2], fields[1::2], strict=False)) if fields else {}
                sid = values.get("session_id")
                if sid:
                    announced.add(sid)
                    self.known.add(sid)
        candidates |= announced
        if now >= self.next_rescan:
            members = {str(m) for m in await self.redis.smembers(keys.sessions)}
            self.known = members
            candidates |= members
            self.next_rescan = now + options.rescan_period_s
        candidates -= table.owned.keys()
        holding = table.holding()           # O(owned): once per tick
        target = self._target(holding)
        if options.rebalance:
            self._hand_off_surplus(target, holding)
        if not candidates:
            return
        room = target - holding
        order = list(candidates)
        random.shuffle(order)
        wanted = order[:max(0, room)]
        rest = order[max(0, room):]
        if rest:
            # Over our share, but: a session a peer handed to us is ours to run;
            # a free one nobody took for a while (a peer that is gone, a share
            # computed from stale counts) is taken anyway.
            # Probed: what was just announced (hand-offs, new sessions), and a
            # random sample of the rest (orphans are found over a few scans
            # without GETting every session every time).
            grace = max(options.rescan_period_s, 2 * options.tick_s) * 2
            probe = [sid for sid in rest if sid in announced][:1000]
            probe += [sid for sid in rest if sid not in announced][:200]
            pipe = self.redis.pipeline(transaction=False)
            for sid in probe:
                pipe.get(keys.lease(sid))
            for sid, holder in zip(probe, await pipe.execute(), strict=True):
                if holder == self.worker_id:
                    wanted.append(sid)
                elif holder is not None:
                    self._free_since.pop(sid, None)
                elif now - self._free_since.setdefault(sid, now) >= grace:
                    wanted.append(sid)
        if options.max_sessions is not None:
            wanted = wanted[:max(0, options.max_sessions - table.holding())]
        if not wanted:
            return
        won = await self.leases.acquire(wanted)
        if room > len(won):
            # Below our share and sessions still held elsewhere: a peer that just
            # died holds leases about to expire. Look again soon, not a scan later.
            self.next_rescan = min(self.next_rescan, now + 4 * options.tick_s)
        for sid in won:
            self._free_since.pop(sid, None)
            owned = OwnedSession(sid, keys.stream(sid))
            table.add(owned)
            self.log.emit("INFO", sid, "lease_acquired", f"🔒 {self.worker_id} owns {sid}",
                          {"worker_id": self.worker_id, "lease_ms": options.lease_ms})
            self.spawn(self.adopter.adopt(owned), f"adopt:{sid}")

    def _target(self, holding: int) -> int:
        total = max(len(self.known), holding)
        target = math.ceil(total / max(1, self.alive)) if total else 0
        if self.options.max_sessions is not None:
            target = min(target, self.options.max_sessions)
        return target

    def _hand_off_surplus(self, target: int, holding: int) -> None:
        surplus = holding - (target + 1)
        if not self.peers or surplus <= 0:    # nobody fresh to take them: keep them
            return
        quiet = []
        settled = time.monotonic() - 2 * self.options.rescan_period_s  # just adopted: stays
        for sid, owned in self.table.owned.items():
            session = self.manager.get(sid)
            if owned.phase is Phase.LIVE and not owned.ending and owned.in_flight == 0 \
                    and owned.adopted_at < settled \
                    and session is not None and session.live_tasks() == 0:
                quiet.append(owned)
        quiet.sort(key=lambda o: o.last_activity)
        for owned in quiet[:max(1, surplus // 4)]:
            self.log.emit("INFO", owned.sid, "session_handoff",
                          f"🤝 {owned.sid} handed off: {holding} owned, share {target}",
                          {"worker_id": self.worker_id, "owned": holding, "share": target})
            self.spawn(self.releaser.drop(owned, "rebalance", release=True),
                       f"drop:{owned.sid}")
