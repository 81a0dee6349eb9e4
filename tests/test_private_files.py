"""What the product leaves on disk: the data folder 0700 and the database 0600, a listener's spool and quarantine
0700, nothing under the user's home (OpenVINO's telemetry off); and MEDSEARCH_MAX_PIXELS, not Pillow, bounds
PNG/JPEG/TIFF."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from indexer.quarantine import Quarantine
from indexer.spool import Spool
from retrieval.errors import TooLargeError
from retrieval.imaging.raster import decode_raster
from retrieval.imaging.types import DecodeLimits
from tests.conftest import SAMPLES
from tests.service import cli, service_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow  # an OpenVINO conversion through the real `medsearch index`
@pytest.mark.e2e
def test_index_leaves_private_files_and_nothing_under_home(tmp_path: Path, tiny_model: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    # OpenVINO explicitly: `import openvino` wrote ~/intel/openvino_ga_cid and ~/intel/stats (usage telemetry)
    env = service_env(data, tiny_model, HOME=str(home), MEDSEARCH_ENCODER_BACKEND="openvino")
    run = cli(["index", str(SAMPLES / "CT_small.dcm"), str(SAMPLES / "MR_small.dcm")], env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert mode(data) == 0o700
    databases = [p for p in data.iterdir() if p.name.startswith("medsearch.db")]
    assert data / "medsearch.db" in databases
    assert {p.name: mode(p) for p in databases} == {p.name: 0o600 for p in databases}


def test_spool_and_quarantine_folders_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert mode(spool.folder) == 0o700
    received = spool.put(b"DICM bytes with a patient name")
    kept = Quarantine(spool.folder).keep(received, "dicom://x", "decode_error", "test")
    assert kept is not None and mode(kept.parent) == 0o700


@pytest.fixture
def pillow_limit() -> Iterator[None]:
    """decode_raster sets Pillow's global guard from the setting: put Pillow's own default back afterwards."""
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


def png(width: int, height: int, image_mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(image_mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_max_pixels_allows_beyond_pillows_default(pillow_limit: None) -> None:
    data = png(9_500, 9_500)  # 90.25 M pixels: past Pillow's 89.5 M guard, within MEDSEARCH_MAX_PIXELS' 120 M
    image = decode_raster(data, "h", limits=DecodeLimits(max_pixels=120_000_000))
    assert image.frames[0].pixels.shape[:2] == (9_500, 9_500)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "TIFF"])
def test_max_pixels_refuses_below_pillows_default(image_format: str, pillow_limit: None) -> None:
    buf = io.BytesIO()
    Image.new("L", (100, 50)).save(buf, format=image_format)
    with pytest.raises(TooLargeError, match="MEDSEARCH_MAX_PIXELS"):
        decode_raster(buf.getvalue(), "h", limits=DecodeLimits(max_pixels=4_999))
    assert decode_raster(buf.getvalue(), "h", limits=DecodeLimits(max_pixels=5_000)).frames[0].pixels.shape[:2] == (
        50,
        100,
    )
