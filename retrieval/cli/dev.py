"""The demo and developer tools (offline stand-in model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrieval.cli.common import DataDir, ProgressBar, app, dev_app, fail, load_settings, out, score_text
from retrieval.cli.demo_next import print_next_steps, serve_demo
from retrieval.errors import MedsearchError


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Folder of sample images.")] = Path("data/samples"),
    serve: Annotated[bool, typer.Option("--serve", help="Then serve the web page on the demo collection.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Index the sample data, then run an image query and a text query (falls back to the stand-in model)."""
    from retrieval.cli.demo import run_demo
    from retrieval.settings_errors import prepare_data_dir

    try:
        settings = load_settings(data_dir)
        prepare_data_dir(settings.data_dir)
        result = run_demo(samples, settings, ProgressBar(quiet=False))
    except MedsearchError as exc:
        fail(exc)
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
                score_text(hit),
                hit.image.modality or "",
                hit.image.label or "",
                Path(hit.image.source_uri).name,
            )
        out.print(table)
    print_next_steps(result.model, result.data_dir, result.image_query, result.text_query)
    if serve:
        serve_demo(result.model, result.data_dir)


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


@dev_app.command("make-test-summarizer")
def make_test_summarizer(
    directory: Annotated[Path, typer.Argument(help="Folder to write the stand-in summary model to.")],
) -> None:
    """Build a tiny random Gemma 3 of MedGemma's classes (offline); point MEDSEARCH_SUMMARY_MODEL at it."""
    from retrieval.summarize.standin import build_standin_summarizer

    path = build_standin_summarizer(directory)
    out.print(
        f"stand-in summary model written to {path}; its text is meaningless.\n"
        f"use it with: MEDSEARCH_SUMMARIZER=transformers MEDSEARCH_SUMMARY_MODEL={path}",
        highlight=False,
    )
