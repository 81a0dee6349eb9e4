"""Reports in the store (the Catalog's `reports`): add de-identified reports, keep the latest per study, look up."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from retrieval.store.models import Image, Report
from retrieval.store.reads import QueryReads
from retrieval.store.report_search import any_words, matching_studies, ranked_studies
from retrieval.store.sql import dialect_insert, in_chunks


@dataclass(frozen=True)
class NewReport:
    """A report ready to store: already de-identified (the original text never reaches the store)."""

    study_instance_uid: str
    origin: str  # "sr" | "import"
    reference: str | None
    written_at: datetime | None
    text: str
    affirmed: str
    negated: str
    chars: int
    truncated: bool
    redactions: int
    headers_known: bool

    @property
    def text_hash(self) -> str:
        """SHA-256 of the scrubbed text (the same report stored twice is one row)."""
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredReport:
    """What a hit or a listing shows of a study's latest report."""

    id: int
    study_instance_uid: str
    origin: str
    written_at: datetime | None
    text: str
    truncated: bool
    versions: int  # how many reports the study has (amendments included)
    affirmed: str = ""  # its words less the negated ones (what report words match)
    negated: str = ""  # the negated phrases, one a line


class ReportsStore:
    """Every read and write of reports goes through here (reached as `Catalog.reports`)."""

    def __init__(self, sessions: sessionmaker[Session], reads: QueryReads) -> None:
        self.sessions = sessions
        self._reads = reads

    def add(self, reports: Sequence[NewReport]) -> int:
        """Store reports (one transaction); one already stored for its study is not stored again. Returns how many
        were new. Each touched study's latest report is then its newest by its own date, else the last received."""
        if not reports:
            return 0
        added = 0
        with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            for report in reports:
                values = {
                    "study_instance_uid": report.study_instance_uid,
                    "origin": report.origin,
                    "reference": report.reference,
                    "written_at": report.written_at,
                    "text": report.text,
                    "affirmed": report.affirmed,
                    "negated": report.negated,
                    "text_hash": report.text_hash,
                    "chars": report.chars,
                    "truncated": report.truncated,
                    "redactions": report.redactions,
                    "headers_known": report.headers_known,
                    "latest": False,
                }
                stmt = dialect_insert(dialect, Report).values(**values).on_conflict_do_nothing().returning(Report.id)
                added += len(session.execute(stmt).all())  # no row back: that report was stored already
            for study in {r.study_instance_uid for r in reports}:
                _mark_latest(session, study)
        return added

    def replace_text(self, report_id: int, text: str, affirmed: str, negated: str, redactions: int) -> None:
        """Scrub a stored report again (its study's header values became known when its images arrived)."""
        with self.sessions() as session, session.begin():
            session.execute(
                update(Report)
                .where(Report.id == report_id)
                .values(
                    text=text,
                    affirmed=affirmed,
                    negated=negated,
                    redactions=Report.redactions + redactions,
                    headers_known=True,
                )
            )

    def waiting_for_headers(self, studies: Sequence[str]) -> list[tuple[int, str, str]]:
        """(id, study UID, text) of the reports of these studies not yet scrubbed of the study's header values."""
        out: list[tuple[int, str, str]] = []
        with self.sessions() as session:
            for chunk in in_chunks(sorted(set(studies)), 500):
                query = select(Report.id, Report.study_instance_uid, Report.text).where(
                    Report.study_instance_uid.in_(chunk), Report.headers_known.is_(False)
                )
                out.extend((int(i), str(s), str(t)) for i, s, t in session.execute(query))
        return out

    def latest(self, studies: Sequence[str]) -> dict[str, StoredReport]:
        """The latest report of each of these studies that has one (plain SQL: every search's hits ask)."""
        out: dict[str, StoredReport] = {}
        for chunk in in_chunks(sorted({s for s in studies if s}), 500):
            for row in self._reads.latest_reports(chunk):
                study, report_id, origin, written_at, text, truncated, versions, affirmed, negated = row
                out[study] = StoredReport(
                    report_id, study, origin, written_at, text, truncated, versions, affirmed, negated
                )
        return out

    def ranked_studies(self, text_query: str, limit: int) -> list[str]:
        """Studies whose latest report has any word of a free text, most relevant first (at most `limit`)."""
        with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            return [str(s) for s in session.scalars(ranked_studies(dialect, any_words(text_query), limit))]

    def matching(self, query: str) -> set[str]:
        """Studies whose latest report matches a report query (the `--report` filter's syntax and meaning)."""
        with self.sessions() as session:
            dialect = session.get_bind().dialect.name
            return {str(s) for s in session.scalars(matching_studies(dialect, query))}

    def images_of_studies(self, studies: Sequence[str]) -> dict[str, list[int]]:
        """The image ids of each study, in id order."""
        out: dict[str, list[int]] = {}
        with self.sessions() as session:
            for chunk in in_chunks(sorted(set(studies)), 500):
                query = select(Image.study_instance_uid, Image.id).where(Image.study_instance_uid.in_(chunk))
                for study, image_id in session.execute(query.order_by(Image.id)):
                    out.setdefault(str(study), []).append(int(image_id))
        return out

    def all_of(self, study: str) -> list[Report]:
        """Every report of a study, newest first (amendments included)."""
        with self.sessions() as session:
            query = select(Report).where(Report.study_instance_uid == study)
            rows = list(session.scalars(query.order_by(Report.latest.desc(), Report.id.desc())))
            session.expunge_all()
            return rows

    def studies_by_accession_hash(self, accession_hash: str) -> list[str]:
        """The indexed studies whose images carry this salted hash of an AccessionNumber."""
        with self.sessions() as session:
            query = select(Image.study_instance_uid).where(Image.accession_hash == accession_hash).distinct()
            return [str(s) for s in session.scalars(query) if s]

    def study_source(self, study: str) -> str | None:
        """One source URI of an indexed study (to read its headers from), or None when none is indexed."""
        with self.sessions() as session:
            query = select(Image.source_uri).where(Image.study_instance_uid == study).limit(1)
            return session.scalar(query)

    def counts(self) -> dict[str, int]:
        """Reports stored, studies with a report, and those whose study has no indexed image yet."""
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Report)) or 0
            studies = session.scalar(select(func.count(func.distinct(Report.study_instance_uid)))) or 0
            indexed = select(Image.study_instance_uid).where(Image.study_instance_uid.is_not(None))
            waiting = session.scalar(
                select(func.count(func.distinct(Report.study_instance_uid))).where(
                    Report.study_instance_uid.not_in(indexed)
                )
            )
        return {"reports": int(total), "report_studies": int(studies), "reports_waiting": int(waiting or 0)}


def _mark_latest(session: Session, study: str) -> None:
    newest = session.scalar(
        select(Report.id)
        .where(Report.study_instance_uid == study)
        .order_by(Report.written_at.desc().nulls_last(), Report.id.desc())
        .limit(1)
    )
    session.execute(update(Report).where(Report.study_instance_uid == study).values(latest=Report.id == newest))
