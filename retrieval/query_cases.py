"""Query by a case: an indexed series or study (its stored vectors), or uploaded files / one zip of a series."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import BadQueryError, DecodeError, NotFoundError, TooLargeError
from retrieval.imaging.series import parse_slices, plan_series, read_header
from retrieval.imaging.types import DecodeLimits, FramePolicy
from retrieval.prepare import PreparedImage, prepare_bytes
from retrieval.privacy import hash_patient_id
from retrieval.query import QueryVector, rows_and_vectors
from retrieval.store.cases import unit_mean

MAX_CASE_FILES = 2000  # files (or zip members) in one uploaded case


def embed_case(collection: Collection, level: Literal["series", "study"], uid: str) -> QueryVector:
    """An indexed series or study as the query: its stored case vector, its slices (for maxsim), and its own
    images excluded from the results (no model needed)."""
    uid = uid.strip()
    found = collection.catalog.cases.find(level, uid)
    if found is None:
        what = "SeriesInstanceUID" if level == "series" else "StudyInstanceUID"
        raise NotFoundError(f"no indexed {level} with UID {uid!r}: give the {what} of an indexed {level}")
    _, vector = found
    ids = collection.catalog.cases.member_ids(level, [uid])[uid]
    rows, vectors = rows_and_vectors(collection, ids)
    slices = np.stack([vectors[i] for i in ids if i in vectors]).astype(np.float32)
    first = rows[ids[0]] if ids and ids[0] in rows else None
    return QueryVector(
        vector=vector,
        kind=level,
        patient_hash=first.patient_hash if first else None,
        study_uid=first.study_instance_uid if first else None,
        exclude_ids=frozenset(ids),
        slices=slices,
    )


def case_files(files: Sequence[bytes]) -> list[bytes]:
    """The files of an uploaded case: the files themselves, or the members of one zip (folders and hidden
    files skipped), at most MAX_CASE_FILES."""
    if len(files) == 1 and zipfile.is_zipfile(io.BytesIO(files[0])):
        try:
            with zipfile.ZipFile(io.BytesIO(files[0])) as archive:
                names = [
                    info
                    for info in archive.infolist()
                    if not info.is_dir() and not info.filename.rsplit("/", 1)[-1].startswith(".")
                ]
                if len(names) > MAX_CASE_FILES:
                    raise TooLargeError(f"the zip holds more than {MAX_CASE_FILES} files: send one series")
                files = [archive.read(info) for info in names]
        except zipfile.BadZipFile as exc:
            raise BadQueryError(f"the uploaded zip cannot be read: {exc}") from exc
    if not files:
        raise BadQueryError("the case is empty: send the DICOM files of a series, or one zip of them")
    if len(files) > MAX_CASE_FILES:
        raise TooLargeError(f"more than {MAX_CASE_FILES} files in one case: send one series")
    return list(files)


def sample_case(files: Sequence[bytes], k: int | None) -> list[tuple[bytes, FramePolicy]]:
    """The files (and frames) of an uploaded case that are embedded: the slices an indexed series keeps (K per
    volume, evenly over its extent; localizers and other left-outs dropped; copies once), single images and
    files that are no DICOM series as they are (their middle frame)."""
    headers = [read_header(data, str(number)) for number, data in enumerate(files)]
    chosen: dict[str, list[int]] = {}
    planned: set[str] = set()
    for plan in plan_series([h for h in headers if h is not None], k):
        planned |= {s.key for s in plan.volume} | {s.key for s, _ in plan.excluded} | set(plan.copies)
        planned |= set(plan.singles)
        for piece in plan.sampled:
            chosen.setdefault(piece.key, []).extend([piece.frame] if piece.frame is not None else [])
        for key in plan.singles:
            chosen.setdefault(key, [])
    out: list[tuple[bytes, FramePolicy]] = []
    for number, data in enumerate(files):
        key = str(number)
        if key in chosen:
            frames = chosen[key]
            out.append((data, tuple(sorted(frames)) if frames else "middle"))
        elif key not in planned:
            out.append((data, "middle"))
    return out


def embed_upload(collection: Collection, files: Sequence[bytes]) -> QueryVector:
    """Uploaded files of a case, decoded and embedded as the indexer would (a file that is no image is refused,
    naming it); the vector is made as an indexed study's: per series the mean of its slices, then the mean of
    the series (one series: exactly a series vector)."""
    encoder = collection.load_encoder()
    settings = collection.settings
    limits = DecodeLimits.of(settings)
    prepared: list[PreparedImage] = []
    sampled = sample_case(case_files(files), parse_slices(settings.series_slices))
    for number, (data, frames) in enumerate(sampled, start=1):
        try:
            prepared.append(
                prepare_bytes(
                    data,
                    encoder.image_processor,
                    frames=frames,
                    limits=limits,
                    ct_window=settings.ct_window,
                    ct_channels=settings.ct_channels,
                )
            )
        except DecodeError as exc:  # the same error (and status) as for one uploaded image, naming the file
            raise type(exc)(f"file {number} of the case: {exc}") from exc
    pixels = np.concatenate([p.pixel_values for p in prepared])
    slices: npt.NDArray[np.float32] = collection.run_model(lambda: encoder.encode_pixel_values(pixels))
    slices = np.asarray(slices, np.float32)
    groups: dict[str, list[int]] = {}
    row = 0
    for number, item in enumerate(prepared):  # a multi-frame file gives a row per sampled frame
        count = len(item.pixel_values)
        groups.setdefault(item.meta.series_instance_uid or f"file:{number}", []).extend(range(row, row + count))
        row += count
    vector = unit_mean(np.stack([unit_mean(slices[rows]) for rows in groups.values()]))
    meta = prepared[0].meta
    return QueryVector(
        vector=vector,
        kind="case",
        patient_hash=hash_patient_id(meta.patient_id, collection.salt),
        study_uid=meta.study_instance_uid,
        slices=slices,
    )
