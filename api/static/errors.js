// Error banners: the API's title for the code, its message, and the code with the HTTP status.

import { $ } from "./dom.js";
import { errorTitle } from "./vocabulary.js";

export function showError(box, err) {
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = errorTitle(err.code);
  const msg = document.createElement("span");
  msg.className = "error-message";
  msg.textContent = err.message || String(err);
  const code = document.createElement("code");
  code.textContent = err.status ? `${err.code} · HTTP ${err.status}` : err.code || "error";
  box.append(title, msg, code);
  if (err.code === "unauthorized") {
    const hint = document.createElement("span");
    hint.className = "error-hint";
    hint.textContent = "Enter a key under “API key” at the top right.";
    box.append(hint);
    $("key-box").open = true;
  }
  box.hidden = false;
}

export function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}
