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


def mapped_kb(path: Path) -> int:
    """This process's resident KB of `path`'s memory maps (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header line
            inside = head[-1] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_a_memory_mapped_set_leaves_only_read_vectors_resident(tmp_path: Path) -> None:
    """Loading copies the ids out of every record, which touches every page of the file; the mapped pages are then
    released, so the process holds only the pages of the vectors it reads (MEDSEARCH_INDEX_MMAP's promise)."""
    width, count = 1152, 8000  # records of 4.6 KB, larger than a page, as the real model's: 36 MB in all
    rng = np.random.default_rng(1)
    path = tmp_path / "vectors.npy"
    ids = np.arange(count, dtype=np.int64) * 3
    ExactVectors.of(width, ids, rng.standard_normal((count, width)).astype(np.float32)).save(path, "vectors")
    loaded = ExactVectors.load(path, width, mmap=True)
    assert loaded is not None and loaded.mapped
    file_kb = path.stat().st_size // 1024
    assert mapped_kb(path) < file_kb // 10
    found, _ = loaded.get(ids[:40])
    assert len(found) == 40
    assert 40 * 4 <= mapped_kb(path) < file_kb // 10  # the 40 vectors read (a page or two each), not the file


@pytest.mark.parametrize("mmap", [False, True])
def test_dense_ids_are_looked_up_in_a_position_table_with_the_same_answers(
    tmp_path: Path, mmap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Image ids are assigned in order and mostly kept: a set whose ids are dense (a few removed) looks a search's
    ids up in a table of positions, no binary search per id; held, missing, removed and added ids answer as before."""
    rng = np.random.default_rng(2)
    ids = np.setdiff1d(np.arange(1, 3001, dtype=np.int64), rng.choice(3000, 200, replace=False) + 1)
    vectors = rng.standard_normal((len(ids), 32)).astype(np.float32)
    path = tmp_path / "vectors.npy"
    ExactVectors.of(32, ids, vectors).save(path, "vectors")
    loaded = ExactVectors.load(path, 32, mmap)
    assert loaded is not None
    searches: list[int] = []
    real = np.searchsorted

    def counted(*args: object, **kwargs: object) -> object:
        searches.append(1)
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(np, "searchsorted", counted)
    wanted = ids[rng.choice(len(ids), 84, replace=False)]
    found, got = loaded.get(wanted)
    assert searches == [] and found.tolist() == wanted.tolist()
    assert np.array_equal(got, vectors[np.searchsorted(ids, wanted)])
    missing = np.setdiff1d(np.arange(1, 3001), ids)[:3]
    asked = np.array([ids[5], missing[0], 4000, ids[9], -1], np.int64)  # held, removed earlier, above, held, below
    found, got = loaded.get(asked)
    assert found.tolist() == [ids[5], ids[9]] and np.array_equal(got, vectors[[5, 9]])
    loaded.remove(ids[:1])
    loaded.add(np.array([5000], np.int64), np.ones((1, 32), np.float32))
    found, got = loaded.get(np.array([ids[0], ids[1], 5000], np.int64))
    assert found.tolist() == [ids[1], 5000] and np.array_equal(got, np.stack([vectors[1], np.ones(32, np.float32)]))
    sparse = ExactVectors.of(32, ids * 1000, vectors)  # ids far sparser than the table allows: binary searches
    searches.clear()
    found, _ = sparse.get(ids[:4] * 1000)
    assert found.tolist() == (ids[:4] * 1000).tolist() and searches == [1]
