"""FAISS index of any supported type keyed by image id: atomic saves, reconciled with the store, exact filters."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from retrieval.fsutil import atomic_write, atomic_write_text
from retrieval.index import faiss_types as types
from retrieval.index.base import Found, ReconcileReport, apply_delta, found_with_vectors, store_delta
from retrieval.index.exact import Scored, StoredScorer, empty_result, top_k, top_k_rows
from retrieval.index.exact_vectors import ExactVectors
from retrieval.index.filtered import bitmap_selector, exact_from_proposals
from retrieval.index.rwlock import SharedLock
from retrieval.store.repo import Catalog, IdArray
from retrieval.threads import use_search_threads

faiss: Any = _faiss  # the SWIG stubs know little of the index classes; typed at our own seams

log = logging.getLogger(__name__)
# Lossy (scalar-quantised) indexes score up to this many candidates exactly from their in-memory float vectors; above
# it every list is scanned for the candidates (an id bitmap) and the codes' best are re-scored exactly, widened until
# no candidate left out could reach the k-th score (docs/vector-indexes.md: the rule and its measurements).
LOSSY_EXACT_MAX = 4000
# Unfiltered searches on a lossy index: the codes propose k x this many, the float vectors rank them (measured in
# BENCHMARKS.md issue 22, "Round 4": text queries, whose cosines are small and close together, need the margin;
# recall@10 at 100k and 1M is the same from 2k proposals as from 3k or 4k, and lower from k).
REFINE_FACTOR = 2
# HNSW cannot delete: removed ids are masked, and the graph is rebuilt once they pile up.
TOMBSTONE_FRACTION = 0.2
WIDEN_STEPS = (1, 4, 16, 64)
TEMP_PREFIX = ".index-"  # an interrupted save leaves `.index-*.tmp` behind, never a half index


class FaissIndex:
    """flat (exact), hnsw, ivf-sq8 or ivf-fp16 over unit vectors; inner product is cosine; ids are image ids."""

    def __init__(
        self, path: Path, width: int, options: types.FaissOptions | None = None, stored: StoredScorer | None = None
    ) -> None:
        self.path = Path(path)
        self.width = width
        self.options = options or types.FaissOptions()
        self._stored = stored  # exact scores from the store's float vectors (None: the quantised codes only)
        self._exact: ExactVectors | None = None  # a lossy index's float vectors, in memory or memory-mapped
        self._lock = SharedLock()  # searches share it; a change to the FAISS object takes it alone, briefly
        self._writing = threading.RLock()  # one change at a time, from reading what to change to applying it
        self.params = types.IndexParams()
        self._index: Any = types.new_index(self.params, width)
        self._tombstones: set[int] = set()
        self._mask: Any = None
        self._mapped = False
        self.build: dict[str, Any] = {}
        self.dirty = False
        self.threads_used: int | None = None  # OpenMP threads the last search ran with (read back by the service)

    @property
    def vectors_path(self) -> Path:
        """The float32 vectors a lossy index re-scores with (`.npy`, saved with the index)."""
        return self.path.with_name(self.path.name + ".vectors.npy")

    @property
    def sidecar_path(self) -> Path:
        """JSON file next to the index recording its type, parameters and how it was built."""
        return self.path.with_name(self.path.name + ".json")

    def searchable_now(self) -> bool:
        """In memory; searchable now unless a change (an add, a removal, a sync step, the swap after a rebuild)
        holds the index or waits for it."""
        return not self._lock.contended()

    # -- contents -----------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def ids(self) -> IdArray:
        """Ids currently searchable, sorted."""
        with self._lock.shared():
            if self.params.is_ivf:
                invlists = self._index.invlists
                parts = [
                    faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                    for i in range(self._index.nlist)
                    if invlists.list_size(i)
                ]
                have = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            else:
                have = faiss.vector_to_array(self._index.id_map)
            have = np.sort(have.astype(np.int64))
            if self._tombstones:
                have = np.setdiff1d(have, np.fromiter(self._tombstones, np.int64), assume_unique=True)
            return have

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None:
        """Add unit vectors under the given ids."""
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.shape[1] != self.width:
            raise ValueError(f"vector width {vecs.shape[1]} does not match index width {self.width}")
        with self._changing():
            self._writable()
            if self._tombstones and not self._tombstones.isdisjoint(int(i) for i in ids):
                self._compact()  # a masked id comes back: drop its old vector for good first
            self._index.add_with_ids(vecs, np.ascontiguousarray(ids, dtype=np.int64))
            if self._exact is not None:
                self._exact.add(np.asarray(ids, np.int64), vecs)
            self.dirty = True

    def remove(self, ids: IdArray) -> int:
        """Remove ids; returns how many were present. HNSW masks them and compacts once they pile up."""
        if len(ids) == 0:
            return 0
        wanted = np.ascontiguousarray(np.unique(ids), dtype=np.int64)
        with self._changing():
            self._writable()
            if self._exact is not None:
                self._exact.remove(wanted)
            if self.params.type != "hnsw":
                removed = int(self._index.remove_ids(wanted))  # type: ignore[arg-type]
            else:
                present = wanted[np.isin(wanted, faiss.vector_to_array(self._index.id_map))]
                fresh = [int(i) for i in present if int(i) not in self._tombstones]
                self._tombstones.update(fresh)
                self._mask = None
                removed = len(fresh)
                if len(self._tombstones) > TOMBSTONE_FRACTION * max(1, int(self._index.ntotal)):
                    self._compact()
            self.dirty = self.dirty or removed > 0
            return removed

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """A change: other changes wait (the writer mutex first, always), then searches wait (the shared lock)."""
        with self._writing, self._lock.exclusive():
            yield

    def _compact(self) -> None:
        """Rebuild the HNSW graph from its own (lossless) stored vectors, without the masked ids."""
        graph = faiss.downcast_index(self._index.index)
        all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        keep = ~np.isin(all_ids, np.fromiter(self._tombstones, np.int64))
        vectors = graph.reconstruct_n(0, int(graph.ntotal))[keep]
        fresh = types.new_index(self.params, self.width)
        fresh.add_with_ids(vectors, all_ids[keep])
        self._index, self._tombstones, self._mask = fresh, set(), None
        log.info("compacted the HNSW index to %d vectors", fresh.ntotal)

    def _writable(self) -> None:
        """A memory-mapped index is read-only in FAISS (writing aborts the process): copy it into memory."""
        if self._mapped:
            self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            self._mapped = False

    # -- search ---------------------------------------------------------------------------------
    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None, probe: float = 1.0
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """Top-k by inner product per query row, optionally restricted to candidate ids (exact when few); `probe`
        times the lists (or graph beam) an approximate search visits."""
        q = np.ascontiguousarray(query.reshape(-1, self.width), dtype=np.float32)
        use_search_threads(self.options.search_threads)  # per thread: OpenMP does not share it across threads
        self.threads_used = int(faiss.omp_get_max_threads())
        with self._lock.shared():  # searches run side by side (FAISS releases the GIL); changes wait
            if candidates is not None and self._tombstones:
                candidates = np.setdiff1d(candidates, np.fromiter(self._tombstones, np.int64))
            available = self.ntotal if candidates is None else len(candidates)
            k = max(1, min(k, available))
            if self.ntotal == 0 or available == 0:
                return empty_result(len(q))
            if candidates is None:
                return self._approximate(q, k, self._tombstone_mask(), None, probe)
            cand = np.ascontiguousarray(candidates, dtype=np.int64)
            if self.params.type == "hnsw":  # a filtered graph walk can miss: exact up to the limit, then widened
                if len(cand) <= self.options.exact_filter_max:
                    return self._exact_reconstructed(q, k, cand)
                return self._approximate(q, k, faiss.IDSelectorBatch(cand), cand, probe)
            if not self.params.lossless and self._exact is not None and len(cand) <= LOSSY_EXACT_MAX:
                return self._exact_stored(q, k, cand)
            if self._exact is None and not self.params.lossless:
                return self._legacy_filtered(q, k, cand)
            return exact_from_proposals(self._propose(cand), self._exact_scores, q, k, len(cand))

    def _propose(self, cand: IdArray) -> Callable[[npt.NDArray[np.float32], int], Scored]:
        """The index's own best `fetch` among the candidates (an id bitmap; every IVF list scanned)."""
        selector, bitmap = bitmap_selector(cand)

        def search(q: npt.NDArray[np.float32], fetch: int, _bitmap: object = bitmap) -> Scored:  # (kept alive)
            params = types.search_parameters(self.params, selector, fetch, widen=max(1, self.params.nlist))
            scores, ids = self._index.search(q, fetch, params=params) if params else self._index.search(q, fetch)
            return scores, ids

        return search

    def vectors(self, ids: IdArray) -> dict[int, npt.NDArray[np.float32]]:
        """Float vectors by id from the index itself (lossless storage, or a lossy index's float vectors)."""
        wanted = np.asarray(ids, np.int64)
        with self._lock.shared():
            if self._exact is not None:
                found, vecs = self._exact.get(wanted)
            elif self.params.lossless:
                found = wanted[np.isin(wanted, faiss.vector_to_array(self._index.id_map))]
                vecs = self._index.reconstruct_batch(found) if len(found) else np.zeros((0, self.width), np.float32)
            else:
                return {} if self._stored is None else self._stored.vectors(wanted)
        return dict(zip(found.tolist(), np.asarray(vecs, np.float32), strict=True))

    def _exact_scores(self, q: npt.NDArray[np.float32], k: int, ids: IdArray) -> Scored:
        """Exact top-k among `ids`: from the index's own lossless vectors, or the lossy index's float vectors."""
        return self._exact_reconstructed(q, k, ids) if self.params.lossless else self._exact_stored(q, k, ids)

    def _legacy_filtered(self, q: npt.NDArray[np.float32], k: int, cand: IdArray) -> Scored:
        """A lossy index without its float vectors (none attached): stored vectors from the database, or codes."""
        if len(cand) <= min(LOSSY_EXACT_MAX, self.options.exact_filter_max):
            return self._exact_stored(q, k, cand)
        if len(cand) <= self.options.exact_filter_max:
            return self._all_lists(q, k, cand)
        return self._approximate(q, k, faiss.IDSelectorBatch(cand), cand)

    def _approximate(
        self, q: npt.NDArray[np.float32], k: int, selector: Any, cand: IdArray | None, probe: float = 1.0
    ) -> Scored:
        """The index's own search, widened until it yields k hits, then exact as the last resort."""
        rerank = self._reranks(cand)
        scores, ids, enough = self._proposals(q, k, selector, cand, rerank, probe=probe)
        if not enough and cand is not None:
            return self._exact_reconstructed(q, k, cand) if self.params.lossless else self._exact_stored(q, k, cand)
        if rerank:
            return self._rerank(q, k, ids)
        return scores[:, :k].astype(np.float32), ids[:, :k].astype(np.int64)

    def _reranks(self, cand: IdArray | None) -> bool:
        """Whether the codes' proposals are re-scored exactly (a lossy index with float vectors to do it)."""
        return not self.params.lossless and (self._exact is not None or (cand is not None and self._stored is not None))

    def _proposals(
        self,
        q: npt.NDArray[np.float32],
        k: int,
        selector: Any,
        cand: IdArray | None,
        rerank: bool,
        exact_top: int | None = None,
        probe: float = 1.0,
    ) -> tuple[npt.NDArray[np.float32], IdArray, bool]:
        """The index's own best (k, or REFINE_FACTOR x k to re-rank: x `exact_top` when given, at least k), from
        `probe` times the lists (graph beam) the index visits, widened until every query row has k; and whether
        they did."""
        if rerank and cand is not None:
            fetch = min(max(4 * k, k + 32), len(cand))  # extra hits to re-rank
        elif rerank:
            fetch = min(max(k, REFINE_FACTOR * (k if exact_top is None else exact_top)), self.ntotal)
        else:
            fetch = k
        scores, ids = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        for widen in WIDEN_STEPS if self.params.type != "flat" else (1,):
            params = types.search_parameters(self.params, selector, fetch, widen * probe)
            scores, ids = self._index.search(q, fetch, params=params) if params else self._index.search(q, fetch)
            if int((ids >= 0).sum(axis=1).min()) >= k:
                return scores, ids, True
        return scores, ids, False

    def search_vectors(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        candidates: IdArray | None = None,
        with_vectors: bool = True,
        exact_top: int | None = None,
        probe: float = 1.0,
    ) -> Found:
        """`search` for one query with the hits' float vectors. Unfiltered on a lossy index (a search by id, a
        text query): the vectors the re-rank scored with are handed on, no second lookup. `exact_top`: the hits
        the caller shows (k less a folding margin): the codes propose REFINE_FACTOR x that many (at least k), the
        refine factor measured for a page of k (the margin's places replace folded copies, which score alike)."""
        if candidates is not None or not with_vectors or self.params.lossless or self._exact is None:
            scores, ids = self.search(query, k, candidates, probe)
            return found_with_vectors(self, scores[0], ids[0], with_vectors)
        q = np.ascontiguousarray(query.reshape(1, self.width), dtype=np.float32)
        use_search_threads(self.options.search_threads)
        self.threads_used = int(faiss.omp_get_max_threads())
        with self._lock.shared():
            k = max(1, min(k, self.ntotal))
            if self.ntotal == 0:
                scores, ids = empty_result(1)
                return found_with_vectors(self, scores[0], ids[0], False)
            _, proposed, _ = self._proposals(q, k, self._tombstone_mask(), None, True, exact_top, probe)
            row = proposed[0]  # one search's proposals hold each id once (no sort needed: ties rank by id after)
            ids, vectors = self._exact.get(row[row >= 0])
            scores, best, at = top_k_rows(q[0], ids, vectors, k)
            return Found(scores, best, vectors[at], np.ones(len(best), bool))

    def _all_lists(self, q: npt.NDArray[np.float32], k: int, cand: IdArray) -> Scored:
        """In-filter top-k for a quantised IVF: every list is scanned for the candidates (an ID selector, nprobe =
        nlist), so none is missed for lying outside the query's nearest lists; the codes' best few are then
        re-scored with the stored float vectors. Cheaper than reading every candidate's stored vector (~20 us
        each) once there are more candidates than hits to re-score."""
        fetch = min(max(4 * k, k + 32), len(cand))
        if self._stored is None or len(cand) <= fetch:
            return self._exact_stored(q, k, cand)
        params = types.search_parameters(self.params, faiss.IDSelectorBatch(cand), fetch, widen=self.params.nlist)
        _, ids = self._index.search(q, fetch, params=params)
        return self._rerank(q, k, ids)

    def _tombstone_mask(self) -> Any:
        if not self._tombstones:
            return None
        if self._mask is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))
            self._mask = (faiss.IDSelectorNot(batch), batch)  # keep the inner selector alive
        return self._mask[0]

    def _exact_reconstructed(self, q: npt.NDArray[np.float32], k: int, cand: IdArray) -> Scored:
        """Exact scores from the vectors the index keeps (flat and HNSW storage are lossless)."""
        try:
            vectors = self._index.reconstruct_batch(cand)
        except RuntimeError:  # a candidate the index has not caught up with yet: score what it holds
            cand = cand[np.isin(cand, faiss.vector_to_array(self._index.id_map))]
            if len(cand) == 0:
                return empty_result(len(q))
            vectors = self._index.reconstruct_batch(cand)
        return top_k(q, cand, vectors, k)

    def _exact_stored(self, q: npt.NDArray[np.float32], k: int, cand: IdArray) -> Scored:
        """Exact scores from the stored float vectors (the source of truth), for lossy index types."""
        if self._exact is not None:
            ids, vectors = self._exact.get(cand)
            return top_k(q, ids, vectors, k)
        if self._stored is None:  # no store attached: the quantised codes are all there is
            return self._approximate_exhaustive(q, k, cand)
        return self._stored.score(q, k, cand)

    def _approximate_exhaustive(self, q: npt.NDArray[np.float32], k: int, cand: IdArray) -> Scored:
        params = types.search_parameters(self.params, faiss.IDSelectorBatch(cand), k, widen=self.params.nlist)
        scores, ids = self._index.search(q, k, params=params)
        return scores.astype(np.float32), ids.astype(np.int64)

    def _rerank(self, q: npt.NDArray[np.float32], k: int, ids: IdArray) -> Scored:
        """Re-score a lossy index's hits with the stored float vectors (one small read) and keep the best k."""
        found = np.unique(ids[ids >= 0])
        return self._exact_stored(q, k, found)

    # -- persistence ----------------------------------------------------------------------------
    def save(self) -> None:
        """Write the index then its JSON sidecar, each to a temp file, fsync, rename, fsync the folder (changes
        wait; searches go on: writing only reads the index)."""
        with self._writing, self._lock.shared():
            if self._exact is not None:
                self._exact.save(self.vectors_path, TEMP_PREFIX)
            else:
                self.vectors_path.unlink(missing_ok=True)
            atomic_write(self.path, lambda tmp: faiss.write_index(self._index, tmp), TEMP_PREFIX)
            atomic_write_text(self.sidecar_path, json.dumps(self.describe(), indent=2, sort_keys=True), TEMP_PREFIX)
            self.dirty = False

    def describe(self) -> dict[str, Any]:
        """Type, parameters, size and how the index was built (shown by `medsearch stats`)."""
        return {
            "params": self.params.as_dict(),
            "vectors": self.ntotal,
            "masked_removed": len(self._tombstones),
            "memory_mapped": self._mapped,
            "exact_vectors": None
            if self._exact is None
            else {"count": len(self._exact), "bytes": self._exact.nbytes, "memory_mapped": self._exact.mapped},
            "build": self.build,
            "faiss_version": faiss.__version__,
        }

    def close(self) -> None:
        """Nothing to release: the index lives in memory (or a read-only memory map)."""

    def rebuild(self, catalog: Catalog, requested: str | None = None, **overrides: int | None) -> int:
        """Rebuild from the stored vectors (no re-embedding) as `requested` (default: the settings' type). The new
        FAISS index is built aside while searches use the old one, then swapped in under the exclusive lock."""
        with self._writing:
            started = time.perf_counter()
            count = len(catalog.all_ids())
            params = types.plan(self.options, count, requested, **overrides)
            index = types.new_index(params, self.width)
            trained_on = types.train_size(params, count)
            if params.is_ivf:
                types.fit_training(index, params, trained_on)
                index.train(self._training_sample(catalog, trained_on))
            exact = None if params.lossless else np.empty((count, self.width), np.float32)
            exact_ids, filled = np.empty(count, np.int64), 0
            for ids, vecs in catalog.iter_vectors():
                if len(ids):
                    index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
                    if exact is not None:  # the vectors written meanwhile are caught up by the next sync
                        take = min(len(ids), count - filled)
                        exact_ids[filled : filled + take], exact[filled : filled + take] = ids[:take], vecs[:take]
                        filled += take
            with self._lock.exclusive():
                self._index, self.params, self._mapped = index, params, False
                self._exact = None if exact is None else ExactVectors.of(self.width, exact_ids[:filled], exact[:filled])
                self._tombstones, self._mask = set(), None
                self.build = {
                    "requested": requested or self.options.index_type,
                    "vectors": count,
                    "trained_on": trained_on,
                    "seconds": round(time.perf_counter() - started, 3),
                    "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                self.dirty = True
                return self.ntotal

    def maybe_upgrade(self, catalog: Catalog) -> bool:
        """With index_type=auto: rebuild an exact index as the approximate type once it outgrows the threshold."""
        with self._writing:
            if self.options.index_type != "auto" or self.params.type != "flat":
                return False
            if self.ntotal < self.options.auto_threshold:
                return False
            self.rebuild(catalog)
            log.info("index outgrew %d vectors: rebuilt as %s", self.options.auto_threshold, self.params.type)
            return True

    def _training_sample(self, catalog: Catalog, size: int) -> npt.NDArray[np.float32]:
        ids = catalog.all_ids()
        pick = np.sort(np.random.default_rng(0).choice(ids, size=min(size, len(ids)), replace=False))
        return np.concatenate([vecs for _, vecs in catalog.iter_vectors(pick.tolist()) if len(vecs)])

    def _load(self) -> bool:
        """Read the saved file (memory-mapped if configured) when it is one of ours and of the right width."""
        if not self.path.exists():
            return False
        flags = int(faiss.IO_FLAG_MMAP_IFC) if self.options.mmap else 0
        try:
            index = faiss.read_index(str(self.path), flags)
        except RuntimeError:
            return False
        params = types.read_params(index)
        if params is None or index.d != self.width:
            return False
        self._index, self._mapped = index, bool(flags)
        self.params = types.with_search_overrides(params, self.options)
        self._exact = None if params.lossless else ExactVectors.load(self.vectors_path, self.width, self.options.mmap)
        if self.params.is_ivf:
            index.nprobe = self.params.nprobe
        elif self.params.type == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = self.params.ef_search
        self._tombstones, self._mask = set(), None
        try:
            self.build = dict(json.loads(self.sidecar_path.read_text()).get("build", {}))
        except (OSError, ValueError, AttributeError):
            self.build = {}
        return True

    def reconcile(self, catalog: Catalog) -> ReconcileReport:
        """Load the saved file and make it agree with the store: top up, drop extras, or rebuild."""
        with self._changing():
            if not self._load():
                self.rebuild(catalog)
                return ReconcileReport(False, True, self.ntotal, 0, self.ntotal)
            self._match_exact(catalog)
            added, removed = self.sync(catalog)
            return ReconcileReport(True, False, added, removed, self.ntotal)

    def _match_exact(self, catalog: Catalog) -> None:
        """A lossy index's float vectors hold exactly the index's ids (read again from the store when they do not:
        saved by an older version, or a save interrupted between the two files)."""
        if self.params.lossless:
            return
        have = self.ids()
        if self._exact is not None and np.array_equal(self._exact.ids(), have):
            return
        exact = ExactVectors(self.width)
        for ids, vecs in catalog.iter_vectors(have.tolist()):
            exact.add(ids, vecs)
        self._exact = ExactVectors.of(self.width, *exact.get(exact.ids()))
        self.dirty = True

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]:
        """Make the in-memory index hold exactly the store's vectors: (added, removed). What changed is read with
        only the writer mutex held (searches go on); each step is applied in a short exclusive section."""
        added = removed = 0
        with self._writing:
            for step in store_delta(self, catalog, store_ids):
                with self._lock.exclusive():
                    done = apply_delta(self, step)
                added, removed = added + done[0], removed + done[1]
        return added, removed
