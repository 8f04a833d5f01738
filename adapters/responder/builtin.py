"""The offline responder: rule-based intents plus local knowledge, no network.

It is what `turnchart serve` answers with out of the box, so it must be
deterministic (same words → same answer, with the clock injected) and must
always say something. It must also be honest: with open-vocabulary speech
recognition a caller can ask anything, and a request it has no answer for gets
"I can't help with that yet", never the nearest known answer. So a knowledge
entry must share at least `MIN_COVERAGE` of the request's content words ("turn
off the lights" is not about the speed of light).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from adapters.responder.intents import PHRASE_MIN, IntentName
from adapters.responder.knowledge import Knowledge, terms
from adapters.responder.text import normalise, sentences
from adapters.responder.timeofday import local_now, spoken_time
from adapters.responder.understanding import (
    IntentDetector,
    Retriever,
    Understanding,
    knowledge_retriever,
    rule_detector,
    understand,
)

FALLBACK = "Sorry, I can't help with that yet."
MIN_COVERAGE = 0.5
"""A knowledge hit, or a keyword intent (not a whole phrase), must cover at least this
share of the request's content words."""

_FIXED: dict[IntentName, str] = {
    "greeting": "Hello! How can I help you?",
    "help": ("You can say hello, ask what time it is, or ask me to tell you a story. "
             "You can also ask about turnchart, like what barge-in is. "
             "Say stop to interrupt me."),
    "thanks": "You are welcome!",
    "goodbye": "Goodbye! Talk to you soon.",
    # Silence: "stop" is nearly always said over an answer, which the barge-in has
    # already stopped; an "Okay, I will stop." would be more of what the caller just
    # stopped. An empty answer takes THINKING back to LISTENING (guard has_text).
    "stop": "",
}

STORIES = (
    ("A small robot wanted to hear the sea. "
     "It rolled to the beach every night and listened to the waves. "
     "One morning it answered them with a song of its own."),
    ("A fox found a lantern in the snow. "
     "She carried it through the forest so the other animals could find their way home. "
     "By spring, every path had a name."),
    ("An old clock in a quiet house forgot how to tick. "
     "The children taught it a new rhythm by clapping. "
     "From then on it kept time to their laughter."),
)


def compose_answer(understanding: Understanding, clock_now: Callable[[], datetime],
                   min_score: float = 0.0) -> str:
    """Choose the answer. A phrase-matched intent wins; a knowledge hit beats a mere
    keyword match; a keyword intent beats nothing; else the polite fallback."""
    intent = understanding.intent
    if intent is not None and intent.confidence < PHRASE_MIN and \
            _coverage(intent.matched_phrase, understanding.text) < MIN_COVERAGE:
        intent = None   # "what time does the museum open" is not asking for the time
    best = next((h for h in understanding.hits
                 if h.score > min_score and h.coverage >= MIN_COVERAGE), None)
    if intent is not None and (intent.confidence >= PHRASE_MIN or best is None):
        if intent.name == "time":
            return spoken_time(clock_now())
        if intent.name == "story":
            key = zlib.crc32(normalise(understanding.text).encode("utf-8"))
            return STORIES[key % len(STORIES)]
        return _FIXED[intent.name]
    if best is not None:
        return best.entry.answer
    return FALLBACK


def _coverage(keywords: str, text: str) -> float:
    """The share of `text`'s content words that are among `keywords` (1.0 when it has
    none: "what is it" is all keywords)."""
    content = set(terms(text))
    return len(content & set(terms(keywords))) / len(content) if content else 1.0


class BuiltinResponder:
    """`engine.runtime.ports.Responder` with offline rules; injectable detector and retriever."""

    def __init__(self, knowledge: Knowledge, clock_now: Callable[[], datetime] = local_now,
                 *, detect: IntentDetector | None = None, retrieve: Retriever | None = None,
                 min_score: float = 0.0) -> None:
        self.knowledge = knowledge
        self.clock_now = clock_now
        self.min_score = min_score
        self._detect = detect or rule_detector()
        self._retrieve = retrieve or knowledge_retriever(knowledge)

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        """Understand `text` (intent ∥ retrieval), then yield the answer sentence by sentence."""
        understanding = await understand(text, self._detect, self._retrieve)
        for piece in sentences(compose_answer(understanding, self.clock_now, self.min_score)):
            yield piece
