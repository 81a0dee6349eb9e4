"""Series planning from headers only: group instances by series, order slices along the normal, sample K."""

from __future__ import annotations

import io
import itertools
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from retrieval.imaging.dicom import int_tag

Vec3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]

DEFAULT_SLICES = 16
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})  # CR, DX, MG, US, XA, photos... stay single images
PARALLEL = 0.99  # |cos| between direction cosines above which two slices share an orientation (~8 degrees)
DUPLICATE_MM = 0.01  # two slices closer than this along the normal are at the same position
GAP_FACTOR = 1.5  # a step this many times the series' usual spacing is recorded as a missing slice
HEADER_TAGS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SeriesDescription",
    "StudyDescription",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)

# Why a slice is not part of its series' volume (the stored reasons; docs/cases.md lists them).
LOCALIZER = "localizer (ImageType LOCALIZER)"
OTHER_MODALITY = "modality {found} differs from the series' {main}"
OTHER_SIZE = "matrix {found} differs from the series' {main}"
OTHER_ORIENTATION = "orientation differs from the series' main one"
NO_POSITION = "no ImagePositionPatient while the series' other slices have one"
DUPLICATE = "duplicate position {position:.2f} mm (another slice is there)"


@dataclass(frozen=True)
class Header:
    """The facts of one instance that planning needs (no identifiers beyond UIDs, no pixels)."""

    key: str  # the caller's identity of the instance (a source URI)
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    modality: str | None = None
    image_type: tuple[str, ...] = ()
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int = 1
    instance_number: int | None = None
    position: Vec3 | None = None
    orientation: Orientation | None = None
    frame_positions: tuple[Vec3 | None, ...] = ()  # enhanced multi-frame: per frame (empty: none given)
    frame_orientations: tuple[Orientation | None, ...] = ()
    enhanced: bool = False  # carries functional groups (an enhanced multi-frame object)
    series_description: str | None = None
    study_description: str | None = None


@dataclass(frozen=True)
class Slice:
    """One candidate slice: an instance, or one frame (1-based) of a multi-frame instance."""

    key: str
    frame: int | None
    position: float | None  # along the series' slice normal, mm; None when the series has no geometry
    instance_number: int | None = None


@dataclass
class SeriesPlan:
    """What to do with a series: its ordered volume, the slices sampled from it, what was left out and why."""

    series_instance_uid: str
    study_instance_uid: str | None = None
    modality: str | None = None
    series_description: str | None = None
    study_description: str | None = None
    volume: list[Slice] = field(default_factory=list)  # ordered along the normal (empty: single images)
    sampled: list[Slice] = field(default_factory=list)
    excluded: list[tuple[Slice, str]] = field(default_factory=list)
    singles: list[str] = field(default_factory=list)  # keys planned as today: each instance on its own
    notes: list[str] = field(default_factory=list)  # facts worth saying that exclude nothing (gaps, fallbacks)
    copies: dict[str, str] = field(default_factory=dict)  # key -> the key of the same SOP instance it repeats
    requested: int | None = DEFAULT_SLICES  # the K asked for (None: all)

    @property
    def is_volume(self) -> bool:
        """Whether the series was planned as a volume (else its instances are single images)."""
        return bool(self.volume)

    @property
    def skipped(self) -> list[Slice]:
        """Volume slices left out by sampling."""
        chosen = set(self.sampled)
        return [s for s in self.volume if s not in chosen]

    def excluded_reasons(self) -> dict[str, int]:
        """How many slices were left out of the volume for each reason."""
        return dict(Counter(reason for _, reason in self.excluded))

    def frames_of(self, key: str) -> tuple[int, ...]:
        """The sampled 1-based frames of a multi-frame instance (empty: none sampled)."""
        return tuple(s.frame for s in self.sampled if s.key == key and s.frame is not None)


# -- reading headers -----------------------------------------------------------------------------


def read_header(data: bytes, key: str) -> Header | None:
    """The planning facts of DICOM bytes (pixel data never parsed); None when the bytes are not DICOM."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception:  # not DICOM, or a header pydicom cannot parse: decode records why, as today
        return None
    return header_of(ds, key)


def read_header_file(path: str, key: str) -> Header | None:
    """read_header for a file on disk: only the header is read from it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception:
        return None
    return header_of(ds, key)


def header_of(ds: Dataset, key: str) -> Header | None:
    """The planning facts of a parsed dataset (a file, or DICOMweb JSON metadata); None without a series UID."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _header(ds, key)
    except Exception:  # a malformed value must cost this instance its series planning, nothing more
        return None


def _header(ds: Dataset, key: str) -> Header | None:
    series = _text(ds, "SeriesInstanceUID")
    if not series or ("Rows" not in ds and "PerFrameFunctionalGroupsSequence" not in ds):
        return None
    frames = max(int_tag(ds, "NumberOfFrames") or 1, 1)
    positions, orientations = _per_frame_geometry(ds, frames)
    image_type = ds.get("ImageType")
    return Header(
        key=key,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series_instance_uid=series,
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        modality=(_text(ds, "Modality") or "").upper() or None,
        image_type=tuple(str(v).upper() for v in (image_type if image_type is not None else [])),
        rows=int_tag(ds, "Rows"),
        columns=int_tag(ds, "Columns"),
        number_of_frames=frames,
        instance_number=int_tag(ds, "InstanceNumber"),
        position=_vector(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_vector(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        frame_positions=positions,
        frame_orientations=orientations,
        enhanced="PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds,
        series_description=_text(ds, "SeriesDescription"),
        study_description=_text(ds, "StudyDescription"),
    )


def _per_frame_geometry(ds: Dataset, frames: int) -> tuple[tuple[Vec3 | None, ...], tuple[Orientation | None, ...]]:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return (), ()
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_orientation = _orientation_in(shared[0]) if shared else None
    positions: list[Vec3 | None] = []
    orientations: list[Orientation | None] = []
    for item in per_frame:
        plane = item.get("PlanePositionSequence")
        positions.append(_vector(plane[0].get("ImagePositionPatient"), 3) if plane else None)  # type: ignore[arg-type]
        orientations.append(_orientation_in(item) or shared_orientation)
    if all(p is None for p in positions):
        return (), ()
    return tuple(positions), tuple(orientations)


def _orientation_in(group: Dataset) -> Orientation | None:
    plane = group.get("PlaneOrientationSequence")
    return _vector(plane[0].get("ImageOrientationPatient"), 6) if plane else None  # type: ignore[arg-type]


def _vector(value: Any, length: int) -> Any:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != length or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


# -- geometry ------------------------------------------------------------------------------------


def normal_of(orientation: Orientation) -> Vec3:
    """The slice normal: the cross product of the row and column direction cosines."""
    r, c = orientation[:3], orientation[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n)) or 1.0
    return (n[0] / norm, n[1] / norm, n[2] / norm)


def same_orientation(a: Orientation, b: Orientation) -> bool:
    """Whether two slices' row and column directions agree (within ~8 degrees)."""
    return _cos(a[:3], b[:3]) >= PARALLEL and _cos(a[3:], b[3:]) >= PARALLEL


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    na = math.sqrt(sum(v * v for v in a)) or 1.0
    nb = math.sqrt(sum(v * v for v in b)) or 1.0
    return abs(sum(x * y for x, y in zip(a, b, strict=True))) / (na * nb)


def along(position: Vec3, normal: Vec3) -> float:
    """A position projected on the slice normal (mm)."""
    return sum(p * n for p, n in zip(position, normal, strict=True))


# -- sampling ------------------------------------------------------------------------------------


def sample_evenly(positions: Sequence[float], k: int | None) -> list[int]:
    """Indices of `k` slices spread evenly over the extent of ordered `positions` (all when k is None or >= n).

    Each target point of k evenly spaced ones from the first to the last position takes the nearest slice not
    taken yet, so a gap in the series moves a sample to its neighbour instead of losing it.
    """
    n = len(positions)
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        return []
    if k == 1:
        return [n // 2]
    first, last = positions[0], positions[-1]
    taken: set[int] = set()
    for i in range(k):
        target = first + (last - first) * i / (k - 1)
        order = sorted(range(n), key=lambda j: (abs(positions[j] - target), j))
        taken.add(next(j for j in order if j not in taken))
    return sorted(taken)


def parse_slices(value: str | int | None) -> int | None:
    """`--series-slices` / MEDSEARCH_SERIES_SLICES: a positive K, or 'all' (None)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"series slices must be a positive number or 'all', not {value!r}")
    return int(text)


# -- planning ------------------------------------------------------------------------------------


def plan_series(headers: Iterable[Header], k: int | None = DEFAULT_SLICES) -> list[SeriesPlan]:
    """Group headers by SeriesInstanceUID and plan each series (in order of first appearance)."""
    groups: dict[str, list[Header]] = defaultdict(list)
    for header in headers:
        if header.series_instance_uid:
            groups[header.series_instance_uid].append(header)
    return [plan_one(uid, members, k) for uid, members in groups.items()]


def plan_one(uid: str, members: Sequence[Header], k: int | None = DEFAULT_SLICES) -> SeriesPlan:
    """One series: single images stay as they are; a volume is ordered, cleaned and sampled."""
    given = [h.key for h in members]  # single images keep the order they came in
    members = sorted(members, key=lambda h: (h.instance_number is None, h.instance_number or 0, h.key))
    originals: dict[str, str] = {}
    copies: dict[str, str] = {}
    for h in members:  # a second file of one SOP instance is a copy: it follows its original (the writer dedups)
        if h.sop_instance_uid and h.sop_instance_uid in originals:
            copies[h.key] = originals[h.sop_instance_uid]
        elif h.sop_instance_uid:
            originals[h.sop_instance_uid] = h.key
    given = [key for key in given if key not in copies]
    members = [h for h in members if h.key not in copies]
    modality = _majority([h.modality or "" for h in members]) or None
    plan = SeriesPlan(
        series_instance_uid=uid,
        study_instance_uid=_majority([h.study_instance_uid or "" for h in members]) or None,
        modality=modality,
        series_description=next((h.series_description for h in members if h.series_description), None),
        study_description=next((h.study_description for h in members if h.study_description), None),
        requested=k,
        copies=copies,
    )
    candidates = _candidates(plan, members)
    if modality not in VOLUME_MODALITIES or len(candidates) < 2:
        if modality in VOLUME_MODALITIES and len(members) == 1:
            plan.notes.append("one slice: indexed as a single image")
        plan.singles = given
        return plan
    _build_volume(plan, candidates)
    if len(plan.volume) < 2:
        plan.notes.append("no volume of two or more slices: its instances are indexed as single images")
        plan.singles, plan.volume, plan.excluded = given, [], []
        return plan
    chosen = sample_evenly([s.position if s.position is not None else i for i, s in enumerate(plan.volume)], k)
    plan.sampled = [plan.volume[i] for i in chosen]
    return plan


@dataclass(frozen=True)
class _Candidate:
    header: Header
    frame: int | None
    position: Vec3 | None
    orientation: Orientation | None


def _candidates(plan: SeriesPlan, members: Sequence[Header]) -> list[_Candidate]:
    """Every slice a series offers: single-frame instances, and the frames of multi-frame ones that have
    per-frame positions. Other multi-frame objects stay single images under today's frame policy."""
    out: list[_Candidate] = []
    for h in members:
        if h.number_of_frames > 1 and h.frame_positions:
            for i, (pos, ori) in enumerate(zip(h.frame_positions, h.frame_orientations, strict=True)):
                out.append(_Candidate(h, i + 1, pos, ori or h.orientation))
        elif h.number_of_frames > 1:
            what = "enhanced multi-frame object" if h.enhanced else "multi-frame object"
            plan.notes.append(f"{what} without per-frame positions: {h.key} indexed as one image (frame policy)")
            plan.singles.append(h.key)
        else:
            out.append(_Candidate(h, None, h.position, h.orientation))
    return out


def _build_volume(plan: SeriesPlan, candidates: list[_Candidate]) -> None:
    """Exclude what does not belong to the volume (with a reason), then order the rest along the normal."""
    keep: list[_Candidate] = []
    modality = plan.modality
    sizes = _majority([(c.header.rows, c.header.columns) for c in candidates if "LOCALIZER" not in c.header.image_type])
    for c in candidates:
        h = c.header
        if "LOCALIZER" in h.image_type:
            plan.excluded.append((_slice(c, None), LOCALIZER))
        elif (h.modality or None) != modality:
            plan.excluded.append((_slice(c, None), OTHER_MODALITY.format(found=h.modality, main=modality)))
        elif (h.rows, h.columns) != sizes:
            found, usual = f"{h.rows}x{h.columns}", f"{sizes[0]}x{sizes[1]}" if sizes else "?"
            plan.excluded.append((_slice(c, None), OTHER_SIZE.format(found=found, main=usual)))
        else:
            keep.append(c)
    oriented = [c for c in keep if c.orientation is not None and c.position is not None]
    if len(oriented) < 2:  # no usable geometry: InstanceNumber order (then file order), no positions
        if keep and len(oriented) < len(keep):
            plan.notes.append("no slice geometry: ordered by InstanceNumber")
        plan.volume = [_slice(c, None) for c in keep]
        return
    main = _main_orientation([c.orientation for c in oriented if c.orientation is not None])
    normal = normal_of(main)
    placed: list[tuple[float, _Candidate]] = []
    for c in keep:
        if c.position is None or c.orientation is None:
            plan.excluded.append((_slice(c, None), NO_POSITION))
        elif not same_orientation(c.orientation, main):
            plan.excluded.append((_slice(c, along(c.position, normal)), OTHER_ORIENTATION))
        else:
            placed.append((along(c.position, normal), c))
    placed.sort(key=lambda pc: (pc[0], pc[1].header.instance_number or 0, pc[1].header.key, pc[1].frame or 0))
    for position, c in placed:
        if plan.volume and abs(position - (plan.volume[-1].position or 0.0)) < DUPLICATE_MM:
            plan.excluded.append((_slice(c, position), DUPLICATE.format(position=position)))
            continue
        plan.volume.append(_slice(c, position))
    _note_gaps(plan)


def _note_gaps(plan: SeriesPlan) -> None:
    positions = [s.position for s in plan.volume if s.position is not None]
    steps = sorted(b - a for a, b in itertools.pairwise(positions))
    if len(steps) < 2:
        return
    usual = steps[len(steps) // 2]
    for a, b in itertools.pairwise(positions):
        if usual > 0 and b - a > GAP_FACTOR * usual:
            missing = round((b - a) / usual) - 1
            plan.notes.append(f"gap of {b - a:.2f} mm between {a:.2f} and {b:.2f} ({missing} missing slice(s)?)")


def _main_orientation(orientations: list[Orientation]) -> Orientation:
    """The orientation most slices share (ties: the first met)."""
    best, best_count = orientations[0], 0
    for candidate in orientations:
        count = sum(1 for o in orientations if same_orientation(o, candidate))
        if count > best_count:
            best, best_count = candidate, count
    return best


def _majority(values: Sequence[Any]) -> Any:
    """The most common value (ties: the first met); None for no values."""
    if not values:
        return None
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def _slice(c: _Candidate, position: float | None) -> Slice:
    return Slice(c.header.key, c.frame, position, c.header.instance_number)
