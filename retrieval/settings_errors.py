"""Settings and data-folder problems as one line with a code (never a pydantic or OS traceback)."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from retrieval.errors import DataDirError, MedsearchError
from retrieval.errors import SettingsError as SettingsValueError
from retrieval.fsutil import private_dir

__all__ = [
    "DataDirError",
    "SettingsValueError",
    "from_settings_error",
    "from_validation",
    "prepare_data_dir",
    "translate",
]
PREFIX = "MEDSEARCH_"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def from_validation(exc: ValidationError) -> SettingsValueError:
    """Every refused setting, named by its environment variable, with what was given and what is expected."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        parts.append(f"{PREFIX}{field.upper()}={_shown(error.get('input'))}: {error['msg']}")
    return SettingsValueError("invalid setting: " + "; ".join(parts) + " (see docs/settings.md)")


def from_settings_error(exc: SettingsError) -> SettingsValueError:
    """A value pydantic-settings could not even parse (lists and maps are read as JSON)."""
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return SettingsValueError(f"invalid setting: {exc} (see docs/settings.md)")
    name = PREFIX + match.group(1).upper()
    given = os.environ.get(name, os.environ.get(name.lower(), ""))
    return SettingsValueError(
        f"invalid setting: {name}={_shown(given)} is not valid JSON; lists are given as JSON, "
        f"e.g. {name}='[\"http://host:8080\"]' (see docs/settings.md)"
    )


def translate(exc: Exception) -> MedsearchError | None:
    """The one-line error for a settings failure, or None when `exc` is something else."""
    if isinstance(exc, ValidationError) and exc.title.endswith("Settings"):
        return from_validation(exc)
    if isinstance(exc, SettingsError):
        return from_settings_error(exc)
    return None


def prepare_data_dir(path: Path) -> None:
    """Create the data folder if needed (0700) and prove it is writable, or say plainly why not."""
    where = f"the data folder {str(path)!r} (MEDSEARCH_DATA_DIR or --data-dir)"
    if path.exists() and not path.is_dir():
        raise DataDirError(f"{where} is a file, not a folder: point it at a folder")
    try:
        private_dir(path)  # it will hold patient hashes (the database) and, for a listener, received DICOM
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except NotADirectoryError as exc:
        raise DataDirError(f"{where} cannot be created: a file is in the way in its path") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataDirError(f"{where} cannot be created or written: {reason}") from exc
