"""`VoiceEvent` on the wire (CHART_FORMAT.md §2): what is accepted, what is
dropped, and how the reason names the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from engine.chart.spec import EventSpec
from engine.runtime.events import RAW_LIMIT, EventProblem, VoiceEvent, check_payload, parse_event

GOOD: dict[str, Any] = {
    "event_type": "stt_final", "session_id": "s-42", "source": "fastrtc",
    "timestamp": 1763850000.123, "correlation_id": "turn-7",
    "payload": {"text": "hello", "is_final": True}, "metadata": {"lang": "en"},
}

EVENTS = {
    "stt_final": EventSpec.model_validate({"payload": {"text": "str", "is_final": "bool"}}),
    "playback_done": EventSpec.model_validate({"payload": {"duration_ms": "float"}}),
    "counted": EventSpec.model_validate({"payload": {"n": "int"}}),
    "noted": EventSpec.model_validate({"payload": {"note": "str?", "tags": "list?",
                                                   "extra": "dict"}}),
    "client_connected": EventSpec.model_validate({}),
}


def problem(raw: Any) -> EventProblem:
    with pytest.raises(EventProblem) as caught:
        check_payload(parse_event(raw), EVENTS)
    return caught.value


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


# ------------------------------------------------------------------ envelope
def test_a_good_event_parses_from_a_mapping_json_text_and_bytes() -> None:
    from_dict = parse_event(GOOD)
    assert from_dict == parse_event(json.dumps(GOOD)) == parse_event(json.dumps(GOOD).encode())
    assert from_dict.payload == {"text": "hello", "is_final": True}
    assert from_dict.metadata == {"lang": "en"}
    check_payload(from_dict, EVENTS)
    assert parse_event(from_dict) is from_dict


def test_optional_envelope_fields_have_defaults() -> None:
    event = parse_event({"event_type": "client_connected", "session_id": "s",
                         "timestamp": 1.0})
    assert (event.source, event.correlation_id, event.payload, event.metadata) \
        == ("unknown", None, {}, {})


def test_events_are_immutable() -> None:
    event = parse_event(GOOD)
    with pytest.raises(Exception, match="frozen"):
        event.session_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize("session_id", ["", "   ", "\t\n"])
def test_session_id_must_not_be_empty_or_blank(session_id: str) -> None:
    assert problem(with_(session_id=session_id)).field == "session_id"


@pytest.mark.parametrize("session_id", [None, 42, ["s1"]])
def test_session_id_must_be_a_string(session_id: Any) -> None:
    assert problem(with_(session_id=session_id)).field == "session_id"


@pytest.mark.parametrize("key", ["event_type", "session_id", "timestamp"])
def test_required_fields(key: str) -> None:
    found = problem(without(key))
    assert found.field == key
    assert "required" in found.error.lower()


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf, -0.001, -1763850000])
def test_timestamp_must_be_finite_and_not_negative(timestamp: float) -> None:
    found = problem(with_(timestamp=timestamp))
    assert found.field == "timestamp"


def test_nan_in_json_text_is_refused_too() -> None:
    text = json.dumps(GOOD).replace("1763850000.123", "NaN")
    assert problem(text).field == "timestamp"


@pytest.mark.parametrize("timestamp", [True, False, "1763850000.1", "yesterday", None, [1.0]])
def test_timestamp_must_be_a_number(timestamp: Any) -> None:
    """A bool or a numeric string is a producer bug, not a time (True is not 1970-01-01)."""
    assert problem(with_(timestamp=timestamp)).field == "timestamp"


def test_an_integer_timestamp_is_a_float() -> None:
    event = parse_event(with_(timestamp=1763850000))
    assert event.timestamp == 1763850000.0 and isinstance(event.timestamp, float)
    assert parse_event(with_(timestamp=0)).timestamp == 0.0


@pytest.mark.parametrize("key", ["colour", "sessionId", "Payload"])
def test_unknown_envelope_keys_are_refused_by_name(key: str) -> None:
    found = problem(with_(**{key: "x"}))
    assert found.field == key
    assert key in found.raw


@pytest.mark.parametrize(("raw", "field"), [
    ("[1, 2, 3]", "(event)"),
    ("42", "(event)"),
    ('"just text"', "(event)"),
    ("null", "(event)"),
    ([GOOD], "(event)"),
    (None, "(event)"),
    ("{not json", "(json)"),
    ("", "(json)"),
    (b"\xff\xfe\x00garbage", "(json)"),
])
def test_input_that_is_not_a_json_object(raw: Any, field: str) -> None:
    assert problem(raw).field == field


@pytest.mark.parametrize(("key", "value"), [
    ("payload", ["text"]), ("payload", "hello"), ("metadata", 3),
    ("correlation_id", 7), ("source", None), ("event_type", ""), ("event_type", 5),
])
def test_envelope_field_types(key: str, value: Any) -> None:
    assert problem(with_(**{key: value})).field == key


def test_overlong_identifiers_are_refused() -> None:
    assert problem(with_(session_id="s" * 257)).field == "session_id"
    assert parse_event(with_(session_id="s" * 256)).session_id == "s" * 256


# ------------------------------------------------------------------- payload
def test_an_unknown_event_type_names_the_known_ones() -> None:
    found = problem(with_(event_type="stt_finale"))
    assert found.field == "event_type"
    assert "stt_finale" in found.error and "stt_final" in found.error


def test_payload_fields_must_be_declared() -> None:
    found = problem(with_(payload={"text": "hi", "is_final": True, "confidence": 0.9}))
    assert found.field == "payload.confidence"
    assert "is_final" in found.error   # names the declared fields


def test_required_payload_fields() -> None:
    found = problem(with_(payload={"text": "hi"}))
    assert found.field == "payload.is_final"
    assert problem(with_(payload={"text": None, "is_final": True})).field == "payload.text"


@pytest.mark.parametrize(("event_type", "payload", "field"), [
    ("stt_final", {"text": 5, "is_final": True}, "payload.text"),
    ("stt_final", {"text": "hi", "is_final": 1}, "payload.is_final"),
    ("stt_final", {"text": "hi", "is_final": "true"}, "payload.is_final"),
    ("counted", {"n": True}, "payload.n"),            # bool is not an int
    ("counted", {"n": 1.0}, "payload.n"),             # nor is a float
    ("counted", {"n": "1"}, "payload.n"),
    ("playback_done", {"duration_ms": False}, "payload.duration_ms"),  # nor a float
    ("playback_done", {"duration_ms": "12"}, "payload.duration_ms"),
    ("playback_done", {"duration_ms": math.nan}, "payload.duration_ms"),
    ("playback_done", {"duration_ms": math.inf}, "payload.duration_ms"),
    ("noted", {"note": 3, "extra": {}}, "payload.note"),
    ("noted", {"tags": "a,b", "extra": {}}, "payload.tags"),
    ("noted", {"extra": []}, "payload.extra"),
])
def test_payload_type_checks(event_type: str, payload: dict[str, Any], field: str) -> None:
    found = problem(with_(event_type=event_type, payload=payload))
    assert found.field == field
    assert found.error.startswith("expected") or "missing" in found.error


@pytest.mark.parametrize(("event_type", "payload"), [
    ("counted", {"n": 3}),
    ("counted", {"n": -2**70}),
    ("playback_done", {"duration_ms": 1200}),          # an int is a fine float
    ("playback_done", {"duration_ms": 12.5}),
    ("noted", {"extra": {}}),                           # optional fields may be missing
    ("noted", {"note": None, "tags": None, "extra": {"k": 1}}),   # … or null
    ("noted", {"note": "hi", "tags": ["a"], "extra": {}}),
])
def test_payloads_that_are_accepted(event_type: str, payload: dict[str, Any]) -> None:
    check_payload(parse_event(with_(event_type=event_type, payload=payload)), EVENTS)


# ------------------------------------------------------------------ raw text
def test_huge_input_is_truncated_in_raw() -> None:
    huge = with_(payload={"text": "x" * 100_000, "is_final": 1})
    found = problem(huge)
    assert found.field == "payload.is_final"
    assert len(found.raw) < RAW_LIMIT + 40
    assert found.raw.startswith('{"event_type": "stt_final"')
    assert found.raw.endswith(" chars)")


def test_huge_non_json_text_is_truncated_in_raw() -> None:
    found = problem("<" * 50_000)
    assert found.field == "(json)"
    assert found.raw.startswith("<" * RAW_LIMIT)
    assert f"(+{50_000 - RAW_LIMIT} chars)" in found.raw


def test_unicode_is_kept_readable_and_cut_by_characters() -> None:
    found = problem(with_(session_id="", payload={"text": "こんにちは🎤" * 200}))
    assert found.field == "session_id"
    assert "こんにちは🎤" in found.raw            # not \\u escapes
    assert len(found.raw) < RAW_LIMIT + 40
    found.raw.encode("utf-8")                      # a valid string: no half characters


def test_a_short_raw_input_is_kept_whole() -> None:
    raw = {"event_type": "nope", "session_id": "s1", "timestamp": 1.0}
    found = problem(raw)
    assert found.field == "event_type"
    assert json.loads(found.raw).items() >= raw.items()


def test_a_voice_event_round_trips_through_json() -> None:
    event = parse_event(GOOD)
    assert parse_event(event.model_dump_json()) == event
    assert VoiceEvent.model_validate(event.model_dump()) == event


_LONE = {"event_type": "x", "session_id": "s", "source": "t", "timestamp": 1.0,
         "payload": {"text": "ok", "words": ["fine", "bad \ud800 here"]}}


@pytest.mark.parametrize("raw", [
    json.dumps(_LONE),                                                     # \ud800 escape
    json.dumps(_LONE).replace("\\ud800", "\\uD800"),                       # upper-case escape
    json.dumps(_LONE).encode(),
    json.dumps(_LONE, ensure_ascii=False).encode("utf-8", "surrogatepass"),  # CESU-style bytes
    json.dumps(_LONE, ensure_ascii=False).encode("utf-16-le", "surrogatepass"),
    json.dumps(_LONE, ensure_ascii=False),                                 # the character itself
    _LONE,
], ids=["escape", "upper-escape", "ascii-bytes", "utf8-bytes", "utf16-bytes", "text", "mapping"])
def test_an_unpaired_surrogate_is_refused_in_every_input_form(raw: Any) -> None:
    with pytest.raises(EventProblem) as caught:
        parse_event(raw)
    assert caught.value.field == "payload.words.1"


def test_text_that_only_looks_like_an_escape_is_accepted() -> None:
    event = parse_event(json.dumps({**_LONE, "payload": {"text": "a \\ud800 b, é"}}))
    assert event.payload["text"] == "a \\ud800 b, é"
