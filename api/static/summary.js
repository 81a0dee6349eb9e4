// The "Summarize" panel: streams a MedGemma comparison of the query and its top matches (server-sent events
// read with fetch + ReadableStream, since EventSource cannot POST), with the notice and a Cancel button.

import { ApiError, api } from "./api.js";
import { $ } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { setSummaryStandin } from "./header.js";

const MAX_IDS = 10; // the server compares its configured top N of these
const status = { enabled: false, message: "", matches: 4, loaded: false };
const current = { query: null, hits: [], controller: null };

async function loadStatus() {
  try {
    const body = await (await api("v1/summaries/status")).json();
    status.enabled = Boolean(body.enabled);
    status.message = body.message || "";
    status.matches = body.matches || 4;
    status.loaded = true;
    setSummaryStandin(Boolean(body.enabled && body.standin));
  } catch (err) {
    status.enabled = false;
    status.message =
      err && err.code === "unauthorized"
        ? "Enter the API key to use summaries."
        : "The summary status could not be read.";
    status.loaded = false; // asked again with the next results (e.g. once a key is saved)
  }
  updateButton();
}

function updateButton() {
  const button = $("summarize-button");
  button.hidden = !current.hits.length;
  button.disabled = !status.enabled || Boolean(current.controller);
  button.title = status.enabled
    ? `Compare the query with its top ${status.matches} matches (MedGemma; not for diagnosis)`
    : status.message;
  button.textContent = status.enabled ? "Summarize" : "Summarize · off";
  button.dataset.enabled = String(status.enabled);
}

function setState(name, text) {
  $("summary-panel").dataset.state = name;
  $("summary-state").textContent = text;
  $("summary-cancel").hidden = name !== "streaming";
}

function cancel(reason) {
  if (current.controller) {
    current.controller.abort();
    current.controller = null;
    if (reason) setState("cancelled", reason);
  }
  updateButton();
}

function markCompared(ids) {
  const set = new Set(ids.map(String));
  for (const el of document.querySelectorAll("[data-testid=result]")) {
    el.classList.toggle("compared", set.has(el.dataset.id));
  }
}

function buildRequest(shown, hits) {
  const query = shown.kind === "feedback" ? shown.origin : shown; // a refinement compares with the query it refined
  const ids = hits.slice(0, MAX_IDS).map((h) => h.id);
  const scores = hits.slice(0, MAX_IDS).map((h) => h.score);
  if (query.kind === "image") {
    const form = new FormData();
    form.append("file", query.file, query.file.name);
    form.append("match_ids", ids.join(","));
    form.append("scores", scores.join(","));
    if (query.text) form.append("query_text", query.text);
    return { method: "POST", body: form };
  }
  const body = { match_ids: ids, scores };
  if (query.kind === "similar" || (query.kind === "case" && query.pivot)) body.query_id = query.pivot.id; // a case: its key slice
  else body.query_text = query.text;
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

function handle(message, text) {
  if (message.event === "start") {
    $("summary-notice").textContent = message.data.notice;
    markCompared(message.data.compared_ids || []);
    const n = (message.data.compared_ids || []).length;
    setState("streaming", `comparing ${n} match${n === 1 ? "" : "es"} · ${message.data.model}…`);
  } else if (message.event === "chunk") {
    text.textContent += message.data.text;
  } else if (message.event === "done") {
    $("summary-notice").textContent = message.data.notice;
    setState("done", message.data.cached ? "done (from cache)" : "done");
  } else if (message.event === "error") {
    showError($("summary-error"), new ApiError(0, message.data.code, message.data.message));
    setState("error", "stopped by an error");
  }
}

async function summarize() {
  if (!current.query || !current.hits.length || !status.enabled) return;
  cancel();
  const controller = new AbortController();
  current.controller = controller;
  updateButton();
  const panel = $("summary-panel");
  const text = $("summary-text");
  panel.hidden = false;
  text.textContent = "";
  $("summary-notice").textContent = "";
  hideError($("summary-error"));
  setState("streaming", "waiting for the model…");
  try {
    const response = await api("v1/summaries/stream", {
      ...buildRequest(current.query, current.hits),
      signal: controller.signal,
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message) handle(message, text);
      }
    }
    if (panel.dataset.state === "streaming") {
      showError($("summary-error"), new ApiError(0, "summary_bad_reply", "The stream ended early."));
      setState("error", "stopped early");
    }
  } catch (err) {
    if (err && err.name === "AbortError") return;
    showError($("summary-error"), err);
    setState("error", "no summary");
  } finally {
    if (current.controller === controller) current.controller = null;
    updateButton();
  }
}

document.addEventListener("medsearch:search", () => {
  cancel();
  current.hits = [];
  current.query = null;
  $("summary-panel").hidden = true;
  markCompared([]);
  updateButton();
});
document.addEventListener("medsearch:results", (event) => {
  current.query = event.detail.query;
  current.hits = event.detail.hits || [];
  updateButton();
  if (!status.loaded) loadStatus();
});
$("summarize-button").addEventListener("click", summarize);
$("summary-cancel").addEventListener("click", () => cancel("cancelled"));
$("summary-close").addEventListener("click", () => {
  cancel();
  $("summary-panel").hidden = true;
});
loadStatus();
