"""A worker process killed with SIGKILL mid-step: a second worker resumes every
session from its snapshot, re-reads what was pending, applies nothing twice
and loses nothing.

The first worker is stopped dead by a test hook (TURNCHART_REDIS_PAUSE):

- `before_ack:N`: at the N-th step that is applied and saved (the save script
  acknowledged the entry too) but not yet finished in the worker's own
  bookkeeping; the session's later entries in A's inbox are pending;
- `received:N`: at the N-th entry read from Redis but not yet handed to its
  session (pending, not applied).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.redis import Keys, RedisEventBus, RedisSnapshotStore
from adapters.redis.connection import open_client
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, NullSink
from tests.support.redis_server import (
    RedisServer,
    read_log,
    ring_state,
    signal_child,
    start_worker_process,
    wait_for_log,
    write_ring_chart,
)

KEYS = Keys()
SESSIONS = [f"c{i}" for i in range(5)]
PER_SESSION = 20


def step(sid: str, n: int) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="test", timestamp=time.time(),
                      correlation_id=f"n-{n}", payload={"n": n})


async def publish_range(url: str, first: int, last: int) -> None:
    log = EventLog(NullSink(), RealClock())
    async with RedisEventBus.from_url(url, log) as bus:
        await bus.publish_many([step(sid, n) for n in range(first, last + 1)
                                for sid in SESSIONS])


async def wait_all_applied(url: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with open_client(url, decode_responses=True) as redis:   # one server or a cluster
        store = RedisSnapshotStore(redis)
        while True:
            snaps = {sid: await store.load(sid) for sid in SESSIONS}
            pend = [int((await redis.xpending(KEYS.stream(sid), "turnchart"))["pending"])
                    for sid in SESSIONS]
            if all(s is not None and s.turn == PER_SESSION for s in snaps.values()) \
                    and sum(pend) == 0:
                return snaps
            if time.monotonic() > deadline:
                turns = {sid: (s.turn if s else None) for sid, s in snaps.items()}
                raise AssertionError(f"not all applied: turns {turns}, pending {pend}")
            await asyncio.sleep(0.05)


def transitions(lines: list[dict[str, Any]], sid: str) -> list[str]:
    return [r["data"]["correlation_id"] for r in lines
            if r["event_type"] == "state_transition" and r["session_id"] == sid]


def steps(first: int, last: int) -> list[str]:
    return [f"n-{n}" for n in range(first, last + 1)]


def stop(proc: subprocess.Popen[bytes]) -> int:
    signal_child(proc, signal.SIGTERM)
    return proc.returncode


@pytest.mark.parametrize("pause", ["before_ack:23", "received:30"])
async def test_sigkill_mid_step_then_a_second_worker_resumes_exactly_once(
        server: RedisServer, tmp_path: Path, pause: str) -> None:
    await sigkill_mid_step_then_resume(server.url, tmp_path, pause)


async def sigkill_mid_step_then_resume(url: str, tmp_path: Path, pause: str) -> None:
    """Worker A is SIGKILLed at `pause`; worker B resumes every session exactly once
    (also run on a Redis Cluster by tests/test_redis_cluster.py)."""
    chart = write_ring_chart(tmp_path)
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    await publish_range(url, 1, PER_SESSION // 2)
    a = start_worker_process(url, chart, "A", log_a, pause=pause)
    try:
        paused = await asyncio.to_thread(wait_for_log, log_a, "test_paused", 20.0, a)
    finally:
        signal_child(a, signal.SIGKILL)          # dead mid-step: no release, no ack
    assert a.returncode == -signal.SIGKILL
    await publish_range(url, PER_SESSION // 2 + 1, PER_SESSION)
    b = start_worker_process(url, chart, "B", log_b)
    try:
        snaps = await wait_all_applied(url)
    finally:
        code = stop(b)
    assert code == 0, log_b.read_text()[-3000:]

    a_lines, b_lines = read_log(log_a), read_log(log_b)
    adopted = {r["session_id"]: r["data"] for r in b_lines if r["event_type"] == "session_adopted"}
    for sid in SESSIONS:
        snap = snaps[sid]
        # turn counts the steps applied to the saved state: 20 means none twice, none lost.
        assert (snap.turn, snap.configuration[-1]) == (PER_SESSION, ring_state(PER_SESSION))
        by_a = transitions(a_lines, sid)
        by_b = transitions(b_lines, sid)
        saved = adopted[sid]["turn"]            # what A had saved when it died
        assert by_a[:saved] == steps(1, saved), sid
        assert by_b == steps(saved + 1, PER_SESSION), sid
        # At most the one step in flight at the SIGKILL ran in A without being
        # saved (its effects ran; its state never existed); B applied it for good.
        assert by_a[saved:] in ([], steps(saved + 1, saved + 1)), sid
    started_by_a = {r["session_id"] for r in a_lines if r["event_type"] == "session_started"}
    resumed_by_b = {r["session_id"] for r in b_lines if r["event_type"] == "session_resumed"}
    assert started_by_a and started_by_a <= resumed_by_b
    assert not [r for r in b_lines if r["event_type"] == "session_started"
                and r["session_id"] in started_by_a]
    paused_sid = paused["session_id"]
    claimed = {r["session_id"] for r in b_lines if r["event_type"] == "entries_claimed"}
    assert paused_sid in claimed
    # A step's save and its XACK are one script: no applied entry was left pending
    # behind a save, so B finds nothing it has to acknowledge as applied before
    # (the paused `received` entry was never applied: B applies it).
    duplicates = {(r["session_id"], r["data"]["entry_id"]) for r in b_lines
                  if r["event_type"] == "event_duplicate" and r["data"]["applied"]}
    assert duplicates == set(), duplicates
    assert [r for r in b_lines if r["level"] == "ERROR"] == []
    async with open_client(url, decode_responses=True) as redis:
        assert all([await redis.get(KEYS.lease(sid)) is None for sid in SESSIONS])
