"""Plan stage: what a run must process, series-aware (headers only: group, order, sample K), then its work items."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from retrieval.errors import MedsearchError
from retrieval.imaging.series import Header, SeriesPlan, plan_series, read_header, read_header_file
from retrieval.sources.base import IngestSource, PlansFromHeaders, SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.sources.files import ARCHIVE_SEPARATOR, ArchiveReader, PathSource
from retrieval.sources.read import local_path, worker_readable
from retrieval.store.repo import Catalog, SourceRecord
from retrieval.store.series_plans import MemberSource, SeriesRow

Planned = SourceRef | SourceProblem


@dataclass
class Plan:
    """What a run does: the sources that go on to decode and encode, and what planning settled without them."""

    refs: list[Planned]
    skipped: int = 0  # sources already done, left out unopened
    records: list[SourceRecord] = field(default_factory=list)  # sampled out / excluded: stored before decoding
    drops: dict[str, frozenset[int] | None] = field(default_factory=dict)  # uri -> frames kept (None: none)
    series: list[SeriesRow] = field(default_factory=list)
    positions: dict[tuple[str, int], float] = field(default_factory=dict)  # (uri, 1-based frame) -> mm
    series_of: dict[str, str] = field(default_factory=dict)  # uri -> its SeriesInstanceUID
    sampled_out: int = 0  # slices of the series planned here left out by sampling
    excluded: int = 0  # slices of the series planned here left out of their volume


def plan(source: IngestSource, catalog: Catalog, slices: int | None = None, max_bytes: int = 2**31) -> Plan:
    """The sources this run must process, how many were already done, and each series' plan.

    Headers only, nothing decoded: DICOM files and archive members are grouped by SeriesInstanceUID, a volume's
    slices ordered along its normal and `slices` of them sampled (None: all); series stored with another K are
    planned again with the sources they hold, so only newly sampled slices are encoded.
    """
    todo, skipped = source.plan(catalog)
    roots = [str(Path(p).resolve()) for p in source.paths] if isinstance(source, PathSource) else []
    return SeriesPlanner(catalog, slices, max_bytes, roots, source).run(todo, skipped)


class SeriesPlanner:
    """Reads headers of the planned files and members, plans their series, and turns the plans into decisions."""

    def __init__(
        self,
        catalog: Catalog,
        slices: int | None,
        max_bytes: int,
        roots: Sequence[str] = (),
        source: IngestSource | None = None,
    ) -> None:
        self.catalog = catalog
        # DICOMweb and C-STORE sources give their instances' headers themselves (no bytes read to plan them)
        self.from_source = source if isinstance(source, PlansFromHeaders) else None
        self.roots = list(roots)  # only stored series with a source under these are planned again on another K
        self.slices = slices
        self.reader = ArchiveReader(max_bytes)
        self.refs: dict[str, SourceRef] = {}  # every source planning looked at, by URI
        self.settled: dict[str, tuple[str, str | None]] = {}  # uri -> status and reason, for those not decoded

    def run(self, todo: list[Planned], skipped: int) -> Plan:
        """Plan the series of `todo` and of the stored series another K asks to re-plan."""
        try:
            return self._run(todo, skipped)
        finally:
            self.reader.close()

    def _run(self, todo: list[Planned], skipped: int) -> Plan:
        headers: dict[str, Header] = {}
        for ref in todo:
            if isinstance(ref, SourceRef) and (self.from_source is not None or worker_readable(ref)):
                self.refs[ref.uri] = ref
                header = self._header(ref)
                if header is not None:
                    headers[ref.uri] = header
        touched = {h.series_instance_uid for h in headers.values() if h.series_instance_uid}
        stale = self.catalog.series.members(self.catalog.series.stale(self.slices))
        touched |= {m.series_instance_uid for m in stale if self._covered(m.uri)}
        stored = {m.uri: m for m in self.catalog.series.members(sorted(touched)) if m.uri not in headers}
        for member in stored.values():
            again = self._stored_ref(member)
            if again is None:  # a source of another kind, or one its source cannot plan again: left as it is
                continue
            self.refs[member.uri] = again
            header = self._header(again)  # a stored source gone since: left as it is
            if header is not None and header.series_instance_uid == member.series_instance_uid:
                headers[again.uri] = header
        out = Plan(refs=[], skipped=skipped)
        decisions: dict[str, SourceRef | None] = {}  # uri -> the ref to process (None: settled without decoding)
        for series in plan_series(headers.values(), self.slices):
            self._decide(series, stored, decisions, out)
        for ref in todo:
            if isinstance(ref, SourceRef) and ref.uri in decisions:
                chosen = decisions.pop(ref.uri)
                if chosen is not None:
                    out.refs.append(chosen)
            else:
                out.refs.append(ref)
        out.refs.extend(ref for ref in decisions.values() if ref is not None)  # stored slices newly sampled
        replanned = {r.uri for r in out.refs if isinstance(r, SourceRef)} | {r.uri for r in out.records}
        # the source counted those under its paths as done: this run did them
        out.skipped -= sum(1 for uri in replanned & stored.keys() if self._covered(uri))
        return out

    def _covered(self, uri: str) -> bool:
        """Whether a stored source lies under the paths this run was given (a file, a folder's, an archive's)."""
        return any(uri == root or uri.startswith((root + "/", root + ARCHIVE_SEPARATOR)) for root in self.roots)

    def _stored_ref(self, member: MemberSource) -> SourceRef | None:
        if self.from_source is None:
            return _ref_of(member)
        return self.from_source.stored_ref(member.uri, member.size, member.mtime, member.status)

    def _header(self, ref: SourceRef) -> Header | None:
        if self.from_source is not None:  # every ref of this run, and its stored members, are that source's
            return self.from_source.header(ref)
        if (path := local_path(ref)) is not None:  # a whole file: read its header only
            return read_header_file(path, ref.uri)
        try:
            return read_header(self.reader.read(ref), ref.uri)
        except MedsearchError:  # unreadable member: the read stage records why, as before
            return None

    def _decide(
        self, series: SeriesPlan, stored: dict[str, MemberSource], decisions: dict[str, SourceRef | None], out: Plan
    ) -> None:
        """One series' plan as decisions per source: process it (which frames), or record it as not encoded."""
        uid = series.series_instance_uid
        out.series.append(_row(series))
        for key in series.singles:
            out.series_of[key] = uid
            decisions[key] = None if key in stored else self.refs[key]
        for s in series.volume:
            out.series_of[s.key] = uid
            if s.position is not None:
                out.positions[(s.key, s.frame or 1)] = s.position
        sampled: dict[str, set[int]] = {}
        for s in series.sampled:
            sampled.setdefault(s.key, set()).add(s.frame or 1)
        for s, reason in series.excluded:
            out.series_of[s.key] = uid
            out.excluded += 1
            if s.frame is None:
                self._record(s.key, "excluded", reason, stored, decisions, out, uid)
        out.sampled_out += len(series.skipped)
        for key in dict.fromkeys(s.key for s in series.volume):
            frames = sampled.get(key)
            multi = any(s.key == key and s.frame is not None for s in series.volume)
            if not frames:
                self._record(key, "sampled_out", None, stored, decisions, out, uid)
            elif key in stored and stored[key].status == "indexed" and not multi:
                decisions[key] = None  # sampled before and still: kept as it is, never encoded again
            elif multi and key in stored and stored[key].status == "indexed":
                self._replan_frames(stored[key], frames, decisions, out)
            else:
                ref = self.refs[key]
                decisions[key] = replace(ref, frames=tuple(sorted(frames))) if multi else ref
        self._copies(series, stored, decisions, out)

    def _replan_frames(
        self, before: MemberSource, frames: set[int], decisions: dict[str, SourceRef | None], out: Plan
    ) -> None:
        """A multi-frame object indexed before: frames no longer sampled leave, only new ones are decoded."""
        have = self.catalog.series.frames([before.uri]).get(before.uri, set())
        if have - frames:
            out.drops[before.uri] = frozenset(frames)
        new = frames - have
        ref = self.refs[before.uri]
        decisions[before.uri] = replace(ref, frames=tuple(sorted(new))) if new else None
        if not new:  # its image count changes without a decode: recount it
            out.records.append(
                SourceRecord(ref.uri, ref.size, ref.mtime, "indexed", series_instance_uid=before.series_instance_uid)
            )

    def _copies(
        self, series: SeriesPlan, stored: dict[str, MemberSource], decisions: dict[str, SourceRef | None], out: Plan
    ) -> None:
        """A second file of an instance follows its original: recorded alike, or decoded (the writer then records
        it as a copy of the source indexed first)."""
        for key, original in series.copies.items():
            out.series_of[key] = series.series_instance_uid
            if original in self.settled:
                status, reason = self.settled[original]
                self._record(key, status, reason, stored, decisions, out, series.series_instance_uid)
                continue
            chosen = decisions.get(original)
            frames = chosen.frames if chosen is not None else ()
            decisions[key] = None if key in stored else replace(self.refs[key], frames=frames)

    def _record(
        self,
        key: str,
        status: str,
        reason: str | None,
        stored: dict[str, MemberSource],
        decisions: dict[str, SourceRef | None],
        out: Plan,
        uid: str,
    ) -> None:
        self.settled[key] = (status, reason)
        before = stored.get(key)
        if before is not None and before.status == status:
            decisions[key] = None
            return
        if before is not None and before.status == "indexed":
            out.drops[key] = None  # sampled before, not now: its images leave the index
        ref = self.refs[key]
        out.records.append(SourceRecord(key, ref.size, ref.mtime, status, series_instance_uid=uid, reason=reason))
        decisions[key] = None


def _ref_of(member: MemberSource) -> SourceRef:
    """A stored source as a planned reference again (files and archive members)."""
    archive, sep, name = member.uri.partition(ARCHIVE_SEPARATOR)
    if not sep:
        return SourceRef(member.uri, member.size, member.mtime, "file", member.uri)
    if archive.lower().endswith(".zip"):
        return SourceRef(member.uri, member.size, member.mtime, "zip", archive, name)
    return SourceRef(member.uri, member.size, member.mtime, "tar", archive, name)


def _row(series: SeriesPlan) -> SeriesRow:
    return SeriesRow(
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=series.study_instance_uid,
        modality=series.modality,
        series_description=series.series_description,
        study_description=series.study_description,
        slices_total=len(series.volume),
        slices_sampled=len(series.sampled),
        requested=series.requested,
        excluded_reasons=series.excluded_reasons(),
        notes=series.notes,
    )


def work_items(source: IngestSource, planned: list[Planned], workers_read: bool) -> Iterator[SourceItem]:
    """One item per planned source, in plan order, fetched lazily. When the executor's workers read
    (`workers_read`), a ref whose kind the registry can read anywhere travels bare and the worker reads it;
    every other ref is fetched here by the source that planned it, as the items are consumed, so at most the
    source's own window of fetched bytes is held at a time."""
    fetched = source.fetch([r for r in planned if not _bare(r, workers_read)])
    for ref in planned:
        if isinstance(ref, SourceProblem):
            yield problem_item(ref)
        elif _bare(ref, workers_read):
            yield SourceItem(ref)
        else:
            yield next(fetched)


def _bare(ref: Planned, workers_read: bool) -> bool:
    return isinstance(ref, SourceProblem) or (workers_read and worker_readable(ref))
