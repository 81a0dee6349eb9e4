"""Run the packaged Alembic migrations on open, one process at a time, adopting pre-Alembic databases."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number: the PostgreSQL advisory lock every medsearch process takes around its upgrade.
ADVISORY_KEY = 0x6D65647365617263  # "medsearc"


def alembic_config() -> Config:
    """The Alembic configuration of the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of medsearch."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated, e.g. made by 0.1's create_all, or empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema to head. Serialised: an advisory lock on PostgreSQL, a file lock next to a SQLite file.

    A database made before Alembic (tables, no alembic_version) is not recreated: the baseline revision only
    creates what is missing, so its rows stay and it is recorded at the baseline, then upgraded.
    """
    with _serialised(engine) as connection:
        if current_revision(connection) == head_revision():
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def _serialised(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:  # DDL is transactional here: the lock ends with the commit
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
            yield connection
        return
    database = engine.url.database
    if not database or database == ":memory:":
        with engine.begin() as connection:
            yield connection
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the OS if this process is killed
        with engine.begin() as connection:
            yield connection
    finally:
        os.close(fd)
