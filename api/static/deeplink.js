// Deep links from a viewer: /?study=UID, /?series=UID, /?sop=UID[&frame=N] open the page with that case as the query.

import { apiJson } from "./api.js";
import { setLevel } from "./levels.js";

// The query a link asks for (null: none); an unindexed SOP instance is the API's 404, shown by the caller.
export async function deepLinkQuery(search = window.location.search) {
  const params = new URLSearchParams(search);
  for (const level of ["study", "series"]) {
    const uid = (params.get(level) || "").trim();
    if (uid) {
      setLevel(level);
      return { kind: "case", case: level, uid };
    }
  }
  const sop = (params.get("sop") || "").trim();
  if (!sop) return null;
  const lookup = new URLSearchParams({ uid: sop });
  const frame = (params.get("frame") || "").trim();
  if (frame) lookup.set("frame", frame);
  const image = await apiJson(`v1/images/by-sop?${lookup}`);
  return { kind: "similar", pivot: image };
}
