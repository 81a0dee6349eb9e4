"""Database engine: SQLite in WAL mode by default (any SQLAlchemy URL works), schema creation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from retrieval.store.models import SCHEMA_VERSION, Base, IndexInfo


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process never loses a commit
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    # create_all skips the indexes of tables that exist: a process killed between CREATE TABLE and
    # CREATE INDEX on the first open would otherwise leave the schema without them for good.
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    with Session(engine) as session, session.begin():
        if session.get(IndexInfo, "schema_version") is None:
            session.add(IndexInfo(key="schema_version", value=SCHEMA_VERSION))
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
