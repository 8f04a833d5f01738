"""Automatic pipelining: commands issued in the same event-loop turn by many
sessions (snapshot saves, XACKs) go to Redis as one pipeline, one round trip,
on a connection of its own.

One batch is in flight at a time; whatever arrives meanwhile forms the next
batch, so batches grow with load and a lone command waits for nobody. Every
command sent through here is idempotent (a fenced SET, XACK), so a batch that
failed on a connection error is simply sent again, after a backoff, until it
goes through: an XACK is never dropped, a save's caller waits (bounded by its
own timeout).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, command, error_text
from engine.logs import EventLog

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; plain redis-py works too
    _hiredis_pack = None


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

    async def __call__(self, redis: Redis, keys: Sequence[str], argv: Sequence[Any]) -> Any:
        try:
            return await command(redis, *self.evalsha(keys, argv))
        except NoScriptError:
            return await command(redis, *self.eval(keys, argv))


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None
    fallback: tuple[Any, ...] | None = None   # EVAL form of an EVALSHA
    deadline: float | None = None             # loop time after which the caller gives up


class Wire:
    """One dedicated connection that sends many commands in one write and reads
    the raw replies back (an error reply becomes that command's result).

    Commands are packed by hiredis when it is installed (about 8× faster than
    redis-py's asyncio packer, which is pure Python); replies skip redis-py's
    response callbacks. No retries here: the owner decides (see AutoPipeline).
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 2.0) -> None:
        self._pool = ConnectionPool.from_url(
            url, decode_responses=True, socket_keepalive=True,
            socket_connect_timeout=connect_timeout_s, retry=Retry(NoBackoff(), 0))
        self.conn: Any = self._pool.connection_class(**self._pool.connection_kwargs)

    def pack(self, args: Sequence[Any]) -> list[bytes]:
        if _hiredis_pack is not None:
            return [_hiredis_pack(tuple(args))]
        packed: list[bytes] = self.conn.pack_command(*args)
        return packed

    async def round_trip(self, commands: Sequence[Sequence[Any]], timeout_s: float) -> list[Any]:
        packed = [chunk for args in commands for chunk in self.pack(args)]
        try:
            async with asyncio.timeout(timeout_s):
                if not self.conn.is_connected:
                    await self.conn.connect()
                await self.conn.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await self.conn.read_response())
                    except ResponseError as error:
                        replies.append(error)
                return replies
        except BaseException:
            await self.conn.disconnect(nowait=True)   # half-read replies: start clean
            raise

    async def aclose(self) -> None:
        await self.conn.disconnect()
        await self._pool.disconnect()


class AutoPipeline:
    """Run `run()` in a task; `call()` returns a future, `ack()` and `send()` don't wait."""

    def __init__(self, url: str, log: EventLog, *, backoff: AbstractBackoff | None = None,
                 batch_timeout_s: float = 5.0) -> None:
        self.wire = Wire(url)
        self.log = log
        self.batch_timeout_s = batch_timeout_s
        self.backoff = backoff or ExponentialBackoff(cap=1.0, base=0.01)
        self._calls: list[_Call] = []
        self._acks: dict[tuple[str, str], list[str]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.round_trips = 0
        self.commands = 0
        self.failures = 0

    # ---------------------------------------------------------------- enqueue
    def call(self, *args: Any, fallback: tuple[Any, ...] | None = None,
             timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue a command; the future gets its reply, its error, or a TimeoutError
        once `timeout` has passed without Redis answering (a long outage)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        self._calls.append(_Call(args, future, fallback, deadline))
        self._kick()
        return future

    def script(self, script: LuaScript, keys: Sequence[str], argv: Sequence[Any],
               timeout: float | None = None) -> asyncio.Future[Any]:
        return self.call(*script.evalsha(keys, argv), fallback=script.eval(keys, argv),
                         timeout=timeout)

    def send(self, *args: Any) -> None:
        """Fire and forget (retried on connection errors, logged on a command error)."""
        self._calls.append(_Call(args, None))
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

    # ------------------------------------------------------------------ flush
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
            commands = [("XACK", key, group, *ids) for (key, group), ids in acks.items()]
            commands.extend(c.args for c in calls)
            try:
                results = await self.wire.round_trip(commands, self.batch_timeout_s)
            except RETRYABLE as exc:
                failures += 1
                self.failures += 1
                delay = self.backoff.compute(failures)
                self.log.emit("WARNING", NO_SESSION, "redis_unavailable",
                              f"🔌 redis pipeline failed ({error_text(exc)}); "
                              f"{len(calls)} command(s), {sum(len(i) for i in acks.values())} "
                              f"ack(s) kept, retry in {delay:.2f}s",
                              {"client": "pipeline", "error": error_text(exc),
                               "retry_in_s": delay, "attempt": failures})
                self._requeue(self._live(calls), acks)
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            if failures:
                self.log.emit("INFO", NO_SESSION, "redis_reconnected",
                              f"🔌 redis pipeline works again after {failures} failure(s)",
                              {"client": "pipeline", "failures": failures})
            failures = 0
            self.round_trips += 1
            self.commands += len(results)
            for (key, _group), result in zip(acks, results, strict=False):
                if isinstance(result, Exception):
                    self._command_failed(("XACK", key), result)
            retry: list[_Call] = []
            for c, result in zip(calls, results[len(acks):], strict=True):
                if isinstance(result, NoScriptError) and c.fallback is not None:
                    retry.append(_Call(c.fallback, c.future))
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
            if self._calls or self._acks:
                self._wake.set()
            else:
                self._idle.set()

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

    def _requeue(self, calls: list[_Call], acks: dict[tuple[str, str], list[str]]) -> None:
        self._calls[:0] = calls
        for key, ids in acks.items():
            self._acks.setdefault(key, [])[:0] = ids

    def _command_failed(self, args: tuple[Any, ...], error: Exception) -> None:
        name = " ".join(str(a) for a in args[:2])
        level = "WARNING" if isinstance(error, ResponseError) else "ERROR"
        self.log.emit(level, NO_SESSION, "redis_command_failed",
                      f"💥 redis {name} failed: {error_text(error)}",
                      {"command": name, "error": error_text(error)})
