"""The voice-host port: what the routes, `/health`, `/metrics` and the FastRTC
connection registry ask of wherever the sessions run.

Two implementations: `adapters.server.voice.VoiceService` (the sessions run in
this process's SessionManager) and `adapters.server.remote_voice.RemoteVoiceService`
(they run on `turnchart worker` processes; what it knows of them comes from the
reports each worker publishes once a second, see docs/redis.md). Nothing outside
the two implementations reaches into a `SessionManager` of the live server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.chart.catalog import VersionUse
from engine.runtime.session import Session


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session as a host reports it (`/sessions`, `/sessions/{id}`, `/latency/{id}`)."""

    session_id: str
    state: str
    configuration: tuple[str, ...]
    contract: Mapping[str, str]
    turn: int
    epoch: int
    chart: str
    version_hash: str
    latency: Mapping[str, Any] = field(default_factory=dict)
    worker: str | None = None        # Redis mode: the worker that runs it

    @classmethod
    def of(cls, session: Session, *, worker: str | None = None) -> SessionInfo:
        return cls(session.id, session.state, tuple(session.configuration),
                   dict(session.contract), session.turn, session.epoch, session.chart.name,
                   session.chart.version_hash, session.latency.as_dict(), worker)

    def to_report(self) -> dict[str, Any]:
        """What a worker publishes for it (JSON); `from_report` reads it back."""
        return {"state": self.state, "configuration": list(self.configuration),
                "contract": dict(self.contract), "turn": self.turn, "epoch": self.epoch,
                "chart": self.chart, "version_hash": self.version_hash,
                "latency": dict(self.latency)}

    @classmethod
    def from_report(cls, session_id: str, report: Mapping[str, Any],
                    worker: str | None) -> SessionInfo:
        """A worker's report of one session; a field it lacks reads as empty."""
        return cls(session_id, str(report.get("state", "")),
                   tuple(str(s) for s in report.get("configuration", ())),
                   {str(k): str(v) for k, v in dict(report.get("contract") or {}).items()},
                   int(report.get("turn", 0)), int(report.get("epoch", 0)),
                   str(report.get("chart", "")), str(report.get("version_hash", "")),
                   dict(report.get("latency") or {}), worker)

    def summary(self) -> dict[str, Any]:
        """The `/sessions` row."""
        row = {"session_id": self.session_id, "state": self.state,
               "contract": dict(self.contract), "turn": self.turn, "chart": self.chart,
               "version_hash": self.version_hash}
        if self.worker is not None:
            row["worker"] = self.worker
        return row

    def detail(self) -> dict[str, Any]:
        """The `/sessions/{id}` body."""
        body = {"session_id": self.session_id, "state": self.state,
                "configuration": list(self.configuration), "contract": dict(self.contract),
                "turn": self.turn, "epoch": self.epoch}
        if self.worker is not None:
            body["worker"] = self.worker
        return body


class VoiceHost(Protocol):
    """Where live sessions run, as the HTTP side sees it."""

    def post(self, session_id: str, event_type: str, payload: dict[str, Any],
             *, ack: Any = None, source: str = "fastrtc") -> bool:
        """Hand an outside event to the session (False: no such session here)."""
        ...

    def session_of(self, connection_id: str) -> str | None:
        """The session a caller's connection belongs to (None, logged, when none)."""
        ...

    async def live_sessions(self) -> list[SessionInfo]:
        """Every live session, sorted by id."""
        ...

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """One live session's details and latency, or None."""
        ...

    async def session_count(self) -> int:
        """How many sessions are live (`/health`, `turnchart_active_sessions`)."""
        ...

    async def health(self) -> dict[str, Any]:
        """Extra `/health` fields (Redis mode: reachability, stream lag, workers)."""
        ...

    async def version_uses(self) -> list[VersionUse]:
        """How many live sessions run each chart version (`/charts`)."""
        ...
