// The query form: the chosen file and its preview (rendered by the server for DICOM), text, weight and k.

import { api } from "./api.js";
import { $, formatBytes } from "./dom.js";
import { state } from "./state.js";

// The upload as the indexer sees it: POST v1/render -> {url (a blob URL the caller frees), kind, modality, window}.
export async function renderUpload(file, { size = "preview", window = null, signal } = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("size", size);
  if (window) form.append("window", window);
  const response = await api("v1/render", { method: "POST", body: form, signal });
  const blob = await response.blob();
  const [width, height] = (response.headers.get("X-Medsearch-Size") || "").split("x").map(Number);
  return {
    url: URL.createObjectURL(blob),
    kind: response.headers.get("X-Medsearch-Kind") || "",
    modality: response.headers.get("X-Medsearch-Modality") || "",
    window: response.headers.get("X-Medsearch-Window") || "",
    width: width || 0, // the source frame (the picture may be scaled down) and its number: a region's frame
    height: height || 0,
    frame: Number(response.headers.get("X-Medsearch-Frame")) || 0,
    frames: Number(response.headers.get("X-Medsearch-Frames")) || 1,
  };
}

function showIcon(file, why) {
  const thumb = $("file-thumb");
  thumb.hidden = true;
  thumb.removeAttribute("src");
  const ext = (file.name.split(".").pop() || "").toUpperCase();
  $("file-icon").textContent = /^(PNG|JPE?G|TIFF?)$/.test(ext) ? ext.slice(0, 4) : "DCM";
  $("file-icon").hidden = false;
  $("file-icon").title = why || "";
}

function showThumb(url, source) {
  const thumb = $("file-thumb");
  thumb.src = url;
  thumb.dataset.source = source;
  thumb.hidden = false;
  $("file-icon").hidden = true;
  for (const img of document.querySelectorAll("[data-testid=query-thumb]")) img.src = url;
  $("query-preview-img").src = url;
  $("query-preview").hidden = false;
}

async function previewFromServer(file) {
  try {
    const rendered = await renderUpload(file, { size: "thumbnail" });
    if (state.file !== file) {
      URL.revokeObjectURL(rendered.url);
      return;
    }
    state.fileUrl = rendered.url;
    const { kind, modality, window, width, height, frame, frames } = rendered;
    state.queryInfo = { kind, modality, window, width, height, frame, frames };
    $("query-preview").dataset.frame = String(frame);
    $("file-thumb").dataset.window = rendered.window;
    showThumb(rendered.url, "server");
  } catch (err) {
    if (state.file === file) showIcon(file, `no preview: ${err.message || err}`); // the search shows the error
  }
}

export function setFile(file) {
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.fileUrl = null;
  state.queryInfo = null;
  state.file = file || null;
  const thumb = $("file-thumb");
  thumb.onerror = () => file && showIcon(file, "the browser cannot show this picture");
  delete thumb.dataset.window;
  $("query-preview").hidden = true;
  delete $("query-preview").dataset.frame;
  $("query-preview-img").removeAttribute("src");
  if (!file) {
    $("drop-empty").hidden = false;
    $("drop-file").hidden = true;
    $("file-input").value = "";
    thumb.hidden = true;
    thumb.removeAttribute("src");
    updateWeight();
    return;
  }
  $("drop-empty").hidden = true;
  $("drop-file").hidden = false;
  $("file-name").textContent = file.name;
  $("file-name").title = file.name;
  $("file-size").textContent = formatBytes(file.size);
  if (/^image\/(png|jpeg|gif|webp)$/.test(file.type)) {
    state.fileUrl = URL.createObjectURL(file);
    const info = (state.queryInfo = { kind: "raster", modality: "", window: "", width: 0, height: 0, frame: 0, frames: 1 });
    const preview = $("query-preview-img");
    preview.addEventListener("load", () => Object.assign(info, { width: preview.naturalWidth, height: preview.naturalHeight }), { once: true }); // decoded by the browser at full size
    showThumb(state.fileUrl, "browser");
  } else {
    showIcon(file, "rendering…");
    previewFromServer(file);
  }
  updateWeight();
}

export function queryFromForm() {
  const text = $("text-input").value.trim();
  if (state.file) return { kind: "image", file: state.file, text, weight: Number($("text-weight").value) };
  if (text) return { kind: "text", text };
  return null;
}

export function readK() {
  const k = Math.round(Number($("k-input").value));
  const clamped = Number.isFinite(k) ? Math.min(1000, Math.max(1, k)) : 20;
  $("k-input").value = clamped;
  return clamped;
}

export function updateWeight() {
  const both = Boolean(state.file) && Boolean($("text-input").value.trim());
  $("text-weight").disabled = !both;
  $("weight-field").classList.toggle("disabled", !both);
  $("text-weight-out").textContent = Number($("text-weight").value).toFixed(2);
}
