"""`turnchart paths` on a chart with parallel regions, history and data guards
(issue 16): every transition and guard outcome is reached, per region."""

from __future__ import annotations

from engine.chart.chart import load_chart
from engine.tools.paths import generate_paths
from tests.test_flow_runtime import FLOW, flow_registry


def test_paths_cover_both_regions_history_and_data_guards() -> None:
    registry = flow_registry()
    report = generate_paths(load_chart(FLOW, registry), registry)
    assert report.problems == ()
    assert report.transition_percent == 100.0 and report.guard_percent == 100.0
    hits = {(r.row.source, r.row.event, r.row.target): r.hit for r in report.rows}
    # A region's transition is found from the whole configuration it ran in.
    turn = hits[("LISTENING", "stt_final", "THINKING")]
    assert turn is not None and turn.state == "LISTENING+ASK_SIZE" and turn.via == "outside"
    flow = hits[("ASK_SIZE", "size_given", "CONFIRM")]
    assert flow is not None and flow.via == "outside"
    # The history transition lands on the remembered child, which paths accepts.
    resume = hits[("CLARIFYING", "resume", "BOOKING")]
    assert resume is not None and resume.state == "LISTENING+CLARIFYING"
    done = hits[("CALL", "done.state.FLOW", "WRAP_UP")]
    assert done is not None and done.via == "internal"
    # Data guards declare no examples: their outcomes are reached, forced where needed.
    outcomes = {(g.row.event, g.outcome.held): g.hit for g in report.guards
                if g.guard.startswith("field_")}
    assert set(outcomes) == {("not_understood", True), ("not_understood", False),
                             ("confirmed", True), ("confirmed", False)}
    assert all(hit is not None for hit in outcomes.values())
    assert any(p.final_state == "WRAP_UP" for p in report.paths)
    assert any("+" in p.final_state for p in report.paths)
