// Tags and probes on the page: chips on each hit, known names for the tag / probe filters, and
// "Train a classifier from my marks" (liked = positive, unliked = negative) -> cross-validated AUC -> apply -> filter.

import { apiJson } from "./api.js";
import { $, el } from "./dom.js";
import { hideError, showError } from "./errors.js";
import { marks, onChange } from "./marks.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const MIN_EACH = 3; // the API's minimum of positive and of negative examples (retrieval/findings/training.py)

// The chips of one hit: its tags, then each probe with its probability (null when it has none).
export function findingChips(hit) {
  const tags = Object.entries(hit.tags || {});
  const probes = Object.entries(hit.probes || {});
  if (!tags.length && !probes.length) return null;
  const box = el("span", { className: "finding-chips" });
  box.dataset.testid = "finding-chips";
  for (const [name, score] of tags.sort((a, b) => a[0].localeCompare(b[0]))) {
    const chip = el("span", { className: "tag-chip", textContent: name, title: `zero-shot tag “${name}”: p ${Number(score).toFixed(3)}` });
    chip.dataset.testid = "tag-chip";
    chip.dataset.tag = name;
    box.append(chip);
  }
  for (const [name, p] of probes.sort((a, b) => a[0].localeCompare(b[0]))) {
    const chip = el("span", { className: "probe-chip", textContent: `${name} ${Number(p).toFixed(2)}`, title: `probability under probe “${name}”` });
    chip.dataset.testid = "probe-chip";
    chip.dataset.probe = name;
    chip.dataset.p = String(p);
    box.append(chip);
  }
  return box;
}

// Suggest the stored tag and probe names in their filter fields (quietly nothing without a key or data).
export async function loadFindingNames() {
  const lists = [
    ["tag", "v1/tags", (t) => `${t.tag}`],
    ["probe", "v1/probes", (p) => `${p.name}`],
  ];
  for (const [field, path, name] of lists) {
    const input = document.querySelector(`[data-filter="${field}"]`);
    if (!input || input.tagName !== "INPUT") continue;
    let names = [];
    try {
      const items = await apiJson(path);
      names = [...new Set(items.filter((i) => field !== "probe" || i.applied).map(name))];
    } catch {
      continue;
    }
    const id = `known-${field}`;
    const list = $(id) || document.body.appendChild(el("datalist", { id }));
    list.replaceChildren(...names.map((value) => el("option", { value })));
    input.setAttribute("list", id);
  }
}

function describe(probe) {
  const pct = (x) => Number(x).toFixed(3);
  return `“${probe.name}” v${probe.version}: cross-validated ROC AUC ${pct(probe.cv_auc)}, accuracy ${pct(probe.cv_accuracy)} (${probe.positives} liked, ${probe.negatives} not, ${probe.folds}-fold)`;
}

// Wires the train / apply / filter controls in the marks bar; `filterBy(name)` shows results filtered by the probe.
export function wireProbes({ filterBy }) {
  const button = $("probe-train");
  const nameInput = $("probe-name");
  const result = $("probe-result");
  const apply = $("probe-apply");
  const filter = $("probe-filter");
  const error = $("probe-error");
  let trained = null;
  const reset = () => {
    trained = null;
    result.textContent = "";
    delete result.dataset.auc;
    apply.hidden = true;
    filter.hidden = true;
    hideError(error);
  };
  const update = () => {
    const n = { like: marks.like.size, unlike: marks.unlike.size };
    button.textContent = `Train a classifier from my marks (${n.like} liked, ${n.unlike} not)`;
    button.disabled = n.like < MIN_EACH || n.unlike < MIN_EACH;
    button.title = button.disabled
      ? `Mark at least ${MIN_EACH} images “More like this” and ${MIN_EACH} “Not like this” to train a classifier`
      : "Fit a logistic regression on the liked (positive) and unliked (negative) images and show its cross-validated AUC";
  };
  onChange(update);
  button.addEventListener("click", async () => {
    reset();
    const name = nameInput.value.trim();
    if (!NAME.test(name)) {
      showError(error, { code: "bad_query", message: "Name the classifier: 1–64 letters, digits, _ . : or -, starting with a letter or digit." });
      return;
    }
    button.disabled = true;
    result.textContent = "training…";
    try {
      const body = JSON.stringify({ name, positive: [...marks.like], negative: [...marks.unlike] });
      trained = await apiJson("v1/probes/train", { method: "POST", headers: { "Content-Type": "application/json" }, body });
      result.textContent = `${describe(trained)}. Not applied yet.`;
      result.dataset.auc = String(trained.cv_auc);
      result.dataset.version = String(trained.version);
      apply.hidden = false;
    } catch (err) {
      result.textContent = "";
      showError(error, err);
    } finally {
      update();
    }
  });
  apply.addEventListener("click", async () => {
    if (!trained) return;
    apply.disabled = true;
    result.textContent = `${describe(trained)}. Applying to the archive…`;
    try {
      const done = await apiJson(`v1/probes/${encodeURIComponent(trained.name)}/apply`, { method: "POST" });
      result.textContent = `${describe(done.probe)}. Applied to ${done.images} images.`;
      result.dataset.applied = "true";
      filter.hidden = false;
      await loadFindingNames();
    } catch (err) {
      showError(error, err);
    } finally {
      apply.disabled = false;
    }
  });
  filter.addEventListener("click", () => trained && filterBy(trained.name));
  update();
}
