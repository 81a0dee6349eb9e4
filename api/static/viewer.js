// The detail panel's image viewer: W/L by dragging (rendered by the server from the source), CT presets with their
// numbers, zoom/pan, invert, frames of a multi-frame file, reset. screenToImage() maps the page to source pixels.

import { api, apiJson } from "./api.js";
import { $, el } from "./dom.js";
import { showError } from "./errors.js";

const LEVEL_LIMIT = 1e6; // the route's bounds (GET /v1/images/{id}/view): |wc| <= 1e6, 1 <= ww <= 2e6
const ZOOM_MIN = 1;
const ZOOM_MAX = 8;
const MIN_INTERVAL_MS = 50; // while dragging: one request in flight, at most one every 50 ms, always the latest W/L

const view = {
  id: null,
  frame: null, // null: the image's own frame
  frames: 1,
  wc: null, // null: the default window (the file's, the CT preset in use, or the value range)
  ww: null,
  shown: null, // what the picture on screen shows: {wc, ww, units, origin, frame, invert, columns, rows}
  invert: false,
  zoom: 1,
  panX: 0,
  panY: 0,
  mode: "wl", // pointer drags: "wl", "pan", or "external" (another module, e.g. a region box, owns them)
  inflight: false,
  again: false,
  lastAt: 0,
  blob: null,
  seq: 0,
};
let presets = null;

const stage = () => $("viewer-stage");
const img = () => $("detail-preview");

function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}

function fmt(x) {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

function params() {
  const q = new URLSearchParams();
  if (view.wc !== null) q.set("wc", fmt(view.wc));
  if (view.ww !== null) q.set("ww", fmt(view.ww));
  if (view.frame !== null) q.set("frame", String(view.frame));
  if (view.invert) q.set("invert", "true");
  return q.toString();
}

// Fetch the picture for the current state; while one is in flight only the latest state is fetched next.
async function render() {
  if (view.id === null) return;
  if (view.inflight) {
    view.again = true;
    return;
  }
  const wait = view.lastAt + MIN_INTERVAL_MS - performance.now();
  view.inflight = true;
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const id = view.id;
  const query = params();
  stage().dataset.state = "loading";
  try {
    const response = await api(`v1/images/${id}/view${query ? `?${query}` : ""}`);
    const blob = await response.blob();
    if (id === view.id) await show(response.headers, blob, id);
  } catch (err) {
    if (id === view.id) {
      stage().dataset.state = "error";
      showError($("detail-error"), err);
      if (err && err.code === "window_not_applicable") setWindowable(false);
    }
  } finally {
    view.inflight = false;
    view.lastAt = performance.now();
    if (view.again) {
      view.again = false;
      render();
    }
  }
}

// The new picture is decoded off screen first, then swapped in: the one on screen keeps its pixels (and its natural
// size, which a region box and the zoom map by) until then, instead of being blank while a W/L drag's renders load.
async function show(headers, blob, id) {
  const url = URL.createObjectURL(blob);
  try {
    const next = new Image();
    next.src = url;
    await next.decode(); // now in the page's list of available images: the swap below is immediate
  } catch {
    // not decodable here: the picture element reports it as it always did (its error state)
  }
  if (id !== view.id) {
    URL.revokeObjectURL(url); // another image was opened meanwhile
    return;
  }
  const h = (name) => headers.get(`X-Medsearch-${name}`);
  const [columns, rows] = (h("Size") || "0x0").split("x").map(Number);
  const centre = h("Window-Centre");
  view.shown = {
    wc: centre === null ? null : Number(centre),
    ww: centre === null ? null : Number(h("Window-Width")),
    units: h("Window-Units") || "",
    origin: h("Window-Origin") || "",
    frame: Number(h("Frame") || 1),
    invert: h("Inverted") === "true",
    columns,
    rows,
  };
  view.frames = Number(h("Frames") || 1);
  if (view.blob) URL.revokeObjectURL(view.blob);
  view.blob = url;
  const picture = img();
  picture.onload = () => {
    picture.classList.add("loaded");
    const s = stage();
    view.seq += 1;
    Object.assign(s.dataset, {
      state: "ready",
      seq: String(view.seq),
      image: String(id),
      wc: view.shown.wc === null ? "" : String(view.shown.wc),
      ww: view.shown.ww === null ? "" : String(view.shown.ww),
      frame: String(view.shown.frame),
      invert: String(view.shown.invert),
    });
  };
  picture.src = view.blob;
  setWindowable(view.shown.wc !== null);
  showNumbers();
}

function showNumbers() {
  const s = view.shown;
  const label = $("viewer-wl");
  if (!s || s.wc === null) label.textContent = "W/L: not for this image";
  else label.textContent = `W ${fmt(s.ww)} L ${fmt(s.wc)} ${s.units === "HU" ? "HU" : "(stored values)"}`;
  label.dataset.testid = "viewer-wl";
  const presetsOn = s && s.units === "HU";
  $("viewer-presets").hidden = !presetsOn;
  for (const b of $("viewer-presets").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(!!s && s.wc === Number(b.dataset.wc) && s.ww === Number(b.dataset.ww)));
  }
  const stepper = $("frame-stepper");
  stepper.hidden = view.frames < 2;
  if (s) {
    $("frame-pos").textContent = `frame ${s.frame} of ${view.frames}`;
    $("frame-prev").disabled = s.frame <= 1;
    $("frame-next").disabled = s.frame >= view.frames;
  }
  $("viewer-invert").setAttribute("aria-pressed", String(view.invert));
  $("viewer-zoom-level").textContent = `${Math.round(view.zoom * 100)} %`;
}

function setWindowable(on) {
  stage().dataset.windowable = String(on);
}

function applyTransform() {
  img().style.transform = `translate(${view.panX}px, ${view.panY}px) scale(${view.zoom})`;
  stage().dataset.zoom = String(view.zoom);
  $("viewer-zoom-level").textContent = `${Math.round(view.zoom * 100)} %`;
}

async function loadPresets() {
  if (presets) return;
  try {
    presets = (await apiJson("v1/render/windows")).presets;
  } catch {
    presets = [];
  }
  const box = $("viewer-presets");
  box.replaceChildren(
    ...presets.map((p, i) => {
      const b = el("button", {
        type: "button",
        className: "chip-btn",
        textContent: `${p.name} W ${fmt(p.width)} L ${fmt(p.centre)}`,
        title: `Window ${p.name}: width ${p.width}, level ${p.centre} HU (key ${i + 1})`,
      });
      Object.assign(b.dataset, { testid: `viewer-preset-${p.name}`, wc: String(p.centre), ww: String(p.width) });
      b.addEventListener("click", () => setWindow(p.centre, p.width));
      return b;
    }),
  );
  showNumbers();
}

// -- what other modules call ---------------------------------------------------------------------------

// A new image in the viewer: default window, its own frame, no zoom. keep: the W/L, invert and zoom stay (a
// case's next sampled slice).
export function showInViewer(id, { keep = false } = {}) {
  view.id = id;
  view.frame = null;
  view.frames = 1;
  if (!keep) {
    view.wc = view.ww = null;
    view.invert = false;
    resetTransform();
  }
  img().classList.remove("loaded");
  loadPresets();
  render();
}

export function closeViewer() {
  view.id = null;
  view.shown = null;
  if (view.blob) URL.revokeObjectURL(view.blob);
  view.blob = null;
  img().removeAttribute("src");
}

// A window (centre, width) in the image's units, clamped to the route's bounds.
export function setWindow(centre, width) {
  if (stage().dataset.windowable === "false") return;
  view.wc = clamp(Math.round(centre * 10) / 10, -LEVEL_LIMIT, LEVEL_LIMIT);
  view.ww = clamp(Math.round(width * 10) / 10, 1, 2 * LEVEL_LIMIT);
  render();
}

export function toggleInvert() {
  view.invert = !view.invert;
  render();
}

export function zoomBy(factor, cx = null, cy = null) {
  const zoom = clamp(view.zoom * factor, ZOOM_MIN, ZOOM_MAX);
  if (cx !== null) {
    // keep the point under the cursor in place
    const r = stage().getBoundingClientRect();
    const ox = cx - (r.left + r.width / 2);
    const oy = cy - (r.top + r.height / 2);
    view.panX = ox - ((ox - view.panX) * zoom) / view.zoom;
    view.panY = oy - ((oy - view.panY) * zoom) / view.zoom;
  }
  view.zoom = zoom;
  if (zoom === 1) view.panX = view.panY = 0;
  applyTransform();
}

function resetTransform() {
  view.zoom = 1;
  view.panX = view.panY = 0;
  applyTransform();
}

// Everything back to how the image opened: default window, no invert, no zoom, its own frame.
export function resetViewer() {
  view.wc = view.ww = null;
  view.invert = false;
  view.frame = null;
  resetTransform();
  render();
}

// One frame on (+1) or back (-1) in a multi-frame file; false when there is nothing to step.
export function stepFrame(delta) {
  if (view.id === null || view.frames < 2 || !view.shown) return false;
  const next = clamp((view.frame ?? view.shown.frame) + delta, 1, view.frames);
  if (next === (view.frame ?? view.shown.frame)) return false;
  view.frame = next;
  render();
  return true;
}

// Pointer drags: "wl" (window/level; Shift+drag pans), "pan", or "external" (the viewer leaves drags alone).
export function setPointerMode(mode) {
  view.mode = mode;
  stage().dataset.mode = mode;
  $("viewer-pan").setAttribute("aria-pressed", String(mode === "pan"));
}

// A point on the page (clientX, clientY) in the source frame's pixels: {x, y, inside}; null with no picture.
// x, y are fractional (0,0 the top left corner of the top left pixel); inside says whether the point is on it.
export function screenToImage(clientX, clientY) {
  const picture = img();
  const s = view.shown;
  if (!s || !picture.naturalWidth || !s.columns) return null;
  const r = picture.getBoundingClientRect(); // the element's box with zoom and pan applied
  const fit = Math.min(r.width / picture.naturalWidth, r.height / picture.naturalHeight); // object-fit: contain
  const left = r.left + (r.width - picture.naturalWidth * fit) / 2;
  const top = r.top + (r.height - picture.naturalHeight * fit) / 2;
  const x = ((clientX - left) / (picture.naturalWidth * fit)) * s.columns;
  const y = ((clientY - top) / (picture.naturalHeight * fit)) * s.rows;
  return { x, y, inside: x >= 0 && y >= 0 && x < s.columns && y < s.rows };
}

// The inverse of screenToImage (source pixels to a point on the page), for drawing over the picture; null with none.
export function imageToScreen(x, y) {
  const picture = img();
  const s = view.shown;
  if (!s || !picture.naturalWidth || !s.columns) return null;
  const r = picture.getBoundingClientRect();
  const fit = Math.min(r.width / picture.naturalWidth, r.height / picture.naturalHeight);
  const left = r.left + (r.width - picture.naturalWidth * fit) / 2;
  const top = r.top + (r.height - picture.naturalHeight * fit) / 2;
  return { x: left + (x / s.columns) * picture.naturalWidth * fit, y: top + (y / s.rows) * picture.naturalHeight * fit };
}

// What the picture on screen is of: the source frame's {width, height} and the frame the reader stepped to (0: the
// image's own frame); null before the first picture.
export function shownPicture() {
  const s = view.shown;
  if (!s || !s.columns) return null;
  return { size: { width: s.columns, height: s.rows }, frame: view.frame ?? 0 };
}

// The viewer's keys while the panel is open (not typing): true when the key was the viewer's.
export function viewerKey(event) {
  if (view.id === null || event.ctrlKey || event.metaKey || event.altKey) return false;
  const key = event.key;
  if (key === "+" || key === "=") zoomBy(1.25);
  else if (key === "-" || key === "_") zoomBy(0.8);
  else if (key === "i" || key === "I") toggleInvert();
  else if (key === "r" || key === "R") resetViewer();
  else if (/^[1-9]$/.test(key) && presets && view.shown?.units === "HU" && presets[Number(key) - 1]) {
    const p = presets[Number(key) - 1];
    setWindow(p.centre, p.width);
  } else return false;
  return true;
}

// -- wiring ------------------------------------------------------------------------------------------------

function onPointerDown(event) {
  if (event.button !== 0 || view.mode === "external" || !view.shown) return;
  const pan = view.mode === "pan" || event.shiftKey;
  if (!pan && (view.shown.wc === null || stage().dataset.windowable === "false")) return;
  event.preventDefault();
  const s = stage();
  s.setPointerCapture(event.pointerId);
  s.focus({ preventScroll: true });
  const start = { x: event.clientX, y: event.clientY, panX: view.panX, panY: view.panY };
  const wc0 = view.wc ?? view.shown.wc;
  const ww0 = view.ww ?? view.shown.ww;
  const step = Math.max(ww0, 20) / 200; // one window-width per 200 px, whatever the units
  s.dataset.dragging = pan ? "pan" : "wl";
  const move = (e) => {
    const dx = e.clientX - start.x;
    const dy = e.clientY - start.y;
    if (pan) {
      view.panX = start.panX + dx;
      view.panY = start.panY + dy;
      applyTransform();
    } else {
      // right: wider, down: higher level (darker), as in most PACS viewers
      setWindow(wc0 + dy * step, ww0 + dx * step);
    }
  };
  const up = () => {
    s.removeEventListener("pointermove", move);
    s.removeEventListener("pointerup", up);
    s.removeEventListener("pointercancel", up);
    delete s.dataset.dragging;
  };
  s.addEventListener("pointermove", move);
  s.addEventListener("pointerup", up);
  s.addEventListener("pointercancel", up);
}

export function wireViewer() {
  const s = stage();
  s.addEventListener("pointerdown", onPointerDown);
  s.addEventListener(
    "wheel",
    (event) => {
      if (!view.shown) return;
      event.preventDefault();
      zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX, event.clientY);
    },
    { passive: false },
  );
  $("viewer-invert").addEventListener("click", toggleInvert);
  $("viewer-zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("viewer-zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("viewer-pan").addEventListener("click", () => setPointerMode(view.mode === "pan" ? "wl" : "pan"));
  $("viewer-reset").addEventListener("click", resetViewer);
  $("frame-prev").addEventListener("click", () => stepFrame(-1));
  $("frame-next").addEventListener("click", () => stepFrame(1));
  setPointerMode("wl");
}
