"""A headless worker process: `run_worker(redis_url, chart_path, …)`.

The lead wires it as `turnchart worker --redis URL`; until then
`python -m adapters.redis --redis URL [--chart PATH]` runs the same.

Headless means no audio and no HTTP: the chart's activities run against the
engine's fake ports (engine.tools.fakes, on a RealClock: the responder answers
after `respond_ms` with a fixed text, speech is silent chunks). A deployment
that wants real answers from workers passes its own `Ports`.

Start-up ends with `gc.collect(); gc.freeze()` (DESIGN.md, traps): what was
built while starting (the chart, the registry, redis-py, pydantic models) is
never scanned again, which keeps collector pauses, and p99, small. The
worker does the same after each burst of session adoptions (`freeze_gc`),
with one full collection every ten minutes.

Test hook: `TURNCHART_REDIS_PAUSE=POINT:N` (POINT is `received` or
`before_ack`) makes the worker stop dead at the N-th time it reaches POINT,
after logging `test_paused`; tests SIGKILL it there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from adapters.hot_reload import ChartReloader, ChartWatcher
from adapters.redis.availability import DEFAULT_WAIT_S, RedisUnreachable, wait_for_redis
from adapters.redis.connection import NO_SESSION, NotStandalone, check_url
from adapters.redis.worker import RedisWorker
from engine.chart.catalog import ChartCatalog, Reload
from engine.chart.chart import load_chart
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, JsonLinesSink
from engine.runtime.ports import Ports
from engine.tools.fakes import FakeSettings, fake_ports

DEFAULT_CHART = Path(__file__).resolve().parents[2] / "charts" / "voice_turn.yaml"
PAUSE_ENV = "TURNCHART_REDIS_PAUSE"


class PauseAt:
    """Stops forever at the N-th arrival at one hook point (see module doc)."""

    def __init__(self, point: str, nth: int, log: EventLog) -> None:
        self.point, self.nth, self.log = point, nth, log
        self.seen = 0

    @classmethod
    def from_env(cls, log: EventLog, value: str | None = None) -> PauseAt | None:
        value = os.environ.get(PAUSE_ENV) if value is None else value
        if not value:
            return None
        point, _, nth = value.partition(":")
        return cls(point, int(nth or 1), log)

    async def at(self, point: str, session_id: str, entry_id: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.nth:
            self.log.emit("WARNING", session_id, "test_paused",
                          f"⏸️ paused at {point} for entry {entry_id} (test hook)",
                          {"point": point, "entry_id": entry_id})
            await asyncio.Event().wait()


async def run_worker(redis_url: str, chart_path: str | Path = DEFAULT_CHART, *,
                     worker_id: str | None = None, lease_ms: int = 5000,
                     registry: Registry | None = None, ports: Ports | None = None,
                     log: EventLog | None = None, log_level: str = "INFO",
                     freeze_gc: bool = True, install_signals: bool = True,
                     respond_ms: float = 300.0, speak_ms: float = 1200.0,
                     watch: bool = False, redis_wait_s: float = DEFAULT_WAIT_S) -> int:
    """Run a worker until SIGTERM/SIGINT; then hand its sessions back. Returns an exit code.
    With `watch`, an edit of the chart file is validated and, when good, new
    sessions start on it (adapters/hot_reload.py); running ones keep theirs."""
    registry = registry or default_registry()
    chart = load_chart(chart_path, registry)
    clock = RealClock()
    log = log or EventLog(JsonLinesSink(sys.stdout), clock, level=log_level)
    ports = ports or fake_ports(clock, FakeSettings(respond_ms=respond_ms, speak_ms=speak_ms))
    try:    # Redis may come up after us: wait for it, bounded, then say why not
        await wait_for_redis(redis_url, log, redis_wait_s)
        await check_url(redis_url)     # a cluster node behind a plain URL: say so now
    except (RedisUnreachable, NotStandalone) as exc:
        log.emit("ERROR", NO_SESSION, "worker_failed", f"💥 worker cannot start: {exc}",
                 {"error": str(exc), "redis_wait_s": redis_wait_s})
        print(f"turnchart worker: {exc}", file=sys.stderr)
        return 1
    worker = RedisWorker(redis_url, chart, registry, ports, log, worker_id=worker_id,
                         lease_ms=lease_ms, clock=clock, hooks=PauseAt.from_env(log),
                         freeze_gc=freeze_gc)
    loop = asyncio.get_running_loop()
    watching = contextlib.AsyncExitStack()
    if watch:
        catalog = ChartCatalog(registry)
        catalog.add(chart_path, chart)

        def follow(reload: Reload) -> None:
            if reload.current is not None:
                worker.use_chart(reload.current)

        reloader = ChartReloader(catalog, log, follow)
        await watching.enter_async_context(ChartWatcher(reloader, [str(chart_path)]))
    async with watching, worker:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, worker.request_stop)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        await worker.stopped()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turnchart worker",
                                     description="a headless worker that owns sessions on Redis")
    parser.add_argument("--redis", required=True, metavar="URL",
                        help="redis://host:port/db, or redis+cluster://host:port")
    parser.add_argument("--chart", default=str(DEFAULT_CHART), metavar="PATH")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--lease-ms", type=int, default=5000)
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--respond-ms", type=float, default=300.0)
    parser.add_argument("--speak-ms", type=float, default=1200.0)
    parser.add_argument("--redis-wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help="how long to wait for Redis at start-up (default %(default)g)")
    args = parser.parse_args(argv)
    return asyncio.run(run_worker(args.redis, args.chart, worker_id=args.worker_id,
                                  lease_ms=args.lease_ms, log_level=args.log_level,
                                  respond_ms=args.respond_ms, speak_ms=args.speak_ms,
                                  redis_wait_s=args.redis_wait))


if __name__ == "__main__":
    raise SystemExit(main())
