"""How the worker's reader splits its streams into blocking reads (lanes):
at most `per_lane` streams each, one slot per lane in a cluster, sticky as
sessions come and go, and no plan at all (hinted reads) past `max_lanes`."""

from __future__ import annotations

from redis.crc import key_slot

from adapters.redis.keys import Keys
from adapters.redis.lanes import LanePlan
from adapters.redis.topology import Topology

KEYS = Keys()


class SlotsOnThreeNodes(Topology):
    """The slot map of a three-node cluster, without the cluster (slots are pure math)."""

    def __init__(self) -> None:
        super().__init__("redis+cluster://127.0.0.1:1")

    def slot(self, key: str) -> int:
        return key_slot(key.encode())

    def node(self, key: str) -> str:
        return f"127.0.0.1:{7000 + self.slot(key) * 3 // 16384}"


def streams(n: int, prefix: str = "s") -> list[str]:
    return [KEYS.stream(f"{prefix}{i}") for i in range(n)]


def test_one_server_fills_lanes_of_at_most_per_lane_streams() -> None:
    plan = LanePlan(Topology("redis://127.0.0.1:1/0"), per_lane=64, max_lanes=32)
    keys = streams(200)
    fit = plan.plan(keys)
    assert fit is not None
    changed, gone = fit
    assert gone == set() and changed == set(plan.lanes)
    sizes = sorted(len(lane.keys) for lane in plan.lanes.values())
    assert sizes == [8, 64, 64, 64]
    assert sorted(k for lane in plan.lanes.values() for k in lane.keys) == sorted(keys)


def test_a_session_coming_or_going_touches_one_lane_only() -> None:
    plan = LanePlan(Topology("redis://127.0.0.1:1/0"), per_lane=64, max_lanes=32)
    keys = streams(200)
    plan.plan(keys)
    before = {lane.id: list(lane.keys) for lane in plan.lanes.values()}
    leaving = keys[70]
    fit = plan.plan([k for k in keys if k != leaving])
    assert fit is not None
    [touched] = fit[0]
    assert leaving in before[touched] and fit[1] == set()
    fit = plan.plan([k for k in keys if k != leaving] + [KEYS.stream("new")])
    assert fit is not None
    [joined] = fit[0]
    assert KEYS.stream("new") in plan.lanes[joined].keys
    assert len(plan.lanes[joined].keys) <= 64
    unchanged = {lid for lid, k in before.items() if lid not in (touched, joined)}
    assert all(plan.lanes[lid].keys == before[lid] for lid in unchanged)


def test_lanes_that_lose_all_their_streams_are_gone() -> None:
    plan = LanePlan(Topology("redis://127.0.0.1:1/0"), per_lane=10, max_lanes=32)
    keys = streams(30)
    plan.plan(keys)
    fit = plan.plan(keys[:5])
    assert fit is not None
    assert len(fit[1]) == 2 and len(plan.lanes) == 1
    [last] = plan.lanes
    assert plan.plan([]) == (set(), {last}) and plan.lanes == {}


def test_in_a_cluster_a_lane_holds_one_slot_on_its_node() -> None:
    topology = SlotsOnThreeNodes()
    plan = LanePlan(topology, per_lane=64, max_lanes=32)
    keys = streams(20)
    assert plan.plan(keys) is not None
    assert len(plan.lanes) == len({topology.slot(k) for k in keys})
    for lane in plan.lanes.values():
        assert {topology.slot(k) for k in lane.keys} == {lane.slot}
        assert {topology.node(k) for k in lane.keys} == {lane.node}


def test_more_lanes_than_allowed_means_no_plan() -> None:
    one_server = LanePlan(Topology("redis://127.0.0.1:1/0"), per_lane=64, max_lanes=2)
    assert one_server.plan(streams(128)) is not None
    assert one_server.plan(streams(129)) is None and one_server.lanes == {}
    cluster = LanePlan(SlotsOnThreeNodes(), per_lane=64, max_lanes=32)
    assert cluster.plan(streams(300)) is None       # ~300 slots, one lane each
    assert cluster.plan(streams(10)) is not None    # fewer sessions: lanes again
    assert LanePlan(Topology("redis://127.0.0.1:1/0"), per_lane=0,
                    max_lanes=32).plan(streams(1)) is None    # lanes turned off
