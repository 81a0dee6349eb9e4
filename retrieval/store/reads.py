"""The per-query reads of a search as plain SQL on the driver's own connection (sqlite3 or psycopg), no ORM.

A search by id took 2.1 ms in four ORM statements and 0.26 ms as prepared sqlite3 statements (issue 22): the
session, the statement compilation and the ORM's row loading cost more than the data. These statements are
fixed texts (one per IN-list length on SQLite, whose driver caches 128 prepared statements per connection;
`= ANY(%s)` on PostgreSQL, which psycopg prepares after a few executions).

On SQLite each thread keeps one connection of its own, taken out of SQLAlchemy's pool once (checking one out and
back per statement, with the rollback on return, cost more than the statement). It runs in autocommit mode and
only reads: every statement is its own WAL read transaction, which ends when the statement is reset (its rows
fetched, its cursor closed), so each statement sees every write committed before it began, as a pooled
connection would. The connections close when the engine is disposed; a forked child opens its own. PostgreSQL
keeps the pool (a server connection per thread would be a resource the operator did not size for).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, event

from retrieval.store.models import Image, is_image_id
from retrieval.store.sql import IdArray

IMAGE_FIELDS = tuple(c.key for c in Image.__table__.columns)  # id first, as declared
_IMAGE_SELECT = ", ".join(f'i."{name}"' for name in IMAGE_FIELDS)
# The one tag rule (retrieval.store.sql.having_tags) as SQL text: an image has a tag when its score reaches the
# tag's threshold.
TAG_RULE = "FROM tag_scores ts JOIN tags t ON t.name = ts.tag WHERE ts.score >= t.threshold"
READ_MMAP_BYTES = 1 << 40
HIT_SQL_KEPT = 1024  # `hit_rows` keeps its statement's text for up to this many ids (a page of hits: k + margin)
# Evaluated once per statement (uncorrelated): one index probe each, whatever the rows
_ANY_FINDINGS = "(SELECT EXISTS (SELECT 1 FROM tag_scores) OR EXISTS (SELECT 1 FROM probe_scores))"
_ANY_REPORTS = "(SELECT EXISTS (SELECT 1 FROM reports))"
# (study UID, report id, origin, written at, text, truncated, versions, affirmed, negated)
LatestReportRow = tuple[str, int, str, datetime | None, str, bool, int, str, str]


class QueryReads:
    """The reads one search makes, each one statement on a raw connection of `engine` (SQLite: this thread's own)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.dialect: str = engine.dialect.name
        self._postgres = self.dialect == "postgresql"
        self._manager = Image._sa_class_manager  # type: ignore[attr-defined]
        self._dates = {"study_date": _as_date, "indexed_at": _as_datetime}
        self._local = threading.local()  # SQLite: this thread's own connection, with the pid that opened it
        self._held: list[Any] = []  # every thread's connection, closed with the engine's pool
        self._held_lock = threading.Lock()
        self._hit_sql: dict[int, str] = {}  # SQLite: `hit_rows`'s statement by number of ids
        if not self._postgres:
            event.listen(engine, "engine_disposed", self._close_held)

    def _close_held(self, _engine: Engine) -> None:
        """Close every thread's connection (the engine was disposed: the collection is closing)."""
        with self._held_lock:
            held, self._held = self._held, []
            self._local = threading.local()
        for connection in held:
            if connection[1] == os.getpid():
                connection[0].close()

    def _own_connection(self) -> Any:
        """This thread's SQLite connection (opened through the engine, so its pragmas apply), in autocommit."""
        pid = os.getpid()
        held = getattr(self._local, "connection", None)
        if held is not None and held[1] == pid:
            return held[0]
        pooled = self._engine.raw_connection()
        pooled.detach()  # ours from now on: the pool opens another in its place
        connection: Any = pooled.dbapi_connection
        connection.isolation_level = None  # autocommit: no transaction outlives a statement
        # the hits' rows lie on pages scattered over the file: mapped, each is read without a system call and a copy
        # (SQLite caps the size at what it was built for)
        connection.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
        held = (connection, pid)
        with self._held_lock:
            self._held.append(held)
            self._local.connection = held
        return connection

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if not self._postgres:
            cursor = self._own_connection().cursor()
            try:
                yield cursor
            finally:
                cursor.close()  # resets the statement: its read transaction ends here
            return
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool (which ends the driver's read transaction)

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._postgres else text

    def _param(self, value: Any) -> Any:
        """Dates as SQLite holds them (ISO text, as SQLAlchemy's Date type writes them); psycopg adapts its own."""
        return value.isoformat() if isinstance(value, date) and not self._postgres else value

    def _in(self, column: str, ids: Sequence[int] | Sequence[str]) -> tuple[str, list[Any]]:
        """`column IN (...)` for `ids`: one array parameter on PostgreSQL, one placeholder per id on SQLite."""
        if self._postgres:
            return f"{column} = ANY(%s)", [list(ids)]
        return f"{column} IN ({','.join('?' * len(ids))})", list(ids)

    def query_row(self, image_id: int) -> tuple[npt.NDArray[np.float32], str | None, str | None] | None:
        """(stored vector, patient hash, Study Instance UID) of one image."""
        if not is_image_id(image_id):
            return None
        sql = self._sql(
            "SELECT v.vector, i.patient_hash, i.study_instance_uid FROM vectors v JOIN images i ON i.id = v.image_id "
            "WHERE v.image_id = ?"
        )
        with self._cursor() as cursor:
            cursor.execute(sql, (image_id,))
            row = cursor.fetchone()
        if row is None:
            return None
        return np.frombuffer(bytes(row[0]), dtype=np.float32).copy(), row[1], row[2]

    def query_meta(self, image_id: int) -> tuple[str | None, str | None] | None:
        """(patient hash, Study Instance UID) of one image (a search by id takes its vector from the index)."""
        if not is_image_id(image_id):
            return None
        with self._cursor() as cursor:
            cursor.execute(self._sql("SELECT patient_hash, study_instance_uid FROM images WHERE id = ?"), (image_id,))
            row = cursor.fetchone()
        return None if row is None else (row[0], row[1])

    def latest_reports(
        self, studies: Sequence[str]
    ) -> list[tuple[str, int, str, datetime | None, str, bool, int, str, str]]:
        """(study UID, id, origin, written at, text, truncated, how many reports the study has, affirmed text,
        negated phrases) of the latest report of each of these studies that has one, in one statement."""
        if not studies:
            return []
        clause, params = self._in("r.study_instance_uid", studies)
        sql = (
            "SELECT r.study_instance_uid, r.id, r.origin, r.written_at, r.text, r.truncated, "
            "(SELECT count(*) FROM reports v WHERE v.study_instance_uid = r.study_instance_uid), r.affirmed, r.negated "
            f"FROM reports r WHERE r.latest AND {clause}"
        )
        with self._cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            rows = cursor.fetchall()
        return [
            (str(s), int(i), str(o), _as_datetime(w), str(t), bool(c), int(n), str(a), str(g))
            for s, i, o, w, t, c, n, a, g in rows
        ]

    def images(self, ids: Sequence[int]) -> dict[int, Image]:
        """Image rows by id, as detached Image objects filled straight from the driver's rows (what the ORM
        does when it loads one, without the session)."""
        return self._as_images(self._image_rows(ids, ""))

    def hit_rows(self, ids: Sequence[int]) -> tuple[dict[int, Image], bool, bool]:
        """`images` (read-only ones: `_as_read_only_images`), and in the same statement whether the collection
        holds any findings (tag scores or probe probabilities) and any stored report: a search reads those for its
        hits only when there are some. Read with the rows, never cached, so a write by any process is seen at the
        next search.

        A search's hits (distinct ids from the index) on SQLite take a shorter way to the same statement: its text
        kept per number of ids (up to HIT_SQL_KEPT of them) and this thread's connection used directly; with the
        dates converted inline, 10 rows take 73 us instead of 102 (BENCHMARKS.md issue 22, "Round 5")."""
        wanted = ids if isinstance(ids, list) else list(ids)
        width = len(IMAGE_FIELDS)
        if self._postgres or not wanted or len(set(wanted)) != len(wanted) or not _all_image_ids(wanted):
            rows = self._image_rows(ids, f", {_ANY_FINDINGS}, {_ANY_REPORTS}")
        else:
            sql = self._hit_sql.get(len(wanted)) or _hit_statement(len(wanted))
            if len(wanted) <= HIT_SQL_KEPT:
                self._hit_sql.setdefault(len(wanted), sql)
            cursor = self._own_connection().cursor()
            try:
                rows = cursor.execute(sql, wanted).fetchall()
            finally:
                cursor.close()  # resets the statement: its read transaction ends here
        if not rows:
            return {}, False, False
        return self._as_read_only_images(rows), bool(rows[0][width]), bool(rows[0][width + 1])

    def _image_rows(self, ids: Sequence[int], extra_columns: str) -> list[Any]:
        """The driver's rows of IMAGE_FIELDS (then `extra_columns`) for these ids, in one statement."""
        wanted = [i for i in dict.fromkeys(ids) if is_image_id(i)]
        if not wanted:
            return []
        clause, params = self._in("i.id", wanted)
        with self._cursor() as cursor:
            cursor.execute(self._sql(f"SELECT {_IMAGE_SELECT}{extra_columns} FROM images i WHERE {clause}"), params)
            return list(cursor.fetchall())

    def _as_images(self, rows: Sequence[Sequence[Any]]) -> dict[int, Image]:
        """Detached Image objects from rows whose first columns are IMAGE_FIELDS (any further ones are ignored)."""
        found: dict[int, Image] = {}
        new_instance, dates = self._manager.new_instance, self._dates.items()
        for row in rows:
            image = new_instance()
            values = dict(zip(IMAGE_FIELDS, row, strict=False))
            for name, convert in dates:
                values[name] = convert(values[name])
            image.__dict__.update(values)
            found[int(values["id"])] = image
        return found

    def _as_read_only_images(self, rows: Sequence[Sequence[Any]]) -> dict[int, Image]:
        """`_as_images` without the ORM's per-object state: a search's hits are only read (every column is in the
        object's `__dict__`, which the mapped attributes read first), and the state cost as much as the rest of
        building them (2.3 us of ~4 us a row). Setting an attribute on one raises (no state to record it in)."""
        found: dict[int, Image] = {}
        new, fields, image_class = Image.__new__, IMAGE_FIELDS, Image
        to_date, to_datetime = date.fromisoformat, datetime.fromisoformat
        for row in rows:
            image = new(image_class)
            values = image.__dict__
            values.update(zip(fields, row, strict=False))
            # SQLite hands both back as ISO text, PostgreSQL as dates (`_as_date`, `_as_datetime`, inlined)
            if type(day := values["study_date"]) is str:
                values["study_date"] = to_date(day)
            if type(stamp := values["indexed_at"]) is str:
                values["indexed_at"] = to_datetime(stamp)
            found[values["id"]] = image
        return found

    def findings(self, ids: Sequence[int]) -> list[tuple[int, str, str, float]]:
        """(image id, "tag" or "probe", name, value) of these images: the tags they have with their scores and
        their probe probabilities, in one statement (nothing to read costs one index probe per table)."""
        if not ids:
            return []
        tag_clause, tag_params = self._in("ts.image_id", ids)
        probe_clause, probe_params = self._in("ps.image_id", ids)
        sql = (
            f"SELECT ts.image_id, 'tag', ts.tag, ts.score {TAG_RULE} AND {tag_clause} "
            f"UNION ALL SELECT ps.image_id, 'probe', ps.probe, ps.probability FROM probe_scores ps WHERE {probe_clause}"
        )
        with self._cursor() as cursor:
            cursor.execute(self._sql(sql), tag_params + probe_params)
            return [(int(i), str(kind), str(name), float(value)) for i, kind, name, value in cursor.fetchall()]

    def candidate_ids(self, where: Sequence[tuple[str, Sequence[Any]]]) -> IdArray:
        """Ids of the images meeting every (SQL condition on `images i`, its parameters) pair."""
        clauses = " AND ".join(f"({text})" for text, _ in where) or "1 = 1"
        params = [self._param(p) for _, values in where for p in values]
        with self._cursor() as cursor:
            cursor.execute(self._sql(f"SELECT i.id FROM images i WHERE {clauses}"), params)
            return np.fromiter((r[0] for r in cursor.fetchall()), dtype=np.int64)

    def case_candidate_ids(self, level: str, where: Sequence[tuple[str, Sequence[Any]]]) -> IdArray:
        """Ids of the series or study cases holding any image that meets every condition, in id order."""
        column = "series_instance_uid" if level == "series" else "study_instance_uid"
        clauses = " AND ".join(f"({text})" for text, _ in where) or "1 = 1"
        params = [level, *(self._param(p) for _, values in where for p in values)]
        sql = (
            f"SELECT c.id FROM cases c WHERE c.level = ? AND c.uid IN (SELECT i.{column} FROM images i WHERE {clauses})"
        )
        with self._cursor() as cursor:
            cursor.execute(self._sql(sql + " ORDER BY c.id"), params)
            return np.fromiter((r[0] for r in cursor.fetchall()), dtype=np.int64)


def _hit_statement(count: int) -> str:
    """SQLite: the hits' rows and the two flags of `hit_rows`, for `count` ids."""
    places = ",".join("?" * count)
    return f"SELECT {_IMAGE_SELECT}, {_ANY_FINDINGS}, {_ANY_REPORTS} FROM images i WHERE i.id IN ({places})"


def _all_image_ids(ids: Sequence[int]) -> bool:
    """Whether every id could be an image's (`is_image_id`), checked on the smallest and the largest."""
    return is_image_id(min(ids)) and is_image_id(max(ids))


def _as_date(value: Any) -> date | None:
    """SQLite hands dates back as ISO text (SQLAlchemy's Date type stores them so); PostgreSQL as dates."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def _as_datetime(value: Any) -> datetime | None:
    """Timestamps as SQLAlchemy's DateTime reads them back (SQLite: ISO text without a zone)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value
