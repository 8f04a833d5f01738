"""Per-state turn policy in the chart language (`turn:`): shape, inheritance, what the
compiled chart and its renderings carry, and that charts without it keep their hash.
Enforcement by the audio adapter is in tests/test_turn_enforcement.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.chart.chart import compile_text, load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartErrors
from engine.chart.render import render, to_json
from engine.chart.turn import TurnPolicy

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "tests" / "charts" / "turn_policy.yaml"
MINIMAL = (ROOT / "tests" / "golden" / "valid" / "minimal.yaml").read_text(encoding="utf-8")
LISTENING_CONTRACT = "    contract: {microphone: open, playback: stopped}\n"


@pytest.fixture(scope="module")
def chart() -> CompiledChart:
    return load_chart(CHART)


def with_listening_turn(turn: str) -> str:
    """minimal.yaml with `turn: ...` added to LISTENING (line 24)."""
    return MINIMAL.replace(LISTENING_CONTRACT, LISTENING_CONTRACT + f"    turn: {turn}\n", 1)


def test_policy_is_inherited_key_by_key(chart: CompiledChart) -> None:
    assert chart.states["IDLE"].turn == TurnPolicy()
    assert chart.states["IDLE"].turn.empty
    assert chart.states["CHAT"].turn == TurnPolicy("silence", 300, 200, 800)
    # ASK_NUMBER overrides only its patience; HOLD_QUICK only barge-in while thinking
    assert chart.states["ASK_NUMBER"].turn == TurnPolicy("silence", 1200, 200, 800)
    assert chart.states["HOLD_QUICK"].turn == TurnPolicy("silence", 300, 200, 200)


def test_json_and_diagrams_show_the_effective_policy(chart: CompiledChart) -> None:
    data = json.loads(render(chart, "json"))
    assert data["states"]["IDLE"]["turn"] == {}
    assert data["states"]["ASK_NUMBER"]["turn"] == {
        "end": "silence", "patience_ms": 1200,
        "barge_in": {"speaking_ms": 200, "thinking_ms": 800}}
    assert data == to_json(chart)
    mermaid = render(chart, "mermaid")
    assert ("ASK_NUMBER : 🗣️ end silence · patience 1200 ms · barge-in 200 ms speaking, "
            "800 ms thinking") in mermaid
    assert "IDLE : 🗣️" not in mermaid
    assert "patience 1200 ms" in render(chart, "dot")


def test_only_the_keys_set_are_shown() -> None:
    compiled = compile_text(with_listening_turn("{barge_in: {thinking_ms: 400}}"), "c.yaml")
    policy = compiled.states["LISTENING"].turn
    assert policy == TurnPolicy(barge_in_thinking_ms=400)
    assert policy.as_dict() == {"barge_in": {"thinking_ms": 400}}
    assert policy.text() == "barge-in 400 ms thinking"


def test_a_chart_without_turn_keeps_its_hash_and_one_with_it_changes() -> None:
    plain = compile_text(MINIMAL, "a.yaml")
    empty = compile_text(with_listening_turn("{}"), "b.yaml")
    patient = compile_text(with_listening_turn("{patience_ms: 900}"), "c.yaml")
    assert plain.version_hash == "d20519d8b6629e03"   # its hash before `turn:` existed
    assert empty.version_hash != plain.version_hash    # an explicit (empty) policy is content
    assert patient.version_hash not in (plain.version_hash, empty.version_hash)


@pytest.mark.parametrize(("turn", "where", "code", "message"), [
    ("{end: fast}", "24:17", "E153", "bad end-of-turn mode 'fast' in the turn policy of state "
     "'LISTENING': use silence, smart or hybrid"),
    ("{patience_ms: 700ms}", "24:25", "E154", "bad patience_ms '700ms' in the turn policy of "
     "state 'LISTENING': write whole milliseconds from 0 to 10000, e.g. 700"),
    ("{patience_ms: 0.7}", "24:25", "E154", "bad patience_ms 0.7"),
    ("{patience_ms: -1}", "24:25", "E154", "bad patience_ms -1"),
    ("{barge_in: {thinking_ms: 10001}}", "24:36", "E154", "bad thinking_ms 10001 in 'barge_in' "
     "in the turn policy of state 'LISTENING'"),
    ("{barge_in: {speaking_ms: yes}}", "24:36", "E154", "bad speaking_ms 'yes'"),
    ("{patience: 700}", "24:12", "E102", "unknown key 'patience' in the turn policy of state "
     "'LISTENING' (did you mean 'patience_ms'?)"),
    ("{barge_in: {min_words: 2}}", "24:23", "E102", "unknown key 'min_words' in 'barge_in'"),
    ("smart", "24:11", "E104", "bad value for the turn policy of state 'LISTENING': "
     "expected a mapping, got 'smart'"),
])
def test_a_bad_policy_is_an_error_at_its_position(turn: str, where: str, code: str,
                                                   message: str) -> None:
    with pytest.raises(ChartErrors) as caught:
        compile_text(with_listening_turn(turn), "c.yaml")
    lines = [str(e) for e in caught.value.errors]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"c.yaml:{where}: {code} {message}"), lines[0]


def test_the_chart_page_and_json_route_show_each_states_policy() -> None:
    from starlette.testclient import TestClient

    from adapters.config import Settings
    from adapters.server.app import create_app

    with TestClient(create_app(Settings(charts=[str(CHART)]))) as client:
        page = client.get("/charts/turn_policy").text
        assert "<th>contract</th><th>turn</th>" in page
        assert ("<td>end silence · patience 1200 ms · barge-in 200 ms speaking, 800 ms thinking"
                "</td>") in page
        states = client.get("/charts/turn_policy.json").json()["states"]
        assert states["SMART"]["turn"]["end"] == "smart"
