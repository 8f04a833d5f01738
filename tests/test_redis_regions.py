"""`serve --redis` with a chart of parallel regions (issue 16 with issue 15): the
worker's `contract` op names every active leaf (`active`), so the front-end's turn
policy (CompiledChart.turn_of over the configuration), its `worker_state` lines,
/inspect's configuration and the timeline see every region, not just the first
region's leaf. Charts without regions send and log exactly what they did before.

Here the TURN region sets the microphone and a barge-in threshold, the FLOW region
(the second) sets playback and the patience: before, the front-end looked the policy
up by the first leaf only and never saw FLOW's patience."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from adapters.redis import Keys, RedisEventBus, RedisWorker
from adapters.redis.connection import open_client
from adapters.redis.output_link import ContractPublisher, output_key
from adapters.server.inspect import Inspector
from adapters.server.metrics import Metrics
from adapters.server.remote_voice import RemoteVoiceService
from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.turn import TurnPolicy
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.trace import Contract, TraceEvent, WorkerState, from_record
from engine.tools.fakes import fake_ports
from engine.tools.timeline import build_timeline
from tests.support.redis_server import RedisServer
from tests.support.voice_fakes import EnergyDetector, ScriptedTranscriber
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
SID = "regions-1"
REGIONS = """\
chart: regions
version: 1
initial: IDLE
contracts:
  microphone: [open, gated, closed]
  playback: [stopped, streaming]
events:
  client_connected: {}
  client_disconnected: {}
  size_given: {payload: {size: int}}
  heard: {}
  answered: {}
states:
  IDLE:
    contract: {microphone: closed, playback: stopped}
    on: {client_connected: CALL}
  CALL:
    parallel: true
    on: {client_disconnected: IDLE}
    states:
      TURN:
        initial: LISTENING
        states:
          LISTENING:
            contract: {microphone: open}
            turn: {barge_in: {speaking_ms: 150}}
            on: {heard: THINKING}
          THINKING:
            contract: {microphone: gated}
            on: {answered: LISTENING}
      FLOW:
        initial: ASK_SIZE
        states:
          ASK_SIZE:
            contract: {playback: stopped}
            turn: {patience_ms: 1200}
            on: {size_given: CONFIRM}
          CONFIRM:
            contract: {playback: streaming}
            final: true
"""


def event(event_type: str, sid: str = SID, **payload: Any) -> VoiceEvent:
    return VoiceEvent(event_type=event_type, session_id=sid, source="test",
                      timestamp=time.time(), correlation_id=None, payload=payload, metadata={})


def test_a_worker_state_line_names_the_regions_only_when_there_are_some() -> None:
    stamp = {"ts": "2025-11-22T22:20:00.000Z", "t_ms": 5.0, "level": "INFO",
             "session_id": "s1", "event_type": "worker_state"}
    head = {"chart": "regions", "version": 1, "version_hash": "abc"}
    plain = {**stamp, "message": "🛰️ worker: LISTENING (🎤 open · 🔈 stopped)",
             "data": {**head, "state": "LISTENING", "microphone": "open", "playback": "stopped"}}
    parsed = from_record(plain)
    assert isinstance(parsed, WorkerState) and parsed.active is None
    assert parsed.to_record() == plain                      # no `active` key added
    both = {**stamp, "message": "🛰️ worker: LISTENING + CONFIRM (🎤 open · 🔈 streaming)",
            "data": {**head, "state": "LISTENING", "microphone": "open",
                     "playback": "streaming", "active": ["LISTENING", "CONFIRM"]}}
    parsed = from_record(both)
    assert isinstance(parsed, WorkerState)
    assert parsed.active == ("LISTENING", "CONFIRM")
    assert dict(parsed.contract) == {"microphone": "open", "playback": "streaming"}
    assert parsed.to_record() == both


async def contract_ops(server: RedisServer, redis: Redis, chart_text: str,
                       events: list[VoiceEvent], expected: int) -> list[dict[str, str]]:
    """The `contract` ops a worker (wired as `turnchart worker` wires it) publishes for
    the session of `events` while it runs them: `expected` of them."""
    registry = default_registry()
    chart = compile_text(chart_text, "chart.yaml", registry)
    clock = RealClock()
    log = EventLog(ListSink(), clock)
    publisher = ContractPublisher(redis)
    log.subscribe(publisher)
    publishing = asyncio.create_task(publisher.run())
    worker = RedisWorker(server.url, chart, registry, fake_ports(clock), log,
                         worker_id="w1", lease_ms=2000, clock=clock)
    ops: list[dict[str, str]] = []
    try:
        async with RedisEventBus.from_url(server.url, log) as bus, worker:
            for e in events:
                await bus.publish(e)
            for _ in range(200):
                ops = [f for _, f in await redis.xrange(output_key(Keys(),
                                                                   events[0].session_id))
                       if f["op"] == "contract"]
                if len(ops) >= expected:
                    break
                await asyncio.sleep(0.1)
    finally:
        publishing.cancel()
    return ops


async def test_contract_ops_carry_every_active_leaf_only_for_charts_with_regions(
        server: RedisServer, redis: Redis) -> None:
    ops = await contract_ops(server, redis, REGIONS, [event("client_connected"),
                                                      event("size_given", size=4)], 3)
    assert [(f["state"], f["microphone"], f["playback"], json.loads(f["active"]))
            for f in ops] == [("IDLE", "closed", "stopped", ["IDLE"]),
                              ("LISTENING", "open", "stopped", ["LISTENING", "ASK_SIZE"]),
                              ("LISTENING", "open", "streaming", ["LISTENING", "CONFIRM"])]
    shipped = (ROOT / "charts" / "voice_turn.yaml").read_text(encoding="utf-8")
    ops = await contract_ops(server, redis, shipped, [event("client_connected", "plain-1")], 2)
    assert [f["state"] for f in ops] == ["IDLE", "LISTENING"]
    assert all("active" not in f for f in ops)      # the op as it always was


async def test_the_front_end_follows_every_region_its_worker_reports(
        server: RedisServer, tmp_path: Path) -> None:
    """A live worker (in-process) and a `serve --redis` front-end on a private Redis."""
    registry = default_registry()
    chart = compile_text(REGIONS, "regions.yaml", registry)
    clock = RealClock()
    worker_log = EventLog(ListSink(), clock)
    out = open_client(server.url)
    publisher = ContractPublisher(out)
    worker_log.subscribe(publisher)
    front_sink = ListSink()
    front_log = EventLog(front_sink, clock)
    seen: list[TraceEvent] = []
    front_log.subscribe(seen.append)
    inspector = Inspector(lambda name: chart if name == chart.name else None, clock.now_ms)
    front_log.subscribe(inspector)
    front = RemoteVoiceService(chart, registry, front_log, Metrics(lambda: 0),
                               redis_url=server.url, stt=ScriptedTranscriber(["x"]),
                               detector_factory=EnergyDetector)
    worker = RedisWorker(server.url, chart, registry, fake_ports(clock), worker_log,
                         worker_id="w1", lease_ms=2000, clock=clock)
    publishing = asyncio.create_task(publisher.run())

    def states_seen() -> list[tuple[str, tuple[str, ...] | None]]:
        return [(e.state, e.active) for e in seen if isinstance(e, WorkerState)]

    try:
        await front.start()
        front.follower.follow(SID)
        async with RedisEventBus.from_url(server.url, worker_log) as bus, worker:
            await bus.publish(event("client_connected"))
            assert await wait_until(lambda: front.turn_policy(SID).patience_ms == 1200, 20), \
                states_seen()
            # TURN's barge-in threshold and FLOW's patience, both in force
            assert front.turn_policy(SID) == TurnPolicy(patience_ms=1200,
                                                        barge_in_speaking_ms=150)
            assert dict(front.contract(SID)) == {"microphone": "open", "playback": "stopped"}
            view = inspector.views[SID].as_dict(inspector.charts)
            assert view["configuration"] == ["CALL", "TURN", "LISTENING", "FLOW", "ASK_SIZE"]
            assert view["active"] == ["LISTENING", "ASK_SIZE"]

            await bus.publish(event("size_given", size=4))   # only FLOW moves
            assert await wait_until(
                lambda: front.contract(SID).get("playback") == "streaming", 20), states_seen()
            assert front.turn_policy(SID) == TurnPolicy(barge_in_speaking_ms=150)
            assert inspector.views[SID].as_dict(inspector.charts)["configuration"] == \
                ["CALL", "TURN", "LISTENING", "FLOW", "CONFIRM"]

            await bus.publish(event("client_disconnected"))
            assert await wait_until(lambda: states_seen()[-1] == ("IDLE", ("IDLE",)), 20)
            assert front.turn_policy(SID).empty
    finally:
        publishing.cancel()
        await front.stop()
        await out.aclose()
    assert states_seen() == [("IDLE", ("IDLE",)), ("LISTENING", ("LISTENING", "ASK_SIZE")),
                             ("LISTENING", ("LISTENING", "CONFIRM")), ("IDLE", ("IDLE",))]
    lines = [r for r in front_sink.records if r["event_type"] == "worker_state"]
    assert lines[2]["data"]["active"] == ["LISTENING", "CONFIRM"]
    assert lines[2]["message"] == "🛰️ worker: LISTENING + CONFIRM (🎤 open · 🔈 streaming)"
    page = page_view(chart, lines[:3], tmp_path)   # the /inspect page's own model code
    assert page["active"] == ["LISTENING", "CONFIRM"]
    assert page["configuration"] == ["CALL", "TURN", "LISTENING", "FLOW", "CONFIRM"]
    # the timeline: one span per region while in CALL; FLOW's ASK_SIZE ends at CONFIRM
    spans = [(s.state, s.end_ms is None) for s in build_timeline(SID, seen).states]
    assert spans == [("IDLE", False), ("LISTENING", False), ("ASK_SIZE", False),
                     ("CONFIRM", False), ("IDLE", True)]


def page_view(chart: CompiledChart, records: list[dict[str, Any]], tmp: Path) -> Any:
    """The /inspect page's copy of SessionView.apply (adapters/server/static/inspect.js),
    run by node over `records` (as tests/test_flow_inspect.py does): its view of SID."""
    node = shutil.which("node")
    assert node, "node is needed to run the inspector page's model code (apt-get install nodejs)"
    page = (ROOT / "adapters" / "server" / "static" / "inspect.js").read_text(encoding="utf-8")
    model_code = page[page.index("function emptyView"):page.index("function orderedSessions")]
    parents = {name: info.parent for name, info in chart.states.items()}
    script = tmp / "model.js"
    script.write_text(
        "const model = {sessions: new Map()};\n"
        "const chartData = new Map([[" + json.dumps(chart.name) + ", {resolved: {parents: "
        + json.dumps(parents) + "}}]]);\n" + model_code
        + "\nfor (const rec of " + json.dumps(records) + ") applyRecord(rec);\n"
        "const v = model.sessions.get(" + json.dumps(SID) + ");\n"
        "console.log(JSON.stringify({active: activeOf(v), configuration: v.configuration}));\n",
        encoding="utf-8")
    return json.loads(subprocess.run([node, str(script)], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)


async def test_a_front_end_without_regions_keeps_the_state_it_was_told() -> None:
    """The shipped chart's ops (no `active`): the policy and lines as before; an op
    naming a state this front-end's chart lacks (a worker on another version) gives
    no policy rather than a wrong one."""
    chart = compile_text((ROOT / "tests" / "charts" / "turn_policy.yaml")
                         .read_text(encoding="utf-8"), "turn_policy.yaml", default_registry())
    sink = ListSink()
    front = RemoteVoiceService(chart, default_registry(), EventLog(sink, RealClock()),
                               Metrics(lambda: 0), redis_url="redis://127.0.0.1:9",
                               stt=ScriptedTranscriber(["x"]), detector_factory=EnergyDetector)
    try:
        await front._on_op("s1", {"op": "contract", "state": b"ASK_NUMBER",
                                  "microphone": b"open", "playback": b"stopped"})
        assert front.turn_policy("s1").patience_ms == 1200
        [line] = [r for r in sink.records if r["event_type"] == "worker_state"]
        assert "active" not in line["data"]
        await front._on_op("s1", {"op": "contract", "state": b"NOT_IN_THIS_VERSION",
                                  "microphone": b"open", "playback": b"stopped",
                                  "active": b"not json"})
        assert front.turn_policy("s1").empty
        assert dict(front.contract("s1")) == dict(Contract.of(
            {"microphone": "open", "playback": "stopped"}))
    finally:
        await front.bus.aclose()
        await front.out_redis.aclose()
