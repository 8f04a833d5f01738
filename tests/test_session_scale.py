"""1,000 sessions at once on the virtual clock: random (seeded) turns, repeated
transcripts, barge-ins and hang-ups. Nothing leaks, nothing is spoken out of
turn, and no turn is answered twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.manager import SessionManager
from engine.tools.fakes import FakePlayback, FakeSettings, fake_ports

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = 1000
SEED = 20261122
Step = tuple[float, str, str, dict[str, Any]]


def script(rng: random.Random, sid: str) -> list[Step]:
    """One caller: connect, a few turns, each maybe interrupted, maybe a hang-up."""
    t = rng.uniform(0, 1000)
    steps: list[Step] = [(t, sid, "client_connected", {})]
    for turn in range(rng.randint(1, 3)):
        t += rng.uniform(20, 900)
        words = {"text": f"question {turn}", "is_final": True}
        steps.append((t, sid, "stt_final", words))
        if rng.random() < 0.2:      # STT repeats itself 10 ms later
            steps.append((t + 10, sid, "stt_final", words))
        roll = rng.random()
        if roll < 0.45:             # interrupt while thinking or while speaking
            t += rng.uniform(1, 1100)
            steps.append((t, sid, "barge_in", {"reason": "user spoke"}))
        elif roll < 0.55:
            t += rng.uniform(1, 1100)
            steps.append((t, sid, "client_disconnected", {}))
            break
        t += rng.uniform(0, 1200)
    return steps


async def test_a_thousand_sessions_leak_nothing_and_never_answer_twice() -> None:
    registry = default_registry()
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", registry)
    clock = VirtualClock()
    sink = ListSink()
    log = EventLog(sink, clock, level="DEBUG")
    ports = fake_ports(clock, FakeSettings(respond_ms=300, speak_ms=600, tts_chunk_ms=100))
    rng = random.Random(SEED)
    sids = [f"caller-{i:04d}" for i in range(SESSIONS)]
    steps = sorted((s for sid in sids for s in script(rng, sid)), key=lambda s: (s[0], s[1]))

    manager = SessionManager(chart, registry, ports, clock, log)
    async with manager:
        for sid in sids:
            await manager.open(sid)
        assert manager.live_tasks() == SESSIONS
        for at, sid, event, payload in steps:
            await clock.advance_to(at)
            assert manager.deliver({"event_type": event, "session_id": sid, "source": "scale",
                                    "timestamp": clock.wall(), "payload": payload})
        await clock.advance_to(steps[-1][0] + 5000)
        busy = manager.live_tasks()
        assert busy >= SESSIONS    # every consumer still alive, waiting for events
    assert manager.live_tasks() == 0
    assert manager.sessions == {}
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()

    # nothing was played while the contract said playback is stopped
    assert log.counts["contract_violation"] == 0
    playback: dict[str, str] = {}
    live: dict[tuple[str, str], int] = defaultdict(int)
    answered: dict[str, Counter[str]] = defaultdict(Counter)
    for r in sink.records:
        sid, kind, data = r["session_id"], r["event_type"], r["data"]
        if kind == "contract_applied":
            playback[sid] = data["playback"]
        elif kind == "audio_out":
            assert playback[sid] == "streaming", r
        elif kind == "activity_started":
            live[sid, data["activity"]] += 1
            assert live[sid, data["activity"]] == 1, f"two {data['activity']} tasks in {sid}"
        elif kind in ("activity_done", "activity_failed", "activity_cancelled"):
            live[sid, data["activity"]] -= 1
        elif kind == "state_transition" and (data["from"], data["to"]) == ("THINKING",
                                                                           "SPEAKING"):
            answered[sid][data["correlation_id"]] += 1
    assert all(n == 0 for n in live.values())
    double = {sid: c for sid, c in answered.items() if max(c.values()) > 1}
    assert double == {}, "a turn was answered twice"

    # each answer that played came from exactly one responder call
    responder_calls = Counter(sid for sid, _ in ports.responder.calls)  # type: ignore[attr-defined]
    for sid, turns in answered.items():
        assert sum(turns.values()) <= responder_calls[sid]
    assert isinstance(ports.playback, FakePlayback)
    audio_lines = Counter(r["session_id"] for r in sink.records if r["event_type"] == "audio_out")
    assert audio_lines == Counter({k: v for k, v in ports.playback.written.items() if v})

    # the run exercised what it claims to: answers, interrupts, hang-ups, duplicates
    moves = Counter(f"{r['data']['from']}→{r['data']['to']}"
                    for r in sink.records if r["event_type"] == "state_transition")
    assert moves["IDLE→LISTENING"] == SESSIONS
    assert moves["THINKING→SPEAKING"] > 500
    assert moves["THINKING→INTERRUPT"] > 100 and moves["SPEAKING→INTERRUPT"] > 100
    assert moves["SPEAKING→IDLE"] + moves["THINKING→IDLE"] > 20
    rejected = [r for r in sink.records if r["event_type"] == "transition_rejected"
                and r["data"]["event"] == "stt_final" and r["data"]["state"] == "THINKING"]
    assert len(rejected) > 100
    stale = [r for r in sink.records if r["event_type"] == "event_stale"]
    assert all(r["data"]["event"] in ("response_ready", "playback_done", "error",
                                      "filler_due", "ready_after_interrupt") for r in stale)
