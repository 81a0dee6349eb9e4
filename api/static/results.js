// The results: the header (query, total, page, active filters), the grid of cards and the pager.

import { $, basename, el, fmtScore } from "./dom.js";
import { openDetail } from "./detail.js";
import { describeFeedback, withMarks } from "./feedback.js";
import { describeFilters } from "./filters.js";
import { loadImage } from "./images.js";
import { caseDescription, caseStrip, caseSummary, isCase, noun } from "./levels.js";
import { findingChips } from "./probes.js";
import { reportSnippet } from "./reports.js";
import { describeRegion } from "./roi.js";
import { state } from "./state.js";

const EMPTY = "No images match this query and these filters.";

export function clearResults() {
  for (const url of state.gridBlobs) URL.revokeObjectURL(url);
  state.gridBlobs = [];
  if (state.observer) state.observer.disconnect();
  $("results").replaceChildren();
  state.hits = [];
  $("empty").hidden = true;
  $("pager").hidden = true;
  $("results-header").hidden = true;
}

export function renderQuerySummary(query) {
  const box = $("query-summary");
  box.replaceChildren();
  const kind = el("span", { className: "kind" });
  const what = el("span", { className: "what" });
  delete box.dataset.pivot;
  box.dataset.kind = query.kind === "similar" ? "similar" : query.kind;
  if (query.kind === "image") {
    kind.textContent = query.text ? "image + text" : "image";
    what.textContent = query.text ? `${query.file.name} + “${query.text}”` : query.file.name;
    if (query.roi) what.textContent += ` · ${describeRegion(query.roi)}${query.frame ? ` of frame ${query.frame}` : ""}`;
    const thumb = el("img", { className: "query-thumb", alt: `Query ${query.file.name}` });
    thumb.dataset.testid = "query-thumb";
    if (state.fileUrl) thumb.src = state.fileUrl;
    box.append(thumb, kind, what);
    return;
  }
  if (query.kind === "feedback") {
    kind.textContent = "refined";
    what.textContent = describeFeedback(query);
    box.append(kind, what);
    return;
  }
  if (query.kind === "upload") {
    kind.textContent = "uploaded case";
    what.textContent = query.name;
    box.append(kind, what);
    return;
  }
  if (query.kind === "case") {
    kind.textContent = `similar to ${query.case}`;
    what.textContent = query.pivot ? `${basename(query.pivot.source)} · ${query.uid}` : query.uid;
    box.dataset.case = query.uid;
    box.append(kind, what);
    return;
  }
  if (query.kind === "text") {
    kind.textContent = "text";
    what.textContent = `“${query.text}”`;
    box.append(kind, what);
    return;
  }
  kind.textContent = "similar to";
  const p = query.pivot;
  what.textContent = `${basename(p.source)}${p.label ? ` · ${p.label}` : ""} (image ${p.id})`;
  if (query.roi) what.textContent += ` · ${describeRegion(query.roi)}${query.frame ? ` of frame ${query.frame}` : ""}`;
  const back = el("button", { type: "button", className: "link", textContent: "show it" });
  back.dataset.testid = "pivot-open";
  back.addEventListener("click", () => openDetail({ ...p, rank: undefined, score: undefined, text_score: null }, back));
  box.dataset.pivot = String(p.id);
  box.append(kind, what, back);
}

function renderHeader(body, filters) {
  const n = body.hits.length;
  const level = body.level || "image";
  const things = noun(level, body.total);
  const page = Math.floor(body.offset / body.k) + 1;
  const total = $("results-total");
  total.textContent = n
    ? `Results ${body.offset + 1}–${body.offset + n} of ${body.total} ${things}`
    : `No results among ${body.total} ${things}`;
  total.title = `indexed ${noun(level, 2)} the filters admit (before exclusions and grouping)`;
  total.dataset.level = level;
  total.dataset.total = String(body.total);
  $("results-page").textContent = `page ${page}`;
  $("results-page").dataset.page = String(page);
  const region = $("results-region"); // as the API recorded it, not as the page asked
  region.textContent = body.roi ? describeRegion(body.roi) : "";
  region.hidden = !body.roi;
  const box = $("results-filters");
  const parts = describeFilters(filters);
  box.replaceChildren(...parts.map((text) => el("span", { className: "filter-chip", textContent: text })));
  if (!parts.length) box.append(el("span", { className: "muted", textContent: "no filters" }));
  $("results-header").hidden = false;
}

export function renderResults(body, seq, filters) {
  clearResults();
  const grid = $("results");
  state.hits = body.hits;
  for (const hit of body.hits) grid.append(withMarks(card(hit), hit));
  grid.dataset.seq = String(seq);
  grid.dataset.query = body.query;
  // the API says why a search is empty (nothing indexed, which filter matches nothing): show it, not a generic line
  $("empty").textContent = body.empty_reason ? `No results: ${body.empty_reason}.` : EMPTY;
  $("empty").hidden = body.hits.length > 0;
  renderHeader(body, filters);
  const more = body.hits.length >= body.k;
  $("pager").hidden = !(more || body.offset > 0);
  $("page-prev").disabled = body.offset === 0;
  $("page-next").disabled = !more;
  $("page-info").textContent = $("results-page").textContent;
}

function card(hit) {
  const name = basename(hit.source);
  const node = el("button", {
    type: "button",
    className: "card",
    "aria-label": `Rank ${hit.rank}, score ${fmtScore(hit.score)}, ${hit.modality || "unknown modality"}, ${hit.label || name}`,
  });
  Object.assign(node.dataset, { testid: "result", id: String(hit.id), rank: String(hit.rank), score: String(hit.score), source: name });
  node.dataset.level = hit.level || "image";
  if (isCase(hit)) {
    node.classList.add("case-card");
    node.dataset.uid = hit.level === "study" ? hit.study_instance_uid : hit.series_instance_uid;
    node.dataset.slices = hit.sampled_image_ids.join(",");
    node.setAttribute("aria-label", `Rank ${hit.rank}, ${hit.level}, score ${fmtScore(hit.score)}, ${hit.modality || "unknown modality"}, ${caseSummary(hit)}`);
  }

  const thumb = el("span", { className: "thumb" });
  const img = el("img", { alt: "", decoding: "async" });
  img.dataset.testid = "thumb";
  img.addEventListener("error", () => thumb.classList.add("broken"));
  loadImage(img, hit.thumbnail_url, "grid");
  const score = el("span", { className: "score", textContent: fmtScore(hit.score), title: "cosine similarity" });
  score.dataset.testid = "score";
  thumb.append(img, el("span", { className: "rank", textContent: `#${hit.rank}` }), score);
  if (hit.text_score !== null && hit.text_score !== undefined) {
    const ts = el("span", { className: "text-score", textContent: `text p ${Number(hit.text_score).toFixed(2)}` });
    ts.title = "calibrated text–image probability";
    ts.dataset.testid = "text-score";
    thumb.append(ts);
  }
  if (hit.duplicates) {
    const dup = el("span", { className: "dupes", textContent: `+${hit.duplicates} cop${hit.duplicates === 1 ? "y" : "ies"}` });
    dup.title = "near-identical images folded into this one (show them with “Show duplicates”)";
    dup.dataset.testid = "duplicates";
    thumb.append(dup);
  }
  const bar = el("span", { className: "bar" });
  bar.style.setProperty("--w", `${Math.max(0, Math.min(1, hit.score)) * 100}%`);
  thumb.append(bar);

  const line = el("span", { className: "line" }, el("span", { className: "mod", textContent: hit.modality || "?" }));
  if (hit.body_part) line.append(el("span", { className: "bp", textContent: hit.body_part }));
  const label = el("span", { className: "label", textContent: hit.label || "unlabelled" });
  if (!hit.label) label.classList.add("muted");
  const date = el("span", { className: "date", textContent: hit.study_date || "no date" });
  date.dataset.testid = "date";
  const src = el("span", { className: "src", title: `${hit.study_date || "no study date"} · ${hit.source}` });
  src.append(date, ` · ${name}${hit.frame > 1 ? ` · frame ${hit.frame}` : ""}`);
  const parts = [thumb];
  if (isCase(hit)) {
    parts.push(caseStrip(hit));
    const slices = el("span", { className: "slices", textContent: `${hit.level} · ${caseSummary(hit)}` });
    slices.dataset.testid = "slices";
    line.append(slices);
  }
  const about = caseDescription(hit);
  const described = about ? el("span", { className: "case-desc", textContent: about, title: about }) : null;
  if (described) described.dataset.testid = "case-description";
  node.append(
    ...parts,
    el("span", { className: "card-meta" }, line, described, label, findingChips(hit), reportSnippet(hit), src),
  );
  node.addEventListener("click", () => openDetail(hit, node));
  return node;
}
