"""Function calling with the OpenAI-compatible responder (issue 16 §4), against a
local server on 127.0.0.1 that replays the Chat Completions streaming protocol as
the API documents it: `delta.tool_calls` fragments with `index`, `id`,
`function.name` and `function.arguments` pieces, `finish_reason: "tool_calls"`,
`data: [DONE]`; parallel calls told apart by index; malformed arguments."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from adapters.responder import OpenAICompatibleResponder
from engine.chart.chart import load_chart
from engine.runtime.behaviours import respond
from engine.runtime.clock import VirtualClock
from engine.runtime.context import ActivityContext
from engine.runtime.dialogue import Dialogue, ToolCall, dialogue_of
from engine.runtime.trace import EventInvalid, TraceEvent
from engine.tools.fakes import fake_ports
from examples.booking.registry import build_registry

CHART = Path(__file__).resolve().parents[1] / "examples" / "booking" / "chart.yaml"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def call_start(index: int, call_id: str, name: str) -> str:
    return _chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]})


def call_args(index: int, piece: str) -> str:
    return _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})


ROLE = _chunk({"role": "assistant", "content": None})
TOOLS_DONE = _chunk({}, "tool_calls")
STOP = _chunk({}, "stop")
DONE = "data: [DONE]\n\n"


def text(piece: str) -> str:
    return _chunk({"content": piece})


@dataclass
class Replay:
    """One scripted stream per request, in order; what each request carried."""

    base: str = ""
    script: list[list[str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def replay_app(state: Replay) -> Starlette:
    async def completions(request: Request) -> Response:
        state.requests.append(await request.json())
        events = state.script.pop(0)

        async def stream() -> AsyncIterator[str]:
            for event in events:
                yield event
                await asyncio.sleep(0.005)       # really streamed, piece by piece

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture
async def llm() -> AsyncIterator[Replay]:
    state = Replay()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state.base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = uvicorn.Server(uvicorn.Config(replay_app(state), lifespan="off",
                                           log_level="warning", http="h11", ws="none"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield state
    finally:
        server.should_exit = True
        await task
        sock.close()


def booking_dialogue(state: str, **data: Any) -> Dialogue:
    chart = load_chart(CHART, build_registry())
    full = {"party_size": 0, "date": "", "time": "", "misunderstandings": 0, **data}
    found = dialogue_of(chart.states, chart.events, (state,), full)
    assert found is not None
    return found


async def converse(llm: Replay, dialogue: Dialogue, words: str = "four of us"
                   ) -> list[str | ToolCall]:
    responder = OpenAICompatibleResponder(llm.base, "m", timeout_s=5.0)
    return [piece async for piece in responder.converse(words, "s1", dialogue)]


async def test_a_streamed_tool_call_is_put_together_from_its_fragments(llm: Replay) -> None:
    llm.script.append([ROLE, call_start(0, "call_abc", "set_party_size"), call_args(0, '{"si'),
                       call_args(0, 'ze": '), call_args(0, "4}"), TOOLS_DONE, DONE])
    out = await converse(llm, booking_dialogue("ASK_SIZE"))
    assert out == [ToolCall("set_party_size", {"size": 4}, "call_abc")]
    [request] = llm.requests
    assert request["stream"] is True and request["model"] == "m"
    names = [t["function"]["name"] for t in request["tools"]]
    assert names == ["set_party_size", "ask_opening_hours", "not_understood"]
    assert request["tools"][0] == {"type": "function", "function": {
        "name": "set_party_size", "description": "How many people the table is for.",
        "parameters": {"type": "object", "properties": {"size": {"type": "integer"}},
                       "required": ["size"], "additionalProperties": False}}}
    system, user = request["messages"]
    assert system["role"] == "system" and "Hello! How many people is the table for?" in \
        system["content"] and "step 'ASK_SIZE'" in system["content"]
    assert user == {"role": "user", "content": "four of us"}


async def test_parallel_tool_calls_are_told_apart_by_index(llm: Replay) -> None:
    llm.script.append([ROLE, call_start(0, "call_1", "set_party_size"),
                       call_start(1, "call_2", "ask_opening_hours"), call_args(1, "{}"),
                       call_args(0, '{"size"'), call_args(0, ": 2}"), TOOLS_DONE, DONE])
    out = await converse(llm, booking_dialogue("ASK_SIZE"))
    assert out == [ToolCall("set_party_size", {"size": 2}, "call_1"),
                   ToolCall("ask_opening_hours", {}, "call_2")]


async def test_text_streams_before_the_calls_and_a_plain_answer_has_none(llm: Replay) -> None:
    llm.script.append([ROLE, text("Sure. "), call_start(0, "c", "set_date"),
                       call_args(0, '{"date": "2026-12-12"}'), TOOLS_DONE, DONE])
    llm.script.append([ROLE, text("How many "), text("people?"), STOP, DONE])
    out = await converse(llm, booking_dialogue("ASK_DATE", party_size=2), "the twelfth")
    assert out == ["Sure. ", ToolCall("set_date", {"date": "2026-12-12"}, "c")]
    assert await converse(llm, booking_dialogue("ASK_SIZE"), "hi") == ["How many ", "people?"]
    assert "tools" in llm.requests[1]
    assert "tools" not in (await _booked_request(llm))


async def _booked_request(llm: Replay) -> dict[str, Any]:
    llm.script.append([ROLE, text("Booked."), STOP, DONE])
    await converse(llm, booking_dialogue("BOOKED", party_size=2), "thanks")
    return llm.requests[-1]


async def test_malformed_arguments_become_a_call_with_an_error(llm: Replay) -> None:
    llm.script.append([ROLE, call_start(0, "call_x", "set_party_size"),
                       call_args(0, '{"size": fo'), TOOLS_DONE, DONE])
    [call] = await converse(llm, booking_dialogue("ASK_SIZE"))
    assert isinstance(call, ToolCall) and call.name == "set_party_size"
    assert call.arguments == {} and call.error is not None
    assert call.error.startswith("the arguments are not JSON")


async def test_a_fragment_without_an_index_is_a_responder_error(llm: Replay) -> None:
    from adapters.responder import ResponderError
    llm.script.append([ROLE, _chunk({"tool_calls": [{"function": {"name": "x"}}]}), DONE])
    with pytest.raises(ResponderError, match="without an integer index"):
        await converse(llm, booking_dialogue("ASK_SIZE"))


def _ctx(responder: OpenAICompatibleResponder, dialogues: list[Dialogue],
         posted: list[tuple[str, dict[str, Any]]], trace: list[TraceEvent]) -> ActivityContext:
    clock = VirtualClock()
    ports = fake_ports(clock)
    ports.responder = responder
    chart = load_chart(CHART, build_registry())

    async def settle() -> None:
        dialogues.pop(0)                  # the session moved on: the next state's brief

    return ActivityContext(
        session_id="s1", activity="respond", state="THINKING", epoch=1, correlation_id="c1",
        payload={"text": "four of us"}, ports=ports, clock=clock, log=lambda *a: None,
        post=lambda event, payload: posted.append((event, payload)),
        emit_audio=lambda chunk: asyncio.sleep(0, True), publish=trace.append,
        dialogue=lambda: dialogues[0], settle=settle, events=chart.events)


async def test_the_engine_posts_good_calls_and_tells_the_model_about_bad_ones(
        llm: Replay) -> None:
    # request 1: two parallel calls, one with broken JSON; request 2 (after the
    # good one moved the flow): the model reads both results and speaks
    llm.script.append([ROLE, call_start(0, "call_bad", "not_understood"),
                       call_args(0, '{"heard": "x"'),
                       call_start(1, "call_ok", "set_party_size"), call_args(1, '{"size": 4}'),
                       TOOLS_DONE, DONE])
    llm.script.append([ROLE, text("Four, lovely. "), text("Which day?"), STOP, DONE])
    posted: list[tuple[str, dict[str, Any]]] = []
    trace: list[TraceEvent] = []
    dialogues = [booking_dialogue("ASK_SIZE"), booking_dialogue("ASK_DATE", party_size=4)]
    await respond(_ctx(OpenAICompatibleResponder(llm.base, "m", timeout_s=5.0), dialogues,
                       posted, trace))
    assert posted == [("set_party_size", {"size": 4}),
                      ("response_ready", {"text": "Four, lovely. Which day?"})]
    [invalid] = [e for e in trace if isinstance(e, EventInvalid)]
    assert invalid.field == "arguments" and "not JSON" in invalid.error
    second = llm.requests[1]["messages"]
    assert "step 'ASK_DATE'" in second[0]["content"] and "party_size=4" in second[0]["content"]
    assert second[2]["role"] == "assistant"
    assert [c["id"] for c in second[2]["tool_calls"]] == ["call_bad", "call_ok"]
    bad, ok = second[3], second[4]
    assert bad["role"] == "tool" and bad["tool_call_id"] == "call_bad"
    assert bad["content"].startswith("error: arguments: the arguments are not JSON")
    assert ok == {"role": "tool", "tool_call_id": "call_ok",
                  "content": "ok: set_party_size done; now in step 'ASK_DATE'"}
    assert llm.requests[1]["tools"][0]["function"]["name"] == "set_date"


async def test_a_call_with_a_wrong_type_is_event_invalid_naming_the_field(llm: Replay) -> None:
    llm.script.append([ROLE, call_start(0, "c1", "set_date"), call_args(0, '{"date": 12}'),
                       TOOLS_DONE, DONE])
    llm.script.append([ROLE, text("Sorry, which day?"), STOP, DONE])
    posted: list[tuple[str, dict[str, Any]]] = []
    trace: list[TraceEvent] = []
    dialogues = [booking_dialogue("ASK_DATE", party_size=2)]
    await respond(_ctx(OpenAICompatibleResponder(llm.base, "m", timeout_s=5.0), dialogues,
                       posted, trace))
    assert posted == [("response_ready", {"text": "Sorry, which day?"})]
    assert [e.field for e in trace if isinstance(e, EventInvalid)] == ["payload.date"]
    tool_message = llm.requests[1]["messages"][-1]
    assert tool_message["content"] == "error: payload.date: expected str, got int 12"
