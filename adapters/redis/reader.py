"""The worker's stream reading, on raw connections (adapters/redis/wire.py).

Two ways to wait for new entries (RedisWorker picks one, see docs/redis.md):

- `Lane`: one blocking `XREADGROUP … BLOCK … STREAMS k1 … kN > … >` over at
  most a few dozen streams that may share a command (any streams on one
  server; one slot's streams in a cluster), on a connection of its own. A new
  entry wakes it directly: one hop from the producer's XADD to the worker.
- `StreamReader.read_hints`: a blocking `XREAD` of the activity-hint stream,
  followed by `read_now` of just the streams that moved: two hops, but the
  cost per wake-up does not grow with the number of streams, and it works
  for any number of cluster slots.

`read_now` and `read_pending` read any set of streams without blocking: the
streams are grouped by node and by slot (CROSSSLOT: a cluster command names
keys of one slot only), each node gets one write with one XREADGROUP per
slot group, and the nodes are read concurrently.

The blocking commands are packed once per change of their streams and the
bytes re-sent. Nothing here retries: the worker backs off, reconnects and
re-reads its own pending entries (a reply lost with a connection leaves
entries delivered to us that we never received).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from adapters.redis.topology import Topology
from adapters.redis.wire import Wire

RawEntry = tuple[str, list[str] | None]           # (entry id, [field, value, …] or None)
RawReply = list[tuple[str, list[RawEntry]]]       # [(stream key, entries)]
MAX_KEYS_PER_READ = 1000


def stream_pairs(reply: Any) -> RawReply:
    """An XREAD/XREADGROUP reply as [(key, entries)], whether the connection
    speaks RESP2 (an array of pairs) or RESP3 (a map; redis-py 8's default)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(item[0], item[1]) for item in reply]


def xreadgroup(group: str, consumer: str, count: int, keys: Sequence[str],
               ids: Sequence[str], block_ms: int | None = None) -> tuple[Any, ...]:
    wait = ("BLOCK", block_ms) if block_ms is not None else ()
    return ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *wait,
            "STREAMS", *keys, *ids)


def _checked(reply: Any) -> RawReply:
    if isinstance(reply, ResponseError):
        raise reply
    return stream_pairs(reply)


class Lane:
    """One blocking read over a few streams, on its own connection. `keys` may be
    changed at any time; the owner then ends a read in progress with
    `CLIENT UNBLOCK client_id` (sent on another connection to the same node).
    `on_stale` is called when the streams changed while a read was being sent
    (an UNBLOCK sent before Redis had the read would miss it)."""

    def __init__(self, wire: Wire, slot: int, *, group: str, consumer: str,
                 count: int, on_stale: Callable[[Lane], None] | None = None) -> None:
        self.wire = wire
        self.slot = slot
        self.group = group
        self.consumer = consumer
        self.count = count
        self.on_stale = on_stale
        self.keys: list[str] = []
        self.blocked = False
        self._packed: list[bytes] = []
        self._packed_for: tuple[tuple[str, ...], int] | None = None

    @property
    def node(self) -> str:
        return self.wire.node

    async def read(self, block_ms: int) -> RawReply:
        shape = (tuple(self.keys), block_ms)
        if self._packed_for != shape:
            self._packed = self.wire.pack(xreadgroup(self.group, self.consumer, self.count,
                                                     self.keys, [">"] * len(self.keys),
                                                     block_ms))
            self._packed_for = shape
        self.blocked = True
        try:
            await self.wire.send_packed(self._packed)
            if tuple(self.keys) != shape[0] and self.on_stale is not None:
                self.on_stale(self)
            return _checked(await self.wire.read())
        finally:
            self.blocked = False


class StreamReader:
    def __init__(self, topology: Topology, *, group: str, consumer: str, count: int = 100,
                 socket_timeout_s: float | None = None) -> None:
        self.topology = topology
        self.group = group
        self.consumer = consumer
        self.count = count
        self.socket_timeout_s = socket_timeout_s
        self._data: dict[str, Wire] = {}
        self.hints: Wire | None = None
        self.hints_blocked = False

    def wire(self, node: str, *, identify: bool = False) -> Wire:
        """A new raw connection to `node` with the reader's settings."""
        pool = self.topology.pool(node, decode_responses=True, socket_keepalive=True,
                                  socket_connect_timeout=2.0,
                                  encoding_errors="replace")
        return Wire(pool, node=node, identify=identify, read_timeout_s=self.socket_timeout_s)

    def lane(self, slot: int, node: str,
             on_stale: Callable[[Lane], None] | None = None) -> Lane:
        return Lane(self.wire(node, identify=True), slot, group=self.group,
                    consumer=self.consumer, count=self.count, on_stale=on_stale)

    def _data_wire(self, node: str) -> Wire:
        wire = self._data.get(node)
        if wire is None:
            wire = self._data[node] = self.wire(node)
        return wire

    # ------------------------------------------------------- non-blocking
    async def read_now(self, keys: Sequence[str]) -> RawReply:
        """New entries (`>`) of `keys`, without blocking."""
        return await self._read(keys, {})

    async def read_pending(self, keys: Sequence[str], after: Mapping[str, str]) -> RawReply:
        """Our own pending entries (history) of each key after the given id (`0`: all)."""
        return await self._read(keys, after, default="0")

    async def _read(self, keys: Sequence[str], ids: Mapping[str, str],
                    default: str = ">") -> RawReply:
        plan: dict[str, list[tuple[Any, ...]]] = {}
        for node, node_keys in self.topology.by_node(keys).items():
            commands = plan.setdefault(node, [])
            for group in self.topology.by_slot(node_keys).values():
                for i in range(0, len(group), MAX_KEYS_PER_READ):
                    chunk = group[i:i + MAX_KEYS_PER_READ]
                    commands.append(xreadgroup(self.group, self.consumer, self.count, chunk,
                                               [ids.get(k, default) for k in chunk]))
        timeout = self.socket_timeout_s or 10.0
        if len(plan) == 1:
            [(node, commands)] = plan.items()
            replies = await self._data_wire(node).round_trip(commands, timeout)
        else:
            results = await asyncio.gather(
                *(self._data_wire(node).round_trip(commands, timeout)
                  for node, commands in plan.items()), return_exceptions=True)
            replies = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                replies.extend(result)
        pairs: RawReply = []
        for reply in replies:
            pairs.extend(_checked(reply))
        return pairs

    async def last_id(self, key: str) -> str:
        [reply] = await self._data_wire(self.topology.node(key)).round_trip(
            [("XREVRANGE", key, "+", "-", "COUNT", 1)], self.socket_timeout_s or 10.0)
        if isinstance(reply, ResponseError):
            raise reply
        return str(reply[0][0]) if reply else "0-0"

    # ----------------------------------------------------------- hints
    async def send_hints(self, key: str, after: str, block_ms: int, count: int = 1000) -> None:
        """Start a blocking read of the hint stream; `receive_hints` gets its reply.
        Sent ahead, it waits in Redis while the streams that moved are read."""
        node = self.topology.node(key)
        if self.hints is None or self.hints.node != node:
            if self.hints is not None:
                await self.hints.aclose()
            self.hints = self.wire(node, identify=True)
        await self.hints.send([("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", key,
                                after)])
        self.hints_blocked = True

    async def receive_hints(self) -> RawReply:
        assert self.hints is not None
        try:
            return _checked(await self.hints.read())
        finally:
            self.hints_blocked = False

    # ----------------------------------------------------------- closing
    async def disconnect(self) -> None:
        """Drop the connections (lanes have their own); the next read reconnects."""
        self.hints_blocked = False
        for wire in [*self._data.values(), *([self.hints] if self.hints else [])]:
            await wire.disconnect()

    async def aclose(self) -> None:
        for wire in [*self._data.values(), *([self.hints] if self.hints else [])]:
            await wire.aclose()
        self._data.clear()
        self.hints = None
