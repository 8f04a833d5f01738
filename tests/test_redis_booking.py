"""A booking mid-flow survives its worker (issue 16 §6): `turnchart worker` A runs the
example booking (offline responder, real tool calls) on a private Redis, takes a
party size and a detour to the opening hours, and is SIGKILLed; worker B adopts
the session from its snapshot with the chart's data (party_size 4) and BOOKING's
history (ASK_DATE), so "let's continue" resumes at the date question, not at
the start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.redis import RedisEventBus, RedisSnapshotStore
from adapters.redis.connection import open_client
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, NullSink
from tests.support.redis_server import RedisServer, read_log, signal_child

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "booking" / "config.yaml"
TURNCHART = str(Path(sys.executable).with_name("turnchart"))
SID = "booking-crash"


def start_worker(url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:        # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [TURNCHART, "worker", "--redis", url, "--config", str(CONFIG), "--worker-id", name,
             "--lease-ms", "1000"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def publish(url: str, event: str, payload: dict[str, Any] | None = None) -> None:
    async with RedisEventBus.from_url(url, EventLog(NullSink(), RealClock())) as bus:
        await bus.publish_many([VoiceEvent(event_type=event, session_id=SID, source="test",
                                           timestamp=time.time(), payload=payload or {})])


async def say(url: str, words: str) -> None:
    await publish(url, "stt_final", {"text": words, "is_final": True})


def moves(log: Path) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']}" for r in read_log(log)
            if r["event_type"] == "state_transition" and r["session_id"] == SID]


def answers(log: Path) -> list[str]:
    return [r["data"]["payload"]["text"] for r in read_log(log)
            if r["session_id"] == SID and r["event_type"] == "event_received"
            and r["data"]["event"] == "response_ready"]


async def until(check: Any, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n"
                                 + log.read_text(errors="replace")[-3000:])
        await asyncio.sleep(0.1)


async def test_a_worker_killed_mid_flow_resumes_with_its_data_and_history(
        server: RedisServer, tmp_path: Path) -> None:
    url = server.url
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a = start_worker(url, "A", log_a)
    try:
        await publish(url, "client_connected")
        await until(lambda: "IDLE → LISTENING" in moves(log_a), "A adopts the call", log_a)
        await say(url, "a table for four please")
        await until(lambda: moves(log_a).count("SPEAKING → LISTENING") == 1, "first answer",
                    log_a)
        await say(url, "when are you open")
        await until(lambda: "ASK_DATE → HOURS" in moves(log_a), "the detour", log_a)
        async with open_client(url, decode_responses=True) as redis:
            store = RedisSnapshotStore(redis)
            deadline = time.monotonic() + 20
            while True:                   # the step that entered HOURS is saved
                snap = await store.load(SID)
                if snap is not None and "HOURS" in snap.configuration:
                    break
                assert time.monotonic() < deadline, snap
                await asyncio.sleep(0.05)
    finally:
        signal_child(a, signal.SIGKILL)   # mid-flow: no release, no goodbye
    assert a.returncode == -signal.SIGKILL
    assert snap.context["data"]["party_size"] == 4
    assert snap.context["history"] == {"BOOKING": ["ASK_DATE"]}
    assert answers(log_a)[0] == "A table for 4. Which day would you like?"

    b = start_worker(url, "B", log_b)
    try:
        await until(lambda: any(r["event_type"] == "session_resumed" and r["session_id"] == SID
                                for r in read_log(log_b)), "B resumes the call", log_b)
        # B restarts what A was doing (answering, or speaking the answer); then it listens
        await until(lambda: "SPEAKING → LISTENING" in moves(log_b), "B back to listening",
                    log_b)
        await say(url, "ok let's continue")
        await until(lambda: "HOURS → ASK_DATE" in moves(log_b), "history resumes", log_b)
        await until(lambda: answers(log_b)[-1:] == ["A table for 4. Which day would you like?"],
                    "the date question with the kept party size", log_b)
        await until(lambda: moves(log_b).count("SPEAKING → LISTENING") == 2,
                    "the question is asked", log_b)
        await say(url, "tomorrow")
        await until(lambda: "ASK_DATE → ASK_TIME" in moves(log_b), "the flow goes on", log_b)
    finally:
        signal_child(b, signal.SIGTERM)
    lines = read_log(log_b)
    assert len([r for r in lines if r["event_type"] == "session_resumed"
                and r["session_id"] == SID]) == 1
    errors = [(r["event_type"], r["message"], r.get("data")) for r in lines
              if r["level"] == "ERROR"]
    assert not errors, errors
    assert not [r for r in read_log(log_b) if r["event_type"] == "session_started"
                and r["session_id"] == SID]                     # resumed, not restarted
