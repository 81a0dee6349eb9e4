"""Queries on the metadata store: batched writes, lookups, filters, stats and removal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from retrieval.errors import ModelMismatchError, NotFoundError
from retrieval.store.cases import CaseStore, refresh_cases
from retrieval.store.db import make_engine, session_factory
from retrieval.store.findings import FindingsStore
from retrieval.store.fingerprint import ModelFingerprint
from retrieval.store.models import (
    Failure,
    Image,
    IndexInfo,
    Source,
    Vector,
    is_image_id,
    utcnow,
)
from retrieval.store.reads import TAG_RULE, QueryReads
from retrieval.store.report_search import report_condition
from retrieval.store.reports import ReportsStore
from retrieval.store.series_plans import SeriesStore
from retrieval.store.sql import IdArray as IdArray  # the store's id arrays (imported from here by indexes)
from retrieval.store.sql import dialect_insert, in_chunks, stream_vectors, unpack_vectors
from retrieval.store.stats import CatalogStats


@dataclass
class Filters:
    """Candidate restrictions applied in SQL before the vector search."""

    modality: list[str] = field(default_factory=list)
    body_part: list[str] = field(default_factory=list)
    date_from: date | None = None
    date_to: date | None = None
    label: str | None = None
    exclude_patient_hash: str | None = None
    exclude_study_uid: str | None = None
    tags: list[str] = field(default_factory=list)  # images having each tag (score >= the tag's threshold)
    probe: str | None = None  # images whose probability under this applied probe is >= min_prob
    min_prob: float | None = None  # 0.5 when not given
    report: str | None = None  # images whose study's latest report matches these words (report_search syntax)

    def is_empty(self) -> bool:
        """True when nothing restricts the candidates."""
        return not (
            self.modality
            or self.body_part
            or self.date_from
            or self.date_to
            or self.label
            or self.exclude_patient_hash
            or self.exclude_study_uid
            or self.tags
            or self.probe
            or self.report
        )


@dataclass
class SourceRecord:
    """A processed source to remember (so a re-run skips it)."""

    uri: str
    size: int
    mtime: float
    status: str
    images: int = 0
    duplicate_of: str | None = None  # every instance of it was already indexed from that source
    sop_class: str | None = None  # status "skipped": the non-image object's SOP class name
    series_instance_uid: str | None = None  # planned with its series (re-planned with it on another K)
    reason: str | None = None  # status "excluded": why it is not part of its series' volume


@dataclass
class FailureRecord:
    """A source that failed, with its error code and reason."""

    uri: str
    code: str
    reason: str


class Catalog:
    """All reads and writes of the metadata store go through here."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._fingerprint: ModelFingerprint | None = None
        self.findings = FindingsStore(sessions)  # tags, probes and their scores: same database and sessions
        self.reads = QueryReads(sessions.kw["bind"])  # a search's own reads: plain SQL, no ORM
        self.reports = ReportsStore(sessions, self.reads)  # de-identified reports and their full-text index
        self.series = SeriesStore(sessions)  # series plans: the K sampled per volume, what was left out
        self.cases = CaseStore(sessions)  # series and study vectors, derived from the stored slice vectors

    @classmethod
    @contextmanager
    def open(cls, url: str) -> Iterator[Catalog]:
        """A catalog on its own engine for `url` (schema migrated), disposed on exit: for code that runs where no
        collection is open (an encoder calibrating on a Ray worker)."""
        engine = make_engine(url)
        try:
            yield cls(session_factory(engine))
        finally:
            engine.dispose()

    # -- model fingerprint -------------------------------------------------------------
    def fingerprint(self) -> ModelFingerprint | None:
        """The fingerprint recorded with this collection, if any (cached once recorded: it never changes
        while images exist)."""
        if self._fingerprint is not None:
            return self._fingerprint
        with self.sessions() as session:
            row = session.get(IndexInfo, "model")
            self._fingerprint = ModelFingerprint(**json.loads(row.value)) if row else None
            return self._fingerprint

    def check_or_record_fingerprint(self, current: ModelFingerprint) -> None:
        """Record the model on first use; refuse a different one afterwards, saying how to fix it."""
        with self.sessions() as session, session.begin():
            # insert-if-absent, then read: two processes opening a shared database at once agree on one model
            stored = ModelFingerprint(**json.loads(self._record_once(session, "model", json.dumps(current.__dict__))))
            if stored.key != current.key:
                has_images = session.scalar(select(func.count()).select_from(Image)) or 0
                if has_images == 0:
                    session.execute(
                        update(IndexInfo).where(IndexInfo.key == "model").values(value=json.dumps(current.__dict__))
                    )
                    self._fingerprint = current
                    return
                raise ModelMismatchError(
                    f"this index was built with model {stored.model_id!r} (fingerprint {stored.key}, "
                    f"width {stored.width}) but the model in use is {current.model_id!r} (fingerprint "
                    f"{current.key}, width {current.width}). Set MEDSEARCH_MODEL to the model the index was "
                    "built with, or use another MEDSEARCH_DATA_DIR for the new model and re-index there."
                )
            self._fingerprint = stored

    def check_or_record_setting(self, key: str, current: str, before: str) -> str:
        """The collection's value of a preprocessing setting (recorded on first use; `before` for a collection that
        holds images from before it was recorded; replaced while it holds none). Returns the value in force."""
        with self.sessions() as session, session.begin():
            has_images = (session.scalar(select(func.count()).select_from(Image)) or 0) > 0
            stored = self._record_once(session, key, before if has_images else current)
            if stored != current and not has_images:
                session.execute(update(IndexInfo).where(IndexInfo.key == key).values(value=current))
                return current
            return stored

    def record_once(self, key: str, value: str) -> str:
        """Store `value` under `key` unless a value is there already; the stored value either way."""
        with self.sessions() as session, session.begin():
            return self._record_once(session, key, value)

    @staticmethod
    def _record_once(session: Session, key: str, value: str) -> str:
        dialect = session.get_bind().dialect.name
        session.execute(dialect_insert(dialect, IndexInfo).values(key=key, value=value).on_conflict_do_nothing())
        stored = session.scalar(select(IndexInfo.value).where(IndexInfo.key == key))
        assert stored is not None
        return stored

    # -- writes -----------------------------------------------------------------------
    def write_batch(
        self,
        images: Sequence[tuple[Image, npt.NDArray[np.float32]]],
        sources: Sequence[SourceRecord] = (),
        failures: Sequence[FailureRecord] = (),
    ) -> list[int | None]:
        """One transaction: image rows, their vectors, processed sources and failures.

        Returns the new id of each image, in order; None where another writer sharing the database stored
        that instance first (a duplicate, not an error). Sources and failures are upserts, so writers on
        several machines indexing overlapping inputs never fail a batch.
        """
        with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            # Every writer takes row locks in one order (images, sources, failures; each sorted by key), so two
            # PostgreSQL writers meeting on the same keys wait for each other instead of deadlocking.
            ids = _insert_images(session, dialect, images)
            # the series that grew (and their studies) get their vectors in the same transaction: never stale
            refresh_cases(session, {image.series_instance_uid for (image, _), i in zip(images, ids, strict=True) if i})
            for src in sorted(sources, key=lambda s: s.uri):
                _upsert_source(session, dialect, src)
            for fail in sorted(failures, key=lambda f: f.uri):
                _upsert_failure(session, dialect, fail)
            done = ("indexed", "skipped", "report", "sampled_out", "excluded")
            ok_uris = [s.uri for s in sources if s.status in done]
            if ok_uris:
                session.execute(delete(Failure).where(Failure.source_uri.in_(ok_uris)))
        return ids

    def replace_failures(self, forget: Sequence[str], record: Sequence[FailureRecord]) -> None:
        """One transaction: drop the failures of `forget` (URIs), then record `record` (upserts)."""
        with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            for chunk in in_chunks(sorted(set(forget)), 500):
                session.execute(delete(Failure).where(Failure.source_uri.in_(chunk)))
            for fail in sorted(record, key=lambda f: f.uri):
                _upsert_failure(session, dialect, fail)

    def apply_labels(
        self, by_uid: Mapping[str, tuple[str | None, str | None]], by_uri: Mapping[str, tuple[str | None, str | None]]
    ) -> int:
        """Set label/report on already indexed images, matched by SOP Instance UID or source URI."""
        changed = 0
        with self.sessions() as session, session.begin():
            for column, mapping in ((Image.sop_instance_uid, by_uid), (Image.source_uri, by_uri)):
                for key, (label, report) in mapping.items():
                    result = session.execute(update(Image).where(column == key).values(label=label, report=report))
                    changed += int(getattr(result, "rowcount", 0) or 0)
        return changed

    # -- lookups ------------------------------------------------------------------------
    def processed_sources(self, uris: Sequence[str]) -> dict[str, tuple[int, float]]:
        """(size, mtime) of the given sources that were fully processed before."""
        out: dict[str, tuple[int, float]] = {}
        with self.sessions() as session:
            for chunk in in_chunks(list(uris), 500):
                for uri, size, mtime in session.execute(
                    select(Source.uri, Source.size, Source.mtime).where(Source.uri.in_(chunk))
                ):
                    out[uri] = (size, mtime)
        return out

    def indexed_sources(self, uris: Sequence[str]) -> set[str]:
        """Which of the given sources were indexed (not failed) before."""
        found: set[str] = set()
        with self.sessions() as session:
            for chunk in in_chunks(list(uris), 500):
                query = select(Source.uri).where(Source.uri.in_(chunk), Source.status == "indexed")
                found.update(session.scalars(query))
        return found

    def images_by_source(self, uris: Sequence[str]) -> list[Image]:
        """Image rows whose source URI is exactly one of the given ones."""
        with self.sessions() as session:
            rows: list[Image] = []
            for chunk in in_chunks(list(uris), 500):
                rows.extend(session.scalars(select(Image).where(Image.source_uri.in_(chunk))))
            return rows

    def sources_of_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """The source URI each of these instance keys was indexed from (keys not indexed are absent)."""
        found: dict[str, str] = {}
        with self.sessions() as session:
            for chunk in in_chunks(list(keys), 500):
                query = select(Image.instance_key, Image.source_uri).where(Image.instance_key.in_(chunk))
                rows = session.execute(query)
                found.update({str(key): str(uri) for key, uri in rows})
        return found

    def images(self, ids: Sequence[int]) -> dict[int, Image]:
        """Image rows by id (ids no store can hold are simply absent)."""
        with self.sessions() as session:
            rows: dict[int, Image] = {}
            for chunk in in_chunks([i for i in ids if is_image_id(i)], 500):
                rows.update({img.id: img for img in session.scalars(select(Image).where(Image.id.in_(chunk)))})
            return rows

    def image(self, image_id: int) -> Image:
        """One image row by id; NotFoundError (404 at the API) when it is not indexed."""
        image = self.images([image_id]).get(image_id)
        if image is None:
            raise NotFoundError(f"no indexed image with id {image_id}")
        return image

    def vector(self, image_id: int) -> npt.NDArray[np.float32] | None:
        """The stored vector of one image."""
        return self.vectors([image_id]).get(image_id)

    def vectors(self, ids: Iterable[int]) -> dict[int, npt.NDArray[np.float32]]:
        """The stored (unit) vectors of these images, by id; ids without a vector are absent."""
        found: dict[int, npt.NDArray[np.float32]] = {}
        for part_ids, vecs in self.iter_vectors(ids):
            found.update(zip(part_ids.tolist(), vecs, strict=True))
        return found

    def query_row(self, image_id: int) -> tuple[npt.NDArray[np.float32], str | None, str | None] | None:
        """(stored vector, patient hash, Study Instance UID) of one image, in one round trip (search by id)."""
        return self.reads.query_row(image_id)

    def query_meta(self, image_id: int) -> tuple[str | None, str | None] | None:
        """(patient hash, Study Instance UID) of one image, or None when it is not indexed (search by id)."""
        return self.reads.query_meta(image_id)

    def hit_rows(self, ids: Sequence[int]) -> dict[int, Image]:
        """Image rows of search hits by id (detached objects read without the ORM; absent ids are left out)."""
        return self.reads.images(ids)

    def search_rows(self, ids: Sequence[int]) -> tuple[dict[int, Image], bool, bool]:
        """`hit_rows`, and whether the collection holds any findings and any stored report (read in the same
        statement, so a search skips those reads when there are none)."""
        return self.reads.hit_rows(ids)

    def vector_for_input(
        self, pixel_hash: str, content_hash: str, frame: int, window: str | None
    ) -> npt.NDArray[np.float32] | None:
        """The stored vector of an image whose encoder input was exactly these pixels, if one is indexed.

        Found by `pixel_hash`, or, for images indexed before it was recorded, by the same file bytes
        (`content_hash`), frame and window, which decode to the same pixels. Both lookups use an index."""
        with self.sessions() as session:
            blob = session.scalar(
                select(Vector.vector)
                .join(Image, Image.id == Vector.image_id)
                .where(Image.pixel_hash == pixel_hash)
                .limit(1)
            )
            if blob is None:
                blob = session.scalar(
                    select(Vector.vector)
                    .join(Image, Image.id == Vector.image_id)
                    .where(
                        Image.content_hash == content_hash,
                        Image.pixel_hash.is_(None),
                        Image.frame == frame,
                        Image.window.is_(None) if window is None else Image.window == window,
                    )
                    .limit(1)
                )
        return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()

    def vectors_by_source(self, uris: Sequence[str]) -> list[tuple[str, str | None, npt.NDArray[np.float32]]]:
        """(source URI, patient hash, stored vector) of every image indexed from these sources."""
        found: list[tuple[str, str | None, npt.NDArray[np.float32]]] = []
        with self.sessions() as session:
            for chunk in in_chunks(list(uris), 500):
                rows = session.execute(
                    select(Image.source_uri, Image.patient_hash, Vector.vector)
                    .join(Vector, Vector.image_id == Image.id)
                    .where(Image.source_uri.in_(chunk))
                )
                for uri, patient, blob in rows:
                    found.append((uri, patient, np.frombuffer(blob, dtype=np.float32).copy()))
        return found

    def vectors_by_study(
        self, study_uids: Sequence[str]
    ) -> list[tuple[str, int, str | None, str, npt.NDArray[np.float32]]]:
        """(StudyInstanceUID, image id, patient hash, source URI, stored vector) of every image of these studies,
        in id order."""
        found: list[tuple[str, int, str | None, str, npt.NDArray[np.float32]]] = []
        with self.sessions() as session:
            for chunk in in_chunks(list(dict.fromkeys(study_uids)), 500):
                rows = session.execute(
                    select(Image.study_instance_uid, Image.id, Image.patient_hash, Image.source_uri, Vector.vector)
                    .join(Vector, Vector.image_id == Image.id)
                    .where(Image.study_instance_uid.in_(chunk))
                    .order_by(Image.id)
                )
                for study, image_id, patient, uri, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32).copy()
                    found.append((str(study), int(image_id), patient, str(uri), vector))
        found.sort(key=lambda row: row[1])
        return found

    def frame_refs(self) -> list[tuple[str, int]]:
        """(source URI, frame) of every image, in id order: where each indexed frame can be read again."""
        with self.sessions() as session:
            rows = session.execute(select(Image.source_uri, Image.frame).order_by(Image.id))
            return [(str(uri), int(frame)) for uri, frame in rows]

    def change_marker(self) -> tuple[int, int]:
        """(image count, highest image id): cheap, and it changes whenever images are added or removed.

        Images and their vectors are written in one transaction, so the images table (narrow indexes) answers
        for both; counting the vectors table would walk every stored vector."""
        with self.sessions() as session:
            count, top = session.execute(select(func.count(Image.id), func.max(Image.id))).one()
        return int(count or 0), int(top or 0)

    def all_ids(self) -> IdArray:
        """Ids of every image that has a vector, sorted."""
        with self.sessions() as session:
            ids = list(session.scalars(select(Vector.image_id).order_by(Vector.image_id)))
        return np.asarray(ids, dtype=np.int64)

    def iter_vectors(
        self, ids: Iterable[int] | None = None, chunk: int = 4096
    ) -> Iterator[tuple[IdArray, npt.NDArray[np.float32]]]:
        """Stored vectors in chunks: all of them in id order, or the given ids. The one reader of stored vectors:
        all of them stream as plain rows (no ORM objects) into one buffer per chunk, so memory stays at about two
        chunks whatever the collection's size."""
        with self.sessions() as session:
            if ids is None:
                yield from stream_vectors(
                    session, select(Vector.image_id, Vector.vector).order_by(Vector.image_id), chunk
                )
                return
            for part_ids in in_chunks([i for i in ids if is_image_id(i)], chunk):
                rows = session.execute(select(Vector.image_id, Vector.vector).where(Vector.image_id.in_(part_ids)))
                yield unpack_vectors(list(rows))

    def candidate_ids(self, filters: Filters) -> IdArray | None:
        """Ids matching the filters, or None when nothing is filtered (one plain SQL statement)."""
        if filters.is_empty():
            return None
        where = _conditions(filters)
        if filters.report:
            where.append(report_condition(self.reads.dialect, filters.report))
        return self.reads.candidate_ids(where)

    def case_candidates(self, level: Literal["series", "study"], filters: Filters) -> IdArray | None:
        """Ids of the level's cases holding any image the filters admit (any image matching is enough), or None
        when nothing is filtered (one plain SQL statement, the same conditions as `candidate_ids`)."""
        if filters.is_empty():
            return None
        where = _conditions(filters)
        if filters.report:
            where.append(report_condition(self.reads.dialect, filters.report))
        return self.reads.case_candidate_ids(level, where)

    # -- stats and removal -----------------------------------------------------------------
    def stats(self) -> CatalogStats:
        """Counts of images, vectors, sources, failures; images by modality and by encoder; failures by code;
        slices that series planning kept from the encoder."""
        skipped, excluded = self.series.saved()
        with self.sessions() as session:

            def count(model: type) -> int:
                return int(session.scalar(select(func.count()).select_from(model)) or 0)

            by_modality: dict[str, int] = {
                str(m): int(n)
                for m, n in session.execute(
                    select(func.coalesce(Image.modality, "(none)"), func.count()).group_by(Image.modality)
                ).all()
            }
            by_code = {
                str(c): int(n) for c, n in session.execute(select(Failure.code, func.count()).group_by(Failure.code))
            }
            by_encoder = {
                str(e): int(n)
                for e, n in session.execute(
                    select(func.coalesce(Image.encoded_by, "unrecorded"), func.count()).group_by(Image.encoded_by)
                )
            }
            not_images = {
                str(c): int(n)
                for c, n in session.execute(
                    select(func.coalesce(Source.sop_class, "(unrecorded)"), func.count())
                    .where(Source.status == "skipped")
                    .group_by(Source.sop_class)
                )
            }
            studies = int(session.scalar(select(func.count(func.distinct(Image.study_instance_uid)))) or 0)
            series = int(session.scalar(select(func.count(func.distinct(Image.series_instance_uid)))) or 0)
            return {
                "images": count(Image),
                "vectors": count(Vector),
                "series": series,
                "studies": studies,
                "sources": count(Source),
                "failures": count(Failure),
                "by_modality": by_modality,
                "failures_by_code": by_code,
                "by_encoder": by_encoder,
                "not_images": sum(not_images.values()),
                "not_images_by_class": not_images,
                **self.reports.counts(),  # type: ignore[typeddict-item]
                "slices_skipped_by_sampling": skipped,
                "encoder_calls_saved": skipped + excluded,
            }

    def failures(self, limit: int = 1000) -> list[Failure]:
        """Recorded failures, newest first."""
        with self.sessions() as session:
            return list(session.scalars(select(Failure).order_by(Failure.recorded_at.desc()).limit(limit)))

    def ids_by_sop_uid(self, uid: str) -> list[int]:
        """Ids of the images (frames) of one SOP Instance UID, sorted."""
        with self.sessions() as session:
            return sorted(session.scalars(select(Image.id).where(Image.sop_instance_uid == uid)))

    def dropped(self, limit: int = 1000) -> list[Source]:
        """Sources processed but deliberately not indexed, newest first: non-image objects (with their SOP class),
        whole copies of an instance already indexed (with the source they repeat) and slices left out of their
        series' volume (with the reason; slices skipped by sampling are counted, not listed)."""
        kept_out = or_(Source.status.in_(("skipped", "excluded")), Source.duplicate_of.is_not(None))
        query = select(Source).where(kept_out)
        with self.sessions() as session:
            return list(session.scalars(query.order_by(Source.processed_at.desc(), Source.id.desc()).limit(limit)))

    def find_ids(
        self, *, ids: Sequence[int] = (), source_prefix: str | None = None, study_uid: str | None = None
    ) -> list[int]:
        """Ids selected by id, source URI prefix or Study Instance UID."""
        with self.sessions() as session:
            found: set[int] = set()
            if ids:
                found.update(session.scalars(select(Image.id).where(Image.id.in_(list(ids)))))
            if source_prefix:
                found.update(
                    session.scalars(select(Image.id).where(Image.source_uri.startswith(source_prefix, autoescape=True)))
                )
            if study_uid:
                found.update(session.scalars(select(Image.id).where(Image.study_instance_uid == study_uid)))
            return sorted(found)

    def remove(self, ids: Sequence[int], forget_sources: bool = True) -> int:
        """Delete images (and vectors); their sources are forgotten so a re-index can add them back (unless
        `forget_sources` is off: series re-planning records what the sources became itself)."""
        if not ids:
            return 0
        with self.sessions() as session, session.begin():
            uris = set(session.scalars(select(Image.source_uri).where(Image.id.in_(list(ids)))))
            series = set(session.scalars(select(Image.series_instance_uid).where(Image.id.in_(list(ids)))))
            session.execute(delete(Vector).where(Vector.image_id.in_(list(ids))))
            session.execute(delete(Image).where(Image.id.in_(list(ids))))
            for chunk in in_chunks(sorted(uris) if forget_sources else [], 500):
                session.execute(delete(Source).where(Source.uri.in_(chunk)))
            refresh_cases(session, series)
        return len(ids)


IMAGE_COLUMNS = [c.key for c in Image.__table__.columns if c.key != "id"]


def _insert_images(
    session: Session, dialect: str, images: Sequence[tuple[Image, npt.NDArray[np.float32]]]
) -> list[int | None]:
    """Insert rows, skipping instance keys already stored (by anyone); vectors for the rows inserted."""
    if not images:
        return []
    now = utcnow()
    rows = []
    for image, _ in images:
        row = {key: getattr(image, key) for key in IMAGE_COLUMNS}
        row["frame"] = 1 if row["frame"] is None else row["frame"]
        row["number_of_frames"] = 1 if row["number_of_frames"] is None else row["number_of_frames"]
        row["indexed_at"] = row["indexed_at"] or now
        rows.append(row)
    by_key = sorted(rows, key=lambda r: str(r["instance_key"]))
    stmt = dialect_insert(dialect, Image).on_conflict_do_nothing(index_elements=[Image.instance_key])
    stmt = stmt.returning(Image.id, Image.instance_key)
    new = {key: image_id for image_id, key in session.execute(stmt, by_key)}
    ids: list[int | None] = []
    vectors = []
    for (image, vector), row in zip(images, rows, strict=True):
        image_id = new.pop(row["instance_key"], None)  # pop: a key twice in one batch is stored once
        ids.append(image_id)
        if image_id is not None:
            image.id = image_id
            vectors.append({"image_id": image_id, "vector": np.asarray(vector, np.float32).tobytes()})
    if vectors:
        session.execute(insert(Vector), vectors)
    return ids


def _upsert_failure(session: Session, dialect: str, fail: FailureRecord) -> None:
    values = {"source_uri": fail.uri, "code": fail.code, "reason": fail.reason[:2000], "recorded_at": utcnow()}
    stmt = dialect_insert(dialect, Failure).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Failure.source_uri], set_={k: v for k, v in values.items() if k != "source_uri"}
        )
    )


def _upsert_source(session: Session, dialect: str, src: SourceRecord) -> None:
    """Insert or update a processed source. An indexed source counts the images stored from it, read in SQL,
    so two writers that processed the same file agree on the count whichever commits last."""
    images: Any = src.images
    if src.status == "indexed":
        images = select(func.count()).select_from(Image).where(Image.source_uri == src.uri).scalar_subquery()
    values = {
        "uri": src.uri,
        "size": src.size,
        "mtime": src.mtime,
        "status": src.status,
        "sop_class": src.sop_class,
        "duplicate_of": src.duplicate_of,
        "series_instance_uid": src.series_instance_uid,
        "reason": src.reason,
        "processed_at": utcnow(),
    }
    stmt = dialect_insert(dialect, Source).values(**values, images=images)
    update_set = {k: v for k, v in values.items() if k != "uri"}
    update_set["images"] = images
    session.execute(stmt.on_conflict_do_update(index_elements=[Source.uri], set_=update_set))


def _conditions(filters: Filters) -> list[tuple[str, list[Any]]]:
    """The SQL conditions on `images i` (with `?` parameters) that a Filters value sets."""
    where: list[tuple[str, list[Any]]] = []
    for column, values in (("i.modality", filters.modality), ("i.body_part", filters.body_part)):
        if values:
            where.append((f"{column} IN ({','.join('?' * len(values))})", [v.upper() for v in values]))
    if filters.date_from:
        where.append(("i.study_date >= ?", [filters.date_from]))
    if filters.date_to:
        where.append(("i.study_date <= ?", [filters.date_to]))
    if filters.label:
        where.append(("i.label = ?", [filters.label]))
    if filters.exclude_patient_hash:
        where.append(("i.patient_hash IS NULL OR i.patient_hash <> ?", [filters.exclude_patient_hash]))
    if filters.exclude_study_uid:
        where.append(("i.study_instance_uid IS NULL OR i.study_instance_uid <> ?", [filters.exclude_study_uid]))
    for tag in filters.tags:
        where.append((f"i.id IN (SELECT ts.image_id {TAG_RULE} AND ts.tag = ?)", [tag]))
    if filters.probe:
        least = 0.5 if filters.min_prob is None else filters.min_prob
        probed = "SELECT image_id FROM probe_scores WHERE probe = ? AND probability >= ?"
        where.append((f"i.id IN ({probed})", [filters.probe, float(least)]))
    return where
