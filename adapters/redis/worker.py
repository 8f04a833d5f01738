"""`RedisWorker`: runs the sessions this process owns, fed by Redis Streams.

    async with RedisWorker(url, chart, registry, ports, log, worker_id="w1") as worker:
        await worker.stopped()          # until stop() (e.g. on SIGTERM)

One worker process has

- one SessionManager whose snapshot store is Redis (fenced by the lease);
- one ownership loop: heartbeat in the workers set, lease renewal, session
  discovery (announce stream every tick, full index rescan now and then),
  fair-share acquisition, hand-off of quiet sessions when over its share,
  supervision (a session that failed is resumed from its snapshot);
- one reader: blocking `XREADGROUP`s over its owned streams in lanes of at
  most 64 (or, past `max_lanes` lanes, one blocking read of the activity
  hints), handing entries to the session inboxes (never one connection per
  session; in a cluster, slot by slot);
- one auto-pipeline that sends the snapshot saves and XACKs of all sessions
  in shared round trips.

Exactly once, per entry id (ids compare numerically):

- a session's step saves its snapshot (with `last_event_id` = the entry id)
  and only then calls the entry's ack callback, which queues the XACK;
- on adoption the session is resumed from its snapshot; `floor` = its
  `last_event_id`: pending entries at or below it were applied already (the
  worker died between save and XACK) and are acknowledged without being
  applied again (`event_duplicate`); entries above it are applied;
- `delivered` = the highest entry id handed to the session in this
  incarnation: a redelivery at or below it (a PEL sweep after a reconnect, a
  recreated group) is never handed over twice.

A malformed entry is logged (`event_invalid`, with the session id), acked and
never retried. Losing a lease stops the session here without touching its
snapshot; the new owner resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from redis.exceptions import ResponseError

from adapters.redis.bus import DEFAULT_GROUP
from adapters.redis.connection import (
    CONNECTION_ERRORS,
    NO_SESSION,
    Client,
    command_on,
    connect,
    error_text,
    raw_reply,
    require_standalone,
)
from adapters.redis.keys import ZERO_ID, Keys, StreamId, format_id, parse_id
from adapters.redis.lanes import LanePlan
from adapters.redis.leases import LeaseManager
from adapters.redis.pipeline import AutoPipeline
from adapters.redis.reader import Lane, RawEntry, StreamReader, stream_pairs
from adapters.redis.snapshots import LeaseLost, RedisSnapshotStore
from adapters.redis.topology import Topology, is_redirect
from engine.catalog import count_versions
from engine.clock import Clock, RealClock
from engine.compiler import CompiledChart
from engine.events import EventProblem, parse_event, truncate_raw
from engine.logs import EventLog
from engine.manager import SessionManager
from engine.ports import Ports
from engine.registry import Registry
from engine.session import Ack, Session
from engine.snapshot import Snapshot

ADOPTING, LIVE, STOPPING, BROKEN = "adopting", "live", "stopping", "broken"


class WorkerHooks(Protocol):
    """Test hooks: awaited at `received` (an entry is read from Redis, not yet
    handed to its session) and `before_ack` (its step is applied and the
    snapshot saved, the XACK not yet queued)."""

    async def at(self, point: str, session_id: str, entry_id: str) -> None: ...


@dataclass(eq=False)
class _Owned:
    """One owned session in one incarnation (a resume makes a new one)."""

    sid: str
    key: str
    phase: str = ADOPTING
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


class _OwnerStore:
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


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"


class RedisWorker:
    def __init__(self, redis_url: str, chart: CompiledChart, registry: Registry, ports: Ports,
                 log: EventLog, worker_id: str | None = None, lease_ms: int = 5000, *,
                 clock: Clock | None = None, keys: Keys | None = None,
                 group: str = DEFAULT_GROUP, retries: int = 6, block_ms: int = 1000,
                 read_count: int = 100, tick_s: float = 0.05, rescan_s: float | None = None,
                 rebalance: bool = True, max_sessions: int | None = None,
                 drain_timeout_s: float = 2.0, ended_ttl_ms: int = 600_000,
                 adopt_concurrency: int = 16, block_all_max: int = 32,
                 max_lanes: int = 64, sweep_s: float = 0.25, freeze_gc: bool = False,
                 full_gc_every_s: float = 600.0, hooks: WorkerHooks | None = None,
                 ack_with_save: bool = True,
                 max_in_flight: int = 256, supervise_all_s: float = 10.0) -> None:
        self.url = redis_url
        self.chart = chart
        self.registry = registry
        self.ports = ports
        self.log = log
        self.worker_id = worker_id or default_worker_id()
        self.lease_ms = int(lease_ms)
        self.clock = clock or RealClock()
        self.keys = keys or Keys()
        self.group = group
        self.retries = retries
        self.block_ms = block_ms
        self.read_count = read_count
        self.tick_s = tick_s
        self.rescan_s = rescan_s if rescan_s is not None else min(2.0, self.lease_ms / 2000.0)
        self.renew_s = self.lease_ms / 3000.0
        self.slow_tick_s = max(tick_s, min(0.25, self.lease_ms / 10_000.0))
        self.stats_every_s = 1.0             # counters for front-ends, once a second
        self._next_stats = 0.0
        self._reports: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self.rebalance = rebalance
        self.max_sessions = max_sessions
        self.drain_timeout_s = drain_timeout_s
        self.ended_ttl_ms = ended_ttl_ms
        self.hooks = hooks
        # A session slower than its producers is handed at most this many entries
        # (+ one read's worth); the rest wait in Redis, not in this process's memory.
        self.max_in_flight = max(1, max_in_flight)
        self.supervise_all_s = supervise_all_s
        # A step's snapshot save also XACKs its entry (one script, one round trip).
        self.ack_with_save = ack_with_save
        # The reader: blocking reads ("lanes") of at most `block_all_max` streams
        # each, at most `max_lanes` of them; past that, activity hints (docs/redis.md).
        self.block_all_max = block_all_max
        self.max_lanes = max_lanes
        self.freeze_gc = freeze_gc
        self.full_gc_every_s = full_gc_every_s
        self._frozen_at_adopted = 0
        self._next_full_gc = time.monotonic() + full_gc_every_s
        self.sweep_s = sweep_s
        self._moved: set[str] = set()
        self._lanes: dict[int, tuple[Lane, asyncio.Task[None]]] = {}
        self._hinted: asyncio.Task[None] | None = None
        self._hinted_stop = False
        self._replan = False
        self._unswept = False           # a reader died with its connection: sweep first
        self._reader_reporter: str | None = None
        self.owned: dict[str, _Owned] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("delivered", "acked", "duplicates", "invalid", "claimed", "adopted", "resumed",
             "restarted", "lost", "released", "ended", "reads", "reconnects"), 0)
        self._by_key: dict[str, _Owned] = {}
        self._live_keys: list[str] = []
        self._read_keys: list[str] = []      # live and not throttled
        self._live_dirty = True
        self._live_changed = asyncio.Event()
        # Bounds on concurrent Redis work (redis-py's pool holds 100 connections).
        self._adopt_gate = asyncio.Semaphore(adopt_concurrency)
        self._io_gate = asyncio.Semaphore(adopt_concurrency)
        self._free_since: dict[str, float] = {}
        # Sessions the supervisor must look at: their task ended, or adopting
        # them failed (it would cost O(owned) to find them by looking at all).
        self._watch: set[str] = set()
        self._next_full_watch = 0.0
        self._announce_cursor: str | None = None
        self._known: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._alive = 1
        self._peers: list[str] = []
        self._next_rescan = 0.0
        self._next_renew = 0.0
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._tg: asyncio.TaskGroup | None = None
        self.redis: Client | None = None
        self.manager: SessionManager | None = None
        self.pipeline: AutoPipeline | None = None
        self.leases: LeaseManager | None = None
        self._store: _OwnerStore | None = None
        self._reader: StreamReader | None = None
        self._topology: Topology | None = None

    # ------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> RedisWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            for closing in (self._reader, self.pipeline, self.redis):
                if closing is not None:
                    with contextlib.suppress(Exception):
                        await closing.aclose()
            raise

    async def _start(self) -> None:
        self.redis = connect(self.url, self.log, retries=self.retries, what="worker",
                             socket_timeout=max(2.0, self.lease_ms / 1000.0),
                             socket_connect_timeout=2.0)
        # Raw replies for the few stream commands parsed here (stable across redis-py).
        for name in ("XREAD", "XREADGROUP", "XAUTOCLAIM"):
            self.redis.set_response_callback(name, cast(Any, raw_reply))
        await self.redis.ping()
        await require_standalone(self.redis, self.url)
        self._topology = await Topology.of(self.url, self.redis)
        self.pipeline = AutoPipeline(self._topology, self.log,
                                     batch_timeout_s=max(2.0, self.lease_ms / 1000.0))
        self._store = _OwnerStore(RedisSnapshotStore(
            self.redis, self.keys, owner=self.worker_id, pipeline=self.pipeline,
            save_timeout_s=self.lease_ms / 1000.0,
            ack_group=self.group if self.ack_with_save else None), self._fenced)
        self.leases = LeaseManager(self.redis, self.worker_id, self.lease_ms, self.keys)
        self.manager = SessionManager(self.chart, self.registry, self.ports, self.clock,
                                      self.log, self._store, on_session_end=self._watch.add)
        self._reader = StreamReader(self._topology, group=self.group,
                                    consumer=self.worker_id, count=self.read_count,
                                    socket_timeout_s=self.block_ms / 1000.0 + 10.0)
        last = await self.redis.xrevrange(self.keys.announce, count=1)
        self._announce_cursor = str(last[0][0]) if last else "0-0"
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        await self.manager.__aenter__()
        self._track(self._tg.create_task(self.pipeline.run(), name="redis:pipeline"))
        self._track(self._tg.create_task(self._read_loop(), name="redis:reader"))
        self._track(self._tg.create_task(self._own_loop(), name="redis:ownership"))
        self.log.emit("INFO", NO_SESSION, "worker_started",
                      f"🚀 worker {self.worker_id} started (lease {self.lease_ms} ms)",
                      {"worker_id": self.worker_id, "lease_ms": self.lease_ms,
                       "group": self.group, "chart": self.chart.name})

    def request_stop(self) -> None:
        self._stop_requested.set()

    def use_chart(self, chart: CompiledChart) -> None:
        """Hot reload: sessions that start here from now on run `chart`; running
        ones keep theirs, and one resumed from a snapshot runs the version the
        snapshot names while this process still has it (SessionManager)."""
        self.chart = chart
        if self.manager is not None:
            self.manager.use_chart(chart)

    async def stopped(self) -> None:
        """Wait until `request_stop()` (the CLI calls it on SIGTERM/SIGINT)."""
        await self._stop_requested.wait()

    async def stop(self) -> None:
        """Graceful: stop taking work, let sessions finish what they hold, keep
        their snapshots, release their leases, leave the workers set."""
        if self._tg is None or self._stopping:
            return
        self._stopping = True
        self._stop_requested.set()
        assert self.manager is not None and self.pipeline is not None
        released = 0
        try:
            with contextlib.suppress(*CONNECTION_ERRORS):
                assert self.leases is not None
                await self.leases.leave()      # first: peers stop handing us sessions
            owned = [o for o in self.owned.values() if o.phase != STOPPING]
            await self._stop_local(owned, drain=True)
            await self._hand_back([o.sid for o in owned], "shutdown")
            released = len(owned)
            await self.pipeline.drained(self.drain_timeout_s)
        finally:
            for task in list(self._tasks):  # our own loops and helpers
                task.cancel()
            with contextlib.suppress(BaseException):
                await self.manager.__aexit__(None, None, None)
            try:
                await self._tg.__aexit__(None, None, None)
            except BaseExceptionGroup as group:
                if not all(isinstance(e, asyncio.CancelledError) for e in group.exceptions):
                    raise
            finally:
                self._tg = None
                if self._reader is not None:
                    await self._reader.aclose()
                if self.pipeline is not None:
                    await self.pipeline.aclose()
                if self.redis is not None:
                    await self.redis.aclose()
                self.log.emit("INFO", NO_SESSION, "worker_stopped",
                              f"🛑 worker {self.worker_id} stopped, {released} session(s) "
                              f"handed back", {"worker_id": self.worker_id,
                                               "released": released, **self.stats})

    # --------------------------------------------------------------- helpers
    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        if self._tg is None:
            coro.close()
            return
        self._track(self._tg.create_task(self._guarded(coro, what), name=f"redis:{what}"))

    async def _guarded(self, coro: Awaitable[None], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.emit("ERROR", NO_SESSION, "worker_task_failed",
                          f"💥 {what} failed: {error_text(exc)}",
                          {"task": what, "error": error_text(exc)})

    def _mark_live_changed(self) -> None:
        """The set of streams to read changed: the reader replans (`_read_loop`)."""
        self._live_dirty = True
        self._live_changed.set()

    def _log(self, level: str, sid: str, event_type: str, message: str,
             data: dict[str, Any]) -> None:
        self.log.emit(level, sid, event_type, message, data)

    @property
    def read_mode(self) -> str:
        """How the reader waits: `lanes:N` (N blocking reads), `hints`, or `idle`."""
        if self._hinted is not None and not self._hinted.done():
            return "hints"
        return f"lanes:{len(self._lanes)}" if self._lanes else "idle"

    def owner_snapshot(self) -> dict[str, str]:
        """What this worker believes it owns right now (tests sample it)."""
        return {sid: o.phase for sid, o in self.owned.items()}

    # ------------------------------------------------------------ ownership
    async def _own_loop(self) -> None:
        failures = 0
        while True:
            try:
                now = time.monotonic()
                if not self._stopping:
                    await self._heartbeat()
                if now >= self._next_renew:
                    # O(owned) work, a few times a second rather than every tick,
                    # in slices with the event loop given back in between: a
                    # step that is due runs between them, not after all of them
                    # (with 1,000 sessions each slice is 0.1-0.3 ms of CPU).
                    self._next_renew = now + self.slow_tick_s
                    await self._renew()
                    await asyncio.sleep(0)
                    self._fence()
                    await asyncio.sleep(0)
                    self._supervise()
                    if now >= self._next_stats:
                        self._next_stats = now + self.stats_every_s
                        await asyncio.sleep(0)
                        await self._publish_stats()
                if not self._stopping:
                    await self._discover()
                if self.freeze_gc:
                    self._freeze_gc()
                if failures:
                    self._log("INFO", NO_SESSION, "redis_reconnected",
                              f"🔌 ownership loop reaches redis again after {failures} "
                              f"failure(s)", {"client": "ownership", "failures": failures})
                failures = 0
            except CONNECTION_ERRORS as exc:
                failures += 1
                self._log("WARNING", NO_SESSION, "redis_unavailable",
                          f"🔌 ownership loop: {error_text(exc)}",
                          {"client": "ownership", "error": error_text(exc),
                           "attempt": failures})
                self._fence()
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
                continue
            await asyncio.sleep(self.tick_s)

    async def _publish_stats(self) -> None:
        """Counters for front-ends' /metrics (workers serve no HTTP themselves)."""
        assert self.leases is not None and self.manager is not None
        versions = count_versions(s.chart for s in self.manager.sessions.values())
        at_ms = int(time.time() * 1000)
        body = json.dumps({**self.stats, "owned": len(self.owned),
                           "versions": [v.to_dict() for v in versions], "at_ms": at_ms})
        sessions = json.dumps({"at_ms": at_ms, "sessions": self._session_reports()})
        pipe = self.leases.redis.pipeline(transaction=False)
        pipe.hset(self.keys.worker_stats, self.worker_id, body)
        pipe.hset(self.keys.worker_sessions, self.worker_id, sessions)
        await pipe.execute()

    def _session_reports(self) -> dict[str, Any]:
        """What a front-end lists of each live session here (its `VoiceHost` reads
        it). A session's report is rebuilt only after it moved (epoch, turn)."""
        assert self.manager is not None
        reports: dict[str, Any] = {}
        cache = self._reports
        for sid, session in self.manager.sessions.items():
            if session.closed:
                continue
            key = (session.epoch, session.turn, id(session))
            cached = cache.get(sid)
            if cached is None or cached[0] != key:
                cached = (key, {"state": session.state,
                                "configuration": list(session.configuration),
                                "contract": dict(session.contract), "turn": session.turn,
                                "epoch": session.epoch, "chart": session.chart.name,
                                "version_hash": session.chart.version_hash,
                                "latency": session.latency.as_dict()})
                cache[sid] = cached
            reports[sid] = cached[1]
        for sid in [sid for sid in cache if sid not in reports]:
            del cache[sid]
        return reports

    def _freeze_gc(self) -> None:
        """DESIGN.md: collector pauses over many long-lived session objects make
        p99 spiky. What adoptions built (sessions, their machines) is moved out
        of the collector's sight once each burst of adoptions settles (freezing
        is O(1)). Cyclic garbage of sessions closed meanwhile would stay
        frozen, so every `full_gc_every_s` one full collection runs first."""
        now = time.monotonic()
        if now >= self._next_full_gc:
            self._next_full_gc = now + self.full_gc_every_s
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._frozen_at_adopted = self.stats["adopted"]
        elif self.stats["adopted"] != self._frozen_at_adopted \
                and not any(o.phase == ADOPTING for o in self.owned.values()):
            gc.freeze()
            self._frozen_at_adopted = self.stats["adopted"]

    async def _heartbeat(self) -> None:
        """Every tick: say we are alive, learn who else is (the fair-share divisor
        and the hand-off targets are never older than one tick)."""
        assert self.leases is not None
        now_ms, workers = await self.leases.heartbeat(self.lease_ms)
        if len(workers) != self._alive:
            self._next_rescan = 0.0   # the fair share moved: look at everything now
        self._alive = len(workers)
        # Hand-offs go only to peers heard from very recently (alive, not stopping).
        fresh_ms = max(250.0, 5000.0 * self.tick_s)
        self._peers = sorted(w for w, seen in workers.items()
                             if w != self.worker_id and now_ms - seen <= fresh_ms)

    async def _renew(self) -> None:
        """Renew every lease that is due, and at least a steady slice of the
        oldest ones each time: leases acquired together (a burst of adoptions)
        spread over the renewal period instead of all coming due on one tick
        (a thousand scripts at once is a pause every session feels). The lease
        manager keeps them oldest first, so this looks at the slice only."""
        assert self.leases is not None
        due_before = time.monotonic() - self.renew_s
        share = math.ceil(len(self.owned) * self.slow_tick_s / self.renew_s)
        owned = self.owned

        def renewable(sid: str) -> bool:
            o = owned.get(sid)
            return o is not None and o.phase != STOPPING

        held = self.leases.oldest(share, due_before, renewable)
        if not held:
            return
        for sid in await self.leases.renew(held):
            lost = self.owned.get(sid)
            if lost is not None:
                self._lose(lost, "renew_refused", "another worker holds it now")

    def _fence(self) -> None:
        """Stop sessions whose lease this worker can no longer vouch for (only the
        leases that expired since the last look are visited)."""
        assert self.leases is not None
        for sid in self.leases.expired():
            owned = self.owned.get(sid)
            if owned is not None:
                self._lose(owned, "not_renewed", "not renewed in time")

    def _fenced(self, sid: str, exc: LeaseLost) -> None:
        owned = self.owned.get(sid)
        if owned is not None:
            self._lose(owned, "fenced", f"a snapshot save was refused: {exc}")

    def _lose(self, owned: _Owned, reason: str, why: str) -> None:
        """The lease is gone (or can no longer be vouched for): stop the session
        here at once, keep its snapshot, leave its pending entries to the owner."""
        if owned.lost or owned.phase == STOPPING:
            return
        owned.lost = True
        self.stats["lost"] += 1
        self._log("WARNING", owned.sid, "lease_lost",
                  f"🔓 lease of {owned.sid} lost ({why}): stopping it here, snapshot kept",
                  {"worker_id": self.worker_id, "reason": reason})
        self._spawn(self._drop(owned, reason, release=False), f"drop:{owned.sid}")

    def _supervise(self) -> None:
        """A session whose task ended on its own (a failed save, an ack that
        raised) is resumed from its snapshot while the lease is ours; one whose
        adoption failed is adopted again. Only the sessions on the watch list
        are visited (the manager reports each ended session, a failed adoption
        adds itself), plus all of them every `supervise_all_s` as a backstop."""
        assert self.manager is not None
        now = time.monotonic()
        if now >= self._next_full_watch:
            self._next_full_watch = now + self.supervise_all_s
            self._watch.update(self.owned)
        for sid in list(self._watch):
            owned = self.owned.get(sid)
            if owned is None or owned.phase == STOPPING or owned.ending:
                self._watch.discard(sid)
            elif owned.phase == LIVE:
                session = self.manager.get(sid)
                if session is not None and not session.closed:
                    self._watch.discard(sid)
                elif now >= owned.retry_at:
                    self._watch.discard(sid)
                    self.stats["restarted"] += 1
                    fresh = _Owned(sid, owned.key, restarts=owned.restarts + 1)
                    fresh.retry_at = now + min(5.0, 0.2 * 2 ** fresh.restarts)
                    self._replace(owned, fresh)
                    self._log("WARNING", sid, "session_restarting",
                              f"♻️ session {sid} stopped unexpectedly; resuming it from its "
                              f"snapshot", {"restarts": fresh.restarts})
                    self._spawn(self._adopt(fresh), f"adopt:{sid}")
            elif owned.phase == BROKEN and now >= owned.retry_at:
                self._watch.discard(sid)
                fresh = _Owned(sid, owned.key, restarts=owned.restarts + 1)
                self._replace(owned, fresh)
                self._spawn(self._adopt(fresh), f"adopt:{sid}")
            # ADOPTING, or BROKEN before its retry time: looked at again next time

    def _replace(self, old: _Owned, new: _Owned) -> None:
        self.owned[new.sid] = new
        if self._by_key.get(old.key) is old:
            self._by_key[new.key] = new
        self._mark_live_changed()

    async def _discover(self) -> None:
        assert self.redis is not None and self.leases is not None
        now = time.monotonic()
        candidates: set[str] = set()
        announced: set[str] = set()
        reply = await command_on(self.redis, self.keys.announce, "XREAD", "COUNT", 1000,
                                 "STREAMS", self.keys.announce, self._announce_cursor or "0-0")
        for _stream, entries in stream_pairs(reply):
            for entry_id, fields in entries:
                self._announce_cursor = entry_id
                values = dict(zip(fields[::2], fields[1::2], strict=False)) if fields else {}
                sid = values.get("session_id")
                if sid:
                    announced.add(sid)
                    self._known.add(sid)
        candidates |= announced
        if now >= self._next_rescan:
            members = {str(m) for m in await self.redis.smembers(self.keys.sessions)}
            self._known = members
            candidates |= members
            self._next_rescan = now + self.rescan_s
        candidates -= self.owned.keys()
        holding = self._holding()           # O(owned): once per tick
        target = self._target(holding)
        if self.rebalance:
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
            grace = max(self.rescan_s, 2 * self.tick_s) * 2
            probe = [sid for sid in rest if sid in announced][:1000]
            probe += [sid for sid in rest if sid not in announced][:200]
            pipe = self.redis.pipeline(transaction=False)
            for sid in probe:
                pipe.get(self.keys.lease(sid))
            for sid, holder in zip(probe, await pipe.execute(), strict=True):
                if holder == self.worker_id:
                    wanted.append(sid)
                elif holder is not None:
                    self._free_since.pop(sid, None)
                elif now - self._free_since.setdefault(sid, now) >= grace:
                    wanted.append(sid)
        if self.max_sessions is not None:
            wanted = wanted[:max(0, self.max_sessions - self._holding())]
        if not wanted:
            return
        won = await self.leases.acquire(wanted)
        if room > len(won):
            # Below our share and sessions still held elsewhere: a peer that just
            # died holds leases about to expire. Look again soon, not a scan later.
            self._next_rescan = min(self._next_rescan, now + 4 * self.tick_s)
        for sid in won:
            self._free_since.pop(sid, None)
            owned = _Owned(sid, self.keys.stream(sid))
            self.owned[sid] = owned
            self._by_key[owned.key] = owned
            self._log("INFO", sid, "lease_acquired", f"🔒 {self.worker_id} owns {sid}",
                      {"worker_id": self.worker_id, "lease_ms": self.lease_ms})
            self._spawn(self._adopt(owned), f"adopt:{sid}")

    def _holding(self) -> int:
        return sum(1 for o in self.owned.values() if o.phase != STOPPING)

    def _target(self, holding: int) -> int:
        total = max(len(self._known), holding)
        target = math.ceil(total / max(1, self._alive)) if total else 0
        if self.max_sessions is not None:
            target = min(target, self.max_sessions)
        return target

    def _hand_off_surplus(self, target: int, holding: int) -> None:
        surplus = holding - (target + 1)
        if not self._peers or surplus <= 0:    # nobody fresh to take them: keep them
            return
        assert self.manager is not None
        quiet = []
        settled = time.monotonic() - 2 * self.rescan_s   # just adopted: not bounced back
        for sid, owned in self.owned.items():
            session = self.manager.get(sid)
            if owned.phase == LIVE and not owned.ending and owned.in_flight == 0 \
                    and owned.adopted_at < settled \
                    and session is not None and session.live_tasks() == 0:
                quiet.append(owned)
        quiet.sort(key=lambda o: o.last_activity)
        for owned in quiet[:max(1, surplus // 4)]:
            self._log("INFO", owned.sid, "session_handoff",
                      f"🤝 {owned.sid} handed off: {holding} owned, share {target}",
                      {"worker_id": self.worker_id, "owned": holding, "share": target})
            self._spawn(self._drop(owned, "rebalance", release=True), f"drop:{owned.sid}")

    # ------------------------------------------------------------- adoption
    async def _ensure_group(self, key: str) -> bool:
        """XGROUP CREATE … 0 MKSTREAM; True when it had to be created."""
        assert self.redis is not None
        try:
            await self.redis.xgroup_create(key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def _adopt(self, owned: _Owned) -> None:
        assert self.manager is not None and self.redis is not None
        sid, key = owned.sid, owned.key
        async with self._adopt_gate:
            if self.owned.get(sid) is not owned:
                return
            try:
                await self._ensure_group(key)
                session = await self.manager.open(sid, resume=True)
                owned.floor = owned.delivered = parse_id(session.last_event_id)
                claimed = await self._claim(key)
                pending = await self._read_own_pending(key)
            except CONNECTION_ERRORS as exc:
                self._log("WARNING", sid, "session_adopt_failed",
                          f"🔌 cannot adopt {sid} now: {error_text(exc)}; retrying",
                          {"error": error_text(exc), "retry": True})
                await self._close_local(sid)
                # LIVE without a session: the supervisor adopts it again (with backoff).
                owned.phase = LIVE
                owned.retry_at = max(owned.retry_at, time.monotonic() + 0.2)
                self._watch.add(sid)
                return
            except LeaseLost as exc:
                self._lose(owned, "fenced", f"while adopting it: {exc}")
                return
            except Exception as exc:
                self._log("ERROR", sid, "session_adopt_failed",
                          f"💥 cannot adopt {sid}: {error_text(exc)}",
                          {"error": error_text(exc), "retry": True})
                await self._close_local(sid)
                owned.phase, owned.retry_at = BROKEN, time.monotonic() + 30.0
                self._watch.add(sid)
                return
        if self.owned.get(sid) is not owned or owned.phase != ADOPTING:
            await self._close_local(sid)
            return
        self.stats["adopted"] += 1
        if session.last_event_id is not None or owned.restarts:
            self.stats["resumed"] += 1
        if claimed:
            self.stats["claimed"] += claimed
            self._log("INFO", sid, "entries_claimed",
                      f"📥 {claimed} pending entr{'y' if claimed == 1 else 'ies'} of {sid} "
                      f"claimed from earlier owners", {"count": claimed, "stream": key})
        self._log("INFO", sid, "session_adopted",
                  f"📦 {self.worker_id} runs {sid} from turn {session.turn} "
                  f"(last entry {session.last_event_id}), {len(pending)} pending",
                  {"worker_id": self.worker_id, "turn": session.turn,
                   "last_event_id": session.last_event_id, "state": session.state,
                   "claimed": claimed, "pending": len(pending)})
        owned.phase = LIVE
        self._moved.add(key)          # hinted mode: read what arrived before it went live
        backlog = sorted(pending + owned.buffer, key=lambda e: parse_id(e[0]))
        owned.buffer = []
        self._dispatch(owned, backlog)
        self._mark_live_changed()

    async def _claim(self, key: str) -> int:
        """XAUTOCLAIM every pending entry of the stream to this worker: the
        lease says every other consumer of it is gone."""
        assert self.redis is not None
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
        assert self.redis is not None
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

    # --------------------------------------------------------------- reader
    def _refresh_live(self) -> None:
        if self._live_dirty:
            self._live_dirty = False
            self._live_changed.clear()
            live = [o for o in self._by_key.values() if o.phase == LIVE]
            self._live_keys = [o.key for o in live]
            self._read_keys = [o.key for o in live if not o.throttled]

    async def _read_loop(self) -> None:
        """The one reader of this process; this task plans, its lanes read.

        A lane is one blocking XREADGROUP over at most `block_all_max` streams
        (one slot's, in a cluster) on its own connection: a new entry wakes it
        directly, and a wake-up costs Redis O(block_all_max), not O(streams)
        (a blocking read over 1,000 streams costs 0.6 ms per wake-up,
        measured). When more than `max_lanes` lanes would be needed (many
        streams, or streams in many cluster slots), one loop blocks on the
        activity hints instead and reads the streams that moved, plus every
        stream each `sweep_s` (`_hinted_loop`). A lane or the hinted loop is
        stopped by asking it (and ending its blocking read), never by
        cancelling a read whose reply could carry entries."""
        assert self._reader is not None and self._topology is not None
        plan = LanePlan(self._topology, self.block_all_max, self.max_lanes)
        while True:
            self._refresh_live()
            if self._replan:            # the cluster's slot map changed
                self._replan = False
                plan.reset()
                await self._stop_lanes(list(self._lanes), wait=True)
            fit = plan.plan(self._read_keys)
            if fit is None:
                await self._stop_lanes(list(self._lanes), wait=True)
                if self._hinted is None or self._hinted.done():
                    self._hinted_stop = False
                    self._hinted = self._start_reader(self._hinted_loop(self._take_unswept()),
                                                      "redis:reader:hints")
                else:
                    self._unblock_hints()
            else:
                self._moved.clear()         # notes for the hinted loop only
                if self._hinted is not None:
                    self._hinted_stop = True
                    self._unblock_hints()
                    await asyncio.wait([self._hinted])
                    self._hinted = None
                changed, gone = fit
                await self._stop_lanes(list(gone), wait=False)
                sweep = self._take_unswept()
                for lane_id in changed:
                    spec = plan.lanes[lane_id]
                    running = self._lanes.get(lane_id)
                    if running is not None:
                        running[0].keys = list(spec.keys)
                        self._unblock(running[0])
                        continue
                    lane = self._reader.lane(spec.slot, spec.node, on_stale=self._unblock)
                    lane.keys = list(spec.keys)
                    self._lanes[lane_id] = (lane, self._start_reader(
                        self._lane_loop(lane, lane_id, sweep), f"redis:reader:lane{lane_id}"))
            await self._live_changed.wait()

    def _start_reader(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._track(task)
        return task

    def _take_unswept(self) -> bool:
        unswept, self._unswept = self._unswept, False
        return unswept

    def _unblock(self, lane: Lane) -> None:
        if lane.blocked and lane.wire.client_id is not None and self.pipeline is not None:
            self.pipeline.send("CLIENT", "UNBLOCK", lane.wire.client_id, node=lane.node)

    def _unblock_hints(self) -> None:
        reader = self._reader
        if reader is not None and reader.hints_blocked and reader.hints is not None \
                and reader.hints.client_id is not None and self.pipeline is not None:
            self.pipeline.send("CLIENT", "UNBLOCK", reader.hints.client_id,
                               node=reader.hints.node)

    async def _stop_lanes(self, lane_ids: list[int], *, wait: bool) -> None:
        """Ask lanes to stop (no streams left, blocking read ended); `wait` for them
        when their streams move to other readers (no reply may be left unread)."""
        stopping = []
        for lane_id in lane_ids:
            running = self._lanes.pop(lane_id, None)
            if running is None:
                continue
            lane, task = running
            lane.keys = []
            self._unblock(lane)
            stopping.append(task)
        if wait and stopping:
            await asyncio.wait(stopping)

    async def _lane_loop(self, lane: Lane, lane_id: int, sweep: bool) -> None:
        """Read one lane's streams until it has none left. After a lost connection
        it first re-reads its streams' pending entries (a reply lost with the
        connection left entries delivered to us that we never received)."""
        name = f"lane {lane_id}" + (f" ({lane.node}, slot {lane.slot})" if lane.node != "-"
                                    else "")
        failures = 0
        try:
            while lane.keys:
                keys = lane.keys
                try:
                    if sweep:
                        await self._sweep_pending(list(keys))
                        sweep = False
                    reply = await lane.read(self.block_ms)
                except CONNECTION_ERRORS as exc:
                    failures += 1
                    sweep = True
                    with contextlib.suppress(Exception):
                        await lane.wire.disconnect()
                    if not lane.keys:
                        self._unswept = True
                        return
                    await self._reader_failed(name, exc, failures)
                    continue
                except ResponseError as exc:
                    sweep = await self._read_refused(exc, list(keys))
                    continue
                if failures:
                    self._reader_recovered(name, failures)
                    failures = 0
                if reply:
                    self.stats["reads"] += 1
                    await self._deliver(reply)
                    if self._live_dirty:
                        # What to read changed while delivering (a session throttled):
                        # the planner updates `lane.keys` before this lane reads again.
                        await asyncio.sleep(0)
        finally:
            if self._reader_reporter == name:
                self._reader_reporter = None
            with contextlib.suppress(Exception):
                await lane.wire.aclose()

    async def _hinted_loop(self, sweep: bool) -> None:
        """Many streams: block on the activity hints (the next hint read is sent
        before the streams that moved are read, so it already waits in Redis),
        read just the streams that moved, and every stream each `sweep_s`."""
        assert self._reader is not None
        reader = self._reader
        failures = 0
        cursor: str | None = None
        hint_sent = False
        next_sweep = 0.0
        try:
            while not self._hinted_stop:
                keys = self._read_keys
                try:
                    if sweep:
                        await self._sweep_pending(list(self._live_keys))
                        sweep = False
                    if cursor is None:
                        # Hints from here on, and one read of every stream for
                        # whatever came before.
                        cursor = await reader.last_id(self.keys.activity)
                        next_sweep = 0.0
                    now = time.monotonic()
                    if now >= next_sweep:
                        self._moved.update(keys)
                        next_sweep = now + self.sweep_s
                    if not hint_sent:
                        block = max(1, int(min(self.block_ms, (next_sweep - now) * 1000)))
                        await reader.send_hints(self.keys.activity, cursor, block)
                        hint_sent = True
                    if self._moved:
                        reply = await self._read_moved(keys)
                        if reply:
                            self.stats["reads"] += 1
                            await self._deliver(reply)
                        continue
                    hints = await reader.receive_hints()
                    hint_sent = False
                    cursor = self._note_hints(hints, cursor)
                except CONNECTION_ERRORS as exc:
                    failures += 1
                    sweep, cursor, hint_sent = True, None, False
                    with contextlib.suppress(Exception):
                        await reader.disconnect()
                    if self._hinted_stop:
                        self._unswept = True
                        return
                    await self._reader_failed("hints", exc, failures)
                    continue
                except ResponseError as exc:
                    if hint_sent:        # its reply may still come: start that wire clean
                        with contextlib.suppress(Exception):
                            await reader.disconnect()
                        hint_sent, cursor = False, None
                    sweep = await self._read_refused(exc, list(keys))
                    continue
                if failures:
                    self._reader_recovered("hints", failures)
                    failures = 0
        finally:
            if self._reader_reporter == "hints":
                self._reader_reporter = None
            if hint_sent and reader.hints is not None:   # never read a stale reply later
                with contextlib.suppress(Exception):
                    await reader.hints.disconnect()

    async def _read_moved(self, keys: list[str]) -> list[Any]:
        assert self._reader is not None
        live = set(keys)
        moved = [k for k in self._moved if k in live]
        self._moved.clear()
        reply = await self._reader.read_now(moved)
        for key, entries in reply:
            if len(entries) >= self._reader.count:
                self._moved.add(key)      # more where these came from
        return reply

    def _note_hints(self, hints: list[Any], cursor: str) -> str:
        for _key, entries in hints:
            for entry_id, fields in entries:
                cursor = entry_id
                if fields:
                    values = dict(zip(fields[::2], fields[1::2], strict=False))
                    sid = values.get("s")
                    if sid is not None:
                        owned = self.owned.get(sid)
                        if owned is not None and owned.phase == LIVE:
                            self._moved.add(owned.key)
        return cursor

    async def _read_refused(self, exc: ResponseError, keys: list[str]) -> bool:
        """A read's error reply: NOGROUP (the group or stream was deleted) recreates
        the groups; MOVED and friends (the cluster moved a slot) re-read the slot
        map and replan the lanes; UNBLOCKED (a stream vanished under a blocking
        read: deleted, or migrated to another node) is whichever of the two it
        is. True: sweep the pending entries before reading."""
        assert self._topology is not None
        text = str(exc)
        vanished = text.startswith("UNBLOCKED")
        if "NOGROUP" in text or (vanished and not self._topology.clustered):
            await self._recreate_groups(keys)
            return True
        if is_redirect(exc) or vanished:
            self._log("INFO", NO_SESSION, "redis_rerouted",
                      f"🧭 {error_text(exc)}: re-reading the cluster's slots",
                      {"client": "reader", "error": error_text(exc)})
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._topology.refresh()
            self._replan = True
            self._mark_live_changed()
            await asyncio.sleep(0.05)
            return True
        raise exc

    async def _reader_failed(self, name: str, exc: Exception, failures: int) -> None:
        """Back off after a lost connection; the first reader to notice says so
        (every lane notices an outage at once: one line, not one per lane)."""
        self.stats["reconnects"] += 1
        delay = min(2.0, 0.01 * 2 ** min(failures, 8))
        if self._reader_reporter in (None, name):
            self._reader_reporter = name
            self._log("WARNING", NO_SESSION, "redis_unavailable",
                      f"🔌 stream reader ({name}): {error_text(exc)}; retry in {delay:.2f}s",
                      {"client": "reader", "reader": name, "error": error_text(exc),
                       "attempt": failures, "retry_in_s": delay})
        await asyncio.sleep(delay)

    def _reader_recovered(self, name: str, failures: int) -> None:
        if self._reader_reporter == name:
            self._reader_reporter = None
            self._log("INFO", NO_SESSION, "redis_reconnected",
                      f"🔌 stream reader reconnected after {failures} failure(s)",
                      {"client": "reader", "reader": name, "failures": failures})

    async def _deliver(self, reply: list[Any]) -> None:
        for key, entries in reply:
            owned = self._by_key.get(key)
            if owned is None or owned.phase == STOPPING:
                continue     # not ours any more: stays pending for the next owner
            if self.hooks is not None:
                for entry_id, _fields in entries:
                    await self.hooks.at("received", owned.sid, entry_id)
            if owned.phase == ADOPTING:
                owned.buffer.extend((e[0], e[1]) for e in entries)
            elif owned.phase == LIVE:
                self._dispatch(owned, entries)

    async def _sweep_pending(self, keys: list[str]) -> None:
        """Re-read our own pending entries of `keys` (after a lost connection)."""
        assert self._reader is not None
        after = dict.fromkeys(keys, "0")
        todo = list(keys)
        while todo:
            chunk = todo[:500]
            reply = await self._reader.read_pending(chunk, after)
            more = []
            for key, entries in reply:
                if entries:
                    after[key] = entries[-1][0]
                    if len(entries) >= self._reader.count:
                        more.append(key)
            if reply:
                await self._deliver(reply)
            todo = more + todo[500:]

    async def _recreate_groups(self, keys: list[str]) -> None:
        created = 0
        for key in keys:
            if await self._ensure_group(key):
                created += 1
                owned = self._by_key.get(key)
                self._log("WARNING", owned.sid if owned else NO_SESSION, "group_recreated",
                          f"🧩 consumer group {self.group} was missing on {key}: recreated",
                          {"stream": key, "group": self.group})
        if not created:
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------- dispatch
    def _dispatch(self, owned: _Owned, entries: Iterable[Any]) -> None:
        assert self.manager is not None and self.pipeline is not None
        sid = owned.sid
        session = self.manager.get(sid)
        for entry in entries:
            entry_id, fields = entry[0], entry[1]
            eid = parse_id(entry_id)
            if eid <= owned.floor:
                self.stats["duplicates"] += 1
                self.pipeline.ack(owned.key, self.group, entry_id)
                self._log("INFO", sid, "event_duplicate",
                          f"♊ entry {entry_id} was applied before: acknowledged, not applied",
                          {"entry_id": entry_id, "last_event_id": format_id(owned.floor),
                           "applied": True})
                continue
            if eid <= owned.delivered:
                self.stats["duplicates"] += 1
                self._log("DEBUG", sid, "event_duplicate",
                          f"♊ entry {entry_id} is already in {sid}'s inbox",
                          {"entry_id": entry_id, "last_event_id": format_id(owned.floor),
                           "applied": False})
                continue
            if owned.ending:
                self._finish_entry(owned, entry_id, eid)
                self._log("WARNING", sid, "event_after_end",
                          f"⚠️ entry {entry_id} arrived after the session's end marker: "
                          f"dropped", {"entry_id": entry_id})
                continue
            if fields is None:
                # Deleted from the stream while pending (XDEL, or trimmed by hand).
                self._finish_entry(owned, entry_id, eid)
                self._log("WARNING", sid, "entry_missing",
                          f"🕳️ pending entry {entry_id} no longer exists in {owned.key}",
                          {"entry_id": entry_id})
                continue
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            if values.get("control") == "end":
                owned.delivered = eid
                owned.ending = True
                self._spawn(self._finish(owned, entry_id), f"end:{sid}")
                continue
            event = self._parse(owned, entry_id, values)
            if event is None:
                self._finish_entry(owned, entry_id, eid)
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
            self.stats["delivered"] += 1
            self.manager.route(event, ack=self._acker(owned, entry_id, eid), entry_id=entry_id)
        if owned.in_flight >= self.max_in_flight and not owned.throttled:
            owned.throttled = True
            self._log("INFO", sid, "session_throttled",
                      f"⏳ {sid} holds {owned.in_flight} events not yet applied: its stream is "
                      f"not read until it catches up", {"in_flight": owned.in_flight,
                                                         "max_in_flight": self.max_in_flight})
            self._mark_live_changed()

    def _finish_entry(self, owned: _Owned, entry_id: str, eid: StreamId) -> None:
        """Acknowledge an entry that will never reach the session."""
        assert self.pipeline is not None
        owned.delivered = max(owned.delivered, eid)
        if owned.in_flight == 0:
            owned.floor = max(owned.floor, eid)
        self.pipeline.ack(owned.key, self.group, entry_id)

    def _parse(self, owned: _Owned, entry_id: str, values: dict[str, str]) -> Any:
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
            self._log("WARNING", owned.sid, "event_invalid",
                      f"❌ invalid event: {problem.field}: {problem.error}",
                      {"error": f"{problem.field}: {problem.error}", "field": problem.field,
                       "raw": problem.raw if raw is not None else truncate_raw(values),
                       "entry_id": entry_id})
            return None
        return event

    def _acker(self, owned: _Owned, entry_id: str, eid: StreamId) -> Ack:
        async def ack() -> None:
            if self.hooks is not None:
                await self.hooks.at("before_ack", owned.sid, entry_id)
            owned.in_flight -= 1
            if owned.throttled and owned.in_flight <= self.max_in_flight // 2:
                owned.throttled = False       # read it again (hinted mode: at once)
                self._moved.add(owned.key)
                self._mark_live_changed()
            if eid > owned.floor:
                owned.floor = eid
            if owned.in_flight <= 0:
                owned.drained.set()
            self.stats["acked"] += 1
            assert self.pipeline is not None and self._store is not None
            if self._store.inner.acked.get(owned.sid) != entry_id:   # not done by its save
                self.pipeline.ack(owned.key, self.group, entry_id)
        return ack

    # ------------------------------------------------------ ending, dropping
    async def _wait_drained(self, owned: _Owned, timeout: float | None) -> bool:
        """Until the session acked everything handed to it (False: timed out, or
        this incarnation was replaced meanwhile)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while owned.in_flight > 0:
            if self.owned.get(owned.sid) is not owned and owned.phase != STOPPING:
                return False
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await owned.drained.wait()
        return True

    async def _finish(self, owned: _Owned, end_entry: str) -> None:
        """The end marker: every earlier event applied, then the session closes
        for good: snapshot deleted, stream and dedupe set left to expire."""
        assert self.manager is not None and self.redis is not None \
            and self._store is not None and self.leases is not None
        sid = owned.sid
        await self._wait_drained(owned, None)
        if self.owned.get(sid) is not owned:
            return
        async with self._io_gate:
            self._store.ending.add(sid)
            try:
                await self.manager.close(sid)
            finally:
                self._store.ending.discard(sid)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(owned.key, self.group, end_entry)
            pipe.pexpire(owned.key, self.ended_ttl_ms)
            pipe.delete(self.keys.dedupe(sid))
            pipe.srem(self.keys.sessions, sid)
            await pipe.execute()
            owned.phase = STOPPING
            self._forget(owned)
            await self.leases.release([sid])
        self.stats["ended"] += 1
        self._log("INFO", sid, "session_ended",
                  f"🏁 {sid} ended: snapshot deleted, stream expires in "
                  f"{self.ended_ttl_ms // 1000}s", {"entry_id": end_entry})

    def _forget(self, owned: _Owned) -> None:
        if self.owned.get(owned.sid) is owned:
            del self.owned[owned.sid]
            if self._store is not None:
                self._store.inner.forget(owned.sid)
        if self._by_key.get(owned.key) is owned:
            del self._by_key[owned.key]
        self._mark_live_changed()

    async def _close_local(self, sid: str) -> None:
        """Stop the session in this process; its snapshot stays in Redis."""
        assert self.manager is not None
        session: Session | None = self.manager.get(sid)
        if session is not None:
            session.close()
            await session.finished.wait()

    async def _drop(self, owned: _Owned, reason: str, *, release: bool) -> None:
        """Stop one session here; `release`: hand its lease to a peer (or free it),
        else (lost) just forget it."""
        if owned.phase == STOPPING:
            return
        await self._stop_local([owned], drain=release)
        assert self.leases is not None
        if release:
            async with self._io_gate:
                await self._hand_back([owned.sid], reason)
        else:
            self.leases.forget(owned.sid)

    async def _stop_local(self, owned: list[_Owned], *, drain: bool) -> None:
        """No more deliveries; optionally let each finish what it holds (bounded);
        close the sessions here. Their snapshots stay; unacked entries stay pending."""
        assert self.manager is not None
        live = [o for o in owned if o.phase == LIVE]
        for o in owned:
            o.phase = STOPPING
        self._mark_live_changed()
        if drain and live:
            await asyncio.gather(*(self._wait_drained(o, self.drain_timeout_s) for o in live))
        sessions = [s for o in owned if (s := self.manager.get(o.sid)) is not None]
        for session in sessions:
            session.close()
        if sessions:
            await asyncio.gather(*(s.finished.wait() for s in sessions))
        for o in owned:
            self._forget(o)

    async def _hand_back(self, sids: list[str], reason: str) -> None:
        """Give leases straight to live peers (round robin from a random start), or
        free them; announce the sessions so the peers adopt them at once."""
        if not sids:
            return
        assert self.leases is not None and self.redis is not None
        peers = list(self._peers)
        offset = random.randrange(len(peers)) if peers else 0
        plan: dict[str, str | None] = {
            sid: peers[(offset + i) % len(peers)] if peers else None
            for i, sid in enumerate(sids)}
        holders: dict[str, str | None] = dict.fromkeys(sids)
        try:
            if self.pipeline is not None:   # our XACKs first, then the leases
                await self.pipeline.drained(self.drain_timeout_s)
            holders = await self.leases.hand_over(plan)
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                pipe.xadd(self.keys.announce, {"session_id": sid}, maxlen=10_000,
                          approximate=True)
            await pipe.execute()
        except CONNECTION_ERRORS as exc:
            self._log("WARNING", NO_SESSION, "lease_release_failed",
                      f"🔓 could not hand back {len(sids)} session(s): {error_text(exc)} "
                      f"(their leases expire)", {"error": error_text(exc), "sessions": len(sids)})
        for sid in sids:
            self.stats["released"] += 1
            to = holders.get(sid)
            self._log("INFO", sid, "lease_released",
                      f"🔓 {self.worker_id} gave up {sid} ({reason})"
                      + (f", handed to {to}" if to else ""),
                      {"worker_id": self.worker_id, "reason": reason, "to": to})
