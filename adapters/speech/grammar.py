"""The command grammar STT decodes against: the responder's intent phrases plus "stop".

Why a grammar: on synthetic and accented speech pocketsphinx's open-vocabulary model is
poor ("hello" comes back as "oh"), while a JSGF grammar of the expected phrases gets them
right almost every time. Phrases are normalised (lower case, letters, digits and
apostrophes) so that the decoder's output can be compared with them exactly.

Only the grammar's words are loaded into the command decoders: the full 135k-word CMU
dictionary costs each decoder about 22 MB and 85 ms, the grammar's words about 0.1 MB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from adapters.spoken import number_words

ALWAYS = ("stop",)  # barge-in by voice must work whatever the responder declares
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")
_DIGITS = re.compile(r"\b[0-9]+\b")


def normalize_phrase(text: str) -> str:
    """'Hello, World!' → 'hello world', '10 of clubs' → 'ten of clubs': the form the
    grammar and the decoder use (the responder spells numbers the same way)."""
    spaced = " ".join(_NOT_WORD.sub(" ", text.lower()).split())
    return _DIGITS.sub(lambda m: number_words(m.group(0)), spaced)


@dataclass(frozen=True, slots=True)
class Grammar:
    """The accepted phrases (normalised, de-duplicated, in order) and what was dropped."""

    phrases: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()  # (phrase, reason)

    @classmethod
    def build(cls, phrases: Iterable[str], known: Callable[[str], bool]) -> Grammar:
        """Keep phrases whose every word the dictionary `known` has; "stop" is always in."""
        kept: dict[str, None] = {}
        dropped: list[tuple[str, str]] = []
        for raw in (*phrases, *ALWAYS):
            phrase = normalize_phrase(raw)
            if not phrase:
                dropped.append((raw, "no words"))
                continue
            unknown = [w for w in phrase.split() if not known(w)]
            if unknown:
                dropped.append((raw, f"not in the dictionary: {', '.join(unknown)}"))
                continue
            kept.setdefault(phrase, None)
        return cls(tuple(kept), tuple(dropped))

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and text in self.phrases

    def jsgf(self, name: str = "commands") -> str:
        """The grammar as JSGF source with one public rule: phrase | phrase | …"""
        body = " | ".join(self.phrases)
        return f"#JSGF V1.0;\ngrammar {name};\npublic <{name}> = {body};\n"


def pronunciations(dictionary: str | Path, words: Iterable[str]) -> dict[str, str]:
    """Entries of a CMU-format dictionary for `words`, alternates included ('the(2)')."""
    wanted = set(words)
    found: dict[str, str] = {}
    with open(dictionary, encoding="utf-8") as lines:
        for line in lines:
            entry, _, phones = line.partition(" ")
            if entry.split("(", 1)[0] in wanted and phones.strip():
                found.setdefault(entry, phones.strip())
    return found
