// Relevance feedback on the page: "More like this" / "Not like this" on each result, and "Refine with my marks".

import { $, el } from "./dom.js";
import { clear, counts, markOf, marks, onChange, toggle } from "./marks.js";

const LABELS = { like: "More like this", unlike: "Not like this" };
const seen = new Map(); // id -> the result as it was marked (its modality, body part, label, date)
const SYMBOLS = { like: "+", unlike: "−" };

function paint(button) {
  const on = markOf(button.dataset.id) === button.dataset.mark;
  button.setAttribute("aria-pressed", String(on));
  button.classList.toggle("on", on);
  const what = LABELS[button.dataset.mark];
  button.title = on ? `${what} (marked; click to unmark)` : what;
}

function markButton(hit, kind) {
  const button = el("button", { type: "button", className: `mark mark-${kind}`, "aria-label": `${LABELS[kind]}: image ${hit.id}` });
  Object.assign(button.dataset, { testid: `mark-${kind}`, mark: kind, id: String(hit.id) });
  button.append(el("span", { "aria-hidden": "true", textContent: SYMBOLS[kind] }), el("span", { className: "mark-text", textContent: ` ${LABELS[kind]}` }));
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    seen.set(hit.id, hit);
    toggle(hit.id, kind);
  });
  paint(button);
  return button;
}

// A result card with its two mark buttons below it (a card is a button: the marks sit beside it, not in it).
export function withMarks(card, hit) {
  const bar = el("div", { className: "marks", role: "group", "aria-label": `Relevance feedback for image ${hit.id}` }, markButton(hit, "like"), markButton(hit, "unlike"));
  const box = el("div", { className: "card-box" }, card, bar);
  box.classList.toggle("marked-like", markOf(hit.id) === "like");
  box.classList.toggle("marked-unlike", markOf(hit.id) === "unlike");
  box.dataset.id = String(hit.id);
  return box;
}

// The base of a refinement from the query on screen: a text, a pivot's image id, or none (an upload).
export function feedbackBase(query) {
  if (!query) return null;
  if (query.kind === "feedback") return query.base;
  if (query.kind === "text") return { text: query.text };
  if (query.kind === "similar") return { image_id: query.pivot.id };
  return null;
}

// A feedback query built from the current query and the marks as they are now (a snapshot: paging keeps it).
export function feedbackQuery(query) {
  return {
    kind: "feedback",
    base: feedbackBase(query),
    like: [...marks.like],
    unlike: [...marks.unlike],
    origin: query && query.kind === "feedback" ? query.origin : query,
  };
}

function describeBase(base, origin) {
  if (base && base.text) return `“${base.text}”`;
  if (base && base.image_id) return `image ${base.image_id}`;
  return origin && origin.kind === "image" ? `${origin.file.name} (marks only)` : "marks only";
}

export function describeFeedback(query) {
  return `${describeBase(query.base, query.origin)} + ${query.like.length} liked, ${query.unlike.length} not`;
}

// Why the current filters leave out a marked image (modality, body part, label, dates), or null if they admit it.
export function excludedBy(hit, filters) {
  const modality = filters.modality || [];
  if (modality.length && !modality.includes(hit.modality)) return `modality ${hit.modality || "unknown"}`;
  const parts = (filters.body_part || []).map((p) => p.toUpperCase());
  if (parts.length && !parts.includes((hit.body_part || "").toUpperCase())) return `body part ${hit.body_part || "unknown"}`;
  if (filters.label && filters.label !== hit.label) return `label ${hit.label || "none"}`;
  if (filters.date_from && (!hit.study_date || hit.study_date < filters.date_from)) return `date ${hit.study_date || "unknown"}`;
  if (filters.date_to && (!hit.study_date || hit.study_date > filters.date_to)) return `date ${hit.study_date || "unknown"}`;
  return null;
}

// Marked images the filters now hide: said in the marks bar (refining still uses them), not silently gone.
function paintHidden(filters) {
  const note = $("marks-hidden");
  const hidden = [];
  for (const id of [...marks.like, ...marks.unlike]) {
    const hit = seen.get(id);
    const why = hit && filters ? excludedBy(hit, filters) : null;
    if (why) hidden.push(`image ${id} (${why})`);
  }
  note.hidden = !hidden.length;
  note.dataset.count = String(hidden.length);
  note.textContent = hidden.length
    ? `${hidden.length} marked image${hidden.length === 1 ? " is" : "s are"} filtered away: ${hidden.join(", ")}; refining still uses ${hidden.length === 1 ? "it" : "them"}.`
    : "";
}

// Wires the refine and clear controls; `refine(query)` runs a feedback query, `current()` is the query on screen.
export function wireFeedback({ refine, current }) {
  const bar = $("marks-bar");
  const button = $("marks-refine");
  const reset = $("marks-clear");
  const update = () => {
    const n = counts();
    bar.hidden = !(n.like || n.unlike);
    button.textContent = `Refine with my marks (${n.like} liked, ${n.unlike} not)`;
    const base = feedbackBase(current());
    button.disabled = !n.like && !base;
    button.title = button.disabled ? "Mark at least one “More like this” (an uploaded image is not stored, so it cannot be the base)" : "Search again, moved towards the liked and away from the unliked images";
    for (const b of document.querySelectorAll("button.mark")) paint(b);
    for (const box of document.querySelectorAll(".card-box")) {
      box.classList.toggle("marked-like", markOf(box.dataset.id) === "like");
      box.classList.toggle("marked-unlike", markOf(box.dataset.id) === "unlike");
    }
  };
  let filters = null; // those of the results on screen
  onChange(() => {
    update();
    paintHidden(filters);
  });
  document.addEventListener("medsearch:search", update);
  document.addEventListener("medsearch:results", (event) => {
    filters = event.detail.filters;
    paintHidden(filters);
  });
  button.addEventListener("click", () => refine(feedbackQuery(current())));
  reset.addEventListener("click", () => clear());
  update();
}
