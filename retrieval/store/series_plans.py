"""Series plans in the store (the Catalog's `series`): each series' sampled K, its sources, the slices saved."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from retrieval.store.models import Image, Series, Source, utcnow
from retrieval.store.sql import dialect_insert, in_chunks


@dataclass
class SeriesRow:
    """One series' plan to store (plain data: the planner knows nothing of the models)."""

    series_instance_uid: str
    study_instance_uid: str | None
    modality: str | None
    series_description: str | None
    study_description: str | None
    slices_total: int
    slices_sampled: int
    requested: int | None
    excluded_reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemberSource:
    """A processed source of a stored series: enough to plan it again."""

    uri: str
    size: int
    mtime: float
    status: str
    series_instance_uid: str


@dataclass
class CaseFacts:
    """A series' or study's planning facts as a search hit shows them."""

    unsampled: int = 0  # volume slices not among the K sampled (slices_total = indexed + these)
    series_description: str | None = None
    study_description: str | None = None


class SeriesStore:
    """Reads and writes of series plans, on the catalog's sessions."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def save(self, rows: Sequence[SeriesRow]) -> None:
        """Insert or replace the plans of these series (one transaction)."""
        if not rows:
            return
        with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            for row in sorted(rows, key=lambda r: r.series_instance_uid):
                values = {
                    "series_instance_uid": row.series_instance_uid,
                    "study_instance_uid": row.study_instance_uid,
                    "modality": row.modality,
                    "series_description": (row.series_description or "")[:128] or None,
                    "study_description": (row.study_description or "")[:128] or None,
                    "slices_total": row.slices_total,
                    "slices_sampled": row.slices_sampled,
                    "requested": row.requested,
                    "excluded": sum(row.excluded_reasons.values()),
                    "excluded_reasons": json.dumps(row.excluded_reasons, sort_keys=True),
                    "notes": json.dumps(row.notes),
                    "planned_at": utcnow(),
                }
                stmt = dialect_insert(dialect, Series).values(**values)
                update = {k: v for k, v in values.items() if k != "series_instance_uid"}
                session.execute(stmt.on_conflict_do_update(index_elements=[Series.series_instance_uid], set_=update))

    def case_facts(self, level: str, uids: Sequence[str]) -> dict[str, CaseFacts]:
        """What the plans say of these series (level "series") or studies (level "study"): slices not sampled,
        descriptions. Cases without a stored plan (single images, rows indexed before planning) are absent."""
        column = Series.series_instance_uid if level == "series" else Series.study_instance_uid
        wanted = select(column, Series.slices_total, Series.slices_sampled, Series.series_description)
        found: dict[str, CaseFacts] = {}
        with self.sessions() as session:
            for chunk in in_chunks(sorted(set(uids)), 500):
                query = wanted.add_columns(Series.study_description).where(column.in_(chunk))
                for uid, total, sampled, series_text, study_text in session.execute(query):
                    facts = found.setdefault(str(uid), CaseFacts())
                    facts.unsampled += max(0, int(total or 0) - int(sampled or 0))
                    facts.series_description = series_text if level == "series" else None
                    facts.study_description = facts.study_description or study_text
        return found

    def get(self, uid: str) -> Series | None:
        """One stored plan."""
        with self.sessions() as session:
            return session.get(Series, uid)

    def stale(self, requested: int | None) -> list[str]:
        """Volumes planned with another K than `requested` (None: all): a run with this K plans them again."""
        query = select(Series.series_instance_uid).where(Series.slices_total > 0)
        if requested is None:
            query = query.where(Series.requested.is_not(None))
        else:
            query = query.where((Series.requested.is_(None)) | (Series.requested != requested))
        with self.sessions() as session:
            return sorted(session.scalars(query))

    def members(self, uids: Sequence[str]) -> list[MemberSource]:
        """The processed sources of these series (any status), in URI order."""
        out: list[MemberSource] = []
        with self.sessions() as session:
            for chunk in in_chunks(sorted(set(uids)), 500):
                query = select(Source).where(Source.series_instance_uid.in_(chunk))
                for s in session.scalars(query):
                    out.append(MemberSource(s.uri, s.size, s.mtime, s.status, s.series_instance_uid or ""))
        return sorted(out, key=lambda m: m.uri)

    def image_ids_outside(self, uri: str, keep_frames: frozenset[int] | None) -> list[int]:
        """Ids of the images stored from `uri` whose frame is not in `keep_frames` (None: all of them)."""
        query = select(Image.id).where(Image.source_uri == uri)
        if keep_frames is not None:
            query = query.where(Image.frame.not_in(sorted(keep_frames)))
        with self.sessions() as session:
            return sorted(session.scalars(query))

    def frames(self, uris: Sequence[str]) -> dict[str, set[int]]:
        """The frames stored from each of these sources (multi-frame objects whose frames were sampled)."""
        out: dict[str, set[int]] = {}
        with self.sessions() as session:
            for chunk in in_chunks(sorted(set(uris)), 500):
                for uri, frame in session.execute(
                    select(Image.source_uri, Image.frame).where(Image.source_uri.in_(chunk))
                ):
                    out.setdefault(uri, set()).add(int(frame))
        return out

    def saved(self) -> tuple[int, int]:
        """Volume slices skipped by sampling, and slices excluded from volumes, over every stored plan."""
        with self.sessions() as session:
            skipped, excluded = session.execute(
                select(
                    func.coalesce(func.sum(Series.slices_total - Series.slices_sampled), 0),
                    func.coalesce(func.sum(Series.excluded), 0),
                )
            ).one()
        return int(skipped), int(excluded)
