"""Export one search's hits as an SR: read the query's own header, check the PACS has its study, build, send."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.export.errors import ExportFailedError, ExportNeedsDicomError
from retrieval.export.send import Route, check_study, send, targets
from retrieval.export.sr import About, Match, build_sr
from retrieval.privacy import shown_model
from retrieval.query import Hit

log = logging.getLogger(__name__)
PNG_HINT = "an SR goes into the query's DICOM study: search by a DICOM file or an indexed DICOM image to export"


@dataclass
class ExportResult:
    """What was stored where: the SR's UIDs, the matches it lists, and each route it reached."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    matches: int
    include_uids: bool
    sent: list[dict[str, str]] = field(default_factory=list)


def header_of(data: bytes) -> Dataset:
    """The query's DICOM header (no pixels); a PNG/JPEG or any non-DICOM upload is a clear error."""
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError) as exc:
        raise ExportNeedsDicomError(f"the query is not a DICOM file: {PNG_HINT}") from exc


def indexed_header(collection: Collection, image_id: int) -> Dataset:
    """The header of an indexed image, read from its source now (patient names are never in the database)."""
    from retrieval.sources.read import read_source

    image = collection.catalog.image(image_id)
    if image.kind != "dicom" or not image.study_instance_uid:
        raise ExportNeedsDicomError(f"image {image_id} is not a DICOM instance: {PNG_HINT}")
    return header_of(read_source(image.source_uri, collection.settings))


def matches_of(hits: Sequence[Hit], include_uids: bool) -> list[Match]:
    """The SR's view of the hits: rank, score, level, id, and the UIDs unless left out."""
    listed = []
    for hit in hits:
        img = hit.image
        level = str(getattr(hit, "level", None) or "image")  # series/study hits carry their level
        uids = (
            (img.study_instance_uid, img.series_instance_uid, img.sop_instance_uid, img.sop_class_uid)
            if include_uids
            else (None, None, None, None)
        )
        listed.append(Match(hit.rank, hit.score, level, img.id, *uids, frame=img.frame))
    return listed


def export_sr(
    collection: Collection,
    header: Dataset,
    hits: Sequence[Hit],
    query_kind: str,
    *,
    include_uids: bool = True,
    via: Route | None = None,
    region: str | None = None,
) -> ExportResult:
    """Build the SR of `hits` in the query's study and store it by every configured route (or `via`).

    Each route's study check runs before anything is sent; a route that fails after another stored the SR says
    so, and a retry sends the same SR instance (its UIDs derive from its content), which a PACS keeps once."""
    settings = collection.settings
    chosen = targets(settings, via)
    fingerprint = collection.catalog.fingerprint()
    about = About(
        model_id=shown_model(fingerprint.model_id if fingerprint else settings.model),
        fingerprint=fingerprint.key if fingerprint else "unknown",
        query_kind=query_kind,
        region=region,
    )
    sr = build_sr(header, matches_of(hits, include_uids), about)
    study = str(header.StudyInstanceUID)
    for target in chosen:
        check_study(settings, target, study)
    result = ExportResult(study, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID), len(hits), include_uids)
    for target in chosen:
        try:
            send(settings, target, sr)
        except MedsearchError as exc:
            if not result.sent:
                raise
            stored = ", ".join(f"{s['route']} {s['target']}" for s in result.sent)
            raise ExportFailedError(f"the SR was stored by {stored}, but not by {target.route}: {exc}") from exc
        result.sent.append({"route": target.route, "target": target.address})
        log.info("SR stored by %s (%d matches)", target.route, len(hits))
    return result


def region_text(roi: tuple[int, int, int, int] | None) -> str | None:
    """A query region as the SR records it: x,y,w,h in the source image's pixels."""
    return None if roi is None else "x,y,w,h = " + ",".join(map(str, roi))
