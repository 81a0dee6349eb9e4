"""One index interface: callers see only the VectorIndex protocol, and both back ends implement all of it."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from retrieval.index.base import VectorIndex
from retrieval.index.exact import StoredScorer, top_k
from retrieval.index.faiss_index import FaissIndex
from retrieval.index.faiss_types import FaissOptions
from tests.conftest import REPO

BACKEND_NAMES = {"FaissIndex", "MilvusIndex", "faiss_index", "milvus_index"}


def _protocol_members() -> dict[str, inspect.Signature | None]:
    members: dict[str, inspect.Signature | None] = {}
    for name, value in vars(VectorIndex).items():
        if name.startswith("_"):
            continue
        members[name] = inspect.signature(value) if callable(value) else None
    return members


def test_callers_use_only_the_protocol() -> None:
    """No back-end class, getattr or isinstance on an index outside retrieval/index/ (tests aside)."""
    problems = []
    for package in ("retrieval", "indexer", "api"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.is_relative_to(REPO / "retrieval" / "index"):
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] in BACKEND_NAMES:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {node.module}")
                probe = isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "isinstance", "hasattr")
                if probe and node.args and "index" in ast.unparse(node.args[0]).lower():  # type: ignore[attr-defined]
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert problems == []


@pytest.mark.parametrize("kind", ["faiss", "milvus"])
def test_each_back_end_implements_the_whole_protocol(kind: str) -> None:
    if kind == "milvus":
        pytest.importorskip("pymilvus")
        from retrieval.index.milvus_index import MilvusIndex

        cls: type = MilvusIndex
    else:
        cls = FaissIndex
    members = _protocol_members()
    assert {"search", "add", "remove", "reconcile", "save", "describe", "close", "maybe_upgrade"} <= set(members)
    for name, signature in members.items():
        if signature is None:  # a property: width, ntotal and dirty may be plain attributes set in __init__
            continue
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        if not isinstance(inspect.getattr_static(cls, name), property):
            mine = list(inspect.signature(getattr(cls, name)).parameters)
            assert mine[: len(signature.parameters)] == list(signature.parameters), (cls.__name__, name)


class _Store:
    """Float vectors by id, as the Catalog keeps them (the source of truth the scorer reads)."""

    def __init__(self, vectors: dict[int, np.ndarray]) -> None:
        self.vectors = vectors
        self.reads = 0

    def all_ids(self) -> np.ndarray:
        return np.asarray(sorted(self.vectors), np.int64)

    def iter_vectors(self, ids=None, chunk=4096):  # type: ignore[no-untyped-def]
        wanted = sorted(self.vectors) if ids is None else [i for i in ids if i in self.vectors]
        self.reads += len(wanted)
        yield np.asarray(wanted, np.int64), np.stack([self.vectors[i] for i in wanted]).astype(np.float32)


def test_a_lossy_faiss_index_scores_filtered_searches_from_its_float_vectors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(400, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1, 401, dtype=np.int64)
    store = _Store({int(i): v for i, v in zip(ids, vecs, strict=True)})
    index = FaissIndex(tmp_path / "index.faiss", 16, FaissOptions(index_type="ivf-sq8", nlist=4), StoredScorer(store))
    index.rebuild(store)  # type: ignore[arg-type]
    assert index.params.type == "ivf-sq8"
    query = vecs[7:8]
    cand = ids[::3]
    store.reads = 0
    scores, got = index.search(query, 5, cand)
    assert store.reads == 0  # exact from the float vectors it keeps beside the codes: no store read per query
    want_scores, want = top_k(query, cand, vecs[cand - 1], 5)
    assert got.tolist() == want.tolist() and np.allclose(scores, want_scores)
    bare = FaissIndex(tmp_path / "bare.faiss", 16, FaissOptions(index_type="ivf-sq8", nlist=4))
    bare.rebuild(store)  # type: ignore[arg-type]
    store.reads = 0
    bare.search(query, 5, cand)
    assert store.reads == 0  # no scorer attached: the index never reaches for a store
