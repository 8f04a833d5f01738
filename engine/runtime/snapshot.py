"""What a session needs to carry on after a crash: a small serialisable record.

We persist our own record, never the python-statemachine instance (classes
built from data are not picklable, and the record is what Redis stores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Snapshot:
    chart: str
    version_hash: str
    session_id: str
    configuration: tuple[str, ...]   # root first, leaf last
    epoch: int
    turn: int
    context: dict[str, Any] = field(default_factory=dict)
    last_event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["configuration"] = list(self.configuration)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(chart=str(data["chart"]), version_hash=str(data["version_hash"]),
                   session_id=str(data["session_id"]),
                   configuration=tuple(str(s) for s in data["configuration"]),
                   epoch=int(data["epoch"]), turn=int(data["turn"]),
                   context=dict(data.get("context") or {}),
                   last_event_id=data.get("last_event_id"))


class SnapshotStore(Protocol):
    async def save(self, snapshot: Snapshot) -> None: ...

    async def load(self, session_id: str) -> Snapshot | None: ...

    async def delete(self, session_id: str) -> None: ...


class MemorySnapshotStore:
    """The embedded default: snapshots live as long as the process."""

    def __init__(self) -> None:
        self.snapshots: dict[str, Snapshot] = {}

    async def save(self, snapshot: Snapshot) -> None:
        self.snapshots[snapshot.session_id] = snapshot

    async def load(self, session_id: str) -> Snapshot | None:
        return self.snapshots.get(session_id)

    async def delete(self, session_id: str) -> None:
        self.snapshots.pop(session_id, None)
