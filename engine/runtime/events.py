"""`VoiceEvent`, the one event shape on the wire (CHART_FORMAT.md §2).

Parsing happens in two steps: the envelope (`VoiceEvent.model_validate`) and
then the payload against the running chart's declared fields
(`check_payload`). Anything wrong becomes an `EventProblem` naming the field;
it never reaches the chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.chart.spec import EventSpec, parse_payload_type

RAW_LIMIT = 300


class VoiceEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str = Field(min_length=1, max_length=128)
    session_id: str = Field(min_length=1, max_length=256)
    source: str = Field(default="unknown", max_length=128)
    timestamp: float = Field(strict=True)   # a JSON number: not a string, not a bool
    correlation_id: str | None = Field(default=None, max_length=256)
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _finite_time(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("timestamp must be a finite number of seconds since the epoch")
        return value

    @field_validator("session_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("session_id must not be blank")
        return value


class EventProblem(Exception):
    """Why an input is not a usable event; `field` names where."""

    def __init__(self, field: str, error: str, raw: Any) -> None:
        self.field = field
        self.error = error
        self.raw = truncate_raw(raw)
        super().__init__(f"{field}: {error}")


def truncate_raw(raw: Any, limit: int = RAW_LIMIT) -> str:
    """The input as short, printable text for a log line, whatever it is."""
    try:
        text = raw if isinstance(raw, str) else json.dumps(raw, default=repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(raw)
        except RecursionError:
            text = f"<{type(raw).__name__} nested too deeply to show>"
    if not text.isascii():   # unpaired surrogates (JSON's \ud800) cannot be written as UTF-8
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit} chars)"


def _not_unicode(event: VoiceEvent) -> str | None:
    """Where the first text holding an unpaired surrogate is (JSON can carry
    `\\ud800`; no log line, socket or stream can), or None."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((name,), getattr(event, name))
                                                for name in VoiceEvent.model_fields]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return ".".join(truncate_raw(part, 40) for part in where)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                stack.append(((*where, key), key))
                stack.append(((*where, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*where, i), item) for i, item in enumerate(value))
    return None


def _may_hold_surrogates(raw: Any) -> bool:
    """False when JSON text cannot decode to an unpaired surrogate: no `\\uD…`
    escape in it and (text) no surrogate character itself. Skips the walk of
    every field for nearly every event on the hot path."""
    if isinstance(raw, bytes):
        # json.loads decodes bytes as UTF-8/16/32 with `surrogatepass`: only plain
        # ASCII without NULs (always read as UTF-8) is sure to hold none itself.
        return not raw.isascii() or b"\x00" in raw or b"\\ud" in raw or b"\\uD" in raw
    if isinstance(raw, str):
        if "\\ud" in raw or "\\uD" in raw:
            return True
        if raw.isascii():
            return False
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    return True


def parse_event(raw: Any) -> VoiceEvent:
    """Validate the envelope of a raw mapping or JSON string; raise `EventProblem`.

    JSON text that cannot hold an unpaired surrogate is first validated by
    pydantic straight from the text (`model_validate_json`, about a third of the
    CPU of `json.loads` + `model_validate`: it is on every Redis worker's hot
    path). Anything that fails there takes the general path, which names the
    problem exactly as before; what passes is the same event the general path
    gives (tests/test_event_parse_fast.py compares the two)."""
    if isinstance(raw, VoiceEvent):
        return raw
    if isinstance(raw, str | bytes) and not _may_hold_surrogates(raw):
        try:
            return VoiceEvent.model_validate_json(raw)
        except ValueError:    # ValidationError included: the general path says what
            pass
    return _parse_general(raw)


def _parse_general(raw: Any) -> VoiceEvent:
    """`parse_event` without the fast path: every input, every error named."""
    if isinstance(raw, VoiceEvent):
        return raw
    if isinstance(raw, str | bytes):
        try:
            raw_obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventProblem("(json)", f"not valid JSON: {exc}", raw) from None
        except RecursionError:
            raise EventProblem("(json)", "JSON nested too deeply to be an event", raw) from None
    else:
        raw_obj = raw
    if not isinstance(raw_obj, Mapping):
        raise EventProblem("(event)", "an event must be a JSON object", raw)
    try:
        event = VoiceEvent.model_validate(dict(raw_obj))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(event)"
        raise EventProblem(field, str(first["msg"]), raw) from None
    bad = _not_unicode(event) if _may_hold_surrogates(raw) else None
    if bad is not None:
        raise EventProblem(bad, "text that is not valid Unicode (an unpaired surrogate)", raw)
    return event


def check_payload(event: VoiceEvent, events: Mapping[str, EventSpec]) -> None:
    """Check `event` against the chart: known type, declared payload fields and types."""
    spec = events.get(event.event_type)
    if spec is None:
        known = ", ".join(sorted(events))
        raise EventProblem("event_type", f"unknown event '{event.event_type}' for this chart "
                           f"(known: {known})", dict(event))
    for name in event.payload:
        if name not in spec.payload:
            declared = ", ".join(spec.payload) or "none"
            raise EventProblem(f"payload.{name}", f"undeclared payload field for "
                               f"'{event.event_type}' (declared: {declared})",
                               dict(event))
    for name, type_text in spec.payload.items():
        expected, optional = parse_payload_type(type_text)
        if name not in event.payload or event.payload[name] is None:
            if not optional:
                raise EventProblem(f"payload.{name}", f"missing required {type_text} field",
                                   dict(event))
            continue
        value = event.payload[name]
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if expected is float and ok and not math.isfinite(float(value)):
            ok = False
        if not ok:
            raise EventProblem(f"payload.{name}", f"expected {type_text}, got "
                               f"{type(value).__name__} {truncate_raw(value, 40)}",
                               dict(event))
