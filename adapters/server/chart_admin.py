"""`POST /charts/{name}/reload`: reload a chart file now, without waiting for
the file watcher (or with the watcher off).

Admin endpoints exist only when `server.admin_token` (or
`TURNCHART_ADMIN_TOKEN`) is set; without one the route answers 404 (there is
no such endpoint) whatever the request carries, so an unconfigured server has
no token to guess. Callers send `Authorization: Bearer <token>`, compared in
constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.hot_reload import ChartReloader
from engine.chart.catalog import VersionUse

Uses = Callable[[], Awaitable[list[VersionUse]]]


def bearer_matches(request: Request, token: str) -> bool:
    """True when the request carries `Authorization: Bearer <token>`."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def reload_route(reloader: ChartReloader, token: str | None, uses: Uses) -> Route:
    catalog = reloader.catalog

    async def reload(request: Request) -> JSONResponse:
        if token is None:
            return JSONResponse({"error": "not found",
                                 "detail": "admin endpoints are off: set server.admin_token "
                                           "(or TURNCHART_ADMIN_TOKEN) to enable them"},
                                status_code=404)
        if not bearer_matches(request, token):
            return JSONResponse({"error": "unauthorized: send Authorization: Bearer <token> "
                                          "with the configured server.admin_token"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        name: str = request.path_params["name"]
        entry = catalog.by_name(name)
        if entry is None:
            known = ", ".join(sorted(e.name for e in catalog.entries.values())) or "none"
            return JSONResponse({"error": f"no chart named '{name}'", "charts": known},
                                status_code=404)
        result = await reloader.reload(entry.path, trigger="http")
        running = result.current
        body = {"chart": result.entry.name, "path": result.entry.path,
                "version": running.version if running else None,
                "version_hash": running.version_hash if running else None}
        if not result.ok:
            keeps = f"v{running.version} {running.version_hash} keeps running" if running \
                else "no version runs"
            return JSONResponse({**body, "error": f"chart '{name}' has {len(result.errors)} "
                                                  f"error(s); {keeps}",
                                 "errors": [str(e) for e in result.errors]}, status_code=409)
        live = result.entry.live_versions(await uses())
        return JSONResponse({**body, "changed": result.changed,
                             "previous_version_hash": result.previous.version_hash
                             if result.previous else None,
                             "live_versions": [v.to_dict() for v in live]})

    return Route("/charts/{name}/reload", reload, methods=["POST"])
