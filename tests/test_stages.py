"""Ingest stages on their own: decode -> (pickled) prepared batch -> encode, and -> write, without the pipeline."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select

from indexer.stages.batch import PreparedBatch
from indexer.stages.decode import DecodeConfig, decode_item
from indexer.stages.encode import encode_pixel_batch
from indexer.stages.write import Writer
from retrieval.collection import Collection
from retrieval.encoders.medsiglip import MedSigLIPEncoder
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.imaging.types import DecodeLimits
from retrieval.prepare import prepare_bytes
from retrieval.sources.base import SourceRef
from retrieval.store.models import Failure, Image
from tests.conftest import testdata_file

FILES = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm"]
MAX_BYTES = 100_000_000


def _prepared_batch(processor: ImageProcessor, broken: bool = False) -> PreparedBatch:
    """Three real files through the decode stage (plus one unreadable file when asked), as a pickled round trip."""
    config = DecodeConfig(processor, "middle", DecodeLimits(), "soft-tissue", MAX_BYTES)
    items = []
    for name in FILES:
        path = testdata_file(name)
        ref = SourceRef(str(path), path.stat().st_size, path.stat().st_mtime, "file", str(path))
        items.append(decode_item(ref, None, config))  # data None: the stage reads the file itself
    if broken:
        ref = SourceRef("/nowhere/broken.dcm", 9, 0.0, "file", "/nowhere/broken.dcm")
        items.append(decode_item(ref, b"not dicom", config))
    batch: PreparedBatch = pickle.loads(pickle.dumps(PreparedBatch(items)))
    return batch


def _encode_elsewhere(model: str, batch: PreparedBatch) -> npt.NDArray[np.float32]:
    """The encode stage in a process of its own: a fresh encoder, only the pickled batch as input."""
    encoder = MedSigLIPEncoder(model, "cpu")
    return encode_pixel_batch(encoder, batch.pixel_values(), 2, encoder.fingerprint.width)


def test_encode_stage_runs_alone_in_another_process_on_a_pickled_batch(tiny_model: Path) -> None:
    encoder = MedSigLIPEncoder(str(tiny_model), "cpu")
    batch = _prepared_batch(encoder.image_processor)
    assert [item.code for item in batch.items] == ["", "", ""]
    width = encoder.fingerprint.width
    values = batch.pixel_values()
    assert values.shape == (3, 3, 448, 448) and values.dtype == np.float32

    here = encode_pixel_batch(encoder, values, 2, width)  # batch size 2: two forward passes, one of 1
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        there = pool.submit(_encode_elsewhere, str(tiny_model), batch).result(timeout=300)

    assert here.shape == (3, width) and here.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(here, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(there, here, atol=1e-5)
    assert len({row.tobytes() for row in np.round(here, 4)}) == 3  # three images, three different vectors
    # each row is what the query path (prepare_bytes + one forward pass per file) gives for that file
    for row, name in zip(here, FILES, strict=True):
        alone = prepare_bytes(testdata_file(name).read_bytes(), encoder.image_processor)
        np.testing.assert_allclose(encoder.encode_pixel_values(alone.pixel_values)[0], row, atol=1e-5)
    assert encode_pixel_batch(encoder, values[:0], 2, width).shape == (0, width)


def _unit(rows: int, width: int) -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(7).standard_normal((rows, width)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def test_write_stage_runs_alone_on_a_prepared_batch(collection: Collection) -> None:
    index = collection.require_index()
    batch = _prepared_batch(collection.load_encoder().image_processor, broken=True)
    vectors = _unit(len(batch.keys), index.width)  # the write stage takes vectors from any encoder
    writer = Writer(collection, index)
    fresh = writer.new_only(batch)
    assert fresh.keys == batch.keys and fresh.duplicates == 0
    written = writer.write(fresh, vectors)
    writer.save()
    assert (written.sources, written.indexed, written.duplicates) == (4, 3, 0)
    assert [(f.uri, f.code) for f in written.failures] == [("/nowhere/broken.dcm", "unsupported_format")]

    with collection.catalog.sessions() as session:
        rows = {key: image_id for key, image_id in session.execute(select(Image.instance_key, Image.id))}
        failed = [(f.source_uri, f.code) for f in session.scalars(select(Failure))]
    assert set(rows) == set(batch.keys)
    assert failed == [("/nowhere/broken.dcm", "unsupported_format")]
    for key, vector in zip(batch.keys, vectors, strict=True):
        stored = collection.catalog.vector(rows[key])
        assert stored is not None
        np.testing.assert_allclose(stored, vector, atol=1e-6)
        _scores, ids = index.search(vector[None, :], 1)
        assert int(ids[0][0]) == rows[key]

    # known instance keys: dropped before encoding by new_only, and written once even when sent again
    again = Writer(collection, index)
    assert again.new_only(batch).keys == [] and again.new_only(batch).duplicates == 3
    resent = again.write(batch, vectors)
    assert (resent.indexed, resent.duplicates) == (0, 3)
    assert index.ntotal == 3
    with pytest.raises(ValueError, match="2 vectors for 3 prepared frames"):
        again.write(batch, vectors[:2])


@pytest.mark.slow  # starts the decode pool's worker twice (~8 s on 2 cores): in `make test`, not the fast tier
def test_a_pool_that_breaks_while_starting_a_worker_retries_its_files(tiny_model: Path) -> None:
    """A worker killed while `submit` spawns another: CPython raises OSError ("handle is closed") from `submit`
    itself (seen once in the whole suite). The files in flight and that one are retried, none is lost."""
    from indexer.stages.decode import DecodePool

    processor = MedSigLIPEncoder(str(tiny_model)).image_processor
    pool = DecodePool(1, DecodeConfig(processor, "middle", DecodeLimits(), "soft-tissue", MAX_BYTES))
    refs = []
    for name in FILES:
        path = testdata_file(name)
        refs.append(SourceRef(str(path), path.stat().st_size, path.stat().st_mtime, "file", str(path)))
    try:
        done = list(pool.submit(refs[0], None))
        real_submit = pool.executor.submit  # type: ignore[union-attr]
        calls = {"n": 0}

        def breaking_submit(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("handle is closed")
            return real_submit(*args, **kwargs)  # type: ignore[arg-type]

        pool.executor.submit = breaking_submit  # type: ignore[union-attr,method-assign,assignment]
        for ref in refs[1:]:
            done += list(pool.submit(ref, None))
        done += list(pool.drain())
    finally:
        pool.close()
    assert calls["n"] >= 1
    assert [d.ref.uri for d in done] == [r.uri for r in refs]
    assert not any(d.code for d in done), [(d.ref.uri, d.code, d.reason) for d in done]
