"""/inspect with a chart of parallel regions: a session's live state is a set of
active states, and the inspector reports (and the page highlights) all of them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from adapters.server.inspect import Inspector
from engine.timeline import build_timeline
from tests.test_flow_runtime import HELLO, ROOT, Rig


async def test_the_inspector_reports_every_active_state_of_a_parallel_chart() -> None:
    rig = Rig()
    inspector = Inspector(lambda name: rig.chart if name == rig.chart.name else None,
                          rig.clock.now_ms)
    rig.log.subscribe(inspector)
    async with rig.manager:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        rig.send("size_given", {"size": 4})
        await rig.settle()
        view = inspector.views["s1"].as_dict(inspector.charts)
        assert view["active"] == ["THINKING", "CONFIRM"]
        assert view["configuration"] == ["CALL", "TURN", "THINKING", "FLOW", "BOOKING",
                                          "CONFIRM"]
        assert view["contract"] == {"microphone": "gated", "playback": "stopped"}
        rig.send("not_understood")
        rig.send("not_understood")     # → HANDOVER → done.state.FLOW → WRAP_UP
        await rig.settle()
        view = inspector.views["s1"].as_dict(inspector.charts)
        assert view["state"] == "WRAP_UP"
        assert view["active"] == ["WRAP_UP"] and view["configuration"] == ["WRAP_UP"]


async def test_the_page_keeps_every_active_leaf(tmp_path: Path) -> None:
    """The page's copy of SessionView.apply (adapters/server/static/inspect.js), run by
    node on the session's real log lines: its view of the session has every active
    leaf, which is what the diagram highlights (`activeOf`)."""
    node = shutil.which("node")
    assert node, "node is needed to run the inspector page's model code (apt-get install nodejs)"
    rig = Rig()
    async with rig.manager:
        await rig.manager.open("s1")
        rig.send("client_connected")
        rig.send("stt_final", HELLO)
        rig.send("size_given", {"size": 4})
        await rig.settle()
    records = [r for r in rig.sink.records if r["session_id"] == "s1"
               and r["event_type"] != "session_closed"]
    page = (ROOT / "adapters" / "server" / "static" / "inspect.js").read_text(encoding="utf-8")
    model_code = page[page.index("function emptyView"):page.index("function orderedSessions")]
    parents = {name: info.parent for name, info in rig.chart.states.items()}
    script = tmp_path / "model.js"
    script.write_text(
        "const model = {sessions: new Map()};\n"
        "const chartData = new Map([[" + json.dumps(rig.chart.name) + ", {resolved: {parents: "
        + json.dumps(parents) + "}}]]);\n" + model_code
        + "\nfor (const rec of " + json.dumps(records) + ") applyRecord(rec);\n"
        "const v = model.sessions.get('s1');\n"
        "console.log(JSON.stringify({active: activeOf(v), configuration: v.configuration,"
        " contract: v.contract}));\n", encoding="utf-8")
    out = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    view = json.loads(out)
    assert view["active"] == ["THINKING", "CONFIRM"]
    assert sorted(view["configuration"]) == sorted(["CALL", "TURN", "THINKING", "FLOW",
                                                    "BOOKING", "CONFIRM"])
    assert view["contract"] == {"microphone": "gated", "playback": "stopped"}


async def test_the_timeline_keeps_one_span_per_region() -> None:
    rig = Rig()
    async with rig.manager:
        await rig.manager.open("s1")
        rig.send("client_connected")
        await rig.settle(100)
        rig.send("size_given", {"size": 4})       # FLOW moves; TURN stays in LISTENING
        await rig.settle(100)
        rig.send("stt_final", HELLO)              # TURN moves; FLOW stays in CONFIRM
        await rig.settle(100)
        timeline = build_timeline("s1", rig.sink.records)
        spans = {(s.state, s.end_ms is None) for s in timeline.states}
        assert {("LISTENING", False), ("ASK_SIZE", False), ("CONFIRM", True),
                ("THINKING", True)} <= spans
        listening = next(s for s in timeline.states if s.state == "LISTENING")
        assert listening.end_ms is not None and listening.end_ms - listening.start_ms == 200.0
        rig.send("not_understood")
        rig.send("not_understood")                # both regions left: WRAP_UP only
        await rig.settle(100)
        timeline = build_timeline("s1", rig.sink.records)
        assert [s.state for s in timeline.states if s.end_ms is None] == ["WRAP_UP"]
