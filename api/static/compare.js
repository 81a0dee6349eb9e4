// Side-by-side compare of the query and a hit, with window presets applied by the server from the source DICOM;
// two series or studies scroll in step by relative position (the same fraction of the way through each).

import { api, apiJson } from "./api.js";
import { $, basename, el, fmtScore } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { indexAt, isCase, positionOf } from "./levels.js";
import { renderUpload } from "./query.js";
import { state } from "./state.js";

const current = { hit: null, query: null, sides: null, window: "", seq: 0, urls: [], cases: null, position: 0 };
let presets = null; // GET v1/render/windows, read once

function describe(info) {
  if (!info) return "no image";
  if (info.kind !== "dicom") return "a PNG/JPEG/TIFF picture";
  return `${info.modality || "no modality"} (DICOM)`;
}

function eligible(info) {
  return Boolean(presets && info && info.kind === "dicom" && info.modality === presets.modality);
}

async function idInfo(id) {
  const image = await apiJson(`v1/images/${id}`);
  return { kind: image.kind, modality: image.modality || "", window: image.window || "", id };
}

async function queryInfo(query) {
  if (query.kind === "similar" || query.kind === "case") return idInfo(query.pivot.id);
  if (state.queryInfo && state.file === query.file) return { ...state.queryInfo, file: query.file };
  const rendered = await renderUpload(query.file, { size: "thumbnail" });
  URL.revokeObjectURL(rendered.url);
  return { kind: rendered.kind, modality: rendered.modality, window: rendered.window, file: query.file };
}

async function picture(info, window) {
  if (info.file) {
    const rendered = await renderUpload(info.file, { window: window || null });
    return { url: rendered.url, window: rendered.window };
  }
  const path = `v1/images/${info.id}/preview${window ? `?window=${encodeURIComponent(window)}` : ""}`;
  const response = await api(path);
  const applied = response.headers.get("X-Medsearch-Window") || info.window;
  return { url: URL.createObjectURL(await response.blob()), window: applied };
}

// The slice each side shows: with two cases, the one at the current relative position of each.
function shown(name) {
  const info = current.sides[name];
  if (!current.cases) return info;
  const ids = current.cases[name];
  return { ...info, id: ids[indexAt(current.position, ids.length)] };
}

function showPosition() {
  if (!current.cases) return;
  const { query, hit } = current.cases;
  const at = (ids) => indexAt(current.position, ids.length) + 1;
  $("compare-position").value = String(current.position);
  $("compare-pos").textContent = `query slice ${at(query)} of ${query.length} · hit slice ${at(hit)} of ${hit.length}`;
  $("compare").dataset.position = current.position.toFixed(4);
}

// Both cases one step (of the longer one) on or back; false when not comparing two cases or at an end.
export function stepCompare(delta) {
  if (!current.cases || $("compare").hidden) return false;
  const steps = Math.max(current.cases.query.length, current.cases.hit.length) - 1;
  const next = Math.min(1, Math.max(0, Math.round(current.position * steps + delta) / steps));
  if (next === current.position) return false;
  moveTo(next);
  return true;
}

function moveTo(position) {
  current.position = position;
  showPosition();
  draw(current.window);
}

function freeUrls() {
  for (const url of current.urls) URL.revokeObjectURL(url);
  current.urls = [];
}

async function draw(window) {
  const seq = ++current.seq;
  current.window = window;
  const panel = $("compare");
  panel.dataset.state = "loading";
  panel.dataset.window = window;
  for (const button of $("compare-presets").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === window));
  }
  hideError($("compare-error"));
  try {
    const sides = [
      ["query", current.sides.query],
      ["hit", current.sides.hit],
    ];
    const pictures = await Promise.all(sides.map(([name, info]) => picture(shown(name), eligible(info) ? window : "")));
    if (seq !== current.seq) {
      for (const p of pictures) URL.revokeObjectURL(p.url);
      return;
    }
    freeUrls();
    sides.forEach(([name], i) => {
      const img = $(`compare-${name}-img`);
      img.src = pictures[i].url;
      img.dataset.window = pictures[i].window;
      current.urls.push(pictures[i].url);
      $(`compare-${name}-window`).textContent = pictures[i].window ? `window ${pictures[i].window}` : "";
    });
    panel.dataset.state = "ready";
  } catch (err) {
    if (seq !== current.seq) return;
    showError($("compare-error"), err);
    panel.dataset.state = "error";
  }
}

function renderPresets() {
  const bar = $("compare-presets");
  bar.replaceChildren();
  const usable = ["query", "hit"].filter((side) => eligible(current.sides[side]));
  const choices = [["", "As indexed"], ...(presets ? presets.presets.map((p) => [p.name, p.name.replace("-", " ")]) : [])];
  for (const [value, text] of choices) {
    const button = el("button", { type: "button", className: "ghost small", textContent: text });
    button.dataset.window = value;
    button.dataset.testid = `preset-${value || "indexed"}`;
    if (value) {
      const p = presets.presets.find((x) => x.name === value);
      button.title = `W ${p.width} / C ${p.centre} (${p.low} to ${p.high} HU)`;
      button.disabled = usable.length === 0;
    }
    button.addEventListener("click", () => draw(value));
    bar.append(button);
  }
  const note = $("compare-note");
  const modality = presets ? presets.modality : "CT";
  const others = ["query", "hit"].filter((side) => !usable.includes(side));
  if (!usable.length) {
    note.textContent = `Window presets are off: they apply to ${modality} DICOM images, and the query is ${describe(current.sides.query)}, the hit ${describe(current.sides.hit)}.`;
  } else if (others.length) {
    note.textContent = `Presets change the ${usable[0]} only: the ${others[0]} is ${describe(current.sides[others[0]])} (presets apply to ${modality} DICOM).`;
  } else {
    note.textContent = `Presets are applied by the server to the source DICOM of both images (${modality}, Hounsfield units).`;
  }
  note.dataset.presets = usable.length ? "on" : "off";
}

export function wireCompareStepper() {
  $("compare-position").addEventListener("input", (event) => current.cases && moveTo(Number(event.target.value)));
  $("compare").querySelector(".compare-body").addEventListener(
    "wheel",
    (event) => {
      if (current.cases && stepCompare(Math.sign(event.deltaY))) event.preventDefault();
    },
    { passive: false },
  );
}

export async function openCompare(hit) {
  const query = state.query;
  if (!query || query.kind === "text" || query.kind === "feedback") return;
  freeUrls();
  current.hit = hit;
  current.query = query;
  const panel = $("compare");
  panel.hidden = false;
  panel.dataset.state = "loading";
  document.body.classList.add("compare-open");
  current.cases = isCase(hit) && query.kind === "case" && isCase(query.pivot) ? { query: query.pivot.sampled_image_ids, hit: hit.sampled_image_ids } : null;
  current.position = current.cases ? positionOf(Math.max(0, current.cases.hit.indexOf(hit.key_image_id)), current.cases.hit.length) : 0;
  $("compare-stepper").hidden = !current.cases;
  showPosition();
  $("compare-query-caption").textContent =
    query.kind === "image"
      ? `Query · ${query.file.name}`
      : query.kind === "case"
        ? `Query ${query.case} · ${basename(query.pivot.source)}`
        : `Query · ${basename(query.pivot.source)} (image ${query.pivot.id})`;
  $("compare-hit-caption").textContent = `Hit #${hit.rank ?? "–"} · score ${fmtScore(hit.score)} · ${basename(hit.source)}`;
  $("compare-presets").replaceChildren();
  $("compare-note").textContent = "";
  $("compare-close").focus();
  try {
    if (!presets) presets = await apiJson("v1/render/windows");
    const [q, h] = await Promise.all([queryInfo(query), idInfo(hit.id)]);
    if (current.hit !== hit) return;
    current.sides = { query: q, hit: h };
    renderPresets();
    await draw("");
  } catch (err) {
    showError($("compare-error"), err);
    panel.dataset.state = "error";
  }
}

export function closeCompare() {
  const panel = $("compare");
  if (panel.hidden) return false;
  panel.hidden = true;
  current.seq++;
  current.hit = null;
  current.cases = null;
  freeUrls();
  for (const side of ["query", "hit"]) $(`compare-${side}-img`).removeAttribute("src");
  document.body.classList.remove("compare-open");
  $("compare-open").focus();
  return true;
}
