"""One raw connection to one Redis server, for the two hot paths (the stream
reader, the auto-pipeline of saves and acks).

Why raw: redis-py's asyncio client packs commands in pure Python (about
1.3 ms for an XREADGROUP over 1,000 streams) and runs response callbacks; here
commands are packed by hiredis (about 8× faster) and replies are read as the
server sent them, which is also stable across redis-py versions and RESP2/3.
Many commands go out in one write; an error reply is returned as that
command's result, so one bad command never desynchronises the connection.
When the whole write fits the socket (always, for these commands) it goes
straight to the transport, and replies are read straight off redis-py's
hiredis reader (`_reply`): the same bytes and errors as redis-py's
`send_packed_command`/`read_response`, ~5 µs less per exchange on the
development VM (two exchanges per applied event).

No retries here: the owner decides (backoff, re-send, a sweep of what was
pending). `client_id` is the connection's CLIENT ID when asked for, so another
connection can end a blocking read early with `CLIENT UNBLOCK`.

`read_timeout_s` bounds each read (a blocking read: its BLOCK time plus a
margin); `round_trip` bounds the whole exchange; connecting (with redis-py's
handshake) is bounded by `OPEN_TIMEOUT_S`. The first two are a deadline on
the wire and one timer that is re-armed lazily (`_Deadline`), not an
`asyncio.timeout` per exchange: that made and cancelled a timer handle on
every lane read and every save (3.4 µs each on an idle machine, twice per
applied event), while the deadline is a float written per exchange and a
timer that fires about once per timeout. Past its deadline the exchange's
task is cancelled, the connection dropped, and `RedisTimeoutError` raised,
as before. The connection itself gets no socket timeout, whatever the
pool says: redis-py wraps every *write* on a connection with one in
`asyncio.wait_for`, a task per command, which was a visible part of a lane's
cost per event. redis-py 6 and later give every connection a 5 s socket
timeout by default, which had brought that task back on every save and every
lane read (about 25-35 µs per round trip on the development VM); so the wire
sets it to None on its own connection. A write needs no timeout of its own:
a lane writes one small command and then waits for its reply (bounded), the
pipeline writes inside `round_trip`'s bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
_HiredisParser: Any = None      # redis-py's parser class when hiredis reads replies
_MORE: Any = object()           # what its reader returns while a reply is incomplete
_PUSH: Any = ()                 # a RESP3 push message (never a reply)
try:
    import hiredis
    from hiredis import pack_command as _hiredis_pack
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _MORE
    from redis._parsers.hiredis import _AsyncHiredisParser as _HiredisParser
    _PUSH = getattr(hiredis, "PushNotification", ())
except ImportError:  # pragma: no cover - hiredis is a dependency; plain redis-py works too
    _hiredis_pack = None


OPEN_TIMEOUT_S = 5.0      # connect + handshake (+ CLIENT ID): redis-py's default socket timeout


class Wire:
    def __init__(self, pool: ConnectionPool, *, node: str = "-", identify: bool = False,
                 read_timeout_s: float | None = None) -> None:
        self._pool = pool
        self.conn: Any = pool.connection_class(**{**pool.connection_kwargs,
                                                  "socket_timeout": None})
        self.node = node
        self.identify = identify
        self.read_timeout_s = read_timeout_s
        self.client_id: int | None = None
        self._deadline = _Deadline()

    def pack(self, args: Sequence[Any]) -> list[bytes]:
        if _hiredis_pack is not None:
            return [_hiredis_pack(tuple(args))]
        packed: list[bytes] = self.conn.pack_command(*args)
        return packed

    @property
    def connected(self) -> bool:
        return bool(self.conn.is_connected) and (self.client_id is not None or not self.identify)

    async def open(self) -> None:
        if self.connected:
            return
        self.client_id = None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await self.conn.connect()
                if self.identify:
                    await self.conn.send_packed_command(self.pack(("CLIENT", "ID")),
                                                        check_health=False)
                    self.client_id = int(await self.conn.read_response())
        except TimeoutError:
            await self.disconnect()
            raise RedisTimeoutError(f"no answer from {self.node} within {OPEN_TIMEOUT_S}s "
                                    f"while connecting") from None

    async def send_packed(self, packed: Sequence[bytes]) -> None:
        writer = self.conn._writer
        if writer is None or not self.connected:
            await self.open()
            await self.conn.send_packed_command(packed, check_health=False)
            return
        writer.writelines(packed)
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            # Not all sent at once, or the connection failed: redis-py's own
            # path waits for the buffer (and turns an error into its own).
            await self.conn.send_packed_command([], check_health=False)

    async def send(self, commands: Sequence[Sequence[Any]]) -> None:
        await self.send_packed([chunk for args in commands for chunk in self.pack(args)])

    async def read(self) -> Any:
        """The next reply; an error reply is returned (a ResponseError), not raised."""
        if self.read_timeout_s is None:
            try:
                return await self._reply()
            except ResponseError as error:
                return error
        deadline = self._deadline
        token = deadline.start(self.read_timeout_s)
        try:
            return await self._reply()
        except ResponseError as error:
            return error
        except asyncio.CancelledError:
            if not deadline.expired(token):
                raise
            await self.disconnect()          # a reply may still come: start clean
            raise RedisTimeoutError(f"no reply from {self.node} within "
                                    f"{self.read_timeout_s}s") from None
        finally:
            deadline.end(token)

    async def _reply(self) -> Any:
        """The next reply, read straight off redis-py's hiredis reader: what
        `read_response` does for these connections (error replies returned,
        a dropped connection raised as redis' ConnectionError and closed, the
        connection closed under any other failure, push messages skipped)
        without its per-call checks and host string (about 2.5 µs of ~14 per
        round trip). Any other parser: redis-py's own path."""
        conn = self.conn
        parser = conn._parser
        stream = conn._reader
        if type(parser) is not _HiredisParser or stream is None or parser._reader is None:
            return await conn.read_response()
        hiredis_reader = parser._reader
        try:
            while True:
                reply = hiredis_reader.gets()
                while reply is _MORE:
                    data = await stream.read(65536)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    hiredis_reader.feed(data)
                    reply = hiredis_reader.gets()
                if not isinstance(reply, _PUSH):
                    break
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while reading from {self.node}: "
                                       f"{exc.args}") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
            reply = reply[0]              # as redis-py does (LOADING inside an EXEC reply)
        if isinstance(reply, RedisConnectionError):
            await conn.disconnect(nowait=True)
            raise reply
        return reply

    async def call(self, *args: Any) -> Any:
        """One command, its reply; an error reply is raised."""
        await self.send([args])
        reply = await self.read()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def round_trip(self, commands: Sequence[Sequence[Any]], timeout_s: float) -> list[Any]:
        """Send all, read all (error replies in place); any other failure drops the
        connection, so the next use starts clean instead of reading stale replies."""
        deadline = self._deadline
        token = deadline.start(timeout_s)
        try:
            await self.send(commands)
            return [await self.read() for _ in commands]
        except asyncio.CancelledError:
            await self.disconnect()
            if not deadline.expired(token):
                raise
            raise TimeoutError(f"no reply from {self.node} within {timeout_s}s") from None
        except BaseException:
            await self.disconnect()
            raise
        finally:
            deadline.end(token)

    async def disconnect(self) -> None:
        self.client_id = None
        await self.conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        await self.disconnect()
        await self._pool.disconnect()


class _Deadline:
    """Bounds the exchanges of one wire in time, nested ones included (a read
    inside a round trip), with one lazily re-armed timer: `start` writes a
    deadline (no timer made when one is pending that fires no later),
    `end` clears it, and the timer, when it fires, re-arms itself for the
    earliest deadline still open, or cancels the task of one that passed.
    That task then sees `CancelledError` and asks `expired(token)` whether the
    cancellation was this deadline's (then it is a timeout) or its owner's."""

    __slots__ = ("_expired", "_next", "_open", "_timer", "_when")

    def __init__(self) -> None:
        self._open: dict[int, tuple[float, asyncio.Task[Any], int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._when = 0.0
        self._next = 0
        self._expired: dict[int, int] = {}      # token → the task's cancelling() at start

    def start(self, timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        when = loop.time() + timeout_s
        self._next += 1
        token = self._next
        self._open[token] = (when, task, task.cancelling())
        if self._timer is None or when < self._when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._fire)
            self._when = when
        return token

    def end(self, token: int) -> None:
        self._open.pop(token, None)
        self._expired.pop(token, None)

    def expired(self, token: int) -> bool:
        """Was the cancellation this exchange's deadline alone? It is consumed
        (`uncancel`); a cancellation of the task's own that came too still
        counts, and then this is False (as with `asyncio.timeout`)."""
        base = self._expired.pop(token, None)
        if base is None:
            return False
        task = asyncio.current_task()
        return task is None or task.uncancel() <= base

    def _fire(self) -> None:
        self._timer = None
        if not self._open:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        late: set[asyncio.Task[Any]] = set()
        for token, (when, task, base) in list(self._open.items()):
            if when <= now:
                del self._open[token]
                if not task.done():
                    self._expired[token] = base
                    late.add(task)
            elif earliest is None or when < earliest:
                earliest = when
        for task in late:           # once per task (a second cancel would outlive uncancel)
            task.cancel()
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._fire)
            self._when = earliest
