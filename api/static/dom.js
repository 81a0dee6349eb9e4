// Small DOM and formatting helpers shared by the page's modules.

export const $ = (id) => document.getElementById(id);

export function basename(path) {
  if (!path) return "";
  const cut = String(path).split("!/").pop();
  return cut.split(/[\\/]/).pop();
}

export function fmtScore(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(3);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// "2026-12-02T04:25:53.123456+00:00" -> "2026-12-02 04:25:53 UTC" (no microseconds, ISO order)
export function fmtDateTime(value) {
  const m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(String(value));
  if (!m) return String(value);
  const zone = !m[3] ? "" : m[3] === "Z" || /^[+-]00:?00$/.test(m[3]) ? " UTC" : ` ${m[3]}`;
  return `${m[1]} ${m[2]}${zone}`;
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
