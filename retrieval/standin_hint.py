"""Point a user whose model does not load at the stand-in `medsearch demo` already built, if there is one."""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import ModelLoadError
from retrieval.settings import Settings

STANDIN_FOLDER = "standin-model"  # under the data folder: where `medsearch demo` builds the offline stand-in
DEMO_FOLDER = "demo-standin"  # the demo collection indexed with it
BUILD_ADVICE = "Without network access, `medsearch dev make-test-model DIR`"


def existing_standin(settings: Settings) -> Path | None:
    """The stand-in model `medsearch demo` built in this data folder (or its parent), unless it is in use."""
    for root in (settings.data_dir, settings.data_dir.parent):
        folder = root / STANDIN_FOLDER
        if (folder / "config.json").is_file() and Path(settings.model).resolve() != folder.resolve():
            return folder
    return None


def with_standin_hint(exc: ModelLoadError, settings: Settings) -> ModelLoadError:
    """The same error, naming the stand-in that already exists instead of advising to build one."""
    folder = existing_standin(settings)
    if folder is None:
        return exc
    message = str(exc).split(BUILD_ADVICE)[0].rstrip()
    demo = folder.parent / DEMO_FOLDER
    where = f"; the demo collection indexed with it is --data-dir {demo}" if demo.is_dir() else ""
    return ModelLoadError(
        f"{message} An offline stand-in model already exists: MEDSEARCH_MODEL={folder} uses it (its similarities "
        f"are meaningless; it only proves the plumbing){where}, or run `make serve-demo`."
    )
