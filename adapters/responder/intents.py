"""Offline, deterministic intent detection by phrase and keyword rules.

The same rules feed the offline speech-to-text grammar (`grammar_phrases`), so
what the recogniser can hear and what the responder understands never drift
apart. Rules are data, checked in order: the first listed intent wins a tie,
which puts control words (stop, goodbye) ahead of chit-chat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from adapters.responder.text import words

IntentName = Literal["stop", "goodbye", "thanks", "help", "time", "story", "greeting"]

PHRASE_MIN = 0.6
"""Confidence of a grammar phrase found inside longer speech; an exact match is 1.0."""
KEYWORD = 0.5
"""Confidence of a keyword rule: below any phrase match, so a phrase always wins."""


@dataclass(frozen=True, slots=True)
class IntentResult:
    """What the user wants, how sure we are (0..1], and the words that decided it."""

    name: IntentName
    confidence: float
    matched_phrase: str


@dataclass(frozen=True, slots=True)
class IntentRule:
    """`phrases` go into the STT grammar; each `keywords` entry is a group of words that
    must all appear, in any order (a looser match for speech the grammar did not shape)."""

    name: IntentName
    phrases: tuple[str, ...]
    keywords: tuple[tuple[str, ...], ...] = ()


RULES: tuple[IntentRule, ...] = (
    IntentRule("stop", ("stop", "be quiet", "cancel"),
               (("quiet",), ("shut", "up"), ("enough",), ("silence",))),
    IntentRule("goodbye", ("goodbye", "see you later"),
               (("bye",), ("farewell",), ("good", "night"))),
    IntentRule("thanks", ("thank you", "thanks"), (("thank",), ("cheers",))),
    IntentRule("help", ("help", "what can you do"), (("what", "can", "do"),)),
    IntentRule("time", ("what time is it", "what is the time"),
               (("what", "time"), ("tell", "time"), ("clock",))),
    IntentRule("story", ("tell me a story",), (("story",), ("stories",), ("tale",))),
    IntentRule("greeting", ("hello", "hi", "hey", "good morning"),
               (("greetings",), ("good", "evening"), ("howdy",))),
)


def grammar_phrases(rules: Sequence[IntentRule] = RULES) -> list[str]:
    """Every phrase the offline STT grammar should recognise, in rule order, unique."""
    return list(dict.fromkeys(p for rule in rules for p in rule.phrases))


def detect_intent(text: str, rules: Sequence[IntentRule] = RULES) -> IntentResult | None:
    """The best-scoring intent for `text`, or None when no rule applies.

    An exact phrase scores 1.0; a phrase inside longer speech scores between
    `PHRASE_MIN` and 1.0 by how much of the utterance it covers (so "hi, what
    time is it" is about the time); a keyword rule scores `KEYWORD`.
    """
    tokens = words(text)
    if not tokens:
        return None
    present = set(tokens)
    best: IntentResult | None = None
    for rule in rules:
        found = _best_for_rule(rule, tokens, present)
        if found is not None and (best is None or found.confidence > best.confidence):
            best = found
    return best


def _best_for_rule(rule: IntentRule, tokens: list[str], present: set[str]) -> IntentResult | None:
    best: IntentResult | None = None
    for phrase in rule.phrases:
        size = len(phrase.split())
        if _contains(tokens, phrase.split()):
            confidence = round(PHRASE_MIN + (1.0 - PHRASE_MIN) * size / len(tokens), 4)
            if best is None or confidence > best.confidence:
                best = IntentResult(rule.name, confidence, phrase)
    if best is not None:
        return best
    for keys in rule.keywords:
        if present.issuperset(keys):
            return IntentResult(rule.name, KEYWORD, " ".join(keys))
    return None


def _contains(tokens: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))
