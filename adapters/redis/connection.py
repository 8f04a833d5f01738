"""Clients with an injected, logging retry policy (redis-py habits: `from_url`,
`async with`, `Retry(ExponentialBackoff(), N)`).

Every connection error that redis-py retries is one `redis_retry` log line;
what is still failing after N retries reaches the caller, and the worker's
own loops back off and try again (they never give up while running).

A Redis Cluster is named by its scheme: `redis+cluster://host:port` (or
`rediss+cluster://` for TLS), any node as the seed; the client is then
redis-py's `RedisCluster`, which finds the other nodes and routes each
command to the node that owns its key's slot. A plain `redis://` URL always
means one server (`require_standalone` says so clearly when it is a cluster
node), so nothing depends on guessing.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.exceptions import AskError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redaction import redact_credentials
from engine.runtime.logs import EventLog

NO_SESSION = "-"
CONNECTION_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError,
                                                  ConnectionError, OSError)
RetryLog = Callable[[Exception, int], None]
Client: TypeAlias = Redis | RedisCluster
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class NotStandalone(Exception):
    """A plain `redis://` URL that points at a Redis Cluster node."""


def is_cluster_url(url: str) -> bool:
    """`redis+cluster://…` / `rediss+cluster://…` name a Redis Cluster."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """The URL as redis-py reads it: `redis+cluster://h:6379` → `redis://h:6379`."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES.get(scheme.lower(), scheme)}{sep}{rest}"


class LoggingRetry(Retry):
    """redis-py's `Retry` that reports each retried failure before backing off."""

    def __init__(self, backoff: AbstractBackoff, retries: int, *,
                 on_retry: RetryLog | None = None,
                 supported_errors: tuple[type[Exception], ...] = (RedisConnectionError,
                                                                  RedisTimeoutError)) -> None:
        super().__init__(backoff, retries, supported_errors)  # type: ignore[arg-type,unused-ignore]
        self.on_retry = on_retry

    def __deepcopy__(self, memo: dict[int, Any]) -> LoggingRetry:
        # redis-py deep-copies the policy into every connection; the log callback
        # (a sink holding stdout) is shared, not copied.
        return LoggingRetry(copy.deepcopy(self._backoff, memo), self._retries,
                            on_retry=self.on_retry, supported_errors=self._supported_errors)

    async def call_with_retry(self, do: Callable[[], Awaitable[Any]], fail: Callable[..., Any],
                              *args: Any, **kwargs: Any) -> Any:
        attempts = 0

        async def logged(error: Exception, *rest: Any) -> None:
            nonlocal attempts
            attempts += 1
            if self.on_retry is not None:
                self.on_retry(error, attempts)
            result = fail(error, *rest)
            if isinstance(result, Awaitable):
                await result

        return await super().call_with_retry(do, logged, *args, **kwargs)


def retry_logger(log: EventLog, retries: int, what: str) -> RetryLog:
    def on_retry(error: Exception, attempt: int) -> None:
        final = retries >= 0 and attempt > retries
        log.emit("WARNING", NO_SESSION, "redis_retry",
                 f"🔁 redis {what}: {error_text(error)} "
                 f"({'giving up' if final else f'retry {attempt}/{retries}'})",
                 {"client": what, "attempt": attempt, "retries": retries,
                  "error": error_text(error), "gave_up": final})
    return on_retry


def make_retry(log: EventLog, retries: int = 6, what: str = "commands",
               backoff: AbstractBackoff | None = None) -> LoggingRetry:
    """`Retry(ExponentialBackoff(), retries)` that logs each retry as `redis_retry`."""
    return LoggingRetry(backoff or ExponentialBackoff(cap=0.512, base=0.008), retries,
                        on_retry=retry_logger(log, retries, what))


def connect(url: str, log: EventLog, *, retry: Retry | None = None, what: str = "commands",
            retries: int = 6, **kwargs: Any) -> Client:
    """A client from a URL with the logging retry policy; use it as `async with`.
    A cluster URL gives a `RedisCluster` (redis-py uses the policy there only
    for its number of retries)."""
    policy = retry if retry is not None else make_retry(log, retries, what)
    kwargs.setdefault("encoding_errors", "replace")   # non-UTF-8 bytes: U+FFFD, not a crash
    return open_client(url, decode_responses=True, retry=policy, socket_keepalive=True,
                       **kwargs)


def open_client(url: str, **options: Any) -> Client:
    """`Redis.from_url`, or `RedisCluster.from_url` for a cluster URL."""
    if is_cluster_url(url):
        return RedisCluster.from_url(plain_url(url), **options)
    client: Redis = Redis.from_url(url, **options)
    return client


async def require_standalone(client: Client, url: str) -> None:
    """A plain URL must not point at a cluster node: multi-key commands over
    several sessions would fail there with CROSSSLOT, much later and less clearly."""
    if isinstance(client, RedisCluster):
        return
    info = await client.info("cluster")
    if int(info.get("cluster_enabled", 0)):
        raise NotStandalone(redact_credentials(
            f"{url} is a Redis Cluster node: use redis+cluster://{url.partition('://')[2]} "
            f"to run on the cluster"))


async def check_url(url: str) -> None:
    """`require_standalone` with a client of its own (a worker's start-up check)."""
    client = open_client(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        await require_standalone(client, url)
    finally:
        await client.aclose()


async def command(redis: Client, *args: Any) -> Any:
    """`redis.execute_command` with a signature (redis-py leaves it untyped)."""
    return await redis.execute_command(*args)


async def command_on(client: Client, key: str, *args: Any) -> Any:
    """A command about `key`, sent straight to the node that owns it: a cluster
    client would otherwise first ask a server which keys an XREAD names (one
    more round trip). After a MOVED it falls back to redis-py's own routing."""
    if not isinstance(client, RedisCluster):
        return await command(client, *args)
    await client.initialize()
    try:
        return await client.execute_command(*args,
                                            target_nodes=client.get_node_from_key(key))
    except (AskError, TryAgainError, ClusterDownError):
        return await client.execute_command(*args)


def raw_reply(response: Any, **options: Any) -> Any:
    """A response callback that keeps the server's reply as it is."""
    return response


def error_text(exc: BaseException) -> str:
    """`Type: message` for a log line, with any URL credentials masked."""
    text = str(exc)
    return f"{type(exc).__name__}: {redact_credentials(text)}" if text else type(exc).__name__
