"""A session's stream read back from the start: what `turnchart replay --redis` re-runs.

The stream `voice:stt:session:{id}` holds every outside event a front-end
published (CHART_FORMAT.md §2 JSON in the `event` field) and, at the end, the
`control: end` marker. It is read with `XRANGE` in pages, so a long call does
not come back in one reply; nothing is acknowledged or changed.

What is there to read: a finished session's stream is kept for `ended_ttl_ms`
(10 minutes by default) after its end, and a long one has its acknowledged
history trimmed past `maxlen` (10,000 entries). For older calls, replay the
log lines instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapters.redis.connection import Client, open_client
from adapters.redis.keys import Keys, format_id, parse_id

PAGE = 500


@dataclass(frozen=True, slots=True)
class StreamHistory:
    """The session's events, oldest first, and what could not be used."""

    key: str
    events: list[dict[str, Any]]
    ended: bool                 # the `control: end` marker is there
    unreadable: list[str]       # entry ids whose `event` is missing or not a JSON object


async def read_history(redis: Client, session_id: str, keys: Keys | None = None,
                       page: int = PAGE) -> StreamHistory:
    """Every entry of the session's stream, in order (`XRANGE`, `page` at a time)."""
    key = (keys or Keys()).stream(session_id)
    events: list[dict[str, Any]] = []
    unreadable: list[str] = []
    ended = False
    start = "-"
    while True:
        entries = await redis.xrange(key, min=start, max="+", count=page) or []
        for entry_id, fields in entries:
            eid = _text(entry_id)
            values = {_text(k): _text(v) for k, v in (fields or {}).items()}
            if values.get("control") == "end":
                ended = True
                continue
            try:
                event = json.loads(values["event"])
            except (KeyError, ValueError):
                unreadable.append(eid)
                continue
            if isinstance(event, dict):
                events.append(event)
            else:
                unreadable.append(eid)
        if len(entries) < page:
            break
        ms, seq = parse_id(_text(entries[-1][0]))
        start = format_id((ms, seq + 1))
    return StreamHistory(key, events, ended, unreadable)


async def read_history_from_url(url: str, session_id: str, keys: Keys | None = None
                                ) -> StreamHistory:
    """`read_history` on a client of its own (closed afterwards)."""
    async with open_client(url) as redis:        # one server or a cluster URL
        return await read_history(redis, session_id, keys)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
