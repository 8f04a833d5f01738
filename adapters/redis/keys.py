"""The Redis key layout, in one place (docs/redis.md shows it as a table).

Every key of one session carries the Redis Cluster hash tag `{<session_id>}`,
so a session's stream, snapshot, lease and publish-dedupe set hash to the
same slot and live on one shard (its Lua scripts touch only that shard).
The two process-wide keys, the sessions index and the workers set, have no
tag: they are small and read by every worker.

Entry ids are compared as numbers, never as strings: `10-0` > `9-0`.
"""

from __future__ import annotations

from dataclasses import dataclass

StreamId = tuple[int, int]
ZERO_ID: StreamId = (0, 0)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (default `voice`)."""

    prefix: str = "voice"

    def stream(self, session_id: str) -> str:
        """The session's event stream: producers XADD VoiceEvents here."""
        return f"{self.prefix}:stt:session:{{{session_id}}}"

    def snapshot(self, session_id: str) -> str:
        """The session's last snapshot (JSON of engine.runtime.snapshot.Snapshot)."""
        return f"{self.prefix}:snapshot:{{{session_id}}}"

    def lease(self, session_id: str) -> str:
        """Who owns the session: the owning worker's id, with a PX expiry."""
        return f"{self.prefix}:lease:{{{session_id}}}"

    def dedupe(self, session_id: str) -> str:
        """Publish de-duplication: event ids seen recently (ZSET, score = entry ms)."""
        return f"{self.prefix}:dedupe:{{{session_id}}}"

    @property
    def sessions(self) -> str:
        """SET of live session ids: what workers scan to find work."""
        return f"{self.prefix}:sessions"

    @property
    def announce(self) -> str:
        """Stream of session ids as they appear: workers poll it to adopt new ones fast."""
        return f"{self.prefix}:sessions:announce"

    @property
    def activity(self) -> str:
        """Stream of wake-up hints (`s` = session id), one per published event:
        a worker owning many sessions blocks on this one key instead of on all
        its streams, then reads just the streams that moved. Hints only: an
        entry is never lost if a hint is (a periodic sweep reads every stream)."""
        return f"{self.prefix}:sessions:activity"

    @property
    def workers(self) -> str:
        """ZSET of live workers, score = heartbeat expiry (ms): the fair-share divisor."""
        return f"{self.prefix}:workers"

    @property
    def worker_stats(self) -> str:
        """HASH worker id → JSON of its counters and when they were written (ms):
        what a front-end's /metrics shows of the workers (claims, acks, duplicates)."""
        return f"{self.prefix}:workers:stats"

    @property
    def worker_sessions(self) -> str:
        """HASH worker id → JSON `{"at_ms", "sessions": {id: state, contract, turn,
        latency, …}}`: the sessions each worker runs, written once a second with its
        stats; a front-end's `/sessions`, `/health` and `/metrics` read the live
        workers' reports."""
        return f"{self.prefix}:workers:sessions"

    def session_of(self, key: str) -> str:
        """The session id inside a per-session key (between the first `{` and the last `}`)."""
        start, end = key.find("{"), key.rfind("}")
        if start < 0 or end <= start:
            raise ValueError(f"{key!r} is not a per-session key")
        return key[start + 1:end]


def parse_id(entry_id: str | bytes | None) -> StreamId:
    """`"1700000000000-3"` → `(1700000000000, 3)`; None → `(0, 0)`."""
    if entry_id is None:
        return ZERO_ID
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"
