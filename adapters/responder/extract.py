"""Rule-based slot extraction for the offline responder's tool calls (issue 16 §4).

What a caller says to a booking line is narrow: a number of people, a day, a
time, yes or no. These rules fill a tool's parameters from the words, by the
parameter's type and name, so an example flow runs with no model at all:

- `int`/`float`: a number, in digits or words ("four", "twenty two", "a couple");
  a number that is part of a time ("7 pm", "7:30") is not one;
- `str` named like a date (`date`, `day`): an ISO date from "today", "tomorrow",
  "the day after tomorrow", a weekday ("friday", "next friday": the coming one,
  a week ahead when it is today), "december 12", "12th of december",
  "the twelfth of december" (this year's, or next year's once it has passed) or
  "2026-12-12"; a day that does not exist ("february 30") is no date;
- `str` named like a time (`time`, `hour`): "HH:MM" from "7 pm", "7:30pm",
  "19:00", "half past seven", "quarter to eight", "seven thirty", "seven o'clock",
  "noon", "midnight"; without am/pm an hour from 1 to 11 is read as pm (people
  book dinners, not breakfasts at 7 am; say "7 am" for that);
- `bool`: yes or no ("yes please", "that's right", "no", "not really"); a no wins
  over a yes ("yes, no wait").

Every function returns None when the words do not say it: a tool is only
called with every required parameter filled.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
          "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
          "eighteen": 18, "nineteen": 19, "a couple": 2, "couple": 2, "a dozen": 12,
          "dozen": 12, "just me": 1, "myself": 1}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
             "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11,
             "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
             "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
             "twentieth": 20, "thirtieth": 30}
_MONTHS = {m: i for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august",
     "september", "october", "november", "december"), 1)}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_YES = ("yes", "yeah", "yep", "yup", "sure", "correct", "right", "ok", "okay", "absolutely",
        "please do", "go ahead", "book it", "perfect", "great", "fine", "definitely")
_NO = ("no", "nope", "not", "don't", "dont", "wrong", "cancel", "nah", "never")


def words_of(text: str) -> str:
    """Lower case, punctuation to spaces (":" and "-" kept inside numbers), one space."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=\d)(st|nd|rd|th)\b", "", text)
    text = re.sub(r"(?<=\d)(am|pm)\b", r" \1", text)
    text = re.sub(r"[^a-z0-9:'\- ]+", " ", text)
    text = re.sub(r"(?<![0-9])-|-(?![0-9])", " ", text)
    return " ".join(text.split())


def _number_words(text: str) -> str:
    """Spelled numbers as digits: "twenty two" → "22", "a couple" → "2"."""
    for tens, value in _TENS.items():
        for unit, u in _UNITS.items():
            if 0 < u < 10 and " " not in unit:
                text = re.sub(rf"\b{tens}[ -]{unit}\b", str(value + u), text)
        text = re.sub(rf"\b{tens}\b", str(value), text)
    for word, value in sorted(_UNITS.items(), key=lambda p: -len(p[0])):
        text = re.sub(rf"\b{word}\b", str(value), text)
    return text


_TIME_TAIL = re.compile(r"^\s*(?::\d|am\b|pm\b|a m\b|p m\b|o'clock|oclock|thirty|fifteen"
                        r"|forty|in the (?:evening|morning|afternoon)|tonight)")


def number(text: str) -> int | None:
    """The first number said that is not part of a time or a date."""
    spoken = _number_words(words_of(text))
    for match in re.finditer(r"\b(\d+)\b", spoken):
        before = spoken[:match.start()].rstrip()
        if _TIME_TAIL.match(spoken[match.end():]) or before.endswith(("at", "past", "to")):
            continue
        if re.match(r"\s*(?:of\s+)?(?:" + "|".join(_MONTHS) + r")\b", spoken[match.end():]) \
                or re.search(r"(?:" + "|".join(_MONTHS) + r")\s*(?:the\s+)?$", before):
            continue
        if re.match(r"-\d", spoken[match.end():]):
            continue
        return int(match.group(1))
    return None


def yes_no(text: str) -> bool | None:
    """True for a yes, False for a no (a no wins), None when neither is said."""
    said = f" {words_of(text)} "
    if any(f" {w} " in said for w in _NO):
        return False
    if any(f" {w} " in said for w in _YES):
        return True
    return None


def _day_number(spoken: str) -> str:
    """Ordinal words as digits: "the twelfth" → "the 12", "twenty first" → "21"."""
    for tens, value in _TENS.items():
        for word, n in _ORDINALS.items():
            if n < 10:
                spoken = re.sub(rf"\b{tens}[ -]{word}\b", str(value + n), spoken)
    for word, n in _ORDINALS.items():
        spoken = re.sub(rf"\b{word}\b", str(n), spoken)
    return spoken


def calendar_date(text: str, today: date) -> str | None:
    """An ISO date said relative to `today`, or None."""
    spoken = words_of(text)
    iso = re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", spoken)
    if iso:
        return _iso(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
    if "day after tomorrow" in spoken:
        return (today + timedelta(days=2)).isoformat()
    if re.search(r"\btomorrow\b", spoken):
        return (today + timedelta(days=1)).isoformat()
    if re.search(r"\b(today|tonight)\b", spoken):
        return today.isoformat()
    for i, weekday in enumerate(_WEEKDAYS):
        if re.search(rf"\b{weekday}\b", spoken):
            ahead = (i - today.weekday()) % 7 or 7
            return (today + timedelta(days=ahead)).isoformat()
    spoken = _day_number(_number_words(spoken))
    months = "|".join(sorted(_MONTHS, key=len, reverse=True))
    found = re.search(rf"\b({months})\s+(?:the\s+)?(\d{{1,2}})\b", spoken) or \
        re.search(rf"\b(\d{{1,2}})\s+(?:of\s+)?({months})\b", spoken)
    if not found:
        return None
    a, b = found.group(1), found.group(2)
    month, day = (_MONTHS[a], int(b)) if a in _MONTHS else (_MONTHS[b], int(a))
    year = today.year
    if _iso(year, month, day) is not None and date(year, month, day) < today:
        year += 1
    return _iso(year, month, day)


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def clock_time(text: str) -> str | None:
    """"HH:MM" said in `text`, or None."""
    spoken = words_of(text)
    if re.search(r"\bnoon\b|\bmidday\b", spoken):
        return "12:00"
    if re.search(r"\bmidnight\b", spoken):
        return "00:00"
    spoken = _number_words(spoken)
    minute = 0
    rel = re.search(r"\b(half|quarter|\d{1,2}) (?:minutes )?(past|to|after) (\d{1,2})\b", spoken)
    if rel:
        amount = {"half": 30, "quarter": 15}.get(rel.group(1)) or int(rel.group(1))
        hour = int(rel.group(3))
        minute = amount if rel.group(2) != "to" else 60 - amount
        if rel.group(2) == "to":
            hour -= 1
        return _hhmm(hour, minute, _meridiem(spoken[rel.end():]))
    hm = re.search(r"\b(\d{1,2}):(\d{2})\b", spoken)
    if hm:
        return _hhmm(int(hm.group(1)), int(hm.group(2)), _meridiem(spoken[hm.end():]))
    spoken_hm = re.search(r"\b(?:at )?(\d{1,2}) (\d{2})\b", spoken)
    if spoken_hm and int(spoken_hm.group(2)) < 60:   # "seven thirty" → "7 30"
        return _hhmm(int(spoken_hm.group(1)), int(spoken_hm.group(2)),
                     _meridiem(spoken[spoken_hm.end():]))
    plain = re.search(r"\b(\d{1,2})\s*(am|pm|a m|p m|o'clock|oclock)\b", spoken) or \
        re.search(r"\bat (\d{1,2})\b", spoken)
    if plain:
        return _hhmm(int(plain.group(1)), 0, _meridiem(spoken[plain.start(1):]))
    return None


def _meridiem(rest: str) -> str | None:
    found = re.match(r"\d*\s*(am|a m|pm|p m|in the morning|in the evening|in the afternoon"
                     r"|tonight)?", rest.strip())
    word = found.group(1) if found else None
    if word is None:
        return None
    return "am" if word in ("am", "a m", "in the morning") else "pm"


def _hhmm(hour: int, minute: int, meridiem: str | None) -> str | None:
    if meridiem == "pm" and 1 <= hour <= 11:
        hour += 12
    elif meridiem == "am" and hour == 12:
        hour = 0
    elif meridiem is None and 1 <= hour <= 11:
        hour += 12                       # a booking at "seven" is in the evening
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return f"{hour:02d}:{minute:02d}"
