// The page: two tabs (#playground, #status) and a line about the server.

import { apiKey, get, setApiKey } from "./api.js";
import { startPlayground } from "./playground.js";
import { showStatus, startStatus } from "./status.js";

function showTab() {
  const name = location.hash === "#status" ? "status" : "playground";
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== name;
  for (const link of document.querySelectorAll("nav a")) {
    link.setAttribute("aria-current", link.dataset.tab === name ? "page" : "false");
  }
  showStatus(name === "status");
}

async function serverInfo() {
  const info = document.getElementById("server-info");
  try {
    const stats = await get("stats");
    info.textContent = `${stats.tokenizer} · ${new Intl.NumberFormat("en-US").format(stats.vocab_size)} ids · `
      + `${stats.sessions.active} session${stats.sessions.active === 1 ? "" : "s"} open`;
  } catch (err) {
    if (err.status === 401) return;  // said by the key box
    info.textContent = `server not answering: ${err.message}`;
  }
}

// The API key: typed in the header, kept for this tab (see api.js); a new key reloads the page,
// so every part of it starts again with the key (the editor buffers are kept).
function startKeyBox() {
  const input = document.getElementById("api-key");
  input.value = apiKey();
  const use = () => {
    if (input.value.trim() === apiKey()) return;
    setApiKey(input.value.trim());
    location.reload();
  };
  document.getElementById("api-key-use").addEventListener("click", use);
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") use(); });
  document.addEventListener("guidance:unauthorized", () => {
    document.getElementById("key-box").classList.add("needed");
    document.getElementById("server-info").textContent = apiKey()
      ? "the server does not accept this API key"
      : "the server needs an API key: enter it here";
  });
}

startKeyBox();
window.addEventListener("hashchange", showTab);
startStatus();
showTab();
serverInfo();
setInterval(serverInfo, 5000);
let pending = 0;
document.addEventListener("guidance:session", () => {  // a session changed: the count may have too
  clearTimeout(pending);
  pending = setTimeout(serverInfo, 300);
});
startPlayground().finally(() => { document.body.dataset.ready = "true"; });
