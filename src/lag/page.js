// The live view of `ktransform lag --serve`: reads lag.json every sampling interval and draws
// it. The charts are plain SVG built here; nothing is loaded from anywhere but this server.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const W = 480, H = 200, LEFT = 56, RIGHT = 8, TOP = 8, BOTTOM = 22, DOTS = 60;
const PALETTE = ["#0b7285", "#c2255c", "#5c940d", "#e67700", "#6741d9", "#1864ab",
  "#a61e4d", "#2b8a3e", "#d9480f", "#364fc7", "#087f5b", "#862e9c"];
let timer = null;

function $(id) { return document.getElementById(id); }

function el(name, attrs, text) {
  const e = name.startsWith("svg:") ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function count(n) {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
}

function short(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return (n / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
  return String(Math.round(n));
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

// A round upper bound for the y axis.
function ceiling(max) {
  if (max <= 0) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= max) return m * step;
  return 10 * step;
}

// Draws `series` ([{name, color, points: [[t, v|null], ...]}]) into `box`, or `empty` when
// no series has a point. A null value breaks the line.
function chart(box, series, empty) {
  box.replaceChildren();
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
  if (all.length === 0) {
    box.append(el("div", { class: "empty" }, empty));
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  const top = ceiling(Math.max(...all.map((p) => p[1])));
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT);
  const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points": all.length });
  for (const v of [0, top / 2, top]) {
    svg.append(el("svg:line", { class: "axis", x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v) }));
    svg.append(el("svg:text", { class: "tick", x: LEFT - 6, y: y(v) + 3, "text-anchor": "end" }, short(v)));
  }
  svg.append(el("svg:text", { class: "tick", x: LEFT, y: H - 6 }, clock(t0)));
  svg.append(el("svg:text", { class: "tick", x: W - RIGHT, y: H - 6, "text-anchor": "end" }, clock(t1)));
  for (const s of series) {
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        svg.append(el("svg:polyline", {
          class: "line", fill: "none", stroke: s.color, "stroke-width": 2,
          "stroke-linejoin": "round", points: run.join(" "), "data-series": s.name,
        }));
      }
      run = [];
    };
    const drawn = s.points.filter((p) => p[1] !== null);
    // A dot per sample while they are few enough to tell apart; the newest one always.
    const dots = drawn.length <= DOTS ? drawn : drawn.slice(-1);
    for (const [t, v] of s.points) {
      if (v === null) { flush(); continue; }
      run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
    for (const [t, v] of dots) {
      const dot = el("svg:circle", { class: "point", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2, fill: s.color });
      dot.append(el("svg:title", {}, `${s.name}: ${count(v)} at ${clock(t)}`));
      svg.append(dot);
    }
  }
  box.append(svg);
}

function banner(kind, text) {
  const b = $("banner");
  b.hidden = !text;
  b.className = "banner " + kind;
  b.textContent = text || "";
}

const SEVERITY = { unreachable: "error", failing: "error", unknown_topic: "warn",
  unknown_group: "warn", waiting: "info" };

function render(v) {
  document.title = `lag of ${v.group} on ${v.topic}`;
  const protocol = v.report && v.report.protocol ? `, ${v.report.protocol} protocol` : "";
  $("subject").textContent = `group ${v.group} on topic ${v.topic}${protocol}`;
  $("updated").textContent = v.updated_ms ? `last read ${clock(v.updated_ms)}` : "";
  $("cadence").textContent =
    `A sample every ${v.interval_secs} s; the charts keep the last ${v.history_secs / 60} minutes.`;
  banner(SEVERITY[v.status] || "info", v.message);

  const r = v.report;
  const verdict = $("verdict");
  verdict.className = "verdict " + (r ? r.verdict : "");
  verdict.textContent = v.status === "unknown_topic" ? "no verdict: the topic does not exist"
    : (v.verdict_text || "waiting for the first window");
  $("advice").textContent = v.advice_text ? "advice: " + v.advice_text : "";
  $("window").textContent = r
    ? `rates and verdict over the last ${Math.round(r.window_secs)} s, to ${clock(r.timestamp_ms)}` : "";
  const last = v.history.length ? v.history[v.history.length - 1] : null;
  $("total-lag").textContent = last ? count(last.lag) : "–";
  $("produce").textContent = r ? count(r.produce_per_sec) : "–";
  $("consume").textContent = r ? count(r.consume_per_sec) : "–";
  replicas(v);

  const empty = v.message || "no sample yet";
  const points = (f) => v.history.map((p) => [p.timestamp_ms, f(p)]);
  chart($("chart-lag"), [{ name: "total lag", color: "#1d2430", points: points((p) => p.lag) }], empty);
  const ids = [...new Set(v.history.flatMap((p) => Object.keys(p.partitions)))]
    .map(Number).sort((a, b) => a - b);
  const color = (i) => PALETTE[i % PALETTE.length];
  chart($("chart-partitions"), ids.map((id, i) => ({
    name: `partition ${id}`, color: color(i),
    points: points((p) => (id in p.partitions ? p.partitions[id] : null)),
  })), empty);
  $("legend").replaceChildren(...ids.map((id, i) => {
    const item = el("span");
    const swatch = el("svg:svg", { width: 10, height: 10, class: "swatch" });
    swatch.append(el("svg:rect", { width: 10, height: 10, rx: 2, fill: color(i) }));
    item.append(swatch, `${id}`);
    return item;
  }));
  chart($("chart-rates"), [
    { name: "produce", color: "#6f42c1", points: points((p) => p.produce_per_sec) },
    { name: "consume", color: "#0b7285", points: points((p) => p.consume_per_sec) },
  ], v.history.length ? "the rates come with the second sample" : empty);

  partitions(v);
  members(v);
}

function replicas(v) {
  const r = v.report;
  // ktransform's count: the one KEDA's is compared with when there is KEDA, else the rates'.
  const n = !r ? null : (r.keda ? r.keda.ktransform_replicas : r.instances_needed);
  let ours;
  if (!r) ours = "–";
  else if (n !== null && r.verdict === "falling_behind") ours = `ktransform: ~${n} instance(s) needed`;
  else if (n !== null) ours = `ktransform: ${n} instance(s) suffice`;
  else if (r.verdict === "caught_up") ours = `ktransform: the ${r.members} member(s) keep up`;
  else ours = "ktransform: no estimate (no member consumed in the window)";
  const k = r && r.keda;
  $("replicas").textContent = k ? `${ours} · KEDA: ${k.replicas} replica(s)` : ours;
  $("keda").textContent = k
    ? `KEDA with lagThreshold ${count(k.lag_threshold)} (offsetResetPolicy ${k.offset_reset_policy}): ` +
      `lag ${count(k.total_lag)}${k.capped ? ", capped at " + count(k.metric) : ""}. ` +
      `Trust ${k.trust === "keda" ? "KEDA" : k.trust}: ${k.why}.`
    : "KEDA's count: start with --lag-threshold N (deploy/kubernetes uses 300000) to compare.";
}

// A member as the partitions table names it: its instance id, else its client id and the
// first 8 characters of what the broker added ("ktransform-0ee5246b"), so that members sharing a
// client id stay apart. Classic member ids are "<client id>-<uuid>"; KIP-848's are random.
function memberName(m) {
  if (m.instance_id) return m.instance_id;
  const id = m.member_id || "";
  const classic = id.match(/^(.*)-([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  if (classic) return `${classic[1]}-${classic[2]}`;
  return id ? `${m.client_id}-${id.slice(0, 8)}` : m.client_id;
}

function partitions(v) {
  const owner = new Map();
  for (const m of v.members) for (const p of m.partitions) owner.set(p, memberName(m));
  const rows = v.partitions.map((p) => {
    const tr = el("tr", { "data-partition": p.partition });
    tr.append(el("td", { class: "num" }, String(p.partition)),
      el("td", { class: "num" }, p.committed === null ? "none" : count(p.committed)),
      el("td", { class: "num" }, count(p.end)),
      el("td", { class: "num" }, count(p.lag)),
      el("td", owner.has(p.partition) ? {} : { class: "none" }, owner.get(p.partition) || "unassigned"));
    return tr;
  });
  $("partitions").tBodies[0].replaceChildren(...rows);
}

function members(v) {
  $("group-state").textContent = v.group_state ? `(group ${v.group_state}, ${v.members.length})`
    : (v.group_error ? `(not described: ${v.group_error})` : "");
  const rows = v.members.map((m) => {
    const tr = el("tr", { "data-member": m.member_id });
    const held = m.partitions.join(", ") || "none";
    const other = m.other_partitions ? ` (+${m.other_partitions} of other topics)` : "";
    tr.append(el("td", {}, m.member_id), el("td", {}, m.client_id), el("td", {}, m.host),
      el("td", {}, m.instance_id || "–"), el("td", {}, held + other));
    return tr;
  });
  if (rows.length === 0) {
    const tr = el("tr");
    tr.append(el("td", { class: "none", colspan: 5 }, "no member"));
    rows.push(tr);
  }
  $("members").tBodies[0].replaceChildren(...rows);
}

async function refresh() {
  let next = 2;
  try {
    const response = await fetch("lag.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const v = await response.json();
    render(v);
    next = v.interval_secs;
  } catch (e) {
    banner("error", `the live view's server does not answer (${e.message}); retrying`);
  }
  clearTimeout(timer);
  timer = setTimeout(refresh, Math.min(Math.max(next, 1), 5) * 1000);
}

refresh();
