"""What runs on Ray workers for `--ray`: decode tasks (a crash costs one file) and encoder actors."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from typing import Any

import numpy as np

from indexer.stages.batch import Decoded, Outcome, PreparedBatch
from indexer.stages.decode import CRASH_REASON, DecodeConfig, crash_if_asked, decode_item
from indexer.stages.encode import encode_pixel_batch
from retrieval.errors import MedsearchError, ModelMismatchError, WorkerCrashedError
from retrieval.settings import Settings
from retrieval.sources.base import SourceItem, SourceRef

DECODE_RETRIES = 2  # a source whose decode task kills its worker is tried this many more times, then recorded

Part = tuple[SourceRef, Any]  # a source and its decode task's result (an ObjectRef), or its Decoded failure


def decode_task(item: SourceItem, config: DecodeConfig) -> Decoded:
    """Read (a bare ref: here through the registry, not on the driver), decode and preprocess one source."""
    crash_if_asked(item.ref)
    return decode_item(item.ref, item.data, config)


def strip_pixels(decoded: Decoded) -> Decoded:
    """The same Decoded without its pixel values (the writer needs keys, frames and metadata only)."""
    if decoded.prepared is None:
        return decoded
    empty = np.zeros((len(decoded.prepared.keys), 0), dtype=np.float32)
    return replace(decoded, prepared=replace(decoded.prepared, pixel_values=empty))


class EncodeActor:
    """Loads the model once (through the collection's encoder factory) and embeds batches of decoded sources.

    A model whose fingerprint differs from the collection's is refused on the first batch (an error raised in
    the constructor would only reach the driver as "the actor died").
    """

    def __init__(self, settings: Settings, expected_key: str, batch_size: int) -> None:
        import ray

        from retrieval.collection import build_encoder  # the one factory: whatever back end the settings pick

        self.ray = ray
        self.encoder = build_encoder(settings)
        fingerprint = self.encoder.fingerprint  # loads the model
        self.problem: MedsearchError | None = None
        if fingerprint.key != expected_key:
            self.problem = ModelMismatchError(
                f"the model on Ray worker {socket.gethostname()} ({fingerprint.model_id}, {fingerprint.key}) is not "
                f"the collection's ({expected_key}): give every machine of the cluster the same MEDSEARCH_MODEL"
            )
        self.width = fingerprint.width
        self.batch_size = batch_size
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def encode(self, parts: list[Part]) -> list[Outcome]:
        """Wait for each source's decode task here (its pixels never pass through the driver), embed them all."""
        if self.problem is not None:
            raise self.problem
        decoded = [self._resolve(ref, result) for ref, result in parts]
        t0 = time.perf_counter()
        vectors = encode_pixel_batch(self.encoder, PreparedBatch(decoded).pixel_values(), self.batch_size, self.width)
        seconds = time.perf_counter() - t0
        frames = np.asarray([item.frame_count for item in decoded], dtype=np.float64)
        shares = frames / frames.sum() * seconds if frames.sum() else np.zeros(len(decoded))
        outcomes: list[Outcome] = []
        start = 0
        for item, share in zip(decoded, shares.tolist(), strict=True):
            rows = np.ascontiguousarray(vectors[start : start + item.frame_count], dtype=np.float32)
            start += item.frame_count
            outcome = Outcome(strip_pixels(item), rows, share, self.name, self.encoder.encoded_by)
            outcomes.append(outcome)
        return outcomes

    def _resolve(self, ref: SourceRef, result: Any) -> Decoded:
        if isinstance(result, Decoded):
            return result
        try:
            decoded = self.ray.get(result)
        except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.OutOfMemoryError):
            return Decoded(ref, code=WorkerCrashedError.code, reason=CRASH_REASON)
        assert isinstance(decoded, Decoded)
        return decoded
