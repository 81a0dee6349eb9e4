// The page's mutable state, in one place.

export const state = {
  file: null,
  fileUrl: null, // the query preview (object URL of a browser image, or the server's rendering)
  queryInfo: null, // {kind, modality, window} of the query file as the server decoded it
  query: null, // {kind: "image"|"text"|"similar", ...}
  offset: 0,
  k: 20,
  hits: [],
  seq: 0,
  controller: null,
  gridBlobs: [],
  detailHit: null,
  opener: null,
  observer: null,
};
