// Cases from the page: a whole series uploaded as the query (several DICOM files or one zip, POST v1/search/case),
// and the maxsim re-ranking switch of the series and study levels.

import { $, formatBytes } from "./dom.js";
import { readLevel, setLevel } from "./levels.js";

const chosen = { files: [] };

// "maxsim" when the switch is on at series or study level; the image level has nothing to re-rank
export function readRerank() {
  return readLevel() !== "image" && $("rerank").checked ? "maxsim" : "none";
}

export function updateRerank() {
  const off = readLevel() === "image";
  $("rerank").disabled = off;
  $("rerank-field").classList.toggle("disabled", off);
}

// The uploaded case as a query, or null when no case files are chosen. `file` (a DICOM of the case, the middle
// one by name) is what "Compare with the query" shows on the query's side; a zip has none.
export function caseQuery() {
  const files = chosen.files;
  if (!files.length) return null;
  const dicoms = files.filter((f) => !/\.zip$/i.test(f.name)).sort((a, b) => a.name.localeCompare(b.name));
  const name = files.length === 1 ? files[0].name : `${files.length} files`;
  return { kind: "upload", files: [...files], name, file: dicoms[Math.floor(dicoms.length / 2)] || null };
}

function show() {
  const files = chosen.files;
  const bytes = files.reduce((sum, f) => sum + f.size, 0);
  $("case-chosen").textContent = files.length ? `${caseQuery().name} · ${formatBytes(bytes)}` : "";
  $("case-chosen").hidden = !files.length;
  $("case-clear").hidden = !files.length;
  if (!files.length) $("case-input").value = "";
}

export function clearCase() {
  chosen.files = [];
  show();
}

// The FormData of POST v1/search/case (the caller appends k, offset and the filters): every file under `files`.
export function caseForm(query, level, rerank) {
  const form = new FormData();
  for (const file of query.files) form.append("files", file, file.name);
  form.append("level", level);
  if (rerank !== "none") form.append("rerank", rerank);
  return form;
}

// Choosing case files replaces the query image and searches at once (series level when images were asked for:
// an uploaded case is compared with cases); choosing a query image forgets the case.
export function wireCases({ search, clearImage, levelChanged }) {
  $("case-input").addEventListener("change", (event) => {
    chosen.files = [...event.target.files];
    show();
    if (!chosen.files.length) return;
    clearImage();
    if (readLevel() === "image") setLevel("series");
    updateRerank();
    search(caseQuery());
  });
  $("case-clear").addEventListener("click", clearCase);
  $("file-input").addEventListener("change", clearCase);
  $("dropzone").addEventListener("drop", clearCase);
  $("rerank").addEventListener("change", levelChanged);
  for (const radio of document.querySelectorAll("input[name=level]")) radio.addEventListener("change", updateRerank);
  updateRerank();
}
