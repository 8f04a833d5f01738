"""Fuzzing what arrives as an event: `parse_event`, `SessionManager.deliver` and
the Redis worker's stream entries get junk in every field (wrong types, huge
values, unicode, unpaired surrogates, NaN/inf, negative and huge times, deep
nesting, bytes, objects JSON cannot hold, missing and extra keys) and junk
instead of an event.

Every input ends as a `VoiceEvent` or as one explained rejection: a WARNING
`event_invalid` line naming the field (or `session_unknown` for a session
nobody runs). Nothing raises out of the engine, no session dies, and every log
line stays one valid JSON line, encodable as UTF-8, of bounded size, with a
`session_id`. (tests/test_session_properties.py checks the chart's invariants
under random *valid-looking* sequences; this module is about the junk.)
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from adapters.redis import Keys, RedisEventBus, RedisWorker
from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock, VirtualClock
from engine.runtime.events import (
    RAW_LIMIT,
    EventProblem,
    VoiceEvent,
    check_payload,
    parse_event,
    truncate_raw,
)
from engine.runtime.logs import EventLog, FanOutSink, JsonLinesSink, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.tools.fakes import FakeSettings, fake_ports
from tests.reliability import FUZZ_BUDGETS, fuzz_settings
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = default_registry()
CHART = load_chart(ROOT / "charts" / "voice_turn.yaml", REGISTRY)
SID = "fuzz-1"
ENVELOPE = ["event_type", "session_id", "source", "timestamp", "correlation_id", "payload",
            "metadata"]
REQUIRED = ["event_type", "session_id", "timestamp"]
LINE_LIMIT = 16 * 1024     # one log line stays a line, whatever came in
KEYS = Keys()


# ------------------------------------------------------------------ junk
def deep_list(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value}
    return value


NASTY_TEXT = ["", " ", "\t\n", "\x00", "\ud800", "a\udfffb", "😀" * 40, "\u202eevil", "\u200b",
              "é" * 300, "x" * 70_000, "LISTENING", "null", "NaN", "-1", "1e999", "{}", "[]",
              "\\u0000", "<script>alert(1)</script>", "'; DROP TABLE sessions; --"]


def nasty(rng: random.Random) -> Any:
    """One value of a kind no field expects (or a valid one, now and then)."""
    kind = rng.randrange(14)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**30, -(10**30)])
    if kind == 2:
        return rng.choice([math.nan, math.inf, -math.inf, -1.0, -1e-9, -0.0, 1e308, 5e-324,
                           1.5, 1_763_850_000.25])
    if kind in (3, 4):
        return rng.choice(NASTY_TEXT)
    if kind == 5:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF),
                                       rng.randrange(0xD800, 0xE000),
                                       rng.randrange(0x10000, 0x10FFFF)]))
                       for _ in range(rng.randrange(1, 20)))
    if kind == 6:
        return [nasty(rng) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice(["text", "a", "", "é", "1"]): nasty(rng) for _ in range(3)}
    if kind == 8:
        return rng.choice([deep_list(rng.choice([50, 500, 3000])),
                           deep_dict(rng.choice([50, 500, 3000]))])
    if kind == 9:
        return rng.choice([b"\xff\xfe", b"hello", b"\x00" * 10])
    if kind == 10:
        return rng.choice([object(), {1, 2}, (1, 2), decimal.Decimal("1.5"),
                           datetime.datetime(2026, 1, 1), complex(1, 2)])
    if kind == 11:
        return {1: "int key", None: "none key"}
    if kind == 12:
        return list(range(rng.choice([10, 10_000])))
    return rng.choice(sorted(CHART.events))


PAYLOAD_VALUES: dict[str, list[Any]] = {
    "str": ["hello", "what time is it", "", "stop"], "bool": [True, False],
    "float": [0.0, 1200.0, 3], "int": [0, 7], "list": [[1]], "dict": [{"a": 1}]}


def good_event(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(sorted(CHART.events))
    payload = {field: rng.choice(PAYLOAD_VALUES[kind.rstrip("?")])
               for field, kind in CHART.events[name].payload.items()}
    return {"event_type": name, "session_id": SID, "source": "fuzz",
            "timestamp": 1_763_850_000.0, "correlation_id": "turn-1", "payload": payload,
            "metadata": {"producer": "fuzz"}}


BROKEN_JSON = ['{"event_type": ', "[" * 100_000, "{" * 50_000, '{"a": 1}}', "NaN", "nul",
               '{"event_type": "stt_final", "session_id": "fuzz-1", "timestamp": 1e400}',
               '"just a string"', "", "\ufeff{}", '{"session_id": "fuzz-1"' + " " * 200_000]


def junk(rng: random.Random) -> tuple[str | None, Any]:
    """(the field that was spoiled, or None when the whole input is junk; the raw input)."""
    event = good_event(rng)
    kind = rng.randrange(10)
    spoiled: str | None
    if kind < 4:    # one envelope field replaced
        spoiled = rng.choice(ENVELOPE)
        event[spoiled] = nasty(rng)
    elif kind < 6 and event["payload"]:    # one payload field replaced
        field = rng.choice(sorted(event["payload"]))
        spoiled = f"payload.{field}"
        event["payload"][field] = nasty(rng)
    elif kind == 6:    # a required field or a payload field missing
        spoiled = rng.choice(REQUIRED + [f"payload.{f}" for f in event["payload"]])
        if spoiled.startswith("payload."):
            del event["payload"][spoiled.split(".", 1)[1]]
        else:
            del event[spoiled]
    elif kind == 7:    # a key nobody declared, at the top or in the payload
        where, name = rng.choice([("", "extra"), ("", "timestamp_ms"), ("payload.", "confidence"),
                                  ("payload.", "é")])
        spoiled = f"{where}{name}"
        (event["payload"] if where else event)[name] = nasty(rng)
    elif kind == 8:    # not an event at all
        return None, rng.choice([nasty(rng), rng.choice(BROKEN_JSON)])
    else:
        spoiled = None
    form = rng.randrange(4)
    if form == 0:
        return spoiled, event
    try:
        text = json.dumps(event, ensure_ascii=rng.random() < 0.5)
    except (TypeError, ValueError, RecursionError):
        return spoiled, event    # JSON cannot hold it: only a Python caller could send it
    if form == 1:
        return spoiled, text
    data = text.encode("utf-8", "surrogatepass")
    if form == 3:    # bytes that are not UTF-8 somewhere in the middle
        at = rng.randrange(len(data) + 1)
        return None, data[:at] + b"\xc3\x28\xff" + data[at:]
    return spoiled, data


def names_the_field(field: str, spoiled: str | None) -> bool:
    """A rejection names the spoiled field (or something inside it)."""
    if spoiled is None:
        return bool(field)
    if spoiled == "event_type":   # another event's name: its payload no longer fits
        return field == "event_type" or field.startswith("payload")
    return field == spoiled or field.startswith(f"{spoiled}.") or (
        spoiled == "payload" and field.startswith("payload"))


def check_line(record: Record) -> None:
    """One valid JSON line: no NaN, UTF-8 encodable, bounded, with a session_id."""
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert len(text) <= LINE_LIMIT, f"{len(text)}-char {record['event_type']} line"
    sid = record["session_id"]
    assert isinstance(sid, str) and 0 < len(sid) <= 256, record["event_type"]
    assert record["message"] and "Traceback" not in record["message"]


# ------------------------------------------------------------ parse_event
def check_parse(spoiled: str | None, raw: Any) -> None:
    try:
        event = parse_event(raw)
    except EventProblem as problem:
        assert problem.error.strip(), problem
        assert names_the_field(problem.field, spoiled), (problem.field, spoiled, problem.error)
        assert isinstance(problem.raw, str) and len(problem.raw) <= RAW_LIMIT + 40
        return
    assert isinstance(event, VoiceEvent)
    assert math.isfinite(event.timestamp) and event.timestamp >= 0
    assert event.session_id.strip() and len(event.session_id) <= 256
    try:
        check_payload(event, CHART.events)
    except EventProblem as problem:
        assert names_the_field(problem.field, spoiled), (problem.field, spoiled, problem.error)


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_parse_event_returns_an_event_or_names_the_field(budget: str) -> None:
    @fuzz_settings(budget, short=300, long=20_000)
    @given(rng=st.randoms(use_true_random=False))
    def run(rng: random.Random) -> None:
        check_parse(*junk(rng))

    run()


# -------------------------------------------------------- SessionManager
async def deliver_junk(inputs: list[tuple[str | None, Any]]) -> None:
    clock = VirtualClock()
    records = ListSink()
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")   # what a server writes to
    log = EventLog(FanOutSink(records, JsonLinesSink(stdout)), clock, level="DEBUG")
    ports = fake_ports(clock, FakeSettings(respond_ms=60_000, speak_ms=60_000))
    async with SessionManager(CHART, REGISTRY, ports, clock, log) as manager:
        session = await manager.open(SID)
        manager.deliver({"event_type": "client_connected", "session_id": SID,
                         "timestamp": clock.wall()})
        await clock.advance(0)
        for spoiled, raw in inputs:
            try:
                expected: VoiceEvent | None = parse_event(raw)
            except EventProblem:
                expected = None
            before = len(records.records)
            accepted = manager.deliver(raw)
            await clock.advance(0)
            new = records.records[before:]
            invalid = [r for r in new if r["event_type"] == "event_invalid"]
            if expected is None or expected.session_id != SID:
                assert not accepted
                if expected is None:
                    [line] = invalid
                else:
                    [line] = [r for r in new if r["event_type"] == "session_unknown"]
                    continue
            else:
                assert accepted
                received = [r for r in new if r["event_type"] == "event_received"
                            and r["data"]["event"] == expected.event_type]
                assert len(received) + len(invalid) == 1, [r["event_type"] for r in new]
                if received:
                    continue
                line = invalid[0]
            assert line["level"] == "WARNING"
            assert names_the_field(line["data"]["field"], spoiled), (line["data"], spoiled)
            assert line["message"].startswith(f"❌ invalid event: {line['data']['field']}: ")
        assert not session.closed and manager.get(SID) is session
        # The session still works: hang up whatever it was doing, call, speak.
        for name, payload in [("client_disconnected", {}), ("client_connected", {}),
                              ("stt_final", {"text": "hello", "is_final": True})]:
            manager.deliver({"event_type": name, "session_id": SID, "timestamp": clock.wall(),
                             "payload": payload})
            await clock.advance(0)
        assert session.state == "THINKING"
    assert manager.live_tasks() == 0
    for record in records.records:
        check_line(record)
    assert not [r for r in records.records if r["event_type"] == "session_failed"]
    stdout.flush()
    # JSON lines end at "\n" (U+2028 and friends may sit inside a string: not splitlines())
    written = stdout.buffer.getvalue().decode("utf-8").split("\n")
    assert written[-1] == "" and len(written) - 1 == len(records.records)
    written.pop()
    assert all(json.loads(line)["session_id"] for line in written)


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_deliver_explains_every_rejection_and_the_session_survives(budget: str) -> None:
    @fuzz_settings(budget, short=40, long=1500)
    @given(seeds=st.lists(st.randoms(use_true_random=False), min_size=1, max_size=12))
    def run(seeds: list[random.Random]) -> None:
        asyncio.run(deliver_junk([junk(rng) for rng in seeds]))

    run()


# ---------------------------------------------------------- Redis entries
def entry_junk(rng: random.Random) -> dict[Any, Any]:
    """A stream entry's fields: an `event` field holding junk, or junk fields."""
    roll = rng.randrange(6)
    if roll == 0:
        return {rng.choice(["something", "evnt", "Event", "payload"]):
                rng.choice(["x", "", "{}", "😀"])}
    if roll == 1:
        return {"event": rng.choice(BROKEN_JSON)[:70_000]}
    if roll == 2:
        return {"control": rng.choice(["stop", "", "END"])}
    _, raw = junk(rng)
    if not isinstance(raw, str | bytes):
        try:
            raw = json.dumps(raw)
        except (TypeError, ValueError, RecursionError):
            raw = truncate_raw(raw, 1000)
    if isinstance(raw, str):   # unpaired surrogates become the bytes a broken encoder sends
        raw = raw.encode("utf-8", "surrogatepass")
    return {"event": raw}


def expected_in_worker(fields: dict[str, Any]) -> bool:
    """Whether the worker itself must reject the entry (bad envelope or no event)."""
    raw = fields.get("event")
    if raw is None:
        return True
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        event = parse_event(text)
    except EventProblem:
        return True
    return event.session_id != SID


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
async def test_junk_stream_entries_are_explained_and_the_worker_goes_on(
        budget: str, server: RedisServer, redis: Redis) -> None:
    count = 40 if budget == "short" else 600
    rng = random.Random(7 if budget == "short" else time.time_ns())
    entries = [entry_junk(rng) for _ in range(count)]
    sink = ListSink()
    clock = RealClock()
    log = EventLog(sink, clock, level="DEBUG")
    key = KEYS.stream(SID)
    await redis.sadd(KEYS.sessions, SID)
    async with Redis.from_url(server.url) as raw_client:   # bytes in, as any producer may
        ids = [await raw_client.xadd(key, dict(fields)) for fields in entries]
    ports = fake_ports(clock, FakeSettings(respond_ms=60_000))
    worker = RedisWorker(server.url, CHART, REGISTRY, ports, log, worker_id="fuzz-w",
                         lease_ms=3000, clock=clock)
    async with RedisEventBus.from_url(server.url, log) as bus, worker:
        # Whatever the junk did to the session: hang up, call, speak.
        for name, payload in [("client_disconnected", {}), ("client_connected", {}),
                              ("stt_final", {"text": "hello", "is_final": True})]:
            await bus.publish(VoiceEvent(event_type=name, session_id=SID, source="fuzz",
                                         timestamp=time.time(), correlation_id="good",
                                         payload=payload))
        reached = await wait_until(
            lambda: any(r["event_type"] == "state_transition" and r["data"]["to"] == "THINKING"
                        and r["data"]["correlation_id"] == "good" for r in sink.records),
            timeout=30)
        pending = await redis.xpending(key, "turnchart")
    assert reached, "the good events after the junk were never applied"
    assert int(pending["pending"]) == 0, "entries left unacknowledged"
    entry_ids = {i.decode() if isinstance(i, bytes) else i for i in ids}
    in_worker = [r for r in sink.records if r["event_type"] == "event_invalid"
                 and r["data"].get("entry_id") in entry_ids]
    assert len(in_worker) == sum(expected_in_worker(f) for f in entries)
    for line in in_worker:
        assert line["level"] == "WARNING" and line["data"]["field"] and line["data"]["error"]
    assert not [r for r in sink.records if r["event_type"] == "session_failed"]
    assert not [r for r in sink.records if r["level"] == "ERROR"
                and r["event_type"] != "transition_rejected"]
    for record in sink.records:
        check_line(record)
