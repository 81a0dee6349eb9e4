// Server-rendered PNGs into <img>: plain src without a key; fetch() + blob URLs with one (img sends no headers).

import { api, apiKey } from "./api.js";
import { state } from "./state.js";

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

// bucket "grid": lazy, freed with the results; anything else: one blob per bucket name, freed on replace
const owned = new Map();

export function releaseImage(bucket) {
  const url = owned.get(bucket);
  if (url) URL.revokeObjectURL(url);
  owned.delete(bucket);
}

export function loadImage(img, url, bucket) {
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
        releaseImage(bucket);
        owned.set(bucket, blobUrl);
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
