"""Series planning from headers: grouping, order along the normal, localizers, sampling, and each kind of bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from retrieval.imaging.series import (
    DUPLICATE,
    LOCALIZER,
    NO_POSITION,
    OTHER_ORIENTATION,
    Header,
    normal_of,
    parse_slices,
    plan_series,
    read_header,
    read_header_file,
    sample_evenly,
)
from tests.phantoms import CORONAL, reacquire, volume, write_enhanced, write_series

DICOMDIR_TESTS = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent  # type: ignore[arg-type]


def headers_of(files: list[Path]) -> list[Header]:
    out = [read_header_file(str(f), str(f)) for f in files]
    assert all(h is not None for h in out)
    return [h for h in out if h is not None]


def axial(key: str, z: float, number: int | None = None, **kw: object) -> Header:
    base = Header(
        key=key,
        sop_instance_uid=f"1.2.{key}",
        series_instance_uid="1.2.3",
        study_instance_uid="1.2",
        modality="CT",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        rows=32,
        columns=32,
        instance_number=number,
        position=(0.0, 0.0, z),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_phantom_series_is_ordered_by_position_not_file_or_instance_number(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s", volume("sphere", slices=20), shape="sphere", seed=3)
    (plan,) = plan_series(headers_of(series.files), k=None)
    assert plan.is_volume
    assert [s.position for s in plan.volume] == pytest.approx(series.positions)
    by_key = {str(f): f for f in series.files}
    sops = [pydicom.dcmread(by_key[s.key]).SOPInstanceUID for s in plan.volume]
    assert sops == [series.sop_by_position[z] for z in series.positions]
    numbers = [s.instance_number for s in plan.volume]
    assert numbers != sorted(numbers)  # the InstanceNumbers were shuffled: order came from geometry


def test_localizer_is_excluded_with_its_reason(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s", volume("cube", slices=20), shape="cube")
    (plan,) = plan_series(headers_of(series.files), k=8)
    assert [(s.key, reason) for s, reason in plan.excluded] == [(str(series.localizer), LOCALIZER)]
    assert len(plan.volume) == 20
    assert plan.excluded_reasons() == {LOCALIZER: 1}


def test_k_slices_sampled_evenly_over_the_extent(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s", volume("cylinder", slices=40), shape="cylinder")
    (plan,) = plan_series(headers_of(series.files), k=16)
    assert len(plan.sampled) == 16
    positions = [s.position for s in plan.sampled]
    assert positions[0] == pytest.approx(series.positions[0])
    assert positions[-1] == pytest.approx(series.positions[-1])
    steps = np.diff(np.asarray(positions, dtype=float))
    assert steps.min() >= 10.0 and steps.max() <= 15.0  # 5 mm slices, 39 steps over 15 samples: 2 or 3 slices
    assert len(plan.skipped) == 24


def test_all_keeps_every_slice(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s", volume("sphere", slices=20), shape="sphere", localizer=False)
    (plan,) = plan_series(headers_of(series.files), k=None)
    assert len(plan.sampled) == 20 and plan.skipped == []


def test_sample_evenly() -> None:
    assert sample_evenly([0, 1, 2, 3, 4], None) == [0, 1, 2, 3, 4]
    assert sample_evenly([0, 1, 2, 3, 4], 9) == [0, 1, 2, 3, 4]
    assert sample_evenly([0, 1, 2, 3, 4], 3) == [0, 2, 4]
    assert sample_evenly([0, 1, 2, 3, 4], 1) == [2]
    # a gap (2 and 3 missing): the target at 3 takes the nearest slice not taken yet
    assert sample_evenly([0.0, 1.0, 4.0, 5.0, 6.0], 3) == [0, 2, 4]


def test_parse_slices() -> None:
    assert parse_slices("all") is None
    assert parse_slices("16") == 16
    assert parse_slices(4) == 4
    for bad in ("0", "-3", "many"):
        with pytest.raises(ValueError, match="positive number or 'all'"):
            parse_slices(bad)


def test_normal_of_axial_and_coronal() -> None:
    assert normal_of((1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) == pytest.approx((0.0, 0.0, 1.0))
    assert normal_of(CORONAL) == pytest.approx((0.0, 1.0, 0.0))


def test_enhanced_multiframe_uses_per_frame_positions(tmp_path: Path) -> None:
    series = write_enhanced(tmp_path / "mf.dcm", volume("two_spheres", slices=24), shape="two_spheres")
    header = read_header(series.files[0].read_bytes(), "mf")
    assert header is not None and header.number_of_frames == 24 and len(header.frame_positions) == 24
    (plan,) = plan_series([header], k=6)
    assert plan.is_volume and len(plan.volume) == 24
    assert [s.position for s in plan.volume] == pytest.approx(series.positions)
    frames = plan.frames_of("mf")
    assert len(frames) == 6
    z = {i + 1: p for i, p in enumerate(header.frame_positions)}
    chosen = sorted(z[f][2] for f in frames)  # type: ignore[index]
    assert chosen[0] == pytest.approx(series.positions[0]) and chosen[-1] == pytest.approx(series.positions[-1])


def test_enhanced_multiframe_without_positions_is_one_image_and_said(tmp_path: Path) -> None:
    series = write_enhanced(tmp_path / "mf.dcm", volume("sphere", slices=8), per_frame_positions=False)
    header = read_header(series.files[0].read_bytes(), "mf")
    assert header is not None
    (plan,) = plan_series([header], k=4)
    assert not plan.is_volume and plan.singles == ["mf"]
    assert any("without per-frame positions" in note for note in plan.notes)


def test_mixed_orientations() -> None:
    slices = [axial(f"a{i}", float(i)) for i in range(5)]
    sagittal = axial("sag", 0.0, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    (plan,) = plan_series([*slices, sagittal], k=None)
    assert [s.key for s in plan.volume] == [f"a{i}" for i in range(5)]
    assert [(s.key, r) for s, r in plan.excluded] == [("sag", OTHER_ORIENTATION)]


def test_duplicate_positions() -> None:
    slices = [axial(f"a{i}", float(i), number=i) for i in range(4)] + [axial("copy", 2.0, number=9)]
    (plan,) = plan_series(slices, k=None)
    assert len(plan.volume) == 4
    assert [(s.key, r) for s, r in plan.excluded] == [("copy", DUPLICATE.format(position=2.0))]


def test_missing_slice_is_noted_and_sampling_still_spans_the_extent() -> None:
    slices = [axial(f"a{i}", float(z)) for i, z in enumerate([0, 1, 2, 3, 6, 7, 8, 9])]
    (plan,) = plan_series(slices, k=3)
    assert any("gap of 3.00 mm" in note and "2 missing" in note for note in plan.notes)
    assert [s.position for s in plan.sampled] == [0.0, 3.0, 9.0]  # 4.5 -> its nearest, 3 (6 is as far: first)


def test_different_matrix_sizes() -> None:
    slices = [axial(f"a{i}", float(i)) for i in range(4)] + [axial("big", 9.0, rows=512, columns=512)]
    (plan,) = plan_series(slices, k=None)
    assert len(plan.volume) == 4
    assert [(s.key, r) for s, r in plan.excluded] == [("big", "matrix 512x512 differs from the series' 32x32")]


def test_one_slice_series_is_a_single_image() -> None:
    (plan,) = plan_series([axial("only", 0.0)], k=16)
    assert not plan.is_volume and plan.singles == ["only"] and plan.sampled == []
    assert plan.notes == ["one slice: indexed as a single image"]


def test_mixed_modalities_under_one_uid() -> None:
    slices = [axial(f"a{i}", float(i)) for i in range(4)] + [axial("pet", 1.5, modality="PT")]
    (plan,) = plan_series(slices, k=None)
    assert plan.modality == "CT" and len(plan.volume) == 4
    assert [(s.key, r) for s, r in plan.excluded] == [("pet", "modality PT differs from the series' CT")]


def test_missing_position_among_positioned_slices() -> None:
    slices = [axial(f"a{i}", float(i)) for i in range(4)] + [axial("nopos", 0.0, position=None)]
    (plan,) = plan_series(slices, k=None)
    assert [(s.key, r) for s, r in plan.excluded] == [("nopos", NO_POSITION)]


def test_no_geometry_falls_back_to_instance_number() -> None:
    slices = [axial(f"a{i}", 0.0, number=n, position=None, orientation=None) for i, n in enumerate([3, 1, 2, 5, 4])]
    (plan,) = plan_series(slices, k=3)
    assert [s.instance_number for s in plan.volume] == [1, 2, 3, 4, 5]
    assert [s.instance_number for s in plan.sampled] == [1, 3, 5]
    assert any("ordered by InstanceNumber" in note for note in plan.notes)


def test_single_image_modalities_are_unchanged() -> None:
    crs = [axial(f"cr{i}", float(i), modality="CR") for i in range(20)]
    (plan,) = plan_series(crs, k=4)
    assert not plan.is_volume and plan.singles == [f"cr{i}" for i in range(20)]


def test_series_of_only_localizers_stays_single_images() -> None:
    a = axial("l1", 0.0, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    b = axial("l2", 0.0, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=CORONAL)
    (plan,) = plan_series([a, b], k=16)
    assert not plan.is_volume and plan.singles == ["l1", "l2"] and plan.excluded == []


def test_not_dicom_and_broken_headers_are_none() -> None:
    assert read_header(b"\x89PNG\r\n\x1a\n" + b"0" * 100, "png") is None
    broken = Path(pydicom.data.get_testdata_file("MR_truncated.dcm"))  # type: ignore[arg-type]
    assert read_header(broken.read_bytes()[:200], "cut") is None


def test_groups_by_series_and_keeps_each_plan(tmp_path: Path) -> None:
    a = write_series(tmp_path / "a", volume("sphere", slices=10), shape="sphere", seed=1)
    b = write_series(tmp_path / "b", reacquire(volume("sphere", slices=10), seed=2), shape="sphere", seed=2)
    plans = plan_series(headers_of(a.files + b.files), k=4)
    assert {p.series_instance_uid for p in plans} == {a.series_uid, b.series_uid}
    assert all(len(p.sampled) == 4 and len(p.excluded) == 1 for p in plans)


def test_real_ct_series_from_pydicom() -> None:
    """dicomdirtests 98892001/CT5N: five real axial CT slices; CT2N: two localizers of the same study."""
    files = sorted((DICOMDIR_TESTS / "98892001" / "CT5N").iterdir())
    (plan,) = plan_series(headers_of(files), k=3)
    positions = [s.position for s in plan.volume]
    assert positions == sorted(positions) and len(positions) == 5
    assert [s.instance_number for s in plan.volume] == [10, 9, 8, 7, 6]  # feet first: numbers fall as z rises
    assert [s.position for s in plan.sampled] == pytest.approx([positions[0], positions[2], positions[4]])


def test_real_mr_radial_series_from_pydicom() -> None:
    """dicomdirtests 98892003/MR700: seven real MR projections, each in its own orientation (radial): no two
    share one, so there is no volume and each stays a single image, as before this planning existed."""
    files = sorted((DICOMDIR_TESTS / "98892003" / "MR700").iterdir())
    (plan,) = plan_series(headers_of(files), k=3)
    assert not plan.is_volume and sorted(plan.singles) == sorted(map(str, files)) and plan.excluded == []
    assert plan.notes == ["no volume of two or more slices: its instances are indexed as single images"]


def test_real_mr_triplane_localizer_and_ct_localizers() -> None:
    """98892003/MR2: a real tri-plane MR scout (3 orientations); 98892001/CT2N: two real CT localizers."""
    for folder in ("98892003/MR2", "98892001/CT2N"):
        for plan in plan_series(headers_of(sorted((DICOMDIR_TESTS / folder).iterdir())), k=2):
            assert not plan.is_volume and plan.sampled == []


def test_a_second_file_of_an_instance_is_a_copy_not_a_duplicate_position() -> None:
    slices = [axial(f"a{i}", float(i)) for i in range(4)]
    copy = replace(slices[2], key="copy-of-a2")
    (plan,) = plan_series([*slices, copy], k=None)
    assert len(plan.volume) == 4 and plan.excluded == [] and plan.copies == {"copy-of-a2": "a2"}
