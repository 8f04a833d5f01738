"""Redis Streams bus, measured in one run (issue 6; `turnchart bench redis`).

1. The `XADD` ceiling of this machine: a raw redis-py loop (one command per
   round trip, and pipelined in batches), plus `redis-benchmark` when it is
   installed, all with an entry the size of a real VoiceEvent.
2. Publish → transition-applied latency, p50/p99, with 1 and with 1,000
   active sessions owned by one worker. "Applied" means the step finished:
   the transition ran and its snapshot is saved in Redis, timed from the
   producer's `time.time()` before its publish. Measured with the producer
   in its own process (a deployment's shape) and in the worker's event loop
   (one process less competing for the CPUs: on a 2-vCPU box that is most of
   the tail), and each time twice, side by side: `before` is the read path
   this adapter had until lanes (above 64 streams: block on the activity
   hints, then XREADGROUP the streams that moved; the XACK in its own round
   trip after the save), `after` is today's default (blocking reads in lanes
   of at most 32 streams; the save script also XACKs). `targets` says which
   target is met. `latency_floor` is what no path can beat on this machine: a
   bare XADD from another process to a client blocked in XREAD;
   `machine_hiccups`, how late the machine wakes a process that sleeps 1 ms.
   `load_sweep`: 1,000 sessions at lighter loads too, each next to the floor
   at that load and the cores it kept busy, so that a tail the machine causes
   is told apart from one turnchart adds (and 1 vs 1,000 sessions at one rate).
3. Events/s with 1 and 2 worker processes (`python -m adapters.redis`):
   the workers own every session, are frozen (SIGSTOP) while a backlog is
   published, then resumed (SIGCONT); the rate is backlog / time to drain it.
   The CPU each process used meanwhile says what bounds the rate.

Without `redis_url`, a private redis-server is started on a free port in a
temp dir (persistence off) and stopped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from adapters.redis.bus import RedisEventBus
from adapters.redis.keys import Keys
from adapters.redis.worker import RedisWorker
from benchmarks.common import machine
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, NullSink
from engine.runtime.manager import SessionManager
from engine.runtime.snapshot import MemorySnapshotStore
from engine.runtime.trace import StateTransition, TraceEvent
from engine.tools.fakes import fake_ports

ROOT = Path(__file__).resolve().parent.parent
KEYS = Keys()
RING = 7
LATENCY_TARGET_MS = 2.0
TARGET_RATIO = 1.5        # worker CPU per applied event over the session step (issue 15)
VARIANTS = {
    "before": "above 64 streams: block on the activity hints, then XREADGROUP the streams "
              "that moved (two hops); XACK in its own round trip after the save",
    "after": "blocking XREADGROUPs in lanes of at most 32 streams (one hop); the save "
             "script also XACKs the entry, sent from the session's own task when the "
             "pipeline is idle",
}


def variant_options(variant: str, sessions: int) -> dict[str, Any]:
    """RedisWorker options that give one read path (see VARIANTS): `before` is one
    blocking read up to 64 streams (as it was), hints above."""
    if variant == "after":
        return {}
    return {"ack_with_save": False, "block_all_max": 64,
            **({"max_lanes": 0} if sessions > 64 else {"max_lanes": 1})}
CHART = "\n".join([
    "chart: ring", "version: 1", "initial: S0",
    "contracts: {microphone: [open], playback: [stopped]}",
    "events: {step: {payload: {n: int}}}", "states:",
    *[f"  S{i}: {{contract: {{microphone: open, playback: stopped}}, "
      f"on: {{step: S{(i + 1) % RING}}}}}" for i in range(RING)], ""])


# ------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _private_redis() -> Iterator[tuple[str, int | None]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="turnchart-bench-") as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", tmp, "--save", "", "--appendonly", "no",
                                 "--daemonize", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), \
                        socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def _cpu_s(pid: int | None) -> float:
    """User+system CPU seconds of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _event(sid: str, n: int) -> VoiceEvent:
    return VoiceEvent(event_type="step", session_id=sid, source="bench", timestamp=time.time(),
                      correlation_id=f"turn-{n}", payload={"n": n},
                      metadata={"pad": "x" * 64})


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(_pct(ms, 0.50), 3), "p90_ms": round(_pct(ms, 0.90), 3),
            "p99_ms": round(_pct(ms, 0.99), 3), "max_ms": round(max(ms), 3),
            "mean_ms": round(statistics.fmean(ms), 3)}


# ------------------------------------------------------------ XADD ceiling
async def _xadd_ceiling(url: str, n: int, batch: int) -> dict[str, Any]:
    fields = {"event": _event("bench", 1).model_dump_json(), "eid": "0123456789abcdef01234567"}
    async with Redis.from_url(url, decode_responses=True) as r:
        await r.delete("bench:xadd")
        start = time.perf_counter()
        for _ in range(n):
            await r.xadd("bench:xadd", fields)      # type: ignore[arg-type]
        single = n / (time.perf_counter() - start)
        await r.delete("bench:xadd")
        start = time.perf_counter()
        for _ in range(n // batch):
            pipe = r.pipeline(transaction=False)
            for _ in range(batch):
                pipe.xadd("bench:xadd", fields)     # type: ignore[arg-type]
            await pipe.execute()
        piped = (n // batch) * batch / (time.perf_counter() - start)
        await r.delete("bench:xadd")
        # The bus's own publish (Lua: dedupe + XADD + trim check), same two ways.
        bus = RedisEventBus(r)
        events = [_event(f"p{i % 100}", i) for i in range(n)]
        await bus.announce(*{e.session_id for e in events})
        start = time.perf_counter()
        for e in events[: n // 2]:
            await bus.publish(e)
        publish_single = (n // 2) / (time.perf_counter() - start)
        start = time.perf_counter()
        rest = events[n // 2:]
        for i in range(0, len(rest), batch):
            await bus.publish_many(rest[i:i + batch])
        publish_piped = len(rest) / (time.perf_counter() - start)
        await r.flushdb()
    return {"entry_bytes": len(fields["event"]) + len(fields["eid"]),
            "redis_py_xadd_per_s": round(single), "redis_py_xadd_pipelined_per_s": round(piped),
            "pipeline_batch": batch,
            "bus_publish_per_s": round(publish_single),
            "bus_publish_many_per_s": round(publish_piped)}


def _redis_benchmark(url: str, n: int) -> dict[str, Any]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"available": False}
    port = url.rsplit(":", 1)[1].split("/")[0]
    payload = "x" * 300
    out: dict[str, Any] = {"available": True}
    for name, extra in (("p1_c50", ["-c", "50"]), ("p16_c50", ["-c", "50", "-P", "16"]),
                        ("p1_c1", ["-c", "1"])):
        result = subprocess.run([binary, "-p", port, "-n", str(n), "-q", *extra,
                                 "XADD", "bench:rb", "*", "event", payload],
                                capture_output=True, text=True, timeout=120)
        found = re.search(r"([\d.]+) requests per second", result.stdout)
        out[f"xadd_per_s_{name}"] = round(float(found.group(1))) if found else \
            result.stdout.strip()[-200:]
    with contextlib.suppress(Exception):
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", port, "DEL", "bench:rb"],
                       capture_output=True, timeout=10)
    return out


# ----------------------------------------------------------------- latency
class _Capture:
    """Trace listener keeping the engine's own transition latency (event timestamp →
    transition done) and counting ERROR events."""

    def __init__(self) -> None:
        self.transition_ms: list[float] = []
        self.errors = 0

    def __call__(self, event: TraceEvent) -> None:
        if isinstance(event, StateTransition):
            self.transition_ms.append(round(event.latency_ms, 3))
        elif event.level == "ERROR":
            self.errors += 1


class _Applied:
    """Worker hook: at `before_ack` (step applied, snapshot saved) the session's
    correlation id is the applied event's, which the producer set to its send
    time (`time.time()`, shared by processes on one machine)."""

    def __init__(self) -> None:
        self.worker: RedisWorker | None = None
        self.applied_ms: list[float] = []
        self.warm: set[str] = set()

    async def at(self, point: str, session_id: str, entry_id: str) -> None:
        if point != "before_ack" or self.worker is None or self.worker.manager is None:
            return
        session = self.worker.manager.get(session_id)
        if session is None:
            return
        try:
            sent = float(session.correlation_id)
        except ValueError:
            self.warm.add(session_id)           # a warm-up event
            return
        self.applied_ms.append((time.time() - sent) * 1000.0)


async def _produce(url: str, sids: list[str], events: int, rate_hz: float) -> None:
    """Open loop at `rate_hz`; each event's correlation id is its send time."""
    import random
    rng = random.Random(1)
    async with RedisEventBus.from_url(url, EventLog(NullSink(), RealClock())) as bus:
        await bus.announce(*sids)       # known already: the worker reads them again once,
        await asyncio.sleep(0.3)        # apart from the events that are timed
        start = time.perf_counter()
        for n in range(1, events + 1):
            sid = sids[0] if len(sids) == 1 else rng.choice(sids)
            t = time.time()
            await bus.publish(VoiceEvent(
                event_type="step", session_id=sid, source="bench", timestamp=t,
                correlation_id=f"{t:.6f}", payload={"n": n}, metadata={"pad": "x" * 64}))
            lag = start + n / rate_hz - time.perf_counter()
            if lag > 0:
                await asyncio.sleep(lag)


PRODUCER = """
import asyncio, sys
from benchmarks.redis_bench import _produce
url, prefix, sessions, events, rate = sys.argv[1:6]
asyncio.run(_produce(url, [f"{prefix}-{i}" for i in range(int(sessions))], int(events),
                     float(rate)))
"""

RAW_PRODUCER = """
import asyncio, sys, time
from redis.asyncio import Redis
async def main(url, events, rate):
    async with Redis.from_url(url) as r:
        await asyncio.sleep(0.3)
        start = time.perf_counter()
        for n in range(1, events + 1):
            await r.xadd("bench:floor", {"t": repr(time.time())})
            lag = start + n / rate - time.perf_counter()
            if lag > 0:
                await asyncio.sleep(lag)
url, events, rate = sys.argv[1:4]
asyncio.run(main(url, int(events), float(rate)))
"""


async def _floor(url: str, events: int, rate_hz: float) -> dict[str, Any]:
    """The floor under publish → applied on this machine: a bare XADD from another
    process to a client blocked in XREAD on that stream (no engine, no script,
    no save), at the same rate. Whatever this tail is, every path above pays it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    got: list[float] = []
    async with Redis.from_url(url, decode_responses=True) as r:
        await r.delete("bench:floor")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RAW_PRODUCER, url, str(events), str(rate_hz), cwd=str(ROOT),
            env=env)
        last = "$"
        while len(got) < events:
            reply: Any = await r.xread({"bench:floor": last}, block=2000, count=100)
            now = time.time()
            if not reply:
                break
            for _key, entries in reply:
                for entry_id, fields in entries:
                    got.append((now - float(fields["t"])) * 1000.0)
                    last = entry_id
        await child.wait()
        await r.delete("bench:floor")
    return {"events": events, "rate_hz": rate_hz, "xadd_to_blocked_xread": _summary(got)}


def _hiccups(seconds: float = 2.0, period_s: float = 0.001) -> dict[str, Any]:
    """How late this machine wakes a sleeping process (jHiccup's idea): a loop
    that asks for 1 ms sleeps and records how much later than asked it woke,
    with nothing else of ours running. Every latency above pays this tail."""
    late: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        time.sleep(period_s)
        late.append((time.perf_counter() - start - period_s) * 1000.0)
    return {"seconds": seconds, "sleep_ms": period_s * 1000, "oversleep": _summary(late)}


async def _latency(url: str, sessions: int, events: int, rate_hz: float,
                   producer: str = "process", variant: str = "after",
                   redis_pid: int | None = None) -> dict[str, Any]:
    """Worker here; the producer in its own process (as in a deployment) or,
    `producer="inline"`, in this event loop (one process less on the CPUs)."""
    registry = default_registry()
    chart = compile_text(CHART, "ring.yaml", registry)
    clock = RealClock()
    capture = _Capture()
    log = EventLog(NullSink(), clock, level="INFO")
    log.subscribe(capture)
    hooks = _Applied()
    prefix = f"L{sessions}{producer[0]}{variant[0]}"
    sids = [f"{prefix}-{i}" for i in range(sessions)]
    worker = RedisWorker(url, chart, registry, fake_ports(clock), log,
                         worker_id=f"bench-{prefix}", lease_ms=30_000, clock=clock, hooks=hooks,
                         freeze_gc=True, **variant_options(variant, sessions))
    hooks.worker = worker
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    async with RedisEventBus.from_url(url, EventLog(NullSink(), clock)) as bus, worker:
        # Warm up: every session adopted and stepped once.
        for i in range(0, len(sids), 500):
            await bus.publish_many([_event(sid, 0) for sid in sids[i:i + 500]])
        deadline = time.monotonic() + 60
        while len(hooks.warm) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up did not finish")
            await asyncio.sleep(0.01)
        gc.collect()
        gc.freeze()        # as run_worker does after start-up (DESIGN.md)
        capture.transition_ms.clear()
        cpu0 = (time.process_time(), _children_cpu_s(), _cpu_s(redis_pid))
        start = time.perf_counter()
        if producer == "inline":
            await _produce(url, sids, events, rate_hz)
        else:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PRODUCER, url, prefix, str(sessions), str(events),
                str(rate_hz), cwd=str(ROOT), env=env)
            await child.wait()
        deadline = time.monotonic() + 30
        while len(hooks.applied_ms) < events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu = (time.process_time() - cpu0[0], _children_cpu_s() - cpu0[1],
               _cpu_s(redis_pid) - cpu0[2])
        read_mode = worker.read_mode
        gc.unfreeze()
    await _forget_sessions(url, sids)     # the next run's worker must not adopt these
    return {"sessions": sessions, "events": events, "rate_hz": rate_hz,
            "achieved_hz": round(events / elapsed), "producer": producer,
            "variant": variant, "path": VARIANTS[variant],
            "publish_to_applied": _summary(hooks.applied_ms),
            "publish_to_transition_engine": _summary(capture.transition_ms),
            "error_lines": capture.errors, "read_mode": read_mode,
            # CPU per event while measuring: what competes for the cores
            "cpu_us_per_event": {
                "worker" if producer == "process" else "worker_and_producer":
                    round(cpu[0] / events * 1e6),
                **({"producer": round(cpu[1] / events * 1e6)} if producer == "process" else {}),
                **({"redis_server": round(cpu[2] / events * 1e6)} if redis_pid else {})},
            "pipeline_round_trips": worker.pipeline.round_trips if worker.pipeline else None,
            "pipeline_direct": worker.pipeline.direct if worker.pipeline else None,
            "reads": worker.stats["reads"]}


async def _forget_sessions(url: str, sids: list[str]) -> None:
    async with Redis.from_url(url, decode_responses=True) as redis:
        pipe = redis.pipeline(transaction=False)
        pipe.srem(KEYS.sessions, *sids)
        for sid in sids:
            pipe.delete(KEYS.stream(sid), KEYS.snapshot(sid), KEYS.lease(sid), KEYS.dedupe(sid))
        await pipe.execute()


# -------------------------------------------------------------- throughput
async def _all_turns(redis: Redis, sids: list[str], want: int) -> bool:
    pipe = redis.pipeline(transaction=False)
    for sid in sids:
        pipe.get(KEYS.snapshot(sid))
    return all(raw is not None and json.loads(raw)["turn"] >= want
               for raw in await pipe.execute())


async def _throughput(url: str, redis_pid: int | None, workers: int, sessions: int,
                      events: int, log_level: str) -> dict[str, Any]:
    per_session = max(1, events // sessions)
    sids = [f"T{workers}-{i}" for i in range(sessions)]
    with tempfile.TemporaryDirectory(prefix="turnchart-bench-") as tmp:
        chart = Path(tmp) / "ring.yaml"
        chart.write_text(CHART, encoding="utf-8")
        procs: list[subprocess.Popen[bytes]] = []
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("TURNCHART_REDIS_PAUSE", None)
        async with Redis.from_url(url, decode_responses=True) as redis, \
                RedisEventBus(redis, maxlen=0) as bus:
            await bus.publish_many([_event(sid, 0) for sid in sids])
            try:
                for w in range(workers):
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "adapters.redis", "--redis", url,
                         "--chart", str(chart), "--worker-id", f"bench-{w}",
                         "--lease-ms", "30000", "--log-level", log_level],
                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL))
                deadline = time.monotonic() + 60
                while True:        # every session adopted and, with 2, shared fairly
                    owners = await redis.mget([KEYS.lease(s) for s in sids])
                    counts = [owners.count(f"bench-{w}") for w in range(workers)]
                    if await _all_turns(redis, sids, 1) and sum(counts) == sessions \
                            and max(counts) - min(counts) <= max(4, sessions // 20):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"workers did not settle: {counts}")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                for p in procs:
                    os.kill(p.pid, signal.SIGSTOP)
                batch = [_event(sid, n) for n in range(1, per_session + 1) for sid in sids]
                for i in range(0, len(batch), 1000):
                    await bus.publish_many(batch[i:i + 1000])
                cpu0 = [_cpu_s(p.pid) for p in procs]
                redis_cpu0 = _cpu_s(redis_pid)
                start = time.perf_counter()
                for p in procs:
                    os.kill(p.pid, signal.SIGCONT)
                while not await _all_turns(redis, sids, 1 + per_session):
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - start
                cpu = [round((_cpu_s(p.pid) - c0) / elapsed, 2) for p, c0 in zip(procs, cpu0,
                                                                                  strict=True)]
                redis_cpu = round((_cpu_s(redis_pid) - redis_cpu0) / elapsed, 2)
            finally:
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGCONT)
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(5)
            await redis.flushdb()
    total = per_session * sessions
    return {"workers": workers, "sessions": sessions, "events": total,
            "seconds": round(elapsed, 3), "events_per_s": round(total / elapsed),
            "worker_cpu_share": cpu, "redis_server_cpu_share": redis_cpu,
            "worker_log_level": log_level}


# --------------------------------------------------------------------- run
async def _session_step(sessions: int, events: int,
                        rate_hz: float | None = None) -> dict[str, Any]:
    """The session step this worker wraps, measured in this process: the same
    chart, ports and log as `_latency`, events routed to a SessionManager with an
    ack callback (as the worker routes them), snapshots saved in memory. CPU per
    event, so `worker CPU per applied event / this` is what the worker adds.

    Measured twice. `back_to_back`: routed in batches of 100 and stepped in a
    tight loop, caches warm: issue 15's measure, the denominator of the
    headline ratio (`cpu_us_per_event`). `paced` (when `rate_hz` is given):
    the events arrive as the worker's do, at `rate_hz` (the producer's open
    loop, sessions drawn by the same seeded choice), so each step runs on its
    own after the loop woke up for it, caches cold from whatever ran
    meanwhile. The same steps cost ~1.3-2× more paced than back to back on the
    development VM; the ratio to the paced step is reported beside the
    headline, as what the worker adds over a step that runs the way its
    steps do."""
    import random
    registry = default_registry()
    chart = compile_text(CHART, "ring.yaml", registry)
    clock = RealClock()
    log = EventLog(NullSink(), clock, level="INFO")
    log.subscribe(_Capture())
    sids = [f"step-{i}" for i in range(sessions)]
    done = total = 0
    finished = asyncio.Event()

    async def ack() -> None:
        nonlocal done
        done += 1
        if done >= total:
            finished.set()

    async def measure(batch: list[VoiceEvent], first_id: int, paced: bool) -> float:
        nonlocal done, total
        done, total = 0, len(batch)
        finished.clear()
        gc.collect()
        cpu0 = time.process_time()
        start = time.perf_counter()
        for n, event in enumerate(batch):
            manager.route(event, ack=ack, entry_id=f"{first_id + n}-0")
            if paced:
                assert rate_hz is not None
                lag = start + (n + 1) / rate_hz - time.perf_counter()
                if lag > 0:
                    await asyncio.sleep(lag)
            elif n % 100 == 99:
                await asyncio.sleep(0)          # let the sessions run
        await finished.wait()
        return (time.process_time() - cpu0) / len(batch) * 1e6

    async with SessionManager(chart, registry, fake_ports(clock), clock, log,
                              MemorySnapshotStore()) as manager:
        for sid in sids:
            await manager.open(sid)
        total = len(sids)
        for sid in sids:                        # warm: every session stepped once
            manager.route(_event(sid, 0), ack=ack)
        await finished.wait()
        hot = await measure([_event(sids[n % sessions], n) for n in range(1, events + 1)],
                            1, paced=False)
        result: dict[str, Any] = {"sessions": sessions, "events": events,
                                  "cpu_us_per_event": round(hot, 1),
                                  "back_to_back_cpu_us_per_event": round(hot, 1)}
        if rate_hz is not None:
            rng = random.Random(1)
            batch = [_event(rng.choice(sids), events + n) for n in range(1, events + 1)]
            paced_us = await measure(batch, events + 1, paced=True)
            result.update(paced_cpu_us_per_event=round(paced_us, 1), rate_hz=rate_hz)
    return result


def _cost_ratio(worker: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """Worker CPU per applied event next to the session step, one run, one machine:
    `ratio` against the same steps back to back (issue 15's measure, the target
    ≤ 1.5×), `ratio_to_paced_step` against the step paced as the worker's
    events arrive (when measured)."""
    worker_us = float(worker["cpu_us_per_event"]["worker"])
    hot_us = float(step.get("back_to_back_cpu_us_per_event", step["cpu_us_per_event"]))
    paced = step.get("paced_cpu_us_per_event")
    ratio = round(worker_us / hot_us, 2) if hot_us else None
    return {"worker_cpu_us_per_event": worker_us, "session_step_cpu_us": hot_us,
            "ratio": ratio, "target_ratio_le": TARGET_RATIO,
            "met": ratio is not None and ratio <= TARGET_RATIO,
            "session_step": "back_to_back",
            **({"session_step_paced_cpu_us": float(paced),
                "ratio_to_paced_step": round(worker_us / float(paced), 2),
                # what the same steps cost when they arrive one at a time: a worker's
                # steps always do, so this is under the ratio before any Redis work
                "paced_step_over_back_to_back": round(float(paced) / hot_us, 2)}
               if paced and hot_us else {}),
            "sessions": worker["sessions"], "rate_hz": worker["rate_hz"]}


def _cost_summary(cost: dict[str, Any]) -> str:
    verdict = "MET" if cost["met"] else "NOT MET"
    text = (f"worker CPU per applied event ≤ {TARGET_RATIO:g}× the session step (back to "
            f"back, same run): {verdict} ({cost['worker_cpu_us_per_event']:g} µs / "
            f"{cost['session_step_cpu_us']:g} µs = {cost['ratio']}×")
    if "ratio_to_paced_step" in cost:
        text += (f"; {cost['ratio_to_paced_step']}× the step paced as the worker's events "
                 f"arrive, {cost['session_step_paced_cpu_us']:g} µs, itself "
                 f"{cost['paced_step_over_back_to_back']}× the back-to-back step")
    return text + f"; {cost['sessions']} sessions, {cost['rate_hz']:g} events/s)."


def run_quick(redis_url: str | None = None, *, sessions: int = 200, events: int = 2000,
              rate_hz: float = 1000.0) -> dict[str, Any]:
    """`turnchart bench redis --quick`: worker CPU per applied event (producer in
    its own process) as a ratio to the session step measured in the same run."""
    with contextlib.ExitStack() as stack:
        redis_pid: int | None = None
        if redis_url is None:
            redis_url, redis_pid = stack.enter_context(_private_redis())
        step = asyncio.run(_session_step(sessions, events, rate_hz))
        worker = asyncio.run(_latency(redis_url, sessions, events, rate_hz, "process",
                                      "after", redis_pid))
        cost = _cost_ratio(worker, step)
        return {"benchmark": "redis", "mode": "quick", "machine": machine(),
                "session_step": step, "worker": worker,
                "worker_cpu_per_event_over_step": cost,
                "targets": {"worker_cpu_per_event_over_step": cost,
                            "worker_cpu_per_event_le_1_5x_step": cost["met"],
                            "cost_summary": _cost_summary(cost)}}


def run(redis_url: str | None = None, *, ceiling_ops: int = 20_000, latency_events: int = 2000,
        active_sessions: int = 1000, rate_hz: float = 1000.0, rate_one_hz: float = 200.0,
        sweep_rates: tuple[float, ...] = (200.0, 500.0), throughput_sessions: int = 200,
        throughput_events: int = 40_000, worker_counts: tuple[int, ...] = (1, 2),
        log_level: str = "WARNING") -> dict[str, Any]:
    """Everything above, as one JSON-able dict."""
    with contextlib.ExitStack() as stack:
        redis_pid: int | None = None
        if redis_url is None:
            redis_url, redis_pid = stack.enter_context(_private_redis())
        url = redis_url
        result: dict[str, Any] = {"benchmark": "redis", "machine": machine(),
                                  "redis_server": _server_version(url)}
        ceiling = asyncio.run(_xadd_ceiling(url, ceiling_ops, 100))
        ceiling["redis_benchmark"] = _redis_benchmark(url, max(ceiling_ops * 5, 10_000))
        result["xadd_ceiling"] = ceiling
        result["machine_hiccups"] = _hiccups()
        result["latency_floor"] = asyncio.run(_floor(url, latency_events, rate_hz))
        result["latency"] = {}
        for producer in ("inline", "process"):
            for count in (1, active_sessions):
                name = f"{count}_session{'s' if count > 1 else ''}_{producer}"
                for variant in ("before", "after"):       # side by side, one after the other
                    result["latency"][name + ("_before" if variant == "before" else "")] = \
                        asyncio.run(_latency(url, count, latency_events,
                                             rate_one_hz if count == 1 else rate_hz, producer,
                                             variant, redis_pid))
        # The same sessions at lighter loads (the producer in its own process):
        # where the tail comes from, the machine's CPUs or the session count.
        # Each load level next to the floor at that load (a bare XADD to a
        # blocked XREAD across processes): what the machine costs, and what
        # turnchart adds on top.
        result["load_sweep"] = [
            _sweep_row(asyncio.run(_latency(url, active_sessions, latency_events, rate,
                                            "process", "after", redis_pid)),
                       asyncio.run(_floor(url, latency_events, rate)))
            for rate in sweep_rates if rate != rate_hz]
        result["load_sweep"].append(
            _sweep_row(result["latency"][f"{active_sessions}_sessions_process"],
                       result["latency_floor"]))
        result["load_sweep"].sort(key=lambda row: row["rate_hz"])
        result["session_step"] = asyncio.run(_session_step(active_sessions, latency_events,
                                                             rate_hz))
        result["throughput"] = {f"{w}_worker{'s' if w > 1 else ''}": asyncio.run(
            _throughput(url, redis_pid, w, throughput_sessions, throughput_events, log_level))
            for w in worker_counts}
    best = max(t["events_per_s"] for t in result["throughput"].values())
    cost = _cost_ratio(result["latency"][f"{active_sessions}_sessions_process"],
                       result["session_step"])
    result["targets"] = {
        "worker_cpu_per_event_over_step": cost,
        "worker_cpu_per_event_le_1_5x_step": cost["met"],
        "cost_summary": _cost_summary(cost),
        **_latency_target(result["latency"], active_sessions),
        **_sweep_target(result["load_sweep"], result["latency"], active_sessions, rate_one_hz),
        "throughput_ge_half_redis_py_xadd": best >= 0.5 * ceiling["redis_py_xadd_per_s"],
        "throughput_over_redis_py_xadd": round(best / ceiling["redis_py_xadd_per_s"], 2),
        "throughput_over_redis_py_pipelined_xadd":
            round(best / ceiling["redis_py_xadd_pipelined_per_s"], 2),
    }
    return result


def _latency_target(latency: dict[str, Any], sessions: int) -> dict[str, Any]:
    """p99 publish → applied ≤ 2 ms at many sessions: met or not, for each
    producer placement, with the numbers it was judged on."""
    def p99(name: str) -> float:
        value: float = latency[name]["publish_to_applied"].get("p99_ms", float("inf"))
        return value

    many = f"{sessions}_sessions"
    process, inline = p99(f"{many}_process"), p99(f"{many}_inline")
    def met(value: float) -> str:
        return "MET" if value <= LATENCY_TARGET_MS else "NOT MET"

    def transition(name: str) -> float:
        value: float = latency[name]["publish_to_transition_engine"].get("p99_ms",
                                                                          float("inf"))
        return value

    verdict = [f"p99 publish → applied (transition done and snapshot saved) ≤ "
               f"{LATENCY_TARGET_MS:g} ms at {sessions} sessions:",
               f"producer in its own process {met(process)} ({process} ms, "
               f"before: {p99(many + '_process_before')} ms);",
               f"producer in the worker's loop {met(inline)} ({inline} ms, "
               f"before: {p99(many + '_inline_before')} ms).",
               f"Transition done, before its save: p99 {transition(many + '_process')} ms "
               f"(own process), {transition(many + '_inline')} ms (worker's loop)."]
    return {"p99_le_2ms_at_many_sessions": process <= LATENCY_TARGET_MS,
            "p99_le_2ms_at_many_sessions_inline_producer": inline <= LATENCY_TARGET_MS,
            "p99_ms_at_many_sessions": {"process": process, "inline": inline,
                                        "process_before": p99(f"{many}_process_before"),
                                        "inline_before": p99(f"{many}_inline_before")},
            "p99_ms_transition_done_at_many_sessions": {
                "process": transition(f"{many}_process"),
                "inline": transition(f"{many}_inline")},
            "latency_summary": " ".join(verdict)}


def _sweep_row(run: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """One load level: latency, the floor at the same rate, and how busy the
    machine's CPUs were (worker, producer and redis-server CPU per event ×
    events per second)."""
    cpu = run["cpu_us_per_event"]
    busy = sum(cpu.values()) * run["achieved_hz"] / 1e6
    return {"rate_hz": run["rate_hz"], "achieved_hz": run["achieved_hz"],
            "sessions": run["sessions"],
            "floor_xadd_to_blocked_xread": floor["xadd_to_blocked_xread"],
            "publish_to_applied": run["publish_to_applied"],
            "publish_to_transition_engine": run["publish_to_transition_engine"],
            "cpu_us_per_event": cpu, "cores_busy": round(busy, 2),
            "cores": os.cpu_count(), "error_lines": run["error_lines"]}


def _sweep_target(sweep: list[dict[str, Any]], latency: dict[str, Any], sessions: int,
                  rate_one_hz: float) -> dict[str, Any]:
    """The highest load at which `sessions` sessions keep p99 ≤ 2 ms, and what
    the session count alone costs (1 vs `sessions` sessions at one rate)."""
    met = [row["rate_hz"] for row in sweep
           if row["publish_to_applied"].get("p99_ms", float("inf")) <= LATENCY_TARGET_MS]
    highest = max(met) if met else None
    same = next((row for row in sweep if row["rate_hz"] == rate_one_hz), None)
    one = latency.get("1_session_process", {}).get("publish_to_applied", {})
    compare: dict[str, Any] = {"rate_hz": rate_one_hz, "1_session": one}
    if same is not None:
        compare[f"{sessions}_sessions"] = same["publish_to_applied"]
    text = (f"Load sweep at {sessions} sessions (producer in its own process): p99 ≤ "
            f"{LATENCY_TARGET_MS:g} ms " + (f"holds up to {highest:g} events/s" if highest
                                            else "at none of the loads measured") + "; " +
            ", ".join(f"{row['rate_hz']:g}/s → p99 {row['publish_to_applied'].get('p99_ms')} ms "
                      f"(floor p99 {row['floor_xadd_to_blocked_xread'].get('p99_ms')} ms; "
                      f"{row['cores_busy']} of {row['cores']} cores busy)" for row in sweep) +
            ".")
    unreachable = [row["rate_hz"] for row in sweep
                   if row["floor_xadd_to_blocked_xread"].get("p99_ms", 0) > LATENCY_TARGET_MS]
    if unreachable:
        text += (" At " + ", ".join(f"{r:g}" for r in unreachable) + " events/s the floor "
                 "alone (no engine, no script, no save) is above the target on this machine.")
    if same is not None:
        text += (f" At {rate_one_hz:g} events/s: 1 session p99 {one.get('p99_ms')} ms, "
                 f"{sessions} sessions p99 {same['publish_to_applied'].get('p99_ms')} ms.")
    return {"highest_rate_with_p99_le_2ms_at_many_sessions": highest,
            "rates_where_the_floor_alone_misses_2ms": unreachable,
            "session_count_cost": compare, "load_summary": text}


def _server_version(url: str) -> str:
    async def info() -> str:
        async with Redis.from_url(url, decode_responses=True) as r:
            data = await r.info("server")
            return str(data.get("redis_version"))
    return asyncio.run(info())


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
