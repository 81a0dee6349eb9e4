// Running a search: one request per query kind built from one filter object, results rendered in order.

import { apiJson } from "./api.js";
import { renderContext } from "./context.js";
import { $ } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { appendFilters, readFilters } from "./filters.js";
import { setStandin } from "./header.js";
import { caseForm, readRerank } from "./cases.js";
import { readLevel } from "./levels.js";
import { readK } from "./query.js";
import { hybridMode } from "./reports.js";
import { clearResults, renderQuerySummary, renderResults } from "./results.js";
import { state } from "./state.js";

// `level` (and `rerank`, series/study levels only) is sent only when it is not the default "image" (requests stay
// as they were at image level)
export function buildRequest(query, offset, k, filters, level = "image", rerank = "none") {
  const levels = level === "image" ? {} : { level, ...(rerank === "none" ? {} : { rerank }) };
  if (query.kind === "upload") {
    const form = appendFilters(caseForm(query, level, level === "image" ? "none" : rerank), { k, offset, ...filters });
    return ["v1/search/case", { method: "POST", body: form }];
  }
  if (query.kind === "case") {
    const params = appendFilters(new URLSearchParams({ level, ...levels }), { k, offset, ...filters });
    const route = query.case === "study" ? "studies" : "series";
    return [`v1/${route}/${encodeURIComponent(query.uid)}/similar?${params}`, { method: "GET" }];
  }
  if (query.kind === "image") {
    const form = new FormData();
    form.append("file", query.file, query.file.name);
    if (query.text) {
      form.append("text", query.text);
      form.append("text_weight", String(query.weight));
    }
    appendFilters(form, { k, offset, ...filters });
    for (const [key, value] of Object.entries(levels)) form.append(key, value);
    if (query.roi) form.append("roi", query.roi.join(","));
    if (query.roi && query.frame) form.append("frame", String(query.frame)); // the frame the preview showed
    return ["v1/search/image", { method: "POST", body: form }];
  }
  if (query.kind === "feedback") {
    const body = JSON.stringify({ ...query.base, like: query.like, unlike: query.unlike, k, offset, ...levels, ...filters });
    return ["v1/search/feedback", { method: "POST", headers: { "Content-Type": "application/json" }, body }];
  }
  if (query.kind === "text") {
    const body = JSON.stringify({ text: query.text, k, offset, ...levels, ...filters, ...hybridMode() });
    return ["v1/search/text", { method: "POST", headers: { "Content-Type": "application/json" }, body }];
  }
  const params = appendFilters(new URLSearchParams(levels), { k, offset, ...filters });
  if (query.roi) params.set("roi", query.roi.join(","));
  if (query.roi && query.frame) params.set("frame", String(query.frame)); // another frame than the indexed one
  return [`v1/images/${query.pivot.id}/similar?${params}`, { method: "GET" }];
}

export async function run(query, offset) {
  const k = readK();
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;
  state.query = query;
  $("intro").hidden = true;
  hideError($("error"));
  document.body.dataset.state = "loading";
  $("results").setAttribute("aria-busy", "true");
  $("status").textContent = "Searching…";
  renderQuerySummary(query);
  renderContext(null);
  document.dispatchEvent(new CustomEvent("medsearch:search", { detail: { query } }));
  const started = performance.now();
  try {
    const level = readLevel();
    const filters = readFilters();
    if (level !== "image" || query.kind === "case" || query.kind === "upload") {
      delete filters.group_by; // image-level options: a case hit is already one per series or study
      delete filters.show_duplicates;
    }
    const [path, options] = buildRequest(query, offset, k, filters, level, readRerank());
    const body = await apiJson(path, { ...options, signal: controller.signal });
    if (seq !== state.seq) return;
    state.offset = body.offset;
    state.k = body.k;
    setStandin(Boolean(body.standin_model));
    renderResults(body, seq, filters);
    renderContext(body.context);
    document.body.dataset.level = body.level || "image";
    document.dispatchEvent(new CustomEvent("medsearch:results", { detail: { query, hits: body.hits, filters } }));
    const ms = Math.round(performance.now() - started);
    const n = body.hits.length;
    $("status").textContent = `${n} result${n === 1 ? "" : "s"} · ${ms} ms`;
  } catch (err) {
    if (err && err.name === "AbortError") return;
    if (seq !== state.seq) return;
    showError($("error"), err);
    clearResults();
    $("status").textContent = "";
  } finally {
    if (seq === state.seq) {
      document.body.dataset.state = "idle";
      $("results").removeAttribute("aria-busy");
    }
  }
}

export function rerun() {
  if (state.query) run(state.query, 0);
}
