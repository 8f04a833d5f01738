"""Recent log lines per session, and live subscribers (the page's log pane)."""

from __future__ import annotations

import asyncio
from collections import deque

from engine.runtime.logs import Record


class LogHub:
    def __init__(self, keep: int = 300) -> None:
        self.keep = keep
        self.recent: dict[str, deque[Record]] = {}
        self.subscribers: dict[str, set[asyncio.Queue[Record | None]]] = {}
        self.closed = False

    def write(self, record: Record) -> None:
        sid = record["session_id"]
        self.recent.setdefault(sid, deque(maxlen=self.keep)).append(record)
        for queue in self.subscribers.get(sid, ()):
            if queue.qsize() < 1000:
                queue.put_nowait(record)

    def subscribe(self, session_id: str) -> asyncio.Queue[Record | None]:
        """A queue of the session's lines; `None` in it means the stream is over."""
        queue: asyncio.Queue[Record | None] = asyncio.Queue()
        for record in self.recent.get(session_id, ()):
            queue.put_nowait(record)
        if self.closed:
            queue.put_nowait(None)
        self.subscribers.setdefault(session_id, set()).add(queue)
        return queue

    def close_streams(self) -> None:
        """The server is stopping: every subscriber's stream ends (and new ones at once)."""
        self.closed = True
        for queues in self.subscribers.values():
            for queue in queues:
                queue.put_nowait(None)

    def unsubscribe(self, session_id: str, queue: asyncio.Queue[Record | None]) -> None:
        self.subscribers.get(session_id, set()).discard(queue)

    def forget(self, session_id: str) -> None:
        if not self.subscribers.get(session_id):
            self.recent.pop(session_id, None)
            self.subscribers.pop(session_id, None)
