"""Diagrams of the issue-16 chart language (parallel regions, history, data, done
events) against golden files in tests/golden/diagrams/, in every format.

When a diagram changes on purpose, look at the new output (render it: Mermaid
Live, `dot -Tsvg`), then write it over the golden file with
`turnchart render tests/charts/flow_parallel.yaml --format FORMAT`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.render import render, to_dot, to_json, to_mermaid
from tests.test_flow_runtime import FLOW, flow_registry

GOLDEN = Path(__file__).resolve().parent / "golden" / "diagrams"


@pytest.fixture(scope="module")
def chart() -> CompiledChart:
    return load_chart(FLOW, flow_registry())


@pytest.mark.parametrize("fmt, suffix", [("mermaid", "mmd"), ("dot", "dot"), ("json", "json")])
def test_golden_diagrams(chart: CompiledChart, fmt: str, suffix: str) -> None:
    golden = GOLDEN / f"flow_parallel.{suffix}"
    assert render(chart, fmt) == golden.read_text(encoding="utf-8"), \
        f"{golden.name} differs from what render gives now (see the module doc)"  # type: ignore[arg-type]


def test_mermaid_draws_regions_side_by_side_and_the_history(chart: CompiledChart) -> None:
    text = to_mermaid(chart)
    lines = [line.strip() for line in text.splitlines()]
    # The two regions are separated by Mermaid's concurrency divider inside CALL.
    turn, divider, flow = (lines.index('state "<b>TURN</b>" as TURN {'), lines.index("--"),
                           lines.index('state "<b>FLOW</b>" as FLOW {'))
    assert turn < divider < flow
    assert lines.count("--") == 1
    assert "‖ parallel#58; TURN, FLOW run at once" in lines
    assert "H shallow history#58; re-entry resumes the last child" in lines
    assert "CALL --> WRAP_UP : done.state.FLOW" in lines
    assert any("set party_size ← size" in line for line in lines)
    assert "%% data: party_size#58; int = 0" in text


def test_dot_draws_dashed_regions_and_an_h_node(chart: CompiledChart, tmp_path: Path) -> None:
    text = to_dot(chart)
    for region in ("TURN", "FLOW"):
        block = re.search(rf'subgraph "cluster_{region}" {{\n\s*label=.*?style="([^"]+)"', text)
        assert block and block.group(1) == "dashed,rounded,filled"
    assert 'class="state compound parallel"' in text
    assert '"BOOKING::history" [shape=circle' in text and 'label="H"' in text
    assert '"CLARIFYING" -> "BOOKING::history"' in text       # resume lands on H
    assert '"BOOKING::history" -> "ASK_SIZE" [style="dotted"' in text
    proc = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True,
                          check=False, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()
    svg = proc.stdout.decode()
    for state in ("CALL", "TURN", "FLOW", "LISTENING", "ASK_SIZE"):
        assert f'id="state&#45;{state}"' in svg


def test_json_carries_the_new_keys(chart: CompiledChart) -> None:
    data = json.loads(render(chart, "json"))
    assert data == to_json(chart)
    assert data["states"]["CALL"]["parallel"] is True
    assert data["states"]["BOOKING"]["history"] == "shallow"
    assert "parallel" not in data["states"]["TURN"]
    assert data["data"]["misunderstandings"] == {"type": "int", "default": 0,
                                                 "description": None}
    assert data["events"]["done.state.FLOW"]["unhandled"] == "ignore"
    size = next(t for t in data["transitions"] if t["event"] == "size_given")
    assert size["set"] == {"party_size": {"from": "size"}}
    handover = next(t for t in data["transitions"] if t["target"] == "HANDOVER")
    assert handover["guards"] == ["field_at_least(field=misunderstandings, value=1)"]
