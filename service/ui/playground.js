// The playground: compile a constraint, then check a text or step through it token by token.
// Every figure comes from the public API: /compile, /sessions (accept, mask, rollback, state),
// /tokenize and /detokenize. The sample of allowed tokens is decoded here from the JSON mask.

import {
  ApiProblem, allowedIds, authHeaders, del, el, fmt, get, offsetToLineColumn, post, problemLocation,
  spread, tokenText, visible,
} from "./api.js";

const EXAMPLES = {
  template: {
    source: "Name: {{gen 'name' regex='[A-Z][a-z]+'}}\nAge: {{gen 'age' regex='[0-9]{1,3}'}}\n"
      + "Fruit: {{select 'fruit' options=fruits}}",
    variables: '{"fruits": ["apple", "banana", "cherry"]}',
    text: "Name: Ada\nAge: 36\nFruit: banana",
  },
  json_schema: {
    source: JSON.stringify({
      type: "object",
      properties: {
        name: { type: "string", maxLength: 12 },
        age: { type: "integer", minimum: 0, maximum: 130 },
        tags: { type: "array", items: { enum: ["a", "b", "c"] }, maxItems: 3 },
      },
      required: ["name", "age"],
      additionalProperties: false,
    }, null, 2),
    text: '{"name":"Ada","age":36,"tags":["a","c"]}',
  },
  regex: { source: "\\+[0-9]{1,3} [0-9]{3}-[0-9]{4}", text: "+1 555-0100" },
  grammar: {
    source: 'start: expr\nexpr: term (("+" | "-") term)*\nterm: NUMBER | "(" expr ")"\nNUMBER: /[0-9]+/',
    text: "(1+2)-30",
  },
  choice: { source: "yes\nno\nmaybe", text: "maybe" },
};

const HINTS = {
  template: "Handlebars-style: {{gen 'name' regex='…' stop='…'}}, {{select 'name' options=[…]}}, "
    + "{{json 'name' schema=…}}, {{#repeat}}…{{/repeat}}, {{variable}}. Ctrl+Enter compiles.",
  json_schema: "A JSON schema. Output is compact (no whitespace) unless whitespace is allowed below.",
  regex: "A regex the whole text must match (no lookarounds or backreferences).",
  grammar: "A Lark grammar in llguidance's dialect, with a start rule.",
  choice: "One option per line: the text must be exactly one of them.",
};

const STORAGE_KEY = "guidance-playground-v1";
const ACCEPT_CHUNK = 1024; // below the server's max_tokens_per_accept default (4096)
const SAMPLE = 24; // allowed tokens decoded and shown per step
const MAX_CHIPS = 400; // tokens shown; earlier ones are summarised

const $ = (id) => document.getElementById(id);

const S = {
  kind: "template",
  buffers: {},
  tokenizers: new Map(), // name -> info
  program: null, // compile answer + {tokenizer, eos, spec}
  session: null,
  view: null, // the session as last read: tokens, text, accepting, terminated, forced, variables, allowed
  rejection: null, // {token, detail}
  shownVars: {},
  stale: false,
};

// -- serialised operations: one at a time, errors shown ----------------------------------------

let chain = Promise.resolve();
let busy = 0;
function run(fn) {
  busy++;
  document.body.classList.add("busy");
  const next = chain.then(fn).catch(showError).finally(() => {
    if (--busy === 0) document.body.classList.remove("busy");
  });
  chain = next;
  return next;
}

function showError(err) {
  if (err instanceof ApiProblem) {
    if (err.code === "session-expired" || err.code === "session-not-found") {
      S.session = null;
      S.view = null;
      setVerdict("bad", `The session is gone (${err.code}): press Check text or Restart.`);
      return;
    }
    setVerdict("bad", `${err.doc.title || "Error"} (${err.code}): ${err.message}`);
  } else {
    setVerdict("bad", String(err && err.message ? err.message : err));
    console.error(err);
  }
}

function log(message) { $("log").textContent = message; }

function setVerdict(cls, ...content) {
  const v = $("verdict");
  v.className = `verdict ${cls}`;
  v.replaceChildren(...content);
}

// -- buffers (kept per kind, and across reloads) -----------------------------------------------

function loadBuffers() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"); } catch { saved = null; }
  for (const [kind, ex] of Object.entries(EXAMPLES)) {
    const b = saved && saved.buffers && saved.buffers[kind];
    S.buffers[kind] = {
      source: b && typeof b.source === "string" ? b.source : ex.source,
      variables: b && typeof b.variables === "string" ? b.variables : (ex.variables || "{}"),
      text: b && typeof b.text === "string" ? b.text : ex.text,
      whitespace: b && Number.isInteger(b.whitespace) ? b.whitespace : 0,
    };
  }
  if (saved && EXAMPLES[saved.kind]) S.kind = saved.kind;
}

function saveBuffers() {
  const b = S.buffers[S.kind];
  b.source = $("source").value;
  b.variables = $("variables").value;
  b.text = $("text").value;
  b.whitespace = Number.parseInt($("whitespace").value, 10) || 0;
  try { localStorage.setItem(STORAGE_KEY, JSON.stringify({ kind: S.kind, buffers: S.buffers })); } catch { /* private mode */ }
}

function showBuffers() {
  const b = S.buffers[S.kind];
  $("source").value = b.source;
  $("variables").value = b.variables;
  $("text").value = b.text;
  $("whitespace").value = String(b.whitespace);
  $("kind-hint").textContent = HINTS[S.kind];
  $("variables-box").hidden = S.kind !== "template";
  $("whitespace-box").hidden = S.kind !== "json_schema";
  for (const button of $("kinds").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.kind === S.kind));
  }
  updateGutter();
}

// -- the source editor's line numbers and error marker ----------------------------------------

let errorLine = 0;
function updateGutter() {
  const lines = $("source").value.split("\n").length;
  const gutter = $("gutter");
  if (gutter.childElementCount !== lines || gutter.dataset.err !== String(errorLine)) {
    gutter.replaceChildren(...Array.from({ length: lines }, (_, i) =>
      el("div", { class: i + 1 === errorLine ? "err" : undefined }, String(i + 1))));
    gutter.dataset.err = String(errorLine);
  }
  gutter.scrollTop = $("source").scrollTop;
}

function hideCompileError() {
  $("compile-error").hidden = true;
  errorLine = 0;
  updateGutter();
}

function showCompileError(doc, text, field = "source") {
  $("compile-error").hidden = false;
  $("compile-error-title").textContent = `${doc.title || "Error"}${doc.code ? ` (${doc.code})` : ""}`;
  const loc = problemLocation(doc, text);
  const where = $("compile-error-where");
  if (loc) {
    const line = (text.split("\n")[loc.line - 1] || "").replace(/\t/g, " ");
    where.hidden = false;
    where.textContent = `${field === "source" ? "" : `${field}: `}line ${loc.line}, column ${loc.column}\n`
      + `${line}\n${" ".repeat(Math.max(loc.column - 1, 0))}^`;
    if (field === "source") {
      errorLine = loc.line;
      const area = $("source");
      const lines = text.split("\n");
      let index = 0;
      for (let i = 0; i < loc.line - 1 && i < lines.length; i++) index += lines[i].length + 1;
      index += loc.column - 1;
      area.focus({ preventScroll: true });
      area.setSelectionRange(index, Math.min(index + 1, text.length));
      const lineHeight = Number.parseFloat(getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (loc.line - 3) * lineHeight);
    }
  } else {
    where.hidden = true;
    where.textContent = "";
    errorLine = 0;
  }
  // The location is drawn above: drop the detail's own "(line L, column C)".
  $("compile-error-detail").textContent = (doc.detail || "").replace(/ \(line \d+, column \d+\)$/, "");
  updateGutter();
}

// -- compiling ---------------------------------------------------------------------------------

class LocalProblem extends Error {
  constructor(doc, text, field) { super(doc.detail); this.doc = doc; this.text = text; this.field = field; }
}

function jsonError(err, text, title) {
  const message = String(err.message || err);
  const doc = { title, detail: message, code: "json-invalid" };
  let m = /line (\d+) column (\d+)/.exec(message);
  if (m) { doc.line = +m[1]; doc.column = +m[2]; }
  else if ((m = /position (\d+)/.exec(message))) Object.assign(doc, offsetToLineColumn(text, +m[1]));
  return doc;
}

function specBody() {
  const source = $("source").value;
  switch (S.kind) {
    case "template": {
      const text = $("variables").value.trim() || "{}";
      let variables;
      try { variables = JSON.parse(text); } catch (err) {
        throw new LocalProblem(jsonError(err, text, "The variables are not valid JSON"), text, "variables");
      }
      if (variables === null || typeof variables !== "object" || Array.isArray(variables)) {
        throw new LocalProblem({ title: "The variables must be a JSON object", detail: "e.g. {\"fruits\": [\"apple\"]}" }, text, "variables");
      }
      return { template: source, variables };
    }
    case "json_schema": {
      let schema;
      // Sent as text when it does not parse: the server's answer says where.
      try { schema = JSON.parse(source); } catch { schema = source; }
      const ws = Number.parseInt($("whitespace").value, 10) || 0;
      return ws > 0 ? { json_schema: schema, options: { whitespace: ws } } : { json_schema: schema };
    }
    case "regex": return { regex: source };
    case "grammar": return { grammar: source };
    default: return { choice: source.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l !== "") };
  }
}

async function compile() {
  hideCompileError();
  saveBuffers();
  let body;
  try { body = specBody(); } catch (err) {
    if (!(err instanceof LocalProblem)) throw err;
    showCompileError(err.doc, err.text, err.field);
    await dropProgram("The variables need fixing.");
    return;
  }
  const tokenizer = $("tokenizer").value || "default";
  body.tokenizer = tokenizer;
  let answer;
  try {
    answer = await post("compile", body);
  } catch (err) {
    if (err instanceof ApiProblem && [400, 404, 413, 422].includes(err.status)) {
      showCompileError(err.doc, $("source").value);
      await dropProgram("The constraint does not compile: see the error under the editor.");
      return;
    }
    throw err;
  }
  const info = S.tokenizers.get(tokenizer);
  const ends = info ? info.eos_token_ids : [2];
  S.program = { ...answer, tokenizer, eos: ends[0], ends, spec: body };
  S.stale = false;
  S.shownVars = {};
  $("compile-info").textContent = `program ${answer.program_id.slice(0, 12)} · `
    + `${answer.cached ? "from the cache" : "compiled"} in ${answer.compile_ms} ms · `
    + `${fmt.format(answer.vocab_size)} ids · captures: ${answer.variables.join(", ") || "none"}`
    // what the schema asks that is compiled as an annotation only (formats without a definition)
    + ((answer.ignored || []).length ? ` · not enforced: ${answer.ignored.join("; ")}` : "")
    + (answer.engine_limit ? ` · a session of it met the engine limit ${answer.engine_limit.limit}: `
      + answer.engine_limit.detail : "");
  $("compile-info").classList.remove("stale");
  if ($("text").value) await checkText(); else await restart();
}

async function dropProgram(message) {
  S.program = null;
  await closeSession();
  S.view = null;
  S.rejection = null;
  $("compile-info").textContent = "";
  render();
  setVerdict("bad", message);
}

// -- sessions ----------------------------------------------------------------------------------

async function closeSession() {
  const id = S.session;
  S.session = null;
  if (id) {
    try { await del(`sessions/${encodeURIComponent(id)}`); } catch { /* already gone */ }
  }
}

async function openSession() {
  if (!S.program) throw new Error("compile a constraint first");
  await closeSession();
  let created;
  try {
    created = await post("sessions", { program_id: S.program.program_id });
  } catch (err) {
    // Evicted from the server's cache (or another replica): send the program itself.
    if (!(err instanceof ApiProblem) || err.code !== "program-not-found") throw err;
    created = await post("sessions", S.program.spec);
  }
  S.session = created.session_id;
  S.rejection = null;
}

const sessionPath = (what) => `sessions/${encodeURIComponent(S.session)}${what}`;

// Accept tokens all or nothing per chunk; on a rejection, accept the tokens before it, so the
// session stands where the text goes wrong. Returns null, or {index, problem} of the rejection.
async function acceptTokens(tokens) {
  for (let start = 0; start < tokens.length; start += ACCEPT_CHUNK) {
    const chunk = tokens.slice(start, start + ACCEPT_CHUNK);
    try {
      await post(sessionPath("/accept"), { tokens: chunk });
    } catch (err) {
      if (!(err instanceof ApiProblem) || err.code !== "token-rejected") throw err;
      const index = err.doc.index;
      if (index > 0) await post(sessionPath("/accept"), { tokens: chunk.slice(0, index) });
      return { index: start + index, problem: err.doc };
    }
  }
  return null;
}

// A refused token may be refused for its tail only (" ada" where " A" would do): feed its
// characters one by one (dry run) to find the first character the constraint refuses.
async function rejection(token, problem) {
  const found = { token, detail: problem.detail, char: 0 };
  const text = (await tokenText(S.program.tokenizer, [token])).get(token) || "";
  const chars = Array.from(text);
  if (chars.length < 2 || text.includes("\uFFFD") || S.program.ends.includes(token)) return found;
  const pieces = await Promise.all(chars.map((c) => post("tokenize", { text: c, tokenizer: S.program.tokenizer })));
  const ids = [];
  const ends = pieces.map((p) => { ids.push(...p.tokens); return ids.length; });
  const { accepted } = await post(sessionPath("/accept"), { tokens: ids, dry_run: true });
  const index = ends.findIndex((end) => end > accepted);
  found.char = index < 0 ? 0 : index;
  return found;
}

async function ensureSession() {
  if (!S.program) { await compile(); return Boolean(S.program); }
  if (!S.session) await restart();
  return true;
}

async function restart() {
  await openSession();
  await refresh();
}

async function checkText() {
  if (!S.program) return;
  await openSession();
  const text = $("text").value;
  const { tokens } = await post("tokenize", { text, tokenizer: S.program.tokenizer });
  const rejected = await acceptTokens(tokens);
  if (rejected) S.rejection = await rejection(tokens[rejected.index], rejected.problem);
  await refresh();
}

async function step() {
  if (!(await ensureSession())) return;
  const v = S.view;
  const text = $("text").value;
  if (v.terminated) { log("The session is terminated (EOS accepted): Restart to step again."); return; }
  if (S.rejection) { log("The next token of the text is rejected: Undo, edit the text, or click an allowed token."); return; }
  if (!text.startsWith(v.text)) { log("The session has left the text: Restart to step through it."); return; }
  const rest = text.slice(v.text.length);
  if (rest === "") {
    if (v.accepting) { await acceptAndRefresh([S.program.eos]); log("End of the text: EOS accepted."); }
    else log(`End of the text, but the constraint wants more: ${fmt.format(v.allowed.length)} tokens allowed next.`);
    return;
  }
  const { tokens } = await post("tokenize", { text: rest, tokenizer: S.program.tokenizer });
  log("");
  await acceptAndRefresh(tokens.slice(0, 1));
}

async function acceptAndRefresh(tokens) {
  if (!(await ensureSession())) return;
  S.rejection = null;
  const rejected = await acceptTokens(tokens);
  if (rejected) S.rejection = await rejection(tokens[rejected.index], rejected.problem);
  await refresh();
}

async function undo() {
  if (!S.session || !S.view) return;
  if (S.view.tokens.length === 0) { S.rejection = null; await refresh(); return; }
  await post(sessionPath("/rollback"), { tokens: 1 });
  S.rejection = null;
  await refresh();
}

// Read the session: its tokens and text, forced tokens and variables, and the mask.
async function refresh() {
  const [state, dry, mask] = await Promise.all([
    get(sessionPath("")),
    post(sessionPath("/accept"), { tokens: [], dry_run: true, partial: true }),
    get(sessionPath("/mask"), { accept: "application/json" }),
  ]);
  const allowed = allowedIds(mask.mask, mask.vocab_size);
  let sample = spread(allowed, SAMPLE);
  const eos = S.program.eos;
  if (allowed.includes(eos) && !sample.includes(eos)) sample = [eos, ...sample.slice(0, SAMPLE - 1)];
  const shown = state.tokens.slice(-MAX_CHIPS);
  const ids = [...shown, ...dry.forced_tokens, ...sample];
  if (S.rejection) ids.push(S.rejection.token);
  const texts = await tokenText(S.program.tokenizer, ids);
  S.view = {
    tokens: state.tokens,
    text: state.text,
    accepting: state.accepting,
    terminated: state.terminated,
    forced: dry.forced_tokens,
    variables: dry.variables,
    partial: dry.partial || {},
    allowed,
    sample,
    texts,
    vocab: mask.vocab_size,
  };
  render();
  document.dispatchEvent(new Event("guidance:session"));
}

// -- rendering ---------------------------------------------------------------------------------

function chip(id, texts, { cls, title, onclick } = {}) {
  const special = S.program.ends.includes(id);
  const text = special ? "EOS" : visible(texts.get(id));
  return el(onclick ? "button" : "span", {
    type: onclick ? "button" : undefined,
    class: ["chip", special ? "special" : "", cls || ""].join(" ").trim(),
    title: title || `id ${id}`,
    dataset: { id: String(id) },
    onclick,
  }, text);
}

function placeOf(text) {
  const chars = Array.from(text);
  const lines = text.split("\n");
  return { offset: chars.length, line: lines.length, column: Array.from(lines[lines.length - 1]).length + 1 };
}

function render() {
  const v = S.view;
  const has = Boolean(S.program && S.session && v);
  for (const id of ["step", "restart", "undo", "accept-forced", "eos", "check"]) $(id).disabled = !S.program;
  if (!has) {
    for (const id of ["text-view", "tokens", "allowed-count", "token-count"]) $(id).replaceChildren();
    for (const id of ["forced-tokens", "allowed-sample"]) $(id).replaceChildren(el("span", { class: "muted" }, "–"));
    $("vars").tBodies[0].replaceChildren();
    return;
  }
  $("undo").disabled = v.tokens.length === 0 && !S.rejection;
  $("accept-forced").disabled = v.forced.length === 0;
  $("eos").disabled = v.terminated || !v.accepting;

  // the text: accepted part, the rejected token, the rest
  const text = $("text").value;
  const follows = text.startsWith(v.text);
  const view = [el("span", { class: "accepted" }, v.text)];
  let rejectedText = "";
  if (S.rejection) rejectedText = v.texts.get(S.rejection.token) || "";
  if (follows) {
    let rest = text.slice(v.text.length);
    if (S.rejection && rejectedText && rest.startsWith(rejectedText)) {
      const head = Array.from(rejectedText).slice(0, S.rejection.char).join("");
      if (head) view.push(el("span", { class: "rejected-head", title: "in the refused token, allowed alone" }, head));
      view.push(el("span", { class: "rejected", title: "refused" }, rejectedText.slice(head.length)));
      rest = rest.slice(rejectedText.length);
    }
    view.push(el("span", { class: "pending" }, rest));
  } else if (S.rejection) {
    view.push(el("span", { class: "rejected" }, rejectedText));
  }
  if (v.terminated) view.push(el("span", { class: "eos" }, "EOS"));
  $("text-view").replaceChildren(...view);

  // tokens so far
  const hidden = v.tokens.length - Math.min(v.tokens.length, MAX_CHIPS);
  const chips = [];
  if (hidden) chips.push(el("span", { class: "muted" }, `… ${fmt.format(hidden)} earlier tokens`));
  v.tokens.slice(hidden).forEach((id, i, arr) => {
    chips.push(chip(id, v.texts, { cls: i === arr.length - 1 ? "last" : "" }));
  });
  if (S.rejection) {
    chips.push(chip(S.rejection.token, v.texts, { cls: "rejected", title: `id ${S.rejection.token}: rejected` }));
  }
  $("tokens").replaceChildren(...chips);
  $("token-count").textContent = `(${fmt.format(v.tokens.length)} accepted${S.rejection ? ", 1 rejected" : ""})`;

  // the next step
  const onlyEos = v.allowed.length > 0 && v.allowed.every((t) => S.program.ends.includes(t));
  $("allowed-count").replaceChildren(
    el("strong", {}, fmt.format(v.allowed.length)),
    ` of ${fmt.format(v.vocab)} tokens allowed`,
    v.terminated ? " (terminated: EOS only)" : onlyEos ? " (complete: EOS only)" : "",
  );
  $("forced-tokens").replaceChildren(...(v.forced.length
    ? v.forced.map((id) => chip(id, v.texts, { cls: "forced" }))
    : [el("span", { class: "muted" }, "none")]));
  $("allowed-sample").replaceChildren(...v.sample.map((id) => chip(id, v.texts, {
    cls: "allowed",
    title: `id ${id}: click to accept`,
    onclick: () => run(() => acceptAndRefresh([id])),
  })), ...(v.allowed.length > v.sample.length
    ? [el("span", { class: "muted" }, `+ ${fmt.format(v.allowed.length - v.sample.length)} more`)] : []));

  renderVariables(v.variables, v.partial);
  renderVerdict(v, follows, text, onlyEos);
}

// Complete values as they are; a capture still being generated shows its text so far, marked.
function renderVariables(values, partial) {
  const names = [...S.program.variables];
  for (const name of [...Object.keys(values), ...Object.keys(partial)]) if (!names.includes(name)) names.push(name);
  const rows = names.map((name) => {
    const has = Object.prototype.hasOwnProperty.call(values, name);
    const growing = !has && Object.prototype.hasOwnProperty.call(partial, name) ? partial[name] : null;
    const shown = has ? JSON.stringify(values[name]) : growing ? JSON.stringify(growing.value) : "";
    const fresh = has && JSON.stringify(S.shownVars[name]) !== shown;
    let cell;
    if (has) cell = el("td", { class: "value" }, shown);
    else if (growing) {
      cell = el("td", { class: "value", title: "still being generated" }, shown,
        el("span", { class: "growing" }, "…"));
    } else cell = el("td", { class: "muted" }, "…");
    return el("tr", { class: fresh ? "fresh" : growing ? "partial" : undefined, dataset: { name } },
      el("th", {}, name), cell);
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "muted" }, "this constraint captures nothing")));
  $("vars").tBodies[0].replaceChildren(...rows);
  S.shownVars = { ...values };
}

function renderVerdict(v, follows, text, onlyEos) {
  const count = `${fmt.format(v.allowed.length)} token${v.allowed.length === 1 ? "" : "s"}`;
  if (S.rejection) {
    const id = S.rejection.token;
    const tokenStr = v.texts.get(id) ?? "";
    const head = Array.from(tokenStr).slice(0, S.rejection.char).join("");
    const where = placeOf(v.text + head);
    const refused = Array.from(tokenStr)[S.rejection.char] ?? "";
    const why = onlyEos
      ? "the constraint is complete before it: only EOS may follow"
      : (S.rejection.detail || "").replace(/^token \d+ at index \d+ rejected: /, "");
    const token = [el("code", {}, JSON.stringify(tokenStr)), ` (id ${id})`];
    setVerdict("bad",
      el("strong", {}, "Rejected "),
      `at line ${where.line}, column ${where.column} (character ${where.offset}): `,
      ...(S.rejection.char > 0
        ? [el("code", {}, JSON.stringify(refused)), " in token ", ...token, ` from column ${placeOf(v.text).column}`]
        : ["token ", ...token]),
      `: ${why}. The constraint allows ${count} `,
      S.rejection.char > 0 ? "where that token starts" : "here",
      v.sample.length && !onlyEos ? `, e.g. ${v.sample.slice(0, 6).map((t) => JSON.stringify(v.texts.get(t) ?? "")).join(", ")}.` : ".");
    return;
  }
  if (v.terminated) {
    setVerdict("ok", el("strong", {}, "Accepted: "), `complete, EOS accepted after ${fmt.format(v.tokens.length - 1)} tokens.`);
    return;
  }
  const rest = follows ? text.length - v.text.length : 0;
  if (follows && rest > 0) {
    setVerdict("progress", el("strong", {}, "So far so good: "),
      `${fmt.format(Array.from(v.text).length)} of ${fmt.format(Array.from(text).length)} characters accepted. `
      + "Step on, or Check text.");
    return;
  }
  const left = follows ? "" : " (the session has left the text)";
  if (v.accepting) {
    setVerdict("ok", el("strong", {}, "Accepted: "), `the text is complete: EOS is allowed${left}.`);
  } else {
    setVerdict("warn", el("strong", {}, "Incomplete: "),
      `the text is a valid start, but the constraint wants more: ${count} allowed next${left}.`);
  }
}

// -- wiring ------------------------------------------------------------------------------------

async function loadTokenizers() {
  const { tokenizers } = await get("tokenizers");
  const select = $("tokenizer");
  const byPrint = new Map();
  for (const t of tokenizers) {
    S.tokenizers.set(t.tokenizer, t);
    if (!byPrint.has(t.digest)) byPrint.set(t.digest, []);
    byPrint.get(t.digest).push(t.tokenizer);
  }
  select.replaceChildren(...tokenizers.map((t) => {
    const same = byPrint.get(t.digest).filter((n) => n !== t.tokenizer);
    return el("option", { value: t.tokenizer },
      `${t.tokenizer}${same.length ? ` (= ${same.join(", ")})` : ""} · ${fmt.format(t.vocab_size)} ids`);
  }));
  select.value = S.tokenizers.has("default") ? "default" : (tokenizers[0] || {}).tokenizer;
  showTokenizerInfo();
}

function showTokenizerInfo() {
  const t = S.tokenizers.get($("tokenizer").value);
  $("tokenizer-info").textContent = t ? `end tokens ${t.eos_token_ids.join(", ")}` : "";
}

function markStale() {
  if (!S.program || S.stale) return;
  S.stale = true;
  $("compile-info").textContent = "edited: Compile again to use it";
  $("compile-info").classList.add("stale");
}

export async function startPlayground() {
  loadBuffers();
  showBuffers();
  render();

  $("kinds").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-kind]");
    if (!button || button.dataset.kind === S.kind) return;
    saveBuffers();
    S.kind = button.dataset.kind;
    showBuffers();
    saveBuffers();
    hideCompileError();
    markStale();
  });
  const source = $("source");
  source.addEventListener("input", () => { updateGutter(); saveBuffers(); markStale(); });
  source.addEventListener("scroll", updateGutter);
  source.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); run(compile); }
  });
  $("variables").addEventListener("input", () => { saveBuffers(); markStale(); });
  $("whitespace").addEventListener("input", () => { saveBuffers(); markStale(); });
  $("tokenizer").addEventListener("change", () => { showTokenizerInfo(); if (S.program) run(compile); });
  $("compile").addEventListener("click", () => run(compile));
  $("example").addEventListener("click", () => {
    const ex = EXAMPLES[S.kind];
    S.buffers[S.kind] = { source: ex.source, variables: ex.variables || "{}", text: ex.text, whitespace: 0 };
    showBuffers();
    saveBuffers();
    run(compile);
  });

  let liveTimer = 0;
  $("text").addEventListener("input", () => {
    saveBuffers();
    if (!$("live").checked || !S.program) return;
    clearTimeout(liveTimer);
    liveTimer = setTimeout(() => run(checkText), 250);
  });
  $("check").addEventListener("click", () => run(checkText));
  $("step").addEventListener("click", () => run(step));
  $("restart").addEventListener("click", () => run(async () => { log(""); await restart(); }));
  $("undo").addEventListener("click", () => run(undo));
  $("accept-forced").addEventListener("click", () => run(() => acceptAndRefresh(S.view ? S.view.forced : [])));
  $("eos").addEventListener("click", () => run(() => acceptAndRefresh([S.program.eos])));

  // Close the session when the page goes away (the server would expire it anyway).
  window.addEventListener("pagehide", () => {
    if (S.session) {
      const init = { method: "DELETE", keepalive: true, headers: authHeaders() };
      fetch(new URL(sessionPath(""), new URL(".", document.baseURI)), init)
        .catch(() => {});
    }
  });

  await run(async () => {
    await loadTokenizers();
    await compile();
  });
}

// For tests and the curious: the playground's state.
window.guidancePlayground = S;
