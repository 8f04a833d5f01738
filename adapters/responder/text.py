"""Text normalisation shared by intent rules and retrieval.

Both sides must see the same words, or a phrase that matches in one place
silently fails in the other; so there is exactly one tokenizer.
"""

from __future__ import annotations

import re

_CONTRACTIONS = {
    "what's": "what is", "it's": "it is", "that's": "that is", "who's": "who is",
    "how's": "how is", "where's": "where is", "let's": "let us", "i'm": "i am",
    "you're": "you are", "can't": "can not", "don't": "do not", "won't": "will not",
    "i'd": "i would", "i'll": "i will", "you'll": "you will",
}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(digits: str) -> str:
    """'10' → 'ten', '42' → 'forty two', '105' → 'one hundred five'; numbers of 1,000 or
    more keep their digits. Speech recognisers write numbers as digits ("10 of clubs"),
    phrases spell them: both are compared spelled."""
    n = int(digits)
    if n >= 1000:
        return digits
    out: list[str] = []
    if n >= 100:
        out += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return " ".join(out)
    if n < 20:
        out.append(_ONES[n])
    else:
        out.append(_TENS[n // 10])
        if n % 10:
            out.append(_ONES[n % 10])
    return " ".join(out)


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
