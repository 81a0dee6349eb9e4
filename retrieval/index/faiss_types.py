"""FAISS index types (flat, HNSW, IVF with scalar quantisation): their parameters, construction and reading back."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import faiss as _faiss

from retrieval.settings import Settings

faiss: Any = _faiss  # the SWIG stubs know little of the index classes; typed at our own seams

ConcreteType = Literal["flat", "hnsw", "ivf-sq8", "ivf-fp16"]
CONCRETE_TYPES: tuple[ConcreteType, ...] = ("flat", "hnsw", "ivf-sq8", "ivf-fp16")
AUTO_APPROXIMATE: ConcreteType = "ivf-sq8"
# k-means wants at least this many training points per list (FAISS warns below 39).
TRAIN_POINTS_PER_LIST = 64
FAISS_MIN_POINTS_PER_LIST = 39  # below this many training points per list, FAISS's k-means prints a warning
MIN_TRAIN_POINTS = 20_000

_QTYPES = {"ivf-sq8": "QT_8bit", "ivf-fp16": "QT_fp16"}


@dataclass(frozen=True)
class FaissOptions:
    """What a FAISS index is told by its owner: the type to build, its knobs, and when filtered searches go exact."""

    index_type: str = "auto"
    auto_threshold: int = 100_000
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    mmap: bool = False
    exact_filter_max: int = 20_000
    search_threads: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> FaissOptions:
        """The MEDSEARCH_INDEX_* and MEDSEARCH_EXACT_FILTER_MAX settings."""
        return cls(
            index_type=settings.index_type,
            auto_threshold=settings.index_auto_threshold,
            nlist=settings.index_nlist,
            nprobe=settings.index_nprobe,
            hnsw_m=settings.index_hnsw_m,
            ef_construction=settings.index_ef_construction,
            ef_search=settings.index_ef_search,
            mmap=settings.index_mmap,
            exact_filter_max=settings.exact_filter_max,
            search_threads=settings.search_threads,
        )


@dataclass(frozen=True)
class IndexParams:
    """An index type and its parameters; what is not used by the type stays at its default."""

    type: ConcreteType = "flat"
    nlist: int = 0
    nprobe: int = 0
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 64

    @property
    def lossless(self) -> bool:
        """True when the index keeps the exact float vectors (so they can be reconstructed)."""
        return self.type in ("flat", "hnsw")

    @property
    def is_ivf(self) -> bool:
        return self.type.startswith("ivf")

    def as_dict(self) -> dict[str, Any]:
        """Only the parameters that mean something for this type."""
        full = asdict(self)
        keep = {"flat": (), "hnsw": ("m", "ef_construction", "ef_search")}.get(self.type, ("nlist", "nprobe"))
        return {"type": self.type, **{key: full[key] for key in keep}}


def choose_type(requested: str, count: int, threshold: int) -> ConcreteType:
    """The concrete type for a collection of `count` vectors (`auto`: exact below the threshold)."""
    if requested == "auto":
        return "flat" if count < threshold else AUTO_APPROXIMATE
    if requested not in CONCRETE_TYPES:
        raise ValueError(f"unknown index type {requested!r}")
    return requested  # type: ignore[return-value]


def default_nlist(count: int) -> int:
    """About sqrt(n) lists, never more than the vectors can train (64 points per list)."""
    return max(1, min(round(math.sqrt(max(count, 1))), count // TRAIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/64 of them, at least 8 (bench/search.py at 1M: 15 lists, recall@10 0.98)."""
    return max(1, min(nlist, max(8, nlist // 64)))


def plan(options: FaissOptions, count: int, requested: str | None = None, **overrides: int | None) -> IndexParams:
    """Parameters for (re)building an index of `count` vectors from the options and explicit overrides."""
    kind = choose_type(requested or options.index_type, count, options.auto_threshold)
    if kind.startswith("ivf") and count == 0:
        kind = "flat"  # nothing to train on yet; the next rebuild picks the requested type
    values: dict[str, int | None] = {
        "nlist": options.nlist,
        "nprobe": options.nprobe,
        "m": options.hnsw_m,
        "ef_construction": options.ef_construction,
        "ef_search": options.ef_search,
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    nlist = min(values["nlist"] or default_nlist(count), max(1, count))
    return IndexParams(
        type=kind,
        nlist=nlist if kind.startswith("ivf") else 0,
        nprobe=min(values["nprobe"] or default_nprobe(nlist), nlist) if kind.startswith("ivf") else 0,
        m=int(values["m"] or 32),
        ef_construction=int(values["ef_construction"] or 80),
        ef_search=int(values["ef_search"] or 64),
    )


def train_size(params: IndexParams, count: int) -> int:
    """How many stored vectors to sample for training (IVF only)."""
    if not params.is_ivf:
        return 0
    return min(count, max(MIN_TRAIN_POINTS, params.nlist * TRAIN_POINTS_PER_LIST))


def fit_training(index: Any, params: IndexParams, size: int) -> None:
    """Small rebuilds (an explicit nlist over few vectors) train on fewer points per list than FAISS's k-means
    asks for; the lists are still usable, so lower its minimum instead of letting it warn on every rebuild."""
    if params.is_ivf and size < params.nlist * FAISS_MIN_POINTS_PER_LIST:
        index.cp.min_points_per_centroid = max(1, size // max(1, params.nlist))


def new_index(params: IndexParams, width: int) -> Any:
    """An empty FAISS index of this type that takes add_with_ids (IVF must still be trained)."""
    if params.type == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(width))
    if params.type == "hnsw":
        graph = faiss.IndexHNSWFlat(width, params.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params.ef_construction
        graph.hnsw.efSearch = params.ef_search
        return faiss.IndexIDMap2(graph)
    quantizer = faiss.IndexFlatIP(width)
    qtype = getattr(faiss.ScalarQuantizer, _QTYPES[params.type])
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, width, params.nlist, qtype, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = params.nprobe
    return ivf


def read_params(index: Any) -> IndexParams | None:
    """The type and parameters of a loaded FAISS index, read from the index itself (None if foreign)."""
    if isinstance(index, faiss.IndexIVFScalarQuantizer):
        qtype = int(index.sq.qtype)
        names = {getattr(faiss.ScalarQuantizer, q): t for t, q in _QTYPES.items()}
        kind = names.get(qtype)
        if kind is None or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            return None
        return IndexParams(type=kind, nlist=int(index.nlist), nprobe=int(index.nprobe))  # type: ignore[arg-type]
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexFlatIP):
            return IndexParams(type="flat")
        if isinstance(inner, faiss.IndexHNSWFlat) and inner.metric_type == faiss.METRIC_INNER_PRODUCT:
            hnsw = inner.hnsw
            m = int(hnsw.nb_neighbors(0)) // 2  # level 0 keeps 2*M links
            return IndexParams(type="hnsw", m=m, ef_construction=int(hnsw.efConstruction), ef_search=int(hnsw.efSearch))
    return None


def with_search_overrides(params: IndexParams, options: FaissOptions) -> IndexParams:
    """Query-time knobs (nprobe, efSearch) from the options win over the recorded ones when set."""
    if params.is_ivf and options.nprobe:
        return replace(params, nprobe=min(options.nprobe, params.nlist))
    if params.type == "hnsw" and options.ef_search:
        return replace(params, ef_search=options.ef_search)
    return params


def search_parameters(params: IndexParams, selector: Any | None, k: int, widen: float = 1) -> Any:
    """FAISS SearchParameters for one search: the id selector plus the type's beam/probe width, `widen` times the
    index's own (rounded up)."""
    if params.is_ivf:
        sp = faiss.SearchParametersIVF(sel=selector) if selector is not None else faiss.SearchParametersIVF()
        sp.nprobe = min(params.nlist, math.ceil(params.nprobe * widen))
        return sp
    if params.type == "hnsw":
        sp = faiss.SearchParametersHNSW(sel=selector) if selector is not None else faiss.SearchParametersHNSW()
        sp.efSearch = max(math.ceil(params.ef_search * widen), k)
        return sp
    return faiss.SearchParameters(sel=selector) if selector is not None else None
