"""What runs on Ray workers for `--ray`: decode tasks (a crash costs one file) and encoder actors."""

from __future__ import annotations

import os
import pickle
import socket
import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from indexer.stages.batch import Decoded, PreparedBatch
from indexer.stages.decode import CRASH_REASON, DecodeConfig, crash_if_asked, decode_item
from indexer.stages.encode import encode_pixel_batch
from retrieval.errors import MedsearchError, ModelMismatchError, WorkerCrashedError
from retrieval.settings import Settings
from retrieval.sources.base import SourceItem
from retrieval.sources.files import ArchiveReader

Batch = dict[str, npt.NDArray[Any]]


def pack(obj: object) -> bytes:
    """One row's payload: plain picklable stage data (SourceItem, Decoded)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_decoded(payload: bytes) -> Decoded:
    """A Decoded back from a row (only ever our own rows, written by our own stages)."""
    decoded = pickle.loads(payload)
    assert isinstance(decoded, Decoded)
    return decoded


def _objects(values: list[bytes]) -> npt.NDArray[Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


DECODE_RETRIES = 2  # a source whose decode task kills its worker is tried this many more times, then recorded


_READERS: dict[int, ArchiveReader] = {}  # per worker process: keeps the last archive open between members


def _decode_task(item: SourceItem, config: DecodeConfig) -> Decoded:
    crash_if_asked(item.ref)
    data = item.data
    if data is None and item.ref.kind != "file":  # an archive member: read here, not on the driver
        reader = _READERS.setdefault(config.max_bytes, ArchiveReader(config.max_bytes))
        t0 = time.perf_counter()
        try:
            data = reader.read(item.ref)
        except MedsearchError as exc:
            return Decoded(item.ref, code=exc.code, reason=str(exc), read_seconds=time.perf_counter() - t0)
        item.read_seconds += time.perf_counter() - t0
    decoded = decode_item(item.ref, data, config)
    decoded.read_seconds += item.read_seconds  # bytes the driver fetched (DICOMweb)
    return decoded


class DecodeActor:
    """Sends each source of a batch to its own Ray task (read, decode, preprocess on any CPU of the cluster).

    A file that kills its decoder kills that task's worker process: Ray retries the task DECODE_RETRIES
    times in fresh workers, then the source is recorded as `worker_crashed` and the run goes on.
    """

    def __init__(self, config: DecodeConfig) -> None:
        import ray

        self.ray = ray
        self.config = ray.put(config)
        self.task = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES, retry_exceptions=False)(_decode_task)

    def __call__(self, batch: Batch) -> Batch:
        items = [pickle.loads(payload) for payload in batch["item"]]
        pending = [None if item.code else self.task.remote(item, self.config) for item in items]
        results: list[Decoded] = []
        for item, ref in zip(items, pending, strict=True):
            assert isinstance(item, SourceItem)
            if ref is None:
                results.append(Decoded(item.ref, code=item.code, reason=item.reason, read_seconds=item.read_seconds))
                continue
            try:
                results.append(self.ray.get(ref))
            except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.OutOfMemoryError):
                results.append(Decoded(item.ref, code=WorkerCrashedError.code, reason=CRASH_REASON))
        return {"pos": batch["pos"], "decoded": _objects([pack(r) for r in results])}


def strip_pixels(decoded: Decoded) -> Decoded:
    """The same Decoded without its pixel values (the writer needs keys, frames and metadata only)."""
    if decoded.prepared is None:
        return decoded
    empty = np.zeros((len(decoded.prepared.keys), 0), dtype=np.float32)
    return replace(decoded, prepared=replace(decoded.prepared, pixel_values=empty))


class EncodeActor:
    """Loads the model once (through the collection's encoder factory) and embeds decoded batches."""

    def __init__(self, settings: Settings, expected_key: str, batch_size: int) -> None:
        from retrieval.collection import build_encoder  # the one factory: whatever back end the settings pick

        self.encoder = build_encoder(settings)
        fingerprint = self.encoder.fingerprint  # loads the model
        if fingerprint.key != expected_key:
            raise ModelMismatchError(
                f"the model on Ray worker {socket.gethostname()} ({fingerprint.model_id}, {fingerprint.key}) is not "
                f"the collection's ({expected_key}): give every machine of the cluster the same MEDSEARCH_MODEL"
            )
        self.width = fingerprint.width
        self.batch_size = batch_size
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Batch) -> Batch:
        decoded = [unpack_decoded(payload) for payload in batch["decoded"]]
        prepared = PreparedBatch(decoded)
        t0 = time.perf_counter()
        vectors = encode_pixel_batch(self.encoder, prepared.pixel_values(), self.batch_size, self.width)
        seconds = time.perf_counter() - t0
        out_vectors: list[bytes] = []
        start = 0
        for item in decoded:
            n = item.frame_count
            out_vectors.append(np.ascontiguousarray(vectors[start : start + n], dtype=np.float32).tobytes())
            start += n
        frames = np.asarray([item.frame_count for item in decoded], dtype=np.int64)
        share = frames / frames.sum() * seconds if frames.sum() else np.zeros(len(decoded))
        return {
            "pos": batch["pos"],
            "decoded": _objects([pack(strip_pixels(item)) for item in decoded]),
            "vectors": _objects(out_vectors),
            "frames": frames,
            "seconds": share.astype(np.float64),
            "actor": np.asarray([self.name] * len(decoded), dtype=object),
            "encoded_by": np.asarray([self.encoder.encoded_by] * len(decoded), dtype=object),
        }
