"""uvicorn's own log lines as the same JSON lines the engine writes.

Server lines belong to no session, so they carry `session_id: "-"`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from adapters.redaction import redact_credentials
from engine.runtime.logs import iso_utc


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event_type = "http_access" if record.name == "uvicorn.access" else "server_log"
        data: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            data["exception"] = redact_credentials(self.formatException(record.exc_info))
        return json.dumps({"ts": iso_utc(record.created), "t_ms": None,
                           "level": record.levelname, "session_id": "-",
                           "event_type": event_type,
                           "message": redact_credentials(record.getMessage()),
                           "data": data}, ensure_ascii=False)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "formatter": "json",
               "stream": "ext://sys.stdout"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": {name: {"handlers": ["json"], "level": level, "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "turnchart")},
    }
