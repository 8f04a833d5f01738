"""/inspect with a chart of parallel regions: a session's live state is a set of
active states, and the inspector reports (and the page highlights) all of them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from adapters.server.inspect import Inspector
from engine.tools.timeline import build_timeline
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


_FAKE_DOM = """
class Node {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.textContent = "";
                     this.hidden = false; this.value = "0"; this.clientWidth = 900;
                     this.scrollTop = 0; this.scrollHeight = 0; this.clientHeight = 0; }
  get parentElement() { return new Node("div"); }
  querySelector() { return this.appendChild(new Node("tbody")); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  appendChild(c) { this.children.push(c); return c; }
  replaceChildren(...cs) { this.children = cs; }
  addEventListener() {}
  get classList() {
    const n = this;
    return {add(c) { n.attrs.class = ((n.attrs.class || "") + " " + c).trim(); }};
  }
}
const nodes = new Map();
const document = {
  createElement: (tag) => new Node(tag), createElementNS: (ns, tag) => new Node(tag),
  getElementById: (id) => {
    if (!nodes.has(id)) nodes.set(id, new Node("div"));
    return nodes.get(id);
  },
};
function walk(n, out = []) { out.push(n); for (const c of n.children) walk(c, out); return out; }
function titleOf(n) {
  const t = n.children.find((c) => c.tag === "title");
  return t ? t.textContent : null;
}
"""


def test_the_page_draws_tool_calls_and_data_changes(tmp_path: Path) -> None:
    """The inspector page's own timeline code (adapters/server/static/inspect.js), run
    by node with a small stand-in for the DOM, on the JSON /inspect/sessions/{id}
    serves for examples/booking's bad-date call: a lane of tool calls (each titled
    with its arguments and outcome, the refused one naming its field), a lane of data
    changes (old → new), and the "tool calls · data" list in time order."""
    from engine.tools.simulator import simulate_file
    from examples.booking.registry import build_registry
    node = shutil.which("node")
    assert node, "node is needed to run the inspector page's code (apt-get install nodejs)"
    trace = simulate_file(ROOT / "examples" / "booking" / "scenarios" / "bad_date.yaml",
                          registry=build_registry())
    timeline = {**build_timeline("s1", trace).as_dict(), "live": False}
    page = (ROOT / "adapters" / "server" / "static" / "inspect.js").read_text(encoding="utf-8")
    code = page[:page.index("// ----------------------------------------------------------------"
                            "------------- start")]
    script = tmp_path / "timeline.js"
    script.write_text(
        _FAKE_DOM + code + "\ntimeline = " + json.dumps(timeline) + ";\n"
        "renderTimeline();\n"
        "const svg = nodes.get('tl-chart').children[0];\n"
        "const all = walk(svg);\n"
        "console.log(JSON.stringify({\n"
        "  lanes: all.filter((n) => n.attrs.class === 'lane-label').map((n) => n.textContent),\n"
        "  tools: all.filter((n) => n.tag === 'circle').map((n) => [n.attrs.class, titleOf(n)]),\n"
        "  data: all.filter((n) => (n.attrs.class || '') === 'datum').map(titleOf),\n"
        "  flow: nodes.get('flow').children.map((li) => [li.attrs.class, li.textContent]),\n"
        "  flowHidden: nodes.get('flow-pane').hidden,\n"
        "}));\n", encoding="utf-8")
    out = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    drawn = json.loads(out)
    assert drawn["lanes"][-3:] == ["tool calls", "data", "marks"]
    assert drawn["tools"] == [
        ["tool moved", "tool set_party_size(size=4) in ASK_SIZE: moved → ASK_DATE"],
        ["tool invalid", "tool set_date(date=31) in ASK_DATE: invalid payload.date "
                         "(payload.date: expected str, got int 31)"],
        ["tool rejected", 'tool set_date(date="2027-02-30") in ASK_DATE: rejected '
                          "(guard_failed:is_calendar_date)"],
        ["tool moved", 'tool set_date(date="2026-12-11") in ASK_DATE: moved → ASK_TIME']]
    assert drawn["data"] == ["party_size: 0 → 4 (set_party_size)",
                             'date: "" → "2026-12-11" (set_date)']
    assert drawn["flow"][:3] == [
        ["moved", "0.80 s  tool set_party_size(size=4) in ASK_SIZE: moved → ASK_DATE"],
        ["data", "0.80 s  party_size: 0 → 4 (set_party_size)"],
        ["invalid", "3.80 s  tool set_date(date=31) in ASK_DATE: invalid payload.date "
                    "(payload.date: expected str, got int 31)"]]
    assert len(drawn["flow"]) == 6 and drawn["flowHidden"] is False


def test_the_page_reads_a_timeline_from_a_server_without_tool_calls(tmp_path: Path) -> None:
    """Backward compatible: a timeline without the new keys (an older server) draws
    as before: no tool or data lane, the list hidden."""
    node = shutil.which("node")
    assert node, "node is needed to run the inspector page's code (apt-get install nodejs)"
    old = {**build_timeline("s1", []).as_dict(), "live": False}
    del old["tools"], old["data_changes"]
    page = (ROOT / "adapters" / "server" / "static" / "inspect.js").read_text(encoding="utf-8")
    code = page[:page.index("// ----------------------------------------------------------------"
                            "------------- start")]
    script = tmp_path / "old.js"
    script.write_text(
        _FAKE_DOM + code + "\ntimeline = " + json.dumps(old) + ";\nrenderTimeline();\n"
        "const all = walk(nodes.get('tl-chart').children[0]);\n"
        "console.log(JSON.stringify({lanes: all.filter((n) => n.attrs.class === 'lane-label')"
        ".map((n) => n.textContent), hidden: nodes.get('flow-pane').hidden}));\n",
        encoding="utf-8")
    out = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out) == {"lanes": ["state", "effects", "marks"], "hidden": True}


def test_the_inspector_serves_tool_calls_and_data_changes() -> None:
    """What GET /inspect/sessions/{id} answers (Inspector.timeline), fed the typed
    events of examples/booking's bad-date call: the new keys beside the old ones."""
    from engine.runtime.trace import from_record
    from engine.tools.simulator import simulate_file
    from examples.booking.registry import build_registry
    trace = simulate_file(ROOT / "examples" / "booking" / "scenarios" / "bad_date.yaml",
                          registry=build_registry())
    inspector = Inspector(lambda name: None, lambda: 0.0)
    for record in trace:
        inspector(from_record(record))
    served = inspector.timeline("s1")
    assert served is not None
    assert [(c["tool"], c["result"], c["field"]) for c in served["tools"]] == [
        ("set_party_size", "moved", None), ("set_date", "invalid", "payload.date"),
        ("set_date", "rejected", None), ("set_date", "moved", None)]
    assert [c["changes"] for c in served["data_changes"]] == [
        [{"field": "party_size", "from": 0, "to": 4}],
        [{"field": "date", "from": "", "to": "2026-12-11"}]]
    assert served["transitions"] and served["marks"] and served["live"] is False
