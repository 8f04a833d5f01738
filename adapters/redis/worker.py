"""`RedisWorker`: runs the sessions this process owns, fed by Redis Streams.

    async with RedisWorker(url, chart, registry, ports, log, worker_id="w1") as worker:
        await worker.stopped()          # until stop() (e.g. on SIGTERM)

This module only composes; each job has its own collaborator (docs/redis.md):

| collaborator | module | job |
|---|---|---|
| `WorkerOptions` | options.py | every tuning knob, frozen |
| `OwnedTable` | owned.py | the owned sessions (`Phase`), the streams to read |
| `OwnershipLoop` | ownership.py | heartbeat, renewal, fencing, supervision, discovery, fair share |
| `Adopter` | adoption.py | resume from the snapshot, claim pending entries, hand the backlog over |
| `ReadLoop` | read_loop.py | lanes of blocking reads, or activity hints |
| `Dispatcher` | dispatch.py | exactly-once bookkeeping per entry id (no Redis) |
| `Releaser` | release.py | end marker, hand-off, lost lease, shutdown |

plus one SessionManager whose snapshot store is Redis (fenced by the lease)
and one auto-pipeline for the saves and XACKs of all sessions. Everything the
worker starts lives in one `AsyncExitStack` entered by `start()` and closed by
`stop()`: clients, the task group of its loops, the SessionManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any, cast

from adapters.redis.adoption import Adopter
from adapters.redis.connection import (
    CONNECTION_ERRORS,
    NO_SESSION,
    Client,
    connect,
    error_text,
    raw_reply,
    require_standalone,
)
from adapters.redis.dispatch import Dispatcher, DispatchHooks
from adapters.redis.keys import Keys
from adapters.redis.leases import LeaseManager
from adapters.redis.options import WorkerOptions
from adapters.redis.owned import OwnedSession, OwnedTable, Phase
from adapters.redis.ownership import OwnershipLoop
from adapters.redis.pipeline import AutoPipeline
from adapters.redis.read_loop import ReadLoop
from adapters.redis.reader import StreamReader
from adapters.redis.release import OwnerStore, Releaser
from adapters.redis.snapshots import RedisSnapshotStore
from adapters.redis.topology import Topology
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.runtime.clock import Clock, RealClock
from engine.runtime.logs import EventLog
from engine.runtime.manager import SessionManager
from engine.runtime.ports import Ports

WorkerHooks = DispatchHooks
"""Test hooks: awaited at `received` (an entry is read from Redis, not yet
handed to its session) and `before_ack` (its step is applied and the snapshot
saved, the XACK not yet queued)."""

__all__ = ["OwnedSession", "Phase", "RedisWorker", "WorkerHooks", "WorkerOptions",
           "default_worker_id"]

_STATS = ("delivered", "acked", "duplicates", "invalid", "claimed", "adopted", "resumed",
          "restarted", "lost", "released", "ended", "reads", "reconnects")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"


class RedisWorker:
    """Composes the collaborators above and owns their lifetime."""

    def __init__(self, redis_url: str, chart: CompiledChart, registry: Registry, ports: Ports,
                 log: EventLog, worker_id: str | None = None, lease_ms: int = 5000, *,
                 clock: Clock | None = None, keys: Keys | None = None,
                 hooks: WorkerHooks | None = None, options: WorkerOptions | None = None,
                 **tuning: Any) -> None:
        self.url = redis_url
        self.chart = chart
        self.registry = registry
        self.ports = ports
        self.log = log
        self.worker_id = worker_id or default_worker_id()
        self.options = options or WorkerOptions(lease_ms=int(lease_ms), **tuning)
        self.clock = clock or RealClock()
        self.keys = keys or Keys()
        self.hooks = hooks
        self.table = OwnedTable(self._forget_saved)
        self.owned: dict[str, OwnedSession] = self.table.owned
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self.redis: Client | None = None
        self.manager: SessionManager | None = None
        self.pipeline: AutoPipeline | None = None
        self.leases: LeaseManager | None = None
        self.ownership: OwnershipLoop | None = None
        self.read_loop: ReadLoop | None = None
        self._releaser: Releaser | None = None
        self._store: OwnerStore | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = asyncio.Event()
        self._stopping = False

    @property
    def lease_ms(self) -> int:
        return self.options.lease_ms

    @property
    def read_count(self) -> int:
        return self.options.read_count

    @property
    def read_mode(self) -> str:
        """How the reader waits: `lanes:N` (N blocking reads), `hints`, or `idle`."""
        return self.read_loop.mode if self.read_loop is not None else "idle"

    def owner_snapshot(self) -> dict[str, str]:
        """What this worker believes it owns right now (tests sample it)."""
        return self.table.snapshot()

    # ------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> RedisWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()   # a failed start closed what it had opened

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        o = self.options
        redis = connect(self.url, self.log, retries=o.retries, what="worker",
                        socket_timeout=max(2.0, o.lease_ms / 1000.0), socket_connect_timeout=2.0)
        stack.push_async_callback(redis.aclose)
        self.redis = redis
        # Raw replies for the few stream commands parsed here (stable across redis-py).
        for name in ("XREAD", "XREADGROUP", "XAUTOCLAIM"):
            redis.set_response_callback(name, cast(Any, raw_reply))
        await redis.ping()
        await require_standalone(redis, self.url)
        topology = await Topology.of(self.url, redis)
        self.pipeline = pipeline = AutoPipeline(topology, self.log,
                                                batch_timeout_s=max(2.0, o.lease_ms / 1000.0))
        stack.push_async_callback(pipeline.aclose)
        reader = StreamReader(topology, group=o.group, consumer=self.worker_id,
                              count=o.read_count, socket_timeout_s=o.block_ms / 1000.0 + 10.0)
        stack.push_async_callback(reader.aclose)
        self.leases = leases = LeaseManager(redis, self.worker_id, o.lease_ms, self.keys)
        releaser: Releaser | None = None

        def fenced(sid: str, exc: Any) -> None:
            if releaser is not None:
                releaser.fenced(sid, exc)

        self._store = store = OwnerStore(RedisSnapshotStore(
            redis, self.keys, owner=self.worker_id, pipeline=pipeline,
            save_timeout_s=o.lease_ms / 1000.0,
            ack_group=o.group if o.ack_with_save else None), fenced)
        self.manager = manager = SessionManager(
            self.chart, self.registry, self.ports, self.clock, self.log, store,
            on_session_end=self.table.watch.add)
        last = await redis.xrevrange(self.keys.announce, count=1)
        log, stats = self.log, self.stats
        releaser = Releaser(redis, manager, store, leases, pipeline, self.table, options=o,
                            keys=self.keys, worker_id=self.worker_id, spawn=self._spawn,
                            peers=lambda: self.ownership.peers if self.ownership else [],
                            log=log, stats=stats)
        dispatcher = Dispatcher(self.table, manager, pipeline, group=o.group,
                                max_in_flight=o.max_in_flight, on_end=releaser.end,
                                acked_by_save=store.inner.acked.get, hooks=self.hooks,
                                log=log, stats=stats)
        adopter = Adopter(redis, manager, self.table, dispatcher, group=o.group,
                          worker_id=self.worker_id, concurrency=o.adopt_concurrency,
                          lose=releaser.lose, close_local=releaser.close_local,
                          log=log, stats=stats)
        self.read_loop = ReadLoop(reader, topology, pipeline, self.table, dispatcher,
                                  options=o, keys=self.keys, ensure_group=adopter.ensure_group,
                                  start_task=self._start_task, hooks=self.hooks,
                                  log=log, stats=stats)
        self.ownership = OwnershipLoop(
            redis, leases, manager, self.table, adopter, releaser, options=o, keys=self.keys,
            worker_id=self.worker_id, spawn=self._spawn,
            announce_cursor=str(last[0][0]) if last else "0-0", log=log, stats=stats)
        self._releaser = releaser
        # Closed in reverse order: our loops cancelled, the manager (its
        # sessions) closed, the task group left, then the reader, the pipeline
        # and the client closed.
        await stack.enter_async_context(self._task_group())
        await stack.enter_async_context(manager)
        stack.callback(self._cancel_tasks)
        self._start_task(pipeline.run(), "redis:pipeline")
        self._start_task(self.read_loop.run(), "redis:reader")
        self._start_task(self.ownership.run(), "redis:ownership")
        self.log.emit("INFO", NO_SESSION, "worker_started",
                      f"🚀 worker {self.worker_id} started (lease {o.lease_ms} ms)",
                      {"worker_id": self.worker_id, "lease_ms": o.lease_ms,
                       "group": o.group, "chart": self.chart.name})

    @contextlib.asynccontextmanager
    async def _task_group(self) -> AsyncIterator[None]:
        """The task group of the worker's loops and helpers; they run until told, so
        leaving it first cancels them, and their cancellation is the normal end."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    yield
                finally:
                    self._cancel_tasks()
        except BaseExceptionGroup as group:
            if not all(isinstance(e, asyncio.CancelledError) for e in group.exceptions):
                raise
        finally:
            self._tg = None

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):  # our own loops and helpers
            task.cancel()

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
        if self._stack is None or self._stopping:
            return
        self._stopping = True
        self._stop_requested.set()
        if self.ownership is not None:
            self.ownership.stopping = True
        released = 0
        stack, self._stack = self._stack, None
        try:
            assert self.leases is not None and self.pipeline is not None \
                and self._releaser is not None
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.leases.leave()      # first: peers stop handing us sessions
            owned = [o for o in self.owned.values() if o.phase is not Phase.STOPPING]
            await self._releaser.stop_local(owned, drain=True)
            await self._releaser.hand_back([o.sid for o in owned], "shutdown")
            released = len(owned)
            await self.pipeline.drained(self.options.drain_timeout_s)
        finally:
            if self.ownership is not None:
                self.ownership.closed = True
            try:
                await stack.aclose()
            finally:
                self._tg = None
                self.log.emit("INFO", NO_SESSION, "worker_stopped",
                              f"🛑 worker {self.worker_id} stopped, {released} session(s) "
                              f"handed back", {"worker_id": self.worker_id,
                                               "released": released, **self.stats})

    # --------------------------------------------------------------- helpers
    def _forget_saved(self, sid: str) -> None:
        if self._store is not None:
            self._store.inner.forget(sid)

    def _start_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        if self._tg is None:
            coro.close()
            return
        self._start_task(self._guarded(coro, what), f"redis:{what}")

    async def _guarded(self, coro: Awaitable[None], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.emit("ERROR", NO_SESSION, "worker_task_failed",
                          f"💥 {what} failed: {error_text(exc)}",
                          {"task": what, "error": error_text(exc)})
