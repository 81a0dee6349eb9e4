"""What every command shares: the Typer apps, consoles, settings, error printing and the progress bar."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retrieval import library_warnings
from retrieval.errors import DataDirError, MedsearchError
from retrieval.settings import Settings

app = typer.Typer(
    help="medsearch: similar-case search for medical images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dev_app = typer.Typer(help="Developer tools (offline stand-in model).", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
key_app = typer.Typer(help="API keys for the query service.", no_args_is_help=True)
app.add_typer(key_app, name="key")
out = Console(highlight=False)
err = Console(stderr=True, soft_wrap=True)  # a message stays one line in a log file (no wrapping at 80)


def say(text: str) -> None:
    """Print user data verbatim (paths and reasons may contain [brackets])."""
    out.print(text, markup=False, soft_wrap=True)


class FramesChoice(StrEnum):
    middle = "middle"
    all = "all"


class IndexTypeChoice(StrEnum):
    auto = "auto"
    flat = "flat"
    hnsw = "hnsw"
    ivf_sq8 = "ivf-sq8"
    ivf_fp16 = "ivf-fp16"


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    library_warnings.install()  # odd VR values in a file are not the user's to fix: counted, not printed
    # transformers reads both variables above when (and only if) it is imported: importing it here just to
    # quieten it would cost seconds on commands that never load a model, and delay the offline-model error
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def load_settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def open_collection(data_dir: Path | None, *, read_only: bool = False) -> Any:
    """The collection in `data_dir` (--data-dir) or the configured one; `read_only` commands (search, stats,
    serve) refuse a --data-dir that does not exist instead of creating an empty collection there."""
    if read_only:
        require_existing(data_dir)
    return open_collection_with(load_settings(data_dir))


def require_existing(data_dir: Path | None) -> None:
    """A mistyped --data-dir is an error, not a new empty collection."""
    if data_dir is not None and not data_dir.expanduser().is_dir():
        raise DataDirError(
            f"the data folder {str(data_dir)!r} (--data-dir) does not exist: check its spelling, or index into it "
            "first (`medsearch index --data-dir ...`); search, stats and serve never create one"
        )


def open_collection_with(settings: Settings) -> Any:
    from retrieval.collection import Collection

    collection = Collection(settings)
    if collection.model_note:  # MEDSEARCH_MODEL unset: say which model the collection is searched with
        err.print("[yellow]note:[/] ", end="")
        err.print(collection.model_note, markup=False)
    return collection


def fail(exc: MedsearchError) -> None:
    err.print(f"[bold red]error[/] ({exc.code}): ", end="")
    err.print(str(exc), markup=False)
    raise typer.Exit(code=1)


def standin_notice(collection: Any) -> None:
    fingerprint = collection.catalog.fingerprint()
    if fingerprint is not None and fingerprint.standin:
        err.print(
            "[yellow]note:[/] this index uses the offline stand-in model: similarities are meaningless "
            "(it only proves the plumbing). See README: 'Getting the real MedSigLIP weights'."
        )


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (default: $MEDSEARCH_DATA_DIR).")]
SeriesSlices = Annotated[
    str | None,
    typer.Option(
        "--series-slices",
        metavar="K|all",
        help="Slices sampled per CT/MR/PET volume, evenly over its extent, or 'all' "
        "(default: $MEDSEARCH_SERIES_SLICES, 16). Another K later re-plans indexed series.",
    ),
]


def series_slices_of(value: str | None, settings: Settings) -> int | None:
    """--series-slices (or the setting) as K, None for 'all'; a bad value is a usage error."""
    from retrieval.imaging.series import parse_slices

    try:
        return parse_slices(value if value is not None else settings.series_slices)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--series-slices") from exc


class ProgressBar:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.images = 0
        self.progress = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
        self.task: Any = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("index", total=total, rate="")

    def advance(self, sources: int, images: int) -> None:
        self.images += images
        task = self.progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{self.images / elapsed:.1f} img/s" if elapsed > 0 else ""
        self.progress.update(self.task, advance=sources, rate=rate)

    def finish(self) -> None:
        self.progress.stop()


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def score_text(hit: Any) -> str:
    """Cosine, plus the calibrated probability for text queries."""
    return f"{hit.score:.4f}" + (f" (p={hit.text_score:.3f})" if hit.text_score is not None else "")


def short_uri(uri: str, keep: int = 60) -> str:
    return uri if len(uri) <= keep else "..." + uri[-keep:]
