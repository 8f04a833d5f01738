"""What the responder is asked in a dialogue state, and what its tool calls become.

A chart state may say what the responder is asked there (`prompt:`) and which
chart events it may call as tools (`tools:`); an event's declared payload is
the tool's parameter schema (issue 16 §4). The respond activity reads the
active states' dialogue when it starts (`dialogue_of`), hands it to the
responder, and turns each tool call into that chart event — checked with the
same `check_payload` as every event from the wire, so a bad call is an
`event_invalid` line naming the field, and the responder is told what was
wrong (`ToolResult`) in its next request.

Nothing here talks to a model: `Dialogue` is plain data, so the offline
responder, an HTTP LLM and the simulator's fake read the same thing.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.chart.spec import EventSpec, parse_payload_type
from engine.runtime.events import EventProblem, VoiceEvent, check_payload

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "list": "array", "dict": "object"}


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool: a chart event; its payload fields are the parameters."""

    name: str
    parameters: Mapping[str, str]          # field → payload type ("str", "int?")
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        """The parameters as JSON Schema (an object; `?` fields are not required)."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, type_text in self.parameters.items():
            optional = type_text.endswith("?")
            properties[name] = {"type": _JSON_TYPES[type_text.rstrip("?")]}
            if not optional:
                required.append(name)
        return {"type": "object", "properties": properties, "required": required,
                "additionalProperties": False}

    def accepts(self, name: str) -> type:
        """The Python type of parameter `name`."""
        return parse_payload_type(self.parameters[name])[0]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The responder wants chart event `name` posted with `arguments` as its payload."""

    name: str
    arguments: Mapping[str, Any]
    call_id: str = ""
    error: str | None = None    # the arguments could not be read (say, not JSON)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What became of one call: posted (`ok`), or why not (`detail` names the field)."""

    call: ToolCall
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Dialogue:
    """The responder's brief in the current dialogue state."""

    state: str                              # the state whose prompt applies
    prompt: str                             # data fields filled in
    tools: tuple[Tool, ...]
    data: Mapping[str, Any] = field(default_factory=dict)
    results: tuple[ToolResult, ...] = ()    # this turn's earlier calls, told back

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def with_results(self, results: Sequence[ToolResult]) -> Dialogue:
        return Dialogue(self.state, self.prompt, self.tools, self.data,
                        (*self.results, *results))


def fill_prompt(prompt: str, data: Mapping[str, Any]) -> str:
    """`"A table for {party_size}?"` with the data's values (the validator checked the names)."""
    return string.Formatter().vformat(prompt, (), dict(data))


def dialogue_of(states: Mapping[str, Any], events: Mapping[str, EventSpec],
                leaves: Sequence[str], data: Mapping[str, Any]) -> Dialogue | None:
    """The dialogue of the first active leaf (file order) with a prompt; None when no
    active state has one. `states` maps names to compiled `StateInfo`s."""
    for leaf in leaves:
        info = states[leaf]
        if info.prompt is None:
            continue
        tools = tuple(Tool(name, dict(events[name].payload), events[name].description)
                      for name in info.tools)
        return Dialogue(leaf, fill_prompt(info.prompt, data), tools, dict(data))
    return None


def check_call(call: ToolCall, dialogue: Dialogue, events: Mapping[str, EventSpec],
               session_id: str) -> EventProblem | None:
    """None when the call may be posted; else the problem, as the wire check words it."""
    raw = {"event_type": call.name, "payload": dict(call.arguments)}
    if dialogue.tool(call.name) is None:
        offered = ", ".join(t.name for t in dialogue.tools) or "none"
        return EventProblem("event_type", f"'{call.name}' is not a tool of state "
                            f"'{dialogue.state}' (its tools: {offered})", raw)
    if call.error is not None:
        return EventProblem("arguments", call.error, raw)
    event = VoiceEvent.model_construct(event_type=call.name, session_id=session_id,
                                       source="responder", timestamp=0.0, correlation_id=None,
                                       payload=dict(call.arguments), metadata={})
    try:
        check_payload(event, events)
    except EventProblem as problem:
        return problem
    return None
