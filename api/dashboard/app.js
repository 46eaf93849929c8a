// The ops dashboard: asks the ops listener's JSON API with the operator token and draws what
// it answers with Plotly (served by the same listener). The server decides what each chart
// shows; this file only lays it out. Data is put in the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "filecdn.ops.token";
const WINDOW_KEY = "filecdn.ops.window";
const WINDOWS = { "15m": 15, "1h": 60, "24h": 1440, "7d": 10080 };
const REFRESH_MS = { "15m": 5000, "1h": 5000, "24h": 30000, "7d": 60000 };
const COLORS = ["#2e5bda", "#1f9d55", "#dc8a00", "#d92d20", "#7a3fd1", "#0f9bb0", "#8a6d3b", "#667085"];
const CLASS_COLORS = { "2xx": "#1f9d55", "3xx": "#2e5bda", "4xx": "#dc8a00", "5xx": "#d92d20", other: "#667085" };

class AuthError extends Error {}

let timer = null;
let generation = 0;

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// A token in the URL fragment (`#token=...`, never sent to the server) is taken once, kept
// in sessionStorage and removed from the address bar.
function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + token() },
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(body.error || response.statusText);
  }
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${body.error || response.statusText}`);
  }
  return body;
}

function windowName() {
  const name = sessionStorage.getItem(WINDOW_KEY);
  return name in WINDOWS ? name : "1h";
}

// --- formatting -----------------------------------------------------------------------------

function number(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en");
  return String(Number(v.toPrecision(digits)));
}

function bytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${number(v)} ${units[i]}`;
}

function percent(v) {
  return v === null || v === undefined ? "–" : `${number(v * 100)}%`;
}

function seconds(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1) return `${Math.round(v * 1000)} ms`;
  if (v < 120) return `${number(v)} s`;
  if (v < 7200) return `${number(v / 60)} min`;
  return `${number(v / 3600)} h`;
}

function ago(unixSeconds) {
  return unixSeconds ? `${seconds(Date.now() / 1000 - unixSeconds)} ago` : "never";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

// --- tiles ----------------------------------------------------------------------------------

function tile(label, value, detail, state) {
  return el("div", { class: `tile ${state || ""}` },
    el("div", { class: "label" }, label),
    el("div", { class: "value" }, value),
    el("div", { class: "detail", title: detail || "" }, detail || "\u00a0"));
}

function renderHealth(health) {
  const names = { postgres: "PostgreSQL", redis: "Redis", s3: "S3" };
  $("health").replaceChildren(...Object.entries(health.checks).map(([name, c]) =>
    tile(names[name] || name, c.ok ? "ok" : "down", c.ok ? `${number(c.ms)} ms` : c.error, c.ok ? "ok" : "bad")));
}

function renderStats(totals, worker, windowLabel) {
  const e = totals.edge;
  const q = worker.queue;
  const s = worker.events;
  const r = worker.reconcile;
  const lag = totals.worker.expiry_lag_seconds;
  const fixed = r ? Object.entries(r.fixed || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ") : "";
  const reconcileLate = !r || !r.last_ok_at || Date.now() / 1000 - r.last_ok_at > 5 * worker.reconcile_interval_seconds + 60;
  $("stats").replaceChildren(
    tile("edge req/s", number(e.requests_per_second), `${e.requests.toLocaleString("en")} in ${windowLabel}`),
    tile("edge 5xx", percent(e.error_ratio_5xx), `${e.errors_5xx} responses`, e.error_ratio_5xx > 0.01 ? "bad" : "ok"),
    tile("cache hit ratio", percent(e.hit_ratio), `mem ${e.cache.memory} · disk ${e.cache.disk} · miss ${e.cache.miss}`),
    tile("edge p99", e.latency_ms.p99 === null ? "–" : `${number(e.latency_ms.p99)} ms`, `p50 ${number(e.latency_ms.p50)} ms`),
    tile("API requests", totals.api.requests.toLocaleString("en"), `${totals.api.errors} 5xx · ${totals.api.client_errors} 4xx`, totals.api.errors ? "warn" : ""),
    tile("active URLs", totals.urls.active.toLocaleString("en"), `+${totals.urls.created} −${totals.urls.revoked + totals.urls.expired}`),
    tile("job queue", `${q.depth}`, `${q.overdue} due · oldest ${seconds(q.oldest_overdue_seconds)}`, q.oldest_overdue_seconds > 60 ? "bad" : "ok"),
    tile("expiry lag p95", seconds(lag.p95), `${totals.worker.expiry_jobs} jobs in ${windowLabel}`, lag.p95 > 30 ? "warn" : ""),
    tile("events pending", `${s.pending}`, `oldest ${seconds(s.oldest_pending_seconds)}`, s.oldest_pending_seconds > 300 ? "bad" : "ok"),
    tile("last reconcile", r ? ago(r.at) : "never", r && !r.ok ? r.error : (fixed ? `fixed ${fixed}` : "nothing to fix"),
      r && !r.ok ? "bad" : reconcileLate ? "warn" : "ok"),
  );
}

// --- charts ---------------------------------------------------------------------------------

function traces(chart, t) {
  const out = [];
  const add = (lines, axis) => {
    for (const [name, ys] of Object.entries(lines)) {
      const color = CLASS_COLORS[name] || COLORS[out.length % COLORS.length];
      // A series with gaps (quantiles of empty steps, levels not sampled) may have lone
      // points that a line alone would not show.
      const gapped = !chart.stacked && ys.some((v) => v === null);
      out.push({
        x: t, y: ys, name, type: "scatter", mode: gapped ? "lines+markers" : "lines", yaxis: axis,
        marker: { size: 4, color },
        line: { width: 1.5, color, dash: axis === "y2" ? "dot" : "solid" },
        stackgroup: chart.stacked && axis === "y" ? "one" : undefined,
        connectgaps: false,
        hovertemplate: `%{y:${numberFormat(chart)}} ${axis === "y2" ? "" : chart.unit}<extra>${name}</extra>`,
      });
    }
  };
  add(chart.lines, "y");
  add(chart.y2 || {}, "y2");
  return out;
}

// Bytes read best with SI prefixes (300k); rates and counts as plain numbers (0.8, 2000).
function numberFormat(chart) {
  return chart.unit.startsWith("B") ? ".3~s" : ".3~g";
}

function layout(chart, id) {
  const empty = Object.keys(chart.lines).length === 0;
  const out = {
    title: { text: chart.title, font: { size: 12 }, x: 0.01, xanchor: "left", y: 0.97 },
    margin: { l: 46, r: chart.y2 ? 46 : 10, t: 26, b: 22 },
    height: 198,
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    font: { size: 10, color: "#1d2330" },
    xaxis: { type: "date", gridcolor: "#eef0f3", tickfont: { size: 9 } },
    yaxis: { title: { text: chart.unit, font: { size: 10 } }, rangemode: "tozero", gridcolor: "#eef0f3", tickformat: numberFormat(chart) },
    // Wide charts have many lines: their legend goes beside the plot.
    legend: chart.wide
      ? { orientation: "v", x: 1.02, xanchor: "left", y: 1, font: { size: 9 } }
      : { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", font: { size: 9 }, bgcolor: "rgba(0,0,0,0)" },
    showlegend: true,
    hovermode: "x unified",
    uirevision: id,
    annotations: empty ? [{ text: "none in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#667085" } }] : [],
  };
  if (chart.y2) {
    out.yaxis2 = { overlaying: "y", side: "right", rangemode: "tozero", showgrid: false, tickformat: ".3~g" };
  }
  return out;
}

function renderCharts(data) {
  const box = $("charts");
  for (const [id, chart] of Object.entries(data.charts)) {
    let div = document.getElementById(`chart-${id}`);
    if (!div) {
      div = el("div", { id: `chart-${id}`, class: chart.wide ? "chart wide" : "chart", "data-chart": id });
      box.append(div);
    }
    Plotly.react(div, traces(chart, data.t), layout(chart, id), { displayModeBar: false, responsive: true });
  }
}

// --- tables ---------------------------------------------------------------------------------

function table(id, headers, rows, emptyText) {
  const head = el("tr", {}, ...headers.map(([h, cls]) => el("th", { class: cls || "" }, h)));
  const body = rows.length
    ? rows.map((cells) => el("tr", {}, ...cells.map((c, i) => el("td", { class: headers[i][1] || "" }, c))))
    : [el("tr", {}, el("td", { class: "empty", colspan: String(headers.length) }, emptyText))];
  $(id).replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}

function usageBar(ratio) {
  const width = Math.max(2, Math.round(Math.min(ratio || 0, 1) * 80));
  const state = ratio >= 0.9 ? "bad" : ratio >= 0.75 ? "warn" : "";
  const bar = el("span", { class: `bar ${state}` });
  bar.style.width = `${width}px`;
  return el("span", {}, bar, ` ${percent(ratio)}`);
}

function renderTables(urls, worker) {
  table("teams", [["team"], ["active URLs", "num"], ["quota", "num"], ["used"]],
    urls.teams.map((t) => [t.team, t.active.toLocaleString("en"), t.quota.toLocaleString("en"), usageBar(t.ratio)]),
    "no team has a live public URL");
  table("links", [["team"], ["file"], ["token"], ["hits", "num"], ["bytes", "num"], ["live"]],
    urls.top_links.map((l) => [l.team, l.filename, `${l.token_prefix}…`, l.hits.toLocaleString("en"), bytes(l.bytes), l.live ? "yes" : "no"]),
    "no link was opened in this window (counts are folded by the worker)");
  const r = worker.reconcile;
  table("reconcile", [["what"], ["value"]], r ? [
    ["when", `${new Date(r.at * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC (${ago(r.at)})`],
    ["outcome", r.ok ? "ok" : `failed: ${r.error}`],
    ["by worker", r.worker || "–"],
    ["took", seconds(r.seconds)],
    ["kind", r.full ? "full (jobs and consumer group rebuilt)" : "periodic"],
    ["fixed", Object.entries(r.fixed || {}).map(([k, n]) => `${k} ${n}`).join(", ") || "–"],
    ["last success", ago(r.last_ok_at)],
  ] : [], "no reconcile pass recorded yet");
  table("consumers", [["consumer"], ["pending", "num"], ["idle", "num"]],
    worker.events.consumers.map((c) => [c.name, String(c.pending), seconds(c.idle_seconds)]),
    "no worker has joined the event stream's group");
}

// --- the loop -------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "not signed in";
  $("status").className = "";
  $("token").focus();
}

async function refresh() {
  const mine = ++generation;
  clearTimeout(timer);
  const name = windowName();
  try {
    const [data, worker, urls, health] = await Promise.all([
      api(`/api/series?window=${name}`),
      api("/api/worker"),
      api(`/api/urls?minutes=${WINDOWS[name]}&limit=10`),
      api("/api/health"),
    ]);
    if (mine !== generation) return; // a newer refresh (window change) overtook this one
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = false;
    renderHealth(health);
    renderStats(data.totals, worker, name);
    renderCharts(data);
    renderTables(urls, worker);
    $("status").textContent = `updated ${new Date().toLocaleTimeString("en-GB")} · every ${REFRESH_MS[name] / 1000} s · times in UTC`;
    $("status").className = "";
  } catch (err) {
    if (err instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(err.message);
      return;
    }
    $("status").textContent = `refresh failed: ${err.message}`;
    $("status").className = "error";
  }
  if (mine === generation) timer = setTimeout(refresh, REFRESH_MS[name]);
}

function selectWindow(name) {
  sessionStorage.setItem(WINDOW_KEY, name);
  for (const b of document.querySelectorAll("#windows button")) {
    b.setAttribute("aria-pressed", String(b.dataset.window === name));
  }
  if (token()) refresh();
}

function start() {
  takeTokenFromFragment();
  for (const b of document.querySelectorAll("#windows button")) {
    b.addEventListener("click", () => selectWindow(b.dataset.window));
  }
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  window.addEventListener("hashchange", () => {
    takeTokenFromFragment();
    if (token()) refresh();
  });
  selectWindow(windowName());
  if (!token()) showLogin("");
}

start();
