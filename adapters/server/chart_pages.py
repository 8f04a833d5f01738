"""HTML for `/charts` and `/charts/{name}`: the diagram, the states and events
tables, the live versions and the latest errors.

Plain server-side HTML, no JavaScript and nothing from the network: the page
must work on a machine with no internet. The diagram is inline SVG when
graphviz is installed, else the Mermaid source. A rejected edit's errors come
first on the page; everything below them is the version that runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from engine.chart.catalog import ChartEntry, VersionUse
from engine.chart.compiler import CompiledChart
from engine.chart.render import RenderUnavailable, to_mermaid, to_svg

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:.95em}
.errors{background:#fff0f0;border:2px solid #c33;padding:.5rem 1rem;margin:1rem 0}
.errors h2{color:#a00;margin:.3rem 0}.errors li{margin:.2rem 0}
.diagram svg{max-width:100%;height:auto}pre{background:#f7f7f7;padding:1rem;overflow:auto}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>{body}</body></html>")


def _live(entry: ChartEntry, uses: Iterable[VersionUse]) -> str:
    """`v2 · 1a2b… (current): 3 sessions<br>v1 · 9f8e…: 1 session`."""
    lines = []
    for v in entry.live_versions(uses):
        role = " (current)" if v.current else ""
        lines.append(f"v{v.version} · <code>{escape(v.version_hash)}</code>{role}: "
                     f"{v.sessions} session{'' if v.sessions == 1 else 's'}")
    return "<br>".join(lines) or "—"


def index_page(entries: list[ChartEntry], uses: Iterable[VersionUse] = ()) -> str:
    uses = list(uses)
    rows = []
    for e in entries:
        status = "ok" if not e.errors else f"{len(e.errors)} error(s)"
        version = (f"v{e.chart.version} · <code>{escape(e.chart.version_hash)}</code>"
                   if e.chart else "—")
        rows.append(f"<tr><td><a href='/charts/{escape(e.name)}'>{escape(e.name)}</a></td>"
                    f"<td>{version}</td><td>{_live(e, uses)}</td><td>{status}</td>"
                    f"<td><code>{escape(e.path)}</code></td></tr>")
    return _page("turnchart charts", "<h1>Charts</h1><table><tr><th>chart</th><th>version</th>"
                 "<th>live versions</th><th>status</th><th>file</th></tr>"
                 + "".join(rows) + "</table>")


def _diagram(chart: CompiledChart) -> str:
    try:
        svg = to_svg(chart)
        start = svg.find("<svg")
        return f"<div class=diagram>{svg[start:] if start >= 0 else svg}</div>"
    except RenderUnavailable:
        return (f"<p>Install graphviz for a drawn diagram. Mermaid source:</p>"
                f"<pre>{escape(to_mermaid(chart))}</pre>")


def _errors(entry: ChartEntry) -> str:
    if not entry.errors:
        return ""
    items = "".join(f"<li><code>{escape(str(e))}</code></li>" for e in entry.errors)
    if entry.chart is not None:
        title = "The last edit of this chart was rejected"
        note = (f"<p>{len(entry.errors)} error(s) in <code>{escape(entry.path)}</code>. Nothing "
                f"changed: v{entry.chart.version} <code>{escape(entry.chart.version_hash)}"
                f"</code> keeps running and is what this page shows. Fix the file and save it "
                f"again.</p>")
    else:
        title = "This chart has errors"
        note = (f"<p>{len(entry.errors)} error(s) in <code>{escape(entry.path)}</code>; no "
                "version of it runs.</p>")
    return (f"<div class=errors id=errors><h2>⚠️ {title}</h2>{note}<ul>{items}</ul></div>")


def _versions(entry: ChartEntry, uses: Iterable[VersionUse]) -> str:
    rows = []
    for v in entry.live_versions(uses):
        role = "current: new sessions start on it" if v.current else \
            "older: its sessions finish on it"
        rows.append(f"<tr><td>v{v.version}</td><td><code>{escape(v.version_hash)}</code></td>"
                    f"<td>{v.sessions}</td><td>{role}</td></tr>")
    return ("<h2>Live versions</h2><table><tr><th>version</th><th>hash</th><th>sessions</th>"
            "<th></th></tr>" + "".join(rows) + "</table>")


def _dialogue_cell(prompt: str | None, tools: tuple[str, ...]) -> str:
    """A state's prompt and tools (issue 16 §4), inherited ones included; "—" for none."""
    parts = [f"💬 {escape(prompt)}"] if prompt else []
    if tools:
        parts.append("🛠️ " + ", ".join(f"<code>{escape(t)}</code>" for t in tools))
    return "<br>".join(parts) or "—"


def chart_page(entry: ChartEntry, uses: Iterable[VersionUse] = ()) -> str:
    chart = entry.chart
    if chart is None:
        return _page(entry.name, f"<h1>{escape(entry.name)}</h1>{_errors(entry)}")
    states: list[str] = []
    for info in chart.states.values():
        contract = " · ".join(f"{k}: {v}" for k, v in info.contract.items())
        timers = ", ".join(f"{t.delay} → {t.event}" for t in info.after)
        rows = chart.rows_from(info.name) if not info.compound else ()
        handled = ", ".join(sorted({r.event for r in rows}))
        states.append(
            f"<tr><td>{'&nbsp;' * 4 * info.depth}<b>{escape(info.name)}</b></td>"
            f"<td>{escape(contract)}</td><td>{escape(info.turn.text())}</td>"
            f"<td>{escape(', '.join(info.enter))}</td>"
            f"<td>{escape(', '.join(info.invoke))}</td><td>{escape(timers)}</td>"
            f"<td>{escape(handled)}</td><td>{_dialogue_cell(info.prompt, info.tools)}</td>"
            f"<td>{escape(info.description or '')}</td></tr>")
    events: list[str] = []
    for name, ev in chart.events.items():
        payload = ", ".join(f"{k}: {v}" for k, v in ev.payload.items())
        events.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(payload)}</td>"
                      f"<td>{ev.unhandled}</td></tr>")
    body = (
        f"<h1>{escape(chart.name)} <small>v{chart.version} · {escape(chart.version_hash)}</small>"
        f"</h1>{_errors(entry)}<p>{escape(chart.spec.description or '')}</p>"
        f"{_versions(entry, uses)}{_diagram(chart)}"
        f"<p>Download: <a href='/charts/{chart.name}.svg'>SVG</a> · "
        f"<a href='/charts/{chart.name}.mmd'>Mermaid</a> · "
        f"<a href='/charts/{chart.name}.json'>JSON</a></p>"
        "<h2>States</h2><table><tr><th>state</th><th>contract</th><th>turn</th><th>enter</th>"
        "<th>invoke</th><th>timers</th><th>events handled</th><th>prompt · tools</th>"
        "<th>description</th></tr>"
        + "".join(states) + "</table><h2>Events</h2><table><tr><th>event</th><th>payload</th>"
        "<th>unhandled</th></tr>" + "".join(events) + "</table>")
    return _page(f"{chart.name} chart", body)
