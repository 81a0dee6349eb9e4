"""Thread policy of the query path: FAISS (OpenMP) threads per search, torch threads for the encoder."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from retrieval.settings import Settings


class ReportsThreads(Protocol):
    """What the thread report reads of a vector index (a VectorIndex is one; threads sit below indexes)."""

    @property
    def threads_used(self) -> int | None: ...


_local = threading.local()


@dataclass(frozen=True)
class ThreadPolicy:
    """How many threads one search and one encoder call may use (0 / None: the library's own default).

    OpenMP keeps its thread count per calling thread (a value set in one Python thread does not reach the
    others), so the FAISS part is applied by every thread that searches (`use_search_threads`); torch's
    intra-op pool is process-wide and is set once when the service starts.
    """

    search_threads: int = 1
    encoder_threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ThreadPolicy:
        """MEDSEARCH_SEARCH_THREADS and MEDSEARCH_ENCODER_THREADS."""
        return cls(search_threads=settings.search_threads, encoder_threads=settings.encoder_threads)


def use_search_threads(count: int) -> None:
    """Make FAISS searches from the calling thread use `count` OpenMP threads (0: leave FAISS's default).

    Cheap to call before every search: the OpenMP call happens once per thread and value."""
    if count <= 0 or getattr(_local, "search_threads", None) == count:
        return
    faiss: Any = __import__("faiss")
    faiss.omp_set_num_threads(count)
    _local.search_threads = count
    _pin_blas(count)


_blas_pinned: list[int] = []


def _pin_blas(count: int) -> None:
    """numpy's BLAS (the exact re-scoring's matrix products) to the same count, once per process: its pool is
    process-wide, and a 1000 x 1152 product took 7.3 ms waking two OpenBLAS threads vs 0.3 ms on one (issue 22).
    torch keeps its own BLAS, so the encoder's threads are not touched."""
    if _blas_pinned and _blas_pinned[0] == count:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=count, user_api="blas")
    _blas_pinned[:] = [count]


def apply_encoder_threads(policy: ThreadPolicy) -> None:
    """Set torch's process-wide intra-op thread count when the policy names one."""
    if policy.encoder_threads:
        import torch

        torch.set_num_threads(policy.encoder_threads)


def thread_report(policy: ThreadPolicy, index: ReportsThreads | None) -> dict[str, int | None]:
    """The policy and what the libraries use: torch's intra-op threads, and the OpenMP threads the index's last
    search ran with (None before any search, or for a back end that does not say)."""
    import torch

    used = None if index is None else index.threads_used
    return {
        "search_threads": policy.search_threads,
        "search_threads_used": None if used is None else int(used),
        "encoder_threads": int(torch.get_num_threads()),
    }
