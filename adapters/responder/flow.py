"""The offline responder in a dialogue state: rule-based tool calls (issue 16 §4).

`BuiltinFlowResponder` is the shipped `BuiltinResponder` (same answers outside a
flow) that also implements `engine.runtime.ports.DialogueResponder`. Asked in a state
with a `prompt:` and `tools:` it fills the tools from the caller's words with
the rules of adapters/responder/extract.py, in this order:

1. a tool without parameters whose name shares a word with what was said
   ("what are your opening hours" → `ask_opening_hours`);
2. every tool whose parameters can all be filled (number, date, time, yes/no);
3. else the state's catch-all tool, one whose only parameter is a plain `str`
   (such as `not_understood {heard: str}`), with the caller's words; a greeting
   or a thank-you calls nothing (it is not a misunderstanding): the state's
   prompt is the answer.

Asked again with the calls' results (the state they led to), it says that
state's prompt, after an apology when a call was refused (the refusal's field
and reason) or when it fell through to the catch-all. A state without tools
that fit gets its prompt.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

from adapters.responder.builtin import BuiltinResponder
from adapters.responder.extract import calendar_date, clock_time, number, words_of, yes_no
from adapters.responder.intents import PHRASE_MIN, detect_intent
from engine.runtime.dialogue import Dialogue, Tool, ToolCall

NOT_UNDERSTOOD = "Sorry, I did not get that."
_STOP_WORDS = {"ask", "set", "give", "tell", "the", "for", "and", "with", "about", "say"}


def _is_catch_all(tool: Tool) -> bool:
    """A tool whose one parameter is a plain str that is neither a date nor a time."""
    if len(tool.parameters) != 1:
        return False
    (name, type_text), = tool.parameters.items()
    return type_text.rstrip("?") == "str" and _slot_kind(name, "str") == "words"


def _slot_kind(name: str, type_text: str) -> str:
    base = type_text.rstrip("?")
    if base in ("int", "float"):
        return "number"
    if base == "bool":
        return "yes_no"
    if base == "str" and re.search(r"date|day", name):
        return "date"
    if base == "str" and re.search(r"time|hour", name):
        return "time"
    return "words" if base == "str" else "unsupported"


def _fill(tool: Tool, text: str, today: date) -> dict[str, Any] | None:
    """Every parameter of `tool` from `text`, or None when a required one is not said."""
    args: dict[str, Any] = {}
    for name, type_text in tool.parameters.items():
        kind = _slot_kind(name, type_text)
        value: Any = None
        if kind == "number":
            n = number(text)
            value = None if n is None else (float(n) if type_text.startswith("float") else n)
        elif kind == "yes_no":
            value = yes_no(text)
        elif kind == "date":
            value = calendar_date(text, today)
        elif kind == "time":
            value = clock_time(text)
        if value is not None:
            args[name] = value
        elif not type_text.endswith("?"):
            return None
    return args


def _named(tool: Tool, said: set[str]) -> bool:
    """Does the caller say a word of the tool's name (4+ letters; either a prefix)?"""
    names = [w for w in tool.name.lower().split("_") if len(w) >= 4 and w not in _STOP_WORDS]
    return any(w.startswith(s) or s.startswith(w) for w in names for s in said if len(s) >= 4)


def plan_calls(text: str, dialogue: Dialogue, today: date) -> list[ToolCall]:
    """The tool calls for `text` in `dialogue` (see the module's rules)."""
    said = set(words_of(text).split())
    plain = [t for t in dialogue.tools if not t.parameters and _named(t, said)]
    if plain:
        return [ToolCall(plain[0].name, {}, "call-0")]
    calls: list[ToolCall] = []
    for tool in dialogue.tools:
        if not tool.parameters or _is_catch_all(tool):
            continue
        args = _fill(tool, text, today)
        if args is not None:
            calls.append(ToolCall(tool.name, args, f"call-{len(calls)}"))
    if calls:
        return calls
    catch_all = next((t for t in dialogue.tools if _is_catch_all(t)), None)
    if catch_all is not None and text.strip() and not _small_talk(text):
        (param, _), = catch_all.parameters.items()
        return [ToolCall(catch_all.name, {param: text.strip()}, "call-0")]
    return []


def _small_talk(text: str) -> bool:
    """"Hello", "thanks": not an answer, and not a misunderstanding either."""
    intent = detect_intent(text)
    return intent is not None and intent.name in ("greeting", "thanks") \
        and intent.confidence >= PHRASE_MIN


class BuiltinFlowResponder(BuiltinResponder):
    """`BuiltinResponder` that also converses in a chart's dialogue states, offline."""

    def __init__(self, *args: Any, today: Callable[[], date] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._today = today or (lambda: self.clock_now().date())

    async def converse(self, text: str, session_id: str,
                       dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
        if not dialogue.results:
            calls = plan_calls(text, dialogue, self._today())
            if calls:
                for call in calls:
                    yield call
                return
        refused = [r for r in dialogue.results if not r.ok]
        if refused:
            yield f"Sorry, I could not take that ({refused[0].detail})."
        elif any(r.call.arguments and all(isinstance(v, str) and v == text.strip()
                                          for v in r.call.arguments.values())
                 for r in dialogue.results):
            yield NOT_UNDERSTOOD
        yield dialogue.prompt
