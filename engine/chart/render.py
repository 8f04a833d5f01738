"""Draw a compiled chart: Mermaid (always), Graphviz DOT/SVG (when `dot` exists), JSON.

A chart is only as good as a person's ability to read it, so every format
carries the same information: nesting, each state's contract, its `enter` /
`exit` effects, its activities (`invoke`) and timers (`after`), and every
transition with its guards and `do` effects. All renderers work from the
`CompiledChart` (the validated truth), never from raw YAML.

Choices a reader of the diagrams should know about:

- **Internal transitions** (no `target`: run `do`, exit and enter nothing).
  In Mermaid they are listed inside the state, UML-style, as a description
  line ``↻ filler_due / play_immediate_filler (internal)``, not drawn as a
  self-loop: in UML a self-loop is an *external* self-transition (exit and
  re-enter), which is not what happens. In DOT they are dashed self-loops
  labelled ``(internal)``; on a compound state the loop sits on the cluster's
  hollow anchor point.
- **Composite states in Mermaid** (checked against Mermaid 11): Mermaid
  rejects description lines on a composite state and does not make room for
  a tall composite label, so a composite shows only its name and what it
  owns (contract, entry, timers, ...) goes in a ``note right of`` it. A
  composite's own transition into itself or one of its descendants cannot be
  drawn as a Mermaid edge either; it is listed in that note as
  ``⤷ error / cancel_tts → LISTENING``. Mermaid puts a state in the block
  that mentions it *last*, so each block writes its edges before its nested
  blocks; and Mermaid shows a state's first description line as its title, so
  that line is the state's name.
- **Priority.** Alternatives for one event are tried in chart order; an
  unguarded alternative after a guarded one is labelled ``[else]``.
- **Compound states in DOT** are ``subgraph cluster_X``. Each holds an
  initial pseudo-state (a small filled point) that also serves as the anchor
  for edges into and out of the compound state (``lhead`` / ``ltail`` clip
  them at the cluster border, ``compound=true``). A compound state's own
  transition into one of its descendants starts at a small hollow anchor in
  the cluster, since an edge cannot start at the border of a cluster it ends in.
- **Escaping.** Mermaid's lexer ends a label at ``:`` or ``;`` and treats
  ``#``, ``%%``, braces and angle brackets specially, so those characters are
  written as Mermaid entity codes (``#58;`` …), which Mermaid decodes on
  display. State names Mermaid reads as keywords (``note``, ``end``,
  ``direction``, ...) get an alias id and keep their name as the label.
  DOT labels are HTML-escaped.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

from engine.chart.compiler import CompiledChart, StateInfo, TransitionRow, set_text
from engine.chart.data import defaults

Format = Literal["mermaid", "dot", "svg", "json"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot", "svg", "json")

CHANNEL_ICONS: dict[str, str] = {"microphone": "🎤", "playback": "🔈"}
"""Channels with a well-known meaning get an icon; others are shown as `name: value`."""

_DESCRIPTION_WIDTH = 48


class RenderUnavailable(RuntimeError):
    """The requested format needs a tool that is not installed."""


class RenderFailed(RuntimeError):
    """An external renderer rejected its input (a bug in this module)."""


# --------------------------------------------------------------------------- shared text


def contract_text(chart: CompiledChart, state: StateInfo, sep: str = " · ") -> str:
    """`🎤 open · 🔈 streaming`, channels in the chart's declared order."""
    parts: list[str] = []
    for channel in chart.channels:
        value = state.contract.get(channel)
        if value is None:
            continue
        icon = CHANNEL_ICONS.get(channel)
        parts.append(f"{icon} {value}" if icon else f"{channel}: {value}")
    return sep.join(parts)


def guard_text(row: TransitionRow) -> str:
    """`[a and not b]`, `[else]` for an unguarded fallback alternative, or ''."""
    if row.guards:
        return "[" + " and ".join(str(g) for g in row.guards) + "]"
    if row.order > 0:
        return "[else]"
    return ""


def transition_label(row: TransitionRow) -> str:
    """`event [guard] / do1, do2`: the usual statechart edge label."""
    label = row.event
    guard = guard_text(row)
    if guard:
        label += f" {guard}"
    if row.do:
        label += " / " + ", ".join(row.do)
    if row.sets:
        label += " · set " + ", ".join(_set_text(name, how) for name, how in row.sets)
    return label


def _set_text(name: str, how: Any) -> str:
    """`size ← people` (from the payload), `tries += 1`, `confirmed = true`."""
    shown = set_text(how)
    if isinstance(shown, dict) and "from" in shown:
        return f"{name} ← {shown['from']}"
    if isinstance(shown, dict) and "add" in shown:
        return f"{name} += {shown['add']}"
    return f"{name} = {json.dumps(shown)}"


def data_text(chart: CompiledChart) -> list[str]:
    """The chart's `data:` fields, one line each: `party_size: int = 0`."""
    return [f"{name}: {f.type} = {json.dumps(value)}"
            for (name, f), value in zip(chart.data.items(), defaults(chart.data).values(),
                                        strict=True)]


def _behaviour_lines(chart: CompiledChart, state: StateInfo) -> list[str]:
    """What a state owns, one line each: contract, entry, exit, invoke, timers."""
    lines: list[str] = []
    contract = contract_text(chart, state)
    if contract:
        lines.append(contract)
    if not state.turn.empty:
        lines.append("🗣️ " + state.turn.text())
    if state.parallel:
        lines.append("‖ parallel: " + ", ".join(state.children) + " run at once")
    if state.history is not None:
        star = "H*" if state.history == "deep" else "H"
        lines.append(f"{star} {state.history} history: re-entry resumes the last child")
    if state.enter:
        lines.append("entry / " + ", ".join(state.enter))
    if state.exit:
        lines.append("exit / " + ", ".join(state.exit))
    if state.invoke:
        lines.append("invoke " + ", ".join(state.invoke))
    lines.extend(f"after {t.delay} → {t.event}" for t in state.after)
    lines.extend(_dialogue_lines(chart, state))
    return lines


def _dialogue_lines(chart: CompiledChart, state: StateInfo) -> list[str]:
    """A state's own `prompt:` and `tools:` (issue 16 §4); a child shows what it adds."""
    parent = chart.states[state.parent] if state.parent is not None else None
    lines: list[str] = []
    if state.prompt is not None and (parent is None or parent.prompt != state.prompt):
        wrapped = _wrap(state.prompt)
        lines.append("💬 " + wrapped[0])
        lines.extend(wrapped[1:])
    own = [t for t in state.tools if parent is None or t not in parent.tools]
    if own:
        lines.append("🛠️ tools: " + ", ".join(own))
    return lines


def _internal_rows(chart: CompiledChart, name: str) -> list[TransitionRow]:
    return [r for r in chart.transitions if r.source == name and r.internal]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), _DESCRIPTION_WIDTH, break_on_hyphens=False) or [""]


def _roots(chart: CompiledChart) -> list[StateInfo]:
    return [s for s in chart.states.values() if s.parent is None]


def _common_scope(chart: CompiledChart, a: str, b: str) -> str | None:
    """The innermost compound state that strictly contains both `a` and `b` (None: top)."""
    above_a = chart.ancestors(a)
    above_b = set(chart.ancestors(b))
    for candidate in above_a:
        if candidate in above_b:
            return candidate
    return None


def _into_itself(chart: CompiledChart, row: TransitionRow) -> bool:
    """A compound state's transition to itself or a descendant: drawn from its own anchor."""
    if row.target is None or not chart.states[row.source].compound:
        return False
    return row.target == row.source or row.source in chart.ancestors(row.target)


# --------------------------------------------------------------------------- Mermaid

_MERMAID_ESCAPES = {
    "#": "#35;", ":": "#58;", ";": "#59;", "%": "#37;", "{": "#123;", "}": "#125;",
    "<": "#60;", ">": "#62;", '"': "#34;", "\\": "#92;",
}
_MERMAID_RESERVED = frozenset({
    "state", "note", "end", "direction", "classdef", "class", "style", "click", "as",
    "left", "right", "of", "hide", "default", "root", "tb", "bt", "lr", "rl",
})


def mermaid_escape(text: str) -> str:
    """Make free text safe inside a Mermaid label (one line, entity-coded)."""
    flat = " ".join(text.split())
    escaped = "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in flat)
    return escaped.replace("end note", "end#32;note")  # would close a note early


def _mermaid_ids(chart: CompiledChart) -> dict[str, str]:
    """State name → Mermaid id; names Mermaid would read as keywords get an alias."""
    ids: dict[str, str] = {}
    taken = set(chart.states)
    for name in chart.states:
        if name.lower() in _MERMAID_RESERVED:
            alias = f"{name}_state"
            while alias in taken:
                alias += "_"
            taken.add(alias)
            ids[name] = alias
        else:
            ids[name] = name
    return ids


def to_mermaid(chart: CompiledChart) -> str:
    """Mermaid `stateDiagram-v2` text: nested blocks, descriptions, labelled edges."""
    ids = _mermaid_ids(chart)
    edges_in: dict[str | None, list[TransitionRow]] = {}
    for row in chart.transitions:
        if row.target is not None and not _into_itself(chart, row):
            edges_in.setdefault(_common_scope(chart, row.source, row.target), []).append(row)

    out = ["---", f"title: {chart.name} v{chart.version}", "---", "stateDiagram-v2",
           f"    %% {chart.name} v{chart.version} ({chart.version_hash}), drawn by turnchart"]
    if chart.spec.description:
        out.append(f"    %% {mermaid_escape(chart.spec.description)}")
    if chart.data:
        out.append("    %% data: " + mermaid_escape("; ".join(data_text(chart))))

    def emit_scope(scope: str | None, members: Sequence[StateInfo], indent: str) -> None:
        initial = chart.initial if scope is None else chart.states[scope].initial
        if initial is not None:
            out.append(f"{indent}[*] --> {ids[initial]}")
        # Edges come before the nested blocks: Mermaid puts a state in the block
        # that mentions it last, so a nested block must have the final word.
        for row in edges_in.get(scope, ()):
            out.append(f"{indent}{ids[row.source]} --> {ids[row.target or row.source]} : "
                       f"{mermaid_escape(transition_label(row))}")
        parallel = scope is not None and chart.states[scope].parallel
        for n, state in enumerate(members):
            if parallel and n:
                out.append(f"{indent}--")   # Mermaid's concurrency separator: the next region
            sid = ids[state.name]
            lines = _mermaid_description(chart, state)
            if state.compound:
                # Mermaid rejects description lines on a composite state and does
                # not make room for a tall label, so what it owns goes in a note.
                out.append(f'{indent}state "<b>{mermaid_escape(state.name)}</b>" as {sid} {{')
                emit_scope(state.name, [chart.states[c] for c in state.children], indent + "    ")
                out.append(f"{indent}}}")
                if lines:
                    out.append(f"{indent}note right of {sid}")
                    out.extend(f"{indent}    {line}" for line in lines)
                    out.append(f"{indent}end note")
                lines = []
            elif sid != state.name or not lines:
                out.append(f'{indent}state "{mermaid_escape(state.name)}" as {sid}')
            if lines and sid == state.name:
                # Mermaid 11 shows a state's first description line as its title
                # (an aliased state already has its name as that title).
                lines = [mermaid_escape(state.name), *lines]
            for line in lines:
                out.append(f"{indent}{sid} : {line}")
            if state.final:
                out.append(f"{indent}{sid} --> [*]")

    emit_scope(None, _roots(chart), "    ")
    return "\n".join(out) + "\n"


def _mermaid_description(chart: CompiledChart, state: StateInfo) -> list[str]:
    """Description lines of a state (a note's lines for a composite state)."""
    lines: list[str] = []
    if state.description:
        # Mermaid wraps notes itself but sizes a state box to its longest line.
        lines.extend([state.description] if state.compound else _wrap(state.description))
    lines.extend(_behaviour_lines(chart, state))
    lines.extend(f"↻ {transition_label(r)} (internal)" for r in _internal_rows(chart, state.name))
    # Mermaid cannot draw an edge from a composite state to itself or into itself.
    lines.extend(f"⤷ {transition_label(r)} → {r.target}" for r in chart.transitions
                 if r.source == state.name and _into_itself(chart, r))
    return [mermaid_escape(line) for line in lines]


# --------------------------------------------------------------------------- DOT

_FONT = "Helvetica"
_STATE_FILL = "#f5f8ff"
_CLUSTER_FILL = "#fbfbf4"
_FINAL_FILL = "#eeeeee"


def _q(name: str) -> str:
    """A DOT quoted id."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(text: str) -> str:
    """Escape text for DOT's HTML-like labels (`&`, `<`, `>` and quotes would end them)."""
    return html.escape(" ".join(text.split()), quote=True)


def _html_table(title: str, description: str | None, lines: Sequence[str]) -> str:
    """The label of a state: bold name, italic description, then one line per behaviour."""
    rows = [f'<TR><TD ALIGN="CENTER"><B>{_h(title)}</B></TD></TR>']
    if description:
        text = "<BR ALIGN=\"CENTER\"/>".join(_h(part) for part in _wrap(description))
        rows.append(f'<TR><TD ALIGN="CENTER"><FONT POINT-SIZE="9" COLOR="#555555"><I>{text}'
                    f"</I></FONT></TD></TR>")
    for i, line in enumerate(lines):
        sides = ' SIDES="T"' if i == 0 else ""
        border = ' BORDER="1"' if i == 0 else ""
        rows.append(f'<TR><TD ALIGN="LEFT"{border}{sides} COLOR="#999999">'
                    f'<FONT POINT-SIZE="10">{_h(line)}</FONT></TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")


def state_element_id(name: str) -> str:
    """The SVG id of a state's group (`state-THINKING`), stable for pages that
    highlight live states (the inspector); compound states' clusters get one too."""
    return f"state-{name}"


def _anchor(name: str) -> str:
    return f"{name}::initial"


def _own_anchor(name: str) -> str:
    return f"{name}::self"


def to_dot(chart: CompiledChart) -> str:
    """Graphviz DOT text: clusters for compound states, HTML labels, labelled edges."""
    title = f"<B>{_h(chart.name)}</B> v{chart.version} · {chart.version_hash}"
    if chart.spec.description:
        title += '<BR/><FONT POINT-SIZE="9"><I>' + _h(chart.spec.description) + "</I></FONT>"
    if chart.data:
        title += '<BR/><FONT POINT-SIZE="9">data: ' + _h(" · ".join(data_text(chart))) + "</FONT>"
    out = [
        f"digraph {_q(chart.name)} {{",
        f'  graph [compound=true, rankdir=TB, nodesep=0.5, ranksep=0.55, fontname="{_FONT}",'
        f' fontsize=11, labelloc=t, label=<{title}>, newrank=true];',
        f'  node [fontname="{_FONT}", fontsize=11];',
        f'  edge [fontname="{_FONT}", fontsize=9, color="#444444", arrowsize=0.7];',
        '  "::initial" [shape=point, width=0.15, style=filled, fillcolor=black, label=""];',
    ]
    # Compound states whose own transitions lead into their descendants need an anchor.
    self_targets = {r.source for r in chart.transitions if _into_itself(chart, r)}
    self_internal = {r.source for r in chart.transitions
                     if r.internal and chart.states[r.source].compound}

    def emit(state: StateInfo, indent: str) -> None:
        name = state.name
        label = _html_table(name, state.description, _behaviour_lines(chart, state))
        if state.compound:
            out.append(f"{indent}subgraph {_q('cluster_' + name)} {{")
            inner = indent + "  "
            parent = chart.states[state.parent] if state.parent is not None else None
            region = parent is not None and parent.parallel
            # A parallel state's regions are drawn dashed inside it (UML's dashed divider).
            style = "dashed,rounded,filled" if region else "rounded,filled"
            kind = "state compound parallel" if state.parallel else "state compound"
            out.append(f'{inner}label={label}; labeljust=l; style="{style}";'
                       f' fillcolor="{_CLUSTER_FILL}"; color="#777777"; penwidth=1.2;'
                       f' id={_q(state_element_id(name))}; class="{kind}";')
            # A parallel state has no initial child: its anchor only clips edges.
            look = "style=invis" if state.parallel else "style=filled, fillcolor=black"
            out.append(f"{inner}{_q(_anchor(name))} [shape=point, width=0.1, {look},"
                       f' label="", tooltip={_q(name + " initial")}];')
            if state.history is not None:
                star = "H*" if state.history == "deep" else "H"
                out.append(f'{inner}{_q(_history_node(name))} [shape=circle, width=0.25,'
                           f' fixedsize=true, label="{star}", fontsize=9,'
                           f" tooltip={_q(name + ' ' + state.history + ' history')}];")
            if name in self_targets or name in self_internal:
                out.append(f'{inner}{_q(_own_anchor(name))} [shape=circle, width=0.12,'
                           f' fixedsize=true, label="", color="#777777",'
                           f" tooltip={_q(name + ' transitions')}];")
            for child in state.children:
                emit(chart.states[child], inner)
            out.append(f"{indent}}}")
        else:
            fill = _FINAL_FILL if state.final else _STATE_FILL
            peripheries = 2 if state.final else 1
            out.append(f'{indent}{_q(name)} [shape=box, style="rounded,filled",'
                       f' fillcolor="{fill}", color="#335588", peripheries={peripheries},'
                       f" margin=\"0.12,0.06\", id={_q(state_element_id(name))},"
                       f' class="state", label={label}];')

    for root in _roots(chart):
        emit(root, "  ")

    # Initial arrows: chart-level, then each compound state's initial child.
    edges: list[tuple[str, str, dict[str, str]]] = [("::initial", chart.initial, {})]
    edges += [(_anchor(s.name), s.initial, {}) for s in chart.states.values()
              if s.compound and s.initial is not None]
    # History: with nothing recorded yet it enters the initial child (dotted).
    edges += [(_history_node(s.name), s.initial, {"style": "dotted", "color": "#777777"})
              for s in chart.states.values() if s.history is not None and s.initial is not None]
    # Final states point at a final pseudo-state.
    for state in chart.states.values():
        if state.final:
            final = f"{state.name}::final"
            out.append(f"  {_q(final)} [shape=doublecircle, width=0.12, fixedsize=true,"
                       ' style=filled, fillcolor=black, label=""];')
            edges.append((state.name, final, {}))
    for row in chart.transitions:
        label = transition_label(row)
        if row.target is None:
            node = _own_anchor(row.source) if chart.states[row.source].compound else row.source
            edges.append((node, node, {"label": f"  {label} (internal)", "style": "dashed",
                                       "color": "#777777"}))
        elif _into_itself(chart, row):
            head = _own_anchor(row.source) if row.target == row.source else row.target
            edges.append((_own_anchor(row.source), head, {"label": label}))
        elif _resumes(chart, row):
            # Into a state with history from outside: the edge ends at its H node.
            edges.append((row.source, _history_node(row.target), {"label": label}))
        else:
            edges.append((row.source, row.target, {"label": label}))
    for tail, head, attrs in edges:
        out.append("  " + _dot_edge(chart, tail, head, attrs))
    out.append("}")
    return "\n".join(out) + "\n"


def _history_node(name: str) -> str:
    return f"{name}::history"


def _resumes(chart: CompiledChart, row: TransitionRow) -> bool:
    """A transition into a state with `history` from outside it (it resumes)."""
    target = row.target
    return (target is not None and chart.states[target].history is not None
            and row.source != target and target not in chart.ancestors(row.source))


def _dot_edge(chart: CompiledChart, tail: str, head: str, attrs: dict[str, str]) -> str:
    """One edge; a compound end becomes its anchor node, clipped at the cluster border.

    `tail`/`head` may also be pseudo-state ids (with `::`), which are used as they are.
    """
    attrs = dict(attrs)
    states = chart.states
    if head in states and states[head].compound:
        if tail not in states or head not in chart.ancestors(tail):
            attrs["lhead"] = "cluster_" + head
        head = _anchor(head)
    if tail in states and states[tail].compound:
        if head not in states or tail not in chart.ancestors(head):
            attrs["ltail"] = "cluster_" + tail
        tail = _anchor(tail)
    attr_text = ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())
    return f"{_q(tail)} -> {_q(head)}" + (f" [{attr_text}]" if attr_text else "") + ";"


# --------------------------------------------------------------------------- SVG


def graphviz_available() -> bool:
    """True when Graphviz's `dot` binary is on PATH (SVG rendering needs it)."""
    return shutil.which("dot") is not None


def to_svg(chart: CompiledChart, timeout_s: float = 30.0) -> str:
    """Run `dot -Tsvg` on `to_dot(chart)`; the only renderer with an outside dependency."""
    dot = shutil.which("dot")
    if dot is None:
        raise RenderUnavailable(
            "SVG rendering needs Graphviz's `dot` program, which is not on PATH; install "
            "graphviz (Debian/Ubuntu: apt-get install graphviz, macOS: brew install graphviz), "
            "or render --format mermaid / dot instead")
    proc = subprocess.run([dot, "-Tsvg"], input=to_dot(chart).encode("utf-8"),
                          capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RenderFailed(f"dot -Tsvg failed ({proc.returncode}): "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout.decode("utf-8")


# --------------------------------------------------------------------------- JSON


def to_json(chart: CompiledChart) -> dict[str, Any]:
    """The compiled chart as plain data, for tools that draw or check charts themselves."""
    states = {
        name: {
            "parent": s.parent, "children": list(s.children), "initial": s.initial,
            "final": s.final, "contract": dict(s.contract), "turn": s.turn.as_dict(),
            "enter": list(s.enter),
            "exit": list(s.exit), "invoke": list(s.invoke),
            "after": [{"delay": t.delay, "delay_ms": t.delay_ms, "event": t.event}
                      for t in s.after],
            "description": s.description,
            # issue 16 keys, only where a state uses them
            **({"parallel": True} if s.parallel else {}),
            **({"history": s.history} if s.history is not None else {}),
            **({"prompt": s.prompt} if s.prompt is not None else {}),
            **({"tools": list(s.tools)} if s.tools else {}),
        }
        for name, s in chart.states.items()
    }
    events = {
        name: {"payload": dict(e.payload), "unhandled": e.unhandled, "description": e.description}
        for name, e in chart.events.items()
    }
    return {
        "name": chart.name, "version": chart.version, "version_hash": chart.version_hash,
        "initial": chart.initial,
        "channels": {k: list(v) for k, v in chart.channels.items()},
        "states": states, "events": events, "transitions": chart.table(),
        **({"data": {name: {"type": f.type, "default": value, "description": f.description}
                     for (name, f), value in zip(chart.data.items(),
                                                 defaults(chart.data).values(), strict=True)}}
           if chart.data else {}),
    }


def render(chart: CompiledChart, fmt: Format) -> str:
    """Render `chart` in one of `FORMATS` (JSON pretty-printed)."""
    if fmt == "mermaid":
        return to_mermaid(chart)
    if fmt == "dot":
        return to_dot(chart)
    if fmt == "svg":
        return to_svg(chart)
    if fmt == "json":
        return json.dumps(to_json(chart), indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
