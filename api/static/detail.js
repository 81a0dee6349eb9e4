// The detail panel of one image: large preview, readable metadata, DICOM UIDs, viewer link, actions.

import { apiJson } from "./api.js";
import { openCompare } from "./compare.js";
import { $, basename, el, fmtDateTime, fmtScore } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { releaseImage } from "./images.js";
import { caseSummary, caseUid, isCase } from "./levels.js";
import { showStudyReport } from "./reports.js";
import { state } from "./state.js";
import { closeViewer, showInViewer, shownPicture } from "./viewer.js";

// [field, title, format]; formats turn API values into what a reader expects
const META_FIELDS = [
  ["kind", "Kind"],
  ["modality", "Modality"],
  ["body_part", "Body part"],
  ["view_position", "View position"],
  ["study_date", "Study date"],
  ["sex", "Sex"],
  ["age", "Age"],
  ["manufacturer", "Manufacturer"],
  ["size", "Size (rows × cols)"],
  ["frames", "Frame"],
  ["photometric", "Photometric"],
  ["transfer_syntax", "Transfer syntax", (value, image) => image.transfer_syntax_title || value],
  ["window", "Window"],
  ["label", "Label"],
  ["report", "Report"],
  ["source", "Source"],
  ["indexed_at", "Indexed at", (value) => fmtDateTime(value)],
];

// A series or study hit: its sampled slices in slice order, stepped through with the arrow keys.
const slices = { ids: [], index: 0, key: null };
// The image the viewer shows (the hit, or the slice stepped to): its source frame's size (null until the first
// picture arrives) and frame (0: the image's indexed frame; N: the frame the reader stepped to).
export function shownImage() {
  if (!state.detailHit) return null;
  const id = slices.ids.length ? slices.ids[slices.index] : state.detailHit.id;
  const picture = shownPicture();
  return { id, size: picture ? picture.size : null, frame: picture ? picture.frame : 0 };
}

function showSlice(keep) {
  const id = slices.ids[slices.index];
  const preview = $("detail-preview");
  preview.classList.remove("loaded");
  preview.alt = `Slice ${slices.index + 1} of ${slices.ids.length} (image ${id})`;
  showInViewer(id, { keep }); // the next slice keeps the reader's window, zoom and invert
  $("slice-pos").textContent = `slice ${slices.index + 1} of ${slices.ids.length}${id === slices.key ? " · key slice" : ""}`;
  $("detail").dataset.slice = String(id);
  $("slice-prev").disabled = slices.index === 0;
  $("slice-next").disabled = slices.index === slices.ids.length - 1;
}

// One slice on (+1) or back (-1) in the open case; false when no case is open or the end is reached.
export function stepSlice(delta) {
  if ($("detail").hidden || slices.ids.length < 2) return false;
  const next = Math.min(slices.ids.length - 1, Math.max(0, slices.index + delta));
  if (next === slices.index) return false;
  slices.index = next;
  showSlice(true);
  return true;
}

function detailTitle(rec) {
  const parts = [rec.modality || "unknown modality"];
  if (rec.body_part) parts.push(rec.body_part);
  if (rec.label) parts.push(rec.label);
  if (rec.study_date) parts.push(rec.study_date);
  return parts.join(" · ");
}

export function openDetail(hit, opener) {
  const panel = $("detail");
  state.detailHit = hit;
  state.opener = opener || null;
  for (const c of document.querySelectorAll(".card.selected")) c.classList.remove("selected");
  if (opener && opener.classList.contains("card")) opener.classList.add("selected");
  panel.dataset.id = String(hit.id);
  $("detail-title").textContent = detailTitle(hit);
  const caption = [];
  if (hit.rank !== undefined) caption.push(`rank ${hit.rank}`, `score ${fmtScore(hit.score)}`);
  if (hit.text_score !== null && hit.text_score !== undefined) caption.push(`text p ${fmtScore(hit.text_score)}`);
  caption.push(basename(hit.source));
  if (hit.frame) caption.push(`frame ${hit.frame}`);
  caption.push(`image id ${hit.id}`);
  $("detail-caption").textContent = caption.join(" · ");
  const preview = $("detail-preview");
  preview.removeAttribute("src");
  preview.classList.remove("loaded");
  preview.onload = () => preview.classList.add("loaded");
  preview.alt = `Preview of image ${hit.id}`;
  const stepper = $("slice-stepper");
  delete panel.dataset.slice;
  if (isCase(hit)) {
    slices.ids = hit.sampled_image_ids;
    slices.key = hit.key_image_id ?? hit.id;
    slices.index = Math.max(0, slices.ids.indexOf(slices.key));
    caption.push(`${hit.level} · ${caseSummary(hit)}`);
    $("detail-caption").textContent = caption.join(" · ");
    stepper.hidden = slices.ids.length < 2;
    showSlice(false);
  } else {
    slices.ids = [];
    stepper.hidden = true;
    showInViewer(hit.id);
  }
  panel.dataset.level = hit.level || "image";
  renderUids(hit);
  setViewer(hit.viewer_url);
  const q = state.query;
  const compare = $("compare-open");
  compare.hidden =
    !q ||
    q.kind === "text" ||
    q.kind === "feedback" ||
    (q.kind === "upload" && !q.file) ||
    (q.kind === "similar" && q.pivot.id === hit.id) ||
    (q.kind === "case" && (!q.pivot || caseUid(q.pivot) === caseUid(hit)));
  hideError($("detail-error"));
  const meta = $("detail-meta");
  meta.replaceChildren();
  meta.dataset.loaded = "false";
  panel.hidden = false;
  document.body.classList.add("detail-open");
  $("detail-close").focus();
  loadMeta(hit.id);
  showStudyReport(hit);
}

async function loadMeta(id) {
  try {
    const image = await apiJson(`v1/images/${id}`);
    if (!state.detailHit || state.detailHit.id !== id) return;
    image.size = image.rows && image.columns ? `${image.rows} × ${image.columns}` : null;
    image.frames = `${image.frame} of ${image.number_of_frames}`;
    const meta = $("detail-meta");
    for (const [key, title, format] of META_FIELDS) {
      const value = image[key];
      if (value === null || value === undefined || value === "") continue;
      const dd = el("dd", { textContent: String(format ? format(value, image) : value) });
      dd.dataset.field = key;
      if (key === "transfer_syntax") dd.title = value;
      meta.append(el("dt", { textContent: title }), dd);
    }
    meta.dataset.loaded = "true";
    renderUids(image);
    if (image.viewer_url) setViewer(image.viewer_url);
    $("detail-title").textContent = detailTitle(image);
  } catch (err) {
    if (state.detailHit && state.detailHit.id === id) showError($("detail-error"), err);
  }
}

function renderUids(rec) {
  const box = $("detail-uids");
  box.replaceChildren();
  const rows = [
    ["study", "Study Instance UID", rec.study_instance_uid],
    ["series", "Series Instance UID", rec.series_instance_uid],
    ["sop", "SOP Instance UID", rec.sop_instance_uid],
  ];
  for (const [key, title, value] of rows) {
    const code = el("code", { textContent: value || "—" });
    code.dataset.uid = key;
    code.dataset.testid = `uid-${key}`;
    const dd = el("dd", {}, code);
    if (value) {
      const copy = el("button", { type: "button", className: "icon-btn copy", textContent: "Copy", "aria-label": `Copy ${title}` });
      copy.addEventListener("click", () => copyText(value, copy, code));
      dd.append(copy);
    }
    box.append(el("dt", { textContent: title }), dd);
  }
}

async function copyText(text, button, code) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(code);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    button.textContent = "Selected";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

function setViewer(url) {
  const link = $("viewer-link");
  if (url) {
    link.href = url;
    link.hidden = false;
  } else {
    link.removeAttribute("href");
    link.hidden = true;
  }
}

export function closeDetail() {
  const panel = $("detail");
  if (panel.hidden) return;
  panel.hidden = true;
  document.body.classList.remove("detail-open");
  closeViewer();
  releaseImage("detail");
  slices.ids = [];
  state.detailHit = null;
  for (const c of document.querySelectorAll(".card.selected")) c.classList.remove("selected");
  const opener = state.opener;
  state.opener = null;
  if (opener && document.body.contains(opener)) opener.focus();
}

export function compareDetail() {
  if (state.detailHit) openCompare(state.detailHit);
}
