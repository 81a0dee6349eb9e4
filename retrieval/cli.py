"""The `medsearch` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
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
from rich.table import Table

from retrieval.errors import MedsearchError, ModelLoadError
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
err = Console(stderr=True)


def _say(text: str) -> None:
    """Print user data verbatim (paths and reasons may contain [brackets])."""
    out.print(text, markup=False, soft_wrap=True)


class FramesChoice(StrEnum):
    middle = "middle"
    all = "all"


class GroupChoice(StrEnum):
    image = "image"
    study = "study"
    series = "series"


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # odd VR values in a file are not the user's to fix
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _open(data_dir: Path | None) -> Any:
    from retrieval.collection import Collection

    return Collection(_settings(data_dir))


def _fail(exc: MedsearchError) -> None:
    err.print(f"[bold red]error[/] ({exc.code}): ", end="")
    err.print(str(exc), markup=False)
    raise typer.Exit(code=1)


def _standin_notice(collection: Any) -> None:
    fingerprint = collection.catalog.fingerprint()
    if fingerprint is not None and fingerprint.standin:
        err.print(
            "[yellow]note:[/] this index uses the offline stand-in model: similarities are meaningless "
            "(it only proves the plumbing). See README: 'Getting the real MedSigLIP weights'."
        )


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (default: $MEDSEARCH_DATA_DIR).")]


class _Bar:
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


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders, zip or tar(.gz) archives.")],
    labels: Annotated[Path | None, typer.Option(help="CSV/JSONL sidecar labels.")] = None,
    frames: Annotated[
        FramesChoice, typer.Option(help="Multi-frame policy: middle frame, or every frame.")
    ] = FramesChoice.middle,
    workers: Annotated[int | None, typer.Option(help="Decode worker processes (0 = inline).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per encoder batch.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Index images (DICOM, PNG, JPEG, TIFF) into the data folder; re-runs add only what is new."""
    from indexer.labels import load_labels
    from indexer.pipeline import IndexOptions, run_index

    try:
        collection = _open(data_dir)
        settings = collection.settings
        options = IndexOptions(
            frames=frames.value,
            workers=settings.workers if workers is None else workers,
            batch_size=batch_size or settings.batch_size,
            labels=load_labels(labels) if labels else None,
        )
        summary = run_index(collection, paths, options, _Bar(quiet or as_json))
    except MedsearchError as exc:
        _fail(exc)
        return
    rates = summary.images_per_second()
    report = {
        "sources": summary.sources,
        "indexed": summary.indexed,
        "skipped": summary.skipped,
        "duplicates": summary.duplicates,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 3),
        "images_per_second": {k: round(v, 2) for k, v in rates.items()},
        "encoder_busy": round(summary.encoder_busy, 3),
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(
        f"indexed {summary.indexed} images from {summary.sources} sources in {summary.seconds:.1f} s "
        f"({rates['overall']:.1f} img/s); skipped {summary.skipped} already done, "
        f"{summary.duplicates} duplicates; {summary.failed} failed",
        highlight=False,
    )
    stages = ", ".join(f"{s} {rates[s]:.1f}" for s in ("decode", "preprocess", "encode", "write"))
    out.print(f"per stage (img/s): {stages}; encoder busy {summary.encoder_busy:.0%}")
    for failure in summary.failures[:10]:
        _say(f"  failed: {failure.uri}: [{failure.code}] {failure.reason}")
    if summary.failed > 10:
        out.print(f"  ... {summary.failed - 10} more: `medsearch failures`")
    _standin_notice(collection)


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


@app.command()
def search(
    image: Annotated[Path | None, typer.Option(help="Query image file (DICOM, PNG, JPEG, TIFF).")] = None,
    text: Annotated[str | None, typer.Option(help="Query text, e.g. 'right lower lobe consolidation'.")] = None,
    image_id: Annotated[int | None, typer.Option("--id", help="Use an indexed image (by id) as the query.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    modality: Annotated[list[str] | None, typer.Option(help="Only these modalities (repeatable).")] = None,
    body_part: Annotated[list[str] | None, typer.Option(help="Only these body parts (repeatable).")] = None,
    date_from: Annotated[str | None, typer.Option(help="Study date on or after (YYYY-MM-DD).")] = None,
    date_to: Annotated[str | None, typer.Option(help="Study date on or before (YYYY-MM-DD).")] = None,
    label: Annotated[str | None, typer.Option(help="Only images with this label.")] = None,
    exclude_same_patient: Annotated[bool, typer.Option(help="Drop images of the query's patient.")] = False,
    exclude_same_study: Annotated[bool, typer.Option(help="Drop images of the query's study.")] = False,
    group_by: Annotated[GroupChoice, typer.Option(help="Best image per study or series.")] = GroupChoice.image,
    text_weight: Annotated[float, typer.Option(help="Weight of --text when combined with --image.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Find the most similar indexed images to an image, a text, an indexed image, or image+text."""
    from retrieval import search as engine
    from retrieval.store.repo import Filters

    if image_id is not None and (image is not None or text is not None):
        raise typer.BadParameter("--id cannot be combined with --image or --text")
    if image is None and text is None and image_id is None:
        raise typer.BadParameter("give --image, --text or --id")
    filters = Filters(
        modality=modality or [],
        body_part=body_part or [],
        date_from=_parse_date(date_from),
        date_to=_parse_date(date_to),
        label=label,
    )
    try:
        collection = _open(data_dir)
        if image_id is not None:
            query = engine.embed_id(collection, image_id)
        elif image is not None:
            from retrieval.source_read import read_file

            query = engine.embed_image(collection, read_file(image, collection.settings.max_file_bytes))
            if text:
                query = engine.combine(query, engine.embed_text(collection, text), text_weight)
        else:
            assert text is not None
            query = engine.embed_text(collection, text)
        hits = engine.search(
            collection,
            query,
            k=k,
            filters=filters,
            exclude_same_patient=exclude_same_patient,
            exclude_same_study=exclude_same_study,
            group_by=group_by.value,
        )
    except MedsearchError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(json.dumps({"query": query.kind, "hits": [h.as_dict() for h in hits]}))
        return
    table = Table(title=f"{len(hits)} similar images ({query.kind} query)")
    for column in ("rank", "id", "score", "modality", "date", "label", "study UID", "source"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        row = hit.as_dict()
        table.add_row(
            str(hit.rank),
            str(hit.image.id),
            _score(hit),
            str(row["modality"] or ""),
            str(row["study_date"] or ""),
            str(row["label"] or ""),
            str(row["study_instance_uid"] or ""),
            _short(hit.image.source_uri),
        )
    out.print(table)
    _standin_notice(collection)


def _score(hit: Any) -> str:
    """Cosine, plus the calibrated probability for text queries."""
    return f"{hit.score:.4f}" + (f" (p={hit.text_score:.3f})" if hit.text_score is not None else "")


def _short(uri: str, keep: int = 60) -> str:
    return uri if len(uri) <= keep else "..." + uri[-keep:]


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False, data_dir: DataDir = None) -> None:
    """Counts of images, vectors, studies, sources and failures; images by modality."""
    try:
        collection = _open(data_dir)
    except MedsearchError as exc:
        _fail(exc)
        return
    report: dict[str, Any] = collection.catalog.stats()
    index = collection.index
    report["index_vectors"] = index.ntotal if index is not None else 0
    fingerprint = collection.catalog.fingerprint()
    report["model"] = fingerprint.model_id if fingerprint else None
    report["model_fingerprint"] = fingerprint.key if fingerprint else None
    report["standin_model"] = bool(fingerprint and fingerprint.standin)
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    for key in ("images", "vectors", "index_vectors", "studies", "sources", "failures", "model", "model_fingerprint"):
        out.print(f"{key:>18}: {report[key]}")
    out.print(
        f"{'by modality':>18}: " + ", ".join(f"{m} {n}" for m, n in sorted(report["by_modality"].items())),
        highlight=False,
    )
    if report["failures_by_code"]:
        out.print(
            f"{'failures by code':>18}: "
            + ", ".join(f"{c} {n}" for c, n in sorted(report["failures_by_code"].items())),
            highlight=False,
        )


@app.command()
def failures(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 1000,
    data_dir: DataDir = None,
) -> None:
    """List sources that could not be indexed, with the reason."""
    try:
        rows = _open(data_dir).catalog.failures(limit)
    except MedsearchError as exc:
        _fail(exc)
        return
    items = [
        {"source": f.source_uri, "code": f.code, "reason": f.reason, "recorded_at": f.recorded_at.isoformat()}
        for f in rows
    ]
    if as_json:
        out.print_json(json.dumps(items))
        return
    for item in items:
        _say(f"{item['source']}: [{item['code']}] {item['reason']}")
    out.print(f"{len(items)} failures")


@app.command()
def remove(
    ids: Annotated[list[int] | None, typer.Option("--id", help="Image id (repeatable).")] = None,
    source: Annotated[str | None, typer.Option(help="Every image whose source path starts with this.")] = None,
    study: Annotated[str | None, typer.Option(help="Every image of this Study Instance UID.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Remove images (rows, vectors and index entries); a later `index` run can add them back."""
    import numpy as np

    if not ids and not source and not study:
        raise typer.BadParameter("give --id, --source or --study")
    try:
        collection = _open(data_dir)
        with collection.writer_lock():
            prefix = str(Path(source).resolve()) if source and not source.startswith(("/", "\\")) else source
            found = collection.catalog.find_ids(ids=ids or [], source_prefix=prefix, study_uid=study)
            removed = collection.catalog.remove(found)
            if collection.index is not None:
                collection.index.remove(np.asarray(found, dtype=np.int64))
                collection.save_index()
    except MedsearchError as exc:
        _fail(exc)
        return
    out.print(f"removed {removed} images")


@app.command("rebuild-index")
def rebuild_index(data_dir: DataDir = None) -> None:
    """Rebuild the FAISS index from the stored vectors (no re-embedding)."""
    try:
        collection = _open(data_dir)
        with collection.writer_lock():
            fingerprint = collection.catalog.fingerprint()
            if fingerprint is None or collection.index is None:
                out.print("nothing indexed yet")
                return
            total = collection.index.rebuild(collection.catalog)
            collection.save_index()
    except MedsearchError as exc:
        _fail(exc)
        return
    out.print(f"rebuilt the index with {total} vectors")


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Folder of sample images.")] = Path("data/samples"),
    data_dir: DataDir = None,
) -> None:
    """Index the sample data, then run an image query and a text query (falls back to the stand-in model)."""
    from indexer.demo import run_demo

    try:
        result = run_demo(samples, _settings(data_dir), _Bar(quiet=False))
    except MedsearchError as exc:
        _fail(exc)
        return
    if result.fallback_reason:
        out.print(
            f"[yellow]The real model could not be loaded[/]: {result.fallback_reason}\n"
            f"[yellow]Falling back to the offline stand-in model[/] at {result.model}: its similarities "
            "are meaningless; it only proves the plumbing.",
            highlight=False,
        )
    else:
        out.print(f"model: {result.model}")
    s = result.summary
    out.print(
        f"data folder: {result.data_dir}\nindexed {s.indexed} images from {s.sources} files "
        f"({s.skipped} already indexed, {s.failed} failed) in {s.seconds:.1f} s",
        highlight=False,
    )
    for title, hits in (
        (f"image query: {result.image_query}", result.image_hits),
        (f"text query: {result.text_query!r}", result.text_hits),
    ):
        table = Table(title=title)
        for column in ("rank", "id", "score", "modality", "label", "source"):
            table.add_column(column)
        for hit in hits:
            table.add_row(
                str(hit.rank),
                str(hit.image.id),
                _score(hit),
                hit.image.modality or "",
                hit.image.label or "",
                Path(hit.image.source_uri).name,
            )
        out.print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default $MEDSEARCH_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default $MEDSEARCH_PORT, 8000).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the REST API and the web page (uvicorn); refuses to bind beyond loopback without API keys."""
    import uvicorn

    from api.app import create_app
    from api.config import ServiceSettings

    settings = ServiceSettings()
    updates: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port), ("data_dir", data_dir)) if v}
    settings = settings.model_copy(update=updates)
    try:
        settings.check_bind()
        app_ = create_app(settings)
    except (MedsearchError, ValueError) as exc:
        _fail(exc if isinstance(exc, MedsearchError) else MedsearchError(str(exc), code="bad_settings"))
        return
    logging.getLogger("medsearch").setLevel(logging.INFO)
    audit = logging.getLogger("medsearch.audit")  # one bare JSON object per line, for log shippers
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit.addHandler(handler)
    audit.propagate = False
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level="info")


@key_app.command("new")
def key_new(key_id: Annotated[str, typer.Argument(help="A name for the key holder, e.g. 'radiology-ws3'.")]) -> None:
    """Make an API key: prints the key (give it to the client) and the line for MEDSEARCH_API_KEYS."""
    import secrets

    from api.config import hash_key

    if not key_id.replace("-", "").replace("_", "").isalnum():
        raise typer.BadParameter("use letters, digits, '-' and '_' only")
    key = secrets.token_urlsafe(32)
    _say(f"key: {key}\nadd to MEDSEARCH_API_KEYS (comma-separated): {key_id}:{hash_key(key)}")


@dev_app.command("make-test-model")
def make_test_model(
    directory: Annotated[Path, typer.Argument(help="Folder to write the stand-in model to.")],
    width: Annotated[int, typer.Option(help="Embedding width (MedSigLIP's is 1152).")] = 32,
    layers: Annotated[int, typer.Option(help="Vision transformer layers.")] = 2,
) -> None:
    """Build a tiny random SigLIP of MedSigLIP's classes (offline); point MEDSEARCH_MODEL at it."""
    from retrieval.encoders.standin import build_standin_model

    heads = 16 if width % 16 == 0 and width >= 256 else 2
    path = build_standin_model(directory, width=width, layers=layers, heads=heads)
    out.print(
        f"stand-in model written to {path} (width {width}); its similarities are meaningless.\n"
        f"use it with: MEDSEARCH_MODEL={path}",
        highlight=False,
    )


def main() -> None:
    """Console-script entry point."""
    _quiet_libraries()
    try:
        app()
    except ModelLoadError as exc:  # pragma: no cover - defensive; commands already translate errors
        err.print(f"error ({exc.code}): {exc}")
        sys.exit(1)
