"""The Redis bus on a Redis Cluster (`redis+cluster://` URLs), against private
clusters started for each test: one node that owns all 16,384 slots (CROSSSLOT
rules hold per slot, exactly as on many nodes) and three nodes with the slots
split (routing to the node that owns each key).

Sessions are spread over many slots, so the worker must read stream by slot
(no multi-slot XREADGROUP), keep every Lua script on one slot, and route its
saves and acks to the right node."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from adapters.redis import Keys, RedisEventBus, RedisSnapshotStore
from adapters.redis.connection import NotStandalone, open_client
from adapters.redis.output_link import OutputFollower, RedisOutputLink, output_key
from adapters.redis.run import run_worker
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import ListSink
from engine.runtime.ports import AudioChunk
from tests.support.redis_server import (
    RedisClusterServers,
    debug_log,
    ring_state,
    ring_worker,
    write_ring_chart,
)
from tests.test_redis_crash import SESSIONS as CRASH_SESSIONS
from tests.test_redis_crash import sigkill_mid_step_then_resume

KEYS = Keys()


@pytest.fixture(params=[1, 3], ids=["1-node", "3-nodes"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisClusterServers]:
    with RedisClusterServers(tmp_path / "cluster", nodes=request.param) as servers:
        yield servers


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[RedisClusterServers]:
    with RedisClusterServers(tmp_path / "cluster", nodes=3) as servers:
        yield servers


new_log = debug_log
make_worker = functools.partial(ring_worker, lease_ms=3000)


def step(sid: str, n: int) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="test", timestamp=time.time(),
                      correlation_id=f"n-{n}", payload={"n": n})


def transitions(sink: ListSink, sid: str) -> list[str]:
    return [r["data"]["correlation_id"] for r in sink.of_type("state_transition", sid)]


async def settled(url: str, expected: dict[str, int], timeout: float = 30.0) -> None:
    """Every session's saved snapshot has its expected turn and nothing is pending."""
    client = open_client(url, decode_responses=True)
    try:
        store = RedisSnapshotStore(client)
        deadline = time.monotonic() + timeout
        while True:
            turns = {sid: ((await store.load(sid)) or _NONE).turn for sid in expected}
            pending = {sid: int((await client.xpending(KEYS.stream(sid), "turnchart"))["pending"])
                       for sid in expected} if turns == expected else {}
            if turns == expected and not any(pending.values()):
                return
            if time.monotonic() > deadline:
                late = {sid: t for sid, t in turns.items() if t != expected[sid]}
                raise AssertionError(f"not settled: turns {late}, pending {pending}")
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


class _NoSnapshot:
    turn = -1


_NONE: Any = _NoSnapshot()


async def test_many_sessions_over_many_slots_are_applied_once_in_order_and_acked(
        cluster: RedisClusterServers) -> None:
    sids = [f"call-{i}" for i in range(300)]
    slots = {key_slot(KEYS.stream(sid).encode()) for sid in sids}
    nodes = {cluster.node_of_slot(slot) for slot in slots}
    assert len(slots) > 250 and len(nodes) == len(cluster.servers)   # really spread out
    per_session = 6
    log, sink = new_log()
    async with RedisEventBus.from_url(cluster.url, log) as bus, \
            make_worker(cluster.url, log, worker_id="w1") as worker:
        assert isinstance(bus.redis, RedisCluster)
        for n in range(1, per_session + 1):
            await bus.publish_many([step(sid, n) for sid in sids])
        await settled(cluster.url, dict.fromkeys(sids, per_session))
        assert worker.read_mode == "hints"        # more slots than lanes: hinted reads
        assert worker.stats["delivered"] == worker.stats["acked"] == len(sids) * per_session
        assert worker.stats["duplicates"] == 0
    for sid in sids:
        assert transitions(sink, sid) == [f"n-{n}" for n in range(1, per_session + 1)], sid
    assert [r for r in sink.records if r["level"] in ("WARNING", "ERROR")
            and r["event_type"] != "session_throttled"] == []


async def test_a_few_sessions_are_read_by_one_blocking_read_per_slot(
        cluster: RedisClusterServers) -> None:
    sids = [f"few-{i}" for i in range(5)]
    log, sink = new_log()
    async with RedisEventBus.from_url(cluster.url, log) as bus, \
            make_worker(cluster.url, log, worker_id="w1") as worker:
        await bus.publish_many([step(sid, 1) for sid in sids])
        await settled(cluster.url, dict.fromkeys(sids, 1))
        assert worker.read_mode == f"lanes:{len(sids)}"
        for n in range(2, 11):                    # each step waits for the previous one
            await bus.publish_many([step(sid, n) for sid in sids])
            await settled(cluster.url, dict.fromkeys(sids, n))
        session = worker.manager.get(sids[0]) if worker.manager else None
        assert session is not None and session.state == ring_state(10)
    for sid in sids:
        assert transitions(sink, sid) == [f"n-{n}" for n in range(1, 11)], sid
    assert [r for r in sink.records if r["level"] in ("WARNING", "ERROR")] == []


async def test_sessions_end_and_their_keys_expire_on_their_own_nodes(
        cluster: RedisClusterServers) -> None:
    sids = [f"end-{i}" for i in range(40)]
    log, sink = new_log()
    async with RedisEventBus.from_url(cluster.url, log) as bus, \
            make_worker(cluster.url, log, worker_id="w1", ended_ttl_ms=60_000):
        await bus.publish_many([step(sid, 1) for sid in sids])
        await settled(cluster.url, dict.fromkeys(sids, 1))
        for sid in sids:
            await bus.end_session(sid)
        client = open_client(cluster.url, decode_responses=True)
        try:
            deadline = time.monotonic() + 20
            while len(sink.of_type("session_ended")) < len(sids):
                assert time.monotonic() < deadline, "sessions did not end"
                await asyncio.sleep(0.05)
            assert await client.smembers(KEYS.sessions) == set()
            for sid in sids:
                assert await client.get(KEYS.snapshot(sid)) is None
                assert 0 < await client.pttl(KEYS.stream(sid)) <= 60_000
                assert await client.get(KEYS.lease(sid)) is None
        finally:
            await client.aclose()


async def test_a_plain_url_to_a_cluster_node_is_refused_with_the_url_to_use(
        cluster: RedisClusterServers, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    plain = cluster.node_url(0)
    log, sink = new_log()
    with pytest.raises(NotStandalone, match=r"is a Redis Cluster node: use redis\+cluster://"):
        async with make_worker(plain, log, worker_id="w1"):
            pass
    # The worker process: one ERROR line, one line on stderr, exit code 1.
    code = await run_worker(plain, write_ring_chart(tmp_path), log=log, install_signals=False,
                            freeze_gc=False, redis_wait_s=2.0)
    assert code == 1
    [failed] = sink.of_type("worker_failed")
    assert f"redis+cluster://127.0.0.1:{cluster.ports[0]}/0" in failed["message"]
    assert capsys.readouterr().err.startswith(f"turnchart worker: {plain} is a Redis Cluster")


@pytest.mark.parametrize("pause", ["before_ack:23", "received:30"])
async def test_sigkill_mid_step_on_a_cluster_then_a_second_worker_resumes_exactly_once(
        cluster3: RedisClusterServers, tmp_path: Path, pause: str) -> None:
    nodes = {cluster3.node_of_slot(key_slot(KEYS.stream(sid).encode())) for sid in CRASH_SESSIONS}
    assert len(nodes) > 1          # the crashed worker's sessions live on several nodes
    await sigkill_mid_step_then_resume(cluster3.url, tmp_path, pause)


async def test_output_ops_of_sessions_on_several_nodes_reach_the_front_end_in_order(
        cluster3: RedisClusterServers) -> None:
    sids = [f"out-{i}" for i in range(12)]
    assert len({cluster3.node_of_slot(key_slot(output_key(KEYS, sid).encode()))
                for sid in sids}) == 3
    got: dict[str, list[tuple[str, bytes]]] = {}

    async def on_op(sid: str, fields: dict[str, Any]) -> None:
        got.setdefault(sid, []).append((fields["op"].decode(), bytes(fields.get("pcm", b""))))

    front = open_client(cluster3.url)            # bytes, as the front-end holds it
    worker_side = open_client(cluster3.url)
    follower = OutputFollower(front, on_op, url=cluster3.url)
    link = RedisOutputLink(worker_side)
    pcm = bytes(range(256)) * 2
    try:
        async with asyncio.TaskGroup() as tg:
            following = tg.create_task(follower.run())
            for sid in sids:
                follower.follow(sid)
            for sid in sids:
                await link.start(sid)
                await link.write(sid, AudioChunk(pcm, 5.0))
                await link.clear(sid)
            deadline = time.monotonic() + 10
            while sum(len(ops) for ops in got.values()) < 3 * len(sids):
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.02)
            following.cancel()
    finally:
        await front.aclose()
        await worker_side.aclose()
    assert got == {sid: [("start", b""), ("audio", pcm), ("clear", b"")] for sid in sids}


async def test_a_slot_moved_to_another_node_mid_call_loses_and_repeats_nothing(
        cluster3: RedisClusterServers) -> None:
    sids = ["moving", "staying-1", "staying-2"]
    moving = key_slot(KEYS.stream("moving").encode())
    source = cluster3.node_of_slot(moving)
    log, sink = new_log()
    async with RedisEventBus.from_url(cluster3.url, log) as bus, \
            make_worker(cluster3.url, log, worker_id="w1"):
        for n in range(1, 6):
            await bus.publish_many([step(sid, n) for sid in sids])
        await settled(cluster3.url, dict.fromkeys(sids, 5))
        # A resharding while the call runs: its stream, group, snapshot and lease
        # move to another node; the worker's reads, saves and acks must follow.
        await asyncio.to_thread(cluster3.move_slot, moving, (source + 1) % 3)
        for n in range(6, 11):
            await bus.publish_many([step(sid, n) for sid in sids])
        await settled(cluster3.url, dict.fromkeys(sids, 10))
    for sid in sids:
        assert transitions(sink, sid) == [f"n-{n}" for n in range(1, 11)], sid
    assert sink.of_type("redis_rerouted")          # it noticed, re-read the slot map
    assert [r for r in sink.records if r["level"] == "ERROR"] == []
    assert sink.of_type("lease_lost") == []
