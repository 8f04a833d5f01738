"""`turnchart worker --redis URL`: a worker that runs live-voice sessions.

It owns sessions through Redis leases (adapters/redis/worker.py) and gives
them real behaviour: the configured responder, espeak-ng for the answers,
and the output link that sends contracts and audio back to whichever
`turnchart serve --redis` front-end holds the caller. `--headless` uses the
engine's fake ports instead (no speech models: load tests, CI). Unless
`server.watch_charts` is false it watches its chart file: new sessions run a
good edit, running ones keep their version (adapters/hot_reload.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from adapters.config import Settings
from adapters.redis.availability import DEFAULT_WAIT_S
from adapters.redis.connection import open_client
from adapters.redis.output_link import ContractPublisher, RedisOutputLink
from adapters.redis.run import run_worker
from adapters.responder.settings import build_responder
from adapters.telemetry import Telemetry, start_telemetry
from engine.chart.registry import Registry
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, JsonLinesSink
from engine.runtime.ports import Ports


async def run_live_worker(redis_url: str, settings: Settings, *, chart_path: str | Path,
                          worker_id: str | None = None, lease_ms: int = 5000,
                          headless: bool = False, redis_wait_s: float = DEFAULT_WAIT_S,
                          registry: Registry | None = None) -> int:
    telemetry = start_telemetry(settings.otel.enabled, service_name=settings.otel.service_name,
                                endpoint=settings.otel.endpoint)   # None (nothing loaded) if off
    try:
        return await _run_live_worker(redis_url, settings, chart_path=chart_path,
                                      worker_id=worker_id, lease_ms=lease_ms, headless=headless,
                                      redis_wait_s=redis_wait_s, registry=registry,
                                      telemetry=telemetry)
    finally:
        if telemetry is not None:
            telemetry.shutdown()        # exports the spans still buffered


async def _run_live_worker(redis_url: str, settings: Settings, *, chart_path: str | Path,
                           worker_id: str | None, lease_ms: int, headless: bool,
                           redis_wait_s: float, registry: Registry | None,
                           telemetry: Telemetry | None) -> int:
    if headless:
        log = EventLog(JsonLinesSink(sys.stdout), RealClock(), level=settings.log.level)
        if telemetry is not None:
            log.subscribe(telemetry.listener)
        return await run_worker(redis_url, chart_path, worker_id=worker_id, lease_ms=lease_ms,
                                registry=registry, log=log,
                                watch=settings.server.watch_charts, redis_wait_s=redis_wait_s)
    from adapters.server.voice_factory import FILLER_TEXT
    from adapters.speech.models import build_tts
    from engine.runtime.ports import AudioChunk
    tts = build_tts(settings.speech.model_copy(update={   # workers speak; they never listen
        "output_rate": settings.voice.output_rate}))
    rate, pcm = tts.synthesize_all(FILLER_TEXT)
    out = open_client(redis_url)             # bytes: audio stays binary
    link = RedisOutputLink(out, filler_clip=AudioChunk(pcm.tobytes(), len(pcm) / rate * 1000))
    publisher = ContractPublisher(out)
    log = EventLog(JsonLinesSink(sys.stdout), RealClock(), level=settings.log.level)
    log.subscribe(publisher)     # every contract, whatever the log level
    if telemetry is not None:
        log.subscribe(telemetry.listener)
    ports = Ports(playback=link, filler=link, responder=build_responder(settings.responder),
                  speech=tts)
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(publisher.run(), name="contract-publisher")
        try:
            code = await run_worker(redis_url, chart_path, worker_id=worker_id,
                                    lease_ms=lease_ms, ports=ports, log=log, registry=registry,
                                    watch=settings.server.watch_charts,
                                    redis_wait_s=redis_wait_s)
        finally:
            publishing.cancel()
    with contextlib.suppress(Exception):
        await out.aclose()
    return code
