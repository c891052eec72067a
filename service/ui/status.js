// The status tab: /stats (cache, sessions, compiles) and the latency histograms of /metrics
// (Prometheus text), refreshed every second while the tab is shown. Latency per interval comes
// from the difference of two scrapes of a histogram (its sum, count and buckets).

import { el, fmt, get } from "./api.js";

const $ = (id) => document.getElementById(id);
const HISTORY = 120; // points kept (two minutes at one per second)
const INTERVAL_MS = 1000;

const history = []; // {t, maskMean, maskP90, compileMean}
let previous = null; // the last scrape's histograms
let timer = 0;
let active = false;

// -- Prometheus text -----------------------------------------------------------------------------

function parseValue(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: parseValue(m[3]) });
  }
  return samples;
}

// A histogram summed over its other labels: {count, sum, buckets: [[le, cumulative count]]}.
export function histogram(samples, name) {
  const buckets = new Map();
  let count = 0;
  let sum = 0;
  for (const s of samples) {
    if (s.name === `${name}_bucket`) {
      const le = parseValue(s.labels.le);
      buckets.set(le, (buckets.get(le) || 0) + s.value);
    } else if (s.name === `${name}_count`) count += s.value;
    else if (s.name === `${name}_sum`) sum += s.value;
  }
  return { count, sum, buckets: [...buckets.entries()].sort((a, b) => a[0] - b[0]) };
}

function difference(now, before) {
  if (!before || now.count < before.count) return now; // a restarted server starts from zero
  const old = new Map(before.buckets);
  return {
    count: now.count - before.count,
    sum: now.sum - before.sum,
    buckets: now.buckets.map(([le, c]) => [le, c - (old.get(le) || 0)]),
  };
}

// Prometheus' histogram_quantile: linear inside the bucket holding the q-th observation.
export function quantile(h, q) {
  if (!h.count) return NaN;
  const rank = q * h.count;
  let lower = 0;
  let below = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(c - below, 1e-12));
    }
    lower = le;
    below = c;
  }
  return lower;
}

// -- figures -------------------------------------------------------------------------------------

const us = (seconds) => (Number.isFinite(seconds) ? `${fmt.format(Math.round(seconds * 1e6))} µs` : "–");
const ms = (seconds) => (Number.isFinite(seconds) ? `${(seconds * 1e3).toFixed(seconds < 0.01 ? 2 : 1)} ms` : "–");
function size(bytes) {
  if (bytes >= 1048576) return `${+(bytes / 1048576).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${+(bytes / 1024).toFixed(1)} KiB`;
  return `${fmt.format(bytes)} B`;
}
const pct = (a, b) => (b ? `${((100 * a) / b).toFixed(1)} %` : "–");

function card(title, rows) {
  return el("div", { class: "card", dataset: { card: title } },
    el("h3", {}, title),
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { figure: k } }, v)])));
}

function sumOf(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

function render(stats, samples, mask, compile, maskNow) {
  const cache = stats.cache || {};
  const sessions = stats.sessions || {};
  const lookups = (cache.hits || 0) + (cache.misses || 0);
  const masks = sumOf(samples, "guidance_masks_served_total");
  const errors = sumOf(samples, "guidance_errors_total");
  $("cards").replaceChildren(
    card("Program cache", [
      ["entries", `${fmt.format(cache.entries)} / ${fmt.format(cache.max_entries)}`],
      ["size", `${size(cache.bytes || 0)} / ${size(cache.max_bytes || 0)}`],
      ["hits / misses", `${fmt.format(cache.hits)} / ${fmt.format(cache.misses)}`],
      ["hit rate", pct(cache.hits || 0, lookups)],
      ["evictions", fmt.format(cache.evictions)],
    ]),
    card("Compiles", [
      ["compiled", fmt.format(cache.compiles)],
      ["errors", fmt.format(cache.compile_errors)],
      ["pending", fmt.format(stats.compiles_pending)],
      ["mean", cache.compiles ? ms(cache.compile_seconds_total / cache.compiles) : "–"],
      ["p50 / p90 ≈", `${ms(quantile(compile, 0.5))} / ${ms(quantile(compile, 0.9))}`],
    ]),
    card("Sessions", [
      ["active", `${fmt.format(sessions.active)} / ${fmt.format(sessions.max_sessions)}`],
      ["created", fmt.format(sessions.created)],
      ["expired", fmt.format(sessions.expired)],
      ["deleted", fmt.format(sessions.deleted)],
      ["refused", fmt.format(sessions.refused)],
    ]),
    card("Masks", [
      ["served", fmt.format(masks)],
      ["mean", mask.count ? us(mask.sum / mask.count) : "–"],
      ["p50 / p90 ≈", `${us(quantile(mask, 0.5))} / ${us(quantile(mask, 0.9))}`],
      ["p99 ≈", us(quantile(mask, 0.99))],
      ["last second", maskNow.count ? `${fmt.format(maskNow.count)} at ${us(maskNow.sum / maskNow.count)}` : "idle"],
    ]),
    card("Tokens", [
      ["accepted", fmt.format(sumOf(samples, "guidance_tokens_accepted_total"))],
      ["rejected", fmt.format(sumOf(samples, "guidance_tokens_rejected_total"))],
      ["error answers", fmt.format(errors)],
      ["tokenizers", (stats.tokenizers || []).join(", ")],
      ["vocabulary", `${stats.tokenizer} · ${fmt.format(stats.vocab_size)} ids`],
    ]),
  );
  drawPlot($("latency-plot"), [
    { key: "maskMean", cls: "line-mean", label: "mean" },
    { key: "maskP90", cls: "line-p90", label: "p90" },
  ], 1e6, "µs");
  drawPlot($("compile-plot"), [{ key: "compileMean", cls: "line-compile", label: "mean" }], 1e3, "ms");
}

// A line plot of the history (gaps where an interval had no observation), inline SVG.
function drawPlot(svg, series, scale, unit) {
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  const left = 56;
  const right = width - 8;
  const top = 10;
  const bottom = height - 22;
  const values = history.flatMap((p) => series.map((s) => p[s.key])).filter(Number.isFinite);
  const max = values.length ? Math.max(...values) * scale * 1.1 : 1;
  const nice = niceCeil(max);
  const x = (i) => left + ((right - left) * (HISTORY - history.length + i)) / (HISTORY - 1);
  const y = (v) => bottom - ((bottom - top) * v * scale) / nice;
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const parts = [];
  for (const frac of [0, 0.5, 1]) {
    const yy = bottom - (bottom - top) * frac;
    parts.push(node("line", { x1: left, x2: right, y1: yy, y2: yy, class: "grid" }));
    parts.push(node("text", { x: left - 6, y: yy + 4, class: "tick", "text-anchor": "end" },
      `${fmt.format(+(nice * frac).toPrecision(3))} ${unit}`));
  }
  parts.push(node("text", { x: right, y: height - 6, class: "tick", "text-anchor": "end" }, "now"));
  parts.push(node("text", { x: left, y: height - 6, class: "tick" }, `−${HISTORY} s`));
  if (!values.length) {
    parts.push(node("text", { x: (left + right) / 2, y: (top + bottom) / 2, class: "tick", "text-anchor": "middle" },
      history.length ? "nothing measured yet in this window" : "collecting…"));
  }
  series.forEach((s, k) => {
    let d = "";
    let pen = false;
    history.forEach((p, i) => {
      const v = p[s.key];
      if (!Number.isFinite(v)) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
      parts.push(node("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 1.8, class: s.cls }));
    });
    if (d) parts.push(node("path", { d, class: `${s.cls} line` }));
    parts.push(node("text", { x: left + 8 + k * 70, y: top + 10, class: `legend ${s.cls}` }, `■ ${s.label}`));
  });
  svg.replaceChildren(...parts);
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

async function tick() {
  if (!active) return;
  try {
    const [stats, text] = await Promise.all([get("stats"), get("metrics")]);
    const samples = parseMetrics(text);
    const mask = histogram(samples, "guidance_mask_duration_seconds");
    const compile = histogram(samples, "guidance_compile_duration_seconds");
    const first = previous === null;
    const maskNow = first ? { count: 0, sum: 0, buckets: [] } : difference(mask, previous.mask);
    const compileNow = first ? { count: 0, sum: 0, buckets: [] } : difference(compile, previous.compile);
    if (!first) {
      history.push({
        t: Date.now(),
        maskMean: maskNow.count ? maskNow.sum / maskNow.count : NaN,
        maskP90: quantile(maskNow, 0.9),
        compileMean: compileNow.count ? compileNow.sum / compileNow.count : NaN,
      });
      while (history.length > HISTORY) history.shift();
    }
    previous = { mask, compile };
    render(stats, samples, mask, compile, maskNow);
    $("status-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").dataset.scrapes = String(Number($("status").dataset.scrapes || 0) + 1);
  } catch (err) {
    $("status-updated").textContent = `not updated: ${err.message}`;
  }
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if (active && $("status-live").checked) timer = setTimeout(tick, INTERVAL_MS);
}

export function showStatus(visible) {
  active = visible;
  clearTimeout(timer);
  if (visible) tick();
}

export function startStatus() {
  $("status-live").addEventListener("change", () => { if ($("status-live").checked) tick(); else clearTimeout(timer); });
}
