"""Database engine: SQLite in WAL mode by default or PostgreSQL; the schema is brought to head by Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from retrieval.errors import MedsearchError
from retrieval.fsutil import private_file
from retrieval.store.migrate import upgrade_to_head

SUPPORTED = ("sqlite", "postgresql")


class UnsupportedDatabaseError(MedsearchError):
    """The database URL names an engine medsearch does not support (or cannot be parsed)."""

    code = "unsupported_database"
    status = 503
    title = "Unsupported database"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never loses a commit
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def dialect_of(url: str) -> str:
    """'sqlite' or 'postgresql' for a SQLAlchemy URL; a clear error for anything else."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise UnsupportedDatabaseError(
            f"MEDSEARCH_DATABASE_URL is not a SQLAlchemy URL ({exc}); "
            "use e.g. postgresql+psycopg://user:password@host:5432/medsearch"
        ) from exc
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(
            f"medsearch supports SQLite and PostgreSQL, not {backend!r}; "
            "set MEDSEARCH_DATABASE_URL to postgresql+psycopg://... or leave it unset for SQLite"
        )
    return backend


def make_engine(url: str) -> Engine:
    """An engine for `url` with the schema migrated to the newest revision (serialised across processes)."""
    if dialect_of(url) == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_file(Path(database))  # 0600 before SQLite makes it 0644 (its -wal and -shm files follow it)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        _require_driver(url)
        engine = create_engine(url, pool_pre_ping=True)
    try:
        upgrade_to_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _require_driver(url: str) -> None:
    """PostgreSQL needs psycopg (the `postgres` extra); say so instead of a bare ImportError."""
    driver = make_url(url).get_driver_name()
    if driver in ("psycopg", "psycopg2"):
        module = "psycopg" if driver == "psycopg" else "psycopg2"
        from retrieval.optional import require

        require(module, feature="PostgreSQL metadata", extra="postgres")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
