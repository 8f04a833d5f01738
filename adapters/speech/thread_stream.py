"""Audio made on a worker thread, streamed into the event loop as it comes.

Why: espeak and flite are blocking C libraries, so each voice synthesises on its engine's
own thread. Both need the same bridge: chunks cross to the loop through a queue, closing
the async iterator tells the thread to stop (at its next chunk), and the iterator does not
return before the thread has let go of the queue, so a cancelled answer leaves nothing
running behind it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor

from engine.runtime.ports import AudioChunk

Put = Callable[[AudioChunk], None]
Producer = Callable[[Put, threading.Event], None]
"""Runs on the executor: calls `put(chunk)` for each chunk, returns early once the event
is set (the listener went away)."""

_DONE = object()


async def stream_from_thread(executor: Executor,
                             produce: Producer) -> AsyncGenerator[AudioChunk, None]:
    """Yield what `produce` puts, in order; its exception is raised here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def send(item: object) -> None:  # worker thread → event loop
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def work() -> None:
        try:
            produce(send, stop)
            send(_DONE)
        except BaseException as exc:
            send(exc)

    job = loop.run_in_executor(executor, work)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, AudioChunk)
            yield item
    finally:
        stop.set()
        await asyncio.shield(job)  # the worker is done with our queue before we return
