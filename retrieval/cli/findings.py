"""`medsearch tags ...` and `medsearch probe ...`: zero-shot tags and few-shot probes over the stored vectors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrieval.cli.common import DataDir, app, fail, open_collection, out, say, standin_notice
from retrieval.cli.tables import file_name
from retrieval.errors import MedsearchError

tags_app = typer.Typer(help="Zero-shot tags: score every image against a vocabulary of prompts.", no_args_is_help=True)
probe_app = typer.Typer(help="Few-shot probes: a classifier trained on labelled images.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")
app.add_typer(probe_app, name="probe")
Chunk = Annotated[int, typer.Option(help="Stored vectors scored per chunk (bounds the memory).", min=64)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@tags_app.command("apply")
def tags_apply(
    vocabulary: Annotated[Path, typer.Argument(help="CSV or JSONL with tag, prompt and optionally threshold.")],
    chunk: Chunk = 8192,
    data_dir: DataDir = None,
) -> None:
    """Score every stored image against each prompt and store the tags; new images are then tagged as indexed."""
    from retrieval.findings.tags import apply_tags, read_vocabulary

    try:
        specs = read_vocabulary(vocabulary)
        collection = open_collection(data_dir)
        report = apply_tags(collection, specs, chunk)
    except MedsearchError as exc:
        fail(exc)
        return
    say(f"applied {len(specs)} tags to {report.images} images in {report.seconds:.1f} s")
    _print_tags(collection)
    standin_notice(collection)


def _print_tags(collection: object) -> None:
    from retrieval.findings.tags import list_tags

    table = Table(title="tags")
    for column in ("tag", "threshold", "images", "prompt"):
        table.add_column(column, justify="right" if column in ("threshold", "images") else "left")
    for info in list_tags(collection):  # type: ignore[arg-type]
        table.add_row(info.tag, f"{info.threshold:.3f}", str(info.images), info.prompt)
    out.print(table)


@tags_app.command("list")
def tags_list(as_json: Json = False, data_dir: DataDir = None) -> None:
    """The stored tags: prompt, threshold and how many images have each."""
    from retrieval.findings.tags import list_tags

    try:
        collection = open_collection(data_dir)
        infos = list_tags(collection)
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        out.print_json(json.dumps([asdict(i) for i in infos]))
    elif not infos:
        say("no tags yet: `medsearch tags apply VOCABULARY.csv` adds some")
    else:
        _print_tags(collection)


@tags_app.command("remove")
def tags_remove(names: Annotated[list[str], typer.Argument(help="Tag names.")], data_dir: DataDir = None) -> None:
    """Forget tags and their scores."""
    from retrieval.findings.tags import remove_tags

    try:
        removed = remove_tags(open_collection(data_dir), names)
    except MedsearchError as exc:
        fail(exc)
        return
    say(f"removed {removed} tags")


def _probe_line(info: object) -> str:
    from retrieval.findings.probes import ProbeInfo

    assert isinstance(info, ProbeInfo)
    return (
        f"probe {info.name} version {info.version} (positive: {info.positive}): {info.positives} positive, "
        f"{info.negatives} negative; {info.folds}-fold cross-validated ROC AUC {info.cv_auc:.3f}, "
        f"accuracy {info.cv_accuracy:.3f}"
    )


@probe_app.command("train")
def probe_train(
    name: Annotated[str, typer.Argument(help="The probe's name (a new version if it exists).")],
    labels: Annotated[Path, typer.Option(help="CSV or JSONL: id, path or sop_instance_uid, and label.")],
    positive: Annotated[
        str | None, typer.Option(help="The class that counts as positive when labels are class names.")
    ] = None,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """Fit a logistic regression on the stored vectors of labelled images and report its cross-validated metrics."""
    from retrieval.findings.probes import train_probe, training_set_from_file

    try:
        collection = open_collection(data_dir)
        info = train_probe(collection, name, training_set_from_file(collection, labels, positive))
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        out.print_json(json.dumps(asdict(info)))
        return
    say(_probe_line(info))
    say(f"not applied yet: `medsearch probe apply {name}` scores every image with it")
    standin_notice(collection)


@probe_app.command("apply")
def probe_apply(name: str, chunk: Chunk = 8192, data_dir: DataDir = None) -> None:
    """Store the newest version's probability for every image; new images are then scored as indexed."""
    from retrieval.findings.probes import apply_probe

    try:
        collection = open_collection(data_dir)
        info, report = apply_probe(collection, name, chunk)
    except MedsearchError as exc:
        fail(exc)
        return
    say(f"applied probe {name} version {info.version} to {report.images} images in {report.seconds:.1f} s")


@probe_app.command("list")
def probe_list(as_json: Json = False, data_dir: DataDir = None) -> None:
    """Every probe version with its cross-validated metrics and whether it is applied."""
    from retrieval.findings.probes import list_probes

    try:
        infos = list_probes(open_collection(data_dir))
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        out.print_json(json.dumps([asdict(i) for i in infos]))
        return
    if not infos:
        say("no probes yet: `medsearch probe train NAME --labels FILE` trains one")
        return
    table = Table(title="probes")
    for column in ("name", "version", "positive", "pos", "neg", "CV AUC", "CV acc.", "applied"):
        table.add_column(column)
    for i in infos:
        cells = [i.name, str(i.version), i.positive, str(i.positives), str(i.negatives)]
        table.add_row(*cells, f"{i.cv_auc:.3f}", f"{i.cv_accuracy:.3f}", "yes" if i.applied else "no")
    out.print(table)


@probe_app.command("remove")
def probe_remove(name: str, data_dir: DataDir = None) -> None:
    """Forget every version of a probe and its probabilities."""
    from retrieval.findings.probes import remove_probe

    try:
        removed = remove_probe(open_collection(data_dir), name)
    except MedsearchError as exc:
        fail(exc)
        return
    say(f"removed probe {name} ({removed} versions)")


@probe_app.command("rank")
def probe_rank(
    name: str,
    k: Annotated[int, typer.Option("-k", help="Number of images.", min=1, max=1000)] = 10,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """The images the applied probe finds most likely, leaving out its training examples."""
    from retrieval.findings.probes import rank_probe

    try:
        collection = open_collection(data_dir)
        info, ranked = rank_probe(collection, name, k)
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        rows = [
            {
                "rank": r,
                "id": img.id,
                "probability": p,
                "modality": img.modality,
                "label": img.label,
                "source": img.source_uri,
            }
            for r, (img, p) in enumerate(ranked, start=1)
        ]
        out.print_json(json.dumps({"probe": name, "version": info.version, "hits": rows}))
        return
    table = Table(
        title=f"probe {name} v{info.version}: most likely images outside its {info.positives + info.negatives} examples"
    )
    for column in ("#", "id", "p", "mod", "label", "source"):
        table.add_column(column)
    for rank, (img, p) in enumerate(ranked, start=1):
        table.add_row(
            str(rank), str(img.id), f"{p:.3f}", img.modality or "", img.label or "", file_name(img.source_uri)
        )
    out.print(table)
    standin_notice(collection)
