"""Conversation flows in the chart (issue 16): parallel regions, history, typed data,
final states and done events, run by real sessions on a virtual clock.

The chart is tests/charts/flow_parallel.yaml: the turn-taking region and a booking
dialogue region side by side.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from adapters.redis.snapshots import decode, encode
from engine.chart.chart import compile_text, load_chart
from engine.chart.compiler import CompiledChart, StepRecord
from engine.chart.kernel import Kernel
from engine.chart.registry import GuardInput, Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.session import Session
from engine.runtime.snapshot import MemorySnapshotStore, Snapshot
from engine.tools.fakes import FakeFiller, FakeSettings, fake_ports

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "tests" / "charts" / "flow_parallel.yaml"
HELLO = {"text": "a table for four", "is_final": True}


def flow_registry() -> Registry:
    """The chart runs on the default registry (`turnchart validate` accepts it as is)."""
    return default_registry()


class HoldingFiller(FakeFiller):
    """The dialogue transition's effect (`cancel_filler` on size_given) waits for `hold`:
    a transition that takes a while, so that a barge-in arrives in the middle of it."""

    def __init__(self, hold: asyncio.Event, started: asyncio.Event) -> None:
        super().__init__()
        self.hold, self.started = hold, started

    async def cancel(self, session_id: str) -> None:
        self.started.set()
        await self.hold.wait()
        await super().cancel(session_id)


class Rig:
    def __init__(self, registry: Registry | None = None,
                 store: MemorySnapshotStore | None = None,
                 filler: FakeFiller | None = None) -> None:
        self.registry = registry or flow_registry()
        self.chart: CompiledChart = load_chart(FLOW, self.registry)
        self.clock = VirtualClock()
        self.sink = ListSink()
        self.log = EventLog(self.sink, self.clock, level="DEBUG")
        self.ports = fake_ports(self.clock, FakeSettings(respond_ms=300, speak_ms=1200))
        if filler is not None:
            self.ports.filler = filler
        self.store = store
        self.manager = SessionManager(self.chart, self.registry, self.ports, self.clock,
                                      self.log, store)

    def send(self, event: str, payload: dict[str, Any] | None = None) -> None:
        assert self.manager.deliver({"event_type": event, "session_id": "s1",
                                     "source": "test", "timestamp": self.clock.wall(),
                                     "payload": payload or {}})

    async def settle(self, ms: float = 0.0) -> None:
        await self.clock.advance(ms)
        for _ in range(20):
            await asyncio.sleep(0)

    def lines(self, event_type: str, **data: Any) -> list[Record]:
        return [r for r in self.sink.of_type(event_type, "s1")
                if all(r["data"].get(k) == v for k, v in data.items())]

    def session(self) -> Session:
        session = self.manager.get("s1")
        assert session is not None
        return session


async def test_regions_run_side_by_side_with_one_merged_contract() -> None:
    rig = Rig()
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        await rig.settle()
        assert session.leaves == ("LISTENING", "ASK_SIZE")
        assert session.configuration == ("CALL", "TURN", "LISTENING", "FLOW", "BOOKING",
                                         "ASK_SIZE")
        assert dict(session.contract) == {"microphone": "open", "playback": "stopped"}
        rig.send("stt_final", HELLO)
        await rig.settle()
        assert session.leaves == ("THINKING", "ASK_SIZE")
        assert session.context["last_words"] == "a table for four"
        changed = rig.lines("data_changed")
        assert changed and changed[-1]["data"]["changes"] == {
            "last_words": {"from": "", "to": "a table for four"}}
        # one event, one row per region: the dialogue moves while the turn-taking thinks
        rig.send("size_given", {"size": 4})
        await rig.settle()
        assert session.leaves == ("THINKING", "CONFIRM")
        assert session.context["party_size"] == 4
        moved = rig.lines("state_transition", event="size_given")
        assert [(m["data"]["from"], m["data"]["to"]) for m in moved] == [("ASK_SIZE", "CONFIRM")]
        assert moved[0]["data"]["active"] == ["THINKING", "CONFIRM"]


async def test_a_barge_in_during_a_dialogue_transition_neither_sticks_nor_answers_twice() -> None:
    hold, started = asyncio.Event(), asyncio.Event()
    rig = Rig(filler=HoldingFiller(hold, started))
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await rig.settle(400)                       # respond (300 ms) → SPEAKING
        assert session.leaves == ("SPEAKING", "ASK_SIZE")
        assert rig.lines("audio_out")
        # The dialogue transition starts and holds its step; the caller barges in meanwhile.
        rig.send("size_given", {"size": 2})
        await rig.settle()
        assert started.is_set()
        assert session.leaves == ("SPEAKING", "ASK_SIZE")   # mid-step: nothing half-done
        rig.send("barge_in", {"reason": "caller spoke"})
        await rig.settle()
        hold.set()                                  # the transition finishes
        await rig.settle(50)
        # The flow moved on (not stuck) and the barge-in was applied after it, as one step.
        assert session.leaves == ("LISTENING", "CONFIRM")
        assert session.context["party_size"] == 2
        steps = [(r["data"]["from"], r["data"]["to"], r["data"]["event"])
                 for r in rig.sink.of_type("state_transition", "s1")]
        assert steps[-3:] == [("ASK_SIZE", "CONFIRM", "size_given"),
                              ("SPEAKING", "INTERRUPT", "barge_in"),
                              ("INTERRUPT", "LISTENING", "ready_after_interrupt")]
        barge_at = rig.lines("event_received", event="barge_in")[0]["t_ms"]
        await rig.settle(3000)
        # No answer audio after the barge-in, and no second answer for that turn.
        assert [r for r in rig.lines("audio_out") if r["t_ms"] > barge_at] == []
        assert len(rig.lines("state_transition", to="SPEAKING")) == 1
        assert len(rig.ports.responder.calls) == 1    # type: ignore[attr-defined]
        assert not [r for r in rig.sink.records if r["level"] == "ERROR"]
        # And the flow still answers the next turn, once.
        rig.send("stt_final", {"text": "yes please", "is_final": True})
        await rig.settle(400)
        rig.send("confirmed")
        await rig.settle(2000)
        assert len(rig.lines("state_transition", to="SPEAKING")) == 2
        assert session.leaves == ("WRAP_UP",)


async def test_history_resumes_the_flow_after_a_clarification() -> None:
    rig = Rig()
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("size_given", {"size": 3})
        rig.send("clarify")
        await rig.settle()
        assert session.leaves == ("LISTENING", "CLARIFYING")
        assert session.history == {"BOOKING": ("CONFIRM",)}
        rig.send("resume")
        await rig.settle()
        assert session.leaves == ("LISTENING", "CONFIRM")      # not back at ASK_SIZE
        assert rig.lines("state_transition", event="resume")[0]["data"]["to"] == "CONFIRM"


async def test_two_misunderstandings_hand_over_and_the_done_event_leaves_the_call() -> None:
    rig = Rig()
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("not_understood")
        await rig.settle()
        assert session.leaves == ("LISTENING", "ASK_SIZE")     # internal: only data changed
        assert session.context["misunderstandings"] == 1
        assert rig.lines("transition_rejected") == []
        rig.send("not_understood")
        await rig.settle()
        assert session.context["misunderstandings"] == 2
        assert session.leaves == ("WRAP_UP",)
        done = rig.lines("event_received", event="done.state.FLOW")
        assert done and done[0]["data"]["source"] == "internal"
        steps = [(r["data"]["from"], r["data"]["to"], r["data"]["event"])
                 for r in rig.sink.of_type("state_transition", "s1")]
        assert steps[-2:] == [("ASK_SIZE", "HANDOVER", "not_understood"),
                              ("LISTENING", "WRAP_UP", "done.state.FLOW")]
        assert session.contract["microphone"] == "closed"


async def test_a_guard_with_arguments_decides_on_data() -> None:
    rig = Rig()
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("size_given", {"size": 0})      # party_size stays 0: not "set"
        rig.send("confirmed")
        await rig.settle()
        assert session.leaves == ("LISTENING", "ASK_SIZE")
        rig.send("size_given", {"size": 5})
        rig.send("confirmed")
        await rig.settle()
        assert session.leaves == ("WRAP_UP",)


async def test_snapshot_restore_keeps_data_and_history() -> None:
    store = MemorySnapshotStore()
    first = Rig(store=store)
    async with first.manager:
        await first.manager.open("s1")
        first.send("client_connected")
        first.send("size_given", {"size": 6})
        first.send("not_understood")
        first.send("clarify")
        await first.settle()
        saved = await store.load("s1")   # what a crashed worker leaves behind
    assert saved is not None
    assert saved.context["data"] == {"party_size": 6, "misunderstandings": 1, "last_words": ""}
    assert saved.context["history"] == {"BOOKING": ["CONFIRM"]}
    # what Redis stores is the dict form: it must carry both through a round trip
    again = Snapshot.from_dict(saved.to_dict())
    assert again.context == saved.context and again.configuration == saved.configuration
    stored = decode("s1", encode(saved))          # the Redis store's own encoding
    assert stored.context == saved.context and stored.configuration == saved.configuration
    store.snapshots["s1"] = again

    second = Rig(store=store)                    # another process: a fresh kernel
    async with second.manager:
        session = await second.manager.open("s1", resume=True)
        await second.settle()
        assert session.leaves == ("LISTENING", "CLARIFYING")
        assert session.context["party_size"] == 6
        second.send("resume")
        await second.settle()
        assert session.leaves == ("LISTENING", "CONFIRM")   # history survived the restore
        second.send("not_understood")                       # the counter too: 2 → hand over
        await second.settle()
        assert session.leaves == ("WRAP_UP",)


DEEP = """
chart: deep
version: 1
initial: A
contracts: {mic: [on]}
events: {go: {}, down: {}, away: {}, back: {}, back_shallow: {}}
states:
  A:
    contract: {mic: on}
    on: {go: FLOW}
  FLOW:
    initial: STEP1
    history: deep
    on: {away: ASIDE}
    states:
      STEP1: {contract: {mic: on}, on: {go: STEP2}}
      STEP2:
        initial: INNER1
        states:
          INNER1: {contract: {mic: on}, on: {down: INNER2}}
          INNER2: {contract: {mic: on}, on: {go: STEP1}}
  ASIDE:
    contract: {mic: on}
    on: {back: FLOW, back_shallow: SHALLOW}
  SHALLOW:
    initial: S1
    history: shallow
    on: {away: ASIDE}
    states:
      S1: {contract: {mic: on}, on: {go: S2}}
      S2:
        initial: T1
        states:
          T1: {contract: {mic: on}, on: {down: T2}}
          T2: {contract: {mic: on}, on: {go: S1}}
"""


def test_deep_history_resumes_the_leaf_and_shallow_the_child() -> None:
    chart = compile_text(DEEP, "deep.yaml")
    kernel = Kernel(chart)
    history: dict[str, tuple[str, ...]] = {}
    configuration = chart.initial_configuration()

    def fire(event: str) -> tuple[str, ...]:
        nonlocal configuration
        configuration = kernel.fire(configuration, event, StepRecord(GuardInput(event, {})),
                                    history)
        return configuration

    fire("go"), fire("go"), fire("down")
    assert configuration == ("FLOW", "STEP2", "INNER2")
    fire("away")
    assert history == {"FLOW": ("STEP2", "INNER2")}
    assert fire("back") == ("FLOW", "STEP2", "INNER2")          # deep: the very leaf
    fire("away"), fire("back_shallow"), fire("go"), fire("down"), fire("away")
    assert history["SHALLOW"] == ("S2",)
    assert fire("back_shallow") == ("SHALLOW", "S2", "T1")      # shallow: the child, at initial


CROSS = """
chart: cross
version: 1
initial: P
contracts: {mic: [on, off]}
events: {a: {}, b: {}}
states:
  P:
    parallel: true
    enter: [cancel_filler]
    states:
      R1:
        initial: X1
        states:
          X1: {contract: {mic: on}, enter: [cancel_tts], on: {a: Y2}}
      R2:
        initial: Y1
        states:
          Y1: {on: {b: Y2}}
          Y2: {on: {b: Y1}}
"""


async def test_a_transition_between_regions_exits_and_reenters_the_parallel_state(
        tmp_path: Path) -> None:
    """SCXML: the domain of a transition never is a parallel state, so X1 -a-> Y2 (from
    one region into another) exits P and enters it again, every region included; the
    session runs the same exits and entries the kernel computed."""
    chart_file = tmp_path / "cross.yaml"
    chart_file.write_text(CROSS, encoding="utf-8")
    rig = Rig()
    rig.chart = load_chart(chart_file, rig.registry)
    rig.manager = SessionManager(rig.chart, rig.registry, rig.ports, rig.clock, rig.log)
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("a")
        await rig.settle()
        assert session.configuration == ("P", "R1", "X1", "R2", "Y2")
        entered = [r["data"]["state"] for r in rig.lines("effect_done")]
        assert entered == ["P", "X1", "P", "X1"]       # start, then P and R1's X1 again
        rig.send("b")
        await rig.settle()
        assert session.leaves == ("X1", "Y1")
        assert [r["data"]["state"] for r in rig.lines("effect_done")] == entered   # R2 only


class RecordingStore(MemorySnapshotStore):
    """Keeps every snapshot saved, in order (each one is where a crash could resume)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Snapshot] = []

    async def save(self, snapshot: Snapshot) -> None:
        self.saved.append(Snapshot.from_dict(snapshot.to_dict()))
        await super().save(snapshot)


async def test_a_done_event_not_yet_handled_survives_a_restore() -> None:
    """The step that enters a final state is saved before its done event runs: a worker
    that dies in between leaves the event in the snapshot, and the next one posts it."""
    store = RecordingStore()
    first = Rig(store=store)
    async with first.manager:
        await first.manager.open("s1")
        first.send("client_connected")
        first.send("size_given", {"size": 2})
        first.send("confirmed")
        await first.settle()
    window = [s for s in store.saved if s.configuration[-1] == "BOOKED"]
    assert len(window) == 1 and window[0].context["pending_done"] == ["done.state.FLOW"]
    assert "pending_done" not in store.saved[-1].context     # handled: nothing pending
    crashed = MemorySnapshotStore()
    crashed.snapshots["s1"] = window[0]
    second = Rig(store=crashed)
    async with second.manager:
        resumed = await second.manager.open("s1", resume=True)
        await second.settle()
        assert resumed.leaves == ("WRAP_UP",)
        done = second.lines("event_received", event="done.state.FLOW")
        assert len(done) == 1 and done[0]["data"]["source"] == "internal"
