"""A text query visits TEXT_PROBE times the IVF lists (HNSW beam) an image query does, at every level; the
approximate index's own setting is what the other queries use (levels: tests/test_levels.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from retrieval import query as engine
from retrieval.index import faiss_types as types
from tests.test_exact_filtered import RecordingIndex
from tests.test_index_types import fill, typed


@pytest.mark.parametrize("index_type", ["ivf-sq8", "hnsw"])
def test_a_text_query_visits_more_lists_than_an_image_query(tmp_path: Path, tiny_model: Path, index_type: str) -> None:
    col = typed(tmp_path, tiny_model, index_type)
    ids, _ = fill(col)
    index: Any = col.require_index()
    index.rebuild(col.catalog, index_type, nlist=40, nprobe=5, ef_search=20)
    own = index.params.nprobe if index_type == "ivf-sq8" else index.params.ef_search
    assert own == (5 if index_type == "ivf-sq8" else 20)
    recording = RecordingIndex(index._index)
    index._index = recording
    text = engine.embed_text(col, "right lower lobe consolidation")
    assert text.kind == "text" and engine.probe_of(text) == engine.TEXT_PROBE > 1
    hits = engine.search(col, text, k=5)
    assert len(hits) == 5 and recording.widths[0] == math.ceil(own * engine.TEXT_PROBE)  # 8 lists, beam 30
    recording.widths.clear()
    hits = engine.search(col, engine.embed_id(col, ids[0]), k=5)
    assert len(hits) == 5 and recording.widths[0] == own
    recording.widths.clear()
    mixed = engine.QueryVector(vector=text.vector, kind="image+text", text_vector=text.vector)
    engine.search(col, mixed, k=5)  # an image with text: its cosines are an image's
    assert recording.widths[0] == own
    col.close()


def test_search_parameters_widen_the_index_setting_rounded_up_within_its_lists() -> None:
    ivf = types.IndexParams(type="ivf-sq8", nlist=1000, nprobe=15)
    assert types.search_parameters(ivf, None, 10).nprobe == 15
    assert types.search_parameters(ivf, None, 10, widen=1.5).nprobe == 23  # the 1M default for a text query
    assert types.search_parameters(ivf, None, 10, widen=1.5 * 64).nprobe == 1000  # never more lists than there are
    hnsw = types.IndexParams(type="hnsw", ef_search=64)
    assert types.search_parameters(hnsw, None, 10, widen=1.5).efSearch == 96
    assert types.search_parameters(hnsw, None, 200, widen=1.5).efSearch == 200  # at least k
