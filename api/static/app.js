// medsearch web page: plain JS, no framework, no network beyond this service.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "medsearch.apiKey";
  const FALLBACK_MODALITIES = ["CR", "DX", "CT", "MR", "US", "MG", "NM", "PT", "XA"];
  const ERROR_TITLES = {
    unauthorized: "API key needed or not accepted",
    not_found: "Not found",
    too_large: "The file is too large",
    decode_error: "This file could not be decoded",
    no_pixel_data: "This DICOM has no pixel data",
    unsupported_format: "Unsupported file type",
    bad_query: "The query was refused",
    validation_error: "Some fields are invalid",
    model_unavailable: "The model is not available",
    model_mismatch: "The index was built with another model",
    index_busy: "The index is busy",
    not_ready: "The service is still starting",
    network_error: "No answer from the service",
    internal_error: "Server error",
  };

  const state = {
    file: null,
    fileUrl: null,
    query: null, // {kind: "image"|"text"|"similar", ...}
    offset: 0,
    k: 20,
    hits: [],
    seq: 0,
    controller: null,
    gridBlobs: [],
    detailBlob: null,
    detailHit: null,
    opener: null,
    observer: null,
  };

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "network_error", "The request did not reach the service. Is `medsearch serve` running?");
    }
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = response.statusText || "request failed";
      try {
        const body = await response.json();
        if (body && typeof body.code === "string") {
          code = body.code;
          message = body.message || message;
        }
      } catch {
        /* not JSON: keep the HTTP status */
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }

  function showError(box, err) {
    box.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = ERROR_TITLES[err.code] || "Request failed";
    const msg = document.createElement("span");
    msg.className = "error-message";
    msg.textContent = err.message || String(err);
    const code = document.createElement("code");
    code.textContent = err.status ? `${err.code} · HTTP ${err.status}` : err.code || "error";
    box.append(title, msg, code);
    if (err.code === "unauthorized") {
      const hint = document.createElement("span");
      hint.className = "error-hint";
      hint.textContent = "Enter a key under “API key” at the top right.";
      box.append(hint);
      $("key-box").open = true;
    }
    box.hidden = false;
  }

  function hideError(box) {
    box.hidden = true;
    box.replaceChildren();
  }

  // Thumbnails: <img src> when no key is set; fetch()+blob URLs when one is (img cannot send headers).
  function loadImage(img, url, bucket) {
    if (!apiKey()) {
      if (bucket === "grid") img.loading = "lazy";
      img.src = url;
      return;
    }
    const load = async () => {
      try {
        const blob = await (await api(url)).blob();
        const blobUrl = URL.createObjectURL(blob);
        if (bucket === "grid") state.gridBlobs.push(blobUrl);
        else {
          if (state.detailBlob) URL.revokeObjectURL(state.detailBlob);
          state.detailBlob = blobUrl;
        }
        img.src = blobUrl;
      } catch {
        img.dispatchEvent(new Event("error"));
      }
    };
    if (bucket === "grid" && state.observer) {
      img._load = load;
      state.observer.observe(img);
    } else {
      load();
    }
  }

  if ("IntersectionObserver" in window) {
    state.observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          if (entry.isIntersecting && entry.target._load) {
            state.observer.unobserve(entry.target);
            const load = entry.target._load;
            delete entry.target._load;
            load();
          }
        }
      },
      { rootMargin: "600px" },
    );
  }

  // ---------- header: readiness, stats, key ----------

  async function refreshReady() {
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

  async function loadStats() {
    const box = $("stats");
    try {
      const stats = await (await api("v1/stats")).json();
      const model = stats.model ? String(stats.model).split("/").filter(Boolean).pop() : "no model";
      box.replaceChildren();
      const parts = [
        [`${stats.images}`, "images"],
        [`${stats.studies}`, "studies"],
      ];
      for (const [n, what] of parts) {
        const s = document.createElement("span");
        const b = document.createElement("b");
        b.textContent = n;
        s.append(b, ` ${what}`);
        box.append(s);
      }
      const m = document.createElement("span");
      m.className = "model";
      m.textContent = `model: ${model}`;
      m.title = `model: ${stats.model || "none"}`;
      box.append(m);
      setStandin(Boolean(stats.standin_model));
      renderModalities(Object.entries(stats.by_modality || {}));
    } catch (err) {
      box.replaceChildren();
      const s = document.createElement("span");
      s.className = "stats-error";
      s.textContent = err.code === "unauthorized" ? "API key needed" : "stats unavailable";
      box.append(s);
      if (err.code === "unauthorized") $("key-box").open = true;
      if (!$("modality-options").querySelector("input")) {
        renderModalities(FALLBACK_MODALITIES.map((m) => [m, null]));
      }
    }
  }

  function renderModalities(entries) {
    const box = $("modality-options");
    const checked = new Set(selectedModalities());
    box.replaceChildren();
    entries.sort((a, b) => a[0].localeCompare(b[0]));
    for (const [modality, count] of entries) {
      const label = document.createElement("label");
      label.className = "chip";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = modality;
      input.checked = checked.has(modality);
      input.dataset.testid = `modality-${modality}`;
      input.addEventListener("change", rerunOnFilterChange);
      const text = document.createElement("span");
      text.textContent = modality;
      label.append(input, text);
      if (count !== null && count !== undefined) {
        const c = document.createElement("small");
        c.textContent = count;
        label.append(c);
      }
      box.append(label);
    }
    if (!entries.length) box.textContent = "no images indexed yet";
  }

  function setStandin(on) {
    $("standin-banner").hidden = !on;
    document.body.classList.toggle("standin", on);
  }

  function updateKeyUi() {
    const has = Boolean(apiKey());
    $("key-summary").textContent = has ? "API key ✓" : "API key";
    $("key-summary").classList.toggle("on", has);
    $("api-key-input").value = "";
    $("api-key-input").placeholder = has ? "a key is saved (paste to replace)" : "paste the key";
  }

  // ---------- query form ----------

  function selectedModalities() {
    return [...$("modality-options").querySelectorAll("input:checked")].map((i) => i.value);
  }

  function filters() {
    const bodyParts = $("body-part-input")
      .value.split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    return {
      modality: selectedModalities(),
      body_part: bodyParts,
      date_from: $("date-from").value || null,
      date_to: $("date-to").value || null,
      label: $("label-input").value.trim() || null,
      exclude_same_patient: $("exclude-patient").checked,
      exclude_same_study: $("exclude-study").checked,
      group_by: $("group-by").value,
    };
  }

  function readK() {
    const k = Math.round(Number($("k-input").value));
    const clamped = Number.isFinite(k) ? Math.min(1000, Math.max(1, k)) : 20;
    $("k-input").value = clamped;
    return clamped;
  }

  function updateWeight() {
    const both = Boolean(state.file) && Boolean($("text-input").value.trim());
    $("text-weight").disabled = !both;
    $("weight-field").classList.toggle("disabled", !both);
    $("text-weight-out").textContent = Number($("text-weight").value).toFixed(2);
  }

  function setFile(file) {
    if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
    state.fileUrl = null;
    state.file = file || null;
    const thumb = $("file-thumb");
    thumb.onerror = () => {
      thumb.hidden = true;
      $("file-icon").hidden = false;
    };
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
    const browserImage = /^image\/(png|jpeg|gif|webp)$/.test(file.type);
    if (browserImage) {
      state.fileUrl = URL.createObjectURL(file);
      thumb.src = state.fileUrl;
      thumb.hidden = false;
      $("file-icon").hidden = true;
    } else {
      thumb.hidden = true;
      $("file-icon").hidden = false;
      const ext = (file.name.split(".").pop() || "").toUpperCase();
      $("file-icon").textContent = /^(PNG|JPE?G|TIFF?)$/.test(ext) ? ext.slice(0, 4) : "DCM";
    }
    updateWeight();
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function queryFromForm() {
    const text = $("text-input").value.trim();
    if (state.file) {
      return { kind: "image", file: state.file, text, weight: Number($("text-weight").value) };
    }
    if (text) return { kind: "text", text };
    return null;
  }

  function rerunOnFilterChange() {
    if (state.query) run(state.query, 0);
  }

  // ---------- search ----------

  function buildRequest(query, offset, k) {
    const f = filters();
    if (query.kind === "image") {
      const form = new FormData();
      form.append("file", query.file, query.file.name);
      if (query.text) {
        form.append("text", query.text);
        form.append("text_weight", String(query.weight));
      }
      form.append("k", String(k));
      form.append("offset", String(offset));
      for (const m of f.modality) form.append("modality", m);
      for (const b of f.body_part) form.append("body_part", b);
      if (f.date_from) form.append("date_from", f.date_from);
      if (f.date_to) form.append("date_to", f.date_to);
      if (f.label) form.append("label", f.label);
      form.append("exclude_same_patient", String(f.exclude_same_patient));
      form.append("exclude_same_study", String(f.exclude_same_study));
      form.append("group_by", f.group_by);
      return ["v1/search/image", { method: "POST", body: form }];
    }
    if (query.kind === "text") {
      const body = { text: query.text, k, offset, ...f };
      return [
        "v1/search/text",
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) },
      ];
    }
    const params = new URLSearchParams({ k: String(k), offset: String(offset), group_by: f.group_by });
    for (const m of f.modality) params.append("modality", m);
    for (const b of f.body_part) params.append("body_part", b);
    if (f.date_from) params.set("date_from", f.date_from);
    if (f.date_to) params.set("date_to", f.date_to);
    if (f.label) params.set("label", f.label);
    if (f.exclude_same_patient) params.set("exclude_same_patient", "true");
    if (f.exclude_same_study) params.set("exclude_same_study", "true");
    return [`v1/images/${query.pivot.id}/similar?${params}`, { method: "GET" }];
  }

  async function run(query, offset) {
    const k = readK();
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const seq = ++state.seq;
    state.query = query;
    $("intro").hidden = true;
    hideError($("error"));
    document.body.dataset.state = "loading";
    $("results").setAttribute("aria-busy", "true");
    $("status").textContent = "Searching…";
    renderSummary(query);
    document.dispatchEvent(new CustomEvent("medsearch:search", { detail: { query } }));
    const started = performance.now();
    try {
      const [path, options] = buildRequest(query, offset, k);
      const response = await api(path, { ...options, signal: controller.signal });
      const body = await response.json();
      if (seq !== state.seq) return;
      state.offset = body.offset;
      state.k = body.k;
      setStandin(Boolean(body.standin_model));
      renderResults(body, seq);
      document.dispatchEvent(new CustomEvent("medsearch:results", { detail: { query, hits: body.hits } }));
      const ms = Math.round(performance.now() - started);
      const n = body.hits.length;
      $("status").textContent = `${n} result${n === 1 ? "" : "s"} · ${ms} ms`;
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (seq !== state.seq) return;
      showError($("error"), err);
      clearResults();
      $("status").textContent = "";
    } finally {
      if (seq === state.seq) {
        document.body.dataset.state = "idle";
        $("results").removeAttribute("aria-busy");
      }
    }
  }

  function renderSummary(query) {
    const box = $("query-summary");
    box.replaceChildren();
    const kind = document.createElement("span");
    kind.className = "kind";
    const what = document.createElement("span");
    what.className = "what";
    if (query.kind === "image") {
      kind.textContent = query.text ? "image + text" : "image";
      what.textContent = query.text ? `${query.file.name} + “${query.text}”` : query.file.name;
    } else if (query.kind === "text") {
      kind.textContent = "text";
      what.textContent = `“${query.text}”`;
    } else {
      kind.textContent = "similar to";
      const p = query.pivot;
      what.textContent = `${basename(p.source)}${p.label ? ` · ${p.label}` : ""} (image ${p.id})`;
      const back = document.createElement("button");
      back.type = "button";
      back.className = "link";
      back.textContent = "show it";
      back.dataset.testid = "pivot-open";
      back.addEventListener("click", () => openDetail({ ...p, rank: undefined, score: undefined, text_score: null }, back));
      box.dataset.pivot = String(p.id);
      box.append(kind, what, back);
      box.dataset.kind = "similar";
      return;
    }
    delete box.dataset.pivot;
    box.dataset.kind = query.kind;
    box.append(kind, what);
  }

  function basename(path) {
    if (!path) return "";
    const cut = String(path).split("!/").pop();
    return cut.split(/[\\/]/).pop();
  }

  function fmtScore(x) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(3);
  }

  function clearResults() {
    for (const url of state.gridBlobs) URL.revokeObjectURL(url);
    state.gridBlobs = [];
    if (state.observer) state.observer.disconnect();
    $("results").replaceChildren();
    state.hits = [];
    $("empty").hidden = true;
    $("pager").hidden = true;
  }

  function renderResults(body, seq) {
    clearResults();
    const grid = $("results");
    state.hits = body.hits;
    for (const hit of body.hits) grid.append(card(hit));
    grid.dataset.seq = String(seq);
    grid.dataset.query = body.query;
    $("empty").hidden = body.hits.length > 0;
    const pager = $("pager");
    const more = body.hits.length >= body.k;
    pager.hidden = !(more || body.offset > 0);
    $("page-prev").disabled = body.offset === 0;
    $("page-next").disabled = !more;
    $("page-info").textContent = body.hits.length
      ? `results ${body.offset + 1}–${body.offset + body.hits.length}`
      : "";
  }

  function card(hit) {
    const el = document.createElement("button");
    el.type = "button";
    el.className = "card";
    el.dataset.testid = "result";
    el.dataset.id = String(hit.id);
    el.dataset.rank = String(hit.rank);
    el.dataset.score = String(hit.score);
    el.dataset.source = basename(hit.source);
    const name = basename(hit.source);
    el.setAttribute(
      "aria-label",
      `Rank ${hit.rank}, score ${fmtScore(hit.score)}, ${hit.modality || "unknown modality"}, ${hit.label || name}`,
    );

    const thumb = document.createElement("span");
    thumb.className = "thumb";
    const img = document.createElement("img");
    img.alt = "";
    img.decoding = "async";
    img.dataset.testid = "thumb";
    img.addEventListener("error", () => thumb.classList.add("broken"));
    loadImage(img, hit.thumbnail_url, "grid");
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `#${hit.rank}`;
    const score = document.createElement("span");
    score.className = "score";
    score.dataset.testid = "score";
    score.textContent = fmtScore(hit.score);
    score.title = "cosine similarity";
    thumb.append(img, rank, score);
    if (hit.text_score !== null && hit.text_score !== undefined) {
      const ts = document.createElement("span");
      ts.className = "text-score";
      ts.dataset.testid = "text-score";
      ts.textContent = `text p ${Number(hit.text_score).toFixed(2)}`;
      ts.title = "calibrated text–image probability";
      thumb.append(ts);
    }
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.setProperty("--w", `${Math.max(0, Math.min(1, hit.score)) * 100}%`);
    thumb.append(bar);

    const meta = document.createElement("span");
    meta.className = "card-meta";
    const line = document.createElement("span");
    line.className = "line";
    const mod = document.createElement("span");
    mod.className = "mod";
    mod.textContent = hit.modality || "?";
    line.append(mod);
    if (hit.body_part) {
      const bp = document.createElement("span");
      bp.className = "bp";
      bp.textContent = hit.body_part;
      line.append(bp);
    }
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = hit.label || "unlabelled";
    if (!hit.label) label.classList.add("muted");
    const src = document.createElement("span");
    src.className = "src";
    const date = document.createElement("span");
    date.className = "date";
    date.dataset.testid = "date";
    date.textContent = hit.study_date || "no date";
    src.append(date, ` · ${name}${hit.frame > 1 ? ` · frame ${hit.frame}` : ""}`);
    src.title = `${hit.study_date || "no study date"} · ${hit.source}`;
    meta.append(line, label, src);

    el.append(thumb, meta);
    el.addEventListener("click", () => openDetail(hit, el));
    return el;
  }

  // ---------- detail panel ----------

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
    ["transfer_syntax", "Transfer syntax"],
    ["window", "Window"],
    ["label", "Label"],
    ["report", "Report"],
    ["source", "Source"],
    ["indexed_at", "Indexed at"],
  ];

  function detailTitle(rec) {
    const parts = [rec.modality || "unknown modality"];
    if (rec.body_part) parts.push(rec.body_part);
    if (rec.label) parts.push(rec.label);
    if (rec.study_date) parts.push(rec.study_date);
    return parts.join(" · ");
  }

  function openDetail(hit, opener) {
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
    loadImage(preview, hit.preview_url || `v1/images/${hit.id}/preview`, "detail");
    renderUids(hit);
    setViewer(hit.viewer_url);
    hideError($("detail-error"));
    const meta = $("detail-meta");
    meta.replaceChildren();
    meta.dataset.loaded = "false";
    panel.hidden = false;
    document.body.classList.add("detail-open");
    $("detail-close").focus();
    loadMeta(hit.id);
  }

  async function loadMeta(id) {
    try {
      const image = await (await api(`v1/images/${id}`)).json();
      if (!state.detailHit || state.detailHit.id !== id) return;
      image.size = image.rows && image.columns ? `${image.rows} × ${image.columns}` : null;
      image.frames = `${image.frame} of ${image.number_of_frames}`;
      const meta = $("detail-meta");
      for (const [key, title] of META_FIELDS) {
        const value = image[key];
        if (value === null || value === undefined || value === "") continue;
        const dt = document.createElement("dt");
        dt.textContent = title;
        const dd = document.createElement("dd");
        dd.textContent = String(value);
        dd.dataset.field = key;
        meta.append(dt, dd);
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
      const dt = document.createElement("dt");
      dt.textContent = title;
      const dd = document.createElement("dd");
      const code = document.createElement("code");
      code.dataset.uid = key;
      code.dataset.testid = `uid-${key}`;
      code.textContent = value || "—";
      dd.append(code);
      if (value) {
        const copy = document.createElement("button");
        copy.type = "button";
        copy.className = "icon-btn copy";
        copy.textContent = "Copy";
        copy.setAttribute("aria-label", `Copy ${title}`);
        copy.addEventListener("click", () => copyText(value, copy, code));
        dd.append(copy);
      }
      box.append(dt, dd);
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

  function closeDetail() {
    const panel = $("detail");
    if (panel.hidden) return;
    panel.hidden = true;
    document.body.classList.remove("detail-open");
    $("detail-preview").removeAttribute("src");
    if (state.detailBlob) URL.revokeObjectURL(state.detailBlob);
    state.detailBlob = null;
    state.detailHit = null;
    for (const c of document.querySelectorAll(".card.selected")) c.classList.remove("selected");
    const opener = state.opener;
    state.opener = null;
    if (opener && document.body.contains(opener)) opener.focus();
  }

  function findSimilar() {
    const hit = state.detailHit;
    if (!hit) return;
    const pivot = { ...hit };
    state.opener = null;
    closeDetail();
    run({ kind: "similar", pivot }, 0).then(() => {
      const first = $("results").querySelector(".card");
      if (first) first.focus();
    });
  }

  // ---------- keyboard ----------

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

  function onKey(event) {
    if (event.key === "Escape" && !$("detail").hidden) {
      event.preventDefault();
      closeDetail();
      return;
    }
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
    if (event.key === "/" && !typing) {
      event.preventDefault();
      $("text-input").focus();
      return;
    }
    if (document.activeElement?.classList.contains("card")) moveFocus(event);
  }

  // ---------- wiring ----------

  function init() {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const query = queryFromForm();
      if (!query) {
        showError($("error"), new ApiError(0, "bad_query", "Choose or drop an image, or type text, then search."));
        return;
      }
      run(query, 0);
    });
    const fileInput = $("file-input");
    fileInput.addEventListener("change", () => {
      if (fileInput.files && fileInput.files[0]) {
        setFile(fileInput.files[0]);
        run(queryFromForm(), 0);
      }
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
      if (file) {
        setFile(file);
        run(queryFromForm(), 0);
      }
    });
    $("text-input").addEventListener("input", updateWeight);
    $("text-weight").addEventListener("input", updateWeight);
    for (const id of ["date-from", "date-to", "exclude-patient", "exclude-study", "group-by"]) {
      $(id).addEventListener("change", rerunOnFilterChange);
    }
    $("filters-reset").addEventListener("click", () => {
      for (const i of $("modality-options").querySelectorAll("input")) i.checked = false;
      for (const id of ["body-part-input", "date-from", "date-to", "label-input"]) $(id).value = "";
      $("exclude-patient").checked = false;
      $("exclude-study").checked = false;
      $("group-by").value = "image";
      rerunOnFilterChange();
    });
    $("page-prev").addEventListener("click", () => state.query && run(state.query, Math.max(0, state.offset - state.k)));
    $("page-next").addEventListener("click", () => state.query && run(state.query, state.offset + state.k));
    $("detail-close").addEventListener("click", closeDetail);
    $("find-similar").addEventListener("click", findSimilar);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key-input").value.trim();
      try {
        if (key) localStorage.setItem(KEY_STORAGE, key);
      } catch {
        /* storage disabled: nothing to keep */
      }
      updateKeyUi();
      $("key-box").open = false;
      loadStats();
    });
    $("api-key-clear").addEventListener("click", () => {
      try {
        localStorage.removeItem(KEY_STORAGE);
      } catch {
        /* ignore */
      }
      updateKeyUi();
      loadStats();
    });
    document.addEventListener("keydown", onKey);
    updateKeyUi();
    updateWeight();
    refreshReady();
    loadStats();
  }

  // for static/summary.js (the "Summarize" panel): the same API client and error display
  window.medsearch = { api, ApiError, showError, hideError, errorTitles: ERROR_TITLES };
  init();
})();
