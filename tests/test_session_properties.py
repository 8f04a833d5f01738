"""Random event sequences at one session of charts/voice_turn.yaml.

Whatever arrives (every chart event, good and bad payloads, junk input, bursts,
time jumps, fakes that are slow, fast, empty or failing), after every step:

- the configuration is the full configuration of one leaf state;
- the applied contract is that leaf's contract;
- at most one live task per activity slot, each owned by an active state;
- no audio leaves while the contract last applied says playback is stopped;
- no contract violation is ever logged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from engine.chart.chart import load_chart
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.session import Session
from engine.tools.fakes import FakeSettings, fake_ports

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = default_registry()
CHART = load_chart(ROOT / "charts" / "voice_turn.yaml", REGISTRY)
LEAVES = {name for name, info in CHART.states.items() if not info.compound}
SID = "s1"

# --------------------------------------------------------------- strategies
TEXT = st.one_of(st.sampled_from(["hello", "what time is it", "hello", "", "   ", "stop"]),
                 st.text(max_size=12))
VALID = {
    "str": TEXT,
    "bool": st.sampled_from([True, True, True, False]),   # is_final: mostly final
    "float": st.one_of(st.floats(0, 1e5, allow_nan=False), st.integers(0, 10**6)),
    "int": st.integers(-10, 10**6),
    "list": st.lists(st.integers(), max_size=3),
    "dict": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}
WRONG = st.one_of(st.none(), st.integers(), st.booleans(), st.floats(), st.text(max_size=4),
                  st.lists(st.integers(), max_size=2))
# weighted so that turns happen often: connect, speak, interrupt
EVENT_NAMES = (["client_connected"] * 2 + ["stt_final"] * 4 + ["barge_in"] * 2
               + sorted(CHART.events))


@st.composite
def payloads(draw: st.DrawFn, event: str) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for name, type_text in CHART.events[event].payload.items():
        payload[name] = draw(VALID[type_text.rstrip("?")])
    mode = draw(st.sampled_from(["ok"] * 8 + ["drop", "extra", "wrong"]))
    if mode == "drop" and payload:
        payload.pop(draw(st.sampled_from(sorted(payload))))
    elif mode == "extra":
        payload["unexpected"] = draw(WRONG)
    elif mode == "wrong" and payload:
        payload[draw(st.sampled_from(sorted(payload)))] = draw(WRONG)
    return payload


@st.composite
def events(draw: st.DrawFn) -> tuple[str, dict[str, Any], float]:
    name = draw(st.sampled_from(EVENT_NAMES))
    age_s = draw(st.sampled_from([0.0, 0.0, 0.02, 1.5]))
    return name, draw(payloads(name)), age_s


JUNK = st.one_of(
    st.just("{not json"), st.just("[1, 2]"), st.just({"event_type": "nope", "session_id": SID}),
    st.fixed_dictionaries({"event_type": st.sampled_from(sorted(CHART.events)),
                           "session_id": st.sampled_from([SID, "", "other"]),
                           "timestamp": st.one_of(st.floats(), st.booleans(),
                                                  st.text(max_size=3))}),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
ACTIONS = st.one_of(
    st.tuples(st.just("event"), events()),
    st.tuples(st.just("burst"), st.lists(events(), min_size=2, max_size=4)),
    st.tuples(st.just("advance"), st.one_of(st.integers(0, 1500), st.sampled_from([40, 300, 600]))),
    st.tuples(st.just("junk"), JUNK),
)
FAKES = st.builds(
    FakeSettings,
    respond_ms=st.sampled_from([0.0, 50.0, 300.0, 700.0, 1000.0]),
    response_text=st.sampled_from(["Hi there!", "Hi there!", "", "  "]),
    respond_error=st.sampled_from([False, False, False, True]),
    speak_ms=st.sampled_from([0.0, 100.0, 1200.0]),
    tts_chunk_ms=st.sampled_from([20.0, 40.0, 170.0]),
)


# ---------------------------------------------------------------- the check
class Watcher:
    """Reads the trace as it grows and keeps what the invariants need."""

    def __init__(self, sink: ListSink) -> None:
        self.sink = sink
        self.seen = 0
        self.playback: str | None = None
        self.live: dict[str, list[str]] = {}     # activity slot → owning states (from the log)

    def check(self, session: Session) -> None:
        new: list[Record] = self.sink.records[self.seen:]
        self.seen = len(self.sink.records)
        for r in new:
            if r["session_id"] != SID:
                continue
            kind, data = r["event_type"], r["data"]
            assert kind != "contract_violation", r
            if kind == "contract_applied":
                self.playback = data["playback"]
            elif kind == "audio_out":
                assert self.playback == "streaming", f"audio while playback {self.playback}: {r}"
            elif kind == "activity_started":
                self.live.setdefault(data["activity"], []).append(data["state"])
            elif kind in ("activity_done", "activity_failed", "activity_cancelled"):
                owners = self.live.get(data["activity"], [])
                assert data["state"] in owners, r
                owners.remove(data["state"])

        leaf = session.state
        assert leaf in LEAVES
        assert session.configuration == CHART.configuration_of(leaf)
        assert dict(session.contract) == dict(CHART.states[leaf].contract)
        assert self.playback == session.contract["playback"]
        for slot, owners in self.live.items():
            assert len(owners) <= 1, f"two live {slot} tasks: {owners}"
            for state in owners:
                assert state in session.configuration, f"{slot} of {state} outlived it"
                assert slot in CHART.states[state].invoke
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith(f"{SID}:")
                 and not t.done()]
        names = [t.get_name() for t in tasks]
        assert len(names) == len(set(names)), names
        assert sorted(names) == sorted(f"{SID}:{slot}" for slot, o in self.live.items() if o)
        assert session.live_tasks() == len(tasks)


async def play(fakes: FakeSettings, actions: list[tuple[str, Any]]) -> None:
    clock = VirtualClock()
    sink = ListSink()
    log = EventLog(sink, clock, level="DEBUG")
    manager = SessionManager(CHART, REGISTRY, fake_ports(clock, fakes), clock, log)
    watcher = Watcher(sink)

    def deliver(event: tuple[str, dict[str, Any], float]) -> None:
        name, payload, age_s = event
        manager.deliver({"event_type": name, "session_id": SID, "source": "hypothesis",
                         "timestamp": clock.wall() - age_s, "payload": payload})

    async with manager:
        session = await manager.open(SID)
        await clock.advance(0)
        watcher.check(session)
        for kind, arg in actions:
            if kind == "event":
                deliver(arg)
            elif kind == "burst":
                for event in arg:
                    deliver(event)
            elif kind == "junk":
                manager.deliver(arg)
            await clock.advance(arg if kind == "advance" else 0)
            watcher.check(session)
        await clock.advance(5000)
        watcher.check(session)
    for leaf in sorted({r["data"]["to"] for r in sink.of_type("state_transition", SID)}):
        note(f"reached {leaf}")   # shown by --hypothesis-show-statistics
    if sink.of_type("event_stale", SID):
        note("an event was stale")
    assert log.counts["contract_violation"] == 0
    assert manager.live_tasks() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fakes=FAKES, connect=st.booleans(), actions=st.lists(ACTIONS, min_size=3, max_size=30))
def test_invariants_hold_for_any_sequence_of_events(fakes: FakeSettings, connect: bool,
                                                     actions: list[tuple[str, Any]]) -> None:
    if connect:   # most interesting sequences start with a caller on the line
        actions = [("event", ("client_connected", {}, 0.0)), *actions]
    asyncio.run(play(fakes, actions))


def test_the_watcher_notices_audio_while_playback_is_stopped() -> None:
    """The property above could not fail if the watcher missed a violation."""
    sink = ListSink()
    watcher = Watcher(sink)

    class FakeSession:
        state = "LISTENING"
        configuration = CHART.configuration_of("LISTENING")
        contract = CHART.states["LISTENING"].contract

        def live_tasks(self) -> int:
            return 0

    sink.write({"session_id": SID, "event_type": "contract_applied",
                "data": {"state": "LISTENING", "microphone": "open", "playback": "stopped"}})
    sink.write({"session_id": SID, "event_type": "audio_out", "data": {"bytes": 2}})

    async def run() -> None:
        watcher.check(FakeSession())  # type: ignore[arg-type]

    try:
        asyncio.run(run())
    except AssertionError as exc:
        assert "audio while playback stopped" in str(exc)
    else:
        raise AssertionError("the watcher let audio through while playback was stopped")
