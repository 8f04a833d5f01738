"""The session runtime driven directly through SessionManager on a virtual clock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.kernel import Kernel
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import VirtualClock
from engine.runtime.context import ActivityContext
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink, Record
from engine.runtime.manager import SessionManager
from engine.runtime.ports import AudioChunk, Ports
from engine.runtime.session import Envelope, Session
from engine.runtime.snapshot import MemorySnapshotStore, Snapshot
from engine.tools.fakes import FakeResponder, FakeSettings, FakeSpeech, fake_ports
from engine.tools.simulator import transitions

ROOT = Path(__file__).resolve().parent.parent
VOICE_TURN = ROOT / "charts" / "voice_turn.yaml"
RUNTIME_CHART = ROOT / "tests" / "charts" / "runtime_activities.yaml"
HELLO = {"text": "hello", "is_final": True}


class Rig:
    """A manager on a virtual clock with fake ports and an in-memory trace."""

    def __init__(self, chart: Path = VOICE_TURN, registry: Registry | None = None,
                 settings: FakeSettings | None = None,
                 store: MemorySnapshotStore | None = None) -> None:
        self.registry = registry or default_registry()
        self.chart: CompiledChart = load_chart(chart, self.registry)
        self.clock = VirtualClock()
        self.sink = ListSink()
        self.log = EventLog(self.sink, self.clock, level="DEBUG")
        self.ports: Ports = fake_ports(self.clock, settings or FakeSettings())
        self.store = store
        self.manager = SessionManager(self.chart, self.registry, self.ports, self.clock,
                                      self.log, store)

    def send(self, event: str, payload: dict[str, Any] | None = None, *, sid: str = "s1",
             age_ms: float = 0.0) -> bool:
        return self.manager.deliver({
            "event_type": event, "session_id": sid, "source": "test",
            "timestamp": self.clock.wall() - age_ms / 1000.0, "payload": payload or {}})

    async def advance(self, ms: float = 0.0) -> None:
        await self.clock.advance(ms)

    def lines(self, event_type: str, sid: str | None = "s1", **data: Any) -> list[Record]:
        return [r for r in self.sink.of_type(event_type, sid)
                if all(r["data"].get(k) == v for k, v in data.items())]

    @property
    def responder(self) -> FakeResponder:
        responder = self.ports.responder
        assert isinstance(responder, FakeResponder)
        return responder


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def runtime_registry(emitted: list[bool] | None = None) -> Registry:
    """The activities tests/charts/runtime_activities.yaml names."""
    registry = default_registry()

    @registry.activity()
    async def worker(ctx: ActivityContext) -> None:
        await ctx.clock.sleep(3600)

    @registry.activity()
    async def double_poster(ctx: ActivityContext) -> None:
        ctx.post("tick", {})
        ctx.post("tick", {})

    @registry.activity()
    async def loud(ctx: ActivityContext) -> None:
        ok = await ctx.emit_audio(AudioChunk(b"\x01\x02" * 320, 20.0))
        if emitted is not None:
            emitted.append(ok)
        await ctx.clock.sleep(3600)

    @registry.activity()
    async def crash(ctx: ActivityContext) -> None:
        await ctx.clock.sleep(0.05)
        raise ValueError("disk on fire")

    return registry


# ------------------------------------------------------------------ routing
async def test_event_for_an_unknown_session_lists_the_active_ones() -> None:
    rig = Rig()
    async with rig.manager:
        await rig.manager.open("s1")
        await rig.manager.open("s2")
        assert rig.send("client_connected", sid="s9") is False
        await rig.advance(10)
        [line] = rig.lines("session_unknown", "s9")
        assert line["level"] == "WARNING"
        assert line["data"]["active_sessions"] == ["s1", "s2"]
        assert line["data"]["active_count"] == 2
        assert line["data"]["event"] == "client_connected"
        # the known sessions did not see it
        assert rig.lines("event_received", None) == []


async def test_events_reach_only_their_own_session() -> None:
    rig = Rig()
    async with rig.manager:
        s1 = await rig.manager.open("s1")
        s2 = await rig.manager.open("s2")
        rig.send("client_connected", sid="s2")
        await rig.advance(10)
        assert (s1.state, s2.state) == ("IDLE", "LISTENING")
        assert await rig.manager.open("s2") is s2


# ---------------------------------------------------------------- lifecycle
async def test_closing_a_session_cancels_its_activities_and_leaves_no_task() -> None:
    rig = Rig(settings=FakeSettings(respond_ms=1000, speak_ms=5000))
    async with rig.manager:
        await rig.manager.open("s1")
        await rig.manager.open("s2")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        rig.send("client_connected", sid="s2")
        rig.send("stt_final", HELLO, sid="s2")
        await rig.advance(500)
        assert rig.manager.live_tasks() == 4   # two consumers, two answers in progress
        assert await rig.manager.close("s1") is True
        [cancelled] = rig.lines("activity_cancelled")
        assert cancelled["data"] == {"activity": "respond", "state": "THINKING",
                                     "reason": "session_closed"}
        [closed] = rig.lines("session_closed")
        assert closed["data"]["state"] == "THINKING"
        assert rig.manager.get("s1") is None
        assert rig.manager.live_tasks() == 2
        assert await rig.manager.close("s1") is False
        # the closed session's answer never arrives; s2 goes on speaking
        await rig.advance(1000)
        assert rig.sink.records.index(closed) == max(
            i for i, r in enumerate(rig.sink.records) if r["session_id"] == "s1")
        assert rig.manager.get("s2") is not None and rig.manager.get("s2").state == "SPEAKING"  # type: ignore[union-attr]
    assert rig.lines("activity_cancelled", "s2", reason="session_closed")
    assert rig.manager.live_tasks() == 0
    assert other_tasks() == set()


async def test_a_snapshot_is_saved_after_every_applied_step() -> None:
    store = MemorySnapshotStore()
    rig = Rig(settings=FakeSettings(respond_ms=300, speak_ms=400), store=store)
    async with rig.manager:
        session = await rig.manager.open("s1")
        seen: list[tuple[tuple[str, ...], int, int]] = []
        await rig.advance(0)

        def check() -> None:
            snap = store.snapshots["s1"]
            assert snap == session.snapshot()
            assert snap.configuration == session.configuration
            assert (snap.chart, snap.version_hash) == ("voice_turn", rig.chart.version_hash)
            seen.append((snap.configuration, snap.epoch, snap.turn))

        check()
        rig.send("client_connected")
        await rig.advance(10)
        check()
        rig.send("stt_final", HELLO)
        await rig.advance(10)
        check()
        rig.send("stt_final", HELLO)      # rejected in THINKING: nothing to save
        await rig.advance(10)
        check()
        await rig.advance(300)            # response_ready: SPEAKING
        check()
        await rig.advance(400)            # playback_done: LISTENING
        check()
        assert [c[-1] for c, _, _ in seen] == ["IDLE", "LISTENING", "THINKING", "THINKING",
                                               "SPEAKING", "LISTENING"]
        assert seen[2] == seen[3]
        epochs = [e for _, e, _ in seen]
        assert epochs[2] == epochs[3]
        assert epochs[0] < epochs[1] < epochs[2] < epochs[4] < epochs[5]
        assert [t for _, _, t in seen] == [0, 1, 2, 2, 2, 2]   # external events start turns
        assert seen[1][0] == ("CONNECTED", "LISTENING")
    assert store.snapshots == {}   # a closed session leaves no snapshot behind


async def test_a_session_resumes_from_its_snapshot() -> None:
    first = Rig(settings=FakeSettings(respond_ms=1000), store=MemorySnapshotStore())
    async with first.manager:
        await first.manager.open("s1")
        first.send("client_connected")
        first.send("stt_final", {"text": "what's the weather", "is_final": True})
        await first.advance(200)
        assert first.store is not None
        saved = first.store.snapshots["s1"]   # what survives the crash of this process
    assert saved.configuration == ("CONNECTED", "THINKING")

    store = MemorySnapshotStore()
    await store.save(saved)
    rig = Rig(settings=FakeSettings(respond_ms=1000, speak_ms=400), store=store)
    async with rig.manager:
        session = await rig.manager.open("s1", resume=True)
        await rig.advance(0)
        [resumed] = rig.lines("session_resumed")
        assert resumed["data"]["state"] == "THINKING"
        assert rig.lines("session_started") == []
        assert session.configuration == ("CONNECTED", "THINKING")
        assert (session.epoch, session.turn) == (saved.epoch + 1, saved.turn)
        assert session.contract["microphone"] == "gated"
        # no enter effect ran again, but the state's activity restarted, on the same words
        assert rig.lines("effect_done") == []
        assert [r["data"]["state"] for r in rig.lines("activity_started", activity="respond")] \
            == ["THINKING"]
        assert rig.responder.calls == [("s1", "what's the weather")]
        # an answer posted before the crash is from an older epoch: dropped
        old = VoiceEvent(event_type="response_ready", session_id="s1", source="activity:respond",
                         timestamp=rig.clock.wall(), payload={"text": "old answer"})
        session.post(Envelope(event=old, epoch=saved.epoch))
        await rig.advance(10)
        assert rig.lines("event_stale", event="response_ready")
        assert session.state == "THINKING"
        # and the session carries on
        await rig.advance(1000)
        assert session.state == "SPEAKING"
        rig.send("barge_in", {"reason": "stop"})
        await rig.advance(10)
        assert transitions(rig.sink.records) == [
            "THINKING → SPEAKING (response_ready)",
            "SPEAKING → INTERRUPT (barge_in)",
            "INTERRUPT → LISTENING (ready_after_interrupt)",
        ]
        assert session.state == "LISTENING"


async def test_resume_without_a_snapshot_starts_fresh() -> None:
    rig = Rig(store=MemorySnapshotStore())
    async with rig.manager:
        session = await rig.manager.open("s1", resume=True)
        await rig.advance(0)
        assert rig.lines("session_started") and not rig.lines("session_resumed")
        assert session.state == "IDLE"


async def test_a_session_built_from_a_snapshot_of_another_chart_is_refused() -> None:
    rig = Rig(RUNTIME_CHART, runtime_registry())
    voice = Rig()
    async with voice.manager:
        session = await voice.manager.open("s1")
        snap = session.snapshot()
    with pytest.raises(ValueError, match="does not fit chart runtime_activities"):
        Session("s1", rig.chart, Kernel(rig.chart), rig.registry, rig.ports, rig.clock, rig.log,
                snapshot=snap)


# ----------------------------------------------------------- epochs & slots
async def test_an_event_from_an_older_epoch_is_dropped_as_stale() -> None:
    rig = Rig(RUNTIME_CHART, runtime_registry())
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("post_twice")
        await rig.advance(10)
        # the first tick moved POSTING → IDLE; the second was posted by the same
        # activity run and arrives after that state is gone
        assert transitions(rig.sink.records) == ["IDLE → POSTING (post_twice)",
                                                 "POSTING → IDLE (tick)"]
        [stale] = rig.lines("event_stale")
        assert stale["data"]["event"] == "tick"
        assert stale["data"]["current_epoch"] == session.epoch
        assert stale["data"]["event_epoch"] == session.epoch - 1
        assert session.state == "IDLE"
        assert len(rig.lines("event_received", event="tick")) == 2


PARENT_OWNED = ROOT / "tests" / "charts" / "runtime_parent_owned.yaml"


def parent_owned_registry(answers: bool) -> Registry:
    registry = default_registry()

    @registry.activity()
    async def slow_answer(ctx: ActivityContext) -> None:
        if not answers:
            await ctx.clock.sleep(3600)
        await ctx.clock.sleep(0.1)
        ctx.post("answer", {})
        ctx.post("late", {})              # queued behind `answer`, which leaves WORKING

    return registry


async def test_a_parents_activity_still_answers_after_a_move_between_its_children() -> None:
    rig = Rig(PARENT_OWNED, parent_owned_registry(answers=True))
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("go")
        await rig.advance(50)
        rig.send("next")                  # ASKING → CONFIRMING: WORKING stays active
        await rig.advance(100)
        assert transitions(rig.sink.records) == ["IDLE → ASKING (go)",
                                                 "ASKING → CONFIRMING (next)",
                                                 "CONFIRMING → IDLE (answer)"]
        assert session.state == "IDLE"
        [stale] = rig.lines("event_stale")
        assert stale["data"]["event"] == "late"
        assert stale["data"]["owner"] == "WORKING"
        assert "WORKING left" in stale["message"]
        assert len(transitions(rig.sink.records)) == 3


async def test_a_parents_timer_still_fires_after_a_move_between_its_children() -> None:
    rig = Rig(PARENT_OWNED, parent_owned_registry(answers=False))
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("go")
        await rig.advance(50)
        rig.send("next")
        await rig.advance(400)
        assert transitions(rig.sink.records)[-1] == "CONFIRMING → IDLE (give_up)"
        assert session.state == "IDLE"
        assert not rig.lines("event_stale")
        assert session.live_tasks() == 0


class RecordingSpeech(FakeSpeech):
    """FakeSpeech that remembers what it was asked to say."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, FakeSettings())
        self.said: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.said.append(text)
        async for chunk in super().synthesize(text):
            yield chunk


async def test_a_timer_into_speaking_keeps_the_answer_that_entered_the_state_before() -> None:
    """The README tutorial's CONFIRMING: response_ready → CONFIRMING → (timer) → SPEAKING
    speaks the answer, not the timer's empty payload."""
    rig = Rig(ROOT / "docs" / "tutorial" / "voice_turn_confirming.yaml")
    speech = RecordingSpeech(rig.clock)
    rig.manager.ports = dataclasses.replace(rig.ports, speech=speech)
    async with rig.manager:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        await rig.advance(3000)
        assert transitions(rig.sink.records)[-3:] == ["THINKING → CONFIRMING (response_ready)",
                                                      "CONFIRMING → SPEAKING (confirmed)",
                                                      "SPEAKING → LISTENING (playback_done)"]
        assert speech.said == ["Hi there!"]


async def test_a_child_invoking_its_parents_activity_supersedes_it() -> None:
    rig = Rig(RUNTIME_CHART, runtime_registry())
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("nest")
        await rig.advance(10)
        started = rig.lines("activity_started", activity="worker")
        assert [r["data"]["state"] for r in started] == ["PARENT", "CHILD"]
        [superseded] = rig.lines("activity_cancelled")
        assert superseded["data"] == {"activity": "worker", "state": "PARENT",
                                      "reason": "superseded"}
        assert session.live_tasks() == 1
        assert len([t for t in other_tasks() if t.get_name() == "s1:worker"]) == 1

        rig.send("again")                 # leave and re-enter CHILD
        await rig.advance(10)
        reasons = [r["data"]["reason"] for r in rig.lines("activity_cancelled")]
        assert reasons == ["superseded", "state_exit"]
        assert len(rig.lines("activity_started", activity="worker")) == 3
        assert session.live_tasks() == 1

        rig.send("stop")
        await rig.advance(10)
        assert session.live_tasks() == 0
        assert [r["data"]["state"] for r in rig.lines("activity_cancelled")] \
            == ["PARENT", "CHILD", "CHILD"]


async def test_an_activity_cancelled_before_it_ran_still_logs_start_and_cancel() -> None:
    rig = Rig(settings=FakeSettings(respond_ms=300))
    async with rig.manager:
        await rig.manager.open("s1")
        # three events in one burst: THINKING is entered and left before the
        # respond task gets its first turn on the loop
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        rig.send("barge_in", {"reason": "no wait"})
        await rig.advance(1000)
        assert len(rig.lines("activity_started", activity="respond")) == 1
        [cancelled] = rig.lines("activity_cancelled", activity="respond")
        assert cancelled["data"]["reason"] == "state_exit"
        assert rig.responder.calls == []
        assert not rig.lines("state_transition", to="SPEAKING")


async def test_a_failing_activity_posts_error_even_when_error_has_no_payload() -> None:
    rig = Rig(RUNTIME_CHART, runtime_registry())
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("crash_now")
        await rig.advance(100)
        [failed] = rig.lines("activity_failed")
        assert failed["level"] == "ERROR"
        assert failed["data"]["activity"] == "crash"
        assert "ValueError: disk on fire" in failed["data"]["reason"]
        assert rig.lines("event_invalid") == []
        assert transitions(rig.sink.records) == ["IDLE → CRASHING (crash_now)",
                                                 "CRASHING → IDLE (error)"]
        assert session.state == "IDLE"


# ------------------------------------------------------ latency & contracts
async def test_latency_stats_per_transition_pair() -> None:
    rig = Rig(settings=FakeSettings(respond_ms=300, speak_ms=400))
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("client_connected")
        await rig.advance(100)
        rig.send("stt_final", HELLO, age_ms=50)      # the producer stamped it 50 ms ago
        await rig.advance(1000)
        rig.send("stt_final", HELLO, age_ms=150)
        await rig.advance(1000)
        rig.send("stt_final", HELLO, age_ms=100)
        await rig.advance(1000)
        stats = session.latency.as_dict()
    assert set(stats) == {"IDLE→LISTENING", "LISTENING→THINKING", "THINKING→SPEAKING",
                          "SPEAKING→LISTENING"}
    thinking = stats["LISTENING→THINKING"]
    assert thinking["count"] == 3
    assert thinking["latency_ms"] == {"p50": 100.0, "p95": 150.0, "max": 150.0}
    assert thinking["dwell_ms"]["max"] == 300.0   # 100 ms, then 1000 - 700 = 300 ms listening
    assert stats["THINKING→SPEAKING"]["count"] == 3
    assert stats["THINKING→SPEAKING"]["dwell_ms"] == {"p50": 300.0, "p95": 300.0, "max": 300.0}
    assert stats["IDLE→LISTENING"]["count"] == 1
    lines = [r for r in rig.lines("latency_recorded", **{"from": "LISTENING", "to": "THINKING"})]
    assert [r["data"]["latency_ms"] for r in lines] == [50.0, 150.0, 100.0]


async def test_audio_while_playback_is_stopped_is_a_contract_violation() -> None:
    emitted: list[bool] = []
    rig = Rig(RUNTIME_CHART, runtime_registry(emitted))
    async with rig.manager:
        session = await rig.manager.open("s1")
        rig.send("be_loud")
        await rig.advance(10)
        [violation] = rig.lines("contract_violation")
        assert violation["level"] == "ERROR"
        assert violation["data"]["state"] == "LOUD"
        assert violation["data"]["channel"] == "playback"
        assert "640 bytes dropped" in violation["data"]["detail"]
        assert emitted == [False]
        assert rig.ports.playback.written["s1"] == 0  # type: ignore[attr-defined]
        assert rig.lines("audio_out") == []
        assert session.contract_violations == 1
        assert rig.log.counts["contract_violation"] == 1


async def test_reaching_a_final_state_does_not_stop_other_sessions_of_the_chart() -> None:
    rig = Rig(ROOT / "tests" / "charts" / "nested_example.yaml")
    async with rig.manager:
        a = await rig.manager.open("a")
        b = await rig.manager.open("b")
        rig.send("client_connected", sid="a")
        rig.send("hang_up", sid="a")
        await rig.advance(10)
        assert a.state == "DONE"
        rig.send("client_connected", sid="b")
        rig.send("stt_final", HELLO, sid="b")
        await rig.advance(10)
        assert b.configuration == ("CONNECTED", "CONFIRMING", "READING_BACK")
        assert rig.lines("transition_rejected", "b") == []
        # the finished session itself stays finished
        rig.send("client_connected", sid="a")
        await rig.advance(10)
        [rejected] = rig.lines("transition_rejected", "a")
        assert rejected["data"]["reason"] == "no_transition"
        assert a.state == "DONE"


class FailingStore(MemorySnapshotStore):
    """A snapshot store that breaks for one session once it has a caller."""

    async def save(self, snapshot: Snapshot) -> None:
        if snapshot.session_id == "broken" and snapshot.turn > 0:
            raise ConnectionError("snapshot store unreachable")
        await super().save(snapshot)


async def test_a_session_that_breaks_does_not_take_the_others_down() -> None:
    store = FailingStore()
    rig = Rig(settings=FakeSettings(respond_ms=300, speak_ms=400), store=store)
    async with rig.manager:
        good = await rig.manager.open("good")
        await rig.manager.open("broken")
        rig.send("client_connected", sid="good")
        rig.send("client_connected", sid="broken")
        await rig.advance(10)
        [failed] = rig.lines("session_failed", "broken")
        assert failed["level"] == "ERROR"
        assert failed["data"]["error"] == "ConnectionError: snapshot store unreachable"
        assert rig.lines("session_closed", "broken")
        assert rig.manager.get("broken") is None
        # its last good snapshot is kept for a resume
        assert store.snapshots["broken"].configuration == ("IDLE",)
        # the other session is untouched and keeps working
        rig.send("stt_final", HELLO, sid="good")
        await rig.advance(1000)
        assert transitions(rig.sink.records, "good")[-1] == "SPEAKING → LISTENING (playback_done)"
        assert good.state == "LISTENING"
        assert rig.send("stt_final", HELLO, sid="broken") is False
    assert rig.manager.live_tasks() == 0
    assert other_tasks() == set()
