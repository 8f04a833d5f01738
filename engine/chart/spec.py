"""Strict pydantic models of a chart: the shape of CHART_FORMAT.md §1.

The models only accept what the format allows (`extra="forbid"`) and do the
small normalisations a reader expects (a bare target string or a single
mapping in `on` becomes a one-item list). Cross-references (targets, names
in the registry, reachability) are the validator's job, where positions are
known.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from engine.chart.errors import did_you_mean
from engine.chart.turn import MAX_TURN_MS, EndOfTurn

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CHART_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
PAYLOAD_TYPES: dict[str, type] = {
    "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
}
UnhandledPolicy = Literal["error", "warn", "ignore"]
HistoryKind = Literal["shallow", "deep"]
DONE_PREFIX = "done.state."
"""`done.state.NAME`: the event a compound state posts when it reaches a final child
(for a parallel state: when every region has), SCXML's done event."""


def parse_delay_ms(text: str) -> float:
    """`'250ms'` → 250.0, `'1.5s'` → 1500.0; raises ValueError otherwise."""
    match = _DELAY_RE.match(text)
    if not match:
        raise ValueError(f"bad delay {text!r}")
    number, unit = float(match.group(1)), match.group(2)
    ms = number * 1000.0 if unit == "s" else number
    if not math.isfinite(ms):
        raise ValueError(f"delay {text!r} is too long")
    return ms


def _check_delay(text: str) -> str:
    try:
        parse_delay_ms(text)
    except ValueError:
        raise PydanticCustomError(
            "delay", "bad delay '{text}': write a number followed by ms or s, e.g. 250ms or 1.5s",
            {"text": text}) from None
    return text


def parse_payload_type(text: str) -> tuple[type, bool]:
    """`'str?'` → (str, optional=True); raises ValueError for unknown types."""
    optional = text.endswith("?")
    base = text[:-1] if optional else text
    if base not in PAYLOAD_TYPES:
        raise ValueError(text)
    return PAYLOAD_TYPES[base], optional


def _check_payload_type(text: str) -> str:
    try:
        parse_payload_type(text)
    except ValueError:
        optional = text.endswith("?")
        base = (text[:-1] if optional else text).strip().lower()
        hint = did_you_mean(base, PAYLOAD_TYPES)
        if hint and optional:
            hint = hint.replace("'?)", "?'?)")
        raise PydanticCustomError(
            "payload_type",
            "bad payload type '{text}': use one of {allowed}, optionally with ?{hint}",
            {"text": text, "allowed": ", ".join(PAYLOAD_TYPES), "hint": hint}) from None
    return text


def _check_chart_name(text: str) -> str:
    if not CHART_NAME_RE.match(text):
        raise PydanticCustomError(
            "chart_name", "bad chart name '{text}': use lower-case letters, digits and _",
            {"text": text})
    return text


def _one_or_many(value: Any) -> Any:
    """A single name stands for a one-item list; a list becomes a tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


Delay = Annotated[str, AfterValidator(_check_delay)]
PayloadType = Annotated[str, AfterValidator(_check_payload_type)]
ChartName = Annotated[str, AfterValidator(_check_chart_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EventSpec(_Strict):
    payload: dict[str, PayloadType] = Field(default_factory=dict)
    unhandled: UnhandledPolicy = "error"
    description: str | None = None


class GuardRef(_Strict):
    """A guard name, possibly negated with `not name`, with its arguments if any."""

    name: str
    negated: bool = False
    args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> GuardRef:
        words = text.split()
        if len(words) == 2 and words[0] == "not":
            return cls(name=words[1], negated=True)
        return cls(name=text.strip())

    def __str__(self) -> str:
        call = self.name
        if self.args:
            call += "(" + ", ".join(f"{k}={v}" for k, v in self.args) + ")"
        return f"not {call}" if self.negated else call

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.args)


class GuardCallSpec(_Strict):
    """`{name: field_equals, args: {field: tries, value: 2}, not: false}`: a guard with
    arguments (each guard declares its argument types; the validator checks them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    negated: bool = Field(default=False, alias="not")


DataType = Literal["str", "int", "float", "bool"]
DATA_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
Scalar = bool | int | float | str


class DataFieldSpec(_Strict):
    """One typed field of the chart's data (`data:`), with its default."""

    type: DataType
    default: Scalar | None = None
    description: str | None = None


class SetFrom(_Strict):
    """`{from: FIELD}`: the value of a payload field of the transition's event."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    from_: str = Field(alias="from")


class SetAdd(_Strict):
    """`{add: N}`: add a number to an int or float field (a counter)."""

    add: int | float


SetValue = SetFrom | SetAdd | Scalar


class TransitionSpec(_Strict):
    target: str | None = None
    guard: tuple[str | GuardCallSpec, ...] = ()
    do: tuple[str, ...] = ()
    set: dict[str, SetValue] = Field(default_factory=dict)

    @field_validator("do", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("guard", mode="before")
    @classmethod
    def _guards(cls, value: Any) -> Any:
        return (value,) if isinstance(value, dict) else _one_or_many(value)

    @property
    def guards(self) -> tuple[GuardRef, ...]:
        return tuple(GuardRef.parse(g) if isinstance(g, str) else
                     GuardRef(name=g.name, negated=g.negated, args=tuple(g.args.items()))
                     for g in self.guard)


TurnMs = Annotated[int, Field(ge=0, le=MAX_TURN_MS)]


class BargeInSpec(_Strict):
    """How much speech over the assistant is a barge-in, in ms (engine/chart/turn.py)."""

    speaking_ms: TurnMs | None = None
    thinking_ms: TurnMs | None = None


class TurnSpec(_Strict):
    """A state's `turn:` policy; every key optional, inherited key by key."""

    end: EndOfTurn | None = None
    patience_ms: TurnMs | None = None
    barge_in: BargeInSpec | None = None


class StateSpec(_Strict):
    description: str | None = None
    contract: dict[str, str] = Field(default_factory=dict)
    turn: TurnSpec | None = None
    enter: tuple[str, ...] = ()
    exit: tuple[str, ...] = ()
    on: dict[str, tuple[TransitionSpec, ...]] = Field(default_factory=dict)
    invoke: tuple[str, ...] = ()
    after: dict[Delay, str] = Field(default_factory=dict)
    initial: str | None = None
    states: dict[str, StateSpec] = Field(default_factory=dict)
    final: bool = False
    parallel: bool = False
    history: HistoryKind | None = None
    prompt: str | None = None          # what the responder is asked here (issue 16 §4)
    tools: tuple[str, ...] = ()        # chart events the responder may call here

    @field_validator("enter", "exit", "invoke", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("on", mode="before")
    @classmethod
    def _transitions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for event, spec in value.items():
            if isinstance(spec, str):
                out[event] = ({"target": spec},)
            elif isinstance(spec, dict):
                out[event] = (spec,)
            elif isinstance(spec, list):
                out[event] = tuple({"target": s} if isinstance(s, str) else s for s in spec)
            else:
                out[event] = spec
        return out

    @property
    def is_compound(self) -> bool:
        return bool(self.states)


class ChartSpec(_Strict):
    chart: ChartName
    version: int
    initial: str
    description: str | None = None
    contracts: dict[str, tuple[str, ...]]
    data: dict[str, DataFieldSpec] = Field(default_factory=dict)
    events: dict[str, EventSpec]
    states: dict[str, StateSpec]

    @field_validator("data", mode="before")
    @classmethod
    def _short_fields(cls, value: Any) -> Any:
        """`count: int` is `count: {type: int}` (default: the type's zero value)."""
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _empty_events(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("contracts", mode="before")
    @classmethod
    def _channel_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value
