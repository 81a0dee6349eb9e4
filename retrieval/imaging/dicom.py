"""DICOM decoding: every common transfer syntax, modality LUT, VOI, MONOCHROME1, colour, frame policy."""

from __future__ import annotations

import io
import re
import warnings
from datetime import date

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array

from retrieval.errors import (
    BadQueryError,
    DecodeError,
    NonImageObjectError,
    NotAnImageError,
    TooLargeError,
    UnsupportedFormatError,
    WindowNotApplicableError,
)
from retrieval.imaging.sop_classes import PIXEL_TAGS, classify_dataset
from retrieval.imaging.sr_text import header_identifiers
from retrieval.imaging.types import (
    DecodedFrame,
    DecodedImage,
    DecodeLimits,
    FloatImage,
    FramePolicy,
    ImageMeta,
)
from retrieval.imaging.windowing import (
    CT_PRESETS,
    apply_file_voi,
    apply_minmax,
    apply_multiwindow,
    apply_window,
    has_file_voi,
)


def read_dataset(data: bytes, *, force: bool = False) -> Dataset:
    """Parse DICOM bytes (pixel data left encoded)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
        for warning in caught:
            if "End of file reached" in str(warning.message):  # pydicom adds " in file <name>", unknown for bytes
                reason = re.sub(r"\s+in file .*$", "", str(warning.message))
                raise DecodeError(f"truncated DICOM file: {reason}")
        return ds
    except DecodeError:
        raise
    except InvalidDicomError as exc:
        raise DecodeError(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise DecodeError(f"unreadable DICOM header: {type(exc).__name__}: {exc}") from exc


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _date(ds: Dataset, keyword: str) -> date | None:
    text = _text(ds, keyword)
    if not text or len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def int_tag(ds: Dataset, keyword: str) -> int | None:
    """An integer attribute of a dataset, or None when it is absent, empty or not a number."""
    try:
        value = ds.get(keyword)
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def dicom_meta(ds: Dataset, content_hash: str) -> ImageMeta:
    """The metadata we keep (never the patient name; PatientID only transiently, to be hashed)."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    return ImageMeta(
        kind="dicom",
        content_hash=content_hash,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        modality=(_text(ds, "Modality") or "").upper() or None,
        body_part=(_text(ds, "BodyPartExamined") or "").upper() or None,
        view_position=_text(ds, "ViewPosition"),
        study_date=_date(ds, "StudyDate") or _date(ds, "SeriesDate") or _date(ds, "AcquisitionDate"),
        sex=_text(ds, "PatientSex"),
        age=_text(ds, "PatientAge"),
        manufacturer=_text(ds, "Manufacturer"),
        rows=int_tag(ds, "Rows"),
        columns=int_tag(ds, "Columns"),
        photometric=_text(ds, "PhotometricInterpretation"),
        number_of_frames=max(int_tag(ds, "NumberOfFrames") or 1, 1),
        transfer_syntax=tsyntax or None,
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        identifiers=header_identifiers(ds),
    )


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files written without (0002,0010): infer the native syntax they were read with."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    else:
        explicit = pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        ds.file_meta.TransferSyntaxUID = explicit


def frame_indices(number_of_frames: int, policy: FramePolicy) -> list[int]:
    """0-based frame indices to decode under a policy (middle frame, every frame, or the 1-based frames given)."""
    if policy == "all":
        return list(range(number_of_frames))
    if isinstance(policy, int):
        policy = (policy,)
    if isinstance(policy, tuple):  # frames chosen by number (series planning samples them)
        for frame in policy:
            if not 1 <= frame <= number_of_frames:
                raise DecodeError(f"frame {frame} does not exist (the instance has {number_of_frames})")
        return sorted({frame - 1 for frame in policy})
    return [number_of_frames // 2]


def _check_limits(meta: ImageMeta, limits: DecodeLimits) -> None:
    rows, cols = meta.rows or 0, meta.columns or 0
    if rows <= 0 or cols <= 0:
        raise DecodeError(f"invalid image size Rows={meta.rows} Columns={meta.columns}")
    if rows * cols > limits.max_pixels:
        raise TooLargeError(
            f"frame of {rows}x{cols} pixels exceeds the limit of {limits.max_pixels} pixels "
            "(raise MEDSEARCH_MAX_PIXELS to accept it)"
        )
    if meta.number_of_frames > limits.max_frames:
        raise TooLargeError(f"{meta.number_of_frames} frames exceed the limit of {limits.max_frames}")


def _to_unit(
    arr: np.ndarray, ds: Dataset, meta: ImageMeta, ct_window: str, ct_channels: str = "window"
) -> tuple[FloatImage, str]:
    """Map one decoded frame to float [0, 1]; returns the pixels and the window that was used. With
    `ct_channels="multiwindow"` a grey CT frame becomes three HU windows as RGB, whatever window the file names."""
    photometric = (meta.photometric or "").upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
        if top > 255 and int(rgb.max(initial=0)) <= 255:
            top = 255.0  # 8-bit palette entries stored in 16-bit words (a common writer quirk)
        return np.clip(rgb.astype(np.float32) / top, 0, 1), "palette"
    if arr.ndim == 3:  # RGB (YBR already converted to RGB by pydicom)
        bits = int_tag(ds, "BitsStored") or arr.dtype.itemsize * 8
        top = float(2**bits - 1)
        return np.clip(arr.astype(np.float32) / top, 0, 1), "rgb"
    values = apply_modality_lut(arr, ds)
    if ct_channels == "multiwindow" and meta.modality == "CT":
        return apply_multiwindow(values), "ct:multiwindow"
    if has_file_voi(ds):
        try:
            out, window = apply_file_voi(values, ds), "file"
        except Exception:  # malformed VOI: fall back to presets
            out, window = _preset(values, ds, meta, ct_window)
    else:
        out, window = _preset(values, ds, meta, ct_window)
    if photometric == "MONOCHROME1":
        out = (1.0 - out).astype(np.float32)
    return out, window


def _preset(values: np.ndarray, ds: Dataset, meta: ImageMeta, ct_window: str) -> tuple[FloatImage, str]:
    if meta.modality == "CT" and ct_window in CT_PRESETS:
        width, centre = CT_PRESETS[ct_window]
        return apply_window(values, ds, width, centre), f"ct:{ct_window}"
    return apply_minmax(values), "minmax"


def decode_dicom(
    data: bytes,
    content_hash: str,
    *,
    frames: FramePolicy = "middle",
    limits: DecodeLimits | None = None,
    ct_window: str = "soft-tissue",
    ct_channels: str = "window",
    force: bool = False,
) -> DecodedImage:
    """Decode a DICOM file's chosen frames to [0, 1] pixels plus metadata."""
    limits = limits or DecodeLimits()
    ds = read_dataset(data, force=force)
    kind = classify_dataset(ds)
    if kind.skipped:
        raise NonImageObjectError.of(kind.kind, kind.name)
    if not any(tag in ds for tag in PIXEL_TAGS):
        if force and kind.kind == "unknown":  # lenient parsing of preamble-less bytes found nothing DICOM-like
            raise UnsupportedFormatError("not a DICOM file or a supported image (PNG, JPEG, TIFF)")
        if "Rows" in ds or "Columns" in ds:
            raise NotAnImageError(f"image attributes but no pixel data ({kind.name}): truncated or stripped file")
        raise NotAnImageError(f"DICOM file without pixel data ({kind.name})")
    _ensure_transfer_syntax(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd VR values when they are first read
        meta = dicom_meta(ds, content_hash)
    _check_limits(meta, limits)
    decoded: list[DecodedFrame] = []
    window = ""
    for index in frame_indices(meta.number_of_frames, frames):
        arr = _frame_pixels(ds, index)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise DecodeError(f"unexpected pixel array shape {arr.shape}")
        try:
            pixels, window = _to_unit(arr, ds, meta, ct_window, ct_channels)
        except Exception as exc:
            raise DecodeError(f"pixel values could not be windowed: {type(exc).__name__}: {exc}") from exc
        decoded.append(DecodedFrame(pixels=pixels, frame=index + 1))
    meta.window = window
    return DecodedImage(meta=meta, frames=decoded)


def _frame_pixels(ds: Dataset, index: int) -> np.ndarray:
    """The stored pixels of one frame (0-based), pydicom's warnings silenced; a DecodeError when they cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, index=index)
    except Exception as exc:
        raise DecodeError(f"pixel data could not be decoded: {type(exc).__name__}: {exc}") from exc


def grey_frame(
    data: bytes, frame: int | None, limits: DecodeLimits, *, force: bool = False
) -> tuple[np.ndarray, Dataset, ImageMeta]:
    """One grey frame (1-based; the middle one by default) after the modality LUT: HU for CT, stored values
    (rescaled) otherwise; with the dataset and metadata. Colour images have no window to set: refused."""
    ds = read_dataset(data, force=force)
    if not any(tag in ds for tag in PIXEL_TAGS):
        raise NotAnImageError(f"DICOM file without pixel data ({classify_dataset(ds).name})")
    _ensure_transfer_syntax(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = dicom_meta(ds, "")
    _check_limits(meta, limits)
    if frame is not None and not 1 <= frame <= meta.number_of_frames:
        raise BadQueryError(f"frame {frame} does not exist: the image has frames 1..{meta.number_of_frames}")
    photometric = (meta.photometric or "").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise WindowNotApplicableError(f"window/level applies to grey images; this one is {photometric or 'colour'}")
    index = frame - 1 if frame is not None else meta.number_of_frames // 2
    arr = _frame_pixels(ds, index)
    if arr.ndim != 2 or arr.size == 0:
        raise WindowNotApplicableError(f"window/level applies to grey images; this frame has shape {arr.shape}")
    return apply_modality_lut(arr, ds), ds, meta
