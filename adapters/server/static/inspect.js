// turnchart inspector: the chart with every live session on it, and one session's timeline.
// No build step and nothing external: the server sends a snapshot and then its log lines
// over /inspect/events (server-sent events); timelines come from /inspect/sessions/{id}.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const QUIET_MARKS = new Set(["timer_fired", "internal_transition"]);

const model = {
  sessions: new Map(),      // session id → view (fields as in the snapshot)
  charts: [],               // [{name, version, version_hash, svg}]
  chart: null,              // the chart on screen
  mode: "memory",
  clock: {t: 0, at: performance.now()},   // a server t_ms and when the page saw it
  selected: null,
};
const chartData = new Map();   // chart name → Promise<{svg: Element|null, error, parents, turns}>
let shownChart = null;
let timeline = null, timelineAt = 0, fetchTimer = null;

// ----------------------------------------------------------------------------- helpers
function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}
function svgEl(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}
function titled(node, text) { node.appendChild(svgEl("title", {}, text)); return node; }
function serverNow() { return model.clock.t + (performance.now() - model.clock.at); }
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (Math.abs(ms) < 1000) return (ms < 10 ? ms.toFixed(1) : ms.toFixed(0)) + " ms";
  return (ms / 1000).toFixed(2) + " s";
}
function fmtFor(ms) {
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  const s = Math.floor(ms / 1000);
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0") + " min";
}
function contractText(c) {   // words, not emoji: no emoji font, no emoji (empty boxes)
  return Object.entries(c || {}).map(([k, v]) => k + " " + v).join(" · ");
}
function turnText(t) {   // engine/chart/turn.py TurnPolicy.text: only the keys a state sets
  if (!t) return "";
  const parts = [];
  if (t.end) parts.push("end " + t.end);
  if (t.patience_ms !== undefined) parts.push(`patience ${t.patience_ms} ms`);
  const b = t.barge_in || {};
  const barge = [];
  if (b.speaking_ms !== undefined) barge.push(`${b.speaking_ms} ms speaking`);
  if (b.thinking_ms !== undefined) barge.push(`${b.thinking_ms} ms thinking`);
  if (barge.length) parts.push("barge-in " + barge.join(", "));
  return parts.join(" · ");
}
function turnOf(chart, state) {   // the state's turn policy, from the chart's JSON
  const data = chartData.get(chart);
  const turns = data && data.resolved ? data.resolved.turns : null;
  return turns && state ? turns[state] : null;
}
function stateColor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${(h * 47) % 360}, 55%, 86%)`;
}
function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// ----------------------------------------------------------------------------- the model
function emptyView(id) {
  return {session_id: id, live: false, chart: null, version: null, version_hash: null,
          state: null, active: null, configuration: [], contract: {}, since_t_ms: null,
          closed_t_ms: null};
}
function activeOf(view) {  // every active leaf: one, or one per parallel region
  return view.active && view.active.length ? view.active : (view.state ? [view.state] : []);
}
function configurationOfAll(chart, view) {
  const out = [];
  for (const leaf of activeOf(view)) {
    for (const s of configurationOf(chart, leaf)) if (!out.includes(s)) out.push(s);
  }
  return out;
}
function configurationOf(chart, state) {
  const data = chartData.get(chart);
  const parents = data && data.resolved ? data.resolved.parents : null;
  if (!parents) return [state];
  const out = [state];
  for (let p = parents[state]; p; p = parents[p]) out.unshift(p);
  return out;
}
function enter(view, state, rec) {
  if (typeof state !== "string") return;
  view.state = state;
  view.since_t_ms = rec.t_ms;
  const active = rec.data && rec.data.active;
  view.active = Array.isArray(active) ? active : null;   // a chart with parallel regions
  view.configuration = configurationOfAll(view.chart, view);
}
function applyRecord(rec) {  // the page's copy of adapters/server/inspect.py SessionView.apply
  const id = rec.session_id;
  if (!id || id === "-") return;
  let view = model.sessions.get(id);
  if (!view) { view = emptyView(id); model.sessions.set(id, view); }
  const d = rec.data || {};
  switch (rec.event_type) {
    case "session_started":
    case "session_resumed":
      Object.assign(view, {chart: d.chart, version: d.version, version_hash: d.version_hash,
                           live: true, closed_t_ms: null});
      enter(view, d.state, rec);
      break;
    case "state_transition": enter(view, d.to, rec); break;
    case "contract_applied": {
      const contract = {...d};
      delete contract.state;
      delete contract.active;
      if (Array.isArray(d.active)) {
        view.active = d.active;
        view.configuration = configurationOfAll(view.chart, view);
      }
      view.contract = contract;
      break;
    }
    case "worker_state":  // a Redis front-end: the state its worker reported
      if (!view.live) {
        Object.assign(view, {chart: d.chart, version: d.version, version_hash: d.version_hash,
                             live: true, closed_t_ms: null});
      }
      if (d.state !== view.state) enter(view, d.state, rec);
      if (Array.isArray(d.active)) {   // parallel regions: another region may have moved
        view.active = d.active;
        view.configuration = configurationOfAll(view.chart, view);
      }
      view.contract = {microphone: d.microphone, playback: d.playback};
      break;
    case "session_closed":
    case "worker_session_released": view.live = false; view.closed_t_ms = rec.t_ms; break;
  }
}
function orderedSessions() {
  const all = [...model.sessions.values()];
  const live = all.filter((v) => v.live).sort((a, b) => a.session_id.localeCompare(b.session_id));
  const gone = all.filter((v) => !v.live)
    .sort((a, b) => (b.closed_t_ms || 0) - (a.closed_t_ms || 0)).slice(0, 20);
  return [...live, ...gone];
}

// ----------------------------------------------------------------------------- the stream
function setConn(status, text) {
  $("conn").dataset.status = status;
  $("conn").textContent = text;
}
function onSnapshot(snap) {
  model.clock = {t: snap.t_ms, at: performance.now()};
  model.mode = snap.mode;
  for (const chart of snap.charts || []) {   // reloaded while this page was away
    const old = model.charts.find((c) => c.name === chart.name);
    if (old && old.version_hash !== chart.version_hash) {
      chartData.delete(chart.name);
      if (shownChart === chart.name) shownChart = null;
    }
  }
  model.charts = snap.charts || [];
  model.sessions = new Map(snap.sessions.map((v) => [v.session_id, v]));
  $("mode").textContent = snap.mode === "redis" ? "Redis front-end" : "in-memory sessions";
  if (snap.mode === "redis") {
    notice("Sessions run on Redis workers: states are the ones their workers report with each "
           + "contract; effects and activities are in the workers' own logs.");
  }
  const select = $("chart-select");
  const picked = select.value;
  select.replaceChildren(...model.charts.map((c) => el("option", {value: c.name},
                                                      `${c.name} v${c.version}`)));
  if (model.charts.some((c) => c.name === picked)) select.value = picked;
  select.hidden = model.charts.length < 2;
  renderAll();
  if (model.selected) scheduleTimeline();
}
function onRecord(rec) {
  if (typeof rec.t_ms === "number" && rec.t_ms > serverNow()) {
    model.clock = {t: rec.t_ms, at: performance.now()};
  }
  const d = rec.data || {};
  if (rec.event_type === "session_started" && d.version_hash && !checkedHashes.has(d.version_hash)) {
    checkedHashes.add(d.version_hash);
    const entry = model.charts.find((c) => c.name === d.chart);
    if (entry && entry.version_hash !== d.version_hash) refreshCharts();
  }
  applyRecord(rec);
  renderSessions();
  renderDiagram();
  if (rec.session_id === model.selected) scheduleTimeline();
}
const checkedHashes = new Set();
async function refreshCharts() {   // a chart was reloaded: draw the version sessions now start on
  const response = await fetch("/charts", {headers: {Accept: "application/json"}});
  if (!response.ok) return;
  for (const fresh of (await response.json()).charts) {
    const entry = model.charts.find((c) => c.name === fresh.name);
    if (entry && fresh.version_hash && entry.version_hash !== fresh.version_hash) {
      Object.assign(entry, {version: fresh.version, version_hash: fresh.version_hash});
      chartData.delete(fresh.name);
      if (shownChart === fresh.name) shownChart = null;
    }
  }
  renderDiagram();
}
function connect() {
  const events = new EventSource("/inspect/events");
  events.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  events.addEventListener("record", (e) => onRecord(JSON.parse(e.data)));
  events.addEventListener("resync", () => {
    notice("The page fell behind the server; it caught up from a fresh snapshot.");
    setTimeout(() => notice(model.mode === "redis" ? $("notice").textContent : ""), 4000);
  });
  events.onopen = () => setConn("live", "live");
  events.onerror = () => setConn("reconnecting", "reconnecting…");  // EventSource retries
}

// ----------------------------------------------------------------------------- the diagram
function chartShown() {   // the picked chart; a session clicked picks its own
  return $("chart-select").value || (model.charts[0] || {}).name || null;
}
function loadChart(name) {
  if (!chartData.has(name)) {
    const entry = model.charts.find((c) => c.name === name);
    const promise = Promise.all([
      fetch(entry ? entry.svg : `/charts/${encodeURIComponent(name)}.svg`),
      fetch(`/charts/${encodeURIComponent(name)}.json`),
    ]).then(async ([svgResponse, jsonResponse]) => {
      const parents = {}, turns = {};
      if (jsonResponse.ok) {
        const compiled = await jsonResponse.json();
        for (const [state, info] of Object.entries(compiled.states)) {
          parents[state] = info.parent;
          turns[state] = info.turn || {};
        }
      }
      if (!svgResponse.ok) {
        const body = await svgResponse.text();
        let reason = body;
        try { reason = JSON.parse(body).error || body; } catch (_) { /* plain text */ }
        return {svg: null, error: reason, parents, turns};
      }
      const doc = new DOMParser().parseFromString(await svgResponse.text(), "image/svg+xml");
      const svg = document.importNode(doc.documentElement, true);
      svg.removeAttribute("width");
      svg.removeAttribute("height");
      return {svg, error: null, parents, turns};
    }).catch((err) => ({svg: null, error: String(err), parents: {}, turns: {}}));
    promise.then((resolved) => {
      promise.resolved = resolved;
      for (const view of model.sessions.values()) {
        if (view.chart === name && view.state) {
          view.configuration = configurationOfAll(name, view);
        }
      }
      renderSessions();
      renderDiagram();
    });
    chartData.set(name, promise);
  }
  return chartData.get(name).resolved || null;
}
function renderDiagram() {
  const name = chartShown();
  if (!name) return;
  model.chart = name;
  const data = loadChart(name);
  if (!data) return;   // still loading; renders when it arrives
  const box = $("diagram");
  if (shownChart !== name) {
    box.replaceChildren();
    box.classList.toggle("muted", !data.svg);
    if (data.svg) box.appendChild(data.svg);
    else box.textContent = "No diagram: " + data.error;
    shownChart = name;
  }
  const entry = model.charts.find((c) => c.name === name);
  const views = [...model.sessions.values()].filter((v) => v.live && v.chart === name);
  const stale = entry ? views.filter((v) => v.version_hash && v.version_hash !== entry.version_hash)
    : [];
  $("chart-note").textContent = stale.length
    ? `${stale.length} session(s) run an older version than the one drawn (${entry.version_hash})`
    : (entry ? entry.version_hash : "");
  if (!data.svg) return;
  const selected = model.sessions.get(model.selected);
  for (const group of data.svg.querySelectorAll("g.state")) {
    const state = group.id.replace(/^state-/, "");
    // A chart with parallel regions has several active leaves: each is highlighted.
    const here = views.filter((v) => activeOf(v).includes(state)).map((v) => v.session_id);
    const inside = views.filter((v) => !activeOf(v).includes(state)
                                && v.configuration.includes(state));
    group.setAttribute("data-sessions", here.join(" "));
    group.setAttribute("data-count", String(here.length));
    group.classList.toggle("live", here.length > 0);
    group.classList.toggle("in-config", here.length === 0 && inside.length > 0);
    const isSelected = !!(selected && selected.live && selected.chart === name
                          && activeOf(selected).includes(state));
    group.classList.toggle("selected", isSelected);
    for (const old of group.querySelectorAll(":scope > g.badge")) old.remove();
    if (here.length > 0) group.appendChild(badge(group, here, isSelected));
  }
}
function badge(group, ids, isSelected) {
  const shape = group.querySelector(":scope > path, :scope > polygon") || group;
  const box = shape.getBBox();
  const g = svgEl("g", {class: "badge" + (isSelected ? " selected" : "")});
  const x = box.x + box.width - 4, y = box.y + 4;
  g.appendChild(svgEl("circle", {cx: x, cy: y, r: 10}));
  g.appendChild(svgEl("text", {x, y}, String(ids.length)));
  const shown = ids.slice(0, 2).map((id) => (id.length > 16 ? id.slice(0, 15) + "…" : id));
  const more = ids.length > 2 ? ` +${ids.length - 2}` : "";
  g.appendChild(svgEl("text", {class: "ids", x: box.x + 2, y: box.y - 4},
                      shown.join(", ") + more));
  return titled(g, ids.join("\n"));
}

// ----------------------------------------------------------------------------- sessions
const sessionRows = new Map();   // session id → its <tr>, kept so a click is never lost
function sessionRow(id) {
  let row = sessionRows.get(id);
  if (!row) {
    row = el("tr", {"data-session": id});
    row.appendChild(el("td", {class: "sid", title: id}, id));
    const cell = el("td");
    cell.appendChild(el("span", {class: "state-tag"}));
    row.appendChild(cell);
    row.appendChild(el("td", {class: "for"}));
    row.appendChild(el("td", {class: "contract"}));
    row.appendChild(el("td", {class: "turn"}));
    row.addEventListener("click", () => select(id));
    sessionRows.set(id, row);
  }
  return row;
}
function renderSessions() {
  const views = orderedSessions();
  const body = $("sessions").querySelector("tbody");
  const now = serverNow();
  const shown = new Set(views.map((v) => v.session_id));
  for (const [id, row] of sessionRows) {
    if (!shown.has(id)) { row.remove(); sessionRows.delete(id); }
  }
  for (const v of views) {
    const row = sessionRow(v.session_id);
    row.setAttribute("data-state", v.state || "");
    row.setAttribute("data-live", String(v.live));
    row.classList.toggle("selected", v.session_id === model.selected);
    row.querySelector(".state-tag").textContent = v.state || "—";
    const since = v.since_t_ms === null ? null : (v.live ? now : v.closed_t_ms) - v.since_t_ms;
    row.querySelector(".for").textContent = v.live
      ? (since === null ? "" : fmtFor(Math.max(0, since)))
      : (v.closed_t_ms !== null ? "closed" : "");   // no session lines here (Redis front-end)
    row.querySelector(".contract").textContent = contractText(v.contract);
    if (v.chart) loadChart(v.chart);   // its states' turn policies come with the chart
    row.querySelector(".turn").textContent = turnText(turnOf(v.chart, v.state)) || "—";
    body.appendChild(row);   // moves it into order; the element itself stays
  }
  const live = views.filter((v) => v.live).length;
  $("session-count").textContent = `${live} live` + (views.length > live
    ? `, ${views.length - live} recently closed` : "");
  $("no-sessions").hidden = views.length > 0;
}
function select(id) {
  model.selected = id;
  const view = model.sessions.get(id);
  if (view && view.chart && view.chart !== $("chart-select").value) {
    $("chart-select").value = view.chart;
  }
  timeline = null;
  $("timeline-pane").hidden = false;
  $("tl-session").textContent = id;
  $("tl-meta").textContent = "loading…";
  renderSessions();
  renderDiagram();
  fetchTimeline();
}

// ----------------------------------------------------------------------------- the timeline
function scheduleTimeline() {
  if (fetchTimer === null) fetchTimer = setTimeout(() => { fetchTimer = null; fetchTimeline(); }, 200);
}
async function fetchTimeline() {
  const id = model.selected;
  if (!id) return;
  let response;
  try {
    response = await fetch("/inspect/sessions/" + encodeURIComponent(id));
  } catch (err) {
    $("tl-meta").textContent = "could not load the timeline: " + err;
    return;
  }
  if (model.selected !== id) return;
  if (!response.ok) {
    const body = await response.json().catch(() => ({error: response.statusText}));
    $("tl-meta").textContent = body.error;
    return;
  }
  timeline = await response.json();
  timelineAt = performance.now();
  renderTimeline();
}
function timelineEnd() {
  return timeline.live ? timeline.end_ms + (performance.now() - timelineAt) : timeline.end_ms;
}
function renderTimeline() {
  if (!timeline) return;
  const t = timeline;
  const started = t.started_at ? new Date(t.started_at).toLocaleTimeString() : "?";
  $("tl-meta").textContent = [
    t.chart ? `${t.chart} v${t.version}` : "no session lines here",
    `started ${started}`, t.live ? "live" : (t.closed ? "closed" : "not live"),
    `${t.transitions.length} transitions`,
    t.dropped_lines ? `${t.dropped_lines} older lines no longer kept` : "",
  ].filter(Boolean).join(" · ");
  drawTimeline(t);
  fillTransitions(t);
  fillBargeIns(t);
  fillMarks(t);
  fillFlow(t);
}
function niceStep(span) {
  for (const step of [50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000,
                      300000, 600000]) {
    if (span / step <= 10) return step;
  }
  return 1200000;
}
function drawTimeline(t) {
  const box = $("tl-chart");
  const width = Math.max(640, box.clientWidth || 900);
  const gutter = 104, right = 14, axisH = 20, laneH = 18, gap = 6;
  const end = timelineEnd();
  const windowMs = Number($("tl-window").value);
  const x0 = windowMs ? Math.max(0, end - windowMs) : 0;
  const x1 = Math.max(end, x0 + 1000);
  const x = (ms) => gutter + (Math.min(Math.max(ms, x0), x1) - x0) / (x1 - x0) * (width - gutter - right);
  const activities = [...new Set(t.bars.filter((b) => b.kind === "activity").map((b) => b.name))];
  const lanes = [{key: "state", label: "state", h: 24},
                 ...activities.map((name) => ({key: "activity:" + name, label: "▶ " + name, h: laneH})),
                 {key: "effects", label: "effects", h: laneH},
                 // issue 16: the responder's tool calls and the chart's data (older servers: none)
                 ...((t.tools || []).length ? [{key: "tools", label: "tool calls", h: laneH}] : []),
                 ...((t.data_changes || []).length ? [{key: "data", label: "data", h: laneH}] : []),
                 {key: "marks", label: "marks", h: laneH}];
  let y = axisH;
  for (const lane of lanes) { lane.y = y; y += lane.h + gap; }
  const height = y + 4;
  const svg = svgEl("svg", {viewBox: `0 0 ${width} ${height}`, height, role: "img",
                            "aria-label": "timeline of " + t.session_id});
  for (const lane of lanes) {
    svg.appendChild(svgEl("rect", {class: "lane-bg", x: gutter, y: lane.y,
                                   width: width - gutter - right, height: lane.h}));
    svg.appendChild(svgEl("text", {class: "lane-label", x: 4, y: lane.y + lane.h / 2 + 4},
                          lane.label));
  }
  const laneOf = Object.fromEntries(lanes.map((l) => [l.key, l]));
  // axis
  const axis = svgEl("g", {class: "axis"});
  const step = niceStep(x1 - x0);
  for (let ms = Math.ceil(x0 / step) * step; ms <= x1; ms += step) {
    axis.appendChild(svgEl("line", {x1: x(ms), x2: x(ms), y1: axisH - 4, y2: height}));
    if (x(ms) + 40 > width) continue;   // no room for a label at the right edge
    axis.appendChild(svgEl("text", {x: x(ms) + 2, y: axisH - 8},
                           step < 1000 ? (ms / 1000).toFixed(2) + " s" : (ms / 1000) + " s"));
  }
  svg.appendChild(axis);
  const visible = (start, stop) => stop >= x0 && start <= x1;
  // states
  const stateLane = laneOf.state;
  for (const span of t.states) {
    const stop = span.end_ms === null ? end : span.end_ms;
    if (!visible(span.start_ms, stop)) continue;
    const g = svgEl("g", {class: "span", "data-state": span.state});
    const w = Math.max(1, x(stop) - x(span.start_ms));
    g.appendChild(svgEl("rect", {x: x(span.start_ms), y: stateLane.y, width: w,
                                 height: stateLane.h, fill: stateColor(span.state), rx: 3}));
    if (w > 44) {
      g.appendChild(svgEl("text", {x: x(span.start_ms) + 4, y: stateLane.y + 16}, span.state));
    }
    svg.appendChild(titled(g, `${span.state}: ${fmtMs(stop - span.start_ms)}`));
  }
  for (const move of t.transitions) {
    if (!visible(move.at_ms, move.at_ms)) continue;
    svg.appendChild(titled(svgEl("line", {class: "move", x1: x(move.at_ms), x2: x(move.at_ms),
                                          y1: stateLane.y, y2: height - 4}),
                           `${move.from} → ${move.to} (${move.event})`));
  }
  // bars
  for (const bar of t.bars) {
    const stop = bar.end_ms === null ? end : bar.end_ms;
    if (!visible(bar.start_ms, stop)) continue;
    const lane = bar.kind === "activity" ? laneOf["activity:" + bar.name] : laneOf.effects;
    const w = Math.max(bar.kind === "effect" ? 3 : 2, x(stop) - x(bar.start_ms));
    const classes = `bar ${bar.kind} ${bar.outcome}`;
    const label = `${bar.kind} ${bar.name} in ${bar.state}: ${bar.outcome}`
      + (bar.detail ? ` (${bar.detail})` : "") + `, ${fmtMs(stop - bar.start_ms)}`;
    svg.appendChild(titled(svgEl("rect", {class: classes, x: x(bar.start_ms), y: lane.y + 3,
                                          width: w, height: lane.h - 6, rx: 2}), label));
  }
  // marks and barge-ins
  const marks = laneOf.marks;
  for (const mark of t.marks) {
    if (!visible(mark.at_ms, mark.at_ms)) continue;
    const cx = x(mark.at_ms), cy = marks.y + marks.h / 2;
    svg.appendChild(titled(svgEl("rect", {class: "mark " + mark.level, x: cx - 4, y: cy - 4,
                                          width: 8, height: 8,
                                          transform: `rotate(45 ${cx} ${cy})`}),
                           mark.text));
  }
  for (const call of t.tools || []) {
    if (!visible(call.at_ms, call.at_ms)) continue;
    const lane = laneOf.tools, cx = x(call.at_ms), cy = lane.y + lane.h / 2;
    svg.appendChild(titled(svgEl("circle", {class: "tool " + call.result, cx, cy, r: 4.5,
                                            "data-tool": call.tool}), toolText(call)));
  }
  for (const change of t.data_changes || []) {
    if (!visible(change.at_ms, change.at_ms)) continue;
    const lane = laneOf.data, cx = x(change.at_ms);
    svg.appendChild(titled(svgEl("rect", {class: "datum", x: cx - 3.5, y: lane.y + lane.h / 2 - 3.5,
                                          width: 7, height: 7}), dataText(change)));
  }
  for (const b of t.barge_ins) {
    if (!visible(b.at_ms, b.at_ms)) continue;
    const g = svgEl("g", {class: "barge"});
    g.appendChild(svgEl("line", {x1: x(b.at_ms), x2: x(b.at_ms), y1: axisH, y2: height - 4}));
    const silent = b.time_to_silence_ms !== null ? b.time_to_silence_ms : b.playback_cleared_ms;
    g.appendChild(svgEl("text", {x: x(b.at_ms) + 4, y: marks.y + 13},
                        "✋ " + (silent === null ? "barge-in" : "silent in " + fmtMs(silent))));
    svg.appendChild(titled(g, bargeText(b)));
  }
  if (t.live) {
    svg.appendChild(svgEl("line", {class: "now", x1: x(end), x2: x(end), y1: axisH - 4,
                                   y2: height - 4}));
  }
  box.replaceChildren(svg);
}
function bargeText(b) {
  return `barge-in at ${fmtMs(b.at_ms)}` + (b.state ? ` over ${b.state}` : "")
    + `: ${b.outcome}; audio cut ${fmtMs(b.time_to_silence_ms)} after the decision,`
    + ` playback cleared ${fmtMs(b.playback_cleared_ms)} after the chart got it`;
}
function toolText(c) {   // one tool call (engine/tools/timeline.py ToolUse)
  const head = `tool ${c.tool}(${c.arguments})` + (c.state ? ` in ${c.state}` : "");
  if (!c.ok) return `${head}: invalid ${c.field || ""}`.trimEnd() + (c.error ? ` (${c.error})` : "");
  return `${head}: ${c.result}` + (c.detail ? (c.result === "moved" ? ` → ${c.detail}` : ` (${c.detail})`) : "");
}
function valueText(v) { return v === undefined ? "—" : JSON.stringify(v); }
function dataText(d) {   // one data change (engine/tools/timeline.py DataChange)
  return d.changes.map((c) => `${c.field}: ${valueText(c.from)} → ${valueText(c.to)}`).join(", ")
    + (d.event ? ` (${d.event})` : "");
}
function flowRows(t) {   // tool calls and data changes, in time order, for the "flow" table
  const rows = [
    ...(t.tools || []).map((c) => ({at_ms: c.at_ms, kind: "tool", cls: c.ok ? c.result : "invalid",
                                    text: toolText(c)})),
    ...(t.data_changes || []).map((d) => ({at_ms: d.at_ms, kind: "data", cls: "data",
                                           text: dataText(d)})),
  ];
  return rows.sort((a, b) => a.at_ms - b.at_ms || (a.kind === "tool" ? -1 : 1));
}
function fillFlow(t) {
  const rows = flowRows(t);
  $("flow").replaceChildren(...rows.map((r) =>
    el("li", {class: r.cls, "data-kind": r.kind}, `${(r.at_ms / 1000).toFixed(2)} s  ${r.text}`)));
  $("flow-pane").hidden = rows.length === 0;
}
function fillTransitions(t) {
  const wrap = $("timeline-rows").parentElement;
  const atBottom = wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 4;
  $("timeline-rows").querySelector("tbody").replaceChildren(...t.transitions.map((m) => {
    const row = el("tr", {"data-from": m.from, "data-to": m.to, "data-event": m.event});
    if (m.event === "barge_in") row.classList.add("barge-in");
    row.appendChild(el("td", {class: "num"}, (m.at_ms / 1000).toFixed(2) + " s"));
    row.appendChild(el("td", {}, `${m.from} → ${m.to}`));
    row.appendChild(el("td", {class: "mono"}, m.event));
    row.appendChild(el("td", {class: "num"}, fmtMs(m.latency_ms)));
    row.appendChild(el("td", {class: "num"}, fmtMs(m.dwell_ms)));
    return row;
  }));
  if (atBottom) wrap.scrollTop = wrap.scrollHeight;
}
function fillBargeIns(t) {
  $("barge-ins").querySelector("tbody").replaceChildren(...t.barge_ins.map((b) => {
    const row = el("tr", {"data-outcome": b.outcome, title: bargeText(b)});
    row.appendChild(el("td", {class: "num"}, (b.at_ms / 1000).toFixed(2) + " s"));
    row.appendChild(el("td", {}, b.state || "—"));
    row.appendChild(el("td", {}, b.outcome));
    row.appendChild(el("td", {class: "num"}, fmtMs(b.time_to_silence_ms)));
    row.appendChild(el("td", {class: "num"}, fmtMs(b.playback_cleared_ms)));
    return row;
  }));
  $("barge-ins").hidden = t.barge_ins.length === 0;
  $("no-barge-ins").hidden = t.barge_ins.length > 0;
}
function fillMarks(t) {
  const notable = t.marks.filter((m) => !QUIET_MARKS.has(m.kind)).slice(-30).reverse();
  $("marks").replaceChildren(...(notable.length ? notable.map((m) =>
    el("li", {class: m.level, "data-kind": m.kind}, `${(m.at_ms / 1000).toFixed(2)} s  ${m.text}`))
    : [el("li", {class: "muted"}, "nothing unusual")]));
}

// ----------------------------------------------------------------------------- start
function renderAll() { renderSessions(); renderDiagram(); renderTimeline(); }
$("chart-select").addEventListener("change", () => { renderDiagram(); });
$("tl-window").addEventListener("change", () => renderTimeline());
setInterval(() => {   // the "for" column and a live timeline move with the clock
  renderSessions();
  if (timeline && timeline.live) drawTimeline(timeline);
}, 1000);
connect();
