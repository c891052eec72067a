// The public HTTP API, as the page uses it. URLs are relative to the page's directory, so the
// page works under a path prefix. Errors are RFC 9457 problem documents, thrown as ApiProblem.

const BASE = new URL(".", document.baseURI);

export class ApiProblem extends Error {
  constructor(status, doc) {
    super(doc.detail || doc.title || `HTTP ${status}`);
    this.status = status;
    this.doc = doc;
    this.code = doc.code || "http-error";
  }
}

// The API key, where the server has keys: typed into the page, kept for this tab only
// (sessionStorage: gone when the tab closes, never sent anywhere but this server).
const KEY_STORAGE = "guidance-api-key";

export function apiKey() {
  try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key cannot be kept */ }
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function api(method, path, body, { accept } = {}) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (accept) init.headers.Accept = accept;
  let resp;
  try {
    resp = await fetch(new URL(path, BASE), init);
  } catch (err) {
    throw new ApiProblem(0, { title: "Server unreachable", detail: String(err), code: "unreachable" });
  }
  const type = resp.headers.get("content-type") || "";
  if (!resp.ok) {
    let doc = { title: resp.statusText, status: resp.status, detail: "" };
    const raw = await resp.text();
    if (type.includes("json")) {
      try { doc = JSON.parse(raw); } catch { doc.detail = raw; }
    } else {
      doc.detail = raw.slice(0, 500);
    }
    if (resp.status === 401) document.dispatchEvent(new CustomEvent("guidance:unauthorized", { detail: doc }));
    throw new ApiProblem(resp.status, doc);
  }
  if (resp.status === 204) return null;
  return type.includes("json") ? resp.json() : resp.text();
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body) => api("POST", path, body);
export const del = (path) => api("DELETE", path);

// Token ids set in a mask (base64 of little-endian int32 words: bit t % 32 of word t / 32, which
// is bit t % 8 of byte t / 8).
export function allowedIds(maskBase64, vocabSize) {
  const raw = atob(maskBase64);
  const ids = [];
  for (let i = 0; i < raw.length; i++) {
    const byte = raw.charCodeAt(i);
    if (byte === 0) continue;
    for (let bit = 0; bit < 8; bit++) {
      if (byte & (1 << bit)) {
        const id = i * 8 + bit;
        if (id < vocabSize) ids.push(id);
      }
    }
  }
  return ids;
}

// Token texts, one /detokenize per id not seen before (per tokenizer), requested in parallel.
const tokenTexts = new Map();

export async function tokenText(tokenizer, ids) {
  const missing = [...new Set(ids)].filter((id) => !tokenTexts.has(`${tokenizer}:${id}`));
  await Promise.all(missing.map(async (id) => {
    const { text } = await post("detokenize", { tokens: [id], tokenizer });
    tokenTexts.set(`${tokenizer}:${id}`, text);
  }));
  return new Map(ids.map((id) => [id, tokenTexts.get(`${tokenizer}:${id}`)]));
}

// Up to n items spread evenly over a list (its first and last included).
export function spread(list, n) {
  if (list.length <= n) return list.slice();
  const out = [];
  for (let i = 0; i < n; i++) out.push(list[Math.round((i * (list.length - 1)) / (n - 1))]);
  return [...new Set(out)];
}

// Where a compile error points, as {line, column} (1-based), when the problem says.
export function problemLocation(doc, source) {
  if (Number.isInteger(doc.line)) return { line: doc.line, column: doc.column || 1 };
  const detail = doc.detail || "";
  let m = /^at (\d+)\((\d+)\)/.exec(detail); // llguidance's Lark errors: "at LINE(COLUMN): ..."
  if (m && doc.code === "grammar-invalid") return { line: +m[1], column: +m[2] };
  m = /not valid JSON: .* at (\d+)$/.exec(detail); // a schema's JSON text: a character offset
  if (m && source !== undefined) return offsetToLineColumn(source, +m[1]);
  return null;
}

export function offsetToLineColumn(text, offset) {
  const before = text.slice(0, offset).split("\n");
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

// A token's text with its whitespace made visible.
export function visible(text) {
  if (text === undefined) return "…";
  if (text === "") return "∅";
  return text.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const fmt = new Intl.NumberFormat("en-US");
