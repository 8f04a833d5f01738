"""Automatic pipelining: commands issued in the same event-loop turn by many
sessions (snapshot saves, XACKs) go to Redis as one pipeline, one round trip,
on a connection of its own (one per node of a cluster, written concurrently).

One batch is in flight at a time; whatever arrives meanwhile forms the next
batch, so batches grow with load and a lone command waits for nobody. Every
command sent through here is idempotent (a fenced SET, XACK), so a batch that
failed on a connection error is simply sent again, after a backoff, until it
goes through: an XACK is never dropped, a save's caller waits (bounded by its
own timeout). In a cluster each command goes to the node that owns its key's
slot; a MOVED/ASK/TRYAGAIN/CLUSTERDOWN reply re-reads the slot map and sends
the command again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError

from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, Client, command, error_text
from adapters.redis.topology import STANDALONE, Topology, is_redirect
from adapters.redis.wire import Wire
from engine.runtime.logs import EventLog

RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TimeoutError)


class LuaScript:
    """A Lua script called by SHA, falling back to EVAL when Redis lost its script
    cache (a restart): no extra round trip in the common case."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    def evalsha(self, keys: Sequence[str], argv: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *argv)

    def eval(self, keys: Sequence[str], argv: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVAL", self.body, len(keys), *keys, *argv)

    async def __call__(self, redis: Client, keys: Sequence[str], argv: Sequence[Any]) -> Any:
        try:
            return await command(redis, *self.evalsha(keys, argv))
        except NoScriptError:
            return await command(redis, *self.eval(keys, argv))


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None
    key: str | None = None                    # the key that routes it (cluster)
    node: str | None = None                   # or the node it must go to (CLIENT UNBLOCK)
    fallback: tuple[Any, ...] | None = None   # EVAL form of an EVALSHA
    deadline: float | None = None             # loop time after which the caller gives up


Acks = dict[tuple[str, str], list[str]]


@dataclass(slots=True)
class _Batch:
    """What one node gets in one round trip: the XACKs first, then the calls."""

    acks: list[tuple[tuple[str, str], list[str]]]
    calls: list[_Call]

    def commands(self) -> list[tuple[Any, ...]]:
        return [("XACK", key, group, *ids) for (key, group), ids in self.acks] \
            + [c.args for c in self.calls]


class AutoPipeline:
    """Run `run()` in a task; `call()` returns a future, `ack()` and `send()` don't
    wait, `request()` waits for the reply and skips the queue when it is empty."""

    def __init__(self, topology: Topology | str, log: EventLog, *,
                 backoff: AbstractBackoff | None = None, batch_timeout_s: float = 5.0) -> None:
        self.topology = topology if isinstance(topology, Topology) else Topology(topology)
        self.wires: dict[str, Wire] = {}
        self._busy: dict[str, asyncio.Lock] = {}     # one round trip at a time per wire
        self.log = log
        self.batch_timeout_s = batch_timeout_s
        self.backoff = backoff or ExponentialBackoff(cap=1.0, base=0.01)
        self._calls: list[_Call] = []
        self._acks: Acks = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.round_trips = 0
        self.direct = 0          # of which sent straight from the caller's task
        self.commands = 0
        self.failures = 0

    # ---------------------------------------------------------------- enqueue
    def call(self, *args: Any, key: str | None = None, node: str | None = None,
             fallback: tuple[Any, ...] | None = None,
             timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue a command (routed by `key`, or to `node`); the future gets its
        reply, its error, or a TimeoutError once `timeout` has passed without
        Redis answering (a long outage)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        self._calls.append(_Call(args, future, key, node, fallback, deadline))
        self._kick()
        return future

    def script(self, script: LuaScript, keys: Sequence[str], argv: Sequence[Any],
               timeout: float | None = None) -> asyncio.Future[Any]:
        return self.call(*script.evalsha(keys, argv), key=keys[0] if keys else None,
                         fallback=script.eval(keys, argv), timeout=timeout)

    async def run_script(self, script: LuaScript, keys: Sequence[str], argv: Sequence[Any],
                         timeout: float | None = None) -> Any:
        """The script's reply (an error reply raised), sent the fastest way there is.

        When nothing is queued and the node's connection is up and free, the
        command goes out at once from the caller's task and the caller reads its
        reply: a hand-over to the pipeline task would wait behind every task
        that is ready to run (with many sessions: their steps). Otherwise, and
        for whatever needs a retry (a lost connection, NOSCRIPT, MOVED), it
        takes the queue like any `call`."""
        args = script.evalsha(keys, argv)
        key = keys[0] if keys else ""
        try:
            node = self.topology.node(key)
        except RedisClusterException:
            node = None
        if node is not None and not self._calls and node in self.wires \
                and self.wires[node].connected and not self._lock(node).locked():
            async with self._lock(node):
                try:
                    [reply] = await self.wires[node].round_trip([args], self.batch_timeout_s)
                except RETRYABLE:
                    reply = None                 # the pipeline reconnects and retries
            if reply is not None:
                self.round_trips += 1
                self.direct += 1
                self.commands += 1
                if not isinstance(reply, ResponseError):
                    return reply
                if not isinstance(reply, NoScriptError) and not is_redirect(reply):
                    raise reply
        return await self.call(*args, key=key, fallback=script.eval(keys, argv),
                               timeout=timeout)

    def send(self, *args: Any, key: str | None = None, node: str | None = None) -> None:
        """Fire and forget (retried on connection errors, logged on a command error)."""
        self._calls.append(_Call(args, None, key, node))
        self._kick()

    def ack(self, key: str, group: str, entry_id: str) -> None:
        """XACK, coalesced per stream: one `XACK key group id1 id2 …` per batch."""
        self._acks.setdefault((key, group), []).append(entry_id)
        self._kick()

    def pending(self) -> int:
        return len(self._calls) + sum(len(ids) for ids in self._acks.values())

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until everything enqueued so far has been sent (or `timeout`)."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        for wire in self.wires.values():
            await wire.aclose()
        self.wires.clear()

    # ------------------------------------------------------------------ flush
    def _lock(self, node: str) -> asyncio.Lock:
        lock = self._busy.get(node)
        if lock is None:
            lock = self._busy[node] = asyncio.Lock()
        return lock

    async def _round_trip(self, node: str, batch: _Batch) -> list[Any]:
        async with self._lock(node):
            return await self._wire(node).round_trip(batch.commands(), self.batch_timeout_s)

    def _wire(self, node: str) -> Wire:
        wire = self.wires.get(node)
        if wire is None:
            pool = self.topology.pool(node, decode_responses=True, socket_keepalive=True,
                                      socket_connect_timeout=2.0, encoding_errors="replace")
            wire = self.wires[node] = Wire(pool, node=node)
        return wire

    def _route(self, calls: list[_Call], acks: Acks) -> dict[str, _Batch]:
        batches: dict[str, _Batch] = {}
        for (key, group), ids in acks.items():
            batches.setdefault(self.topology.node(key), _Batch([], [])).acks.append(
                ((key, group), ids))
        for c in calls:
            node = c.node or self.topology.node(c.key or "")
            batches.setdefault(node, _Batch([], [])).calls.append(c)
        return batches

    async def _round_trips(self, batches: dict[str, _Batch]
                           ) -> dict[str, list[Any] | BaseException]:
        if len(batches) == 1:
            [(node, batch)] = batches.items()
            try:
                return {node: await self._round_trip(node, batch)}
            except RETRYABLE as exc:
                return {node: exc}
        results = await asyncio.gather(
            *(self._round_trip(node, batch) for node, batch in batches.items()),
            return_exceptions=True)
        return dict(zip(batches, results, strict=True))

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            calls = self._live(self._calls)
            acks = self._acks
            self._calls, self._acks = [], {}
            if not calls and not acks:
                self._idle.set()
                continue
            try:
                batches = self._route(calls, acks)
            except RedisClusterException as exc:     # a slot nobody serves right now
                self._requeue(calls, acks)
                self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                              f"🔌 redis pipeline cannot route: {error_text(exc)}",
                              {"client": "pipeline", "error": error_text(exc)})
                await self._follow_redirects(0.2)
                self._wake.set()
                continue
            outcomes = await self._round_trips(batches)
            failed: list[tuple[str, BaseException]] = []
            redirected = False
            for node, batch in batches.items():
                outcome = outcomes[node]
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, RETRYABLE):
                        raise outcome
                    failed.append((node, outcome))
                    self._requeue(self._live(batch.calls), dict(batch.acks))
                    continue
                self.round_trips += 1
                self.commands += len(outcome)
                redirected |= self._settle(batch, outcome)
            if failed:
                failures += 1
                self.failures += 1
                delay = self.backoff.compute(failures)
                node, error = failed[0]
                self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                              f"🔌 redis pipeline failed ({error_text(error)}); "
                              f"{self.pending()} command(s) and ack(s) kept, "
                              f"retry in {delay:.2f}s",
                              {"client": "pipeline", "error": error_text(error),
                               "retry_in_s": delay, "attempt": failures,
                               **({"node": node} if node != STANDALONE else {})})
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            if failures:
                self.log.emit("INFO", NO_SESSION, "redis_reconnected",
                              f"🔌 redis pipeline works again after {failures} failure(s)",
                              {"client": "pipeline", "failures": failures})
            failures = 0
            if redirected:
                await self._follow_redirects()
            if self._calls or self._acks:
                self._wake.set()
            else:
                self._idle.set()

    def _settle(self, batch: _Batch, results: list[Any]) -> bool:
        """Hand each reply to its caller; True when some went to the wrong node."""
        redirected = False
        for ((key, group), ids), result in zip(batch.acks, results, strict=False):
            if isinstance(result, Exception):
                if is_redirect(result):
                    self._requeue([], {(key, group): ids})
                    redirected = True
                else:
                    self._command_failed(("XACK", key), result)
        retry: list[_Call] = []
        for c, result in zip(batch.calls, results[len(batch.acks):], strict=True):
            if isinstance(result, NoScriptError) and c.fallback is not None:
                retry.append(_Call(c.fallback, c.future, c.key, c.node, None, c.deadline))
            elif isinstance(result, ResponseError) and is_redirect(result) and c.node is None:
                retry.append(c)
                redirected = True
            elif c.future is not None:
                if c.future.done():
                    continue
                if isinstance(result, Exception):
                    c.future.set_exception(result)
                else:
                    c.future.set_result(result)
            elif isinstance(result, Exception):
                self._command_failed(c.args, result)
        if retry:
            self._calls[:0] = retry
        return redirected

    async def _follow_redirects(self, pause_s: float = 0.01) -> None:
        """The slot map moved (resharding, failover): re-read it, then go on."""
        try:
            await self.topology.refresh()
        except Exception as exc:
            self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                          f"🔌 cannot re-read the cluster's slots: {error_text(exc)}",
                          {"client": "pipeline", "error": error_text(exc)})
        await asyncio.sleep(pause_s)

    @staticmethod
    def _live(calls: list[_Call]) -> list[_Call]:
        """Drop calls whose caller went away; fail those past their deadline."""
        now = asyncio.get_running_loop().time()
        live = []
        for c in calls:
            if c.future is not None:
                if c.future.done():
                    continue
                if c.deadline is not None and now >= c.deadline:
                    c.future.set_exception(TimeoutError("redis did not answer in time"))
                    continue
            live.append(c)
        return live

    def _requeue(self, calls: list[_Call], acks: Acks) -> None:
        self._calls[:0] = calls
        for key, ids in acks.items():
            self._acks.setdefault(key, [])[:0] = ids

    def _command_failed(self, args: tuple[Any, ...], error: Exception) -> None:
        name = " ".join(str(a) for a in args[:2])
        level = "WARNING" if isinstance(error, ResponseError) else "ERROR"
        self.log.emit(level, NO_SESSION, "redis_command_failed",
                      f"💥 redis {name} failed: {error_text(error)}",
                      {"command": name, "error": error_text(error)})
