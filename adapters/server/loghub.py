"""Recent log lines per session, and live subscribers (the page's log pane)."""

from __future__ import annotations

import asyncio
from collections import deque

from engine.logs import Record


class LogHub:
    def __init__(self, keep: int = 300) -> None:
        self.keep = keep
        self.recent: dict[str, deque[Record]] = {}
        self.subscribers: dict[str, set[asyncio.Queue[Record]]] = {}

    def write(self, record: Record) -> None:
        sid = record["session_id"]
        self.recent.setdefault(sid, deque(maxlen=self.keep)).append(record)
        for queue in self.subscribers.get(sid, ()):
            if queue.qsize() < 1000:
                queue.put_nowait(record)

    def subscribe(self, session_id: str) -> asyncio.Queue[Record]:
        queue: asyncio.Queue[Record] = asyncio.Queue()
        for record in self.recent.get(session_id, ()):
            queue.put_nowait(record)
        self.subscribers.setdefault(session_id, set()).add(queue)
        return queue

    def unsubscribe(self, session_id: str, queue: asyncio.Queue[Record]) -> None:
        self.subscribers.get(session_id, set()).discard(queue)

    def forget(self, session_id: str) -> None:
        if not self.subscribers.get(session_id):
            self.recent.pop(session_id, None)
            self.subscribers.pop(session_id, None)
