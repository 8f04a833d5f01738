"""Is what the caller said over the answer only a backchannel ("uh-huh", "yeah")?

A listener's "mm-hmm" while the assistant talks means "go on", not "stop": the handler
pauses the answer at the speech onset, transcribes the short speech, and resumes the
answer when every word is a backchannel (`voice.backchannels`). Transcripts spell the
same sound many ways ("Uh-huh.", "uh huh", "Mm-hmm", "mhm"), so both sides are
normalised: lower case, punctuation and hyphens stripped, and a phrase may span the
words it was split into ("uh huh" is "uhhuh", "i see" is "isee").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def words(text: str) -> list[str]:
    """Lower case, hyphens joined ("uh-huh" → "uhhuh"), other punctuation a space."""
    joined = text.lower().replace("-", "").replace("'", "")
    return _NOT_WORD.sub(" ", joined).split()


def phrases(configured: Iterable[str]) -> frozenset[str]:
    """The configured backchannels, each as its normalised words run together."""
    return frozenset(filter(None, ("".join(words(p)) for p in configured)))


NOT_WORDS = frozenset({"you"})
"""What Whisper writes for a short sound it cannot read (its best-known hallucination: a
lone "you"; the caller bench's flite "yeah" came back so). Nobody interrupts with it."""


def is_backchannel(text: str, known: frozenset[str]) -> bool:
    """True when the words are a non-empty run of known backchannel phrases ("yeah
    yeah okay", "uh huh"), or Whisper's lone "you"; "stop", "wait", "yeah but why",
    "thank you" are not."""
    said = words(text)
    if not said or not known:
        return False
    if len(said) == 1 and said[0] in NOT_WORDS:
        return True
    longest = max(len(p) for p in known)
    covered = [True] + [False] * len(said)   # covered[i]: said[:i] is all backchannels
    for end in range(1, len(said) + 1):
        for start in range(end - 1, -1, -1):
            chunk = "".join(said[start:end])
            if len(chunk) > longest:
                break
            if covered[start] and chunk in known:
                covered[end] = True
                break
    return covered[-1]
