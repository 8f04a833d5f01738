"""The read loop of a Redis worker: the one reader of the process.

It plans; its lanes read. A lane is one blocking XREADGROUP over at most
`block_all_max` streams (one slot's, in a cluster) on its own connection: a
new entry wakes it directly, and a wake-up costs Redis O(block_all_max), not
O(streams) (a blocking read over 1,000 streams costs 0.6 ms per wake-up,
measured). When more than `max_lanes` lanes would be needed (many streams, or
streams in many cluster slots), one loop blocks on the activity hints instead
and reads the streams that moved, plus every stream each `sweep_s`. A lane or
the hinted loop is stopped by asking it (and ending its blocking read), never
by cancelling a read whose reply could carry entries. What it reads goes to
the dispatcher (live sessions) or the session's adoption buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import ResponseError

from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, error_text
from adapters.redis.dispatch import Dispatcher, DispatchHooks
from adapters.redis.keys import Keys
from adapters.redis.lanes import LanePlan
from adapters.redis.options import WorkerOptions
from adapters.redis.owned import OwnedTable, Phase
from adapters.redis.pipeline import AutoPipeline
from adapters.redis.reader import Lane, StreamReader
from adapters.redis.topology import Topology, is_redirect
from engine.runtime.logs import EventLog

StartTask = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class ReadLoop:
    def __init__(self, reader: StreamReader, topology: Topology, pipeline: AutoPipeline,
                 table: OwnedTable, dispatcher: Dispatcher, *, options: WorkerOptions,
                 keys: Keys, log: EventLog, stats: dict[str, int],
                 ensure_group: Callable[[str], Awaitable[bool]], start_task: StartTask,
                 hooks: DispatchHooks | None = None) -> None:
        self.reader = reader
        self.topology = topology
        self.pipeline = pipeline
        self.table = table
        self.dispatcher = dispatcher
        self.options = options
        self.keys = keys
        self.log = log
        self.stats = stats
        self.ensure_group = ensure_group
        self.start_task = start_task
        self.hooks = hooks
        self.lanes: dict[int, tuple[Lane, asyncio.Task[None]]] = {}
        self.hinted: asyncio.Task[None] | None = None
        self._hinted_stop = False
        self.replan = False
        self._unswept = False           # a reader died with its connection: sweep first
        self._reporter: str | None = None

    @property
    def mode(self) -> str:
        """How the reader waits: `lanes:N` (N blocking reads), `hints`, or `idle`."""
        if self.hinted is not None and not self.hinted.done():
            return "hints"
        return f"lanes:{len(self.lanes)}" if self.lanes else "idle"

    async def run(self) -> None:
        table = self.table
        plan = LanePlan(self.topology, self.options.block_all_max, self.options.max_lanes)
        while True:
            table.refresh()
            if self.replan:            # the cluster's slot map changed
                self.replan = False
                plan.reset()
                await self._stop_lanes(list(self.lanes), wait=True)
            fit = plan.plan(table.read_keys)
            if fit is None:
                await self._stop_lanes(list(self.lanes), wait=True)
                if self.hinted is None or self.hinted.done():
                    self._hinted_stop = False
                    self.hinted = self.start_task(self._hinted_loop(self._take_unswept()),
                                                  "redis:reader:hints")
                else:
                    self._unblock_hints()
            else:
                table.moved.clear()         # notes for the hinted loop only
                if self.hinted is not None:
                    self._hinted_stop = True
                    self._unblock_hints()
                    await asyncio.wait([self.hinted])
                    self.hinted = None
                changed, gone = fit
                await self._stop_lanes(list(gone), wait=False)
                sweep = self._take_unswept()
                for lane_id in changed:
                    spec = plan.lanes[lane_id]
                    running = self.lanes.get(lane_id)
                    if running is not None:
                        running[0].keys = list(spec.keys)
                        self._unblock(running[0])
                        continue
                    lane = self.reader.lane(spec.slot, spec.node, on_stale=self._unblock)
                    lane.keys = list(spec.keys)
                    self.lanes[lane_id] = (lane, self.start_task(
                        self._lane_loop(lane, lane_id, sweep), f"redis:reader:lane{lane_id}"))
            await table.changed.wait()

    def _take_unswept(self) -> bool:
        unswept, self._unswept = self._unswept, False
        return unswept

    def _unblock(self, lane: Lane) -> None:
        if lane.blocked and lane.wire.client_id is not None:
            self.pipeline.send("CLIENT", "UNBLOCK", lane.wire.client_id, node=lane.node)

    def _unblock_hints(self) -> None:
        reader = self.reader
        if reader.hints_blocked and reader.hints is not None \
                and reader.hints.client_id is not None:
            self.pipeline.send("CLIENT", "UNBLOCK", reader.hints.client_id,
                               node=reader.hints.node)

    async def _stop_lanes(self, lane_ids: list[int], *, wait: bool) -> None:
        """Ask lanes to stop (no streams left, blocking read ended); `wait` for them
        when their streams move to other readers (no reply may be left unread)."""
        stopping = []
        for lane_id in lane_ids:
            running = self.lanes.pop(lane_id, None)
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
        block_ms = self.options.block_ms
        try:
            while lane.keys:
                keys = lane.keys
                try:
                    if sweep:
                        await self._sweep_pending(list(keys))
                        sweep = False
                    reply = await lane.read(block_ms)
                except CONNECTION_ERRORS as exc:
                    failures += 1
                    sweep = True
                    with contextlib.suppress(Exception):
                        await lane.wire.disconnect()
                    if not lane.keys:
                        self._unswept = True
                        return
                    await self._failed(name, exc, failures)
                    continue
                except ResponseError as exc:
                    sweep = await self._refused(exc, list(keys))
                    continue
                if failures:
                    self._recovered(name, failures)
                    failures = 0
                if reply:
                    self.stats["reads"] += 1
                    await self.deliver(reply)
                    if self.table.dirty:
                        # What to read changed while delivering (a session throttled):
                        # the planner updates `lane.keys` before this lane reads again.
                        await asyncio.sleep(0)
        finally:
            if self._reporter == name:
                self._reporter = None
            with contextlib.suppress(Exception):
                await lane.wire.aclose()

    async def _hinted_loop(self, sweep: bool) -> None:
        """Many streams: block on the activity hints (the next hint read is sent
        before the streams that moved are read, so it already waits in Redis),
        read just the streams that moved, and every stream each `sweep_s`."""
        reader, table = self.reader, self.table
        failures = 0
        cursor: str | None = None
        hint_sent = False
        next_sweep = 0.0
        try:
            while not self._hinted_stop:
                keys = table.read_keys
                try:
                    if sweep:
                        await self._sweep_pending(list(table.live_keys))
                        sweep = False
                    if cursor is None:
                        # Hints from here on, and one read of every stream for
                        # whatever came before.
                        cursor = await reader.last_id(self.keys.activity)
                        next_sweep = 0.0
                    now = time.monotonic()
                    if now >= next_sweep:
                        table.moved.update(keys)
                        next_sweep = now + self.options.sweep_s
                    if not hint_sent:
                        block = max(1, int(min(self.options.block_ms,
                                               (next_sweep - now) * 1000)))
                        await reader.send_hints(self.keys.activity, cursor, block)
                        hint_sent = True
                    if table.moved:
                        reply = await self._read_moved(keys)
                        if reply:
                            self.stats["reads"] += 1
                            await self.deliver(reply)
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
                    await self._failed("hints", exc, failures)
                    continue
                except ResponseError as exc:
                    if hint_sent:        # its reply may still come: start that wire clean
                        with contextlib.suppress(Exception):
                            await reader.disconnect()
                        hint_sent, cursor = False, None
                    sweep = await self._refused(exc, list(keys))
                    continue
                if failures:
                    self._recovered("hints", failures)
                    failures = 0
        finally:
            if self._reporter == "hints":
                self._reporter = None
            if hint_sent and reader.hints is not None:   # never read a stale reply later
                with contextlib.suppress(Exception):
                    await reader.hints.disconnect()

    async def _read_moved(self, keys: list[str]) -> list[Any]:
        moved_set = self.table.moved
        live = set(keys)
        moved = [k for k in moved_set if k in live]
        moved_set.clear()
        reply = await self.reader.read_now(moved)
        for key, entries in reply:
            if len(entries) >= self.reader.count:
                moved_set.add(key)      # more where these came from
        return reply

    def _note_hints(self, hints: list[Any], cursor: str) -> str:
        owned_by_sid = self.table.owned
        for _key, entries in hints:
            for entry_id, fields in entries:
                cursor = entry_id
                if fields:
                    values = dict(zip(fields[::2], fields[1::2], strict=False))
                    sid = values.get("s")
                    if sid is not None:
                        owned = owned_by_sid.get(sid)
                        if owned is not None and owned.phase is Phase.LIVE:
                            self.table.moved.add(owned.key)
        return cursor

    async def _refused(self, exc: ResponseError, keys: list[str]) -> bool:
        """A read's error reply: NOGROUP (the group or stream was deleted) recreates
        the groups; MOVED and friends (the cluster moved a slot) re-read the slot
        map and replan the lanes; UNBLOCKED (a stream vanished under a blocking
        read: deleted, or migrated to another node) is whichever of the two it
        is. True: sweep the pending entries before reading."""
        text = str(exc)
        vanished = text.startswith("UNBLOCKED")
        if "NOGROUP" in text or (vanished and not self.topology.clustered):
            await self._recreate_groups(keys)
            return True
        if is_redirect(exc) or vanished:
            self.log.emit("INFO", NO_SESSION, "redis_rerouted",
                          f"🧭 {error_text(exc)}: re-reading the cluster's slots",
                          {"client": "reader", "error": error_text(exc)})
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.topology.refresh()
            self.replan = True
            self.table.mark_changed()
            await asyncio.sleep(0.05)
            return True
        raise exc

    async def _failed(self, name: str, exc: Exception, failures: int) -> None:
        """Back off after a lost connection; the first reader to notice says so
        (every lane notices an outage at once: one line, not one per lane)."""
        self.stats["reconnects"] += 1
        delay = min(2.0, 0.01 * 2 ** min(failures, 8))
        if self._reporter in (None, name):
            self._reporter = name
            self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                          f"🔌 stream reader ({name}): {error_text(exc)}; retry in {delay:.2f}s",
                          {"client": "reader", "reader": name, "error": error_text(exc),
                           "attempt": failures, "retry_in_s": delay})
        await asyncio.sleep(delay)

    def _recovered(self, name: str, failures: int) -> None:
        if self._reporter == name:
            self._reporter = None
            self.log.emit("INFO", NO_SESSION, "redis_reconnected",
                          f"🔌 stream reader reconnected after {failures} failure(s)",
                          {"client": "reader", "reader": name, "failures": failures})

    async def deliver(self, reply: list[Any]) -> None:
        by_key, dispatch = self.table.by_key, self.dispatcher.dispatch
        for key, entries in reply:
            owned = by_key.get(key)
            if owned is None or owned.phase is Phase.STOPPING:
                continue     # not ours any more: stays pending for the next owner
            if self.hooks is not None:
                for entry_id, _fields in entries:
                    await self.hooks.at("received", owned.sid, entry_id)
            if owned.phase is Phase.ADOPTING:
                owned.buffer.extend((e[0], e[1]) for e in entries)
            elif owned.phase is Phase.LIVE:
                dispatch(owned, entries)

    async def _sweep_pending(self, keys: list[str]) -> None:
        """Re-read our own pending entries of `keys` (after a lost connection)."""
        after = dict.fromkeys(keys, "0")
        todo = list(keys)
        while todo:
            chunk = todo[:500]
            reply = await self.reader.read_pending(chunk, after)
            more = []
            for key, entries in reply:
                if entries:
                    after[key] = entries[-1][0]
                    if len(entries) >= self.reader.count:
                        more.append(key)
            if reply:
                await self.deliver(reply)
            todo = more + todo[500:]

    async def _recreate_groups(self, keys: list[str]) -> None:
        created = 0
        for key in keys:
            if await self.ensure_group(key):
                created += 1
                owned = self.table.by_key.get(key)
                self.log.emit("WARNING", owned.sid if owned else NO_SESSION, "group_recreated",
                              f"🧩 consumer group {self.options.group} was missing on {key}: "
                              f"recreated", {"stream": key, "group": self.options.group})
        if not created:
            await asyncio.sleep(0.05)
