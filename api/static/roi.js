// Region queries on the page: drag a box on a picture, read it in the source image's pixels, search by it.

import { el } from "./dom.js";

export const MIN_SIDE = 8; // as the API (retrieval/imaging/roi.py): smaller regions are refused

// Where the picture's pixels are on screen: an <img> with object-fit: contain (letterboxed in its box).
function contentRect(img) {
  const rect = img.getBoundingClientRect();
  const boxW = img.clientWidth;
  const boxH = img.clientHeight;
  const nw = img.naturalWidth || boxW;
  const nh = img.naturalHeight || boxH;
  const scale = Math.min(boxW / nw, boxH / nh);
  return {
    left: rect.left + img.clientLeft + (boxW - nw * scale) / 2,
    top: rect.top + img.clientTop + (boxH - nh * scale) / 2,
    width: nw * scale,
    height: nh * scale,
  };
}

// Pictures another module transforms (the viewer's zoom and pan): its own mapping both ways, null when it has none.
const mappers = new Map();

// THE mapping from the screen to the source image (fractional pixels, clamped to the image). `size` is the source
// frame's {width, height}: the picture on screen may be a scaled rendering. The viewer's zoom/pan (viewer.js's
// screenToImage) replaces this one function; fromImage below is its inverse, only for drawing the box.
export function toImage(img, clientX, clientY, size) {
  const mapped = mappers.get(img);
  if (mapped) {
    const p = mapped.toImage(clientX, clientY);
    if (p) return { x: Math.min(size.width, Math.max(0, p.x)), y: Math.min(size.height, Math.max(0, p.y)) };
  }
  const r = contentRect(img);
  const clamp = (t) => Math.min(1, Math.max(0, t));
  return { x: clamp((clientX - r.left) / r.width) * size.width, y: clamp((clientY - r.top) / r.height) * size.height };
}

function fromImage(img, x, y, size) {
  const mapped = mappers.get(img);
  const p = mapped ? mapped.fromImage(x, y) : null;
  if (p) return p;
  const r = contentRect(img);
  return { x: r.left + (x / size.width) * r.width, y: r.top + (y / size.height) * r.height };
}

// The region [x, y, w, h] in whole source pixels covering the box between two source points.
export function regionOf(a, b) {
  const x = Math.floor(Math.min(a.x, b.x));
  const y = Math.floor(Math.min(a.y, b.y));
  return [x, y, Math.ceil(Math.max(a.x, b.x)) - x, Math.ceil(Math.max(a.y, b.y)) - y];
}

export function describeRegion(region) {
  return `region ${region.join(",")}`;
}

const drawers = [];

function draw(d) {
  if (!d.region || !d.sizeNow) return;
  const [x, y, w, h] = d.region;
  const host = d.host.getBoundingClientRect();
  const a = fromImage(d.img, x, y, d.sizeNow);
  const b = fromImage(d.img, x + w, y + h, d.sizeNow);
  Object.assign(d.box.style, {
    left: `${a.x - host.left}px`,
    top: `${a.y - host.top}px`,
    width: `${b.x - a.x}px`,
    height: `${b.y - a.y}px`,
  });
  d.box.hidden = false;
}

function showBar(d) {
  const [, , w, h] = d.region;
  const small = w < MIN_SIDE || h < MIN_SIDE;
  d.label.textContent = `${describeRegion(d.region)} · ${w} × ${h} px${small ? ` · too small (at least ${MIN_SIDE} × ${MIN_SIDE})` : ""}`;
  d.go.disabled = small;
  d.bar.hidden = false;
  d.host.dataset.roi = d.region.join(",");
}

function clear(d) {
  d.start = null;
  d.region = null;
  d.box.hidden = true;
  d.bar.hidden = true;
  delete d.host.dataset.roi;
  delete d.host.dataset.searched;
  d.host.classList.remove("roi-armed");
  if (d.armButton) d.armButton.setAttribute("aria-pressed", "false");
}

// Escape: a box being drawn or waiting for its search goes away, and an armed picture disarms (true when there was
// one, so Escape does nothing else). A box already searched stays: it shows what the results are of.
export function cancelRoi() {
  let any = false;
  for (const d of drawers) {
    const pending = d.start || (d.region && !d.host.dataset.searched) || d.host.classList.contains("roi-armed");
    if (pending && !d.img.closest("[hidden]")) {
      clear(d);
      any = true;
    }
  }
  return any;
}

export function resetRoi(img) {
  const d = drawers.find((x) => x.img === img);
  if (d) clear(d);
}

function onDown(d, event) {
  if (event.button !== 0 || !d.img.naturalWidth) return;
  if (d.armButton && !d.host.classList.contains("roi-armed")) return; // the viewer's drag, not a region
  const size = d.size();
  if (!size) return;
  event.preventDefault();
  event.stopPropagation();
  clear(d);
  if (d.armButton) {
    d.host.classList.add("roi-armed"); // armed until the search or Escape, and the button says so
    d.armButton.setAttribute("aria-pressed", "true");
  }
  claim(d);
  d.sizeNow = size;
  d.start = toImage(d.img, event.clientX, event.clientY, size);
  d.img.setPointerCapture?.(event.pointerId);
}

// The picture a box is drawn (or a button armed) on, remembered when that starts: its own load event may come
// later (the image is complete before the event is handled), and must not take the box for another picture's.
function claim(d) {
  const now = shownPicture(d);
  if (now !== null) d.seen = now;
}

// The identity of the picture the drawer's image shows now (null: the caller gave no `identity`).
function shownPicture(d) {
  return d.identity ? d.identity() : null;
}

function onMove(d, event) {
  if (!d.start) return;
  d.region = regionOf(d.start, toImage(d.img, event.clientX, event.clientY, d.sizeNow));
  draw(d);
}

function onUp(d, event) {
  if (!d.start) return;
  onMove(d, event);
  d.start = null;
  const [, , w, h] = d.region || [0, 0, 0, 0];
  if (!w || !h) {
    clear(d); // a click, not a box
    return;
  }
  showBar(d);
  d.go.focus();
}

// Make `img` (inside a .roi-host) a place to draw a region. size(): the source frame's {width, height} or null;
// onSearch(region): run the region query. With `armButton`, a drag draws only after that button is pressed.
export function attachRoi(img, { name, size, onSearch, armButton = null, mapping = null, identity = null }) {
  if (mapping) mappers.set(img, mapping);
  const host = img.parentElement;
  const box = el("div", { className: "roi-box", hidden: true, "aria-hidden": "true" });
  box.dataset.testid = `${name}-roi-box`;
  const label = el("span", { className: "roi-label" });
  label.dataset.testid = `${name}-roi-label`;
  const go = el("button", { type: "button", className: "primary small", textContent: "Search this region" });
  go.dataset.testid = `${name}-roi-search`;
  const cancel = el("button", { type: "button", className: "ghost small", textContent: "Cancel (Esc)" });
  const bar = el("div", { className: "roi-bar", hidden: true, role: "group", "aria-label": "Region" }, label, go, cancel);
  host.append(box);
  host.after(bar);
  img.draggable = false;
  const d = {
    img, host, box, bar, label, go, size, armButton, identity,
    start: null, region: null, sizeNow: null, seen: null,
  };
  drawers.push(d);
  img.addEventListener("pointerdown", (event) => onDown(d, event));
  img.addEventListener("pointermove", (event) => onMove(d, event));
  img.addEventListener("pointerup", (event) => onUp(d, event));
  img.addEventListener("load", () => {
    // another picture: the box (and an armed "Search a region") belonged to the last one; the same image
    // re-rendered (the viewer's window/level or invert) keeps them, even while the box is being drawn
    const now = shownPicture(d);
    if (now !== null && now === d.seen) draw(d);
    else clear(d);
    d.seen = now;
  });
  cancel.addEventListener("click", () => clear(d));
  go.addEventListener("click", () => {
    host.dataset.searched = "true";
    host.classList.remove("roi-armed");
    if (armButton) armButton.setAttribute("aria-pressed", "false");
    bar.hidden = true;
    onSearch([...d.region]);
  });
  if (armButton) {
    armButton.addEventListener("click", () => {
      const on = !host.classList.contains("roi-armed");
      clear(d);
      if (on) claim(d);
      host.classList.toggle("roi-armed", on);
      armButton.setAttribute("aria-pressed", String(on));
    });
  }
  window.addEventListener("resize", () => draw(d));
  // the viewer zooms and pans by the picture's CSS transform: a box already drawn follows the picture
  if (mapping) new MutationObserver(() => draw(d)).observe(img, { attributes: true, attributeFilter: ["style"] });
  return d;
}
