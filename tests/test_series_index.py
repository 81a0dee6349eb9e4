"""Series-aware indexing of folders and archives: K slices encoded per volume, the rest recorded, re-plans on
another K without encoding kept slices again, localizers left out and said, enhanced multi-frame frames sampled."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from indexer.pipeline import IndexOptions, IndexSummary, run_index
from retrieval.collection import Collection
from retrieval.imaging.series import LOCALIZER, sample_evenly
from retrieval.store.models import Image, Source
from retrieval.store.models import Series as SeriesRow
from tests.commands import index as cli_index
from tests.conftest import make_settings
from tests.phantoms import PhantomSeries, volume, write_enhanced, write_series

pytestmark = pytest.mark.backends("sqlite-faiss")
SLICES = 40


class Counting:
    """Wraps the collection's encoder: counts the frames it is asked to embed."""

    def __init__(self, collection: Collection) -> None:
        encoder = collection.load_encoder()
        self.frames = 0
        original = encoder.encode_pixel_values

        def counted(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            self.frames += len(values)
            return original(values)

        encoder.encode_pixel_values = counted  # type: ignore[method-assign]


@pytest.fixture
def phantoms(tmp_path: Path) -> list[PhantomSeries]:
    root = tmp_path / "ct"
    return [
        write_series(root / shape, volume(shape, slices=SLICES, size=24), shape=shape, seed=n)
        for n, shape in enumerate(("sphere", "cylinder"))
    ]


@pytest.fixture
def collection(tmp_path: Path, tiny_model: Path) -> Iterator[Collection]:
    col = Collection(make_settings(tmp_path / "data", tiny_model))
    yield col
    col.close()


def run(collection: Collection, paths: list[Path], k: int | None) -> IndexSummary:
    return run_index(collection, paths, IndexOptions(workers=0, batch_size=8, series_slices=k))


def rows(collection: Collection) -> tuple[list[Image], dict[str, Source]]:
    with collection.catalog.sessions() as session:
        images = list(session.scalars(select(Image).order_by(Image.series_instance_uid, Image.slice_position)))
        sources = {s.uri: s for s in session.scalars(select(Source))}
    return images, sources


def test_k_slices_per_series_encoded_the_rest_recorded(collection: Collection, phantoms: list[PhantomSeries]) -> None:
    counting = Counting(collection)
    summary = run(collection, [phantoms[0].files[0].parent.parent], 16)
    assert counting.frames == 2 * 16  # the wrapped encoder saw exactly the sampled slices
    assert summary.indexed == 32 and summary.failed == 0
    assert summary.sampled_out == 2 * (SLICES - 16) and summary.excluded == 2
    assert summary.sources == 2 * (SLICES + 1) and summary.encoder_calls_saved == 2 * (SLICES - 16 + 1)
    images, sources = rows(collection)
    statuses = [s.status for s in sources.values()]
    assert statuses.count("indexed") == 32 and statuses.count("sampled_out") == 48 and statuses.count("excluded") == 2
    for series in phantoms:
        mine = [i for i in images if i.series_instance_uid == series.series_uid]
        expected = [series.positions[i] for i in sample_evenly(series.positions, 16)]
        assert [i.slice_position for i in mine] == pytest.approx(expected)
        assert {i.sop_instance_uid for i in mine} == {series.sop_by_position[z] for z in expected}
        localizer = sources[str(series.localizer.resolve())] if series.localizer else None
        assert localizer is not None and (localizer.status, localizer.reason) == ("excluded", LOCALIZER)
        plan = collection.catalog.series.get(series.series_uid)
        assert plan is not None and (plan.slices_total, plan.slices_sampled, plan.requested) == (SLICES, 16, 16)
        assert json.loads(plan.excluded_reasons) == {LOCALIZER: 1} and plan.study_description == "PHANTOM STUDY"
    stats = collection.catalog.stats()
    assert stats["slices_skipped_by_sampling"] == 48 and stats["encoder_calls_saved"] == 50
    again = run(collection, [phantoms[0].files[0].parent.parent], 16)  # nothing new: nothing opened or encoded
    assert (again.indexed, again.skipped, counting.frames) == (0, 2 * (SLICES + 1), 32)


def test_another_k_replans_without_encoding_kept_slices(collection: Collection, phantoms: list[PhantomSeries]) -> None:
    root = [phantoms[0].files[0].parent.parent]
    counting = Counting(collection)
    run(collection, root, 16)
    kept = {i.sop_instance_uid: i.id for i in rows(collection)[0]}
    assert counting.frames == 32

    summary = run(collection, root, None)  # all: only the 24 slices per series not sampled before are encoded
    assert counting.frames == 32 + 2 * (SLICES - 16) and summary.indexed == 2 * (SLICES - 16)
    images, sources = rows(collection)
    assert len(images) == 2 * SLICES and all(
        kept[u] == i for u, i in ((i.sop_instance_uid, i.id) for i in images) if u in kept
    )
    assert [s.status for s in sources.values()].count("sampled_out") == 0

    before = counting.frames
    summary = run(collection, root, 8)  # fewer: nothing encoded, the slices no longer sampled leave the index
    assert counting.frames == before and summary.removed == 2 * (SLICES - 8) and summary.indexed == 0
    images, sources = rows(collection)
    assert len(images) == 16 and collection.require_index().ntotal == 16
    for series in phantoms:
        expected = [series.positions[i] for i in sample_evenly(series.positions, 8)]
        mine = [i.slice_position for i in images if i.series_instance_uid == series.series_uid]
        assert mine == pytest.approx(expected)
    assert [s.status for s in sources.values()].count("sampled_out") == 2 * (SLICES - 8)

    newly = len(set(sample_evenly(phantoms[0].positions, 16)) - set(sample_evenly(phantoms[0].positions, 8)))
    summary = run(collection, root, 16)  # back to 16: only the slices 8 did not keep are encoded again
    assert counting.frames == before + 2 * newly and len(rows(collection)[0]) == 32


def test_archive_members_are_planned_like_files(
    collection: Collection, phantoms: list[PhantomSeries], tmp_path: Path
) -> None:
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in phantoms[0].files:
            zf.write(path, f"case/{path.name}")
    counting = Counting(collection)
    summary = run(collection, [archive], 16)
    assert counting.frames == 16 and summary.sampled_out == SLICES - 16 and summary.excluded == 1
    images, sources = rows(collection)
    expected = [phantoms[0].positions[i] for i in sample_evenly(phantoms[0].positions, 16)]
    assert [i.slice_position for i in images] == pytest.approx(expected)
    assert sources[f"{archive.resolve()}!/case/scout.dcm"].reason == LOCALIZER
    run(collection, [archive], None)  # re-plan reads the stored members back from the archive
    assert counting.frames == SLICES and len(rows(collection)[0]) == SLICES


def test_enhanced_multiframe_only_sampled_frames_decoded_and_encoded(collection: Collection, tmp_path: Path) -> None:
    series = write_enhanced(tmp_path / "mf" / "enhanced.dcm", volume("two_spheres", slices=24, size=24))
    counting = Counting(collection)
    summary = run(collection, [series.files[0]], 6)
    assert counting.frames == 6 and summary.decoded == 6 and summary.sampled_out == 18
    images, _ = rows(collection)
    expected = [series.positions[i] for i in sample_evenly(series.positions, 6)]
    assert [i.slice_position for i in images] == pytest.approx(expected)
    assert len({i.frame for i in images}) == 6
    summary = run(collection, [series.files[0]], 3)  # fewer frames: the others leave, kept ones are not encoded
    newly = set(sample_evenly(series.positions, 3)) - set(sample_evenly(series.positions, 6))
    assert newly == {11}  # 11.5 between samples 9 and 14 of K=6: the one frame encoded now
    gone = set(sample_evenly(series.positions, 6)) - set(sample_evenly(series.positions, 3))
    assert counting.frames == 6 + len(newly) and summary.removed == len(gone) == 4
    assert (summary.sources, summary.skipped) == (1, 0)  # the one file, planned again: not "already done"
    assert summary.decoded == 1 and summary.duplicates == 0  # only the new frame was decoded
    expected = [series.positions[i] for i in sample_evenly(series.positions, 3)]
    images, sources = rows(collection)
    assert [i.slice_position for i in images] == pytest.approx(expected)
    assert sources[str(series.files[0].resolve())].images == 3
    summary = run(collection, [series.files[0]], 2)  # a subset of 3's frames: nothing decoded at all
    assert (summary.decoded, summary.removed, counting.frames) == (0, 1, 7)
    assert rows(collection)[1][str(series.files[0].resolve())].images == 2


def test_single_images_and_small_series_unchanged(collection: Collection, tmp_path: Path) -> None:
    series = write_series(tmp_path / "small", volume("cube", slices=5, size=24), localizer=False)
    counting = Counting(collection)
    summary = run(collection, [series.files[0].parent], 16)
    assert counting.frames == 5 and summary.sampled_out == 0 and summary.indexed == 5


@pytest.mark.e2e
def test_index_series_slices_option_and_json(env: dict[str, str], phantoms: list[PhantomSeries]) -> None:
    folder = str(phantoms[0].files[0].parent)
    done = cli_index(env, folder, "--series-slices", "4", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["indexed"] == 4 and report["skipped_by_sampling"] == SLICES - 4
    assert report["excluded_from_volumes"] == 1 and report["encoder_calls_saved"] == SLICES - 3
    bad = cli_index(env, folder, "--series-slices", "none")
    assert bad.returncode == 2 and "positive number or 'all'" in bad.stderr


def test_another_k_replans_only_the_series_under_the_given_paths(
    collection: Collection, phantoms: list[PhantomSeries]
) -> None:
    run(collection, [phantoms[0].files[0].parent.parent], 16)
    counting = Counting(collection)
    summary = run(collection, [phantoms[0].files[0].parent], None)  # one series' folder, with all slices
    assert counting.frames == SLICES - 16 and summary.indexed == SLICES - 16
    assert (summary.sources, summary.skipped, summary.sampled_out) == (SLICES + 1, 17, 0)
    plans = {s.series_uid: collection.catalog.series.get(s.series_uid) for s in phantoms}
    assert [(p.requested, p.slices_sampled) for p in plans.values() if p] == [(None, SLICES), (16, 16)]


def test_copies_of_a_series_follow_their_originals(
    collection: Collection, phantoms: list[PhantomSeries], tmp_path: Path
) -> None:
    series = phantoms[0]
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in series.files:
        (copy / path.name).write_bytes(path.read_bytes())
    counting = Counting(collection)
    summary = run(collection, [series.files[0].parent, copy], 16)
    assert counting.frames == 16 and summary.indexed == 16 and summary.duplicates == 16
    _, sources = rows(collection)
    copies = [s for uri, s in sources.items() if uri.startswith(str(copy.resolve()))]
    statuses = sorted(s.status for s in copies)
    assert statuses.count("sampled_out") == SLICES - 16 and statuses.count("excluded") == 1
    assert all(s.duplicate_of for s in copies if s.status == "indexed")


def _variant(source: Path, target: Path, **changes: object) -> Path:
    """A copy of one slice file as another instance of the same series (new SOP UID), with some header changed."""
    ds = pydicom.dcmread(source)
    sop = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    for name, value in changes.items():
        setattr(ds, name, value)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.slow  # one indexing run of a few series (about 10 s)
def test_every_bad_input_is_a_record_and_nothing_else_is_lost(collection: Collection, tmp_path: Path) -> None:
    """Issue 19's bad-input list in one index run of real files: a good series next to a broken one (another
    orientation, a duplicate position, another matrix, another modality and two missing slices under one series
    UID), a one-slice series and an enhanced multi-frame CT without per-frame positions."""
    root = tmp_path / "in"
    good = write_series(root / "good", volume("sphere", slices=24, size=24), shape="sphere", seed=1)
    bad = write_series(root / "bad", volume("cylinder", slices=12, size=24), shape="cylinder", seed=2, localizer=False)
    by_z = sorted(zip(bad.positions, bad.files, strict=True))
    first = by_z[0][1]
    _variant(first, root / "bad" / "sagittal.dcm", ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    _variant(by_z[5][1], root / "bad" / "same-place.dcm", InstanceNumber=999)
    big = np.zeros((48, 48), np.uint16).tobytes()
    far = [-12.8, -12.8, 500.0]
    _variant(first, root / "bad" / "big.dcm", Rows=48, Columns=48, PixelData=big, ImagePositionPatient=far)
    _variant(first, root / "bad" / "pet.dcm", Modality="PT", ImagePositionPatient=[-12.8, -12.8, 600.0])
    for _, path in by_z[7:9]:
        path.unlink()  # two slices missing in the middle
    one = write_series(root / "one", volume("sphere", slices=1, size=24), shape="one", seed=3, localizer=False)
    flat = write_enhanced(root / "mf.dcm", volume("sphere", slices=6, size=24), shape="mf", per_frame_positions=False)
    summary = run(collection, [root], 16)
    assert summary.failed == 0, summary
    images, sources = rows(collection)
    by_series: dict[str, int] = {}
    for image in images:
        by_series[str(image.series_instance_uid)] = by_series.get(str(image.series_instance_uid), 0) + 1
    assert by_series[good.series_uid] == 16  # nothing of the good series lost to its neighbour's faults
    assert by_series[bad.series_uid] == 10  # the 10 slices left of its volume (K = 16 keeps them all)
    assert by_series[one.series_uid] == 1 and by_series[flat.series_uid] == 1  # single images, as before
    reasons = {Path(uri).name: s.reason for uri, s in sources.items() if s.status == "excluded"}
    assert "orientation" in str(reasons.pop("sagittal.dcm"))
    assert "matrix 48x48" in str(reasons.pop("big.dcm"))
    assert "modality PT" in str(reasons.pop("pet.dcm"))
    duplicate = [name for name, why in reasons.items() if "duplicate position" in str(why)]
    assert len(duplicate) == 1 and duplicate[0] in {"same-place.dcm", by_z[5][1].name}
    assert {name for name in reasons if name not in duplicate} == {good.localizer.name if good.localizer else ""}
    notes = {plan.series_instance_uid: json.loads(plan.notes) for plan in _plans(collection)}
    assert any("2 missing slice(s)?" in note for note in notes[bad.series_uid])
    assert notes[one.series_uid] == ["one slice: indexed as a single image"]
    assert any("without per-frame positions" in note for note in notes[flat.series_uid])
    assert {s.status for s in sources.values()} == {"indexed", "sampled_out", "excluded"}


def _plans(collection: Collection) -> list[SeriesRow]:
    with collection.catalog.sessions() as session:
        return list(session.scalars(select(SeriesRow)))


def test_series_slices_precedence_option_then_setting_then_16(tmp_path: Path, tiny_model: Path) -> None:
    """The CLI passes --series-slices as the option; a library caller who leaves it out gets the setting."""
    default = make_settings(tmp_path / "a", tiny_model)
    every = make_settings(tmp_path / "b", tiny_model, series_slices="all")
    assert IndexOptions().slices(default) == 16
    assert IndexOptions().slices(every) is None
    assert IndexOptions(series_slices=3).slices(every) == 3
    assert IndexOptions(series_slices=None).slices(default) is None


@pytest.mark.slow  # two indexing runs
def test_a_library_caller_samples_k_from_the_setting(
    tmp_path: Path, tiny_model: Path, phantoms: list[PhantomSeries], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSEARCH_SERIES_SLICES", "4")
    folder = phantoms[0].files[0].parent
    with Collection(make_settings(tmp_path / "data", tiny_model)) as col:
        counting = Counting(col)
        summary = run_index(col, [folder], IndexOptions(workers=0, batch_size=8))  # no series_slices given
        assert (summary.indexed, summary.sampled_out, counting.frames) == (4, SLICES - 4, 4)
        again = run_index(col, [folder], IndexOptions(workers=0, batch_size=8, series_slices=6))  # the option wins
        plan = col.catalog.series.get(phantoms[0].series_uid)
        assert again.failed == 0 and plan is not None and (plan.requested, plan.slices_sampled) == (6, 6)
