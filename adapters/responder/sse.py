"""Server-sent events framing: lines in, one `data` payload per event out.

Kept apart from the OpenAI chunk format because it is a different layer: any
streaming HTTP service we talk to later frames its events the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield each event's data lines joined by newlines (WHATWG SSE rules).

    Comments (`: ...`) and other fields (`event`, `id`, `retry`) are skipped;
    a last event not followed by a blank line is still delivered, because a
    server that closes right after its final event should not lose it.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
