"""Commands that change a data folder: index, failures, dropped, remove, rebuild-index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from retrieval.cli.common import (
    DataDir,
    FramesChoice,
    IndexTypeChoice,
    ProgressBar,
    SeriesSlices,
    app,
    err,
    fail,
    load_settings,
    open_collection,
    open_collection_with,
    out,
    say,
    series_slices_of,
    standin_notice,
)
from retrieval.cli.ray_options import (
    RayActors,
    RayAddress,
    RayDecoders,
    UseRay,
    driver_settings,
    print_ray,
    ray_output_to_stderr,
    ray_report,
)
from retrieval.errors import MedsearchError

DROPPED_WHY = {"skipped": "not_an_image", "excluded": "excluded_from_volume"}  # any other: a copy


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders, zip or tar(.gz) archives.")],
    labels: Annotated[Path | None, typer.Option(help="CSV/JSONL sidecar labels.")] = None,
    frames: Annotated[
        FramesChoice, typer.Option(help="Multi-frame policy: middle frame, or every frame.")
    ] = FramesChoice.middle,
    series_slices: SeriesSlices = None,
    workers: Annotated[int | None, typer.Option(help="Decode worker processes (0 = inline).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per encoder batch.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    allow_failures: Annotated[
        bool, typer.Option("--allow-failures", help="Exit 0 even when files failed or nothing was found.")
    ] = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
    ray_decoders: RayDecoders = None,
    data_dir: DataDir = None,
) -> None:
    """Index images (DICOM, PNG, JPEG, TIFF) into the data folder; re-runs add only what is new.

    With --ray, decoding and embedding run on a Ray cluster; planning and writing stay here.
    Exit status: 0 when every file was indexed (or already was), 2 when any failed or nothing was found.
    """
    from indexer.pipeline import IndexOptions, run_index
    from retrieval.labels import load_labels

    ray = ray or ray_address is not None
    missing = [str(p) for p in paths if not p.exists()]
    if missing:  # before the model loads: a typo is not a permanent failure of a file
        raise typer.BadParameter(f"no such file or folder: {', '.join(missing)}", param_hint="PATHS")

    try:
        settings = load_settings(data_dir)
        collection = open_collection_with(driver_settings(settings) if ray else settings)
        options = IndexOptions(
            frames=frames.value,
            workers=settings.workers if workers is None else workers,
            batch_size=batch_size or settings.batch_size,
            labels=load_labels(labels) if labels else None,
            series_slices=series_slices_of(series_slices, settings),
        )
        bar = ProgressBar(quiet or as_json)
        if ray:
            from indexer.ray_ingest import RayOptions, run_index_ray

            shape = RayOptions(ray_address, ray_actors, ray_decoders, settings.device)
            with ray_output_to_stderr():
                summary: Any = run_index_ray(collection, paths, options, shape, bar)
        else:
            summary = run_index(collection, paths, options, bar)
    except MedsearchError as exc:
        fail(exc)
        return
    rates = summary.images_per_second()
    report = {
        "sources": summary.sources,
        "indexed": summary.indexed,
        "skipped": summary.skipped,
        "duplicates": summary.duplicates,
        "failed": summary.failed,
        "not_images": sum(summary.not_images.values()),
        "not_images_by_class": summary.not_images,
        "reports": summary.reports,
        "skipped_by_sampling": summary.sampled_out,
        "excluded_from_volumes": summary.excluded,
        "encoder_calls_saved": summary.encoder_calls_saved,
        "removed_by_replanning": summary.removed,
        "seconds": round(summary.seconds, 3),
        "images_per_second": {k: round(v, 2) for k, v in rates.items()},
        "encoder_busy": round(summary.encoder_busy, 3),
    }
    if ray:
        report["ray"] = ray_report(summary)
    if as_json:
        out.print_json(json.dumps(report))
        _exit_status(summary, allow_failures)
        return
    out.print(
        f"indexed {summary.indexed} images from {summary.sources} sources in {summary.seconds:.1f} s "
        f"({rates['overall']:.1f} img/s); skipped {summary.skipped} already done, "
        f"{summary.duplicates} duplicates; {sum(summary.not_images.values())} not images; {summary.failed} failed",
        highlight=False,
    )
    if summary.reports:
        say(f"  structured reports stored as their study's report: {summary.reports} (`medsearch reports show UID`)")
    if summary.encoder_calls_saved or summary.removed:
        say(
            f"  series: {summary.sampled_out} slices skipped by sampling, {summary.excluded} left out of volumes "
            f"(`medsearch dropped` says why), {summary.encoder_calls_saved} encoder calls saved"
            + (f"; {summary.removed} images no longer sampled removed" if summary.removed else "")
        )
    if summary.not_images:
        classes = ", ".join(f"{name} {n}" for name, n in sorted(summary.not_images.items()))
        say(f"  not images (skipped; `medsearch dropped` lists them): {classes}")
    stages = ", ".join(f"{s} {rates[s]:.1f}" for s in ("decode", "preprocess", "encode", "write"))
    out.print(f"per stage (img/s): {stages}; encoder busy {summary.encoder_busy:.0%}")
    if ray:
        print_ray(summary)
    for failure in summary.failures[:10]:
        say(f"  failed: {failure.uri}: [{failure.code}] {failure.reason}")
    if summary.failed > 10:
        out.print(f"  ... {summary.failed - 10} more: `medsearch failures`")
    standin_notice(collection)
    _exit_status(summary, allow_failures)


def _exit_status(summary: Any, allow_failures: bool) -> None:
    """Exit 2 (like `pull`) when a file failed or there was nothing to index, unless --allow-failures."""
    if summary.sources == 0:
        err.print("nothing to index: no image files found in the given paths")
    elif summary.failed:
        err.print(f"{summary.failed} file(s) failed (`medsearch failures` lists them with the reason)")
    else:
        return
    if not allow_failures:
        raise typer.Exit(code=2)


@app.command()
def failures(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 1000,
    data_dir: DataDir = None,
) -> None:
    """List sources that could not be indexed, with the reason (and where a received instance's bytes are kept)."""
    from indexer.quarantine import Quarantine

    try:
        collection = open_collection(data_dir, read_only=True)
        rows = collection.catalog.failures(limit)
        quarantine = Quarantine(collection.settings.resolved_spool_dir).entries()
    except MedsearchError as exc:
        fail(exc)
        return
    kept = {entry.uri: str(entry.path) for entry in quarantine}
    items = [
        {
            "source": f.source_uri,
            "code": f.code,
            "reason": f.reason,
            "recorded_at": f.recorded_at.isoformat(),
            "kept": kept.get(f.source_uri),
        }
        for f in rows
    ]
    listed = {item["kept"] for item in items}
    items += [  # kept copies whose failure record is gone (another copy of the same instance was indexed)
        {"source": e.uri, "code": e.code, "reason": e.reason, "recorded_at": e.recorded_at, "kept": str(e.path)}
        for e in quarantine
        if str(e.path) not in listed
    ]
    if as_json:
        out.print_json(json.dumps(items))
        return
    for item in items:
        where = f" (kept: {item['kept']}; `medsearch requeue` retries)" if item["kept"] else ""
        say(f"{item['source']}: [{item['code']}] {item['reason']}{where}")
    out.print(f"{len(items)} failures")


@app.command()
def dropped(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 1000,
    data_dir: DataDir = None,
) -> None:
    """List files not indexed on purpose: copies of an instance already indexed (and the source each repeats),
    non-image DICOM objects (and their SOP class), and slices left out of their series' volume (and why)."""
    try:
        rows = open_collection(data_dir, read_only=True).catalog.dropped(limit)
    except MedsearchError as exc:
        fail(exc)
        return
    items = [
        {
            "source": s.uri,
            "why": DROPPED_WHY.get(s.status, "copy"),
            "sop_class": s.sop_class,
            "reason": s.reason,
            "duplicate_of": s.duplicate_of,
            "recorded_at": s.processed_at.isoformat(),
        }
        for s in rows
    ]
    if as_json:
        out.print_json(json.dumps(items))
        return
    for item in items:
        why = {
            "copy": f"copy of {item['duplicate_of']}",
            "not_an_image": f"not an image ({item['sop_class']})",
            "excluded_from_volume": f"left out of its series' volume: {item['reason']}",
        }[item["why"]]
        say(f"{item['source']}: {why}")
    counts = {why: sum(1 for item in items if item["why"] == why) for why in ("copy", "not_an_image")}
    excluded = len(items) - sum(counts.values())
    out.print(f"{counts['copy']} copies, {counts['not_an_image']} not images, {excluded} left out of volumes")


@app.command()
def remove(
    ids: Annotated[list[int] | None, typer.Option("--id", help="Image id (repeatable).")] = None,
    source: Annotated[str | None, typer.Option(help="Every image whose source path starts with this.")] = None,
    study: Annotated[str | None, typer.Option(help="Every image of this Study Instance UID.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Remove images (rows, vectors and index entries); a later `index` run can add them back."""
    import numpy as np

    from retrieval.sources.read import forget, stored_prefix

    if not ids and not source and not study:
        raise typer.BadParameter("give --id, --source or --study")
    try:
        collection = open_collection(data_dir)
        with collection.writer_lock():
            prefix = stored_prefix(source) if source else None  # PACS sources (URLs) as given
            found = collection.catalog.find_ids(ids=ids or [], source_prefix=prefix, study_uid=study)
            uris = {image.source_uri for image in collection.catalog.images(found).values()}
            removed = collection.catalog.remove(found)
            still = {image.source_uri for image in collection.catalog.images_by_source(sorted(uris))}
            forget(uris - still, collection.settings)  # e.g. a received CT's kept pixels go with its last image
            if collection.index is not None:
                collection.index.remove(np.asarray(found, dtype=np.int64))
                if collection.case_indexes is not None:  # their series and studies were recomputed by the store
                    collection.case_indexes.catch_up()
                collection.save_index()
    except MedsearchError as exc:
        fail(exc)
        return
    out.print(f"removed {removed} images")


@app.command("rebuild-index")
def rebuild_index(
    index_type: Annotated[
        IndexTypeChoice | None, typer.Option("--type", help="Index type (default: MEDSEARCH_INDEX_TYPE, auto).")
    ] = None,
    nlist: Annotated[int | None, typer.Option(min=1, help="IVF: number of lists (default ~sqrt(n)).")] = None,
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF: lists visited per query (text: 1.5x).")] = None,
    m: Annotated[int | None, typer.Option("--m", min=4, max=256, help="HNSW: links per node.")] = None,
    ef_construction: Annotated[int | None, typer.Option(min=8, help="HNSW: build beam width.")] = None,
    ef_search: Annotated[int | None, typer.Option(min=1, help="HNSW: query beam width.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new index's description as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Rebuild the vector index from the stored vectors (no re-embedding), optionally as another type."""
    overrides = {"nlist": nlist, "nprobe": nprobe, "m": m, "ef_construction": ef_construction, "ef_search": ef_search}
    try:
        collection = open_collection(data_dir)
        with collection.writer_lock():
            fingerprint = collection.catalog.fingerprint()
            index = collection.index
            if fingerprint is None or index is None:
                out.print("nothing indexed yet")
                return
            total = index.rebuild(collection.catalog, index_type.value if index_type else None, **overrides)
            if collection.case_indexes is not None:  # the series and study indexes: rebuilt from the cases table
                for case in collection.case_indexes.levels.values():
                    case.rebuild()
            collection.save_index()
    except MedsearchError as exc:
        fail(exc)
        return
    info: dict[str, Any] = index.describe()
    if as_json:
        out.print_json(json.dumps(info))
        return
    params = info.get("params", {})
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if k != "type")
    seconds = info.get("build", {}).get("seconds")
    kind = f" as {params['type']}" if params else ""
    detail = f" ({shown})" if shown else ""
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    out.print(f"rebuilt the index with {total} vectors{kind}{detail}{took}")
