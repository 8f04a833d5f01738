"""`RedisSnapshotStore`: engine.runtime.snapshot.SnapshotStore on Redis.

One JSON string per session at `voice:snapshot:{sid}` (Snapshot.to_dict). A
worker's store is *fenced*: a save is a Lua script that writes only while the
session's lease still names this worker, so a worker that lost its lease (a
long GC pause, a partition) can never overwrite the new owner's snapshot; the
save fails with `LeaseLost` instead and the step is never acknowledged.

With `ack_group`, the same script also acknowledges the snapshot's
`last_event_id` on the session's stream (XACK; the stream shares the
session's slot): the step's save and its ack are one command, one round
trip, and atomic, so no applied entry is ever left pending behind a save.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import ResponseError

from adapters.redis.connection import Client
from adapters.redis.keys import Keys
from adapters.redis.pipeline import AutoPipeline, LuaScript
from engine.runtime.snapshot import Snapshot

SAVE_IF_OWNER = LuaScript("""
local owner = redis.call('GET', KEYS[2])
if owner ~= ARGV[2] then
  return redis.error_reply('LEASELOST ' .. KEYS[2] .. ' is held by ' .. tostring(owner or 'nobody'))
end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[3] then redis.call('XACK', KEYS[3], ARGV[3], ARGV[4]) end
return 1
""")


class LeaseLost(Exception):
    """This worker no longer owns the session; it must stop it (keeping the snapshot)."""


class SnapshotCorrupt(Exception):
    """The stored snapshot cannot be read back; the message says why."""


# One encoder for every save: `json.dumps` with any non-default option builds a
# new JSONEncoder per call (half of the encoding's CPU for a small snapshot).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def encode(snapshot: Snapshot) -> str:
    """The JSON of `Snapshot.to_dict()`, built without `dataclasses.asdict`
    (which deep-copies every value and was 10% of a worker's CPU)."""
    return _ENCODER.encode({"chart": snapshot.chart, "version_hash": snapshot.version_hash,
                            "session_id": snapshot.session_id,
                            "configuration": list(snapshot.configuration),
                            "epoch": snapshot.epoch, "turn": snapshot.turn,
                            "context": snapshot.context,
                            "last_event_id": snapshot.last_event_id})


def decode(session_id: str, raw: str | bytes) -> Snapshot:
    try:
        data: Any = json.loads(raw)
        return Snapshot.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotCorrupt(f"snapshot of session {session_id} is unreadable: "
                              f"{type(exc).__name__}: {exc}") from None


class RedisSnapshotStore:
    """Save/load/delete snapshots; `owner` turns on lease fencing, `pipeline`
    coalesces the saves of many sessions into one round trip."""

    def __init__(self, redis: Client, keys: Keys | None = None, *, owner: str | None = None,
                 pipeline: AutoPipeline | None = None,
                 save_timeout_s: float | None = None, ack_group: str | None = None) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.owner = owner
        self.pipeline = pipeline
        self.save_timeout_s = save_timeout_s
        self.ack_group = ack_group
        self.acked: dict[str, str] = {}    # sid → entry id its last save acknowledged
        self.saves = 0

    async def save(self, snapshot: Snapshot) -> None:
        sid = snapshot.session_id
        key, data = self.keys.snapshot(sid), encode(snapshot)
        try:
            if self.owner is not None:
                fenced = ([key, self.keys.lease(sid)], [data, self.owner])
                entry_id = snapshot.last_event_id
                if self.ack_group is not None and entry_id is not None:
                    fenced[0].append(self.keys.stream(sid))
                    fenced[1].extend((self.ack_group, entry_id))
                if self.pipeline is not None:
                    await self.pipeline.run_script(SAVE_IF_OWNER, *fenced,
                                                   timeout=self.save_timeout_s)
                else:
                    await SAVE_IF_OWNER(self.redis, *fenced)
            elif self.pipeline is not None:
                await self.pipeline.call("SET", key, data, key=key, timeout=self.save_timeout_s)
            else:
                await self.redis.set(key, data)
        except ResponseError as exc:
            if str(exc).startswith("LEASELOST"):
                raise LeaseLost(str(exc)) from None
            raise
        if self.ack_group is not None and snapshot.last_event_id is not None:
            self.acked[sid] = snapshot.last_event_id
        self.saves += 1

    def forget(self, session_id: str) -> None:
        self.acked.pop(session_id, None)

    async def load(self, session_id: str) -> Snapshot | None:
        raw = await self.redis.get(self.keys.snapshot(session_id))
        return None if raw is None else decode(session_id, raw)

    async def delete(self, session_id: str) -> None:
        await self.redis.delete(self.keys.snapshot(session_id))
