"""HTML for `/charts/{name}`: the diagram plus the states and events tables.

Plain server-side HTML, no JavaScript and nothing from the network: the page
must work on a machine with no internet. The diagram is inline SVG when
graphviz is installed, else the Mermaid source.
"""

from __future__ import annotations

from html import escape

from engine.catalog import ChartEntry
from engine.compiler import CompiledChart
from engine.render import RenderUnavailable, to_mermaid, to_svg

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:.95em}
.errors{background:#fff0f0;border:1px solid #e99;padding:.5rem 1rem}
.diagram svg{max-width:100%;height:auto}pre{background:#f7f7f7;padding:1rem;overflow:auto}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>{body}</body></html>")


def index_page(entries: list[ChartEntry]) -> str:
    rows = []
    for e in entries:
        status = "ok" if not e.errors else f"{len(e.errors)} error(s)"
        version = escape(e.chart.version_hash) if e.chart else "—"
        rows.append(f"<tr><td><a href='/charts/{escape(e.name)}'>{escape(e.name)}</a></td>"
                    f"<td>{version}</td><td>{status}</td><td><code>{escape(e.path)}</code></td></tr>")
    return _page("turnchart charts", "<h1>Charts</h1><table><tr><th>chart</th><th>version</th>"
                 "<th>status</th><th>file</th></tr>" + "".join(rows) + "</table>")


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
    note = " The last good version keeps running." if entry.chart else ""
    return f"<div class=errors><p>This chart has errors.{note}</p><ul>{items}</ul></div>"


def chart_page(entry: ChartEntry) -> str:
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
            f"<td>{escape(contract)}</td><td>{escape(', '.join(info.enter))}</td>"
            f"<td>{escape(', '.join(info.invoke))}</td><td>{escape(timers)}</td>"
            f"<td>{escape(handled)}</td><td>{escape(info.description or '')}</td></tr>")
    events: list[str] = []
    for name, ev in chart.events.items():
        payload = ", ".join(f"{k}: {v}" for k, v in ev.payload.items())
        events.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(payload)}</td>"
                      f"<td>{ev.unhandled}</td></tr>")
    body = (
        f"<h1>{escape(chart.name)} <small>v{chart.version} · {escape(chart.version_hash)}</small>"
        f"</h1><p>{escape(chart.spec.description or '')}</p>{_errors(entry)}{_diagram(chart)}"
        f"<p>Download: <a href='/charts/{chart.name}.svg'>SVG</a> · "
        f"<a href='/charts/{chart.name}.mmd'>Mermaid</a> · "
        f"<a href='/charts/{chart.name}.json'>JSON</a></p>"
        "<h2>States</h2><table><tr><th>state</th><th>contract</th><th>enter</th>"
        "<th>invoke</th><th>timers</th><th>events handled</th><th>description</th></tr>"
        + "".join(states) + "</table><h2>Events</h2><table><tr><th>event</th><th>payload</th>"
        "<th>unhandled</th></tr>" + "".join(events) + "</table>")
    return _page(f"{chart.name} chart", body)
