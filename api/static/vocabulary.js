// The query vocabulary from GET /v1/vocabulary: error titles, filter fields, grouping and stats names.
// The page keeps no copy of these tables; until the vocabulary is read, errors show their code only.

import { apiJson } from "./api.js";

export const vocabulary = { loaded: false, errors: {}, filters: [], group_by: [], stats: [], problem: null };

let pending = null;

export function loadVocabulary() {
  if (!pending) {
    pending = apiJson("v1/vocabulary")
      .then((body) => {
        vocabulary.errors = body.errors || {};
        vocabulary.filters = body.filters || [];
        vocabulary.group_by = body.group_by || [];
        vocabulary.stats = body.stats || [];
        vocabulary.loaded = true;
        vocabulary.problem = null;
        return vocabulary;
      })
      .catch((err) => {
        vocabulary.problem = err;
        pending = null; // asked again next time (e.g. the server was still starting)
        return vocabulary;
      });
  }
  return pending;
}

export function errorTitle(code) {
  const entry = vocabulary.errors[code];
  return entry && entry.title ? entry.title : "Request failed";
}
