"""Decoding and preprocessing: windowing presets with checked numbers, colour, rasters, hostile input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from retrieval.errors import DecodeError, NotAnImageError, TooLargeError
from retrieval.imaging.decode import decode_bytes
from retrieval.imaging.preprocess import pad_to_square, to_model_input, to_rgb
from retrieval.imaging.types import DecodeLimits
from retrieval.imaging.windowing import CT_PRESETS, preset_range
from tests.conftest import testdata_file


def make_dicom(
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    window: tuple[float, float] | None = None,
    rows: int | None = None,
    columns: int | None = None,
) -> bytes:
    """A real Part-10 DICOM file built in memory with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-0001"
    ds.Rows = rows if rows is not None else pixels.shape[0]
    ds.Columns = columns if columns is not None else pixels.shape[1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if slope is not None and intercept is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowWidth, ds.WindowCenter = window
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_ct_presets_have_the_standard_numbers() -> None:
    assert CT_PRESETS["soft-tissue"] == (400.0, 40.0)
    assert preset_range("soft-tissue") == (-160.0, 240.0)
    assert preset_range("lung") == (-1350.0, 150.0)
    assert preset_range("bone") == (-500.0, 1300.0)
    assert preset_range("brain") == (0.0, 80.0)
    assert preset_range("mediastinum") == (-125.0, 225.0)


@pytest.mark.parametrize(
    ("preset", "hu", "expected"),
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    [
        ("soft-tissue", -1000, 0.0),
        ("soft-tissue", -160, 0.0),
        ("soft-tissue", 40, 0.50125),  # (40 - 39.5) / 399 + 0.5
        ("soft-tissue", 240, 1.0),
        ("soft-tissue", 1000, 1.0),
        ("lung", -600, 0.50033),  # (-600 + 600.5) / 1499 + 0.5
        ("lung", -1350, 0.0),
        ("lung", -2000, 0.0),
        ("brain", 40, 0.50633),  # (40 - 39.5) / 79 + 0.5
        ("brain", 0, 0.0),
        ("brain", 60, 0.75949),  # (60 - 39.5) / 79 + 0.5
        ("bone", 400, 0.50028),  # (400 - 399.5) / 1799 + 0.5
    ],
)
def test_ct_preset_maps_hounsfield_units(preset: str, hu: int, expected: float) -> None:
    stored = np.full((8, 8), hu + 1024, dtype=np.int16)  # intercept -1024, signed storage
    decoded = decode_bytes(make_dicom(stored), ct_window=preset)
    assert decoded.meta.window == f"ct:{preset}"
    assert decoded.frames[0].pixels == pytest.approx(np.full((8, 8), expected), abs=1e-4)


def test_file_window_wins_over_preset() -> None:
    stored = np.array([[1024 - 100, 1024 + 100]], dtype=np.uint16).repeat(4, axis=0)
    decoded = decode_bytes(make_dicom(stored, window=(200.0, 0.0)), ct_window="lung")
    assert decoded.meta.window == "file"
    row = decoded.frames[0].pixels[0]
    assert row[0] == pytest.approx(0.0, abs=3e-3) and row[1] == pytest.approx(1.0, abs=3e-3)


def test_monochrome1_is_inverted() -> None:
    ramp = np.tile(np.arange(0, 1000, 100, dtype=np.uint16), (4, 1))
    mono2 = decode_bytes(make_dicom(ramp, modality="CR", slope=None, intercept=None)).frames[0].pixels
    mono1 = decode_bytes(make_dicom(ramp, modality="CR", photometric="MONOCHROME1", slope=None, intercept=None))
    assert mono1.frames[0].pixels == pytest.approx(1.0 - mono2, abs=1e-6)
    assert mono2[0, 0] == 0.0 and mono2[0, -1] == 1.0


def test_real_monochrome1_cr_is_bright_where_dense() -> None:
    decoded = decode_bytes(testdata_file("RG1_UNCR.dcm").read_bytes())
    assert decoded.meta.photometric == "MONOCHROME1"
    assert decoded.meta.modality == "CR"
    pixels = decoded.frames[0].pixels
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0 and pixels.std() > 0.05


@pytest.mark.parametrize(
    "name", ["examples_ybr_color.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_palette.dcm", "SC_rgb_rle_2frame.dcm"]
)
def test_colour_files_decode_to_rgb(name: str) -> None:
    decoded = decode_bytes(testdata_file(name).read_bytes())
    pixels = decoded.frames[0].pixels
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.max() > 0.2  # not a near-black mis-scaling


def test_multiframe_policy_middle_and_all() -> None:
    data = testdata_file("emri_small.dcm").read_bytes()
    middle = decode_bytes(data)
    every = decode_bytes(data, frames="all")
    assert [f.frame for f in middle.frames] == [6]  # 10 frames -> 1-based frame 6 (index 5)
    assert [f.frame for f in every.frames] == list(range(1, 11))
    assert np.array_equal(every.frames[5].pixels, middle.frames[0].pixels)
    assert middle.instance_key(6) == every.instance_key(6)


def test_absurd_rows_columns_refused_before_decoding() -> None:
    data = make_dicom(np.zeros((4, 4), np.uint16), rows=65535, columns=65535)
    with pytest.raises(TooLargeError, match="exceeds the limit"):
        decode_bytes(data)


def test_truncated_pixel_data_is_a_clear_error() -> None:
    with pytest.raises(DecodeError, match="less than expected"):
        decode_bytes(testdata_file("MR_truncated.dcm").read_bytes())


def test_cut_file_is_a_clear_error() -> None:
    data = testdata_file("CT_small.dcm").read_bytes()
    with pytest.raises(DecodeError):
        decode_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"", DecodeError), (b"hello world, not an image at all" * 10, NotAnImageError)],
)
def test_non_images_are_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_bytes(data)


def test_zip_bytes_are_not_an_image() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(NotAnImageError, match="archive"):
        decode_bytes(buf.getvalue())


def test_dicom_without_pixels_is_not_an_image() -> None:
    with pytest.raises(NotAnImageError, match="not an image: RT Plan Storage"):  # named by its SOP class
        decode_bytes(testdata_file("rtplan.dcm").read_bytes())


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_png_8_and_16_bit_scale_by_dtype_maximum() -> None:
    eight = decode_bytes(_png(np.array([[0, 255], [51, 102]], dtype=np.uint8))).frames[0].pixels
    assert eight == pytest.approx(np.array([[0, 1], [0.2, 0.4]]), abs=1e-6)
    sixteen_src = np.array([[0, 65535], [13107, 32768]], dtype=np.uint16)
    sixteen = decode_bytes(_png(sixteen_src)).frames[0].pixels
    assert sixteen == pytest.approx(sixteen_src / 65535.0, abs=1e-6)


def test_rgba_png_drops_alpha_and_tiff_decodes() -> None:
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10
    pixels = decode_bytes(_png(rgba)).frames[0].pixels
    assert pixels.shape == (4, 6, 3) and pixels[..., 0].min() == 1.0 and pixels[..., 1:].max() == 0.0
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 5), 7, np.uint16)).save(buf, format="TIFF")
    tiff = decode_bytes(buf.getvalue()).frames[0].pixels
    assert tiff == pytest.approx(np.full((5, 5), 7 / 65535.0), abs=1e-7)


def test_png_decompression_bomb_refused() -> None:
    buf = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buf, format="PNG")  # ~150 kB on disk, 144 Mpx decoded
    with pytest.raises(TooLargeError):
        decode_bytes(buf.getvalue(), limits=DecodeLimits(max_pixels=50_000_000))


def test_truncated_png_is_a_clear_error() -> None:
    data = _png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(DecodeError):
        decode_bytes(data[: len(data) // 2])


def test_preprocess_pads_to_a_centred_square_and_greys_to_rgb() -> None:
    grey = np.ones((2, 4), dtype=np.float32)
    rgb = to_rgb(grey)
    assert rgb.shape == (2, 4, 3)
    square = pad_to_square(rgb)
    assert square.shape == (4, 4, 3)
    assert square[0].max() == 0 and square[3].max() == 0 and square[1:3].min() == 1.0
    assert to_model_input(grey).dtype == np.uint8 and to_model_input(grey).max() == 255


def test_patient_name_never_reaches_metadata() -> None:
    decoded = decode_bytes(make_dicom(np.zeros((4, 4), np.uint16)))
    assert "Doe" not in repr(decoded.meta) and "PAT-0001" not in repr(decoded.meta)
    assert not hasattr(decoded.meta, "patient_name")


def test_pydicom_reads_our_synthetic_files() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((4, 4), np.uint16))))
    assert ds.Rows == 4
