"""The one stream reader of a worker process: a dedicated connection that runs
`XREADGROUP … BLOCK … STREAMS k1 … kN > … >` over every stream the worker owns
(or, with many streams, blocks on the activity hints and reads the streams
that moved: see RedisWorker).

Why a raw connection: with 1,000 streams the command has 2,000+ arguments and
redis-py's asyncio client packs it in pure Python (about 1.3 ms per call
here), which alone would blow the p99 budget. Commands are packed by hiredis
(and the blocking read once per change of the owned set, its bytes re-sent);
replies are read raw (no response callbacks), which is also stable across
redis-py versions and RESP2/RESP3.

This connection does not retry by itself (the worker's loop does, with backoff
and a PEL sweep afterwards: a reply lost with the connection leaves entries
pending for us that were never received, and the sweep re-reads them).
`client_id` is the connection's CLIENT ID, so another connection can end a
blocking read early with `CLIENT UNBLOCK` when the owned set changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover
    _hiredis_pack = None

RawEntry = tuple[str, list[str] | None]           # (entry id, [field, value, …] or None)
RawReply = list[tuple[str, list[RawEntry]]]       # [(stream key, entries)]


def stream_pairs(reply: Any) -> RawReply:
    """An XREAD/XREADGROUP reply as [(key, entries)], whether the connection
    speaks RESP2 (an array of pairs) or RESP3 (a map; redis-py 8's default)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(item[0], item[1]) for item in reply]


class StreamReader:
    def __init__(self, url: str, *, group: str, consumer: str, count: int = 100,
                 socket_timeout_s: float | None = None) -> None:
        self._pool = ConnectionPool.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout_s,
            socket_keepalive=True, retry=Retry(NoBackoff(), 0))
        self._conn: Any = self._pool.connection_class(**self._pool.connection_kwargs)
        self.group = group
        self.consumer = consumer
        self.count = count
        self.client_id: int | None = None
        self.blocked = False
        self._packed: Any = None
        self._packed_for: tuple[tuple[str, ...], int] | None = None

    async def _ensure(self) -> None:
        if self.client_id is None or not self._conn.is_connected:
            self.client_id = None
            await self._conn.connect()
            await self._conn.send_command("CLIENT", "ID")
            self.client_id = int(await self._conn.read_response())

    def _pack(self, args: tuple[Any, ...]) -> Any:
        return [_hiredis_pack(args)] if _hiredis_pack is not None \
            else self._conn.pack_command(*args)

    async def command(self, *args: Any) -> Any:
        await self._ensure()
        await self._conn.send_packed_command(self._pack(args), check_health=False)
        return await self._conn.read_response()

    async def read_new(self, keys: Sequence[str], block_ms: int) -> RawReply:
        """New entries (`>`) of any of `keys`, waiting up to `block_ms`."""
        await self._ensure()
        shape = (tuple(keys), block_ms)
        if self._packed_for != shape:
            self._packed = self._pack((
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
                "BLOCK", block_ms, "STREAMS", *keys, *([">"] * len(keys))))
            self._packed_for = shape
        self.blocked = True
        try:
            await self._conn.send_packed_command(self._packed, check_health=False)
            reply = await self._conn.read_response()
        finally:
            self.blocked = False
        return stream_pairs(reply)

    async def read_now(self, keys: Sequence[str]) -> RawReply:
        """New entries (`>`) of `keys`, without blocking."""
        return stream_pairs(await self.command(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
            "STREAMS", *keys, *([">"] * len(keys))))

    async def read_hints(self, key: str, after: str, block_ms: int,
                         count: int = 1000) -> RawReply:
        """Entries of one plain stream (no group) after `after`, waiting up to `block_ms`."""
        await self._ensure()
        self.blocked = True
        try:
            await self._conn.send_packed_command(self._pack((
                "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", key, after)),
                check_health=False)
            reply = await self._conn.read_response()
        finally:
            self.blocked = False
        return stream_pairs(reply)

    async def last_id(self, key: str) -> str:
        reply = await self.command("XREVRANGE", key, "+", "-", "COUNT", 1)
        return str(reply[0][0]) if reply else "0-0"

    async def read_pending(self, keys: Sequence[str], after: Sequence[str]) -> RawReply:
        """Our own pending entries (history) of each key after the given id."""
        return stream_pairs(await self.command(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
            "STREAMS", *keys, *after))

    async def disconnect(self) -> None:
        self.client_id = None
        self.blocked = False
        await self._conn.disconnect()

    async def aclose(self) -> None:
        await self.disconnect()
        await self._pool.disconnect()
