"""One raw connection to one Redis server, for the two hot paths (the stream
reader, the auto-pipeline of saves and acks).

Why raw: redis-py's asyncio client packs commands in pure Python (about
1.3 ms for an XREADGROUP over 1,000 streams) and runs response callbacks; here
commands are packed by hiredis (about 8× faster) and replies are read as the
server sent them, which is also stable across redis-py versions and RESP2/3.
Many commands go out in one write; an error reply is returned as that
command's result, so one bad command never desynchronises the connection.

No retries here: the owner decides (backoff, re-send, a sweep of what was
pending). `client_id` is the connection's CLIENT ID when asked for, so another
connection can end a blocking read early with `CLIENT UNBLOCK`.

`read_timeout_s` bounds each read (a blocking read: its BLOCK time plus a
margin) with `asyncio.timeout` around it; `round_trip` bounds the whole
exchange; connecting (with redis-py's handshake) is bounded by
`OPEN_TIMEOUT_S`. The connection itself gets no socket timeout, whatever the
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
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
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
        await self.open()
        await self.conn.send_packed_command(packed, check_health=False)

    async def send(self, commands: Sequence[Sequence[Any]]) -> None:
        await self.send_packed([chunk for args in commands for chunk in self.pack(args)])

    async def read(self) -> Any:
        """The next reply; an error reply is returned (a ResponseError), not raised."""
        try:
            if self.read_timeout_s is None:
                return await self.conn.read_response()
            async with asyncio.timeout(self.read_timeout_s):
                return await self.conn.read_response()
        except ResponseError as error:
            return error
        except TimeoutError:
            await self.disconnect()          # a reply may still come: start clean
            raise RedisTimeoutError(f"no reply from {self.node} within "
                                    f"{self.read_timeout_s}s") from None

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
        try:
            async with asyncio.timeout(timeout_s):
                await self.send(commands)
                return [await self.read() for _ in commands]
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        self.client_id = None
        await self.conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        await self.disconnect()
        await self._pool.disconnect()
