// toolvisor dashboard: one EventSource on /api/stream; everything drawn here, no libraries.
"use strict";
const $ = (sel) => document.querySelector(sel);
const state = { tree: null, history: {}, selected: null, alerts: [], events: [] };
const tokenInput = $("#token");
tokenInput.value = sessionStorage.getItem("toolvisor-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("toolvisor-token", tokenInput.value));

function text(value) { return value === null || value === undefined ? "" : String(value); }
function fixed(value, digits) { return typeof value === "number" ? value.toFixed(digits) : ""; }
function uptime(s) {
  if (typeof s !== "number") return "";
  if (s < 60) return s.toFixed(0) + "s";
  if (s < 3600) return (s / 60).toFixed(1) + "m";
  return (s / 3600).toFixed(1) + "h";
}
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function busyText(busy) {
  if (!busy) return "";
  if (typeof busy === "string") return busy;
  return text(busy.what || busy.command || JSON.stringify(busy));
}
function breakerText(b) { return !b ? "" : (typeof b === "string" ? b : text(b.state)); }

function flatten(node, depth, out) {
  out.push([node, depth]);
  for (const child of node.children || []) flatten(child, depth + 1, out);
  for (const inst of node.instances || []) out.push([Object.assign({ kind: "tool" }, inst), depth + 1]);
  return out;
}

function drawTree() {
  const body = $("#tree tbody");
  body.textContent = "";
  if (!state.tree) return;
  let tools = 0, running = 0, restarts = 0;
  for (const [node, depth] of flatten(state.tree, 0, [])) {
    const tr = document.createElement("tr");
    tr.className = node.kind + (node.path === state.selected ? " selected" : "");
    tr.dataset.path = node.path || "";
    const name = cell(tr, "\u00a0\u00a0".repeat(depth) + (node.path || "(root)"));
    name.title = text(node.last_error);
    cell(tr, node.state, "state state-" + text(node.state));
    cell(tr, node.pid, "pid");
    cell(tr, node.restarts, "restarts");
    cell(tr, uptime(node.uptime));
    cell(tr, fixed(node.memory_mb, 1));
    cell(tr, fixed(node.cpu_percent, 0));
    cell(tr, busyText(node.busy));
    cell(tr, breakerText(node.breaker));
    if (node.kind === "tool") {
      tools += 1; running += node.state === "running" ? 1 : 0; restarts += node.restarts || 0;
      tr.addEventListener("click", () => select(node.path));
    }
    body.appendChild(tr);
  }
  $("#summary").textContent = `${running}/${tools} tools running, ${restarts} restarts`;
  drawDetail();
}

function findNode(path) {
  if (!state.tree) return null;
  for (const [node] of flatten(state.tree, 0, [])) if (node.path === path) return node;
  return null;
}

function select(path) {
  state.selected = path;
  $("#action-result").textContent = "";
  drawTree();
  loadCommands();
}

function drawDetail() {
  const node = state.selected ? findNode(state.selected) : null;
  $("#actions").hidden = !node;
  if (!node) { $("#detail-title").textContent = "Select a tool"; $("#detail-state").textContent = ""; return; }
  $("#detail-title").textContent = node.path;
  $("#detail-state").innerHTML = "";
  const line = document.createElement("div");
  line.innerHTML = `state <b id="detail-state-value" class="state-${text(node.state)}"></b> · pid <span id="detail-pid"></span> · restarts ${text(node.restarts)} · up ${uptime(node.uptime)}`;
  line.querySelector("#detail-state-value").textContent = text(node.state).toUpperCase();
  line.querySelector("#detail-pid").textContent = text(node.pid);
  $("#detail-state").appendChild(line);
  if (node.last_error) {
    const err = document.createElement("div");
    err.className = "sev-error";
    err.textContent = "last error: " + node.last_error;
    $("#detail-state").appendChild(err);
  }
  drawCharts(node.path);
}

function chart(svgId, lastId, points, columns) {
  // one polyline per column (the first one's last value is shown); time runs left to right
  const svg = $(svgId);
  svg.textContent = "";
  columns = Array.isArray(columns) ? columns : [columns];
  const series = columns.map((c) => points.filter((p) => typeof p[c] === "number").map((p) => [p[0], p[c]]));
  const last = series.map((s) => (s.length ? fixed(s[s.length - 1][1], 3) : "-"));
  $(lastId).textContent = last.some((v) => v !== "-") ? last.join(" / ") : "";
  const all = series.flat();
  if (all.length < 2 || !points.length) return;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let max = Math.max(...all.map((p) => p[1])) * 1.15;
  if (max <= 0) max = 1;
  const xs = (t) => ((t - t0) / Math.max(t1 - t0, 1e-6)) * 300;
  const ys = (v) => 78 - (v / max) * 74;
  series.forEach((data, i) => {
    if (data.length < 2) return;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("class", "series-" + i);
    line.setAttribute("points", data.map((p) => `${xs(p[0]).toFixed(1)},${ys(p[1]).toFixed(1)}`).join(" "));
    svg.appendChild(line);
  });
}

function drawCharts(path) {
  const points = state.history[path] || [];
  chart("#chart-mem", "#last-mem", points, 1);
  chart("#chart-cpu", "#last-cpu", points, 2);
  chart("#chart-lat", "#last-lat", points, [3, 4]);
}

async function loadCommands() {
  const table = $("#commands");
  if (!state.selected) { table.hidden = true; return; }
  try {
    const path = state.selected.split("/").map(encodeURIComponent).join("/");
    const resp = await fetch(`/api/tools/${path}`);
    if (!resp.ok) return;
    const detail = await resp.json();
    const body = table.querySelector("tbody");
    body.textContent = "";
    for (const [name, c] of Object.entries(detail.commands || {})) {
      const tr = document.createElement("tr");
      cell(tr, name); cell(tr, c.calls); cell(tr, c.errors);
      cell(tr, fixed(c.mean_ms, 3)); cell(tr, fixed(c.round_trip_ms, 3));
      body.appendChild(tr);
    }
    table.hidden = !body.children.length;
  } catch (err) { /* the next round tries again */ }
}
setInterval(loadCommands, 2000);

function drawAlerts() {
  const list = $("#alerts");
  list.textContent = "";
  if (!state.alerts.length) { list.innerHTML = '<li class="muted">none</li>'; return; }
  for (const a of state.alerts) {
    const li = document.createElement("li");
    li.className = "sev-" + a.severity;
    const when = new Date(a.since * 1000).toLocaleTimeString();
    li.textContent = `#${a.id} ${when} ${a.severity} ${a.state} ${a.rule} on ${a.tool}: ${a.metric} ${a.op} ${a.threshold} (now ${fixed(a.value, 2)})`;
    if (a.acknowledged_by) {
      li.textContent += ` · acknowledged by ${a.acknowledged_by}`;
    } else {
      const b = document.createElement("button");
      b.textContent = "ack";
      b.addEventListener("click", () => post(`/api/alerts/${a.id}/ack`, {}));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(b);
    }
    list.appendChild(li);
  }
}

function addEvent(e) {
  const list = $("#events");
  const li = document.createElement("li");
  const when = new Date(e.time * 1000).toLocaleTimeString();
  li.textContent = `${when} ${e.path || "(root)"} ${e.event}${e.detail ? " (" + e.detail + ")" : ""}`;
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 200) list.removeChild(list.lastChild);
}

async function post(url, body) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = "Bearer " + tokenInput.value;
  const out = $("#action-result");
  try {
    const resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}) });
    const data = await resp.json();
    out.textContent = resp.ok ? "done" : `${resp.status}: ${data.error}`;
    out.className = resp.ok ? "muted" : "sev-error";
    if (resp.ok && data.tool && state.tree) {  // show the answer at once; the stream confirms it
      const node = findNode(data.tool.path);
      if (node) Object.assign(node, data.tool);
      drawTree();
    }
  } catch (err) {
    out.textContent = String(err);
    out.className = "sev-error";
  }
}

for (const button of document.querySelectorAll("#actions button")) {
  button.addEventListener("click", () => {
    if (!state.selected) return;
    const path = state.selected.split("/").map(encodeURIComponent).join("/");
    post(`/api/tools/${path}/${button.dataset.action}`);
  });
}

function connect() {
  const source = new EventSource("/api/stream");
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "pill on"; };
  source.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "pill off"; };
  source.addEventListener("tree", (m) => { state.tree = JSON.parse(m.data); drawTree(); });
  source.addEventListener("alerts", (m) => { state.alerts = JSON.parse(m.data); drawAlerts(); });
  source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
  source.addEventListener("history", (m) => { state.history = JSON.parse(m.data); drawDetail(); });
  source.addEventListener("sample", (m) => {
    const points = JSON.parse(m.data);
    for (const [path, point] of Object.entries(points)) {
      const h = state.history[path] || (state.history[path] = []);
      h.push(point);
      if (h.length > 300) h.shift();
    }
    if (state.selected) drawCharts(state.selected);
  });
}

fetch("/api/events").then((r) => r.json()).then((events) => events.slice(-100).forEach(addEvent)).catch(() => {});
connect();
