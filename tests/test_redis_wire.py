"""The raw connection's time bounds (adapters/redis/wire.py): a read or a round
trip that outlives its bound fails as a timeout and leaves the wire usable;
exchanges that each finish in time never time out, however long the wire
lives; a cancellation from outside stays a cancellation; a dropped connection
fails the read in progress and the next exchange reconnects; error replies
come back in place."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.wire import Wire
from tests.support.redis_server import RedisServer


def wire(server: RedisServer, read_timeout_s: float | None = None) -> Wire:
    return Wire(ConnectionPool.from_url(server.url, decode_responses=True),
                read_timeout_s=read_timeout_s)


async def test_a_read_past_its_bound_times_out_and_the_wire_works_again(
        server: RedisServer) -> None:
    w = wire(server, read_timeout_s=0.2)
    try:
        await w.send([("BLPOP", "nothing", 30)])
        with pytest.raises(RedisTimeoutError, match="no reply"):
            await w.read()
        assert not w.connected
        assert await w.call("PING") in ("PONG", True)     # reconnected, no stale reply
        assert await w.call("ECHO", "after") == "after"
    finally:
        await w.aclose()


async def test_a_round_trip_past_its_bound_times_out_and_the_wire_works_again(
        server: RedisServer) -> None:
    w = wire(server)
    try:
        with pytest.raises(TimeoutError):
            await w.round_trip([("SET", "k", "v"), ("BLPOP", "nothing", 30)], 0.2)
        assert await w.round_trip([("GET", "k"), ("ECHO", "x")], 5.0) == ["v", "x"]
    finally:
        await w.aclose()


async def test_exchanges_that_each_finish_in_time_never_time_out(server: RedisServer) -> None:
    """Together they last several times the bound: each is bounded on its own."""
    w = wire(server, read_timeout_s=1.0)
    try:
        for n in range(8):
            [reply] = await w.round_trip([("BLPOP", "nothing", 0.25)], 1.0)
            assert reply is None
            await w.send([("ECHO", str(n))])
            assert await w.read() == str(n)
    finally:
        await w.aclose()


async def test_a_cancellation_from_outside_stays_a_cancellation(server: RedisServer) -> None:
    w = wire(server, read_timeout_s=30.0)
    try:
        await w.send([("BLPOP", "nothing", 30)])
        task = asyncio.create_task(w.read())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await w.round_trip([("ECHO", "ok")], 5.0) == ["ok"]
    finally:
        await w.aclose()


async def test_a_task_that_timed_out_is_not_left_cancelled(server: RedisServer) -> None:
    """The deadline's cancellation is consumed: the task goes on awaiting normally."""
    w = wire(server)
    try:
        with pytest.raises(TimeoutError):
            await w.round_trip([("BLPOP", "nothing", 30)], 0.2)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        await asyncio.sleep(0.01)
    finally:
        await w.aclose()


async def test_a_connection_the_server_drops_mid_read_fails_and_the_wire_reconnects(
        server: RedisServer, redis: Redis) -> None:
    w = Wire(ConnectionPool.from_url(server.url, decode_responses=True), identify=True)
    try:
        await w.open()
        await w.send([("BLPOP", "nothing", 30)])
        reading = asyncio.create_task(w.read())
        await asyncio.sleep(0.1)
        await redis.client_kill_filter(_id=str(w.client_id))
        with pytest.raises(RedisConnectionError):
            await reading
        assert await w.round_trip([("ECHO", "again")], 5.0) == ["again"]
    finally:
        await w.aclose()


async def test_error_replies_come_back_in_place(server: RedisServer) -> None:
    """One bad command never desynchronises the connection."""
    w = wire(server)
    try:
        first, bad, last = await w.round_trip([("SET", "n", "x"), ("INCR", "n"),
                                               ("GET", "n")], 5.0)
        assert first in ("OK", True) and isinstance(bad, ResponseError) and last == "x"
    finally:
        await w.aclose()
