"""The probe filter keeps images whose probability is at or above min_prob, exactly, also at the reported value."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from retrieval.collection import Collection
from retrieval.findings.common import findings_store
from retrieval.query import Hit
from retrieval.store.models import Image
from retrieval.store.repo import Filters

# 0.5687576694587967 is a probability a bf16 encoder produced for one image: at 6 decimals it shows as 0.568758,
# above itself. The float32 one is what a float32 score becomes when stored as float64.
PROBABILITIES = [0.5687576694587967, 0.5, float(np.nextafter(0.5, 0.0)), float(np.float32(0.3)), 0.2940849741444393]


def _stored(collection: Collection) -> list[int]:
    """One image row per probability (no index needed: the probe filter is SQL)."""
    rows = [
        (
            Image(
                instance_key=f"threshold-{i}",
                kind="raster",
                modality="OT",
                study_date=date(2020, 1, 1),
                source_uri=f"/threshold/{i}.png",
                content_hash=f"{i:064x}",
            ),
            np.ones(4, dtype=np.float32) / 2,
        )
        for i in range(len(PROBABILITIES))
    ]
    ids = collection.catalog.write_batch(rows)
    assert None not in ids
    return [int(i) for i in ids if i is not None]


def _kept(collection: Collection, least: float) -> set[int]:
    found = collection.catalog.candidate_ids(Filters(probe="p", min_prob=least))
    assert found is not None
    return {int(i) for i in found}


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_a_probability_equal_to_min_prob_is_kept(collection: Collection) -> None:
    ids = _stored(collection)
    store = findings_store(collection)
    store.write_probe_scores("p", 1, np.asarray(ids, dtype=np.int64), np.asarray(PROBABILITIES, dtype=np.float64))
    found = store.of_images(ids)
    stored = {i: found[i].probes["p"] for i in ids}
    assert [stored[i] for i in ids] == PROBABILITIES  # float64 in, the same float64 out (no float32 on the way)
    images = collection.catalog.images(ids)
    for image_id, p in stored.items():
        # what a client reads on the hit (through JSON), passed back as min_prob, keeps that very image
        hit = Hit(rank=1, image=images[image_id], score=0.0, probes=found[image_id].probes)
        reported = json.loads(json.dumps(hit.as_dict()))["probes"]["p"]
        assert reported == p, (reported, p)
        assert _kept(collection, reported) == {i for i, q in stored.items() if q >= p} and image_id in _kept(
            collection, reported
        )
        assert image_id not in _kept(collection, float(np.nextafter(p, 1.0)))  # and one step above leaves it out


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_float32_probabilities_compare_as_stored(collection: Collection) -> None:
    ids = _stored(collection)
    store = findings_store(collection)
    as_float32 = np.asarray(PROBABILITIES, dtype=np.float32)
    store.write_probe_scores("p", 1, np.asarray(ids, dtype=np.int64), as_float32)
    found = store.of_images(ids)
    for image_id, p in zip(ids, as_float32.tolist(), strict=True):
        assert found[image_id].probes["p"] == p  # the float32 value, widened exactly
        assert image_id in _kept(collection, p)
