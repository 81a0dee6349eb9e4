"""Write stage: drop known instance keys, map frames to rows, one catalog transaction, index add, periodic save."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from indexer.stages.batch import Decoded, PreparedBatch
from indexer.stages.plan import Plan
from retrieval.collection import Collection
from retrieval.findings.hook import score_new_images
from retrieval.imaging.sr_text import Identifiers, SrDocument
from retrieval.index.base import VectorIndex
from retrieval.labels import Labels
from retrieval.privacy import hash_accession, hash_patient_id
from retrieval.reports.prepare import prepare_report
from retrieval.reports.rescrub import rescrub_waiting_reports
from retrieval.store.models import Image
from retrieval.store.repo import FailureRecord, SourceRecord
from retrieval.store.reports import NewReport


@dataclass
class Written:
    """What one write did: plain counts and the failures it recorded."""

    sources: int = 0
    indexed: int = 0
    duplicates: int = 0
    failures: list[FailureRecord] = field(default_factory=list)
    not_images: dict[str, int] = field(default_factory=dict)  # skipped non-image objects by SOP class name
    reports: int = 0  # structured reports stored as their study's report (a repeat of a stored one counts too)


class Writer:
    """Owns the collection's write side for one run: the only stage that touches the catalog and the index."""

    def __init__(self, collection: Collection, index: VectorIndex, labels: Labels | None = None) -> None:
        self.collection = collection
        self.index = index
        self.labels = labels
        self.encoded_by = collection.encoder.encoded_by  # which back end wrote the vectors (stats count them)
        self.seen_keys: dict[str, str] = {}  # instance key -> the source it was first seen in, this run
        self.last_save = time.monotonic()
        self.positions: dict[tuple[str, int], float] = {}  # (uri, frame) -> position along its volume's normal
        self.series_of: dict[str, str] = {}  # uri -> SeriesInstanceUID, for sources planned with their series

    def apply_plan(self, plan: Plan) -> int:
        """Store what planning settled before anything is decoded: images of slices no longer sampled leave the
        store and the index, sampled-out and excluded sources are recorded, each series' plan is kept.
        Returns how many images left."""
        self.positions, self.series_of = plan.positions, plan.series_of
        catalog = self.collection.catalog
        ids = sorted(i for uri, keep in plan.drops.items() for i in catalog.series.image_ids_outside(uri, keep))
        if ids:
            catalog.remove(ids, forget_sources=False)
            self.index.remove(np.asarray(ids, dtype=np.int64))
        if plan.records:
            catalog.write_batch([], plan.records, [])
        catalog.series.save(plan.series)
        return len(ids)

    def new_only(self, batch: PreparedBatch) -> PreparedBatch:
        """The batch without frames already stored or seen earlier in this run (so nobody encodes them again)."""
        known = {**self.collection.catalog.sources_of_keys(batch.keys), **self.seen_keys}
        items: list[Decoded] = []
        dropped = 0
        for item in batch.items:
            prepared = item.prepared
            if prepared is None:
                items.append(item)
                continue
            keep = []
            for i, key in enumerate(prepared.keys):
                if key in known:
                    dropped += 1
                    continue
                known[key] = item.ref.uri
                keep.append(i)
            if len(keep) < len(prepared.keys):
                original = known[prepared.keys[0]] if not keep else ""  # a whole copy: remember what it repeats
                prepared = replace(
                    prepared,
                    frames=[prepared.frames[i] for i in keep],
                    keys=[prepared.keys[i] for i in keep],
                    pixel_values=prepared.pixel_values[keep],
                )
                item = replace(item, prepared=prepared, duplicate_of=original if original != item.ref.uri else "")
            items.append(item)
        for kept in items:
            self.seen_keys.update((key, kept.ref.uri) for key in (kept.prepared.keys if kept.prepared else []))
        return PreparedBatch(items, batch.duplicates + dropped)

    def write(self, batch: PreparedBatch, vectors: npt.NDArray[np.float32]) -> Written:
        """Store the batch (vectors in `batch.keys` order) in one transaction, then add it to the index.

        An instance another writer stored first is counted as a duplicate, not written twice.
        """
        if len(vectors) != len(batch.keys):
            raise ValueError(f"{len(vectors)} vectors for {len(batch.keys)} prepared frames")
        rows: list[Image] = []
        sources: list[SourceRecord] = []
        failures: list[FailureRecord] = []
        not_images: dict[str, int] = {}
        reports: list[NewReport] = []
        for item in batch.items:
            ref = item.ref
            if item.report is not None:  # a structured report: its study's report, not an image and not skipped
                reports.append(self._report(item.report))
                sources.append(SourceRecord(ref.uri, ref.size, ref.mtime, "report", sop_class=item.not_image))
                continue
            series = self.series_of.get(ref.uri)
            if item.not_image:  # acknowledged and accounted for: skipped under its SOP class, never a failure
                not_images[item.not_image] = not_images.get(item.not_image, 0) + 1
                sources.append(
                    SourceRecord(
                        ref.uri, ref.size, ref.mtime, "skipped", sop_class=item.not_image, series_instance_uid=series
                    )
                )
                continue
            if item.prepared is None:
                failures.append(FailureRecord(ref.uri, item.code, item.reason))
                sources.append(SourceRecord(ref.uri, ref.size, ref.mtime, "failed", series_instance_uid=series))
                continue
            rows.extend(self._row(item, i) for i in range(len(item.prepared.keys)))
            count = len(item.prepared.keys)
            record = SourceRecord(ref.uri, ref.size, ref.mtime, "indexed", count, item.duplicate_of or None)
            sources.append(replace(record, series_instance_uid=series))
        self.collection.catalog.reports.add(reports)  # before the sources: a crash between them re-reads the SR
        stored = self.collection.catalog.write_batch(list(zip(rows, vectors, strict=True)), sources, failures)
        # None: a writer on another machine sharing the database stored that instance first
        kept = [i for i, image_id in enumerate(stored) if image_id is not None]
        new_ids = np.asarray([stored[i] for i in kept], dtype=np.int64)
        self.index.add(new_ids, vectors[kept])
        if self.collection.case_indexes is not None:  # the series that grew, and their studies (cases table)
            self.collection.case_indexes.catch_up()
        score_new_images(self.collection, new_ids, vectors[kept])  # stored tags and applied probes, if any
        rescrub_waiting_reports(self.collection, _study_identifiers(batch.items))
        duplicates = batch.duplicates + len(stored) - len(kept)
        return Written(len(batch.items), len(kept), duplicates, failures, not_images, len(reports))

    def _report(self, document: SrDocument) -> NewReport:
        return prepare_report(
            document.text,
            document.study_instance_uid,
            origin="sr",
            reference=document.sop_instance_uid,
            written_at=document.written_at,
            known=document.identifiers,
            max_chars=self.collection.settings.report_max_chars,
        )

    def _row(self, item: Decoded, i: int) -> Image:
        assert item.prepared is not None
        meta = item.prepared.meta
        entry = self.labels.lookup(meta.sop_instance_uid, item.ref.uri) if self.labels else None
        return Image(
            instance_key=item.prepared.keys[i],
            kind=meta.kind,
            sop_instance_uid=meta.sop_instance_uid,
            sop_class_uid=meta.sop_class_uid,
            study_instance_uid=meta.study_instance_uid,
            series_instance_uid=meta.series_instance_uid,
            frame=item.prepared.frames[i],
            number_of_frames=meta.number_of_frames,
            modality=meta.modality,
            body_part=meta.body_part,
            view_position=meta.view_position,
            study_date=meta.study_date,
            sex=meta.sex,
            age=meta.age,
            manufacturer=meta.manufacturer,
            rows=meta.rows,
            columns=meta.columns,
            photometric=meta.photometric,
            transfer_syntax=meta.transfer_syntax,
            window=meta.window,
            patient_hash=hash_patient_id(meta.patient_id, self.collection.salt),
            accession_hash=hash_accession(meta.accession_number, self.collection.salt),
            source_uri=item.ref.uri,
            content_hash=meta.content_hash,
            pixel_hash=item.prepared.pixel_hashes[i] if item.prepared.pixel_hashes else None,
            label=entry.label if entry else None,
            report=entry.report if entry else None,
            encoded_by=self.encoded_by,
            slice_position=self.positions.get((item.ref.uri, item.prepared.frames[i])),
        )

    def save_if_due(self) -> None:
        """Save the index when MEDSEARCH_INDEX_SAVE_SECONDS have passed since the last save."""
        if time.monotonic() - self.last_save >= self.collection.settings.index_save_seconds:
            self.save()

    def save(self) -> None:
        """Persist the index now."""
        self.collection.save_index()
        self.last_save = time.monotonic()


def _study_identifiers(items: list[Decoded]) -> dict[str, Identifiers]:
    """The header values each study's new images name (to scrub reports that arrived before them)."""
    found: dict[str, Identifiers] = {}
    for item in items:
        meta = item.prepared.meta if item.prepared is not None else None
        if meta is None or not meta.study_instance_uid or meta.identifiers is None:
            continue
        found.setdefault(meta.study_instance_uid, Identifiers()).update(meta.identifiers)
    return found
