"""Soak: many simulated callers on the real clock through the real `SessionManager` (issue 7).

Each caller connects, takes turns (partial transcripts, a final one, the
answer spoken back), sometimes talks over the answer (barge-in), sometimes
sends a malformed event, and sometimes hangs up and calls back, at
`rate_multiplier` times the pace of a real call. The ports are the engine's
fake playback and filler plus a responder and a speech engine whose times
come from realistic ranges divided by the same multiplier; the chart's own
timers (the 600 ms filler) keep their real length. What comes out: events/s,
step time and event-to-transition latency percentiles, event-loop lag, RSS
over time and its growth per hour (a linear fit after warm-up), the tasks
still alive after every session closed, ERROR lines, contract violations, and
whether every session ended.
Run: `turnchart bench soak --sessions 1000 --duration-s 60 --rate-multiplier 10`.
"""

from __future__ import annotations

import asyncio
import math
import random
import resource
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import machine
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, NullSink
from engine.runtime.manager import SessionManager
from engine.runtime.ports import AudioChunk, Ports
from engine.runtime.session import Session
from engine.runtime.snapshot import MemorySnapshotStore
from engine.runtime.trace import (
    ContractViolation,
    EventInvalid,
    EventReceived,
    EventStale,
    InternalTransition,
    SessionClosed,
    SessionFailed,
    SessionStarted,
    StateTransition,
    TimerFired,
    TraceEvent,
    TransitionRejected,
)
from engine.tools.fakes import FakeFiller, FakePlayback

ROOT = Path(__file__).resolve().parent.parent
CHART_PATH = ROOT / "charts" / "voice_turn.yaml"

# What callers say, and what the responder answers (speech time follows the word count).
ANSWERS: dict[str, str] = {
    "hello": "Hi there, how can I help?",
    "what time is it": "It is a quarter past ten in the morning.",
    "tell me a story": ("Once upon a time a small robot learned to listen before it spoke, "
                        "and everyone it met felt heard."),
    "what is the weather": "Sunny with a light breeze, around twenty degrees.",
    "thanks": "You are welcome.",
    "mumble": "",                                      # an empty answer: the floor goes back
}
SLOW_QUESTION = "tell me everything"                   # slower than the chart's 600 ms filler
WORD_S = 0.35                                          # real seconds of speech per word


@dataclass(frozen=True)
class Pace:
    """A real call's timings in real seconds, and how often each thing happens."""

    think_s: tuple[float, float] = (1.0, 4.0)       # silence before the user speaks
    partials: tuple[int, int] = (0, 3)              # stt_partial lines before the final one
    partial_gap_s: float = 0.3
    respond_s: tuple[float, float] = (0.3, 1.2)     # the responder's answer time
    slow_respond_s: float = 8.0                     # slow answers: the filler plays
    tts_chunk_s: float = 0.5                        # audio per synthesised chunk
    barge_in_p: float = 0.25                        # talk over the answer
    slow_p: float = 0.03
    invalid_p: float = 0.02                         # a malformed event from the front-end
    hang_up_p: float = 0.08                         # per turn: hang up, call back later
    redial_s: tuple[float, float] = (0.5, 3.0)


class LogHistogram:
    """Percentiles in constant memory: buckets 1 % wide from 1 µs up."""

    _BASE = math.log(1.01)

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        self.buckets[int(math.log(max(ms, 0.001) / 0.001) / self._BASE)] += 1
        self.count += 1
        self.max = max(self.max, ms)

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(self.max, 0.001 * math.exp((bucket + 1) * self._BASE))
        return self.max

    def summary(self) -> dict[str, float]:
        return {"n": self.count, "p50": round(self.percentile(50), 3),
                "p99": round(self.percentile(99), 3), "p999": round(self.percentile(99.9), 3),
                "max": round(self.max, 3)}


_STEP_ENDS = (StateTransition, InternalTransition, TransitionRejected, EventStale)


class SoakSink:
    """A trace listener that keeps figures, never events (memory stays flat): step
    times from `event_received` → outcome, latencies from `state_transition`, ERROR
    events by kind; and wakes callers waiting for their session to enter a state."""

    def __init__(self) -> None:
        self.step_ms = LogHistogram()
        self.event_latency_ms = LogHistogram()
        self.errors: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.invalid_fields: Counter[str] = Counter()
        self.non_json = 0
        self._received_at: dict[str, float] = {}
        self.waiters: dict[str, tuple[frozenset[str], asyncio.Future[None]]] = {}

    def __call__(self, event: TraceEvent) -> None:
        sid = event.session_id
        if event.level == "ERROR":
            detail = getattr(event, "event", None) or getattr(event, "reason", None) or ""
            self.errors[f"{event.event_type}:{detail}"] += 1
        if isinstance(event, EventReceived):
            self._received_at[sid] = event.t_ms
            return
        if isinstance(event, _STEP_ENDS):
            started = self._received_at.pop(sid, None)
            if started is not None:
                self.step_ms.add(event.t_ms - started)
        if isinstance(event, StateTransition):
            self.event_latency_ms.add(event.latency_ms)
            waiter = self.waiters.get(sid)
            if waiter is not None and event.target in waiter[0] and not waiter[1].done():
                waiter[1].set_result(None)
        elif isinstance(event, TransitionRejected):
            self.rejections[f"{event.event} in {event.state}: {event.reason}"] += 1
        elif isinstance(event, EventInvalid):
            self.invalid_fields[str(event.field)] += 1


class ScaledResponder:
    """Answers from `ANSWERS` after a realistic delay divided by the multiplier."""

    def __init__(self, rng: random.Random, pace: Pace, multiplier: float) -> None:
        self.rng, self.pace, self.multiplier = rng, pace, multiplier

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        if text == SLOW_QUESTION:
            delay = self.pace.slow_respond_s
        else:
            delay = self.rng.uniform(*self.pace.respond_s)
        await asyncio.sleep(delay / self.multiplier)
        yield ANSWERS.get(text, "Here is everything I know about that.")


class ScaledSpeech:
    """Speech as long as the words take to say, in `tts_chunk_s` chunks, played fast."""

    def __init__(self, pace: Pace, multiplier: float) -> None:
        self.pace, self.multiplier = pace, multiplier
        self._chunk = b"\x00\x00" * int(16_000 * pace.tts_chunk_s)   # 16 kHz, 16-bit

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        left = speech_s(text)
        while left > 0:
            part = min(self.pace.tts_chunk_s, left)
            await asyncio.sleep(part / self.multiplier)
            left -= part
            yield AudioChunk(self._chunk, part * 1000.0)


def speech_s(text: str) -> float:
    return len(text.split()) * WORD_S


@dataclass
class CallerStats:
    calls: int = 0
    turns: int = 0
    barge_ins: int = 0
    hang_ups: int = 0
    invalid_sent: int = 0
    sent: int = 0
    stuck: list[str] = field(default_factory=list)


class Caller:
    """One phone line: calls, talks, interrupts, hangs up and calls back until `until`."""

    def __init__(self, index: int, manager: SessionManager, sink: SoakSink, clock: RealClock,
                 pace: Pace, multiplier: float, rng: random.Random, stats: CallerStats) -> None:
        self.sid = f"soak-{index:05d}"
        self.manager, self.sink, self.clock = manager, sink, clock
        self.pace, self.multiplier, self.rng, self.stats = pace, multiplier, rng, stats
        self.wait_s = 30.0   # a state not reached in this long is a stuck session

    async def run(self, until: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.pace.think_s[1]) / self.multiplier)
        while time.monotonic() < until:
            await self._call(until)
            if time.monotonic() < until:
                await self._pause(self.rng.uniform(*self.pace.redial_s))

    async def _call(self, until: float) -> None:
        session = await self.manager.open(self.sid)
        self.stats.calls += 1
        self._send(session, "client_connected", {})
        await self._reach(session, {"LISTENING"})
        while time.monotonic() < until:
            await self._turn(session)
            if self.rng.random() < self.pace.hang_up_p:
                self.stats.hang_ups += 1
                break
        self._send(session, "client_disconnected", {})
        await self._reach(session, {"IDLE"})
        await self.manager.close(self.sid)

    async def _turn(self, session: Session) -> None:
        pace, rng = self.pace, self.rng
        await self._pause(rng.uniform(*pace.think_s))
        if rng.random() < pace.invalid_p:   # a front-end bug: a transcript without text
            self.stats.invalid_sent += 1
            self._send(session, "stt_final", {"text": None, "is_final": "yes"})
        question = SLOW_QUESTION if rng.random() < pace.slow_p else rng.choice(sorted(ANSWERS))
        words = question.split()
        for i in range(rng.randint(*pace.partials)):
            self._send(session, "stt_partial", {"text": " ".join(words[:i + 1])})
            await self._pause(pace.partial_gap_s)
        self._send(session, "stt_final", {"text": question, "is_final": True})
        self.stats.turns += 1
        await self._reach(session, {"THINKING"})
        answer = ANSWERS.get(question, "")
        if answer and rng.random() < pace.barge_in_p:
            await self._reach(session, {"SPEAKING", "LISTENING"})
            if session.state == "SPEAKING":
                # Like the audio adapter: speech while the microphone is gated interrupts.
                await self._pause(rng.uniform(0.2, 0.7) * speech_s(answer))
                if session.contract.get("microphone") == "gated":
                    self.stats.barge_ins += 1
                    self._send(session, "barge_in", {"reason": "user speech"})
        await self._reach(session, {"LISTENING"})

    def _send(self, session: Session, event: str, payload: dict[str, Any]) -> None:
        self.stats.sent += 1
        self.manager.deliver({"event_type": event, "session_id": self.sid, "source": "soak",
                              "timestamp": self.clock.wall(),
                              "correlation_id": session.next_correlation_id(),
                              "payload": payload})

    async def _pause(self, real_s: float) -> None:
        await asyncio.sleep(real_s / self.multiplier)

    async def _reach(self, session: Session, states: set[str]) -> None:
        """Wait until the session enters one of `states` (already there: return at once)."""
        if session.state in states:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sink.waiters[self.sid] = (frozenset(states), future)
        try:
            await asyncio.wait_for(future, self.wait_s)
        except TimeoutError:
            self.stats.stuck.append(f"{self.sid} never reached {sorted(states)} "
                                    f"(stuck in {session.state})")
        finally:
            self.sink.waiters.pop(self.sid, None)


def rss_mb() -> float:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    sessions: int
    tasks: int


async def _sample(samples: list[Sample], manager: SessionManager, start: float,
                  every_s: float) -> None:
    while True:
        samples.append(Sample(round(time.monotonic() - start, 3), round(rss_mb(), 2),
                              len(manager.sessions), len(asyncio.all_tasks())))
        await asyncio.sleep(every_s)


async def _probe_lag(lag: LogHistogram, every_s: float = 0.05) -> None:
    """How late the event loop wakes a sleeper: a busy loop shows here first."""
    while True:
        due = time.monotonic() + every_s
        await asyncio.sleep(every_s)
        lag.add(max(0.0, time.monotonic() - due) * 1000.0)


def rss_trend(samples: list[Sample], warmup_s: float) -> dict[str, float | bool]:
    """Least-squares slope of RSS after warm-up, per hour, and the noise around it."""
    kept = [s for s in samples if s.t_s >= warmup_s]
    if len(kept) < 3:
        return {"growth_mb_per_hour": 0.0, "noise_mb": 0.0, "growth_in_window_mb": 0.0,
                "flat_within_noise": True, "samples": len(kept)}
    xs, ys = [s.t_s for s in kept], [s.rss_mb for s in kept]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    residuals = [y - (my + slope * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    noise = statistics.pstdev(residuals)
    window = xs[-1] - xs[0]
    growth = slope * window
    # Flat: what the fit says RSS gained over the window is within the noise of the
    # samples around it (3 sigma), or under 1 MB (allocator granularity).
    return {"growth_mb_per_hour": round(slope * 3600.0, 1), "noise_mb": round(noise, 2),
            "growth_in_window_mb": round(growth, 2), "window_s": round(window, 1),
            "flat_within_noise": growth <= max(3.0 * noise, 1.0), "samples": len(kept)}


async def _soak(sessions: int, duration_s: float, multiplier: float, seed: int,
                pace: Pace, sample_s: float) -> dict[str, Any]:
    registry = default_registry()
    chart = load_chart(CHART_PATH, registry)
    clock = RealClock()
    rng = random.Random(seed)
    sink = SoakSink()
    log = EventLog(NullSink(), clock, level="INFO")
    log.subscribe(sink)
    ports = Ports(playback=FakePlayback(), filler=FakeFiller(),
                  responder=ScaledResponder(random.Random(seed + 1), pace, multiplier),
                  speech=ScaledSpeech(pace, multiplier))
    stats = CallerStats()
    samples: list[Sample] = []
    lag = LogHistogram()
    main = asyncio.current_task()
    start = time.monotonic()
    async with SessionManager(chart, registry, ports, clock, log, MemorySnapshotStore()) as mgr:
        async with asyncio.TaskGroup() as outer:
            sampler = outer.create_task(_sample(samples, mgr, start, sample_s), name="soak:rss")
            prober = outer.create_task(_probe_lag(lag), name="soak:lag")
            until = start + duration_s
            async with asyncio.TaskGroup() as callers:
                for i in range(sessions):
                    caller = Caller(i, mgr, sink, clock, pace, multiplier,
                                    random.Random(rng.random()), stats)
                    callers.create_task(caller.run(until), name=f"soak:caller:{i}")
            ran_s = time.monotonic() - start
            await mgr.close_all()
            sampler.cancel()
            prober.cancel()
        live_in_manager = mgr.live_tasks()
        open_at_end = len(mgr.sessions)
    samples.append(Sample(round(time.monotonic() - start, 3), round(rss_mb(), 2), 0,
                          len(asyncio.all_tasks())))
    await asyncio.sleep(0)
    leftover = sorted(t.get_name() for t in asyncio.all_tasks() if t is not main and not t.done())
    counts = {cls: log.counts[cls.kind] for cls in (
        StateTransition, InternalTransition, EventReceived, SessionStarted, SessionClosed,
        SessionFailed, ContractViolation, EventInvalid, EventStale, TimerFired)}
    applied = counts[StateTransition] + counts[InternalTransition]
    received = counts[EventReceived]
    warmup_s = min(30.0, duration_s * 0.25)
    trend = rss_trend(samples[:-1], warmup_s)
    errors = sum(sink.errors.values())
    return {
        "benchmark": "soak", "machine": machine(), "chart": "charts/voice_turn.yaml",
        "sessions": sessions, "duration_s": duration_s, "ran_s": round(ran_s, 2),
        "rate_multiplier": multiplier, "seed": seed, "pace": asdict(pace),
        "calls": stats.calls, "turns": stats.turns, "barge_ins": stats.barge_ins,
        "hang_ups": stats.hang_ups, "events_sent": stats.sent,
        "events_received": received, "events_applied": applied,
        "events_per_s": round(received / ran_s, 1) if ran_s else 0.0,
        "transitions_per_s": round(counts[StateTransition] / ran_s, 1) if ran_s else 0.0,
        "step_ms": sink.step_ms.summary(),
        "event_to_transition_ms": sink.event_latency_ms.summary(),
        "loop_lag_ms": lag.summary(),
        "rss_mb": {"start": samples[0].rss_mb, "end": samples[-1].rss_mb,
                   "max": max(s.rss_mb for s in samples),
                   "warmup_s": warmup_s, **trend},
        "sessions_started": counts[SessionStarted],
        "sessions_closed": counts[SessionClosed],
        "sessions_open_at_end": open_at_end,
        "sessions_failed": counts[SessionFailed],
        "tasks_alive_after_close": len(leftover), "leftover_tasks": leftover[:20],
        "manager_live_tasks_after_close": live_in_manager,
        "error_lines": errors, "error_lines_by_kind": dict(sink.errors),
        "contract_violations": counts[ContractViolation],
        "invalid_sent": stats.invalid_sent, "event_invalid_lines": counts[EventInvalid],
        "invalid_fields": dict(sink.invalid_fields),
        "rejections": dict(sink.rejections.most_common(10)),
        "stale_events": counts[EventStale], "timers_fired": counts[TimerFired],
        "stuck_sessions": len(stats.stuck), "stuck": stats.stuck[:10],
        "rss_samples": [[s.t_s, s.rss_mb, s.sessions, s.tasks] for s in samples],
        "targets": {"tasks_alive_after_close_is_0": not leftover and live_in_manager == 0,
                    "rss_flat_within_noise": bool(trend["flat_within_noise"]),
                    "no_error_lines": errors == 0,
                    "no_contract_violations": counts[ContractViolation] == 0,
                    "every_session_ended": (counts[SessionStarted] == counts[SessionClosed]
                                            and open_at_end == 0 and not stats.stuck),
                    "every_invalid_event_explained": counts[EventInvalid] == stats.invalid_sent},
    }


def run(sessions: int = 1000, duration_s: float = 60.0, rate_multiplier: float = 10.0,
        seed: int = 7, sample_s: float | None = None) -> dict[str, Any]:
    if sessions < 1 or duration_s <= 0 or rate_multiplier <= 0:
        raise ValueError("soak needs sessions >= 1, duration_s > 0 and rate_multiplier > 0")
    every = sample_s if sample_s is not None else min(5.0, max(0.25, duration_s / 60.0))
    return asyncio.run(_soak(sessions, duration_s, rate_multiplier, seed, Pace(), every))
