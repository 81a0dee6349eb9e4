"""MEDSEARCH_CT_CHANNELS: MedGemma 1.5's three HU windows as RGB, checked pixel for pixel; one recipe per collection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from indexer.pipeline import run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import PreprocessingMismatchError
from retrieval.imaging.decode import decode_bytes
from retrieval.imaging.preprocess import to_model_input
from tests.conftest import make_settings, testdata_file

# (low, high) HU of the red, green and blue channels, written out here rather than imported from the code under test
WINDOWS = [(-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0)]


def _hounsfield(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_multiwindow_channels_are_the_three_hu_windows_pixel_for_pixel() -> None:
    path = testdata_file("CT_small.dcm")
    hu = _hounsfield(path)
    decoded = decode_bytes(path.read_bytes(), ct_channels="multiwindow")
    pixels = decoded.frames[0].pixels
    assert pixels.shape == (*hu.shape, 3) and decoded.meta.window == "ct:multiwindow"
    for channel, (low, high) in enumerate(WINDOWS):
        expected = np.clip((hu - low) / (high - low), 0.0, 1.0).astype(np.float32)
        np.testing.assert_array_equal(pixels[:, :, channel], expected)
    # every channel carries information on this slice (not one window repeated)
    assert len({pixels[:, :, c].tobytes() for c in range(3)}) == 3
    # the model input is those channels quantised once: rint(255 * window)
    model_input = to_model_input(pixels)
    expected_rgb = np.rint(np.stack([np.clip((hu - lo) / (hi - lo), 0, 1) for lo, hi in WINDOWS], axis=2) * 255)
    np.testing.assert_array_equal(model_input, expected_rgb.astype(np.uint8))


def test_window_stays_the_default_and_other_modalities_ignore_the_setting() -> None:
    ct = decode_bytes(testdata_file("CT_small.dcm").read_bytes())
    assert ct.frames[0].pixels.ndim == 2 and ct.meta.window != "ct:multiwindow"
    mr = testdata_file("MR_small.dcm").read_bytes()
    np.testing.assert_array_equal(
        decode_bytes(mr, ct_channels="multiwindow").frames[0].pixels, decode_bytes(mr).frames[0].pixels
    )


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(testdata_file(name), folder / name)
    return folder


@pytest.mark.slow  # two collections indexed
def test_a_collection_cannot_mix_the_two_recipes(tmp_path: Path, tiny_model: Path) -> None:
    folder = _folder(tmp_path)
    data = tmp_path / "data"
    with Collection(make_settings(data, tiny_model)) as window:
        assert run_index(window, [folder]).indexed == 2
    with Collection(make_settings(data, tiny_model, ct_channels="multiwindow")) as multi:
        with pytest.raises(PreprocessingMismatchError, match="MEDSEARCH_CT_CHANNELS=window") as info:
            run_index(multi, [folder])
        assert info.value.code == "preprocessing_mismatch" and "MEDSEARCH_CT_CHANNELS=multiwindow" in str(info.value)
        with pytest.raises(PreprocessingMismatchError):
            engine.embed_text(multi, "chest")  # a search too: its queries would be embedded with the other recipe
    with Collection(make_settings(data, tiny_model)) as again:  # the recipe it was built with still works
        assert len(engine.search(again, engine.embed_text(again, "chest"), k=2)) == 2


@pytest.mark.slow  # indexes and searches a collection (10 s)
def test_a_multiwindow_collection_embeds_ct_queries_with_its_recipe(tmp_path: Path, tiny_model: Path) -> None:
    folder = _folder(tmp_path)
    ct = (folder / "CT_small.dcm").read_bytes()
    with Collection(make_settings(tmp_path / "w", tiny_model)) as window:
        run_index(window, [folder])
        window_vector = engine.embed_image(window, ct).vector
    with Collection(make_settings(tmp_path / "m", tiny_model, ct_channels="multiwindow")) as multi:
        assert run_index(multi, [folder]).indexed == 2
        query = engine.embed_image(multi, ct)
        hits = engine.search(multi, query, k=2)
        assert hits[0].image.source_uri.endswith("CT_small.dcm") and hits[0].score > 0.999
        assert hits[0].image.window == "ct:multiwindow"
    assert float(window_vector @ query.vector) < 0.999  # the recipe changes what a CT embeds to
