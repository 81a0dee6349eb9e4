// Reports on the page: the hybrid toggle, each card's report snippet (the query's words marked) and the detail
// view's report panel (the study's latest report, "n versions"). Report text is only ever set as text nodes.

import { ApiError, apiJson } from "./api.js";
import { $, el, fmtDateTime } from "./dom.js";

// The text request's mode: hybrid when the toggle is on (the API refuses it with a clear 400 outside image level)
export function hybridMode() {
  const toggle = $("hybrid-toggle");
  return toggle && toggle.checked ? { mode: "hybrid" } : {};
}

// Snippet text with its [start, end) ranges wrapped in <mark>: text nodes only, so report content is never markup.
export function markedText(snippet) {
  const parts = [];
  let at = 0;
  for (const [start, end] of snippet.highlights || []) {
    if (start < at || end <= start) continue;
    if (start > at) parts.push(document.createTextNode(snippet.text.slice(at, start)));
    parts.push(el("mark", { textContent: snippet.text.slice(start, end) }));
    at = end;
  }
  if (at < snippet.text.length) parts.push(document.createTextNode(snippet.text.slice(at)));
  if (snippet.cut_start) parts.unshift(document.createTextNode("… "));
  if (snippet.cut_end) parts.push(document.createTextNode(" …"));
  return parts;
}

// A card's report line (null when its study has no report)
export function reportSnippet(hit) {
  if (!hit.snippet) return null;
  const node = el("span", { className: "snippet" }, ...markedText(hit.snippet));
  node.dataset.testid = "snippet";
  node.title = hit.report_versions > 1 ? `latest of ${hit.report_versions} reports` : "the study's report";
  return node;
}

// The detail view's report panel: every stored report of the hit's study, the latest open (asked for only when
// the hit says its study has one: no request, and no 404, for the others)
export async function showStudyReport(hit) {
  const panel = $("detail-report");
  const body = $("detail-report-body");
  body.replaceChildren();
  const uid = hit.report_versions ? hit.study_instance_uid : null;
  panel.hidden = !uid;
  panel.dataset.study = uid || "";
  panel.dataset.loaded = "false";
  $("detail-report-versions").textContent = "";
  if (!uid) return;
  try {
    const answer = await apiJson(`v1/studies/${encodeURIComponent(uid)}/reports`);
    if (panel.dataset.study !== uid) return;
    const n = answer.versions;
    $("detail-report-versions").textContent = `latest of ${n} version${n === 1 ? "" : "s"}`;
    for (const report of answer.reports) body.append(reportBlock(report));
  } catch (err) {
    if (panel.dataset.study !== uid) return;
    const none = err instanceof ApiError && err.status === 404;
    body.append(el("p", { className: "muted", textContent: none ? "No report is stored for this study." : String(err.message || err) }));
  }
  panel.dataset.loaded = "true";
}

function reportBlock(report) {
  const when = report.written_at ? fmtDateTime(report.written_at) : "date unknown";
  const head = `${report.latest ? "Latest" : "Earlier"} · ${report.origin === "sr" ? "DICOM SR" : "imported"} · ${when}`;
  const text = el("p", { className: "report-text", textContent: report.text });
  text.dataset.testid = report.latest ? "report-latest" : "report-earlier";
  const parts = [el("summary", { textContent: head }), text];
  if (report.negated.length) parts.push(el("p", { className: "muted small", textContent: `negated: ${report.negated.join("; ")}` }));
  return el("details", { className: "report-version", open: report.latest }, ...parts);
}
