"""The viewer's renders without a server: a drag decodes its frame once, and decoded frames stay within a budget."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.pixels.processing import apply_modality_lut

import retrieval.viewing as viewing
from retrieval.settings import Settings
from retrieval.store.models import Image
from tests.conftest import SAMPLES


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The source reads the viewer makes (each one a file read or a PACS round trip); an empty cache to start."""
    seen: list[str] = []

    def read(uri: str, _settings: Settings) -> bytes:
        seen.append(uri)
        return Path(uri).read_bytes()

    monkeypatch.setattr(viewing, "read_source", read)
    monkeypatch.setattr(viewing, "_cache", type(viewing._cache)())
    yield seen


def image(name: str, image_id: int, frames: int = 1) -> Image:
    ds = pydicom.dcmread(SAMPLES / name, stop_before_pixels=True)
    return Image(
        id=image_id,
        kind="dicom",
        content_hash=f"{image_id:064d}",
        source_uri=str(SAMPLES / name),
        frame=1 if frames == 1 else frames // 2 + 1,
        number_of_frames=frames,
        modality=ds.Modality,
        photometric=ds.PhotometricInterpretation,
    )


def png_pixels(png: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(PILImage.open(io.BytesIO(png)), dtype=np.float64)


def test_a_drag_decodes_its_frame_once(reads: list[str], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ct = image("CT_small.dcm", 1)
    ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    for centre, width in ((40, 400), (60, 420), (-500, 1500.5)):
        shown = viewing.view_indexed(ct, settings, centre=centre, width=width)
        expected = np.rint(np.clip((hu - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)
        assert np.abs(png_pixels(shown.png) - expected).max() <= 1
    assert reads == [ct.source_uri]  # three windows, one read and decode
    assert viewing.view_indexed(ct, settings, width=0.2).window.width == 1  # type: ignore[union-attr]


def test_decoded_frames_stay_within_the_budget(
    reads: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path)
    mr = image("emri_small.dcm", 2, frames=10)
    monkeypatch.setattr(viewing, "CACHE_BYTES", 1)  # below any frame: only the newest stays
    for frame in (1, 2, 1):
        assert viewing.view_indexed(mr, settings, frame=frame).frame == frame
    assert len(reads) == 3 and len(viewing._cache) == 1
