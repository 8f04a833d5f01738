"""parse_event's fast path (pydantic straight from the JSON text) gives exactly
what the general path (json.loads, then model_validate) gives: the same event,
value for value and type for type, or the same EventProblem."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.runtime import events
from engine.runtime.events import EventProblem, VoiceEvent, _parse_general, parse_event


def _outcome(parse: Any, raw: str | bytes) -> tuple[Any, ...]:
    try:
        event = parse(raw)
    except EventProblem as problem:
        return ("problem", problem.field, problem.error, problem.raw)
    # repr tells 1 from 1.0 from True and -0.0 from 0.0
    return ("event", repr(event.model_dump()))


def _same(raw: str | bytes) -> None:
    assert _outcome(parse_event, raw) == _outcome(_parse_general, raw), raw


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63),
                    st.floats(allow_nan=False), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
envelopes = st.fixed_dictionaries(
    {"event_type": st.one_of(st.text(max_size=6), st.integers()),
     "session_id": st.one_of(st.text(max_size=6), st.just(" ")),
     "timestamp": st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=3))},
    optional={"source": scalars, "correlation_id": scalars, "payload": values,
              "metadata": values, "extra": scalars})


@settings(max_examples=400, deadline=None)
@given(envelopes, st.booleans())
def test_fast_and_general_paths_agree(envelope: dict[str, Any], as_bytes: bool) -> None:
    text = json.dumps(envelope, ensure_ascii=False)
    _same(text.encode() if as_bytes else text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_agree_on_arbitrary_text(text: str) -> None:
    _same(text)


def test_agree_on_edge_cases() -> None:
    good = '"session_id":"s","timestamp":1'
    for raw in ['{"event_type":"a",' + good + ',"payload":{"x":NaN,"y":1e400,"z":-0.0}}',
                '{"event_type":"a","event_type":"b",' + good + ',"payload":{"x":1,"x":2}}',
                '{"event_type":"a",' + good + '} trailing',
                ' {"event_type":"a",' + good + '}\n',
                '\ufeff{"event_type":"a",' + good + '}',
                '{"event_type":"a",' + good + ',"payload":{"s":"\\ud800"}}',
                '{"event_type":"a",' + good + ',"payload":{"s":"caf\\u00e9 \\ud83d\\ude00"}}',
                '{"event_type":"a",' + good + ',"payload":{"x":' + "[" * 300 + "]" * 300 + "}}",
                '{"event_type":"a","session_id":"s","timestamp":true}',
                '{"event_type":"a","session_id":"s","timestamp":"1"}',
                '[1]', '"x"', '', '{']:
        _same(raw)
        _same(raw.encode("utf-8", "surrogatepass"))
    _same('{"event_type":"a",' .encode("utf-16") + good.encode("utf-16")[2:] + b"}\x00")


def test_fast_path_is_taken_for_plain_events(monkeypatch: Any) -> None:
    """A plain event never reaches the general path (the reason the fast path is
    there); one with an error does, which names it."""
    calls: list[Any] = []

    def general(raw: Any) -> VoiceEvent:
        calls.append(raw)
        return _parse_general(raw)

    monkeypatch.setattr(events, "_parse_general", general)
    raw = json.dumps({"event_type": "step", "session_id": "s", "timestamp": 1.5,
                      "payload": {"n": 1}})
    assert parse_event(raw).payload == {"n": 1}
    assert calls == []
    bad = raw.replace("1.5", '"soon"')
    try:
        parse_event(bad)
    except EventProblem as problem:
        assert problem.field == "timestamp"
    else:
        raise AssertionError("a string timestamp was accepted")
    assert calls == [bad]
