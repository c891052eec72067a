// The page: two tabs (#playground, #status) and a line about the server.

import { get } from "./api.js";
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
    info.textContent = `server not answering: ${err.message}`;
  }
}

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
