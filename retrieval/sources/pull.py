"""The DICOMweb source: QIDO-RS plans the new instances, WADO-RS fetches them, their stored URLs re-read them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from retrieval.errors import MedsearchError, NotFoundError
from retrieval.imaging.series import Header, header_of
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.sources.dicomweb import Dicomweb, instance_url, read_wado_uri, split_instance_url
from retrieval.sources.registry import SourceKind, register

if TYPE_CHECKING:
    from retrieval.store.repo import Catalog

log = logging.getLogger(__name__)
KIND = "dicomweb"  # `location`: the instance's WADO-RS URL (also its `uri`)
UID_TAGS = {"study": "0020000D", "series": "0020000E", "sop": "00080018"}
STUDY_DATE, MODALITY = "00080020", "00080060"
PIXEL_DATA, ROWS = "7FE00010", "00280010"


def metadata_header(item: dict[str, Any], key: str) -> Header | None:
    """The planning facts of one instance's DICOM JSON metadata (bulk data such as pixels left out); None when
    the metadata does not parse (the instance is then fetched and decoded as a single image, as before)."""
    try:
        dataset = Dataset.from_json(item, bulk_data_uri_handler=lambda tag, vr, uri: None)
    except Exception:
        return None
    return header_of(dataset, key)


@dataclass
class PullQuery:
    """Which instances to pull: a study date range and modalities (empty: everything)."""

    since: date | None = None
    until: date | None = None
    modalities: list[str] = field(default_factory=list)

    def study_filters(self) -> dict[str, str]:
        """QIDO-RS StudyDate range filter (open ends allowed)."""
        if self.since is None and self.until is None:
            return {}
        low = self.since.strftime("%Y%m%d") if self.since else ""
        high = self.until.strftime("%Y%m%d") if self.until else ""
        return {"StudyDate": f"{low}-{high}"}

    def date_matches(self, value: str | None) -> bool:
        """The server filtered already; servers differ on studies without a date, so check again here."""
        if self.since is None and self.until is None:
            return True
        if not value or len(value) < 8 or not value[:8].isdigit():
            return False
        day = value[:8]
        low = self.since.strftime("%Y%m%d") if self.since else "00000000"
        high = self.until.strftime("%Y%m%d") if self.until else "99999999"
        return low <= day <= high


def _value(item: dict[str, object], tag: str) -> str | None:
    entry = item.get(tag)
    if not isinstance(entry, dict):
        return None
    values = entry.get("Value")
    return str(values[0]) if isinstance(values, list) and values else None


class DicomwebSource:
    """Instances of a DICOMweb server; those already indexed (by WADO-RS URL) are neither fetched nor counted."""

    def __init__(self, client: Dicomweb, query: PullQuery, workers: int, max_bytes: int) -> None:
        self.client = client
        self.query = query
        self.workers = workers
        self.max_bytes = max_bytes
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wado")
        self.fetched = 0
        self.found = 0
        self.warned = False
        self.headers: dict[str, Header] = {}  # WADO-RS URL -> planning facts (series metadata), filled by plan()

    def _series(self) -> Iterator[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        for study_item in self.client.search("studies", self.query.study_filters()):
            study = _value(study_item, UID_TAGS["study"])
            if not study or not self.query.date_matches(_value(study_item, STUDY_DATE)):
                continue
            modalities: list[str | None] = list(self.query.modalities) or [None]
            for modality in modalities:
                filters = {"Modality": modality} if modality else {}
                for series_item in self.client.search("series", filters, study=study):
                    series = _value(series_item, UID_TAGS["series"])
                    found_modality = (_value(series_item, MODALITY) or "").upper()
                    if modality and found_modality and found_modality != modality:
                        continue
                    if series and (study, series) not in seen:
                        seen.add((study, series))
                        yield study, series

    def _instances(self, study: str, series: str) -> list[dict[str, Any]]:
        """The series' instances with their headers (WADO-RS metadata), else as QIDO-RS lists them (UIDs only)."""
        metadata = self.client.series_metadata(study, series)
        if metadata is not None:
            return metadata
        if not self.warned:
            log.warning("the DICOMweb server offers no series metadata: every instance is fetched (no sampling)")
            self.warned = True
        return self.client.search("instances", {}, study=study, series=series)

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """Every matching instance whose WADO-RS URL is not indexed yet (failed ones are tried again); the headers
        the server's series metadata gave (no pixel data) are kept in `headers` for series planning."""
        refs: list[SourceRef | SourceProblem] = []
        seen: set[str] = set()
        self.headers = {}
        for study, series in self._series():
            for item in self._instances(study, series):
                sop = _value(item, UID_TAGS["sop"])
                url = instance_url(self.client.config.url, study, series, sop) if sop else ""
                if sop and url not in seen:
                    seen.add(url)
                    refs.append(SourceRef(url, 0, 0.0, KIND, url))
                    header = metadata_header(item, url) if PIXEL_DATA in item or ROWS in item else None
                    if header is not None:  # metadata, not a bare QIDO-RS answer
                        self.headers[url] = header
        self.found = len(refs)
        done = catalog.indexed_sources([r.uri for r in refs])
        todo = [r for r in refs if r.uri not in done]
        return todo, len(refs) - len(todo)

    def header(self, ref: SourceRef) -> Header | None:
        """An instance's planning facts, from its series' WADO-RS metadata (None: the server gave none)."""
        return self.headers.get(ref.uri)

    def stored_ref(self, uri: str, size: int, mtime: float, status: str) -> SourceRef | None:
        """An instance planned by an earlier pull that the server still lists (so a series that grew on the server
        is planned again as a whole, and a slice newly sampled is fetched then)."""
        return SourceRef(uri, size, mtime, KIND, uri) if uri in self.headers else None

    def _get(self, ref: SourceRef) -> SourceItem:
        t0 = time.perf_counter()
        try:
            uids = split_instance_url(self.client.config.url, ref.location)
            if uids is None:
                raise NotFoundError(f"{ref.location} is not an instance URL under {self.client.config.url}")
            data = self.client.instance_bytes(*uids, self.max_bytes)
        except MedsearchError as exc:
            return SourceItem(ref, code=exc.code, reason=str(exc), read_seconds=time.perf_counter() - t0)
        return SourceItem(ref, data, read_seconds=time.perf_counter() - t0)

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Fetch with a bounded number of requests in flight, yielding in order."""
        window = self.workers * 2
        pending: list[Future[SourceItem] | SourceItem] = []
        for ref in refs:
            pending.append(problem_item(ref) if isinstance(ref, SourceProblem) else self.pool.submit(self._get, ref))
            while len(pending) >= window:
                yield self._done(pending.pop(0))
        while pending:
            yield self._done(pending.pop(0))

    def _done(self, item: Future[SourceItem] | SourceItem) -> SourceItem:
        result = item.result() if isinstance(item, Future) else item
        if not result.code:
            self.fetched += 1
            result = SourceItem(
                SourceRef(result.ref.uri, len(result.data or b""), 0.0, KIND, result.ref.location),
                result.data,
                read_seconds=result.read_seconds,
            )
        return result

    def close(self) -> None:
        """Stop the fetch threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)


# Read by this source's fetch only (a server with credentials); stored URLs are re-read under MEDSEARCH_DICOMWEB_URL.
register(SourceKind(KIND, schemes=("http", "https"), reread=read_wado_uri))
