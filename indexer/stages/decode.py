"""Decode stage: source bytes -> prepared 448x448 frames + metadata, in worker processes that may crash."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from indexer.stages.batch import Decoded
from indexer.workers_die_with_parent import die_with_parent
from retrieval.errors import InternalError, MedsearchError, NonImageObjectError, WorkerCrashedError
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.imaging.sr_text import read_sr
from retrieval.imaging.types import DecodeLimits, FramePolicy
from retrieval.prepare import prepare_bytes
from retrieval.sources.base import SourceRef
from retrieval.sources.read import load, read_ref

log = logging.getLogger(__name__)
TEST_CRASH_ON = "MEDSEARCH_TEST_CRASH_ON"  # tests only: a file name on which a decode worker process dies
CRASH_REASON = "the decoder crashed its worker process on this file (killed by a signal or out of memory)"


@dataclass(frozen=True)
class DecodeConfig:
    """Everything a decode worker needs (picklable: sent once to each worker process)."""

    processor: ImageProcessor
    frames: FramePolicy
    limits: DecodeLimits
    ct_window: str
    max_bytes: int
    source_modules: tuple[str, ...] = ()  # imported by each worker: they register the kinds it reads (registry)
    ct_channels: str = "window"  # MEDSEARCH_CT_CHANNELS (the collection checked it matches its own)


def decode_item(ref: SourceRef, data: bytes | None, config: DecodeConfig) -> Decoded:
    """Read (when `data` is None: through the registry's reader for the ref's kind, in this process) then decode
    and preprocess one source; a bad file becomes a failed Decoded."""
    t0 = time.perf_counter()
    try:
        if data is None:
            data = read_ref(ref, config.max_bytes)
        read_seconds = time.perf_counter() - t0
        frames = ref.frames or config.frames  # a multi-frame volume: only the frames series planning sampled
        prepared = prepare_bytes(
            data,
            config.processor,
            frames=frames,
            limits=config.limits,
            ct_window=config.ct_window,
            ct_channels=config.ct_channels,
        )
        return Decoded(ref, prepared, read_seconds=read_seconds)
    except NonImageObjectError as exc:
        if exc.kind == "structured_report" and data is not None:
            return _report(ref, data, exc.sop_class)
        return Decoded(ref, code=exc.code, reason=str(exc), not_image=exc.sop_class)
    except MedsearchError as exc:
        return Decoded(ref, code=exc.code, reason=str(exc))
    except Exception as exc:  # a decoder bug must cost one file, never the run
        return Decoded(ref, code=InternalError.code, reason=f"{type(exc).__name__}: {exc}")


def _report(ref: SourceRef, data: bytes, sop_class: str) -> Decoded:
    """A structured report becomes its study's report (stored by the writer); one that cannot be read, a failure."""
    try:
        return Decoded(ref, not_image=sop_class, report=read_sr(data))
    except MedsearchError as exc:
        return Decoded(ref, code=exc.code, reason=str(exc))


# -- worker side: the config arrives once per process ------------------------------------------
_WORKER: list[DecodeConfig] = []


def _init_worker(config: DecodeConfig) -> None:
    die_with_parent()  # a SIGKILLed indexer or listener must not leave its decode workers running
    load(config.source_modules)
    _WORKER[:] = [config]


def crash_if_asked(ref: SourceRef) -> None:
    """Tests only: die like a native decoder that kills its process, on the file named by TEST_CRASH_ON."""
    crash_on = os.environ.get(TEST_CRASH_ON)
    if crash_on and ref.uri.endswith(crash_on):
        os._exit(70)


def _work(ref: SourceRef, data: bytes | None) -> Decoded:
    crash_if_asked(ref)
    return decode_item(ref, data, _WORKER[0])


class DecodePool:
    """Decode + preprocess in worker processes with a bounded window; survives a worker that dies."""

    def __init__(self, workers: int, config: DecodeConfig, prefetch: int = 0) -> None:
        self.workers = workers
        self.config = config
        self.executor = _executor(workers, config)
        self.inflight: deque[tuple[SourceRef, bytes | None, Future[Decoded] | Decoded]] = deque()
        # keep a full encoder batch or two decoding ahead, so the encoder never waits for its next batch
        self.window = max(2, workers * 4, prefetch)

    def submit(self, ref: SourceRef, data: bytes | None) -> Iterator[Decoded]:
        """Queue one source; yields finished results (in order) whenever the window is full."""
        if self.executor is None:
            item: Future[Decoded] | Decoded = decode_item(ref, data, self.config)
        else:
            try:
                item = self.executor.submit(_work, ref, data)
            except (BrokenProcessPool, OSError) as exc:  # a file still in flight killed a worker: this one waits
                # its turn. (A worker killed while submit starts another leaves the pool's pipes closed under it:
                # CPython raises OSError "handle is closed" there, not BrokenProcessPool.)
                item = Future()
                item.set_exception(exc if isinstance(exc, BrokenProcessPool) else BrokenProcessPool(str(exc)))
        self.inflight.append((ref, data, item))
        while len(self.inflight) >= self.window:
            yield from self._pop()

    def drain(self) -> Iterator[Decoded]:
        """Every result still in flight."""
        while self.inflight:
            yield from self._pop()

    def _pop(self) -> Iterator[Decoded]:
        ref, data, item = self.inflight.popleft()
        if not isinstance(item, Future):
            yield item
            return
        try:
            yield item.result()
        except BrokenProcessPool:
            # A worker died (decoder crash, OOM killer). Every file in flight is a suspect: retry each
            # alone in a fresh process, so only a file that kills a worker by itself is recorded as failed.
            suspects = [(ref, data), *((r, d) for r, d, _ in self.inflight)]
            self.inflight.clear()
            log.warning("a decode worker died; retrying %d in-flight files one by one", len(suspects))
            self._restart()
            solo = _executor(1, self.config)
            try:
                for suspect, suspect_data in suspects:
                    assert solo is not None
                    try:
                        yield solo.submit(_work, suspect, suspect_data).result()
                    except BrokenProcessPool:  # this file alone kills a worker
                        yield Decoded(suspect, code=WorkerCrashedError.code, reason=CRASH_REASON)
                        solo.shutdown(wait=False, cancel_futures=True)
                        solo = _executor(1, self.config)
            finally:
                if solo is not None:
                    solo.shutdown(wait=True, cancel_futures=True)

    def _restart(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _executor(self.workers, self.config)

    def close(self) -> None:
        """Stop the worker processes."""
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def _executor(workers: int, config: DecodeConfig) -> ProcessPoolExecutor | None:
    if workers <= 0:
        return None
    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(config,))
