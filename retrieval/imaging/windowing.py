"""VOI windowing to [0, 1]: the file's own window or LUT first, then named per-modality presets."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_voi_lut, apply_windowing

from retrieval.imaging.types import FloatImage

# Named CT presets as (window width, window centre) in Hounsfield units.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "soft-tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}


# MedGemma 1.5's CT recipe: three HU windows (low, high) as the R, G and B channels (wide, soft tissue, brain).
CT_MULTIWINDOW: tuple[tuple[float, float], ...] = ((-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0))
CT_CHANNELS = ("window", "multiwindow")


def preset_range(name: str) -> tuple[float, float]:
    """The HU interval [low, high] that a named CT preset maps onto [0, 1]."""
    width, centre = CT_PRESETS[name]
    return centre - width / 2.0, centre + width / 2.0


def _normalise(out: np.ndarray, low: float, high: float) -> FloatImage:
    span = high - low
    if span <= 0:
        return np.zeros(out.shape, dtype=np.float32)
    return np.clip((out.astype(np.float64) - low) / span, 0.0, 1.0).astype(np.float32)


def _output_bounds(ds: Dataset, fn_name: str) -> tuple[float, float]:
    """The output range of pydicom's VOI functions for this dataset."""
    if fn_name == "lut":  # PS3.3 C.11.2.1.1: a VOI LUT outputs 0 .. 2**bits - 1
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    extremes = np.array([-1e15, 1e15], dtype=np.float64)  # read the window's range off the function
    out = apply_windowing(extremes, ds)
    return float(np.min(out)), float(np.max(out))


def has_file_voi(ds: Dataset) -> bool:
    """True when the dataset carries a usable window or VOI LUT of its own."""
    if ds.get("VOILUTSequence"):
        return True
    try:
        width = ds.get("WindowWidth")
        centre = ds.get("WindowCenter")
    except (TypeError, ValueError):  # malformed DS values
        return False
    if width is None or centre is None:
        return False
    first = width[0] if getattr(width, "__len__", None) and not isinstance(width, str) else width
    try:
        return float(first) >= 1.0
    except (TypeError, ValueError):
        return False


def apply_file_voi(arr: np.ndarray, ds: Dataset) -> FloatImage:
    """Apply the file's own VOI LUT or window (after the modality LUT) and scale the result to [0, 1]."""
    kind = "lut" if ds.get("VOILUTSequence") else "window"
    if kind == "lut" and np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
        arr = arr.astype(np.int64)  # LUT lookups need integer input
    out = apply_voi_lut(arr, ds, prefer_lut=True)
    lo, hi = _output_bounds(ds, kind)
    return _normalise(out, lo, hi)


def apply_window(arr: np.ndarray, ds: Dataset, width: float, centre: float) -> FloatImage:
    """Apply an explicit linear window (values after the modality LUT) and scale to [0, 1]."""
    view = Dataset()
    for keyword in ("BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"):
        if keyword in ds:
            setattr(view, keyword, ds.get(keyword))
    if "BitsStored" not in view:
        view.BitsStored = 16
    if "PixelRepresentation" not in view:
        view.PixelRepresentation = 1
    view.WindowWidth = max(float(width), 1.0)
    view.WindowCenter = float(centre)
    view.VOILUTFunction = "LINEAR"
    view.PhotometricInterpretation = "MONOCHROME2"
    out = apply_windowing(arr, view)
    lo, hi = _output_bounds(view, "window")
    return _normalise(out, lo, hi)


def apply_minmax(arr: np.ndarray) -> FloatImage:
    """Stretch the frame's own value range to [0, 1] (for modalities without a standard window)."""
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    low, high = float(finite.min()), float(finite.max())
    return _normalise(np.nan_to_num(arr.astype(np.float64), nan=low), low, high)


def apply_multiwindow(hu: np.ndarray) -> FloatImage:
    """HU (values after the modality LUT) -> (H, W, 3): channel c is clip((HU - low) / (high - low), 0, 1) for the
    c-th of CT_MULTIWINDOW's windows, MedGemma 1.5's formula (not DICOM's linear VOI, which shifts by half a step)."""
    values = hu.astype(np.float64)
    channels = [np.clip((values - low) / (high - low), 0.0, 1.0) for low, high in CT_MULTIWINDOW]
    return np.stack(channels, axis=2).astype(np.float32)
