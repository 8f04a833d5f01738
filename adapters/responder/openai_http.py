"""An OpenAI-compatible chat-completions LLM over HTTP, streamed as it answers.

Works with any server speaking the `/chat/completions` SSE protocol (OpenAI,
vLLM, llama.cpp, Ollama...). Every failure becomes one `ResponderError` whose
message names the server and the cause, so the chart's `error` event says
what happened; the API key is sent only in the Authorization header and is
scrubbed from every message this module builds.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx

from adapters.responder.errors import ResponderConfigError, ResponderError
from adapters.responder.knowledge import Hit
from adapters.responder.sse import sse_data
from adapters.responder.timeofday import local_now, spoken_time
from adapters.responder.tool_calls import (
    ToolCallAssembler,
    ToolStreamError,
    flow_messages,
    tools_param,
    whole_calls,
)
from adapters.responder.understanding import IntentDetector, Retriever, Understanding, understand
from engine.runtime.dialogue import Dialogue, ToolCall

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your words are spoken aloud: answer in one to "
    "three short sentences, with no lists, markdown, code or emoji."
)
_SNIPPET = 200
"""How much of an error body or bad stream line goes into a message."""


class OpenAICompatibleResponder:
    """`engine.runtime.ports.Responder` backed by a streaming chat-completions endpoint.

    `timeout_s` bounds every wait: connecting, and each gap between streamed
    bytes, so a server that hangs before or during its answer fails the turn.
    When `detect` or `retrieve` is given they run concurrently before the
    request and their findings go into the system prompt as context.
    A client is opened per answer: nothing to close, nothing leaked when the
    owning state cancels the turn.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout_s: float = 10.0, system_prompt: str = DEFAULT_SYSTEM_PROMPT, *,
                 detect: IntentDetector | None = None, retrieve: Retriever | None = None,
                 clock_now: Callable[[], datetime] = local_now,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ResponderConfigError(
                f"responder base_url must be an http(s) URL like http://127.0.0.1:8000/v1, "
                f"got {base_url!r}")
        if not model:
            raise ResponderConfigError("responder model must be a non-empty model name")
        if timeout_s <= 0:
            raise ResponderConfigError(f"responder timeout_s must be positive, got {timeout_s}")
        self.url = url.copy_with(path=url.path.rstrip("/") + "/chat/completions")
        self.where = str(self.url.copy_with(username=None, password=None, query=None))
        self.model = model
        self.timeout_s = timeout_s
        self.system_prompt = system_prompt
        self.clock_now = clock_now
        self._api_key = api_key or None
        self._detect, self._retrieve = detect, retrieve
        self._transport = transport

    def __repr__(self) -> str:
        return f"OpenAICompatibleResponder(url={self.where!r}, model={self.model!r})"

    async def answer(self, text: str, session_id: str) -> AsyncIterator[str]:
        """Yield the model's text pieces in the order they arrive."""
        body = {"model": self.model, "messages": await self._messages(text), "stream": True}
        async with self._post(body) as response:
            if _is_json(response):
                yield self._whole_answer(await response.aread())
                return
            async for piece in self._pieces(response):
                yield piece

    async def converse(self, text: str, session_id: str,
                       dialogue: Dialogue) -> AsyncIterator[str | ToolCall]:
        """In a dialogue state (issue 16 §4): the state's task in the system message,
        its tools as `tools` (function calling), this turn's earlier calls and their
        results as `tool` messages; yields the text as it streams, then the calls."""
        body: dict[str, Any] = {"model": self.model, "stream": True,
                                "messages": flow_messages(self.system_prompt, text, dialogue)}
        if dialogue.tools:
            body["tools"] = tools_param(dialogue)
        async with self._post(body) as response:
            if _is_json(response):
                for piece in self._whole_turn(await response.aread()):
                    yield piece
                return
            async for piece in self._turn_pieces(response):
                yield piece

    @contextlib.asynccontextmanager
    async def _post(self, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """The streaming POST of `body`, answered with success; every failure, while
        connecting or while the caller reads the stream, becomes one ResponderError."""
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport,
                                         follow_redirects=False) as client, \
                    client.stream("POST", self.url, json=body, headers=headers) as response:
                if not response.is_success:
                    detail = _snippet(await _head(response)) or response.reason_phrase
                    raise self._error(f"answered HTTP {response.status_code}: {detail}")
                yield response
        except httpx.TimeoutException as exc:
            raise self._error(f"timed out: no data within {self.timeout_s:g} s "
                              f"({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise self._error(f"cannot be reached: {exc}") from None
        except httpx.HTTPError as exc:
            # `from None`: the message says what happened; a chained httpx error in a
            # logged traceback is one more place a secret could leak from.
            raise self._error(f"request failed: {type(exc).__name__}: {exc}") from None

    async def _turn_pieces(self, response: httpx.Response) -> AsyncIterator[str | ToolCall]:
        """Text deltas as they come; the tool calls, reassembled, once `[DONE]` arrives."""
        said, events, calls = False, False, ToolCallAssembler()
        async for data in sse_data(response.aiter_lines()):
            events = True
            if data.strip() == "[DONE]":
                if not said and not calls:
                    raise self._error("sent an empty answer")
                for call in calls.calls():
                    yield call
                return
            chunk = self._json(data, "a stream event")
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                raise self._error(f"sent a malformed stream event without 'choices': "
                                  f"{_snippet(data)!r}")
            delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else {}
            if not isinstance(delta, dict):
                raise self._error(f"sent a malformed stream event: {_snippet(data)!r}")
            content = delta.get("content")
            if isinstance(content, str) and content:
                said = True
                yield content
            if delta.get("tool_calls") is not None:
                try:
                    calls.add(delta["tool_calls"])
                except ToolStreamError as exc:
                    raise self._error(f"sent a malformed tool call: {exc}") from None
        if not events:
            kind = response.headers.get("content-type", "no content-type")
            raise self._error(f"sent no server-sent events ({kind}); is base_url an "
                              f"OpenAI-compatible API?")
        raise self._error("ended the stream before 'data: [DONE]' (answer cut off)")

    def _whole_turn(self, raw: bytes) -> list[str | ToolCall]:
        """A server that ignored `stream: true`: the message's text and tool calls."""
        data = raw.decode("utf-8", "replace")
        reply = self._json(data, "its reply")
        try:
            message = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            message = None
        if not isinstance(message, dict):
            raise self._error(f"sent a reply without choices[0].message: {_snippet(data)!r}")
        content = message.get("content")
        out: list[str | ToolCall] = [content] if isinstance(content, str) and content else []
        out.extend(whole_calls(message.get("tool_calls")))
        if not out:
            raise self._error(f"sent a reply with neither content nor tool calls: "
                              f"{_snippet(data)!r}")
        return out

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[str]:
        said = events = False
        async for data in sse_data(response.aiter_lines()):
            events = True
            if data.strip() == "[DONE]":
                if not said:
                    raise self._error("sent an empty answer")
                return
            piece = self._delta(data)
            if piece:
                said = True
                yield piece
        if not events:
            kind = response.headers.get("content-type", "no content-type")
            raise self._error(f"sent no server-sent events ({kind}); is base_url an "
                              f"OpenAI-compatible API?")
        raise self._error("ended the stream before 'data: [DONE]' (answer cut off)")

    async def _messages(self, text: str) -> list[dict[str, str]]:
        system = self.system_prompt
        if self._detect is not None or self._retrieve is not None:
            found = await understand(text, self._detect or _no_intent,
                                     self._retrieve or _no_hits)
            system = f"{system}\n\n{self._context(found)}"
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _context(self, found: Understanding) -> str:
        lines = ["Context, use it only if it helps:",
                 f"- Current local time: {spoken_time(self.clock_now())}"]
        if found.intent is not None:
            lines.append(f"- The user's intent looks like '{found.intent.name}' "
                         f"(confidence {found.intent.confidence:.2f}).")
        lines.extend(f"- Known fact: Q: {h.entry.question} A: {h.entry.answer}"
                     for h in found.hits)
        return "\n".join(lines)

    def _delta(self, data: str) -> str:
        """The text of one streamed chunk ('' for role-only or usage chunks)."""
        chunk = self._json(data, "a stream event")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._error(f"sent a malformed stream event without 'choices': "
                              f"{_snippet(data)!r}")
        if not choices:
            return ""
        first = choices[0]
        delta = first.get("delta") if isinstance(first, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(content, str | None):
            raise self._error(f"sent a malformed stream event (want choices[0].delta.content): "
                              f"{_snippet(data)!r}")
        return content or ""

    def _whole_answer(self, raw: bytes) -> str:
        """A server that ignored `stream: true` and sent one JSON completion."""
        data = raw.decode("utf-8", "replace")
        reply = self._json(data, "its reply")
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str) or not content.strip():
            raise self._error(f"sent a reply without choices[0].message.content: "
                              f"{_snippet(data)!r}")
        return content

    def _json(self, data: str, what: str) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except json.JSONDecodeError:
            raise self._error(f"sent {what} that is not JSON: {_snippet(data)!r}") from None
        if not isinstance(value, dict):
            raise self._error(f"sent {what} that is not a JSON object: {_snippet(data)!r}")
        if "error" in value:
            error = value["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise self._error(f"reported an error: {_snippet(str(message))}")
        return value

    def _error(self, what: str) -> ResponderError:
        message = f"LLM at {self.where} (model {self.model}) {what}"
        if self._api_key:
            message = message.replace(self._api_key, "[redacted]")
        return ResponderError(message)


def _is_json(response: httpx.Response) -> bool:
    """A whole (non-streamed) answer: some servers ignore `stream: true`."""
    return str(response.headers.get("content-type", "")).startswith("application/json")


async def _no_intent(text: str) -> None:
    return None


async def _no_hits(text: str) -> list[Hit]:
    return []


async def _head(response: httpx.Response, limit: int = 4 * _SNIPPET) -> str:
    """The start of an error body: enough to explain, never a whole huge page."""
    head = b""
    async for part in response.aiter_bytes():
        head += part
        if len(head) >= limit:
            break
    return head[:limit].decode("utf-8", "replace")


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
