"""Text normalisation shared by intent rules and retrieval.

Both sides must see the same words, or a phrase that matches in one place
silently fails in the other; so there is exactly one tokenizer.
"""

from __future__ import annotations

import re

from adapters.spoken import number_words as number_words  # its home before adapters/spoken.py

_CONTRACTIONS = {
    "what's": "what is", "it's": "it is", "that's": "that is", "who's": "who is",
    "how's": "how is", "where's": "where is", "let's": "let us", "i'm": "i am",
    "you're": "you are", "can't": "can not", "don't": "do not", "won't": "will not",
    "i'd": "i would", "i'll": "i will", "you'll": "you will",
}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> list[str]:
    """Lower-case words, contractions expanded, numbers spelled, punctuation dropped."""
    out: list[str] = []
    for word in _WORD.findall(text.lower().translate(_APOSTROPHES)):
        expanded = _CONTRACTIONS.get(word)
        if expanded is not None:
            out.extend(expanded.split())
        elif word.isdigit():
            out.extend(number_words(word).split())
        else:
            out.extend(w for w in word.split("'") if w)
    return out


def normalise(text: str) -> str:
    """`words` joined by single spaces: the form phrases are compared in."""
    return " ".join(words(text))


def sentences(text: str) -> list[str]:
    """Split after `.`, `!` or `?`; joining the pieces gives `text` back exactly."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces
