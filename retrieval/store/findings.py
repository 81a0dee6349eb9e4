"""Tags, probes and their per-image scores in the store (the Catalog's `findings`): score upserts, lookups."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from retrieval.store.models import Probe, ProbeScore, Tag, TagScore, utcnow
from retrieval.store.reads import QueryReads
from retrieval.store.sql import IdArray, dialect_insert, having_tags, in_chunks


@dataclass
class ImageFindings:
    """What a hit carries: the tags it has (score at or above the tag's threshold) and its probe probabilities."""

    tags: dict[str, float] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)


@dataclass
class NewProbe:
    """A fitted probe to store as the next version of its name."""

    name: str
    fingerprint: str
    positive: str
    coef: npt.NDArray[np.float64]
    intercept: float
    metrics: dict[str, object]
    examples: list[int]


class FindingsStore:
    """Every read and write of tags, probes and their scores goes through here (reached as `Catalog.findings`)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._reads = QueryReads(sessions.kw["bind"])

    # -- tags ------------------------------------------------------------------------------------
    def save_tags(self, tags: Sequence[tuple[str, str, float, npt.NDArray[np.float32]]], fingerprint: str) -> None:
        """Add or replace tags (name, prompt, threshold, unit text vector)."""
        with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            for name, prompt, threshold, vector in tags:
                values = {
                    "prompt": prompt,
                    "threshold": float(threshold),
                    "vector": np.asarray(vector, np.float32).tobytes(),
                    "fingerprint": fingerprint,
                    "created": utcnow(),
                }
                stmt = dialect_insert(dialect, Tag).values(name=name, **values)
                session.execute(stmt.on_conflict_do_update(index_elements=[Tag.name], set_=values))

    def tags(self, names: Sequence[str] | None = None) -> list[Tag]:
        """Stored tags by name (all of them, or these)."""
        query = select(Tag).order_by(Tag.name)
        if names is not None:
            query = query.where(Tag.name.in_(list(names)))
        with self.sessions() as session:
            return list(session.scalars(query))

    def tag_counts(self) -> dict[str, int]:
        """Images that have each tag (score at or above its threshold)."""
        query = having_tags(TagScore.tag, func.count()).group_by(TagScore.tag)
        with self.sessions() as session:
            return {str(name): int(n) for name, n in session.execute(query)}

    def remove_tags(self, names: Sequence[str]) -> int:
        """Delete tags and their scores; returns how many tags existed."""
        with self.sessions() as session, session.begin():
            session.execute(delete(TagScore).where(TagScore.tag.in_(list(names))))
            result = session.execute(delete(Tag).where(Tag.name.in_(list(names))))
            return int(getattr(result, "rowcount", 0) or 0)

    def write_tag_scores(self, names: Sequence[str], ids: IdArray, scores: npt.NDArray[np.floating]) -> None:
        """Upsert the scores of images `ids` (rows) for tags `names` (columns)."""
        id_list = ids.tolist()
        rows = [
            {"tag": name, "image_id": image_id, "score": score}
            for name, column in zip(names, np.asarray(scores, np.float64).T.tolist(), strict=True)
            for image_id, score in zip(id_list, column, strict=True)
        ]
        self._upsert(TagScore, rows, [TagScore.tag, TagScore.image_id], {"score"})

    # -- probes ----------------------------------------------------------------------------------
    def add_probe(self, probe: NewProbe) -> Probe:
        """Store a probe as the next version of its name."""
        with self.sessions() as session, session.begin():
            latest = session.scalar(select(func.max(Probe.version)).where(Probe.name == probe.name)) or 0
            row = Probe(
                name=probe.name,
                version=int(latest) + 1,
                fingerprint=probe.fingerprint,
                positive=probe.positive,
                coef=np.asarray(probe.coef, np.float64).tobytes(),
                intercept=float(probe.intercept),
                metrics=json.dumps(probe.metrics),
                examples=json.dumps(sorted(probe.examples)),
                created=utcnow(),
            )
            session.add(row)
            session.flush()
            session.expunge(row)
            return row

    def probe(self, name: str, version: int | None = None, applied: bool = False) -> Probe | None:
        """The newest version of a probe (or that version; or the newest applied one)."""
        query = select(Probe).where(Probe.name == name).order_by(Probe.version.desc()).limit(1)
        if version is not None:
            query = query.where(Probe.version == version)
        if applied:
            query = query.where(Probe.applied.is_not(None))
        with self.sessions() as session:
            return session.scalars(query).first()

    def probes(self) -> list[Probe]:
        """Every stored version of every probe, by name then version."""
        with self.sessions() as session:
            return list(session.scalars(select(Probe).order_by(Probe.name, Probe.version)))

    def applied_probes(self) -> list[Probe]:
        """Per name, the newest version that was applied: the one new images are scored with."""
        newest = (
            select(Probe.name, func.max(Probe.version).label("version"))
            .where(Probe.applied.is_not(None))
            .group_by(Probe.name)
            .subquery()
        )
        query = select(Probe).join(newest, (Probe.name == newest.c.name) & (Probe.version == newest.c.version))
        with self.sessions() as session:
            return list(session.scalars(query.order_by(Probe.name)))

    def mark_applied(self, probe_id: int, when: datetime | None = None) -> None:
        """Record that this version's scores are (being) written: new images are scored with it from now on."""
        with self.sessions() as session, session.begin():
            session.execute(update(Probe).where(Probe.id == probe_id).values(applied=when or utcnow()))

    def write_probe_scores(
        self, name: str, version: int, ids: IdArray, probabilities: npt.NDArray[np.floating]
    ) -> None:
        """Upsert the probabilities of images `ids` under a probe version."""
        rows = [
            {"probe": name, "image_id": image_id, "version": version, "probability": p}
            for image_id, p in zip(ids.tolist(), np.asarray(probabilities, np.float64).tolist(), strict=True)
        ]
        self._upsert(ProbeScore, rows, [ProbeScore.probe, ProbeScore.image_id], {"version", "probability"})

    def remove_probe(self, name: str) -> int:
        """Delete every version of a probe and its scores; returns how many versions existed."""
        with self.sessions() as session, session.begin():
            session.execute(delete(ProbeScore).where(ProbeScore.probe == name))
            result = session.execute(delete(Probe).where(Probe.name == name))
            return int(getattr(result, "rowcount", 0) or 0)

    def top_probabilities(self, name: str, k: int, exclude: Sequence[int]) -> list[tuple[int, float]]:
        """The k images most likely under a probe's applied scores, leaving out `exclude` (its examples)."""
        query = (
            select(ProbeScore.image_id, ProbeScore.probability)
            .where(ProbeScore.probe == name)
            .order_by(ProbeScore.probability.desc(), ProbeScore.image_id)
        )
        if exclude:
            query = query.where(ProbeScore.image_id.not_in(list(exclude)))
        with self.sessions() as session:
            return [(int(i), float(p)) for i, p in session.execute(query.limit(k))]

    # -- what hits carry ---------------------------------------------------------------------------
    def of_images(self, ids: Sequence[int]) -> dict[int, ImageFindings]:
        """Tags (at or above threshold, with their scores) and probe probabilities of these images: one plain SQL
        statement per 500 ids (what every search's hits carry)."""
        found: dict[int, ImageFindings] = {i: ImageFindings() for i in ids}
        for chunk in in_chunks(list(found), 500):
            for image_id, kind, name, value in self._reads.findings(chunk):
                (found[image_id].tags if kind == "tag" else found[image_id].probes)[name] = value
        return found

    def _upsert(self, model: type, rows: list[dict[str, object]], keys: list[object], columns: set[str]) -> None:
        if not rows:
            return
        with self.sessions() as session, session.begin():
            stmt = dialect_insert(session.get_bind().dialect.name, model.__table__)  # type: ignore[attr-defined]
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns})
            connection = session.connection()  # Core executemany: the ORM's bulk path costs as much as SQLite
            for start in range(0, len(rows), 50_000):
                connection.execute(stmt, rows[start : start + 50_000])
