"""Synthetic CT volumes written as DICOM series from analytic phantoms: the series tests' data (no download)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian

SHAPES = ("sphere", "cylinder", "two_spheres", "cube")
# High-contrast shapes for the level tests' tiny studies (a few slices of 32x32): a random stand-in model tells
# them apart, where 60 HU tissue in water is too faint for it.
CASE_SHAPES = ("cylinder", "bar", "ring", "corner")
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
INTERCEPT = -1024.0  # stored value 0 is -1024 HU
AIR, FAT, WATER, TISSUE, BONE = -1000.0, -100.0, 0.0, 60.0, 700.0
LUNG, DENSE = -700.0, 400.0


def uid(*parts: object) -> str:
    """A stable, valid DICOM UID made from the parts (2.25 + a decimal hash)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"2.25.{int(digest[:30], 16)}"


def volume(shape: str, slices: int = 40, size: int = 32, shift: float = 0.0) -> npt.NDArray[np.float32]:
    """A phantom in HU, (slices, size, size): a fat-ringed water body holding the shape (shift in voxels)."""
    z, y, x = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    s = shift * 2.0 / size
    hu = np.full(z.shape, AIR, dtype=np.float32)
    body = x**2 + y**2 < 0.9**2
    hu[body] = FAT
    hu[x**2 + y**2 < 0.8**2] = WATER
    if shape == "sphere":
        inside = (x - s) ** 2 + y**2 + z**2 < 0.5**2
        hu[inside] = TISSUE
    elif shape == "cylinder":
        inside = ((x - s) ** 2 + y**2 < 0.3**2) & (np.abs(z) < 0.7)
        hu[inside] = BONE
    elif shape == "two_spheres":
        hu[(x - 0.35 - s) ** 2 + y**2 + (z - 0.3) ** 2 < 0.25**2] = TISSUE
        hu[(x + 0.35 - s) ** 2 + y**2 + (z + 0.3) ** 2 < 0.25**2] = BONE
    elif shape == "cube":
        hu[(np.abs(x - s) < 0.4) & (np.abs(y) < 0.4) & (np.abs(z) < 0.4)] = TISSUE
    elif shape == "bar":
        hu[(np.abs(x - s) < 0.2) & (np.abs(y - 0.2 * z) < 0.7)] = BONE
    elif shape == "ring":
        r = np.sqrt((x - s) ** 2 + y**2)
        hu[(r > 0.4) & (r < 0.6)] = LUNG
    elif shape == "corner":
        hu[(x - s > 0.1) & (y > 0.1 - 0.3 * z)] = DENSE
    else:
        raise ValueError(f"unknown phantom shape {shape!r}: one of {SHAPES + CASE_SHAPES[1:]}")
    return hu


@dataclass
class PhantomSeries:
    """What was written: the UIDs, the files in write order, the slice positions (z, mm) of the volume."""

    shape: str
    study_uid: str
    series_uid: str
    files: list[Path] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)  # z of each volume slice, ascending
    localizer: Path | None = None
    sop_by_position: dict[float, str] = field(default_factory=dict)


def _base(study_uid: str, series_uid: str, sop_uid: str, sop_class: str, patient: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = uid(study_uid, "frame-of-reference")
    ds.PatientID = patient
    ds.PatientName = ""  # type 2, left empty: a phantom has no name (and medsearch never stores one)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.StudyDate = "20260101"
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "medsearch phantoms"
    ds.StudyDescription = "PHANTOM STUDY"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.SeriesNumber = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1.0
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    return ds


def _stored(hu: npt.NDArray[np.float32]) -> bytes:
    return np.clip(np.round(hu - INTERCEPT), 0, 4095).astype("<u2").tobytes()


def write_series(
    folder: Path,
    hu: npt.NDArray[np.float32],
    *,
    shape: str = "phantom",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient: str = "PHANTOM-1",
    spacing: float = 0.8,
    thickness: float = 5.0,
    origin: tuple[float, float, float] = (-12.8, -12.8, -100.0),
    localizer: bool = True,
    seed: int = 0,
) -> PhantomSeries:
    """One CT series, a file per slice, with shuffled file names and InstanceNumbers (and a coronal
    localizer of another size inside the series), so only the geometry gives the true order."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or uid(shape, seed, "study")
    series_uid = series_uid or uid(study_uid, "series")
    folder.mkdir(parents=True, exist_ok=True)
    n = len(hu)
    out = PhantomSeries(shape, study_uid, series_uid)
    numbers = rng.permutation(n) + 1
    for i in range(n):
        z = origin[2] + i * thickness
        sop = uid(series_uid, "slice", i)
        ds = _base(study_uid, series_uid, sop, CTImageStorage, patient)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(numbers[i])
        ds.ImagePositionPatient = [origin[0], origin[1], z]
        ds.ImageOrientationPatient = list(AXIAL)
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = thickness
        ds.SliceLocation = z
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.PixelData = _stored(hu[i])
        path = folder / f"{rng.integers(1 << 40):012x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.files.append(path)
        out.positions.append(z)
        out.sop_by_position[z] = sop
    if localizer:
        out.localizer = _write_localizer(folder, hu, out, patient, spacing, thickness, origin)
        out.files.append(out.localizer)
    return out


def _write_localizer(
    folder: Path,
    hu: npt.NDArray[np.float32],
    series: PhantomSeries,
    patient: str,
    spacing: float,
    thickness: float,
    origin: tuple[float, float, float],
) -> Path:
    """A coronal scout (mean along y), another orientation and matrix size, in the same series."""
    sop = uid(series.series_uid, "localizer")
    ds = _base(series.study_uid, series.series_uid, sop, CTImageStorage, patient)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.InstanceNumber = 1  # clashes with a slice's number, as scouts often do
    ds.ImagePositionPatient = [origin[0], 0.0, origin[2] + thickness * (len(hu) - 1)]
    ds.ImageOrientationPatient = list(CORONAL)
    projection = hu.mean(axis=1)[::-1]  # rows go down in z
    ds.PixelSpacing = [thickness, spacing]
    ds.Rows, ds.Columns = projection.shape
    ds.PixelData = _stored(projection)
    path = folder / "scout.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_enhanced(
    path: Path,
    hu: npt.NDArray[np.float32],
    *,
    shape: str = "phantom",
    patient: str = "PHANTOM-MF",
    spacing: float = 0.8,
    thickness: float = 5.0,
    origin: tuple[float, float, float] = (-12.8, -12.8, -100.0),
    per_frame_positions: bool = True,
    seed: int = 0,
) -> PhantomSeries:
    """One enhanced multi-frame CT object holding the whole volume, frames stored in shuffled order, positions
    in PerFrameFunctionalGroupsSequence -> PlanePositionSequence (left out when per_frame_positions is False)."""
    rng = np.random.default_rng(seed)
    study_uid = uid(shape, seed, "enhanced-study")
    series_uid = uid(study_uid, "series")
    order = rng.permutation(len(hu))
    ds = _base(study_uid, series_uid, uid(series_uid, "object"), EnhancedCTImageStorage, patient)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    # The rescale and window stay at the top level too (a Standard Extended object), so decoders that read only
    # those apply the HU rescale to every frame.
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(hu)
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = thickness
    shared.PixelMeasuresSequence = DicomSequence([measures])
    transform = Dataset()
    transform.RescaleIntercept = INTERCEPT
    transform.RescaleSlope = 1.0
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    out = PhantomSeries(shape, study_uid, series_uid, files=[path])
    for i in order:
        item = Dataset()
        content = Dataset()
        content.InStackPositionNumber = int(i) + 1
        item.FrameContentSequence = DicomSequence([content])
        if per_frame_positions:
            plane = Dataset()
            plane.ImagePositionPatient = [origin[0], origin[1], origin[2] + float(i) * thickness]
            item.PlanePositionSequence = DicomSequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = b"".join(_stored(hu[i]) for i in order)
    out.positions = sorted(origin[2] + float(i) * thickness for i in order)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return out


def reacquire(
    hu: npt.NDArray[np.float32], seed: int, noise: float = 15.0, shift_slices: int = 1
) -> npt.NDArray[np.float32]:
    """The same phantom scanned again: Gaussian noise in HU and the table moved by a slice or so."""
    rng = np.random.default_rng(seed)
    moved = np.roll(hu, shift_slices, axis=0)
    return (moved + rng.normal(0.0, noise, hu.shape)).astype(np.float32)


def write_studies(
    root: Path,
    shapes: tuple[str, ...] = SHAPES,
    slices: int = 40,
    size: int = 32,
    localizer: bool = True,
    moved: bool = True,
) -> dict[str, tuple[PhantomSeries, PhantomSeries]]:
    """Each shape as a study, plus its noisy re-acquisition (other UIDs and patient, noise, a small shift).
    moved=False keeps the table still (noise only): for studies of a few slices, where a one-slice shift
    would change a sixth of the volume."""
    out: dict[str, tuple[PhantomSeries, PhantomSeries]] = {}
    shift = 1.0 if moved else 0.0
    for n, shape in enumerate(shapes):
        hu = volume(shape, slices, size)
        first = write_series(root / shape, hu, shape=shape, patient=f"PHANTOM-{n}", localizer=localizer, seed=n)
        again = write_series(
            root / f"{shape}-again",
            reacquire(volume(shape, slices, size, shift=shift), seed=100 + n, shift_slices=int(shift)),
            shape=shape,
            patient=f"PHANTOM-{n}-AGAIN",
            origin=(-12.0, -12.8, -97.5),
            localizer=localizer,
            seed=100 + n,
        )
        out[shape] = (first, again)
    return out
