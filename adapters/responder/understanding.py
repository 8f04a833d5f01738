"""Intent detection and retrieval, run side by side under one owner.

Both are cheap today, but either may become a remote service (an NLU model, a
vector store); running them in one `asyncio.TaskGroup` means the turn waits
for the slower of the two, not their sum, and a failure in one cancels the
other instead of leaking a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from adapters.responder.errors import ResponderError
from adapters.responder.intents import IntentResult, detect_intent
from adapters.responder.knowledge import Hit, Knowledge

IntentDetector = Callable[[str], Awaitable[IntentResult | None]]
"""Text → the user's intent, or None; async so it may be a remote call."""
Retriever = Callable[[str], Awaitable[list[Hit]]]
"""Text → knowledge hits, best first; async so it may be a remote call."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Understanding:
    """What the user said, what they want, and what we know about it."""

    text: str
    intent: IntentResult | None
    hits: tuple[Hit, ...]


def rule_detector() -> IntentDetector:
    """The offline rules of `intents` as an `IntentDetector`."""

    async def detect(text: str) -> IntentResult | None:
        return detect_intent(text)

    return detect


def knowledge_retriever(knowledge: Knowledge, k: int = 3) -> Retriever:
    """`knowledge.search` as a `Retriever` returning up to `k` hits."""

    async def retrieve(text: str) -> list[Hit]:
        return knowledge.search(text, k=k)

    return retrieve


async def understand(text: str, detect: IntentDetector, retrieve: Retriever) -> Understanding:
    """Run `detect` and `retrieve` concurrently; a failure of either is a `ResponderError`."""
    try:
        async with asyncio.TaskGroup() as tg:
            intent_task = tg.create_task(_stage("intent detection", detect, text))
            hits_task = tg.create_task(_stage("knowledge retrieval", retrieve, text))
    except ExceptionGroup as group:
        first = group.exceptions[0]
        raise (first if isinstance(first, ResponderError) else ResponderError(str(first))) \
            from group
    return Understanding(text, intent_task.result(), tuple(hits_task.result()))


async def _stage(name: str, work: Callable[[str], Awaitable[T]], text: str) -> T:
    try:
        return await work(text)
    except ResponderError:
        raise
    except Exception as exc:
        raise ResponderError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
