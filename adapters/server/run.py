"""Start the app under uvicorn with the settings' host and port."""

from __future__ import annotations

import sys

import uvicorn

from adapters.config import Settings
from adapters.server.app import create_app
from adapters.server.json_logging import uvicorn_log_config


def serve(settings: Settings) -> int:
    from adapters.fastrtc.ice import is_loopback_host, restrict_to_loopback
    from adapters.server.voice_factory import build_voice
    if is_loopback_host(settings.server.host):
        restrict_to_loopback()  # WebRTC media stays on loopback like the HTTP side
    else:
        print(f"turnchart: WARNING: serving on {settings.server.host}, reachable from other "
              "machines; put an authenticating proxy in front", file=sys.stderr)
    app = create_app(settings, voice_factory=build_voice)
    for entry in app.state.catalog.entries.values():
        for err in entry.errors:
            print(str(err), file=sys.stderr)
    if not app.state.catalog.charts():
        print("turnchart: no chart could be loaded; fix the errors above", file=sys.stderr)
        return 1
    host, port = settings.server.host, settings.server.port
    print(f"turnchart serving on http://{host}:{port}/charts", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=settings.log.level.lower(),
                log_config=uvicorn_log_config(settings.log.level))
    return 0
