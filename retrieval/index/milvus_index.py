"""Milvus vector backend (Milvus Lite file or a Milvus server/cluster URI) behind the VectorIndex protocol."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.errors import BadQueryError, IndexBusyError, MedsearchError
from retrieval.index.base import Found, ReconcileReport, apply_delta, found_with_vectors, store_delta
from retrieval.index.exact import StoredScorer
from retrieval.optional import require
from retrieval.store.repo import Catalog, IdArray

log = logging.getLogger(__name__)
EXACT_MAX = 2048  # filtered searches over at most this many candidates are computed exactly from their vectors
MAX_TOPK = 16384  # Milvus refuses larger limits
WRITE_CHUNK = 1000  # rows per upsert (well under the gRPC message limit at width 1152)
ID_CHUNK = 4096  # ids per get/delete call


class VectorBackendError(MedsearchError):
    """The vector backend (a Milvus server) could not be reached or refused an operation."""

    code = "vector_backend_unavailable"
    status = 503
    title = "Vector back end unavailable"


class _QuietLite(logging.Filter):
    """Milvus Lite lacks the timestamp call iterators try first (pymilvus warns, its in-process gRPC server logs
    an error) and then falls back correctly: keep that noise out of every id listing."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "mvccTs" not in message and "Method not implemented" not in message


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_QuietLite())
logging.getLogger("grpc._server").addFilter(_QuietLite())
# Milvus Lite's in-process server refuses pymilvus' 10 s keepalive pings (GOAWAY too_many_pings): ping rarely
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 3_600_000, "grpc.keepalive_permit_without_calls": False}


def is_lite(uri: str) -> bool:
    """A Milvus Lite file (pymilvus runs the engine in-process for a path ending in .db)."""
    return uri.endswith(".db")


class _LiteFiles:
    """Milvus Lite serves a file from a server thread per path, shared by every client in the process; stop it
    (releasing the file for other processes) when the last index using it closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            left = self._users.get(path, 0) - 1
            if left > 0:
                self._users[path] = left
                return
            self._users.pop(path, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


LITE_FILES = _LiteFiles()


def _lite_in_use(path: str) -> bool:
    """Whether another process holds the Milvus Lite file's lock (Milvus Lite flocks DIR/LOCK while open)."""
    lock = Path(path) / "LOCK"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


class MilvusIndex:
    """Vectors in a Milvus collection (primary key = image id, inner product on unit vectors)."""

    def __init__(
        self, uri: str, collection: str, width: int, token: str | None = None, stored: StoredScorer | None = None
    ) -> None:
        # exact scores for few candidates: from the store's float vectors, or else from the ones Milvus keeps
        self._stored = stored or StoredScorer(self)
        pymilvus = require("pymilvus", feature="the Milvus vector backend", extra="milvus")
        self._errors: tuple[type[BaseException], ...] = (pymilvus.MilvusException,)
        self.uri = uri
        self.name = collection
        self.width = width
        self.dirty = False
        self.threads_used: int | None = None  # Milvus searches in its own server: nothing to report
        self._lock = threading.RLock()
        self.lite = is_lite(uri)
        options: dict[str, Any] = {}
        if self.lite:
            require("milvus_lite", feature="Milvus Lite (a Milvus file in the data folder)", extra="milvus")
            self.uri = uri = str(Path(uri).resolve())
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            options["grpc_options"] = LITE_GRPC_OPTIONS
            LITE_FILES.acquire(uri)
        self._closed = False
        try:
            try:
                self._client: Any = pymilvus.MilvusClient(uri=uri, token=token or "", **options)
            except self._errors:
                if not self.lite or _lite_in_use(uri):
                    raise
                # nobody holds it, yet it does not open: damaged. Its contents are derived from the stored
                # vectors, so set it aside and start a new one (reconcile refills it), as with a bad FAISS file.
                aside = Path(f"{uri}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                log.warning("Milvus Lite file %s does not open; moved to %s and rebuilt from the store", uri, aside)
                os.replace(uri, aside)
                self._client = pymilvus.MilvusClient(uri=uri, token=token or "", **options)
        except self._errors as exc:
            self._release()
            if self.lite:
                raise IndexBusyError(
                    f"the Milvus Lite file {uri} is open in another process; Milvus Lite serves one process at a "
                    "time: stop the other medsearch process using it, or run a Milvus server and set "
                    f"MEDSEARCH_MILVUS_URI=http://HOST:19530 ({exc})"
                ) from exc
            raise VectorBackendError(
                f"cannot connect to Milvus at {uri} ({exc}); check MEDSEARCH_MILVUS_URI and MEDSEARCH_MILVUS_TOKEN"
            ) from exc
        try:
            self._existed = self._call(self._open)
            self._count = int(self._call(self._read_count))
        except BaseException:
            self.close()
            raise

    # -- collection management ------------------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise VectorBackendError(f"Milvus at {self.uri} failed: {exc}") from exc

    def _open(self) -> bool:
        """Use the collection if it exists with our width; otherwise (re)create it. True if it was usable."""
        if self._client.has_collection(self.name):
            fields = self._client.describe_collection(self.name)["fields"]
            dims = [int(f.get("params", {}).get("dim", 0)) for f in fields if f["name"] == "vector"]
            if dims == [self.width]:
                self._client.load_collection(self.name)
                return True
            self._client.drop_collection(self.name)  # another model's vectors: the store holds the truth
        self._create()
        return False

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.width)
        params = self._client.prepare_index_params()
        # Milvus Lite searches exactly (FLAT); a server picks its own index (AUTOINDEX, HNSW-like)
        params.add_index(field_name="vector", index_type="FLAT" if self.lite else "AUTOINDEX", metric_type="IP")
        self._client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")

    def _read_count(self) -> int:
        rows = self._client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    @property
    def ntotal(self) -> int:
        return self._count

    def describe(self) -> dict[str, Any]:
        """Back end, collection and size (shown by `medsearch stats`; never the token)."""
        return {
            "params": {"type": "milvus", "collection": self.name, "lite": self.lite},
            "vectors": self.ntotal,
        }

    def close(self) -> None:
        """Release the connection (and Milvus Lite's file)."""
        with self._lock:
            if self._closed:
                return
            self._client.close()
            self._release()

    def _release(self) -> None:
        self._closed = True
        if self.lite:
            LITE_FILES.release(self.uri)

    # -- contents ----------------------------------------------------------------------------
    def ids(self) -> IdArray:
        """Ids currently in the collection, sorted."""
        with self._lock:
            return self._call(self._ids)  # type: ignore[no-any-return]

    def _ids(self) -> IdArray:
        found: list[int] = []
        iterator = self._client.query_iterator(self.name, filter="id >= 0", output_fields=["id"], batch_size=16384)
        try:
            while batch := iterator.next():
                found.extend(int(row["id"]) for row in batch)
        finally:
            iterator.close()
        return np.unique(np.asarray(found, dtype=np.int64))

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None:
        """Upsert unit vectors under the given ids (an id added twice stays one row)."""
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.width:
            raise ValueError(f"vector width {vecs.shape[-1]} does not match index width {self.width}")
        with self._lock:
            for start in range(0, len(ids), WRITE_CHUNK):
                rows = [
                    {"id": int(i), "vector": v.tolist()}
                    for i, v in zip(ids[start : start + WRITE_CHUNK], vecs[start : start + WRITE_CHUNK], strict=True)
                ]
                self._call(self._client.upsert, self.name, rows)
            self.dirty = True
            self._count = int(self._call(self._read_count))

    def _present(self, ids: IdArray) -> list[int]:
        present: list[int] = []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = [int(i) for i in ids[start : start + ID_CHUNK]]
            present.extend(int(r["id"]) for r in self._call(self._client.get, self.name, chunk, ["id"]))
        return present

    def remove(self, ids: IdArray) -> int:
        """Delete ids; returns how many were present."""
        if len(ids) == 0:
            return 0
        with self._lock:
            present = self._present(np.asarray(ids, dtype=np.int64))
            for start in range(0, len(present), ID_CHUNK):
                self._call(self._client.delete, self.name, present[start : start + ID_CHUNK])
            if present:
                self.dirty = True
                self._count = int(self._call(self._read_count))
            return len(present)

    # -- search ------------------------------------------------------------------------------
    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None, probe: float = 1.0
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """Top-k by inner product per query row, restricted to candidate ids when given (ids -1 pad a short row).
        `probe` is not passed on: Milvus Lite searches exactly (FLAT) and a server's AUTOINDEX sets its own."""
        q = np.ascontiguousarray(query.reshape(-1, self.width), dtype=np.float32)
        with self._lock:  # the size and the search agree: a sync in between would cut a full listing short
            available = self.ntotal if candidates is None else len(candidates)
            if available == 0 or self.ntotal == 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            k = max(1, min(k, available, MAX_TOPK))
            if candidates is not None and len(candidates) <= EXACT_MAX:
                return self._stored.score(q, k, np.asarray(candidates, dtype=np.int64))
            expr = None if candidates is None else f"id in [{','.join(str(int(i)) for i in candidates)}]"
            kwargs: dict[str, Any] = {"limit": k, "output_fields": ["id"], "search_params": {"metric_type": "IP"}}
            if expr is not None:
                kwargs["filter"] = expr
            results = self._call(lambda: self._client.search(self.name, data=q.tolist(), **kwargs))
        scores = np.zeros((len(q), k), np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for row, hits in enumerate(results):
            for col, hit in enumerate(list(hits)[:k]):
                ids[row, col] = int(hit["id"])
                scores[row, col] = float(hit["distance"])
        return scores, ids

    def search_vectors(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        candidates: IdArray | None = None,
        with_vectors: bool = True,
        exact_top: int | None = None,
        probe: float = 1.0,
    ) -> Found:
        """`search` for one query, the hits' vectors then looked up (`vectors`; Milvus ranks all k alike)."""
        scores, ids = self.search(query, k, candidates, probe)
        return found_with_vectors(self, scores[0], ids[0], with_vectors)

    def searchable_now(self) -> bool:
        """Never: every search is a round trip to Milvus (a server, or Milvus Lite's own process)."""
        return False

    def vectors(self, ids: IdArray) -> dict[int, npt.NDArray[np.float32]]:
        """The float vectors of these ids (from the store when one is attached, else from Milvus)."""
        return self._stored.vectors(np.asarray(ids, np.int64))

    def iter_vectors(
        self, ids: Iterable[int] | None = None, chunk: int = ID_CHUNK
    ) -> Iterator[tuple[IdArray, npt.NDArray[np.float32]]]:
        """The vectors Milvus keeps for the given ids (the exact path's source when no store is attached)."""
        wanted = [int(i) for i in (self.ids() if ids is None else ids)]
        for start in range(0, len(wanted), chunk):
            rows = self._call(self._client.get, self.name, wanted[start : start + chunk], ["id", "vector"])
            got = np.asarray([int(row["id"]) for row in rows], dtype=np.int64)
            vecs = np.asarray([row["vector"] for row in rows], dtype=np.float32).reshape(len(got), self.width)
            yield got, vecs

    # -- persistence and agreement with the store ---------------------------------------------
    def save(self) -> None:
        """Ask Milvus to persist what was written (it is durable per write; flush seals the segments)."""
        with self._lock:
            self._call(self._client.flush, self.name)
            self.dirty = False

    def rebuild(self, catalog: Catalog, requested: str | None = None, **overrides: int | None) -> int:
        """Drop and refill the collection from the stored vectors (no re-embedding); Milvus has no index types."""
        if requested is not None or any(v is not None for v in overrides.values()):
            raise BadQueryError("--type and index parameters apply to the FAISS vector backend only")
        with self._lock:
            self._call(self._client.drop_collection, self.name)
            self._call(self._create)
            self._count = 0
            for ids, vecs in catalog.iter_vectors():
                self.add(ids, vecs)
            self.dirty = True
            return self.ntotal

    def maybe_upgrade(self, catalog: Catalog) -> bool:
        """Milvus picks its own index: nothing to switch as the collection grows."""
        return False

    def reconcile(self, catalog: Catalog) -> ReconcileReport:
        """Make the collection agree with the store: fill a new one, or top up and drop extras."""
        with self._lock:
            if not self._existed:
                self._existed = True
                total = self.rebuild(catalog)
                return ReconcileReport(False, True, total, 0, total)
            added, removed = self.sync(catalog)
            return ReconcileReport(True, False, added, removed, self.ntotal)

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]:
        """Make the collection hold exactly the store's vectors: (added, removed). What changed is read without
        the lock (searches go on; upserts are idempotent, so another writer in between does no harm), and each
        step is written under it."""
        added = removed = 0
        for step in store_delta(self, catalog, store_ids):
            with self._lock:
                done = apply_delta(self, step)
            added, removed = added + done[0], removed + done[1]
        with self._lock:
            self._count = int(self._call(self._read_count))  # other writers may have added to a shared Milvus
        return added, removed
