// The page's entry point: reads the vocabulary, builds the filters, wires events and keyboard.

import { ApiError, saveApiKey } from "./api.js";
import { caseQuery, wireCases } from "./cases.js";
import { closeCompare, stepCompare, wireCompareStepper } from "./compare.js";
import { closeDetail, compareDetail, shownImage, stepSlice } from "./detail.js";
import { deepLinkQuery } from "./deeplink.js";
import { $ } from "./dom.js";
import { showError } from "./errors.js";
import { wireFeedback } from "./feedback.js";
import { renderFilters, resetFilters, setFilterChangeHandler, setProbeFilter } from "./filters.js";
import { loadStats, refreshReady, trackTopbar, updateKeyUi } from "./header.js";
import { caseUid, isCase } from "./levels.js";
import { loadFindingNames, wireProbes } from "./probes.js";
import { queryFromForm, setFile, updateWeight } from "./query.js";
import { attachRoi, cancelRoi, resetRoi } from "./roi.js";
import { rerun, run } from "./search.js";
import { state } from "./state.js";
import { imageToScreen, screenToImage, stepFrame, viewerKey, wireViewer } from "./viewer.js";
import { loadVocabulary } from "./vocabulary.js";

// Here, not in detail.js: the detail panel is opened by the results, which the search renders (no circle)
function findSimilar() {
  const hit = state.detailHit;
  if (!hit) return;
  const pivot = { ...hit };
  state.opener = null;
  closeDetail();
  // a series or study: the case itself is the query (its stored vector), not its key slice
  const query = isCase(hit) ? { kind: "case", case: hit.level, uid: caseUid(hit), pivot } : { kind: "similar", pivot };
  run(query, 0).then(() => {
    const first = $("results").querySelector(".card");
    if (first) first.focus();
  });
}

// Region queries: a box on the query preview searches by that region of the upload (the frame it shows); a box
// on the detail preview, by that region of the image (or slice) shown there.
function wireRegions() {
  attachRoi($("query-preview-img"), {
    name: "query",
    size: () => (state.queryInfo && state.queryInfo.width ? { width: state.queryInfo.width, height: state.queryInfo.height } : null),
    onSearch: (roi) => {
      const query = queryFromForm();
      if (!query || query.kind !== "image") return;
      const info = state.queryInfo;
      run({ ...query, roi, frame: info.frames > 1 ? info.frame : 0 }, 0); // multi-frame: the frame shown
    },
  });
  attachRoi($("detail-preview"), {
    name: "detail",
    armButton: $("detail-roi"),
    mapping: { toImage: screenToImage, fromImage: imageToScreen }, // the viewer's zoom and pan
    identity: () => {
      const shown = shownImage();
      return shown ? `${shown.id}:${shown.frame}` : null;
    },
    size: () => shownImage()?.size || null,
    onSearch: (roi) => {
      const shown = shownImage();
      if (!shown) return;
      const pivot = { ...state.detailHit, id: shown.id, level: "image" };
      state.opener = null;
      closeDetail();
      run({ kind: "similar", pivot, roi, frame: shown.frame }, 0);
    },
  });
  // a query without a region (Search pressed again, another file): the box drawn for the last one goes
  document.addEventListener("medsearch:search", (event) => {
    if (!event.detail.query.roi) resetRoi($("query-preview-img"));
  });
}

function moveFocus(event) {
  const cards = [...$("results").querySelectorAll(".card")];
  const i = cards.indexOf(document.activeElement);
  if (i < 0) return;
  let columns = 1;
  const top = cards[0].offsetTop;
  while (columns < cards.length && cards[columns].offsetTop === top) columns++;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  let target = null;
  if (step !== undefined) target = cards[i + step];
  if (event.key === "Home") target = cards[0];
  if (event.key === "End") target = cards[cards.length - 1];
  if (target) {
    event.preventDefault();
    target.focus();
  }
}

// With a result's panel open: the next (+1) or previous (-1) result in the grid opens in it.
function stepResult(delta) {
  const cards = [...$("results").querySelectorAll(".card")];
  const i = cards.findIndex((c) => c.classList.contains("selected"));
  const target = i < 0 ? null : cards[i + delta];
  if (!target) return false;
  target.click();
  target.scrollIntoView({ block: "nearest" });
  return true;
}

function onKey(event) {
  if (event.key === "Escape" && cancelRoi()) {
    event.preventDefault();
    return;
  }
  if (event.key === "Escape" && closeCompare()) {
    event.preventDefault();
    return;
  }
  if (event.key === "Escape" && !$("detail").hidden) {
    event.preventDefault();
    closeDetail();
    return;
  }
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
  const delta = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 }[event.key];
  const onCard = document.activeElement?.classList.contains("card");
  if (delta && !$("compare").hidden && document.activeElement?.type !== "range") {
    if (stepCompare(delta)) event.preventDefault(); // both cases one step, in step
    return;
  }
  const inPanel = !typing && !onCard && !$("detail").hidden;
  const next = { n: 1, N: 1, p: -1, P: -1 }[event.key];
  if (inPanel && next && !event.ctrlKey && !event.metaKey && !event.altKey && stepResult(next)) {
    event.preventDefault();
    return;
  }
  if (inPanel && viewerKey(event)) {
    event.preventDefault();
    return;
  }
  if (delta && inPanel && (stepSlice(delta) || stepFrame(delta))) {
    event.preventDefault();
    return;
  }
  if (event.key === "/" && !typing) {
    event.preventDefault();
    $("text-input").focus();
    return;
  }
  if (document.activeElement?.classList.contains("card")) moveFocus(event);
}

function chooseFile(file) {
  setFile(file);
  run(queryFromForm(), 0);
}

function wireDrop() {
  const fileInput = $("file-input");
  fileInput.addEventListener("change", () => {
    if (fileInput.files && fileInput.files[0]) chooseFile(fileInput.files[0]);
  });
  const zone = $("dropzone");
  zone.addEventListener("click", (event) => {
    if (event.target.closest("#file-clear") || event.target === fileInput) return;
    fileInput.click();
  });
  zone.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && event.target === zone) {
      event.preventDefault();
      fileInput.click();
    }
  });
  $("file-clear").addEventListener("click", (event) => {
    event.stopPropagation();
    setFile(null);
    zone.focus();
  });
  let depth = 0;
  window.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth++;
    document.body.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) document.body.classList.remove("dragging");
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) chooseFile(file);
  });
}

function wireKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key-input").value.trim();
    if (key) saveApiKey(key);
    updateKeyUi();
    $("key-box").open = false;
    start();
  });
  $("api-key-clear").addEventListener("click", () => {
    saveApiKey("");
    updateKeyUi();
    start();
  });
}

// The vocabulary first (filter fields, error titles), then the stats that fill the modality choices.
async function start() {
  await loadVocabulary();
  renderFilters();
  await loadStats();
  await loadFindingNames();
  document.body.dataset.vocabulary = $("filter-fields").querySelector("[data-filter]") ? "ready" : "missing";
  if (!linked) {
    linked = true;
    openDeepLink();
  }
}

let linked = false; // the page's own link is followed once, not again when a key is saved

async function openDeepLink() {
  try {
    const query = await deepLinkQuery();
    if (query) await run(query, 0);
  } catch (err) {
    if (err && err.code === "unauthorized") linked = false; // follow it again once a key is saved
    $("intro").hidden = true;
    showError($("error"), err);
  }
  document.body.dataset.deeplink = "done";
}

function init() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = caseQuery() || queryFromForm();
    if (!query) {
      showError($("error"), new ApiError(0, "bad_query", "Choose or drop an image, or type text, then search."));
      return;
    }
    run(query, 0);
  });
  wireDrop();
  wireKey();
  wireCases({ search: (query) => run(query, 0), clearImage: () => setFile(null), levelChanged: rerun });
  wireRegions();
  wireFeedback({ refine: (query) => run(query, 0), current: () => state.query });
  wireProbes({ filterBy: (name) => setProbeFilter(name, 0.5) && rerun() });
  setFilterChangeHandler(rerun);
  $("text-input").addEventListener("input", updateWeight);
  $("text-weight").addEventListener("input", updateWeight);
  $("group-by").addEventListener("change", rerun);
  $("show-duplicates").addEventListener("change", rerun);
  $("filters-reset").addEventListener("click", () => {
    resetFilters();
    rerun();
  });
  $("page-prev").addEventListener("click", () => state.query && run(state.query, Math.max(0, state.offset - state.k)));
  $("page-next").addEventListener("click", () => state.query && run(state.query, state.offset + state.k));
  $("detail-close").addEventListener("click", closeDetail);
  $("find-similar").addEventListener("click", findSimilar);
  $("compare-open").addEventListener("click", compareDetail);
  $("compare-close").addEventListener("click", closeCompare);
  wireCompareStepper();
  $("slice-prev").addEventListener("click", () => stepSlice(-1));
  $("slice-next").addEventListener("click", () => stepSlice(1));
  wireViewer();
  for (const radio of document.querySelectorAll("input[name=level]")) radio.addEventListener("change", rerun);
  document.addEventListener("keydown", onKey);
  trackTopbar();
  updateKeyUi();
  updateWeight();
  refreshReady();
  start();
}

init();
