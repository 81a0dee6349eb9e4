// Side-by-side compare of the query and a hit, with window presets applied by the server from the source DICOM.

import { api, apiJson } from "./api.js";
import { $, basename, el, fmtScore } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { renderUpload } from "./query.js";
import { state } from "./state.js";

const current = { hit: null, query: null, sides: null, window: "", seq: 0, urls: [] };
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
  if (query.kind === "similar") return idInfo(query.pivot.id);
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
    const pictures = await Promise.all(sides.map(([, info]) => picture(info, eligible(info) ? window : "")));
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
  $("compare-query-caption").textContent =
    query.kind === "image" ? `Query · ${query.file.name}` : `Query · ${basename(query.pivot.source)} (image ${query.pivot.id})`;
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
  freeUrls();
  for (const side of ["query", "hit"]) $(`compare-${side}-img`).removeAttribute("src");
  document.body.classList.remove("compare-open");
  $("compare-open").focus();
  return true;
}
