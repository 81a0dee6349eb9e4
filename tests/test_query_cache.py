"""Embedding caches and the query path's thread policy: uploads of indexed pixels and repeated queries skip the
model (counted), other frames and windows never get a wrong vector, the LRU is bounded, results are unchanged,
and the running service reports its cache counts and the threads it searched with."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from sqlalchemy import update

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection, build_encoder
from retrieval.embed_cache import EmbedCache
from retrieval.encoders.base import Encoder, ModelFingerprint, Vectors
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.prepare import prepare_bytes
from retrieval.settings import Settings
from retrieval.store.models import Image
from tests.backends import free_port
from tests.conftest import SAMPLES, make_settings, running_process

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
RADIOGRAPH = SAMPLES / "RG1_J2KI.dcm"
CT = SAMPLES / "CT_small.dcm"  # no VOI of its own: the CT preset decides its pixels
MULTIFRAME = SAMPLES / "emri_small.dcm"  # 10 frames; an upload is read at its middle frame


class CountingEncoder:
    """The real encoder, counting the model calls made through it."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.image_calls = 0
        self.text_calls = 0

    @property
    def fingerprint(self) -> ModelFingerprint:
        return self.inner.fingerprint

    @property
    def image_processor(self) -> ImageProcessor:
        return self.inner.image_processor

    def encode_pixel_values(self, pixel_values: npt.NDArray[np.float32]) -> Vectors:
        self.image_calls += 1
        return self.inner.encode_pixel_values(pixel_values)

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        self.text_calls += 1
        return self.inner.encode_texts(texts)

    def text_scores(self, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.inner.text_scores(cosines)


def counted(settings: Settings) -> tuple[Collection, CountingEncoder]:
    """A collection whose encoder counts its calls (loaded, so the count starts at zero)."""
    made: list[CountingEncoder] = []

    def factory(s: Settings) -> Encoder:
        made.append(CountingEncoder(build_encoder(s)))
        return made[0]

    collection = Collection(settings, factory)
    collection.load_encoder()
    return collection, made[0]


def fresh_vector(collection: Collection, data: bytes) -> npt.NDArray[np.float32]:
    """The upload's vector straight from the model (no cache), decoded with this collection's settings."""
    encoder = collection.load_encoder()
    prepared = prepare_bytes(data, encoder.image_processor, ct_window=collection.settings.ct_window)
    return encoder.encode_pixel_values(prepared.pixel_values)[0]


def stored_vectors(collection: Collection, **where: object) -> dict[int, npt.NDArray[np.float32]]:
    """Stored vectors of the images whose columns equal `where`, by frame."""
    with collection.catalog.sessions() as session:
        rows = session.query(Image.id, Image.frame).filter_by(**where).all()
    return {frame: collection.catalog.vector(image_id) for image_id, frame in rows}  # type: ignore[misc]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A data folder with the 10 sample DICOMs indexed (middle frames, the product default)."""
    root = tmp_path_factory.mktemp("cache")
    collection = Collection(make_settings(root / "data", tiny_model))
    summary = run_index(collection, [SAMPLES], IndexOptions(workers=0, batch_size=8))
    assert summary.indexed == 10 and summary.failed == 0
    collection.close()
    return root / "data"


def test_a_repeated_upload_of_an_indexed_image_never_runs_the_model(indexed: Path, tiny_model: Path) -> None:
    collection, encoder = counted(make_settings(indexed, tiny_model))
    data = RADIOGRAPH.read_bytes()
    stored = stored_vectors(collection, source_uri=str(RADIOGRAPH.resolve()))
    assert len(stored) == 1
    first = engine.embed_image(collection, data)  # indexed: the stored vector, found by its pixels
    second = engine.embed_image(collection, data)  # the same bytes again: the LRU
    assert encoder.image_calls == 0
    np.testing.assert_array_equal(first.vector, next(iter(stored.values())))
    np.testing.assert_array_equal(second.vector, first.vector)
    assert float(np.dot(first.vector, fresh_vector(collection, data))) > 0.9999  # what the model would say
    assert (first.patient_hash, first.study_uid) == (second.patient_hash, second.study_uid)
    assert first.study_uid == pydicom.dcmread(RADIOGRAPH).StudyInstanceUID
    hits, misses = collection.embed_cache.counts()
    assert hits == {("indexed", "image"): 1, ("lru", "image"): 1}
    assert misses == {("lru", "image"): 1}
    collection.close()


def test_the_same_instance_saved_again_is_found_by_its_pixels(indexed: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Same SOP Instance UID and frame, other bytes (a viewer's export adds tags): same pixels, stored vector."""
    ds = pydicom.dcmread(RADIOGRAPH)
    ds.InstitutionName = "Exported by a viewer"
    ds.save_as(tmp_path / "export.dcm")
    data = (tmp_path / "export.dcm").read_bytes()
    assert data != RADIOGRAPH.read_bytes()
    collection, encoder = counted(make_settings(indexed, tiny_model))
    query = engine.embed_image(collection, data)
    assert encoder.image_calls == 0
    np.testing.assert_array_equal(
        query.vector, next(iter(stored_vectors(collection, sop_instance_uid=ds.SOPInstanceUID).values()))
    )
    collection.close()


def test_a_file_not_indexed_runs_the_model_once(indexed: Path, tiny_model: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(RADIOGRAPH)
    ds.PixelData = ds.pixel_array[::-1].copy().tobytes()  # other pixels, same instance: must not reuse
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(tmp_path / "flipped.dcm", enforce_file_format=True)
    data = (tmp_path / "flipped.dcm").read_bytes()
    collection, encoder = counted(make_settings(indexed, tiny_model))
    query = engine.embed_image(collection, data)
    again = engine.embed_image(collection, data)
    assert encoder.image_calls == 1
    np.testing.assert_array_equal(again.vector, query.vector)
    stored = next(iter(stored_vectors(collection, sop_instance_uid=ds.SOPInstanceUID).values()))
    assert float(np.dot(query.vector, stored)) < 0.9999
    assert float(np.dot(query.vector, fresh_vector(collection, data))) > 0.9999
    collection.close()


def test_another_frame_of_an_indexed_file_is_not_served_its_vector(tmp_path: Path, tiny_model: Path) -> None:
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    folder = tmp_path / "mf"
    folder.mkdir()
    (folder / MULTIFRAME.name).write_bytes(MULTIFRAME.read_bytes())
    assert run_index(collection, [folder], IndexOptions(frames=1, workers=0)).indexed == 1  # frame 1 only
    collection.close()
    collection, encoder = counted(make_settings(tmp_path / "data", tiny_model))
    data = MULTIFRAME.read_bytes()
    for _ in range(2):  # the legacy lookup (same bytes, frame, window) must not match frame 1 either
        collection.embed_cache = EmbedCache(0)
        query = engine.embed_image(collection, data)
        with collection.catalog.sessions() as session, session.begin():
            session.execute(update(Image).values(pixel_hash=None))
    assert encoder.image_calls == 2
    frame_one = stored_vectors(collection)[1]
    assert float(np.dot(query.vector, frame_one)) < 0.9999
    assert float(np.dot(query.vector, fresh_vector(collection, data))) > 0.9999
    collection.close()


def test_another_ct_window_is_not_served_the_indexed_vector(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / CT.name).write_bytes(CT.read_bytes())
    collection = Collection(make_settings(tmp_path / "data", tiny_model, ct_window="bone"))
    assert run_index(collection, [folder], IndexOptions(workers=0)).indexed == 1
    collection.close()
    data = CT.read_bytes()
    for legacy in (False, True):  # by pixel hash, then by file hash + frame + window (pixel_hash not recorded)
        if legacy:
            bone, _ = counted(make_settings(tmp_path / "data", tiny_model, ct_window="bone"))
            with bone.catalog.sessions() as session, session.begin():
                session.execute(update(Image).values(pixel_hash=None))
            bone.close()
        bone, bone_encoder = counted(make_settings(tmp_path / "data", tiny_model, ct_window="bone"))
        soft, soft_encoder = counted(make_settings(tmp_path / "data", tiny_model, ct_window="soft-tissue"))
        stored = next(iter(stored_vectors(bone).values()))
        np.testing.assert_array_equal(engine.embed_image(bone, data).vector, stored)
        assert bone_encoder.image_calls == 0
        query = engine.embed_image(soft, data)
        assert soft_encoder.image_calls == 1
        assert float(np.dot(query.vector, stored)) < 0.9999
        assert float(np.dot(query.vector, fresh_vector(soft, data))) > 0.9999
        bone.close()
        soft.close()


def test_the_lru_is_bounded_and_evicts_the_least_recent(indexed: Path, tiny_model: Path) -> None:
    collection, encoder = counted(make_settings(indexed, tiny_model, embed_cache_size=2))
    for text in ("pneumothorax", "cardiomegaly", "pneumothorax", "pleural effusion"):
        engine.embed_text(collection, f"  {text} ")  # surrounding blanks are not part of the key
    assert encoder.text_calls == 3 and len(collection.embed_cache) == 2
    engine.embed_text(collection, "cardiomegaly")  # evicted by "pleural effusion"
    engine.embed_text(collection, "pleural effusion")
    assert encoder.text_calls == 4 and len(collection.embed_cache) == 2
    hits, misses = collection.embed_cache.counts()
    assert hits == {("lru", "text"): 2} and misses == {("lru", "text"): 4}
    off, off_encoder = counted(make_settings(indexed, tiny_model, embed_cache_size=0))
    for _ in range(3):
        engine.embed_text(off, "pneumothorax")
    assert off_encoder.text_calls == 3 and len(off.embed_cache) == 0 and off.embed_cache.counts() == ({}, {})
    off.close()
    collection.close()


def test_the_lru_is_thread_safe() -> None:
    cache: EmbedCache[int] = EmbedCache(50)

    def hammer(offset: int) -> None:
        keys = np.random.default_rng(offset).integers(0, 60, size=2000)
        for i, key_number in enumerate(keys):
            key = str(key_number)
            if cache.get(key, "text") is None:
                cache.put(key, i)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hits, misses = cache.counts()
    assert len(cache) == 50 and hits["lru", "text"] + misses["lru", "text"] == 8000
    assert hits["lru", "text"] > 4000  # 50 of 60 keys fit


def test_results_are_the_same_with_and_without_the_caches(indexed: Path, tiny_model: Path) -> None:
    cached, _ = counted(make_settings(indexed, tiny_model))
    plain, plain_encoder = counted(make_settings(indexed, tiny_model, embed_cache_size=0, reuse_indexed_vectors=False))
    uploads = sorted(SAMPLES.glob("*.dcm"))
    for _ in range(2):  # the second round is served by the LRU
        for path in uploads:
            data = path.read_bytes()
            with_cache = engine.search(cached, engine.embed_image(cached, data), k=5, exclude_same_patient=True)
            without = engine.search(plain, engine.embed_image(plain, data), k=5, exclude_same_patient=True)
            assert [h.image.id for h in with_cache] == [h.image.id for h in without], path.name
            np.testing.assert_allclose([h.score for h in with_cache], [h.score for h in without], atol=1e-5)
        for text in ("chest radiograph", "ct of the abdomen"):
            with_cache = engine.search(cached, engine.embed_text(cached, text), k=5)
            without = engine.search(plain, engine.embed_text(plain, text), k=5)
            assert [(h.image.id, h.score, h.text_score) for h in with_cache] == [
                (h.image.id, h.score, h.text_score) for h in without
            ]
    assert plain_encoder.image_calls == 2 * len(uploads)
    hits, _ = cached.embed_cache.counts()
    assert hits["indexed", "image"] == len(uploads) and hits["lru", "image"] == len(uploads)
    cached.close()
    plain.close()


def test_searches_use_the_thread_policy_in_every_thread(indexed: Path, tiny_model: Path) -> None:
    """OpenMP keeps its thread count per thread: a search from a new thread must still use the policy's."""
    collection = Collection(make_settings(indexed, tiny_model, search_threads=1))
    index = collection.require_index()
    used: list[int | None] = []

    def search() -> None:
        engine.search(collection, engine.embed_id(collection, int(index.ids()[0])), k=3)
        used.append(index.threads_used)

    for _ in range(3):
        thread = threading.Thread(target=search)
        thread.start()
        thread.join()
    assert used == [1, 1, 1]
    collection.close()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    return 0.0


@pytest.mark.e2e
def test_the_service_reports_cache_counts_and_its_thread_policy(
    indexed: Path, tiny_model: Path, tmp_path: Path
) -> None:
    threads = (os.cpu_count() or 1) + 1  # never a library default, so reading it back proves it was applied
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(indexed),
        "MEDSEARCH_MODEL": str(tiny_model),
        "MEDSEARCH_SEARCH_THREADS": str(threads),
        "MEDSEARCH_ENCODER_THREADS": str(threads),
    }
    argv = [MEDSEARCH, "serve", "--port", str(port)]
    with (
        running_process(argv, env, f"{url}/readyz", tmp_path / "serve.log"),
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        upload = {"file": (RADIOGRAPH.name, RADIOGRAPH.read_bytes(), "application/dicom")}
        first = c.post("/v1/search/image", files=upload, data={"k": "3"})
        second = c.post("/v1/search/image", files=upload, data={"k": "3"})
        assert first.status_code == second.status_code == 200
        assert first.json()["hits"] == second.json()["hits"]
        for _ in range(2):
            assert c.post("/v1/search/text", json={"text": "chest x-ray", "k": 3}).status_code == 200
        ready = c.get("/readyz").json()
        assert ready["threads"] == {
            "search_threads": threads,
            "search_threads_used": threads,
            "encoder_threads": threads,
        }
        text = c.get("/metrics").text
    assert metric(text, "medsearch_embed_cache_hits_total", cache="indexed", kind="image") == 1
    assert metric(text, "medsearch_embed_cache_hits_total", cache="lru", kind="image") == 1
    assert metric(text, "medsearch_embed_cache_misses_total", cache="lru", kind="image") == 1
    assert metric(text, "medsearch_embed_cache_hits_total", cache="lru", kind="text") == 1
    assert metric(text, "medsearch_embed_cache_misses_total", cache="lru", kind="text") == 1
    assert metric(text, "medsearch_embed_cache_misses_total", cache="indexed", kind="image") == 0
    assert metric(text, "medsearch_embed_cache_entries") == 2
    assert metric(text, "medsearch_threads", pool="search_threads_used") == threads
    assert metric(text, "medsearch_threads", pool="encoder_threads") == threads
