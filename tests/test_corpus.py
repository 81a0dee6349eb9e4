"""Every real test DICOM shipped by pydicom and pydicom-data: indexed or failed with a reason; self-retrieval."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from indexer.pipeline import IndexOptions, IndexSummary, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.imaging.decode import decode_bytes
from retrieval.prepare import prepare_bytes
from retrieval.store.models import Failure, Image, Source
from retrieval.store.repo import Filters
from tests.conftest import make_settings, pydicom_roots

pytestmark = pytest.mark.slow  # indexes all 238 sources of the pydicom corpora (not in `make test-fast`)

# Every file of the two packages that cannot be indexed, with the reason code we expect.
# Files ignored on purpose (sidecars/docs: README.txt, *.json) are not failures.
_TINY_ALPHA = "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/"
# pydicom ships these 50 CT instances with their pixel data stripped (DICOMDIR fixtures).
_STRIPPED_CT = """IM000000 IM000001 IM000002 IM000003 IM000004 IM000005 IM000006 IM000007 IM000008 IM000009
IM00000A IM00000B IM00000C IM00000D IM00000E IM00000F IM00000G IM00000H IM00000I IM00000J
IM00000K IM00000L IM00000M IM00000N IM00000O IM00000P IM00000Q IM00000R IM00000S IM00000T
IM00000U IM00000V IM00000W IM00000X IM00000Y IM00000Z IM000010 IM000011 IM000012 IM000013
IM000014 IM000015 IM000016 IM000017 IM000018 IM000019 IM00001A IM00001B IM00001C IM00001D""".split()
EXPECTED_FAILURES: dict[str, str] = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": "decode_error",  # truncated DICOM file: End of file reached before delimiter
    "JPEG-lossy.dcm": "decode_error",  # pixel data could not be decoded: RuntimeError: Unable to de
    "JPEG2000-embedded-sequence-delimiter.dcm": "decode_error",  # pixel data could not be decoded: RuntimeError: Unable to de
    "MR_truncated.dcm": "decode_error",  # pixel data could not be decoded: ValueError: The number of
    "UN_sequence.dcm": "no_pixel_data",  # DICOM file without pixel data (no SOP class)
    "badVR.dcm": "decode_error",  # pixel data could not be decoded: ValueError: invalid litera
    "crayons.icc": "unsupported_format",  # not a DICOM file or a supported image (PNG, JPEG, TIFF)
    "dicomdirtests/TINY_ALPHA/README": "unsupported_format",  # not a DICOM file or a supported image (PNG, JPEG, TIFF)
    "empty_charset_LEI.dcm": "no_pixel_data",  # DICOM file without pixel data (no SOP class)
    "meta_missing_tsyntax.dcm": "decode_error",  # invalid image size Rows=None Columns=None
    "nested_priv_SQ.dcm": "decode_error",  # invalid image size Rows=None Columns=None
    "no_meta.dcm": "unsupported_format",  # not a DICOM file or a supported image (PNG, JPEG, TIFF)
    "no_meta_group_length.dcm": "no_pixel_data",  # DICOM file without pixel data (no SOP class)
    "priv_SQ.dcm": "no_pixel_data",  # DICOM file without pixel data (no SOP class)
    "rtplan.dump": "unsupported_format",  # not a DICOM file or a supported image (PNG, JPEG, TIFF)
    "rtstruct.dump": "unsupported_format",  # not a DICOM file or a supported image (PNG, JPEG, TIFF)
    **{_TINY_ALPHA + name: "no_pixel_data" for name in _STRIPPED_CT},  # CT images stripped of their pixels
}
# Non-image objects: skipped under their SOP class name (header only), neither indexed nor failed.
_DIRECTORY = "Media Storage Directory Storage"
EXPECTED_NOT_IMAGES: dict[str, str] = {
    "ExplVR_BigEndNoMeta.dcm": "RT Ion Plan Storage",
    "ExplVR_LitEndNoMeta.dcm": "RT Ion Plan Storage",
    "rtplan.dcm": "RT Plan Storage",
    "rtplan_truncated.dcm": "RT Plan Storage",  # cut short, but its header says what it is
    "rtstruct.dcm": "RT Structure Set Storage",
    "waveform_ecg.dcm": "12-lead ECG Waveform Storage",
    **{f"dicomdirtests/DICOMDIR{tail}": _DIRECTORY for tail in ("", "-bigEnd", "-empty.dcm", "-implicit")},
    **{f"dicomdirtests/DICOMDIR{tail}": _DIRECTORY for tail in ("-nooffset", "-nopatient", "-reordered")},
    "dicomdirtests/TINY_ALPHA/DICOMDIR": _DIRECTORY,
}

# Structured reports: each becomes the report of its study (issue 21), neither skipped nor failed
EXPECTED_REPORTS: dict[str, str] = {
    "reportsi.dcm": "Basic Text SR Storage",
    "reportsi_with_empty_number_tags.dcm": "Basic Text SR Storage",
    "test-SR.dcm": "Comprehensive SR Storage",
}


def _name(uri: str) -> str:
    for root in pydicom_roots():
        if uri.startswith(str(root.resolve())):
            return uri[len(str(root.resolve())) + 1 :]
    return uri


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[Collection, IndexSummary]]:
    settings = make_settings(tmp_path_factory.mktemp("corpus"), tiny_model)
    collection = Collection(settings)
    summary = run_index(collection, pydicom_roots(), IndexOptions(workers=2, batch_size=16))
    yield collection, summary
    collection.close()


def test_every_file_is_indexed_or_failed_with_a_reason(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, summary = corpus
    with collection.catalog.sessions() as session:
        failures = {_name(f.source_uri): f for f in session.scalars(select(Failure))}
        sources = list(session.scalars(select(Source)))
        not_images = {_name(s.uri): s.sop_class for s in sources if s.status == "skipped"}
        reports = {_name(s.uri): s.sop_class for s in sources if s.status == "report"}
        images = list(session.scalars(select(Image)))
    assert all(f.reason.strip() for f in failures.values())
    assert {name: f.code for name, f in failures.items()} == EXPECTED_FAILURES
    assert summary.failed == len(EXPECTED_FAILURES)
    assert not_images == EXPECTED_NOT_IMAGES
    assert reports == EXPECTED_REPORTS and summary.reports == len(EXPECTED_REPORTS)
    assert summary.not_images == dict(Counter(EXPECTED_NOT_IMAGES.values()))
    # every source is accounted for exactly once: indexed or failed, and nothing crashed the run
    assert len(sources) == summary.sources
    assert sum(1 for s in sources if s.status == "failed") == len(failures)
    assert len(images) == summary.indexed
    assert len({img.instance_key for img in images}) == len(images)
    assert collection.index is not None and collection.index.ntotal == len(images)
    modalities = {img.modality for img in images}
    assert {"CT", "MR", "CR", "US", "NM", "OT"} <= modalities
    # every source ends as exactly one of: indexed (images, or 0 when it repeats an indexed SOP Instance), failed,
    # skipped (a non-image object) or a report; images are frames, so a sampled multi-frame volume gives several
    skipped = sum(summary.not_images.values())
    indexed_sources = sum(1 for s in sources if s.status == "indexed")
    assert summary.indexed >= 90 and summary.indexed == sum(s.images for s in sources if s.status == "indexed")
    assert indexed_sources + summary.failed + skipped + summary.reports == summary.sources
    # pydicom-data's enhanced CT with per-frame positions is a 2-slice volume: both frames sampled (K=16)
    ect = [s for s in sources if s.uri.endswith("eCT_Supplemental.dcm")]
    assert [(s.status, s.images) for s in ect] == [("indexed", 2)]


def _own_id(collection: Collection, data: bytes) -> int:
    prepared = prepare_bytes(data, collection.load_encoder().image_processor)
    with collection.catalog.sessions() as session:
        image_id = session.scalar(select(Image.id).where(Image.instance_key == prepared.keys[0]))
    assert image_id is not None
    return int(image_id)


def _indexed_files(collection: Collection) -> list[Path]:
    with collection.catalog.sessions() as session:
        uris = sorted({u for u in session.scalars(select(Source.uri).where(Source.status == "indexed"))})
    return [Path(u) for u in uris]


def _rank_of(hits: list[engine.Hit], own: int, collection: Collection | None = None) -> tuple[int, float]:
    """Rank of `own`. Ties: images with an identical score, or (given `collection`) images whose stored
    vector equals the original's (the same picture stored again under another SOP Instance UID)."""
    same = set()
    if collection is not None:
        own_vec = collection.catalog.vector(own)
        assert own_vec is not None
        for h in hits:
            vec = collection.catalog.vector(h.image.id)
            if vec is not None and float(np.dot(vec, own_vec)) > 0.9999:
                same.add(h.image.id)
    for hit in hits:
        if hit.image.id == own or hit.image.id in same:
            better = sum(1 for h in hits if h.score > hit.score + 1e-5 and h.image.id not in same)
            return better + 1, hit.score
    return len(hits) + 1, -1.0


def test_self_retrieval_rank_one(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    misses = []
    files = _indexed_files(collection)
    for path in files:
        data = path.read_bytes()
        own = _own_id(collection, data)
        hits = engine.search(collection, engine.embed_image(collection, data), k=10, show_duplicates=True)
        rank, score = _rank_of(hits, own)
        if rank != 1 or score <= 0.999:
            misses.append((_name(str(path)), rank, score))
    assert misses == []
    assert len(files) >= 150  # every decodable file, duplicates of an instance included


def _noised_png(data: bytes, sigma: float, seed: int) -> bytes:
    pixels = decode_bytes(data).frames[0].pixels
    noisy = np.clip(pixels + np.random.default_rng(seed).normal(0, sigma, pixels.shape), 0, 1)
    buf = io.BytesIO()
    if noisy.ndim == 2:
        PILImage.fromarray(np.rint(noisy * 65535).astype(np.uint16)).save(buf, format="PNG")
    else:
        PILImage.fromarray(np.rint(noisy * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_noised_copy_finds_its_original_in_top_three(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    misses = []
    files = _indexed_files(collection)
    for i, path in enumerate(files):
        data = path.read_bytes()
        own = _own_id(collection, data)
        hits = engine.search(collection, engine.embed_image(collection, _noised_png(data, 0.02, i)), k=10)
        rank, _ = _rank_of(hits, own, collection)
        if rank > 3:
            misses.append((_name(str(path)), rank, [(h.image.id, round(h.score, 4)) for h in hits[:4]], own))
    assert misses == []


def test_text_search_returns_k_scored_hits(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    hits = engine.search(collection, engine.embed_text(collection, "right lower lobe consolidation"), k=7)
    assert len(hits) == 7
    assert [h.rank for h in hits] == list(range(1, 8))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.text_score is not None and 0.0 < h.text_score < 1.0 for h in hits)
    assert all(-1.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US", "NM"])
def test_modality_filter_is_exact(corpus: tuple[Collection, IndexSummary], modality: str) -> None:
    collection, _ = corpus
    with collection.catalog.sessions() as session:
        matching = set(session.scalars(select(Image.id).where(Image.modality == modality)))
    query = engine.embed_text(collection, "a chest x-ray")
    hits = engine.search(collection, query, k=50, filters=Filters(modality=[modality.lower()]), show_duplicates=True)
    assert {h.image.modality for h in hits} == {modality}
    assert len(hits) == min(50, len(matching))
    # the filtered result is the exact top of the matching subset
    vectors = {i: collection.catalog.vector(i) for i in matching}
    expected = sorted(matching, key=lambda i: -float(np.dot(vectors[i], query.vector)))[: len(hits)]
    assert [h.score for h in hits] == pytest.approx(
        [float(np.dot(vectors[i], query.vector)) for i in expected], abs=1e-5
    )


def test_date_label_body_part_and_patient_filters(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    query = engine.embed_text(collection, "scan")
    window = Filters(date_from=date(2004, 1, 1), date_to=date(2004, 12, 31))
    hits = engine.search(collection, query, k=100, filters=window)
    assert hits and all(
        h.image.study_date and date(2004, 1, 1) <= h.image.study_date <= date(2004, 12, 31) for h in hits
    )
    chest = engine.search(collection, query, k=100, filters=Filters(body_part=["chest"]))
    assert chest and all(h.image.body_part == "CHEST" for h in chest)
    with collection.catalog.sessions() as session:
        patient = session.scalar(select(Image.patient_hash).where(Image.modality == "CR").limit(1))
        same = set(session.scalars(select(Image.id).where(Image.patient_hash == patient)))
    assert patient is not None and len(same) >= 2
    seed = min(same)
    by_id = engine.search(collection, engine.embed_id(collection, seed), k=200, exclude_same_patient=True)
    assert by_id and not ({h.image.id for h in by_id} & same)
    plain = engine.search(collection, engine.embed_id(collection, seed), k=200)
    assert seed not in {h.image.id for h in plain}  # a pivot never returns itself
    assert {h.image.id for h in plain} & same


def test_group_by_study_returns_one_image_per_study(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    hits = engine.search(collection, engine.embed_text(collection, "mri"), k=10, group_by="study")
    studies = [h.image.study_instance_uid or f"no-study-{h.image.id}" for h in hits]
    assert len(hits) == 10 and len(set(studies)) == len(studies)
    plain = engine.search(collection, engine.embed_text(collection, "mri"), k=10)
    assert len({h.image.study_instance_uid for h in plain}) < 10  # grouping changed something real


def test_no_patient_identifier_is_stored(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    db_path = collection.settings.data_dir / "medsearch.db"
    raw = db_path.read_bytes() + (
        db_path.with_name("medsearch.db-wal").read_bytes() if db_path.with_name("medsearch.db-wal").exists() else b""
    )
    for needle in (b"CompressedSamples^CT1", b"1CT1", b"Doe^", b"CompressedSamples"):
        assert needle not in raw, needle


def test_bad_k_is_refused(corpus: tuple[Collection, IndexSummary]) -> None:
    collection, _ = corpus
    query = engine.embed_text(collection, "x")
    for k in (0, -1, 10**9):
        with pytest.raises(MedsearchError):
            engine.search(collection, query, k=k)
