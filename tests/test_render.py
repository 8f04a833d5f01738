"""Renderers: Mermaid text that Mermaid can parse, DOT that Graphviz accepts, SVG, JSON.

Mermaid itself is not available to the test run (it needs a browser), so the
Mermaid output is checked by a small reader that knows the rules Mermaid 11
applies and that bit us while drawing the shipped chart: a label ends at `:`
or `;`, a composite state takes no description lines, and a state lands in
the block that mentions it last. The DOT output goes through the real `dot`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.chart.chart import load_chart
from engine.chart.compiler import CompiledChart
from engine.chart.render import (
    FORMATS,
    RenderUnavailable,
    graphviz_available,
    render,
    to_dot,
    to_json,
    to_mermaid,
    to_svg,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "charts" / "voice_turn.yaml"
FLAT = ROOT / "tests" / "charts" / "flat_example.yaml"
NESTED = ROOT / "tests" / "charts" / "nested_example.yaml"
EDGE_CASES = ROOT / "tests" / "charts" / "render_edge_cases.yaml"
FLOW = ROOT / "tests" / "charts" / "flow_parallel.yaml"   # parallel regions, history, data
ALL_CHARTS = [SHIPPED, FLAT, NESTED, EDGE_CASES, FLOW]


@pytest.fixture(scope="module")
def shipped() -> CompiledChart:
    return load_chart(SHIPPED)


@pytest.fixture(scope="module")
def nested() -> CompiledChart:
    return load_chart(NESTED)


@pytest.fixture(scope="module")
def edge_cases() -> CompiledChart:
    return load_chart(EDGE_CASES)


@pytest.fixture(scope="module")
def dot_binary() -> str:
    dot = shutil.which("dot")
    if dot is None:
        pytest.fail("Graphviz's `dot` is not installed, so DOT/SVG rendering cannot be tested: "
                    "install graphviz (Debian/Ubuntu: apt-get install -y graphviz); "
                    "scripts/test installs it")
    return dot


# --------------------------------------------------------------------------- a Mermaid reader

ID = r"[A-Za-z_][A-Za-z0-9_]*"
SAFE = r"(?:[^:;#{}<>\"%\n]|#\d+;)*"  # what Mermaid reads as plain label text
LINE_RULES = [
    ("comment", re.compile(r"%%(?!\{).*")),
    ("initial", re.compile(rf"\[\*\] --> (?P<dst>{ID})")),
    ("final", re.compile(rf"(?P<src>{ID}) --> \[\*\]")),
    ("edge", re.compile(rf"(?P<src>{ID}) --> (?P<dst>{ID}) : (?P<label>{SAFE})")),
    ("open", re.compile(rf'state "<b>(?P<label>{SAFE})</b>" as (?P<id>{ID}) \{{')),
    ("close", re.compile(r"\}")),
    ("divider", re.compile(r"--")),   # concurrency: the next region of a parallel state
    ("alias", re.compile(rf'state "(?P<label>{SAFE})" as (?P<id>{ID})')),
    ("note", re.compile(rf"note right of (?P<id>{ID})")),
    ("descr", re.compile(rf"(?P<id>{ID}) : (?P<label>{SAFE})")),
]


def decode(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


@dataclass
class Mermaid:
    """What Mermaid would make of our text: blocks, edges, descriptions, notes."""

    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (src, dst, label)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # id → shown name
    last_block: dict[str, str | None] = field(default_factory=dict)
    composites: set[str] = field(default_factory=set)


def read_mermaid(text: str) -> Mermaid:
    lines = text.splitlines()
    assert lines[:3] == ["---", lines[1], "---"] and lines[1].startswith("title: ")
    assert lines[3] == "stateDiagram-v2"
    out = Mermaid()
    stack: list[str] = []
    note: str | None = None

    def mention(*ids: str) -> None:
        for i in ids:
            out.last_block[i] = stack[-1] if stack else None

    for number, raw in enumerate(lines[4:], start=5):
        line = raw.strip()
        if note is not None:
            if re.match(r"end note\b", line):
                assert line == "end note", f"line {number}: a note ended early: {raw!r}"
                note = None
            else:
                assert re.fullmatch(SAFE, line), f"line {number}: unsafe note text {raw!r}"
                out.notes.setdefault(note, []).append(decode(line))
            continue
        matched = next(((k, m) for k, rule in LINE_RULES if (m := rule.fullmatch(line))), None)
        assert matched is not None, f"line {number}: Mermaid would not read {raw!r}"
        kind, groups = matched[0], matched[1].groupdict()
        if kind == "initial":
            out.edges.append(("[*]", groups["dst"], ""))
            mention(groups["dst"])
        elif kind == "final":
            out.edges.append((groups["src"], "[*]", ""))
            mention(groups["src"])
        elif kind == "edge":
            out.edges.append((groups["src"], groups["dst"], decode(groups["label"])))
            mention(groups["src"], groups["dst"])
        elif kind == "open":
            mention(groups["id"])
            out.labels[groups["id"]] = decode(groups["label"])
            out.composites.add(groups["id"])
            stack.append(groups["id"])
        elif kind == "close":
            assert stack, f"line {number}: unbalanced }}"
            stack.pop()
        elif kind == "divider":
            assert stack, f"line {number}: a region divider outside a composite state"
        elif kind == "alias":
            mention(groups["id"])
            out.labels[groups["id"]] = decode(groups["label"])
        elif kind == "note":
            note = groups["id"]
        elif kind == "descr":
            assert groups["id"] not in out.composites, (
                f"line {number}: Mermaid rejects a description on composite {groups['id']}")
            mention(groups["id"])
            out.descriptions.setdefault(groups["id"], []).append(decode(groups["label"]))
    assert not stack, f"unclosed blocks: {stack}"
    assert note is None, "unclosed note"
    return out


def mermaid_id(m: Mermaid, name: str) -> str:
    aliased = [i for i, label in m.labels.items() if label == name]
    return aliased[0] if aliased else name


def check_mermaid_structure(chart: CompiledChart, m: Mermaid) -> None:
    """Each state drawn once in its parent's block, each transition drawn once."""
    for name, state in chart.states.items():
        sid = mermaid_id(m, name)
        parent = None if state.parent is None else mermaid_id(m, state.parent)
        assert m.last_block.get(sid, "missing") == parent, f"{name} lands in the wrong block"
        assert (sid in m.composites) == state.compound
        if not state.compound and sid == name and sid in m.descriptions:
            assert m.descriptions[sid][0] == name, "Mermaid 11 shows the first line as title"
        elif not state.compound:   # nothing to describe (a region leaf): its label is its name
            assert m.labels.get(sid) == name
    drawn = [e for e in m.edges if "[*]" not in e[:2]]
    listed = [line for lines in (*m.descriptions.values(), *m.notes.values())
              for line in lines if line.startswith(("↻ ", "⤷ "))]
    assert len(drawn) + len(listed) == len(chart.transitions)
    finals = {src for src, dst, _ in m.edges if dst == "[*]"}
    assert finals == {mermaid_id(m, n) for n, s in chart.states.items() if s.final}


@pytest.mark.parametrize("path", ALL_CHARTS, ids=lambda p: p.stem)
def test_mermaid_reads_back_for_every_chart(path: Path) -> None:
    chart = load_chart(path)
    check_mermaid_structure(chart, read_mermaid(to_mermaid(chart)))


def test_mermaid_shipped_chart(shipped: CompiledChart) -> None:
    text = to_mermaid(shipped)
    m = read_mermaid(text)
    # Nesting and initial states.
    assert '    state "<b>CONNECTED</b>" as CONNECTED {' in text.splitlines()
    assert "    [*] --> IDLE" in text.splitlines()
    assert "        [*] --> LISTENING" in text.splitlines()
    assert {s for s, parent in m.last_block.items() if parent == "CONNECTED"} == {
        "LISTENING", "THINKING", "SPEAKING", "INTERRUPT"}
    # Contracts, effects, activities, timers, descriptions.
    assert "    IDLE : 🎤 closed · 🔈 stopped" in text.splitlines()
    assert m.descriptions["IDLE"] == [
        "IDLE", "No caller. Waiting for a connection.", "🎤 closed · 🔈 stopped"]
    assert "🎤 open · 🔈 stopped" in m.descriptions["LISTENING"]
    assert "🎤 gated · 🔈 streaming" in m.descriptions["SPEAKING"]
    assert "entry / cancel_tts, cancel_filler" in m.descriptions["LISTENING"]
    assert "entry / cancel_previous_filler" in m.descriptions["THINKING"]
    assert "invoke respond" in m.descriptions["THINKING"]
    assert "invoke speak" in m.descriptions["SPEAKING"]
    assert "after 600ms → filler_due" in m.descriptions["THINKING"]
    assert "after 0ms → ready_after_interrupt" in m.descriptions["INTERRUPT"]
    assert m.notes["CONNECTED"] == [
        "A caller is on the line.", "🎤 open · 🔈 stopped",
        "⤷ error / cancel_tts, cancel_filler → LISTENING"]
    # Edges with guards; an unguarded fallback is [else]; internal shown inside the state.
    assert ("LISTENING", "THINKING", "stt_final [has_final_text]") in m.edges
    assert ("THINKING", "SPEAKING", "response_ready [has_text]") in m.edges
    assert ("THINKING", "LISTENING", "response_ready [else]") in m.edges
    assert ("IDLE", "CONNECTED", "client_connected") in m.edges
    assert ("CONNECTED", "IDLE", "client_disconnected") in m.edges
    assert ("INTERRUPT", "LISTENING", "ready_after_interrupt") in m.edges
    assert "↻ filler_due / play_immediate_filler (internal)" in m.descriptions["THINKING"]
    assert not [e for e in m.edges if e[0] == e[1]]
    assert "%% voice_turn v1 (" + shipped.version_hash + ")" in text


def test_mermaid_user_chart_with_confirming(nested: CompiledChart) -> None:
    text = to_mermaid(nested)
    m = read_mermaid(text)
    assert m.last_block["CONFIRMING"] == "CONNECTED"
    assert m.last_block["READING_BACK"] == m.last_block["AWAITING"] == "CONFIRMING"
    assert m.last_block["DONE"] is None
    # A channel without an icon is `name: value`, its colon escaped for Mermaid.
    assert "READING_BACK : 🎤 gated · 🔈 streaming · indicator#58; lit" in text
    assert "🎤 closed · 🔈 stopped · indicator: dark" in m.descriptions["DONE"]
    assert ("AWAITING", "DONE", "answer [has_text and has_final_text] / cancel_filler") in m.edges
    assert ("AWAITING", "CONFIRMING", "answer [not has_text]") in m.edges
    assert ("AWAITING", "LISTENING", "answer [else]") in m.edges
    assert ("CONNECTED", "DONE", "hang_up") in m.edges
    assert ("DONE", "[*]", "") in m.edges
    assert m.notes["CONFIRMING"] == [
        "The order is read back; the caller says yes or no.",
        "🎤 open · 🔈 stopped · indicator: lit",
        "exit / cancel_filler",
        "after 4s → nudge",
        "after 10s → give_up",
        "↻ nudge / play_immediate_filler (internal)",
        "⤷ barge_in / cancel_tts → AWAITING",
    ]
    assert "IDLE : Nobody on the line#58; waiting." in text


def test_mermaid_escapes_and_keywords(edge_cases: CompiledChart) -> None:
    text = to_mermaid(edge_cases)
    m = read_mermaid(text)
    # State names Mermaid reads as keywords are aliased and shown by their name.
    assert mermaid_id(m, "note") == "note_state"
    assert mermaid_id(m, "end") == "end_state"
    assert mermaid_id(m, "direction") == "direction_state"
    assert 'state "note" as note_state' in text
    assert "note_state --> end_state : go [has_text and not has_final_text] / cancel_tts, " \
           "cancel_filler" in text
    assert m.descriptions["note_state"][0] == 'A "quote" <i>here</i>; then: a colon'
    assert "🎤 closed · 🔈 stopped · mode: a:b" in m.descriptions["note_state"]
    assert m.notes["end_state"][0] == (
        "end note: 100% {done}; #1 <end> must not close the Mermaid note")
    assert "⤷ again → end" in m.notes["end_state"]           # a compound state to itself
    assert ("note_state", "note_state", "again") in m.edges  # a leaf to itself
    assert ("inner", "inner", "go") in m.edges
    # The chart description only appears in a comment, and cannot start a directive.
    assert "%%{" not in text
    assert "<b>tags</b>" not in text


# --------------------------------------------------------------------------- DOT and SVG


def run_dot(dot_binary: str, source: str, fmt: str = "svg") -> str:
    proc = subprocess.run([dot_binary, f"-T{fmt}"], input=source.encode(), capture_output=True,
                          timeout=60, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    complaints = [line for line in stderr.splitlines() if "fontconfig" not in line.lower()]
    assert complaints == [], f"dot complained about our DOT: {complaints}"
    return proc.stdout.decode()


@pytest.mark.parametrize("path", ALL_CHARTS, ids=lambda p: p.stem)
def test_dot_is_accepted_by_graphviz_without_warnings(path: Path, dot_binary: str) -> None:
    chart = load_chart(path)
    svg = run_dot(dot_binary, to_dot(chart))
    titles = set(re.findall(r"<title>(.*?)</title>", svg))
    for name, state in chart.states.items():
        assert (f"cluster_{name}" if state.compound else name) in titles, name
    # Each transition is one labelled edge.
    labelled = re.findall(r"^  \S+ -> \S+ \[.*label=", to_dot(chart), re.M)
    assert len(labelled) == len(chart.transitions)


def test_dot_shipped_chart(shipped: CompiledChart) -> None:
    dot = to_dot(shipped)
    assert "compound=true" in dot
    assert 'subgraph "cluster_CONNECTED" {' in dot
    assert '"::initial" [shape=point' in dot
    assert '"::initial" -> "IDLE";' in dot
    assert '"CONNECTED::initial" [shape=point' in dot
    assert '"CONNECTED::initial" -> "LISTENING";' in dot
    # Into and out of the compound state: clipped at the cluster's border.
    assert ('"IDLE" -> "CONNECTED::initial" [label="client_connected", '
            'lhead="cluster_CONNECTED"];') in dot
    assert ('"CONNECTED::initial" -> "IDLE" [label="client_disconnected", '
            'ltail="cluster_CONNECTED"];') in dot
    # A parent's transition into its own child starts at the parent's anchor.
    assert '"CONNECTED::self" -> "LISTENING" [label="error / cancel_tts, cancel_filler"];' in dot
    assert '"LISTENING" -> "THINKING" [label="stt_final [has_final_text]"];' in dot
    assert '"THINKING" -> "LISTENING" [label="response_ready [else]"];' in dot
    # Internal transition: a dashed self-loop.
    assert re.search(r'"THINKING" -> "THINKING" \[label="  filler_due / play_immediate_filler '
                     r'\(internal\)", style="dashed"', dot)
    # State labels carry contract, entry, invoke and timers.
    thinking = re.search(r'^\s*"THINKING" \[.*$', dot, re.M)
    assert thinking is not None
    for text in ("<B>THINKING</B>", "🎤 gated · 🔈 stopped", "entry / cancel_previous_filler",
                 "invoke respond", "after 600ms → filler_due"):
        assert text in thinking.group(0), text


def test_dot_escapes_html_and_quotes(edge_cases: CompiledChart, dot_binary: str) -> None:
    dot = to_dot(edge_cases)
    assert "&lt;i&gt;here&lt;/i&gt;" in dot
    assert "&quot;quote&quot;" in dot
    assert "&lt;b&gt;tags&lt;/b&gt; &quot;quotes&quot; &amp; amps" in dot
    assert '"end::self" -> "end::self" [label="again"];' in dot
    svg = run_dot(dot_binary, dot)
    assert "&lt;i&gt;here&lt;/i&gt;" in svg


def test_svg_of_the_shipped_chart(shipped: CompiledChart, dot_binary: str,
                                  tmp_path: Path) -> None:
    assert graphviz_available()
    svg = to_svg(shipped)
    assert "<svg" in svg
    for name in shipped.states:
        assert name in svg
    assert "🎤 gated · 🔈 streaming" in svg
    assert "filler_due / play_immediate_filler (internal)" in svg
    out = tmp_path / "voice_turn.svg"
    out.write_text(svg, encoding="utf-8")
    assert render(shipped, "svg") == svg


def test_svg_of_a_user_chart(nested: CompiledChart, dot_binary: str) -> None:
    svg = to_svg(nested)
    assert "<svg" in svg
    for name in ("CONFIRMING", "READING_BACK", "AWAITING", "DONE"):
        assert name in svg
    assert "indicator: lit" in svg


def test_svg_without_graphviz_says_what_to_install(
        shipped: CompiledChart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not graphviz_available()
    with pytest.raises(RenderUnavailable, match="graphviz") as info:
        to_svg(shipped)
    assert isinstance(info.value, RuntimeError)
    assert "apt-get install graphviz" in str(info.value)
    # Mermaid, DOT and JSON need nothing installed.
    for fmt in ("mermaid", "dot", "json"):
        assert render(shipped, fmt)


# --------------------------------------------------------------------------- JSON and render()


def test_json_of_the_shipped_chart(shipped: CompiledChart) -> None:
    data = json.loads(render(shipped, "json"))
    assert data == to_json(shipped)
    assert (data["name"], data["version"], data["initial"]) == ("voice_turn", 1, "IDLE")
    assert data["version_hash"] == shipped.version_hash
    assert data["channels"] == {"microphone": ["open", "gated", "closed"],
                                "playback": ["stopped", "streaming"]}
    assert data["states"]["CONNECTED"]["children"] == [
        "LISTENING", "THINKING", "SPEAKING", "INTERRUPT"]
    assert data["states"]["CONNECTED"]["initial"] == "LISTENING"
    assert data["states"]["LISTENING"] == {
        "parent": "CONNECTED", "children": [], "initial": None, "final": False,
        "contract": {"microphone": "open", "playback": "stopped"}, "turn": {},
        "enter": ["cancel_tts", "cancel_filler"], "exit": [], "invoke": [], "after": [],
        "description": "The user has the floor; speech goes to STT.",
    }
    assert data["states"]["THINKING"]["invoke"] == ["respond"]
    assert data["states"]["THINKING"]["after"] == [
        {"delay": "600ms", "delay_ms": 600.0, "event": "filler_due"},
        {"delay": "20s", "delay_ms": 20000.0, "event": "response_timeout"}]
    assert data["events"]["stt_partial"]["unhandled"] == "ignore"
    assert data["events"]["stt_final"]["payload"] == {"text": "str", "is_final": "bool"}
    assert data["events"]["client_connected"]["unhandled"] == "error"
    assert data["transitions"] == shipped.table()
    assert data["transitions"][4] == {"source": "THINKING", "event": "filler_due",
                                      "target": None, "guards": [],
                                      "do": ["play_immediate_filler"], "order": 0}


def test_json_of_a_user_chart(nested: CompiledChart) -> None:
    data = to_json(nested)
    assert data["states"]["DONE"]["final"] is True
    assert data["states"]["AWAITING"]["parent"] == "CONFIRMING"
    assert data["transitions"][8]["guards"] == ["has_text", "has_final_text"]
    assert data["transitions"][9]["guards"] == ["not has_text"]
    json.dumps(data)  # plain data all the way down


def test_render_dispatches_and_rejects_unknown_formats(shipped: CompiledChart) -> None:
    assert FORMATS == ("mermaid", "dot", "svg", "json")
    assert render(shipped, "mermaid") == to_mermaid(shipped)
    assert render(shipped, "dot") == to_dot(shipped)
    assert render(shipped, "json").endswith("}\n")
    with pytest.raises(ValueError, match="unknown format 'png'"):
        render(shipped, "png")  # type: ignore[arg-type]


def test_rendering_is_deterministic() -> None:
    a, b = load_chart(SHIPPED), load_chart(SHIPPED)
    for fmt in ("mermaid", "dot", "json"):
        assert render(a, fmt) == render(b, fmt)
