"""The OpenAI-compatible responder against fake LLM servers: a real one served by
uvicorn on a free 127.0.0.1 port (streaming, hangs, errors) and httpx.MockTransport
for request shape and stream-format edge cases."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from adapters.responder import (
    Knowledge,
    OpenAICompatibleResponder,
    ResponderConfigError,
    ResponderError,
)
from adapters.responder.understanding import knowledge_retriever, rule_detector
from engine.runtime.behaviours import respond
from engine.runtime.clock import VirtualClock
from engine.runtime.context import ActivityContext
from engine.tools.fakes import fake_ports

SECRET = "sk-test-Zq8vT3xY9-do-not-leak"


def chunk(content: str | None = None, *, role: str | None = None) -> str:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"


# --- a real fake server --------------------------------------------------------------------

@dataclass
class FakeLLM:
    """State shared with the app: what it received, and gates the test opens."""

    base: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/v1"


def fake_llm_app(state: FakeLLM) -> Starlette:
    async def completions(request: Request) -> Response:
        mode = request.path_params["mode"]
        state.requests.append(await request.json())
        state.auth.append(request.headers.get("authorization"))
        if mode == "hang":  # accepts the request, never answers
            await state.release.wait()
            return PlainTextResponse("too late")
        if mode == "fail":  # a server echoing the key back, as some do
            return JSONResponse({"error": {"message": f"boom, key {SECRET} rejected"}},
                                status_code=500)
        return StreamingResponse(streams[mode](), media_type="text/event-stream")

    async def lockstep() -> AsyncIterator[str]:
        for piece in ("Hello", " there", "!"):
            if piece != "Hello":
                await state.go.wait()  # the rest only once the client has the first piece
            state.sent.append(piece)
            yield chunk(piece)
        yield DONE

    async def ok() -> AsyncIterator[str]:
        yield chunk(role="assistant")
        yield ": keep-alive comment\n\n"
        for piece in ("It is ", "sunny ", "today."):
            yield chunk(piece)
        yield 'data: {"id":"c1","choices":[],"usage":{"total_tokens":9}}\n\n'
        yield DONE

    async def stall() -> AsyncIterator[str]:
        yield chunk("Once upon")
        await state.release.wait()
        yield DONE

    async def garbage() -> AsyncIterator[str]:
        yield chunk("Fine so far")
        yield "data: {this is not json\n\n"
        yield DONE

    async def noise() -> AsyncIterator[str]:
        yield "<html>502 Bad Gateway</html>\n"

    streams: dict[str, Callable[[], AsyncIterator[str]]] = {
        "lockstep": lockstep, "ok": ok, "stall": stall, "garbage": garbage, "noise": noise}
    return Starlette(routes=[Route("/{mode}/v1/chat/completions", completions,
                                   methods=["POST"])])


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    state = FakeLLM()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(fake_llm_app(state), lifespan="off", log_level="warning",
                            http="h11", ws="none", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield state
    finally:
        state.release.set()
        state.go.set()
        server.should_exit = True
        await task
        sock.close()


def responder(base_url: str, **kwargs: Any) -> OpenAICompatibleResponder:
    kwargs.setdefault("api_key", SECRET)
    kwargs.setdefault("timeout_s", 2.0)
    return OpenAICompatibleResponder(base_url, "test-model", **kwargs)


async def collect(r: OpenAICompatibleResponder, text: str = "hi") -> list[str]:
    return [piece async for piece in r.answer(text, "s1")]


async def failure(r: OpenAICompatibleResponder, text: str = "hi") -> str:
    with pytest.raises(ResponderError) as info:
        await collect(r, text)
    message = str(info.value)
    assert SECRET not in message
    assert info.value.__cause__ is None  # no chained httpx error to leak from a traceback
    return message


async def test_pieces_stream_in_order_as_they_arrive(llm: FakeLLM) -> None:
    stream = responder(llm.url("lockstep")).answer("hello", "s1")
    first = await anext(stream)
    assert first == "Hello" and llm.sent == ["Hello"]  # we had it before the rest was sent
    llm.go.set()
    assert [p async for p in stream] == [" there", "!"]
    assert llm.sent == ["Hello", " there", "!"]


async def test_request_shape_and_skipped_stream_events(llm: FakeLLM) -> None:
    assert await collect(responder(llm.url("ok")), "what is the weather") == \
        ["It is ", "sunny ", "today."]
    [body] = llm.requests
    assert body["model"] == "test-model" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "what is the weather"
    assert llm.auth == [f"Bearer {SECRET}"]


async def test_no_key_means_no_authorization_header(llm: FakeLLM) -> None:
    await collect(responder(llm.url("ok"), api_key=None))
    assert llm.auth == [None]


async def test_a_server_that_hangs_times_out(llm: FakeLLM) -> None:
    message = await failure(responder(llm.url("hang"), timeout_s=0.3))
    assert "timed out: no data within 0.3 s (ReadTimeout)" in message
    assert f"LLM at {llm.url('hang')}/chat/completions (model test-model)" in message


async def test_a_server_that_stalls_mid_answer_times_out(llm: FakeLLM) -> None:
    pieces: list[str] = []
    with pytest.raises(ResponderError, match="timed out") as info:
        async for piece in responder(llm.url("stall"), timeout_s=2.0).answer("story", "s1"):
            pieces.append(piece)
    assert pieces == ["Once upon"]
    assert SECRET not in str(info.value)


async def test_http_500_is_an_error_with_the_reason_and_no_key(llm: FakeLLM) -> None:
    message = await failure(responder(llm.url("fail")))
    assert "answered HTTP 500" in message and "boom, key [redacted] rejected" in message


async def test_a_huge_error_page_is_cut_short() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<p>bad gateway</p>" * 100_000)
    message = await failure(mock(handler))
    assert "answered HTTP 502: <p>bad gateway</p>" in message and len(message) < 400


async def test_a_404_names_the_url_it_tried(llm: FakeLLM) -> None:
    message = await failure(responder(f"{llm.base}/wrong/path"))
    assert f"LLM at {llm.base}/wrong/path/chat/completions" in message
    assert "answered HTTP 404" in message


async def test_garbage_in_the_stream_is_an_error(llm: FakeLLM) -> None:
    message = await failure(responder(llm.url("garbage")))
    assert "sent a stream event that is not JSON: '{this is not json'" in message


async def test_a_stream_without_events_is_an_error(llm: FakeLLM) -> None:
    message = await failure(responder(llm.url("noise")))
    assert "sent no server-sent events (text/event-stream" in message


async def test_connection_refused_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = await failure(responder(f"http://127.0.0.1:{port}/v1"))
    assert f"LLM at http://127.0.0.1:{port}/v1/chat/completions" in message
    assert "cannot be reached" in message


async def test_the_engine_turns_a_responder_failure_into_an_error_event(llm: FakeLLM) -> None:
    clock = VirtualClock()
    ports = fake_ports(clock)
    ports.responder = responder(llm.url("fail"))
    posted: list[tuple[str, dict[str, Any]]] = []
    ctx = ActivityContext(
        session_id="s1", activity="respond", state="THINKING", epoch=1, correlation_id="c1",
        payload={"text": "hello"}, ports=ports, clock=clock, log=lambda *a: None,
        post=lambda event, payload: posted.append((event, payload)),
        emit_audio=lambda chunk: asyncio.sleep(0, True))
    await respond(ctx)
    [(event, payload)] = posted
    assert event == "error"
    assert payload["message"].startswith("responder failed: ResponderError: LLM at ")
    assert SECRET not in payload["message"]


# --- MockTransport: request details and stream formats -------------------------------------

def mock(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
         ) -> OpenAICompatibleResponder:
    return responder("http://llm.test/v1/", transport=httpx.MockTransport(handler), **kwargs)


def sse(*events: str, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="".join(events),
                              headers={"content-type": "text/event-stream"})
    return handler


async def test_context_from_intent_and_knowledge_goes_into_the_system_prompt() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return sse(chunk("Ok."), DONE)(request)

    r = mock(handler, detect=rule_detector(), retrieve=knowledge_retriever(Knowledge.default()),
             clock_now=lambda: datetime(2024, 1, 1, 9, 5), system_prompt="Be brief.")
    assert await collect(r, "hi, what is barge-in?") == ["Ok."]
    system = seen[0]["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nContext")
    assert "Current local time: It is 9:05 AM." in system
    assert "intent looks like 'greeting'" in system
    assert "Q: What is barge-in?" in system


async def test_without_detectors_the_prompt_is_just_the_system_prompt() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        assert request.url == "http://llm.test/v1/chat/completions"
        return sse(chunk("Ok."), DONE)(request)

    await collect(mock(handler, system_prompt="Be brief."))
    assert seen[0]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_multi_line_data_and_crlf_framing_are_understood() -> None:
    body = json.dumps({"choices": [{"delta": {"content": "A"}}]}, indent=1)
    framed = "".join(f"data: {line}\r\n" for line in body.splitlines()) + "\r\n"
    assert await collect(mock(sse(framed, "event: x\r\nid: 3\r\n", chunk("B"), DONE))) == \
        ["A", "B"]


async def test_a_server_ignoring_stream_true_still_works() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "Whole."}}]})
    assert await collect(mock(handler)) == ["Whole."]


@pytest.mark.parametrize(("events", "expected"), [
    ((chunk(role="assistant"), DONE), "sent an empty answer"),
    ((chunk("part"),), "ended the stream before 'data: [DONE]'"),
    (('data: {"error": {"message": "model overloaded"}}\n\n',),
     "reported an error: model overloaded"),
    (('data: {"choices": [{"delta": {"content": 42}}]}\n\n',), "want choices[0].delta.content"),
    (('data: {"object": "chunk"}\n\n',), "without 'choices'"),
    (("data: [1, 2]\n\n",), "not a JSON object"),
])
async def test_malformed_streams_are_errors(events: tuple[str, ...], expected: str) -> None:
    with pytest.raises(ResponderError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        await collect(mock(sse(*events)))


async def test_a_json_reply_without_content_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})
    with pytest.raises(ResponderError, match=r"without choices\[0\]\.message\.content"):
        await collect(mock(handler))


async def test_transport_errors_are_responder_errors_without_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError(f"peer closed, auth was {SECRET}", request=request)
    with pytest.raises(ResponderError, match="request failed: RemoteProtocolError") as info:
        await collect(mock(handler))
    assert SECRET not in str(info.value)
    assert "[redacted]" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_bad_construction_is_a_config_error() -> None:
    for kwargs in ({"base_url": "ftp://x/v1"}, {"base_url": "localhost:8000"},
                   {"base_url": "http://x/v1", "model": ""},
                   {"base_url": "http://x/v1", "timeout_s": 0}):
        args: dict[str, Any] = {"model": "m", **kwargs}
        with pytest.raises(ResponderConfigError):
            OpenAICompatibleResponder(**args)


def test_credentials_in_the_url_are_not_shown() -> None:
    r = OpenAICompatibleResponder("http://user:pw@127.0.0.1:1/v1?x=1", "m", api_key=SECRET)
    assert r.where == "http://127.0.0.1:1/v1/chat/completions"
    assert "pw" not in repr(r) and SECRET not in repr(r)
