"""A saved set of float vectors, loaded in memory or memory-mapped, looks ids up in a contiguous id array (the
records' own id field is strided by a whole vector: every binary search step touched another page)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.index.exact_vectors import ExactVectors


@pytest.mark.parametrize("mmap", [False, True])
def test_a_loaded_set_searches_contiguous_ids(tmp_path: Path, mmap: bool) -> None:
    rng = np.random.default_rng(0)
    ids = rng.choice(10_000, size=500, replace=False).astype(np.int64)
    vectors = rng.standard_normal((500, 64)).astype(np.float32)
    path = tmp_path / "vectors.npy"
    ExactVectors.of(64, ids, vectors).save(path, "vectors")
    loaded = ExactVectors.load(path, 64, mmap)
    assert loaded is not None and loaded.mapped is mmap
    assert loaded._base_ids.flags.c_contiguous and loaded._base_ids.strides == (8,)
    wanted = np.array([ids[7], 10_001, ids[3]], np.int64)  # one id it does not hold
    found, got = loaded.get(wanted)
    assert found.tolist() == [ids[7], ids[3]]
    assert np.array_equal(got, vectors[[7, 3]])
