// The top bar and banners: readiness, collection stats, the API key box, the stand-in announcements.

import { ApiError, apiJson, apiKey } from "./api.js";
import { $ } from "./dom.js";
import { showError } from "./errors.js";
import { setFilterCounts } from "./filters.js";
import { state } from "./state.js";

export function setStandin(on) {
  $("standin-banner").hidden = !on;
  document.body.classList.toggle("standin", on);
}

export function setSummaryStandin(on) {
  $("summary-standin-banner").hidden = !on;
}

export async function refreshReady() {
  const dot = $("stats");
  try {
    const res = await fetch("readyz");
    const body = await res.json().catch(() => ({}));
    if (res.ok) {
      dot.dataset.ready = "yes";
      if (body.standin_model) setStandin(true);
      return;
    }
    dot.dataset.ready = body.code === "not_ready" ? "loading" : "no";
    dot.title = body.message || "";
    if (body.code === "not_ready") setTimeout(refreshReady, 3000);
    else if (body.code && !state.query) showError($("error"), new ApiError(res.status, body.code, body.message || ""));
  } catch {
    dot.dataset.ready = "no";
  }
}

export async function loadStats() {
  const box = $("stats");
  try {
    const stats = await apiJson("v1/stats");
    const model = stats.model ? String(stats.model).split("/").filter(Boolean).pop() : "no model";
    box.replaceChildren();
    for (const [n, what] of [
      [`${stats.images}`, "images"],
      [`${stats.series}`, "series"],
      [`${stats.studies}`, "studies"],
    ]) {
      const s = document.createElement("span");
      const b = document.createElement("b");
      b.textContent = n;
      s.append(b, ` ${what}`);
      box.append(s);
    }
    if (stats.not_images > 0) {
      // non-image DICOM objects (structured reports, RT plans, ECGs...) skipped on purpose: not failures
      const skipped = document.createElement("span");
      skipped.className = "not-images";
      skipped.dataset.testid = "not-images";
      const b = document.createElement("b");
      b.textContent = `${stats.not_images}`;
      skipped.append(b, " non-image objects skipped");
      skipped.title = Object.entries(stats.not_images_by_class || {})
        .map(([name, count]) => `${count} ${name}`)
        .join("\n");
      box.append(skipped);
    }
    if (stats.encoder_calls_saved > 0) box.append(samplingStat(stats)); // series planning's savings
    const m = document.createElement("span");
    m.className = "model";
    m.textContent = `model: ${model}`;
    m.title = `model: ${stats.model || "none"}`;
    box.append(m);
    setStandin(Boolean(stats.standin_model));
    setFilterCounts(stats);
  } catch (err) {
    box.replaceChildren();
    const s = document.createElement("span");
    s.className = "stats-error";
    s.textContent = err.code === "unauthorized" ? "API key needed" : "stats unavailable";
    box.append(s);
    if (err.code === "unauthorized") $("key-box").open = true;
    setFilterCounts(null);
  }
}

export function updateKeyUi() {
  const has = Boolean(apiKey());
  $("key-summary").textContent = has ? "API key ✓" : "API key";
  $("key-summary").classList.toggle("on", has);
  $("api-key-input").value = "";
  $("api-key-input").placeholder = has ? "a key is saved (paste to replace)" : "paste the key";
}

// The sticky top bar's height, so banners below it (errors) never slide underneath.
export function trackTopbar() {
  const bar = document.querySelector(".topbar");
  const set = () => document.documentElement.style.setProperty("--topbar-h", `${bar.offsetHeight}px`);
  set();
  if ("ResizeObserver" in window) new ResizeObserver(set).observe(bar);
}

// What series planning kept from the encoder: slices skipped by sampling, and encoder calls saved in all
function samplingStat(stats) {
  const span = document.createElement("span");
  span.className = "sampling";
  span.dataset.testid = "sampling";
  const b = document.createElement("b");
  b.textContent = `${stats.slices_skipped_by_sampling}`;
  const saved = document.createElement("b");
  saved.textContent = `${stats.encoder_calls_saved}`;
  span.append(b, " slices skipped by sampling, ", saved, " encoder calls saved");
  span.title = "encoder calls saved: the skipped slices and those left out of volumes (localizers, other orientations...)";
  return span;
}
