// The context panel above the results: what the hits' cases were reported, labelled, tagged and scored by probes
// (counts and score-weighted shares from the answer's `context`), with the not-for-diagnosis notice.

import { $, el } from "./dom.js";

const KINDS = [
  ["findings", "Report findings"],
  ["labels", "Labels"],
  ["tags", "Tags"],
  ["probes", "Probes (p ≥ 0.5)"],
];

export function renderContext(context) {
  const panel = $("context-panel");
  const box = $("context-items");
  box.replaceChildren();
  if (!context || !context.hits) {
    panel.hidden = true;
    return;
  }
  for (const [kind, title] of KINDS) {
    const items = context[kind] || [];
    if (!items.length) continue;
    const list = el("ul", { className: "context-list" });
    for (const item of items) {
      const bar = el("span", { className: "context-bar" });
      bar.style.setProperty("--w", `${Math.round(item.share * 100)}%`);
      const row = el("li", { title: `score-weighted share ${Math.round(item.share * 100)} %` }, bar,
        el("span", { className: "context-name", textContent: item.name }),
        el("span", { className: "context-count", textContent: `${item.count} of ${item.of}` }));
      Object.assign(row.dataset, { testid: "context-item", kind, name: item.name, count: String(item.count) });
      list.append(row);
    }
    box.append(el("div", { className: "context-kind" }, el("h3", { textContent: title }), list));
  }
  const reported = `${context.with_report} of ${context.hits} with a report`;
  if (!box.children.length) box.append(el("p", { className: "muted", textContent: "No labels, tags, probes or report findings among these results." }));
  $("context-reported").textContent = reported;
  $("context-notice").textContent = context.notice;
  panel.hidden = false;
}
