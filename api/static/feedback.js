// Relevance feedback on the page: "More like this" / "Not like this" on each result, and "Refine with my marks".

import { $, el } from "./dom.js";
import { clear, counts, markOf, marks, onChange, toggle } from "./marks.js";

const LABELS = { like: "More like this", unlike: "Not like this" };
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
  onChange(update);
  document.addEventListener("medsearch:search", update);
  button.addEventListener("click", () => refine(feedbackQuery(current())));
  reset.addEventListener("click", () => clear());
  update();
}
