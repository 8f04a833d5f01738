"""Waiting for Redis at start-up.

A worker started before Redis (compose, systemd, both restarted together)
waits for it instead of dying with a traceback: one `redis_unavailable`
line per attempt (backing off to 2 s) with the URL and the reason, then
`redis_reconnected` once PING answers. One that cannot reach Redis within
its wait gets `RedisUnreachable`, whose message says where and why, for a
one-line exit. Once running, the worker's own loops ride out outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from adapters.redaction import redact_credentials
from adapters.redis.connection import CONNECTION_ERRORS, NO_SESSION, connect, error_text
from engine.runtime.logs import EventLog

DEFAULT_WAIT_S = 30.0
UNREACHABLE: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, RedisClusterException)


class RedisUnreachable(Exception):
    """Redis did not answer within the start-up wait; the message says where and why."""


async def wait_for_redis(url: str, log: EventLog, wait_s: float = DEFAULT_WAIT_S, *,
                         what: str = "worker") -> int:
    """Return once Redis at `url` answers PING (the number of failed attempts
    before it did); raise `RedisUnreachable` when `wait_s` seconds pass first."""
    shown = redact_credentials(url)
    client = connect(url, log, retry=Retry(NoBackoff(), 0), what=what,
                     socket_connect_timeout=1.0, socket_timeout=1.0)
    start = time.monotonic()
    failures, delay = 0, 0.1
    try:
        while True:
            try:
                await client.ping()
            except UNREACHABLE as exc:
                failures += 1
                waited = time.monotonic() - start
                left = wait_s - waited
                if left <= 0:
                    raise RedisUnreachable(
                        f"Redis at {shown} is unreachable: {error_text(exc)} (waited "
                        f"{wait_s:g} s; is redis-server running there?)") from None
                log.emit("WARNING", NO_SESSION, "redis_unavailable",
                         f"🔌 {what}: Redis at {shown} is unreachable: {error_text(exc)}; "
                         f"waiting for it ({left:.1f} s left)",
                         {"client": what, "url": shown, "error": error_text(exc),
                          "attempt": failures, "waited_s": round(waited, 3)})
                await asyncio.sleep(min(delay, left))
                delay = min(2.0, delay * 2)
                continue
            if failures:
                log.emit("INFO", NO_SESSION, "redis_reconnected",
                         f"🔌 {what}: Redis at {shown} answers after {failures} failed "
                         f"attempt(s)", {"client": what, "url": shown, "failures": failures,
                                         "waited_s": round(time.monotonic() - start, 3)})
            return failures
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
