"""Small synthetic CT studies for the series/study level tests: one phantom per study, and a noisy re-acquisition."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

SHAPES = ("sphere", "bar", "ring", "corner")


def uid(*parts: object) -> str:
    """A stable, valid DICOM UID made from the parts."""
    return f"2.25.{int(hashlib.sha256('/'.join(map(str, parts)).encode()).hexdigest()[:30], 16)}"


def phantom(shape: str, slices: int, size: int = 32) -> npt.NDArray[np.float32]:
    """(slices, size, size) in HU: air around a water body holding the shape, which changes along z."""
    z, y, x = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    hu = np.full(z.shape, -1000.0, np.float32)
    hu[x**2 + y**2 < 0.85**2] = 0.0
    if shape == "sphere":
        hu[x**2 + y**2 + z**2 < 0.6**2] = 700.0
    elif shape == "bar":
        hu[(np.abs(x) < 0.2) & (np.abs(y - 0.2 * z) < 0.7)] = 700.0
    elif shape == "ring":
        r = np.sqrt(x**2 + y**2)
        hu[(r > 0.4) & (r < 0.6)] = -700.0
    elif shape == "corner":
        hu[(x > 0.1) & (y > 0.1 - 0.3 * z)] = 400.0
    else:
        raise ValueError(shape)
    return hu


@dataclass
class Written:
    """One written series."""

    study_uid: str
    series_uid: str
    files: list[Path] = field(default_factory=list)


def write_series(
    folder: Path, hu: npt.NDArray[np.float32], study_uid: str, series_uid: str, patient: str, body_part: str = "CHEST"
) -> Written:
    """A CT series, one file per slice, with geometry and rescale."""
    folder.mkdir(parents=True, exist_ok=True)
    out = Written(study_uid, series_uid)
    for i, plane in enumerate(hu):
        sop = uid(series_uid, i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.Modality, ds.BodyPartExamined, ds.StudyDate = patient, "CT", body_part, "20240102"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-12.8, -12.8, float(i * 5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 5.0
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
        ds.PixelData = np.clip(plane + 1024.0, 0, 4095).astype(np.uint16).tobytes()
        path = folder / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.files.append(path)
    return out


def write_studies(root: Path, slices: int = 6, size: int = 32) -> dict[str, tuple[Written, Written]]:
    """Each shape as a study, and its re-acquisition (other UIDs and patient, Gaussian noise of 20 HU)."""
    out: dict[str, tuple[Written, Written]] = {}
    for n, shape in enumerate(SHAPES):
        hu = phantom(shape, slices, size)
        noisy = hu + np.random.default_rng(n).normal(0, 20, hu.shape).astype(np.float32)
        first = write_series(root / shape, hu, uid(shape, "study"), uid(shape, "series"), f"P{n}")
        again = write_series(root / f"{shape}-again", noisy, uid(shape, "study2"), uid(shape, "series2"), f"Q{n}")
        out[shape] = (first, again)
    return out
