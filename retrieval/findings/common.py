"""What tags and probes share: the store of an opened collection, names, the model check, applying a scorer."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import BadQueryError
from retrieval.findings.errors import OtherModelError
from retrieval.findings.scoring import Scorer
from retrieval.store.findings import FindingsStore
from retrieval.store.repo import IdArray

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
NAME_RULE = "use 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
DEFAULT_CHUNK = 8192


def findings_store(collection: Collection) -> FindingsStore:
    """The tag and probe store of a collection (its catalog's)."""
    return collection.catalog.findings


def check_name(name: str, what: str) -> str:
    """A tag or probe name: 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit."""
    if not NAME.fullmatch(name or ""):
        raise BadQueryError(f"{what} name {name!r} is not allowed: {NAME_RULE}")
    return name


def model_key(collection: Collection) -> str | None:
    """The fingerprint key of the collection's model (None while nothing is indexed)."""
    fingerprint = collection.catalog.fingerprint()
    return fingerprint.key if fingerprint else None


def require_same_model(collection: Collection, what: str, fingerprint: str) -> None:
    """Refuse a tag or probe made with another model than the collection's."""
    current = model_key(collection)
    if current is not None and current != fingerprint:
        raise OtherModelError(
            f"{what} was made with model fingerprint {fingerprint}, but this collection's model is {current}: "
            "its numbers would be meaningless here; train (or apply the vocabulary) again with this model"
        )


@dataclass
class ApplyReport:
    """What applying tags or a probe to the whole collection did."""

    images: int
    seconds: float


def apply_scorer(collection: Collection, scorer: Scorer, chunk: int = DEFAULT_CHUNK) -> ApplyReport:
    """Score every stored vector, chunk by chunk, and upsert the scores (memory: a few chunks, whatever the size)."""
    store = findings_store(collection)
    started = time.perf_counter()
    images = 0
    for ids, tag_scores, probe_scores in scorer.run(collection.catalog.iter_vectors(chunk=chunk)):
        write_scores(store, scorer, ids, tag_scores, probe_scores)
        images += len(ids)
    return ApplyReport(images, time.perf_counter() - started)


def write_scores(
    store: FindingsStore,
    scorer: Scorer,
    ids: IdArray,
    tag_scores: npt.NDArray[np.floating],
    probe_scores: npt.NDArray[np.float64],
) -> None:
    """Upsert one chunk's tag scores and probe probabilities."""
    if scorer.tags:
        store.write_tag_scores([t.name for t in scorer.tags], ids, tag_scores)
    for column, probe in enumerate(scorer.probes):
        store.write_probe_scores(probe.name, probe.version, ids, probe_scores[:, column])
