"""Series and study vectors (the `cases` table): recomputed from the stored slice vectors, read by the case indexes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from retrieval.store.models import Case, Image, Vector
from retrieval.store.sql import IdArray, dialect_insert, in_chunks, stream_vectors, unpack_vectors

CaseLevel = Literal["series", "study"]
CASE_LEVELS: tuple[CaseLevel, ...] = ("series", "study")
UID_CHUNK = 200  # series (or studies) recomputed per statement


@dataclass(frozen=True)
class CaseRow:
    """What a hit at series or study level says about its case (the vector stays in the store)."""

    id: int
    level: str
    uid: str
    study_uid: str | None
    images: int
    series: int


def unit_mean(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The normalised mean of unit vectors (a zero mean stays zero): a series' or a study's vector."""
    mean: npt.NDArray[np.float32] = np.asarray(vectors, np.float32).mean(axis=0, dtype=np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / np.float32(norm) if norm > 0 else mean


def refresh_cases(session: Session, series_uids: Iterable[str | None] | None = None) -> int:
    """Recompute the given series (None: every series) and their studies in the caller's transaction, from the
    stored slice vectors: a series left without images loses its row, and so does a study left without series.
    Returns the number of case rows written or removed. Images without a SeriesInstanceUID (raster files) belong
    to no case; a series without a StudyInstanceUID belongs to no study."""
    if series_uids is None:
        found = session.scalars(select(Image.series_instance_uid).where(Image.series_instance_uid.is_not(None)))
        known = session.scalars(select(Case.uid).where(Case.level == "series"))
        uids = sorted({str(uid) for uid in found if uid} | set(known))
    else:
        uids = sorted({uid for uid in series_uids if uid})
    if not uids:
        return 0
    dialect = session.get_bind().dialect.name
    revision = int(session.scalar(select(func.max(Case.revision))) or 0) + 1
    studies: set[str] = set()
    changed = 0
    for chunk in in_chunks(uids, UID_CHUNK):
        rows = session.execute(
            select(Image.series_instance_uid, Image.study_instance_uid, Vector.vector)
            .join(Vector, Vector.image_id == Image.id)
            .where(Image.series_instance_uid.in_(chunk))
            .order_by(Image.id)
        ).all()
        blobs: dict[str, list[bytes]] = {}
        study_of: dict[str, str] = {}
        for series, study, blob in rows:
            blobs.setdefault(str(series), []).append(blob)
            if study and str(series) not in study_of:  # a series is in the study of its first indexed image
                study_of[str(series)] = study
        before = session.execute(select(Case.study_uid).where(Case.level == "series", Case.uid.in_(chunk)))
        studies.update(uid for uid in before.scalars() if uid)  # a series that moved or went: its old study too
        gone = [uid for uid in chunk if uid not in blobs]
        if gone:
            changed += _delete(session, "series", gone)
        values = []
        for series, parts in blobs.items():
            vectors = np.frombuffer(b"".join(parts), np.float32).reshape(len(parts), -1)
            values.append(_row("series", series, study_of.get(series), len(parts), 1, unit_mean(vectors), revision))
        studies.update(study_of.values())
        changed += _upsert(session, dialect, values)
    return changed + _refresh_studies(session, dialect, sorted(studies), revision)


def _refresh_studies(session: Session, dialect: str, studies: Sequence[str], revision: int) -> int:
    """Each study's vector from its series' vectors, every series counting once."""
    changed = 0
    for chunk in in_chunks(studies, UID_CHUNK):
        rows = session.execute(
            select(Case.study_uid, Case.images, Case.vector)
            .where(Case.level == "series", Case.study_uid.in_(chunk))
            .order_by(Case.id)
        ).all()
        members: dict[str, list[tuple[int, bytes]]] = {}
        for study, images, blob in rows:
            members.setdefault(str(study), []).append((images, blob))
        gone = [uid for uid in chunk if uid not in members]
        if gone:
            changed += _delete(session, "study", gone)
        values = []
        for study, series in members.items():
            vectors = np.frombuffer(b"".join(b for _, b in series), np.float32).reshape(len(series), -1)
            images = sum(n for n, _ in series)
            values.append(_row("study", study, study, images, len(series), unit_mean(vectors), revision))
        changed += _upsert(session, dialect, values)
    return changed


def _delete(session: Session, level: str, uids: list[str]) -> int:
    session.execute(delete(Case).where(Case.level == level, Case.uid.in_(uids)))
    return len(uids)


def _row(
    level: str, uid: str, study: str | None, images: int, series: int, vector: npt.NDArray[np.float32], revision: int
) -> dict[str, Any]:
    return {
        "level": level,
        "uid": uid,
        "study_uid": study,
        "images": images,
        "series": series,
        "vector": np.asarray(vector, np.float32).tobytes(),
        "revision": revision,
    }


def _upsert(session: Session, dialect: str, values: list[dict[str, Any]]) -> int:
    """Insert or update case rows by (level, uid): the id of an existing case never changes."""
    if not values:
        return 0
    stmt = dialect_insert(dialect, Case)
    keep = ("study_uid", "images", "series", "vector", "revision")
    stmt = stmt.on_conflict_do_update(index_elements=["level", "uid"], set_={c: stmt.excluded[c] for c in keep})
    session.execute(stmt, sorted(values, key=lambda v: (v["level"], v["uid"])))
    return len(values)


class CaseStore:
    """Reads of the cases table: the vectors the case indexes derive from, and what hits and queries need."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def refresh(self, series_uids: Iterable[str | None] | None = None) -> int:
        """`refresh_cases` in a transaction of its own (None: every series, e.g. after a bulk change)."""
        with self.sessions() as session, session.begin():
            return refresh_cases(session, series_uids)

    def all_ids(self, level: CaseLevel) -> IdArray:
        """Ids of every case of the level, sorted."""
        with self.sessions() as session:
            found = session.scalars(select(Case.id).where(Case.level == level).order_by(Case.id))
            return np.asarray(list(found), dtype=np.int64)

    def iter_vectors(
        self, level: CaseLevel, ids: Iterable[int] | None = None, chunk: int = 4096
    ) -> Iterator[tuple[IdArray, npt.NDArray[np.float32]]]:
        """Case vectors in chunks: every one of the level in id order, or the given ids."""
        with self.sessions() as session:
            query = select(Case.id, Case.vector).where(Case.level == level)
            if ids is None:
                yield from stream_vectors(session, query.order_by(Case.id), chunk)
                return
            for part_ids in in_chunks(list(ids), chunk):
                yield unpack_vectors(list(session.execute(query.where(Case.id.in_(part_ids)))))

    def changed_since(self, level: CaseLevel, revision: int) -> tuple[IdArray, int]:
        """Ids of the level's cases changed after `revision`, and the newest revision of any case."""
        with self.sessions() as session:
            newest = int(session.scalar(select(func.max(Case.revision))) or 0)
            query = select(Case.id).where(Case.level == level, Case.revision > revision)
            return np.asarray(list(session.scalars(query)), dtype=np.int64), newest

    def rows(self, ids: Sequence[int]) -> dict[int, CaseRow]:
        """Case rows by id (missing ones left out)."""
        found: dict[int, CaseRow] = {}
        with self.sessions() as session:
            for part in in_chunks(list(ids), 500):
                query = select(Case.id, Case.level, Case.uid, Case.study_uid, Case.images, Case.series)
                for row in session.execute(query.where(Case.id.in_(part))):
                    found[int(row[0])] = CaseRow(int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]))
        return found

    def find(self, level: CaseLevel, uid: str) -> tuple[CaseRow, npt.NDArray[np.float32]] | None:
        """A case and its vector by level and UID, or None when no indexed image belongs to it."""
        with self.sessions() as session:
            query = select(Case.id, Case.level, Case.uid, Case.study_uid, Case.images, Case.series, Case.vector)
            row = session.execute(query.where(Case.level == level, Case.uid == uid)).one_or_none()
        if row is None:
            return None
        case = CaseRow(int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]))
        return case, np.frombuffer(row[6], np.float32).copy()

    def find_many(self, level: CaseLevel, uids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Case vectors by UID (cases that do not exist are left out)."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self.sessions() as session:
            for part in in_chunks(sorted(set(uids)), 500):
                query = select(Case.uid, Case.vector).where(Case.level == level, Case.uid.in_(part))
                for uid, blob in session.execute(query):
                    found[str(uid)] = np.frombuffer(blob, np.float32).copy()
        return found

    def member_ids(self, level: CaseLevel, uids: Sequence[str]) -> dict[str, list[int]]:
        """Image ids of each case (its indexed slices), by id; only images that have a vector."""
        column = Image.series_instance_uid if level == "series" else Image.study_instance_uid
        found: dict[str, list[int]] = {uid: [] for uid in uids}
        with self.sessions() as session:
            for part in in_chunks(list(uids), 500):
                query = select(column, Image.id).join(Vector, Vector.image_id == Image.id).where(column.in_(part))
                for uid, image_id in session.execute(query.order_by(Image.id)):
                    found[str(uid)].append(int(image_id))
        return found

    def ids_of_images(self, level: CaseLevel, image_ids: Iterable[int]) -> set[int]:
        """Ids of the level's cases that hold any of these images."""
        column = Image.series_instance_uid if level == "series" else Image.study_instance_uid
        found: set[int] = set()
        with self.sessions() as session:
            for part in in_chunks(sorted(set(image_ids)), 500):
                uids = select(column).where(Image.id.in_(part))
                found.update(session.scalars(select(Case.id).where(Case.level == level, Case.uid.in_(uids))))
        return found

    def counts(self) -> dict[str, int]:
        """Cases per level."""
        with self.sessions() as session:
            rows = session.execute(select(Case.level, func.count()).group_by(Case.level))
            return {str(level): int(n) for level, n in rows}
