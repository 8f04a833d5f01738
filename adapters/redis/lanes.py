"""Which owned streams each blocking read (a lane) covers.

A blocking XREADGROUP over N streams costs Redis O(N) at every wake-up
(0.59 ms at 1,000 streams, measured), so the reader splits its streams into
lanes of at most `per_lane`, each blocked on its own connection; a wake-up
then costs O(per_lane). In a cluster a lane only holds streams of one slot
(CROSSSLOT). When more than `max_lanes` lanes would be needed, `plan`
returns None and the worker reads through the activity hints instead.

The plan is sticky: a stream keeps its lane while it is owned, a new one
joins the emptiest lane of its slot that has room, so adopting or dropping a
session interrupts one lane's read, not all of them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from adapters.redis.topology import Topology


@dataclass(slots=True)
class LaneKeys:
    """One lane's share of the streams: all in `slot` (0 on a single server), on `node`."""

    id: int
    slot: int
    node: str
    keys: list[str] = field(default_factory=list)


class LanePlan:
    def __init__(self, topology: Topology, per_lane: int, max_lanes: int) -> None:
        self.topology = topology
        self.per_lane = per_lane
        self.max_lanes = max_lanes
        self.lanes: dict[int, LaneKeys] = {}
        self._next_id = 0

    def plan(self, keys: Collection[str]) -> tuple[set[int], set[int]] | None:
        """Fit `keys` into lanes; returns (lanes whose streams changed, lanes now
        empty and gone), or None when they do not fit (the plan is then cleared)."""
        if not keys or self.per_lane <= 0:
            gone = set(self.lanes)
            self.lanes.clear()
            return (set(), gone) if not keys else None
        wanted = set(keys)
        changed: set[int] = set()
        placed: set[str] = set()
        for lane in self.lanes.values():
            kept = [k for k in lane.keys if k in wanted]
            if len(kept) != len(lane.keys):
                lane.keys = kept
                changed.add(lane.id)
            placed.update(kept)
        for key in keys:
            if key in placed:
                continue
            slot, node = self.topology.slot(key), self.topology.node(key)
            room = [lane for lane in self.lanes.values()
                    if lane.slot == slot and lane.node == node
                    and len(lane.keys) < self.per_lane]
            if room:
                lane = min(room, key=lambda lane: len(lane.keys))
            else:
                if len([lane for lane in self.lanes.values() if lane.keys]) >= self.max_lanes:
                    self.lanes.clear()
                    return None
                lane = LaneKeys(self._next_id, slot, node)
                self._next_id += 1
                self.lanes[lane.id] = lane
            lane.keys.append(key)
            placed.add(key)
            changed.add(lane.id)
        gone = {lane.id for lane in self.lanes.values() if not lane.keys}
        for lane_id in gone:
            del self.lanes[lane_id]
        return changed - gone, gone

    def reset(self) -> None:
        """Forget the plan (the cluster's slot map changed): every lane is replanned."""
        self.lanes.clear()
