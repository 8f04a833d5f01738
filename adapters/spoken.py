"""Spoken-number spelling shared by the STT grammar (adapters/speech/grammar.py)
and the responder's text normalisation (adapters/responder/text.py).

A common-layer module (docs/design.md, "Layers"): adapter packages may
import it, it imports no adapter package.
"""

from __future__ import annotations

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
