"""Per-state prompts and tools (issue 16 §4): what the responder is asked, and what
its tool calls become. Engine side (engine/runtime/dialogue.py, the respond activity) and
the offline responder's rule-based tool calls (adapters/responder/flow.py, extract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.responder.extract import calendar_date, clock_time, number, yes_no
from adapters.responder.flow import BuiltinFlowResponder, plan_calls
from adapters.responder.knowledge import Knowledge
from engine.chart.chart import load_chart
from engine.runtime.dialogue import Dialogue, Tool, ToolCall, ToolResult, dialogue_of, fill_prompt
from engine.runtime.ports import DialogueResponder
from engine.runtime.trace import EventInvalid, StateTransition
from engine.tools.sandbox import Sandbox
from examples.booking.registry import build_registry

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "examples" / "booking" / "chart.yaml"
SUNDAY = date(2026, 12, 6)


def _chart() -> Any:
    return load_chart(CHART, build_registry())


# ---------------------------------------------------------------- engine/runtime/dialogue.py
def test_dialogue_of_the_active_states_fills_the_prompt_and_inherits_tools() -> None:
    chart = _chart()
    dialogue = dialogue_of(chart.states, chart.events, ("LISTENING", "ASK_DATE"),
                           {"party_size": 4, "date": "", "time": "", "misunderstandings": 0})
    assert dialogue is not None
    assert dialogue.state == "ASK_DATE"
    assert dialogue.prompt == "A table for 4. Which day would you like?"
    # its own tool first, then BOOKING's (the parent's), each once
    assert [t.name for t in dialogue.tools] == ["set_date", "ask_opening_hours",
                                                "not_understood"]
    assert dialogue_of(chart.states, chart.events, ("LISTENING",), {}) is None


def test_a_tool_schema_is_its_event_payload_as_json_schema() -> None:
    tool = Tool("book", {"size": "int", "date": "str", "note": "str?", "vip": "bool",
                         "price": "float"}, "Book it.")
    assert tool.json_schema() == {
        "type": "object",
        "properties": {"size": {"type": "integer"}, "date": {"type": "string"},
                       "note": {"type": "string"}, "vip": {"type": "boolean"},
                       "price": {"type": "number"}},
        "required": ["size", "date", "vip", "price"], "additionalProperties": False}
    assert fill_prompt("For {n} at {t}.", {"n": 2, "t": "19:00"}) == "For 2 at 19:00."


class _Scripted:
    """A DialogueResponder that replays one list of pieces per request and records
    every Dialogue it was asked with."""

    def __init__(self, rounds: list[list[str | ToolCall]]) -> None:
        self.rounds = rounds
        self.asked: list[Dialogue] = []

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        yield "plain answer"

    async def converse(self, text: str, session_id: str,
                       dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
        self.asked.append(dialogue)
        for piece in self.rounds.pop(0) if self.rounds else [dialogue.prompt]:
            yield piece


async def _one_turn(responder: _Scripted, words: str) -> list[Any]:
    chart = _chart()
    async with Sandbox(chart, build_registry()) as box:
        box.ports.responder = responder      # the session reads its ports when it asks
        await box.open("s1")
        box.send("s1", "client_connected", source="test")
        await box.advance_to(10)
        box.send("s1", "stt_final", {"text": words, "is_final": True}, source="test")
        await box.advance_to(5000)
    return box.trace


def _said(trace: list[Any]) -> list[str]:
    return [e.payload["text"] for e in trace if getattr(e, "event", None) == "response_ready"
            and e.kind == "event_received"]


def test_a_tool_call_becomes_its_event_and_the_responder_is_asked_in_the_new_state() -> None:
    responder = _Scripted([[ToolCall("set_party_size", {"size": 3}, "c1")], ["Fine. ",
                                                                            "Which day?"]])
    assert isinstance(responder, DialogueResponder)
    trace = asyncio.run(_one_turn(responder, "three of us"))
    moves = [(e.source, e.target, e.event) for e in trace if isinstance(e, StateTransition)]
    assert ("ASK_SIZE", "ASK_DATE", "set_party_size") in moves
    assert [d.state for d in responder.asked] == ["ASK_SIZE", "ASK_DATE"]
    second = responder.asked[1]
    assert second.prompt == "A table for 3. Which day would you like?"
    assert second.results == (ToolResult(ToolCall("set_party_size", {"size": 3}, "c1"), True,
                                         "set_party_size done"),)
    assert _said(trace) == ["Fine. Which day?"]


def test_a_bad_tool_call_is_event_invalid_naming_the_field_and_goes_back_to_the_responder(
        ) -> None:
    responder = _Scripted([[ToolCall("set_party_size", {"size": "three"}, "c1")],
                           ["Sorry, how many?"]])
    trace = asyncio.run(_one_turn(responder, "three of us"))
    invalid = [e for e in trace if isinstance(e, EventInvalid)]
    assert [e.field for e in invalid] == ["payload.size"]
    assert "expected int, got str" in invalid[0].error
    assert not any(isinstance(e, StateTransition) and e.event == "set_party_size"
                   for e in trace)
    told = responder.asked[1].results
    assert len(told) == 1 and not told[0].ok and told[0].detail.startswith("payload.size: ")
    assert responder.asked[1].state == "ASK_SIZE"
    assert _said(trace) == ["Sorry, how many?"]


def test_a_tool_the_state_does_not_offer_is_refused() -> None:
    responder = _Scripted([[ToolCall("set_time", {"time": "19:00"})], ["Sorry."]])
    trace = asyncio.run(_one_turn(responder, "seven pm"))
    invalid = [e for e in trace if isinstance(e, EventInvalid)]
    assert [e.field for e in invalid] == ["event_type"]
    assert "not a tool of state 'ASK_SIZE'" in invalid[0].error


def test_parallel_tool_calls_are_each_checked_and_posted_in_order() -> None:
    responder = _Scripted([[ToolCall("not_understood", {"heard": 1}, "a"),
                            ToolCall("set_party_size", {"size": 5}, "b")], ["Which day?"]])
    trace = asyncio.run(_one_turn(responder, "five"))
    assert [e.field for e in trace if isinstance(e, EventInvalid)] == ["payload.heard"]
    assert [r.ok for r in responder.asked[1].results] == [False, True]
    assert responder.asked[1].state == "ASK_DATE"


def test_a_chart_without_prompts_asks_the_plain_responder() -> None:
    from engine.runtime.behaviours import default_registry
    chart = load_chart(ROOT / "charts" / "voice_turn.yaml", default_registry())
    responder = _Scripted([])

    async def run() -> list[Any]:
        async with Sandbox(chart, default_registry()) as box:
            box.ports.responder = responder
            await box.open("s1")
            box.send("s1", "client_connected", source="test")
            await box.advance_to(10)
            box.send("s1", "stt_final", {"text": "hi", "is_final": True}, source="test")
            await box.advance_to(3000)
        return box.trace

    assert _said(asyncio.run(run())) == ["plain answer"]
    assert responder.asked == []


# ----------------------------------------------------------- offline extraction
@pytest.mark.parametrize(("words", "expected"), [
    ("a table for four please", 4), ("twenty two people", 22), ("just me", 1),
    ("for 4 at 7 pm", 4), ("a couple of us", 2), ("on december 12th", None), ("hello", None)])
def test_number(words: str, expected: int | None) -> None:
    assert number(words) == expected


@pytest.mark.parametrize(("words", "expected"), [
    ("tomorrow", "2026-12-07"), ("the day after tomorrow", "2026-12-08"),
    ("friday", "2026-12-11"), ("sunday", "2026-12-13"), ("december 12", "2026-12-12"),
    ("the twelfth of december", "2026-12-12"), ("on the 3rd of january", "2027-01-03"),
    ("december the first", "2027-12-01"), ("2026-12-24", "2026-12-24"),
    ("february 30", None), ("whenever", None)])
def test_calendar_date(words: str, expected: str | None) -> None:
    assert calendar_date(words, SUNDAY) == expected


@pytest.mark.parametrize(("words", "expected"), [
    ("7 pm", "19:00"), ("at 7:30pm", "19:30"), ("19:00", "19:00"),
    ("half past seven", "19:30"), ("quarter to eight", "19:45"), ("seven thirty", "19:30"),
    ("seven o'clock", "19:00"), ("noon", "12:00"), ("at eight", "20:00"), ("7 am", "07:00"),
    ("at 9 in the morning", "09:00"), ("no idea", None)])
def test_clock_time(words: str, expected: str | None) -> None:
    assert clock_time(words) == expected


@pytest.mark.parametrize(("words", "expected"), [
    ("yes please", True), ("that's right", True), ("no", False), ("not really", False),
    ("yes, no wait", False), ("hmm", None)])
def test_yes_no(words: str, expected: bool | None) -> None:
    assert yes_no(words) == expected


def _booking_dialogue(state: str, **data: Any) -> Dialogue:
    chart = _chart()
    full = {"party_size": 0, "date": "", "time": "", "misunderstandings": 0, **data}
    found = dialogue_of(chart.states, chart.events, (state,), full)
    assert found is not None
    return found


@pytest.mark.parametrize(("state", "words", "calls"), [
    ("ASK_SIZE", "a table for four please", [("set_party_size", {"size": 4})]),
    ("ASK_DATE", "next friday", [("set_date", {"date": "2026-12-11"})]),
    ("ASK_TIME", "half past seven", [("set_time", {"time": "19:30"})]),
    ("CONFIRM", "yes please", [("confirm_booking", {"yes": True})]),
    ("CONFIRM", "no", [("confirm_booking", {"yes": False})]),
    ("ASK_DATE", "what are your opening hours", [("ask_opening_hours", {})]),
    ("HOURS", "ok let's continue", [("continue_booking", {})]),
    ("ASK_SIZE", "purple elephants", [("not_understood", {"heard": "purple elephants"})]),
    ("BOOKED", "thanks", []),
    ("ASK_SIZE", "hello there", []),             # small talk is no misunderstanding
    ("ASK_DATE", "thank you", []),
])
def test_the_offline_responder_fills_the_state_tools(state: str, words: str,
                                                     calls: list[tuple[str, Any]]) -> None:
    planned = plan_calls(words, _booking_dialogue(state), SUNDAY)
    assert [(c.name, dict(c.arguments)) for c in planned] == calls


def test_the_offline_responder_converses_calls_then_says_the_new_prompt() -> None:
    responder = BuiltinFlowResponder(Knowledge([]), lambda: datetime(2026, 12, 6, 18, 0))

    async def ask(dialogue: Dialogue, words: str) -> list[Any]:
        return [p async for p in responder.converse(words, "s1", dialogue)]

    first = asyncio.run(ask(_booking_dialogue("ASK_DATE", party_size=2), "tomorrow"))
    assert first == [ToolCall("set_date", {"date": "2026-12-07"}, "call-0")]
    moved = _booking_dialogue("ASK_TIME", party_size=2, date="2026-12-07").with_results(
        [ToolResult(first[0], True, "set_date done")])
    assert asyncio.run(ask(moved, "tomorrow")) == ["On 2026-12-07. At what time?"]
    refused = _booking_dialogue("ASK_DATE", party_size=2).with_results(
        [ToolResult(first[0], False, "payload.date: expected str, got int 7")])
    said = asyncio.run(ask(refused, "tomorrow"))
    assert said[0] == "Sorry, I could not take that (payload.date: expected str, got int 7)."
    assert said[1] == "A table for 2. Which day would you like?"


# ------------------------------------------------------------------- diagrams
GOLDEN = ROOT / "tests" / "golden" / "diagrams"


@pytest.mark.parametrize(("fmt", "suffix"), [("mermaid", "mmd"), ("dot", "dot"),
                                             ("json", "json")])
def test_golden_diagrams_of_the_booking_show_prompts_and_tools(fmt: str, suffix: str) -> None:
    """When the example or the drawing changes on purpose, look at the new output and
    write it over tests/golden/diagrams/booking.SUFFIX (turnchart render ... --format)."""
    from engine.chart.render import render
    assert render(_chart(), fmt) == (GOLDEN / f"booking.{suffix}").read_text(encoding="utf-8")


def test_each_state_shows_its_own_prompt_and_the_tools_it_adds() -> None:
    import json

    from engine.chart.render import to_dot, to_json, to_mermaid
    chart = _chart()
    mermaid = to_mermaid(chart)
    assert "ASK_DATE : 💬 A table for #123;party_size#125;. Which day would you" in mermaid
    assert "ASK_DATE : 🛠️ tools#58; set_date" in mermaid           # not BOOKING's again
    assert "🛠️ tools#58; ask_opening_hours, not_understood" in mermaid
    assert "💬 Hello! How many people is the table for?" in to_dot(chart)
    states = json.loads(json.dumps(to_json(chart)))["states"]
    assert states["ASK_DATE"]["prompt"] == "A table for {party_size}. Which day would you like?"
    assert states["ASK_DATE"]["tools"] == ["set_date", "ask_opening_hours", "not_understood"]
    assert "prompt" not in states["LISTENING"] and "tools" not in states["LISTENING"]


@pytest.mark.parametrize(("prompt", "says"), [
    ('"On {date. At what time?"', "E188 bad prompt: expected '}' before end of string"),
    ('"On {date!r}. At what time?"', "E188 bad prompt: '{date...}' has a conversion or format"),
    ('"At {time:>5}?"', "E188 bad prompt: '{time...}' has a conversion or format"),
    ('"On {date.__class__}?"', "E188 prompt names '{date.__class__}', which is not a data field"),
])
def test_a_prompt_names_data_fields_and_nothing_else(prompt: str, says: str) -> None:
    from engine.chart.chart import compile_text
    from engine.chart.errors import ChartErrors
    text = CHART.read_text(encoding="utf-8").replace("prompt: On {date}. At what time?",
                                                     f"prompt: {prompt}")
    with pytest.raises(ChartErrors) as info:
        compile_text(text, "booking.yaml", build_registry())
    [error] = [str(e) for e in info.value.errors]
    assert error.startswith("booking.yaml:133:25: " + says), error


def test_a_barge_in_before_the_tool_event_leaves_the_flow_where_it_was() -> None:
    """The caller barges in while the responder's call is on its way: either respond
    is cancelled before it posts, or what it posted is stale. Either way the flow
    has not moved and nothing is answered; the next turn asks in ASK_SIZE again."""
    class ByWords(_Scripted):
        async def converse(self, text: str, session_id: str,
                           dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
            self.asked.append(dialogue)
            if not dialogue.results:
                yield ToolCall("set_party_size", {"size": {"three": 3, "two": 2}[text]})
            else:
                yield dialogue.prompt

    responder = ByWords([])

    async def run() -> list[Any]:
        async with Sandbox(_chart(), build_registry()) as box:
            box.ports.responder = responder
            await box.open("s1")
            box.send("s1", "client_connected", source="test")
            await box.advance_to(10)
            box.send("s1", "stt_final", {"text": "three", "is_final": True}, source="test")
            box.send("s1", "barge_in", {"reason": "over it"}, source="test")
            await box.advance_to(1000)
            box.send("s1", "stt_final", {"text": "two", "is_final": True}, source="test")
            await box.advance_to(5000)
        return box.trace

    trace = asyncio.run(run())
    moves = [(e.source, e.target) for e in trace if isinstance(e, StateTransition)]
    assert ("THINKING", "INTERRUPT") in moves
    assert [m for m in moves if m[0].startswith("ASK_")] == [("ASK_SIZE", "ASK_DATE")]
    stale = [e for e in trace if e.kind == "event_stale"]
    assert all(e.event == "set_party_size" for e in stale) and len(stale) <= 1
    assert _said(trace) == ["A table for 2. Which day would you like?"]   # not 3
    assert [d.state for d in responder.asked][-2:] == ["ASK_SIZE", "ASK_DATE"]


def test_a_tool_event_queued_behind_a_barge_in_is_stale() -> None:
    """The barge-in reaches the inbox while the responder is making its call (the
    responder sends it itself, so the order is certain): the call is posted behind
    the barge-in and dropped as stale; the flow stays in ASK_SIZE, nothing is said."""
    box_ref: list[Sandbox] = []

    class BargedIn(_Scripted):
        async def converse(self, text: str, session_id: str,
                           dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
            self.asked.append(dialogue)
            box_ref[0].send("s1", "barge_in", {"reason": "over it"}, source="test")
            yield ToolCall("set_party_size", {"size": 3})

    async def run() -> list[Any]:
        async with Sandbox(_chart(), build_registry()) as box:
            box_ref.append(box)
            box.ports.responder = BargedIn([])
            await box.open("s1")
            box.send("s1", "client_connected", source="test")
            await box.advance_to(10)
            box.send("s1", "stt_final", {"text": "three", "is_final": True}, source="test")
            await box.advance_to(1000)
        return box.trace

    trace = asyncio.run(run())
    [stale] = [e for e in trace if e.kind == "event_stale"]
    assert stale.event == "set_party_size" and stale.owner == "THINKING"
    assert not any(isinstance(e, StateTransition) and e.source.startswith("ASK_")
                   for e in trace)
    assert _said(trace) == [] and len(responder_calls(trace)) == 1


def responder_calls(trace: list[Any]) -> list[Any]:
    return [e for e in trace if getattr(e, "event_type", "") == "tool_called"
            or getattr(e, "kind", "") == "tool_called"]
