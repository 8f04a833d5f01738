"""`RedisEventBus`: producers put VoiceEvents on a session's stream.

    async with RedisEventBus.from_url("redis://127.0.0.1:6379/0", log) as bus:
        entry_id = await bus.publish(event)          # XADD voice:stt:session:{sid}
        await bus.end_session(sid)                   # after its last event

An entry is two fields: `event` (the VoiceEvent as JSON, CHART_FORMAT.md §2)
and `eid` (its idempotency key). Publishing is one Lua script on the
session's shard that

1. de-duplicates: an `eid` seen in the last `dedupe_window_ms` is not added
   again (the original entry id is returned). The `eid` is
   `metadata.event_id` when the producer sets one, else a hash of the event's
   JSON, so a producer that retries `publish` after a lost reply (Redis
   restarted, connection cut) never adds the event twice;
2. XADDs the entry;
3. trims, when the stream is longer than `maxlen` (plus 10% slack): like
   `XADD … MAXLEN ~ maxlen`, except that it never removes an entry the
   consumer group has not acknowledged: the cut stops below the group's
   oldest pending entry, or its last-delivered id when nothing is pending
   (`XTRIM … MINID ~`). A stream nobody consumes yet is not trimmed at all.
   Plain `MAXLEN ~` at XADD time would drop unread events whenever the
   workers fall behind; trimming acknowledged history only is the point.

The first publish for a session also announces it (SADD to the sessions
index, XADD to the announce stream) so that workers adopt it.

The same script adds the wake-up hint to the activity stream (one command
per publish, and the hint can never overtake its entry). On a Redis Cluster
(`redis+cluster://` URL) a script may only touch its session's slot, so
there the hints go out in a second round trip, once the entries are in: the
hint stream lives on one node, and a hint that overtook its entry would wake
a worker for nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from adapters.redis.connection import Client, connect
from adapters.redis.keys import Keys
from adapters.redis.pipeline import LuaScript
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog

DEFAULT_GROUP = "turnchart"

PUBLISH = LuaScript("""
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

local function safe_trim(key, group, maxlen)
  local len = redis.call('XLEN', key)
  local floor = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then floor = last end
  end
  if not floor then return 0 end
  local pending = redis.call('XPENDING', key, group)
  if pending[1] > 0 and id_lt(pending[2], floor) then floor = pending[2] end
  local want = len - maxlen
  local older = redis.call('XRANGE', key, '-', floor, 'COUNT', want)
  if #older == 0 then return 0 end
  local threshold = older[#older][1]
  if #older < want or id_lt(floor, threshold) then threshold = floor end
  return redis.call('XTRIM', key, 'MINID', '~', threshold)
end

local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
if seen then
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], seen, seen)) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'eid' and f[i + 1] == ARGV[1] then return {0, e[1]} end
    end
  end
  return {0, ''}
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[2], 'eid', ARGV[1])
if KEYS[3] then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 's', ARGV[6])
end
local window = tonumber(ARGV[3])
if window > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('ZADD', KEYS[2], string.format('%d', ms), ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', ms - window))
  redis.call('PEXPIRE', KEYS[2], window)
end
local maxlen = tonumber(ARGV[4])
if maxlen > 0 and redis.call('XLEN', KEYS[1]) > maxlen + math.max(16, math.floor(maxlen / 10)) then
  safe_trim(KEYS[1], ARGV[5], maxlen)
end
return {1, id}
""")


def event_key(event: VoiceEvent, data: str) -> str:
    """The idempotency key: `metadata.event_id`, else a hash of the event's JSON."""
    given = event.metadata.get("event_id")
    if isinstance(given, str) and given:
        return given
    return hashlib.blake2b(data.encode(), digest_size=12).hexdigest()


class RedisEventBus:
    def __init__(self, redis: Client, keys: Keys | None = None, *, group: str = DEFAULT_GROUP,
                 maxlen: int = 10_000, dedupe_window_ms: int = 300_000,
                 owns_client: bool = False) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.group = group
        self.maxlen = maxlen
        self.dedupe_window_ms = dedupe_window_ms
        self._owns_client = owns_client
        self._announced: set[str] = set()
        self.published = 0
        self.duplicates = 0

    @classmethod
    def from_url(cls, url: str, log: EventLog, *, retries: int = 8,
                 **options: Any) -> RedisEventBus:
        client = connect(url, log, retries=retries, what="producer")
        return cls(client, owns_client=True, **options)

    async def __aenter__(self) -> RedisEventBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    # ---------------------------------------------------------------- publish
    def _script_args(self, event: VoiceEvent, hint: bool) -> tuple[list[str], list[Any]]:
        data = event.model_dump_json()
        sid = event.session_id
        keys = [self.keys.stream(sid), self.keys.dedupe(sid)]
        argv: list[Any] = [event_key(event, data), data, self.dedupe_window_ms, self.maxlen,
                           self.group]
        if hint:
            keys.append(self.keys.activity)
            argv.append(sid)
        return keys, argv

    async def publish(self, event: VoiceEvent) -> str:
        """XADD the event to its session's stream; return the entry id (the
        original one when this event was published before)."""
        [entry_id] = await self.publish_many([event])
        return entry_id

    async def publish_many(self, events: Sequence[VoiceEvent]) -> list[str]:
        """Publish in one round trip: one script per event, each adding its entry
        and its wake-up hint (a cluster: the hints in a second round trip)."""
        new = {e.session_id for e in events} - self._announced
        if new:
            await self.announce(*new)
        clustered = isinstance(self.redis, RedisCluster)
        calls = [self._script_args(e, hint=not clustered) for e in events]
        if len(calls) == 1:         # the common case: one command, no pipeline object
            results = [await PUBLISH(self.redis, *calls[0])]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for keys, argv in calls:
                pipe.execute_command(*PUBLISH.evalsha(keys, argv))
            results = await pipe.execute(raise_on_error=False)
            for i, r in enumerate(results):
                if isinstance(r, NoScriptError):      # Redis restarted: scripts reloaded
                    results[i] = await PUBLISH(self.redis, *calls[i])
                elif isinstance(r, Exception):
                    raise r
        if clustered:
            pipe = self.redis.pipeline(transaction=False)
            self._hint(pipe, list(dict.fromkeys(e.session_id for e in events)))
            await pipe.execute()
        ids = []
        for added, entry_id in results:
            self._count(added)
            ids.append(str(entry_id))
        return ids

    def _hint(self, pipe: Any, session_ids: Sequence[str]) -> None:
        for sid in session_ids:
            pipe.execute_command("XADD", self.keys.activity, "MAXLEN", "~", 10_000, "*",
                                 "s", sid)

    def _count(self, added: Any) -> None:
        if int(added) == 1:
            self.published += 1
        else:
            self.duplicates += 1

    async def announce(self, *session_ids: str) -> None:
        """Make sessions known to workers (idempotent)."""
        pipe = self.redis.pipeline(transaction=False)
        for sid in session_ids:
            pipe.sadd(self.keys.sessions, sid)
            pipe.xadd(self.keys.announce, {"session_id": sid}, maxlen=10_000, approximate=True)
        await pipe.execute()
        self._announced.update(session_ids)

    async def end_session(self, session_id: str) -> str:
        """Append the end marker: the owner applies every earlier event, then
        closes the session, deletes its snapshot and lets its keys expire."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.keys.stream(session_id), {"control": "end"})
        pipe.xadd(self.keys.activity, {"s": session_id}, maxlen=10_000, approximate=True)
        entry_id, _ = await pipe.execute()
        self._announced.discard(session_id)
        return str(entry_id)

    # ------------------------------------------------------------------ stats
    async def sessions(self) -> set[str]:
        members = await self.redis.smembers(self.keys.sessions)
        return {str(m) for m in members}

    async def stream_stats(self, session_id: str) -> dict[str, Any]:
        """Length, pending and lag of one session's stream for our group."""
        key = self.keys.stream(session_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(key)
        pipe.execute_command("XINFO", "GROUPS", key)
        length, groups = await pipe.execute(raise_on_error=False)
        stats: dict[str, Any] = {"length": 0 if isinstance(length, Exception) else length,
                                 "pending": None, "lag": None, "last_delivered_id": None}
        if isinstance(groups, list):
            for g in groups:
                info = dict(zip(g[::2], g[1::2], strict=True)) if isinstance(g, list) else g
                if info.get("name") == self.group:
                    stats.update(pending=info.get("pending"), lag=info.get("lag"),
                                 last_delivered_id=info.get("last-delivered-id"))
        return stats
