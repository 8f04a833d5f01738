"""The way back from a worker to the audio front-end that holds the caller.

With Redis, sessions run on workers but the caller's audio connection lives
on a front-end (`turnchart serve --redis`). The worker's `Playback` and
`Filler` ports and its contract changes become ops on one more per-session
stream, `voice:out:session:{<id>}` (same hash tag as the session's other
keys); the front-end follows the streams of the sessions it holds with one
`XREAD` loop and applies them to the connection:

| op | fields | front-end does |
|---|---|---|
| `contract` | `state`, `microphone`, `playback`, [`active`] | routes audio by it; turn policy |
| `start` | — | drops audio queued from an earlier answer (a new one begins) |
| `audio` | `pcm` (bytes), `ms` | queues the frames |
| `clear` | — | drops everything queued |
| `filler` / `filler_cancel` | `pcm`, `ms` / — | plays / drops the filler clip |

A chart with parallel regions runs several leaf states at once: its `contract`
ops also carry `active`, a JSON list of every active leaf (document order; `state`
is the first of them), and `microphone`/`playback` are the contract merged over
all regions. Ops of other charts have no `active` field, as before.

Audio is raw int16 PCM at the front-end's output rate (24 kHz: 48 KB/s while
speaking). `drain` on the worker waits for the audio's real-time length,
since the worker cannot hear the caller's speaker.

On a Redis Cluster one XREAD may only name streams of one slot, and the
front-end's sessions are spread over many: there the follower polls instead,
one write per node carrying one XREAD per slot, every `poll_ms` (10 ms) while
nothing comes and at once while ops flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from adapters.redis.connection import Client
from adapters.redis.keys import Keys
from adapters.redis.reader import stream_pairs
from adapters.redis.topology import Topology, is_redirect
from adapters.redis.wire import Wire
from engine.runtime.ports import AudioChunk
from engine.runtime.trace import ContractApplied, TraceEvent

OUT_MAXLEN = 2_000


def output_key(keys: Keys, session_id: str) -> str:
    return f"{keys.prefix}:out:session:{{{session_id}}}"


class RedisOutputLink:
    """Worker side: the `Playback` and `Filler` ports, as ops on the output stream."""

    def __init__(self, redis: Client, keys: Keys | None = None,
                 filler_clip: AudioChunk | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.filler_clip = filler_clip
        self._playout_end: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _op(self, session_id: str, op: str, **fields: bytes | str) -> None:
        entry: dict[Any, Any] = {"op": op, **fields}
        await self.redis.xadd(output_key(self.keys, session_id), entry,
                              maxlen=OUT_MAXLEN, approximate=True)

    # Playback
    async def start(self, session_id: str) -> None:
        self._playout_end[session_id] = time.monotonic()
        await self._op(session_id, "start")

    async def write(self, session_id: str, chunk: AudioChunk) -> None:
        now = time.monotonic()
        end = max(self._playout_end.get(session_id, now), now) + chunk.duration_ms / 1000.0
        self._playout_end[session_id] = end
        await self._op(session_id, "audio", pcm=chunk.data, ms=str(chunk.duration_ms))
        ahead = end - time.monotonic() - 0.5   # stay at most half a second ahead
        if ahead > 0:
            await asyncio.sleep(ahead)

    async def drain(self, session_id: str) -> None:
        remaining = self._playout_end.get(session_id, 0.0) - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def clear(self, session_id: str) -> int:
        self._playout_end.pop(session_id, None)
        await self._op(session_id, "clear")
        return 0

    # Filler
    async def play(self, session_id: str) -> None:
        if self.filler_clip is not None:
            await self._op(session_id, "filler", pcm=self.filler_clip.data,
                           ms=str(self.filler_clip.duration_ms))

    async def cancel(self, session_id: str) -> None:
        await self._op(session_id, "filler_cancel")


class ContractPublisher:
    """A trace listener for the worker: every `ContractApplied` becomes a `contract`
    op, whatever the log level (the front-end routes audio by it).

    Published in the order the events happen (one task, FIFO queue)."""

    def __init__(self, redis: Client, keys: Keys | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.queue: asyncio.Queue[tuple[str, dict[Any, Any]]] = asyncio.Queue()

    def __call__(self, event: TraceEvent) -> None:
        if not isinstance(event, ContractApplied):
            return
        contract = event.contract
        fields: dict[Any, Any] = {
            "op": "contract", "state": event.state,
            "microphone": contract.microphone or "closed",
            "playback": contract.playback or "stopped"}
        if event.active is not None:    # parallel regions: every active leaf (JSON list)
            fields["active"] = json.dumps(list(event.active))
        self.queue.put_nowait((event.session_id, fields))

    async def run(self) -> None:
        while True:
            session_id, fields = await self.queue.get()
            with contextlib.suppress(Exception):  # the worker's own logs report Redis trouble
                await self.redis.xadd(output_key(self.keys, session_id), fields,
                                      maxlen=OUT_MAXLEN, approximate=True)


OpHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class OutputFollower:
    """Front-end side: one XREAD loop over the output streams of the sessions held
    here (a cluster: polled slot by slot, see the module doc; `url` names it)."""

    def __init__(self, redis: Client, on_op: OpHandler, keys: Keys | None = None,
                 block_ms: int = 200, *, url: str | None = None, poll_ms: int = 10) -> None:
        self.redis = redis
        self.on_op = on_op
        self.keys = keys or Keys()
        self.block_ms = block_ms
        self.url = url
        self.poll_ms = poll_ms
        self.positions: dict[str, str] = {}
        self._changed = asyncio.Event()
        self.stopped = False

    def stop(self) -> None:
        """End `run()` at its next turn, even if a cancellation of it was lost inside the
        Redis client (its read error is caught and retried below): the front-end's
        shutdown must not wait for ever on this loop."""
        self.stopped = True
        self._changed.set()

    def follow(self, session_id: str) -> None:
        self.positions.setdefault(output_key(self.keys, session_id), "0-0")
        self._changed.set()

    def unfollow(self, session_id: str) -> None:
        self.positions.pop(output_key(self.keys, session_id), None)

    async def run(self) -> None:
        self.stopped = False
        if isinstance(self.redis, RedisCluster):
            if self.url is None:
                raise ValueError("OutputFollower on a cluster needs the cluster's url")
            await self._poll(await Topology.of(self.url, self.redis))
            return
        while not self.stopped:
            if not self.positions:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                reply: Any = await self.redis.xread(dict(self.positions),  # type: ignore[arg-type]
                                                    block=self.block_ms, count=200)
            except Exception:
                await asyncio.sleep(0.2)  # reconnects through the client's retry policy
                continue
            for key, entries in reply or []:
                key = key.decode() if isinstance(key, bytes) else key
                if key not in self.positions:
                    continue
                session_id = self.keys.session_of(key)
                for entry_id, fields in entries:
                    self.positions[key] = entry_id.decode() if isinstance(entry_id, bytes) \
                        else entry_id
                    decoded = {(k.decode() if isinstance(k, bytes) else k): v
                               for k, v in fields.items()}
                    await self.on_op(session_id, decoded)

    async def _apply(self, key: str, entries: Any) -> None:
        if key not in self.positions:
            return
        session_id = self.keys.session_of(key)
        for entry_id, fields in entries:
            self.positions[key] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if isinstance(fields, dict):
                pairs = list(fields.items())
            else:
                pairs = list(zip(fields[::2], fields[1::2], strict=False)) if fields else []
            await self.on_op(session_id, {(k.decode() if isinstance(k, bytes) else k): v
                                          for k, v in pairs})

    async def _poll(self, topology: Topology) -> None:
        """The cluster loop: every node gets one write with one non-blocking XREAD
        per slot of the followed streams; read again at once while ops come."""
        wires: dict[str, Wire] = {}

        def wire(node: str) -> Wire:
            if node not in wires:
                wires[node] = Wire(topology.pool(node, socket_keepalive=True), node=node)
            return wires[node]

        try:
            while not self.stopped:
                if not self.positions:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                self._changed.clear()
                plan = {node: [("XREAD", "COUNT", 200, "STREAMS", *group,
                                *(self.positions[k] for k in group))
                               for group in topology.by_slot(node_keys).values()]
                        for node, node_keys in topology.by_node(list(self.positions)).items()}
                results = await asyncio.gather(
                    *(wire(node).round_trip(commands, 5.0) for node, commands in plan.items()),
                    return_exceptions=True)
                got, trouble = False, False
                for result in results:
                    if isinstance(result, BaseException):
                        trouble = True
                        continue
                    for reply in result:
                        if isinstance(reply, ResponseError):
                            trouble = True
                            if is_redirect(reply):
                                with contextlib.suppress(Exception):
                                    await topology.refresh()
                            continue
                        for key, entries in stream_pairs(reply):
                            got = got or bool(entries)
                            await self._apply(key.decode() if isinstance(key, bytes) else key,
                                              entries)
                if trouble:
                    await asyncio.sleep(0.2)
                elif not got:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_ms / 1000.0):
                            await self._changed.wait()
        finally:
            for w in wires.values():
                with contextlib.suppress(Exception):
                    await w.aclose()
