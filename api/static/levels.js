// Series and study hits: the level switch, a card's strip of sampled slices, slice positions for stepping.

import { el } from "./dom.js";
import { loadImage } from "./images.js";

export const NOUNS = { image: ["image", "images"], series: ["series", "series"], study: ["study", "studies"] };
const STRIP = 8; // slices a card's strip shows at most, evenly spread over the sampled ones

export function readLevel() {
  const checked = document.querySelector("input[name=level]:checked");
  return checked ? checked.value : "image";
}

export function setLevel(level) {
  for (const radio of document.querySelectorAll("input[name=level]")) radio.checked = radio.value === level;
}

export function isCase(hit) {
  return Boolean(hit) && (hit.level === "series" || hit.level === "study") && (hit.sampled_image_ids || []).length > 0;
}

export function caseUid(hit) {
  return hit.level === "study" ? hit.study_instance_uid : hit.series_instance_uid;
}

export function noun(level, count) {
  const [one, many] = NOUNS[level] || NOUNS.image;
  return count === 1 ? one : many;
}

function spread(ids, n) {
  if (ids.length <= n) return ids;
  return Array.from({ length: n }, (_, i) => ids[Math.round((i * (ids.length - 1)) / (n - 1))]);
}

// The strip under a case card's key slice: sampled slices in slice order, the key slice marked.
export function caseStrip(hit) {
  const strip = el("span", { className: "strip", "aria-hidden": "true" });
  strip.dataset.testid = "strip";
  for (const id of spread(hit.sampled_image_ids, STRIP)) {
    const img = el("img", { alt: "", decoding: "async" });
    img.dataset.id = String(id);
    if (id === hit.key_image_id) img.classList.add("key");
    loadImage(img, `v1/images/${id}/thumbnail`, "grid");
    strip.append(img);
  }
  return strip;
}

export function caseSummary(hit) {
  const parts = [`${hit.slices_sampled ?? hit.sampled_image_ids.length} of ${hit.slices_total ?? "?"} slices`];
  if (hit.level === "study" && hit.series_count) parts.unshift(`${hit.series_count} series`);
  return parts.join(" · ");
}

// A case's series and study descriptions as one line ("" for an image hit or a case without them)
export function caseDescription(hit) {
  if (!isCase(hit)) return "";
  const parts = hit.level === "series" ? [hit.series_description, hit.study_description] : [hit.study_description];
  return parts.filter(Boolean).join(" · ");
}

// Relative position (0 first slice, 1 last) <-> index, so two cases of different lengths step together.
export function positionOf(index, count) {
  return count > 1 ? index / (count - 1) : 0;
}

export function indexAt(position, count) {
  return Math.min(count - 1, Math.max(0, Math.round(position * (count - 1))));
}
