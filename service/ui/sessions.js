// The sessions tab: the live sessions (GET /sessions, admin only where keys are on), refreshed
// every two seconds while the tab is shown; a click opens one and watches it live over its event
// stream (GET /sessions/{id}/events): the text grows and the captures fill in as tokens arrive.
//
// The stream is read with fetch, not EventSource: EventSource cannot send the API key.

import { ApiProblem, authHeaders, el, fmt, get } from "./api.js";

const $ = (id) => document.getElementById(id);
const BASE = new URL(".", document.baseURI);
const INTERVAL_MS = 2000;

let timer = 0;
let active = false;
let watching = null; // {id, abort: AbortController}

function age(seconds) {
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function refreshList() {
  const note = $("sessions-note");
  let list;
  try {
    list = (await get("sessions")).sessions;
  } catch (err) {
    $("sessions-list").tBodies[0].replaceChildren();
    note.textContent = err.status === 403
      ? "The list of sessions needs an admin API key (enter it above)."
      : `Cannot list sessions: ${err.message}`;
    return;
  }
  note.textContent = list.length ? "" : "No live session.";
  const rows = list.map((s) => el("tr", {
    class: watching && watching.id === s.session_id ? "selected" : undefined,
    dataset: { id: s.session_id },
    title: `open ${s.session_id} and watch it live`,
    onclick: () => openSession(s.session_id),
  },
  el("td", { class: "mono" }, s.session_id.slice(0, 8)),
  el("td", {}, s.kind),
  el("td", { class: "mono" }, s.program_id.slice(0, 8)),
  el("td", { class: "num" }, fmt.format(s.tokens)),
  el("td", { class: "num" }, age(s.age_seconds)),
  el("td", {}, s.terminated ? "terminated" : s.watchers ? `${s.watchers} watching` : "")));
  $("sessions-list").tBodies[0].replaceChildren(...rows);
  $("sessions").dataset.refreshes = String(Number($("sessions").dataset.refreshes || 0) + 1);
}

// -- watching one session --------------------------------------------------------------------------

const view = { text: "", variables: {} };

function renderCaptures() {
  const rows = Object.entries(view.variables).map(([name, v]) => {
    const shown = v.parsed !== undefined && v.parsed !== null ? JSON.stringify(v.parsed) : JSON.stringify(v.value);
    return el("tr", { dataset: { name }, class: v.complete ? "complete" : "partial" },
      el("th", {}, name),
      el("td", { class: "value" }, shown, v.complete ? "" : el("span", { class: "growing", title: "still being generated" }, "…")));
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "muted" }, "no capture yet")));
  $("watch-vars").tBodies[0].replaceChildren(...rows);
}

function onEvent(name, data) {
  if (name === "snapshot" || name === "rollback") {
    view.text = data.text;
    view.variables = { ...data.variables };
  } else if (name === "accept") {
    view.text += data.text;
    Object.assign(view.variables, data.variables);
  }
  $("watch-text").textContent = view.text;
  const events = Number($("watch").dataset.events || 0) + 1;
  $("watch").dataset.events = String(events);
  if (name === "end") {
    $("watch-status").textContent = `ended: ${data.reason}`;
    $("watch").dataset.ended = data.reason;
  } else {
    const state = data.terminated ? "terminated" : data.accepting ? "complete so far (EOS allowed)" : "generating";
    $("watch-status").textContent = `${state} · ${fmt.format(data.tokens)} tokens · ${events} events`;
  }
  renderCaptures();
}

// Server-Sent Events over fetch: blocks separated by a blank line, "field: value" lines.
async function readEvents(resp, signal) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const fields = {};
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a heartbeat
        const i = line.indexOf(":");
        fields[line.slice(0, i)] = line.slice(i + 1).replace(/^ /, "");
      }
      if (fields.data !== undefined) onEvent(fields.event || "message", JSON.parse(fields.data));
    }
  }
}

async function openSession(id) {
  if (watching) watching.abort.abort();
  const abort = new AbortController();
  watching = { id, abort };
  view.text = "";
  view.variables = {};
  $("watch").hidden = false;
  $("watch").dataset.events = "0";
  delete $("watch").dataset.ended;
  $("watch-id").textContent = id;
  $("watch-text").textContent = "";
  $("watch-status").textContent = "connecting…";
  renderCaptures();
  for (const row of $("sessions-list").tBodies[0].rows) row.classList.toggle("selected", row.dataset.id === id);
  try {
    const resp = await fetch(new URL(`sessions/${encodeURIComponent(id)}/events`, BASE), {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      signal: abort.signal,
    });
    if (!resp.ok) {
      const doc = await resp.json().catch(() => ({ detail: resp.statusText }));
      throw new ApiProblem(resp.status, doc);
    }
    await readEvents(resp, abort.signal);
  } catch (err) {
    if (abort.signal.aborted) return;
    $("watch-status").textContent = `cannot watch: ${err.message}`;
  }
}

export function showSessions(shown) {
  active = shown;
  clearInterval(timer);
  if (!shown) return;
  refreshList();
  timer = setInterval(() => { if (active) refreshList(); }, INTERVAL_MS);
}

export function startSessions() {
  $("sessions-refresh").addEventListener("click", refreshList);
  $("watch-close").addEventListener("click", () => {
    if (watching) watching.abort.abort();
    watching = null;
    $("watch").hidden = true;
  });
}
