// The user's marks on results: image ids liked ("more like this") and unliked ("not like this").
//
// Stable interface (other modules build on it):
//   marks            {like: Set<number>, unlike: Set<number>}; read it, change it only through the functions below
//   markOf(id)       "like" | "unlike" | null
//   toggle(id, kind) kind "like" | "unlike": sets that mark (an id holds at most one) or removes it if already set;
//                    returns the id's mark afterwards
//   clear()          removes every mark
//   counts()         {like: n, unlike: m}
//   onChange(fn)     calls fn(marks) after every change; returns a function that unsubscribes
// Every change also dispatches a "medsearch:marks" event on document with detail {like: [...], unlike: [...]}.

export const marks = { like: new Set(), unlike: new Set() };

const listeners = new Set();
const KINDS = ["like", "unlike"];

function changed() {
  for (const fn of [...listeners]) fn(marks);
  document.dispatchEvent(new CustomEvent("medsearch:marks", { detail: { like: [...marks.like], unlike: [...marks.unlike] } }));
}

export function markOf(id) {
  const n = Number(id);
  if (marks.like.has(n)) return "like";
  if (marks.unlike.has(n)) return "unlike";
  return null;
}

export function toggle(id, kind) {
  if (!KINDS.includes(kind)) throw new Error(`unknown mark kind: ${kind}`);
  const n = Number(id);
  const had = marks[kind].has(n);
  marks.like.delete(n);
  marks.unlike.delete(n);
  if (!had) marks[kind].add(n);
  changed();
  return markOf(n);
}

export function clear() {
  if (!marks.like.size && !marks.unlike.size) return;
  marks.like.clear();
  marks.unlike.clear();
  changed();
}

export function counts() {
  return { like: marks.like.size, unlike: marks.unlike.size };
}

export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
