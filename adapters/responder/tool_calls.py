"""Function calling over the OpenAI Chat Completions API: the request's `tools`
and `messages`, and the streamed `delta.tool_calls` put back together.

As the API documents streaming, an assistant turn that calls tools sends per
call a first fragment with `index`, `id`, `type: "function"` and
`function.name` (its `arguments` usually ""), then fragments with the same
`index` that carry pieces of `function.arguments`, a JSON text cut anywhere.
Several calls in one turn (parallel tool calls) are told apart by `index`, and
the last chunk says `finish_reason: "tool_calls"`. The calls are whole only
when the stream ends, so they are yielded after the text.

Arguments that are not a JSON object are not dropped: the call keeps its name
and id with `error` set, the engine logs it as `event_invalid` (field
`arguments`) and the model reads the error in the `tool` message of its next
request, which is how the API expects a failed call to be reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.runtime.dialogue import Dialogue, ToolCall

FLOW_BRIEF = (
    "You are in step '{state}' of a conversation flow. Your task now: {prompt}\n"
    "Known so far: {known}.\n"
    "When the caller's words give what a tool needs, call it with those arguments "
    "(you may call several); otherwise answer briefly and ask for what is missing. "
    "After your tool calls you are asked again with their results and the step they "
    "led to: then say that step's task to the caller in your own words."
)


class ToolStreamError(ValueError):
    """A `tool_calls` fragment that breaks the protocol (no index, not a list)."""


@dataclass
class _Partial:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects `delta.tool_calls` fragments by `index`; `calls()` once the stream ended."""

    def __init__(self) -> None:
        self._partial: dict[int, _Partial] = {}

    def add(self, fragments: Any) -> None:
        if not isinstance(fragments, list):
            raise ToolStreamError(f"delta.tool_calls is not a list: {fragments!r:.80}")
        for fragment in fragments:
            index = fragment.get("index") if isinstance(fragment, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                raise ToolStreamError(f"a tool_calls fragment without an integer index: "
                                      f"{fragment!r:.80}")
            partial = self._partial.setdefault(index, _Partial())
            if isinstance(fragment.get("id"), str) and fragment["id"]:
                partial.call_id = fragment["id"]
            function = fragment.get("function") or {}
            if not isinstance(function, dict):
                raise ToolStreamError(f"a tool_calls fragment whose function is not an "
                                      f"object: {fragment!r:.80}")
            if isinstance(function.get("name"), str):
                partial.name += function["name"]
            if isinstance(function.get("arguments"), str):
                partial.arguments.append(function["arguments"])

    def __bool__(self) -> bool:
        return bool(self._partial)

    def calls(self) -> list[ToolCall]:
        """The calls in index order; unreadable arguments become a call with `error`."""
        return [_call(p.name, "".join(p.arguments), p.call_id or f"call_{i}")
                for i, p in sorted(self._partial.items())]


def whole_calls(tool_calls: Any) -> list[ToolCall]:
    """`message.tool_calls` of a reply that was not streamed."""
    if not isinstance(tool_calls, list):
        return []
    out = []
    for i, item in enumerate(tool_calls):
        function = item.get("function") if isinstance(item, dict) else None
        if isinstance(function, dict):
            out.append(_call(str(function.get("name", "")), str(function.get("arguments", "")),
                             str(item.get("id") or f"call_{i}")))
    return out


def _call(name: str, text: str, call_id: str) -> ToolCall:
    try:
        arguments = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolCall(name, {}, call_id,
                        error=f"the arguments are not JSON ({exc.msg} at character "
                              f"{exc.pos}): {text[:80]!r}")
    if not isinstance(arguments, dict):
        return ToolCall(name, {}, call_id, error=f"the arguments are not a JSON object: "
                                                 f"{text[:80]!r}")
    return ToolCall(name, arguments, call_id)


def tools_param(dialogue: Dialogue) -> list[dict[str, Any]]:
    """The request's `tools`: each chart event offered, its payload as JSON Schema."""
    return [{"type": "function",
             "function": {"name": t.name, "description": t.description or t.name,
                          "parameters": t.json_schema()}}
            for t in dialogue.tools]


def flow_messages(system_prompt: str, text: str, dialogue: Dialogue) -> list[dict[str, Any]]:
    """System (the step's task and what is known), the caller's words, and this turn's
    calls with their results (`tool` messages) when there were any."""
    known = ", ".join(f"{k}={v!r}" for k, v in _known(dialogue.data).items()) or "nothing yet"
    brief = FLOW_BRIEF.format(state=dialogue.state, prompt=dialogue.prompt, known=known)
    messages: list[dict[str, Any]] = [{"role": "system", "content": f"{system_prompt}\n\n{brief}"},
                                      {"role": "user", "content": text}]
    if dialogue.results:
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": r.call.call_id, "type": "function",
             "function": {"name": r.call.name, "arguments": json.dumps(dict(r.call.arguments))}}
            for r in dialogue.results]})
        messages.extend({"role": "tool", "tool_call_id": r.call.call_id,
                         "content": ("ok: " if r.ok else "error: ") + r.detail
                         + (f"; now in step '{dialogue.state}'" if r.ok else "")}
                        for r in dialogue.results)
    return messages


def _known(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in ("", 0, 0.0, False, None)}
