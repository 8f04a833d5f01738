"""Can the words heard so far end an English sentence? (`end: hybrid`, adapters/turn/gate.py)

The early transcript (Whisper's speculative decode at the first silence) is read for one
thing: whether the caller has visibly stopped in the middle of a sentence. The rules are
general English grammar, not a list of expected requests. A transcript is

- `incomplete` when it ends where an English sentence cannot end:
  - Whisper marked a trailing-off: a final comma, semicolon, colon, dash or ellipsis;
  - a hesitation: um, uh, er, erm, uhm, ah;
  - an article or possessive determiner, which always has a noun after it (a, an, the,
    my, your, our, their, its, every); not his/her/this/that/some, which can stand alone
    ("it's his", "I want this");
  - a preposition that is not also a verb particle (of, to, for, from, with, at, into,
    ...; not on/off/up/out/in/back/..., which end sentences as particles: "hold on",
    "turn it off"). English strands a preposition at the end only after a wh-word moved
    away from it ("who did you talk to?", "where are you from?") or into a relative
    clause ("the one that I asked for"), so a sentence with a wh-word or a relative
    "that" keeps its final preposition (a relative without "that", "the one I asked
    for", is held: the cost is a wait of `patience_ms`, not a cut-off);
  - a coordinating or subordinating conjunction: and, or, but, nor, because, although,
    if, unless, whereas, whether (not so/yet/though/since/while/that, which also end
    sentences: "I think so", "not yet", "for a while", "I know that");
  - a contracted pronoun + auxiliary (I'm, it's, that's, we'll, they've, let's, ...):
    English never leaves a contracted auxiliary at the end ("yes it is", never "yes
    it's");
  - a copula, auxiliary or modal (is, are, was, were, am, can, will, would, should, do,
    does, did, has, have, had, ...), unless a pronoun stands right before it (the short
    answer "yes it is", "I think we can") or the sentence has a wh-word ("I know what it
    is"); "my number is", "the thing is" remain incomplete;
  - "would like" / "'d like", "going to", "gonna", "wanna", "gotta": a complement must
    follow;
  - a verb that takes two objects followed only by the person (give/tell/show/send/
    bring/hand/lend/let + me/us/him/her/them): "could you give me", "let me" promise the
    thing given, told or shown;
  - digits still being dictated: the last words are digits (spoken or written) after a
    word that announces a dictated string (number, phone, code, zip, postcode, card,
    account, pin, extension, id, address, reference) and fewer than 10 of them have come
    (a full phone number). Callers read numbers in groups and pause between them; the
    cost is that a complete short number (a PIN) waits out the state's patience.
- `uncertain` when it is grammatical but usually goes on: the last word is one that is
  a verb particle or a preposition ("on", "in", "off", "up", "out", "over", "about",
  "after", ...) right after a word that makes it more often a preposition than not. As a
  particle it ends a sentence ("the game is on", "I'm going out", "we should sign up");
  as a preposition its object is still to come ("the meeting is on Tuesday", "we are
  arriving on the third", "we should turn off the heating"). Nothing in the words tells
  the two apart, so the turn waits longer than for complete words (gate.py's
  `HYBRID_UNCERTAIN_MS`) and less than for incomplete ones. The word before is one of
  - a form of "be" (is, are, was, 's, 're, ...): "the meeting is on", "the shop is
    over" — a predicative particle ("the lights are on") or a place/time to come;
  - a verb in -ing: "we are arriving on", "she's looking after", "I'm calling about";
    a progressive that stops on a preposition-like word mostly has its object next;
  - a bare verb after a modal or "to" ("we should turn off", "I need to pick up"):
    phrasal verbs in requests are mostly transitive ("turn off the heating").
  Not when the particle follows its object ("turn the lights off", "turn it off": an
  object before the particle makes it a particle) or is stranded after a wh-word or a
  relative "that" ("what are you looking at?"), nor after a past participle ("the
  concert is sold out", "I signed up"), a noun or a pronoun subject ("I give up"),
  which are left `complete`.
- `question` when it is not incomplete and Whisper ended it with "?": a whole
  interrogative clause ("what time is it?");
- `complete` otherwise (it ends on a content word: "I would like a table.");
- `unknown` when nothing was heard (an empty transcript).

Whisper tiny.en ends almost every decode with a full stop, so a final "." is weak evidence
(measured on first halves of paused sentences and on whole ones, in three voices: 30 of
45 halves came back complete-looking with a ".", against 30 of 35 whole statements); a "?"
is (it reflects the interrogative word order the decoder heard). `final_stop()` says
whether it ended with "." or "!", which gate.py uses only to shorten a wait, never to end
a turn on its own.
"""

from __future__ import annotations

import re
from typing import Literal

Verdict = Literal["incomplete", "uncertain", "question", "complete", "unknown"]

TRAILING_OFF = (",", ";", ":", "-", "–", "—", "...", "…")
HESITATIONS = frozenset({"um", "uh", "er", "erm", "uhm", "ah", "umm", "uhh", "hmm"})
DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "its", "every"})
PREPOSITIONS = frozenset({"of", "to", "for", "from", "with", "at", "into", "onto", "than",
                          "between", "among", "toward", "towards", "upon", "via", "per",
                          "during", "including", "without"})
CONJUNCTIONS = frozenset({"and", "or", "but", "nor", "because", "although", "if", "unless",
                          "whereas", "whether"})
CONTRACTIONS = frozenset({
    "i'm", "you're", "we're", "they're", "he's", "she's", "it's", "that's", "there's",
    "here's", "what's", "who's", "where's", "how's", "when's", "i'll", "you'll", "he'll",
    "she'll", "we'll", "they'll", "it'll", "that'll", "i'd", "you'd", "he'd", "she'd",
    "we'd", "they'd", "i've", "you've", "we've", "they've", "let's"})
AUXILIARIES = frozenset({"is", "are", "was", "were", "am", "can",
                         "could", "will", "would", "shall", "should", "may", "might",
                         "must", "do", "does", "did", "has", "have", "had"})
PARTICLE_OR_PREPOSITION = frozenset({
    "on", "in", "off", "up", "out", "over", "about", "after", "around", "through", "down",
    "by", "along", "across", "past", "under", "behind", "inside", "outside", "before"})
BE_FORMS = frozenset({"is", "are", "was", "were", "am", "be", "been", "being"})
MODALS_AND_TO = frozenset({"can", "could", "will", "would", "shall", "should", "may",
                           "might", "must", "to", "please", "let's"})
OBJECT_PRONOUNS = frozenset({"it", "them", "me", "us", "him", "her", "you", "this", "that",
                             "everything", "something", "anything"})
PRONOUNS = frozenset({"i", "you", "he", "she", "it", "we", "they", "there", "that", "this",
                      "who", "which", "not", "so"})
WH_WORDS = frozenset({"what", "who", "whom", "whose", "which", "where", "when", "why",
                      "how", "whatever", "wherever", "whoever"})
NEED_COMPLEMENT = (("would", "like"), ("'d", "like"), ("going", "to"))
NEED_COMPLEMENT_WORDS = frozenset({"gonna", "wanna", "gotta"})
DITRANSITIVE = frozenset({"give", "tell", "show", "send", "bring", "hand", "lend", "let"})
PERSONS = frozenset({"me", "us", "him", "her", "them"})
DICTATION_CUES = frozenset({"number", "phone", "code", "zip", "postcode", "card", "account",
                            "pin", "extension", "id", "address", "reference"})
DIGIT_WORDS = {"zero": 1, "oh": 1, "o": 1, "one": 1, "two": 1, "three": 1, "four": 1,
               "five": 1, "six": 1, "seven": 1, "eight": 1, "nine": 1, "ten": 2,
               "eleven": 2, "twelve": 2, "thirteen": 2, "fourteen": 2, "fifteen": 2,
               "sixteen": 2, "seventeen": 2, "eighteen": 2, "nineteen": 2, "twenty": 2,
               "thirty": 2, "forty": 2, "fifty": 2, "sixty": 2, "seventy": 2, "eighty": 2,
               "ninety": 2, "hundred": 2, "double": 0, "triple": 0}
FULL_NUMBER_DIGITS = 10
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-case words, apostrophes kept ("I'm" → "i'm"), digits split from dashes."""
    return _WORD.findall(text.lower().replace("’", "'"))


def verdict(text: str) -> Verdict:
    """What the words heard so far say about the end of the caller's turn."""
    stripped = text.strip()
    words = words_of(stripped)
    if not words:
        return "unknown"
    if stripped.endswith(TRAILING_OFF) or _cannot_end(words):
        return "incomplete"
    if stripped.endswith("?"):
        return "question"
    return "uncertain" if _usually_goes_on(words) else "complete"


def final_stop(text: str) -> bool:
    """Whisper ended the words with a full stop or "!" (not "?", ",", "…" or nothing)."""
    return text.rstrip().endswith((".", "!")) and not text.rstrip().endswith(TRAILING_OFF)


def _usually_goes_on(words: list[str]) -> bool:
    """A particle-or-preposition after be, an -ing verb, or modal/to + verb (see above)."""
    last = words[-1]
    if last not in PARTICLE_OR_PREPOSITION or len(words) < 2:
        return False
    if any(w.split("'")[0] in WH_WORDS for w in words) or "that" in words[:-1]:
        return False   # stranded: "what are you looking at", "see what's on", "the one
                       # that I asked about"
    before = words[-2]
    if before in OBJECT_PRONOUNS:
        return False   # "turn it off": the object came first, so it is a particle
    if before in BE_FORMS or _split_be(before):
        return True
    if before.endswith("ing") and len(before) > 4 and before not in _NOT_VERBS:
        return True
    return len(words) >= 3 and (words[-3] in MODALS_AND_TO or
                                words[-3].endswith(("'ll", "'d")))   # "we'll turn off"


_NOT_VERBS = frozenset({"thing", "nothing", "something", "anything", "everything", "morning",
                        "evening", "ceiling", "building", "wedding", "meeting", "during",
                        "king", "ring", "spring", "string", "wing", "sing"})


def _split_be(word: str) -> bool:
    """A contracted "be" kept on its pronoun: "it's", "we're", "i'm" (but "let's" is not)."""
    return word != "let's" and word.endswith(("'s", "'re", "'m")) and \
        word[: word.index("'")] in PRONOUNS | {"i", "he", "she", "what", "where", "who"}


def _cannot_end(words: list[str]) -> bool:
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    has_wh = any(w in WH_WORDS for w in words)
    if last in HESITATIONS or last in DETERMINERS or last in CONJUNCTIONS or \
            last in CONTRACTIONS or last in NEED_COMPLEMENT_WORDS:
        return True
    if last in PREPOSITIONS and not has_wh and "that" not in words[:-1]:
        return True
    if last in AUXILIARIES and before not in PRONOUNS and not has_wh:
        return True
    if (before, last) in NEED_COMPLEMENT or (before.endswith("'d") and last == "like"):
        return True
    if last in PERSONS and before in DITRANSITIVE:
        return True
    return _dictating(words)


def _dictating(words: list[str]) -> bool:
    """The last words are a digit string after a dictation cue, shorter than a full number."""
    digits, i = 0, len(words) - 1
    while i >= 0 and (words[i].isdigit() or words[i] in DIGIT_WORDS):
        digits += len(words[i]) if words[i].isdigit() else DIGIT_WORDS[words[i]]
        i -= 1
    if i == len(words) - 1 or digits >= FULL_NUMBER_DIGITS:
        return False
    return any(w in DICTATION_CUES for w in words[max(0, i - 3):i + 1])
