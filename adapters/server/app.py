"""The Starlette application: the composition root of the HTTP side."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.config import Settings
from adapters.fastrtc.transport import TurnRTC
from adapters.hot_reload import ChartReloader, ChartWatcher
from adapters.redaction import redact_credentials
from adapters.server import chart_pages
from adapters.server.chart_admin import reload_route
from adapters.server.inspect import Inspector, inspect_routes
from adapters.server.limits import InputLimits, OfferRateLimit
from adapters.server.loghub import LogHub
from adapters.server.metrics import Metrics
from adapters.server.origin import OriginCheck
from adapters.server.telephone_routes import PHONE_STREAM, telephone_routes
from adapters.server.voice import VoiceFrontEnd
from adapters.server.voice_routes import JSON_PATHS, OFFER_PATHS, VoiceState, voice_routes
from adapters.telemetry import start_telemetry
from engine.chart.catalog import ChartCatalog, Reload, VersionUse
from engine.chart.compiler import CompiledChart
from engine.chart.registry import Registry
from engine.chart.render import RenderUnavailable, to_json, to_mermaid, to_svg
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.logs import EventLog, FanOutSink, JsonLinesSink, LogSink

VoiceFactory = Callable[[Settings, CompiledChart, Registry, EventLog, Metrics], VoiceFrontEnd]

_SUFFIXES = {".svg", ".mmd", ".json"}


def build_catalog(settings: Settings, registry: Registry | None = None) -> ChartCatalog:
    catalog = ChartCatalog(registry or default_registry())
    for path in settings.charts:
        catalog.load(path)
    return catalog


def create_app(settings: Settings | None = None, catalog: ChartCatalog | None = None, *,
               voice_factory: VoiceFactory | None = None,
               log_sink: LogSink | None = None) -> Starlette:
    """The whole server. Live voice starts in the lifespan (speech models load
    once there) when `settings.voice.enabled` and a voice factory is given."""
    settings = settings or Settings()
    if catalog is None:
        from adapters.registry_spec import load_registry
        catalog = build_catalog(settings, load_registry(settings.registry)
                                if settings.registry else None)
    hub = LogHub()
    voice = VoiceState(hub, Metrics(lambda: voice.session_count if voice.service else 0))
    clock = RealClock()
    sink = log_sink or JsonLinesSink(sys.stdout)
    inspector = Inspector(lambda name: (e.chart if (e := catalog.by_name(name)) else None),
                          clock.now_ms, mode="memory" if settings.bus == "memory" else "redis")
    # The JSON log (stdout and the page's log pane) keeps the level; metrics and the
    # inspector (it draws effects and dwell times from DEBUG events) get every event.
    log = EventLog(FanOutSink(sink, hub), clock, level=settings.log.level)
    log.subscribe(voice.metrics)
    log.subscribe(inspector)
    telemetry = start_telemetry(settings.otel.enabled, service_name=settings.otel.service_name,
                                endpoint=settings.otel.endpoint)   # None (nothing loaded) if off
    if telemetry is not None:
        log.subscribe(telemetry.listener)

    def follow(reload: Reload) -> None:
        """Hot reload: calls that connect from now on run the new version when
        the live voice service ran the one it replaces."""
        service = voice.service
        if service is not None and reload.current is not None and reload.previous is not None \
                and service.chart.version_hash == reload.previous.version_hash:
            service.use_chart(reload.current)

    reloader = ChartReloader(catalog, log, follow)

    async def version_uses() -> list[VersionUse]:
        return await voice.service.version_uses() if voice.service is not None else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        charts = catalog.charts()
        if settings.voice.enabled and voice_factory is not None and charts:
            chart = next((c for c in charts if c.name == settings.voice.chart), charts[0])
            service = voice_factory(settings, chart, catalog.registry, log, voice.metrics)
            await service.start()
            voice.service = service
            voice.rtc = _rtc(service, settings.voice.concurrency_limit)
        try:
            async with contextlib.AsyncExitStack() as watching:
                if settings.server.watch_charts:
                    watcher = ChartWatcher(reloader, list(catalog.entries))
                    await watching.enter_async_context(watcher)
                yield
        finally:
            if voice.service is not None:
                await voice.service.stop()  # graceful: every session closes cleanly
                voice.service, voice.rtc = None, None
            if telemetry is not None:
                telemetry.shutdown()        # exports the spans still buffered

    async def health(request: Request) -> JSONResponse:
        # A rejected edit leaves the last good version running: that is still "ok".
        charts = {e.name: ("errors" if e.chart is None else
                           "ok, last edit rejected" if e.errors else "ok")
                  for e in catalog.entries.values()}
        extra = await voice.service.health() if voice.service is not None else {}
        ok = bool(catalog.charts()) and not str(extra.get("redis", "ok")).startswith("unreachable")
        return JSONResponse({"status": "ok" if ok else "degraded", "charts": charts,
                             "bus": redact_credentials(settings.bus),
                             "voice": "running" if voice.service is not None else "off",
                             "sessions": await voice.service.session_count()
                             if voice.service else 0, **extra},
                            status_code=200 if ok else 503)

    async def charts_index(request: Request) -> Response:
        entries = list(catalog.entries.values())
        uses = await version_uses()
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(chart_pages.index_page(entries, uses))
        return JSONResponse({"charts": [
            {"name": e.name, "path": e.path, "version": e.chart.version if e.chart else None,
             "version_hash": e.chart.version_hash if e.chart else None,
             "errors": [str(x) for x in e.errors],
             "live_versions": [v.to_dict() for v in e.live_versions(uses)]} for e in entries]})

    async def chart(request: Request) -> Response:
        ref: str = request.path_params["ref"]
        name, dot, suffix = ref.rpartition(".")
        if not dot or f".{suffix}" not in _SUFFIXES:
            name, suffix = ref, ""
        entry = catalog.by_name(name)
        if entry is None:
            known = ", ".join(sorted(e.name for e in catalog.entries.values())) or "none"
            return JSONResponse({"error": f"no chart named '{name}'", "charts": known},
                                status_code=404)
        if suffix == "":
            return HTMLResponse(chart_pages.chart_page(entry, await version_uses()))
        if entry.chart is None:
            return JSONResponse({"error": f"chart '{name}' has errors",
                                 "errors": [str(e) for e in entry.errors]}, status_code=409)
        if suffix == "json":
            return JSONResponse(to_json(entry.chart))
        if suffix == "mmd":
            return PlainTextResponse(to_mermaid(entry.chart), media_type="text/vnd.mermaid")
        try:
            return Response(to_svg(entry.chart), media_type="image/svg+xml")
        except RenderUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=501)

    phone_token = os.environ.get(settings.telephone.auth_token_env) or None
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/charts", charts_index, methods=["GET"]),
        Route("/charts/{ref}", chart, methods=["GET"]),
        reload_route(reloader, settings.server.admin_token, version_uses),
        *voice_routes(voice),
        *telephone_routes(voice, log, auth_token=phone_token,
                          public_url=settings.telephone.public_url),
        *inspect_routes(inspector, catalog.charts),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error})
    # Added first, so it runs inside the limits: a body too large is 413 whatever its type.
    app.add_middleware(OriginCheck, allowed_origins=settings.server.allowed_origins,
                       json_paths=JSON_PATHS, log=log)
    app.add_middleware(InputLimits, max_body_bytes=settings.limits.max_body_bytes,
                       max_ws_message_bytes=settings.limits.max_ws_message_bytes,
                       # unsigned phone streams count as calls from their address
                       offer_paths=OFFER_PATHS if phone_token
                       else OFFER_PATHS | {PHONE_STREAM},
                       offers=OfferRateLimit(settings.limits.offers_per_minute), log=log)
    app.state.catalog = catalog
    app.state.settings = settings
    app.state.voice = voice
    voice.ended_latency = inspector.ended_latency   # /latency/{id} of a call that just ended
    app.state.log = log
    app.state.inspector = inspector
    app.state.telemetry = telemetry
    app.state.reloader = reloader
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as JSON that says why,
    like every other 4xx of this server."""
    assert isinstance(exc, HTTPException)
    path, method = request.scope["path"], request.method   # not request.url: it decodes the query
    allowed = (exc.headers or {}).get("Allow")
    if exc.status_code == 404:
        error = f"no route {method} {path} (routes: /health, /charts, /sessions, /fastrtc, …)"
    elif exc.status_code == 405 and allowed:
        error = f"method {method} is not allowed on {path}: use {allowed}"
    else:
        error = str(exc.detail)
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)


def _rtc(service: VoiceFrontEnd, concurrency_limit: int) -> TurnRTC:
    return TurnRTC(service.new_handler(), concurrency_limit)
