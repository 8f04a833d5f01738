"""Which session a FastRTC connection belongs to — the classic "audio reached the
wrong caller" bug, closed by one lookup with three explicit rules.

1. direct match: the connection id is itself a live session id;
2. handler registry: the connection's handler registered its session;
3. otherwise: reject, with a log line listing active sessions and handlers.

Each new mapping is logged once at DEBUG.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.runtime.logs import EventLog
from engine.runtime.trace import RoutingRejected


class ConnectionRegistry:
    def __init__(self, log: EventLog, active_sessions: Callable[[], list[str]]) -> None:
        self._log = log
        self._active_sessions = active_sessions
        self._by_connection: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()

    def register(self, connection_id: str, session_id: str) -> None:
        self._by_connection[connection_id] = session_id
        self._mapped(connection_id, session_id, "handler_registry")

    def unregister(self, connection_id: str) -> None:
        session_id = self._by_connection.pop(connection_id, None)
        if session_id is not None:
            self._logged.discard((connection_id, session_id))

    def handlers(self) -> dict[str, str]:
        return dict(self._by_connection)

    def resolve(self, connection_id: str) -> str | None:
        """The session for a connection id, or None (logged) when there is none."""
        active = self._active_sessions()
        if connection_id in active:
            self._mapped(connection_id, connection_id, "direct_match")
            return connection_id
        session_id = self._by_connection.get(connection_id)
        if session_id is not None and session_id in active:
            return session_id
        self._log.publish(RoutingRejected(*self._log.stamp(connection_id or "-"),
                                          connection_id=connection_id,
                                          active_sessions=tuple(sorted(active)[:20]),
                                          handlers=tuple(sorted(self._by_connection)[:20])))
        return None

    def _mapped(self, connection_id: str, session_id: str, rule: str) -> None:
        key = (connection_id, session_id)
        if key in self._logged:
            return
        self._logged.add(key)
        self._log.emit("DEBUG", session_id, "connection_mapped",
                       f"🔗 connection {connection_id} → session {session_id} ({rule})",
                       {"connection_id": connection_id, "rule": rule})
