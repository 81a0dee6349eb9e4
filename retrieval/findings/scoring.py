"""One matrix product per chunk of stored vectors: tag prompts and probe coefficients side by side."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retrieval.store.models import Probe, Tag
from retrieval.store.repo import IdArray

Calibrate = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
Chunk = tuple[IdArray, npt.NDArray[np.float32]]
Scored = tuple[IdArray, npt.NDArray[np.floating], npt.NDArray[np.float64]]  # ids, tag scores, probe probabilities


def sigmoid(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """1 / (1 + exp(-x)) in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


@dataclass
class Scorer:
    """Scores vectors against tags (calibrated text probability, the encoder's `text_scores`) and probes
    (logistic regression: sigmoid(v . coef + intercept)) with one float32 product per chunk."""

    tags: list[Tag]
    probes: list[Probe]
    weights: npt.NDArray[np.float32]  # width x (tags + probes)
    intercepts: npt.NDArray[np.float64]
    calibrate: Calibrate | None

    @classmethod
    def build(cls, tags: Sequence[Tag], probes: Sequence[Probe], calibrate: Calibrate | None) -> Scorer:
        columns = [np.frombuffer(t.vector, dtype=np.float32) for t in tags]
        columns += [np.frombuffer(p.coef, dtype=np.float64).astype(np.float32) for p in probes]
        weights = np.ascontiguousarray(np.stack(columns, axis=1)) if columns else np.zeros((0, 0), np.float32)
        intercepts = np.asarray([p.intercept for p in probes], dtype=np.float64)
        if tags and calibrate is None:
            raise ValueError("tags need the encoder's calibration (text_scores)")
        return cls(list(tags), list(probes), weights, intercepts, calibrate)

    @property
    def empty(self) -> bool:
        return not (self.tags or self.probes)

    def score(
        self, vectors: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32] | npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(tag probabilities: rows x tags, probe probabilities: rows x probes) for a chunk of unit vectors."""
        logits = np.asarray(vectors, np.float32) @ self.weights
        n_tags = len(self.tags)
        tag_scores = self.calibrate(logits[:, :n_tags]) if self.tags and self.calibrate else logits[:, :0]
        probe_scores = sigmoid(logits[:, n_tags:] + self.intercepts)
        return tag_scores, probe_scores

    def run(
        self, chunks: Iterable[Chunk]
    ) -> Iterator[tuple[IdArray, npt.NDArray[np.floating], npt.NDArray[np.float64]]]:
        """Scores chunk by chunk (ids, tag scores, probe probabilities)."""
        for ids, vectors in chunks:
            if len(ids):
                tag_scores, probe_scores = self.score(vectors)
                yield ids, tag_scores, probe_scores
