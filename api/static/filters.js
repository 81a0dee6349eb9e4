// Filter fields built from the vocabulary, read into one filter object, and serialised by one function.

import { ApiError } from "./api.js";
import { $, el } from "./dom.js";
import { vocabulary } from "./vocabulary.js";

const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;
let onChange = () => {};
let counts = {}; // {filter name: {value: count}} from the stats report (by_modality, ...)

export function setFilterChangeHandler(fn) {
  onChange = fn;
}

function chipsFor(field, box) {
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren();
  const entries = Object.entries(counts[field.name] || {}).sort((a, b) => a[0].localeCompare(b[0]));
  for (const [value, count] of entries) {
    const input = el("input", { type: "checkbox", value, checked: checked.has(value) });
    input.dataset.testid = `${field.name}-${value}`;
    input.addEventListener("change", () => onChange());
    box.append(el("label", { className: "chip" }, input, el("span", { textContent: value }), el("small", { textContent: String(count) })));
  }
  if (!entries.length) box.append(el("span", { className: "muted", textContent: "no images indexed yet" }));
}

function listField(field) {
  if (counts[field.name]) {
    const box = el("div", { id: `filter-${field.name}`, className: "chips", role: "group", "aria-label": field.label });
    box.dataset.testid = `filter-${field.name}`;
    box.dataset.filter = field.name;
    box.dataset.kind = "chips";
    chipsFor(field, box);
    return el("div", { className: "field" }, el("span", { textContent: field.label }), box);
  }
  const input = el("input", { id: `filter-${field.name}`, type: "text", autocomplete: "off" });
  input.dataset.testid = `filter-${field.name}`;
  input.dataset.filter = field.name;
  input.dataset.kind = "list";
  return el("label", { className: "field" }, el("span", { textContent: `${field.label} ` }, el("span", { className: "muted", textContent: "(comma-separated)" })), input);
}

function numberField(field) {
  const input = el("input", { id: `filter-${field.name}`, type: "number", min: "0", max: "1", step: "0.05", inputMode: "decimal", placeholder: "0.5" });
  input.dataset.testid = `filter-${field.name}`;
  input.dataset.filter = field.name;
  input.dataset.kind = "number";
  return el("label", { className: "field" }, el("span", { textContent: field.label }), input);
}

function inputField(field) {
  if (field.kind === "number") return numberField(field);
  const date = field.kind === "date";
  const input = el("input", {
    id: `filter-${field.name}`,
    type: "text",
    autocomplete: "off",
    spellcheck: false,
    placeholder: date ? "YYYY-MM-DD" : "",
  });
  if (date) {
    input.inputMode = "numeric";
    input.pattern = "\\d{4}-\\d{2}-\\d{2}";
    input.maxLength = 10;
    input.title = "ISO date, YYYY-MM-DD";
    input.addEventListener("change", () => onChange());
  }
  input.dataset.testid = `filter-${field.name}`;
  input.dataset.filter = field.name;
  input.dataset.kind = field.kind;
  return el("label", { className: "field" }, el("span", { textContent: field.label }), input);
}

function boolField(field) {
  const input = el("input", { id: `filter-${field.name}`, type: "checkbox" });
  input.dataset.testid = `filter-${field.name}`;
  input.dataset.filter = field.name;
  input.dataset.kind = "bool";
  input.addEventListener("change", () => onChange());
  return el("label", { className: "check" }, input, ` ${field.label}`);
}

// The filter fields, in the vocabulary's order; consecutive dates share a row.
export function renderFilters() {
  const box = $("filter-fields");
  box.replaceChildren();
  if (!vocabulary.loaded) {
    const why = vocabulary.problem ? `${vocabulary.problem.code}: ${vocabulary.problem.message}` : "loading…";
    box.append(el("p", { className: "muted", textContent: `Filters unavailable (${why}).` }));
  }
  let row = null;
  for (const field of vocabulary.filters) {
    if (document.querySelector(`[data-filter="${field.name}"][data-home]`)) continue; // it has its own box (reports.js)
    const node = field.kind === "list" ? listField(field) : field.kind === "flag" || field.kind === "bool" ? boolField(field) : inputField(field);
    if (field.kind === "date") {
      if (!row) {
        row = el("div", { className: "field two" });
        box.append(row);
      }
      row.append(node);
      if (row.children.length === 2) row = null;
      continue;
    }
    row = null;
    box.append(node);
  }
  const group = $("group-by");
  const chosen = group.value;
  group.replaceChildren(...vocabulary.group_by.map((value) => el("option", { value, textContent: value })));
  if (vocabulary.group_by.includes(chosen)) group.value = chosen;
}

// Choices from the stats report: by_modality -> the modality chips (with counts); null when unreadable.
export function setFilterCounts(stats) {
  counts = {};
  for (const field of vocabulary.filters) {
    const by = stats && stats[`by_${field.name}`];
    if (field.kind === "list" && by && typeof by === "object") counts[field.name] = by;
  }
  const reshaped = vocabulary.filters.some((field) => {
    const node = document.querySelector(`[data-filter="${field.name}"]`);
    return node && (node.dataset.kind === "chips") !== Boolean(counts[field.name]);
  });
  if (reshaped) renderFilters();
  for (const field of vocabulary.filters) {
    const node = document.querySelector(`[data-filter="${field.name}"]`);
    if (node && node.dataset.kind === "chips") chipsFor(field, node);
  }
}

// One filter object: {name: value} for every vocabulary filter, plus group_by and show_duplicates.
export function readFilters() {
  const out = {};
  for (const field of vocabulary.filters) {
    const node = document.querySelector(`[data-filter="${field.name}"]`);
    if (!node) continue;
    const kind = node.dataset.kind;
    if (kind === "chips") out[field.name] = [...node.querySelectorAll("input:checked")].map((i) => i.value);
    else if (kind === "list") out[field.name] = node.value.split(",").map((s) => s.trim()).filter(Boolean);
    else if (kind === "bool") out[field.name] = node.checked;
    else if (kind === "number") out[field.name] = node.value.trim() === "" ? null : Number(node.value);
    else {
      const value = node.value.trim();
      if (kind === "date" && value && !(ISO_DATE.test(value) && !Number.isNaN(Date.parse(value)))) {
        throw new ApiError(0, "bad_query", `${field.label}: “${value}” is not a date; use YYYY-MM-DD, e.g. 2004-01-19.`);
      }
      out[field.name] = value || null;
    }
  }
  if ($("group-by").value) out.group_by = $("group-by").value;
  out.show_duplicates = $("show-duplicates").checked;
  return out;
}

// The one serialiser: FormData (multipart) and URLSearchParams (query string) both take .append(name, value).
export function appendFilters(target, filters) {
  for (const [name, value] of Object.entries(filters)) {
    if (value === null || value === undefined || value === "" || value === false) continue;
    for (const item of Array.isArray(value) ? value : [value]) target.append(name, String(item));
  }
  return target;
}

// Short texts for the results header: the active filters and grouping.
export function describeFilters(filters) {
  const parts = [];
  for (const field of vocabulary.filters) {
    const value = filters[field.name];
    if (value === null || value === undefined || value === false || value === "") continue;
    if (Array.isArray(value) && !value.length) continue;
    parts.push(value === true ? field.label : `${field.label}: ${Array.isArray(value) ? value.join(", ") : value}`);
  }
  if (filters.group_by && filters.group_by !== vocabulary.group_by[0]) parts.push(`grouped by ${filters.group_by}`);
  if (filters.show_duplicates) parts.push("duplicates shown");
  return parts;
}

// Filter by a probe (the "Filter by it" action after training one from the marks); false when the fields are missing.
export function setProbeFilter(name, minProb) {
  const probe = document.querySelector('[data-filter="probe"]');
  const least = document.querySelector('[data-filter="min_prob"]');
  if (!probe || !least) return false;
  probe.value = name;
  least.value = String(minProb);
  return true;
}

export function resetFilters() {
  for (const node of document.querySelectorAll("[data-filter]")) {
    if (node.dataset.kind === "chips") for (const i of node.querySelectorAll("input")) i.checked = false;
    else if (node.dataset.kind === "bool") node.checked = false;
    else node.value = "";
  }
  if (vocabulary.group_by.length) $("group-by").value = vocabulary.group_by[0];
  $("show-duplicates").checked = false;
}
