"""Synthetic embeddings for the load benchmarks: one stream, the same rows however a collection is grown."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BLOCK = 10_000  # rows per independently seeded block; a row's vector depends only on (seed, its position)
DAYS = 3650  # study dates spread over ten years from 2015-01-01
SPREAD = 0.6  # distance of a vector from its cluster centre, relative to a unit vector's


def cluster_centres(seed: int, count: int, width: int) -> npt.NDArray[np.float32]:
    """`count` random unit cluster centres, the same for a seed on every run."""
    centres = np.random.default_rng([seed, 0]).standard_normal((count, width), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres


def _block(
    seed: int, block: int, centres: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Vectors and study-day offsets of one whole block, from a generator keyed by (seed, 1, block)."""
    rng = np.random.default_rng([seed, 1, block])
    width = centres.shape[1]
    which = rng.integers(0, len(centres), size=BLOCK)
    vecs = centres[which] + SPREAD * rng.standard_normal((BLOCK, width), dtype=np.float32) / np.sqrt(width)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), rng.integers(0, DAYS, size=BLOCK)


def synthetic_rows(
    seed: int, start: int, n: int, centres: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Unit vectors scattered around `centres` (a little like real embeddings) and study-day offsets of rows
    start..start+n of the stream: a collection grown to 100 and then to 200 holds the same rows as one grown to
    200 at once, and no row repeats another (each block has its own generator)."""
    vecs = np.empty((n, centres.shape[1]), dtype=np.float32)
    days = np.empty(n, dtype=np.int64)
    done = 0
    while done < n:
        row = start + done
        block, offset = divmod(row, BLOCK)
        take = min(BLOCK - offset, n - done)
        block_vecs, block_days = _block(seed, block, centres)
        vecs[done : done + take] = block_vecs[offset : offset + take]
        days[done : done + take] = block_days[offset : offset + take]
        done += take
    return vecs, days


def exact_duplicates(vectors: npt.NDArray[np.float32]) -> int:
    """How many rows repeat an earlier row byte for byte."""
    contiguous = np.ascontiguousarray(vectors)
    return len(contiguous) - len({row.tobytes() for row in contiguous})
