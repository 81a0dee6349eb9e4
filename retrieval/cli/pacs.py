"""PACS commands: pull from a DICOMweb server, listen for C-STORE as a DICOM destination."""

from __future__ import annotations

import json
import os
import signal
import threading
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from retrieval.cli.common import (
    DataDir,
    FramesChoice,
    ProgressBar,
    SeriesSlices,
    app,
    err,
    fail,
    load_settings,
    open_collection,
    open_collection_with,
    out,
    parse_date,
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
from retrieval.errors import ListenFailedError, MedsearchError, SettingsError

if TYPE_CHECKING:  # the CLI imports the indexer lazily, per command
    from indexer.spool import Spool, SpoolWorker
    from retrieval.collection import Collection


class AuthChoice(StrEnum):
    none = "none"
    basic = "basic"
    bearer = "bearer"


def _secret(var: str | None, what: str) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise SettingsError(f"{what} environment variable {var} is not set")
    return value


def _split(values: list[str] | None) -> list[str]:
    return [v.strip().upper() for item in values or [] for v in item.split(",") if v.strip()]


@app.command()
def pull(
    dicomweb: Annotated[str | None, typer.Option("--dicomweb", help="DICOMweb base URL (default: setting).")] = None,
    since: Annotated[str | None, typer.Option(help="Studies on or after this date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Studies on or before this date (YYYY-MM-DD).")] = None,
    modality: Annotated[list[str] | None, typer.Option(help="Only these modalities: CR,DX,CT (repeatable).")] = None,
    auth: Annotated[AuthChoice | None, typer.Option(help="Authentication (default: setting).")] = None,
    user: Annotated[str | None, typer.Option(help="User for basic auth.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Name of the environment variable holding the basic-auth password.")
    ] = None,
    token_env: Annotated[
        str | None, typer.Option(help="Name of the environment variable holding the bearer token.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Instances fetched at the same time.")] = None,
    frames: Annotated[FramesChoice, typer.Option(help="Multi-frame policy.")] = FramesChoice.middle,
    series_slices: SeriesSlices = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
    ray_decoders: RayDecoders = None,
    data_dir: DataDir = None,
) -> None:
    """Pull instances from a DICOMweb server (QIDO-RS + WADO-RS); re-runs fetch only new instances.

    Series are planned from their WADO-RS metadata: of a CT/MR/PET volume only K sampled slices are fetched.

    With --ray, this machine fetches; decoding and embedding run on a Ray cluster, writing stays here.
    """
    from indexer.pipeline import IndexOptions, run_source
    from retrieval.sources.dicomweb import Dicomweb, DicomwebConfig
    from retrieval.sources.pull import DicomwebSource, PullQuery

    query = PullQuery(since=parse_date(since), until=parse_date(until), modalities=_split(modality))
    ray = ray or ray_address is not None
    try:
        settings = load_settings(data_dir)
        collection = open_collection_with(driver_settings(settings) if ray else settings)
        updates: dict[str, Any] = {}
        if auth is not None:
            updates["auth"] = auth.value
        if user is not None:
            updates["user"] = user
        if password_env is not None:
            updates["password"] = _secret(password_env, "--password-env")
        if token_env is not None:
            updates["token"] = _secret(token_env, "--token-env")
        config = DicomwebConfig.from_settings(settings, dicomweb)
        config = DicomwebConfig(**{**config.__dict__, **updates})
        client = Dicomweb(config)
        source = DicomwebSource(client, query, workers or settings.dicomweb_workers, settings.max_file_bytes)
        options = IndexOptions(
            frames=frames.value,
            workers=settings.workers,
            batch_size=settings.batch_size,
            series_slices=series_slices_of(series_slices, settings),
        )
        bar = ProgressBar(quiet or as_json)
        if ray:
            from indexer.ray_ingest import RayOptions, run_source_ray

            with ray_output_to_stderr():
                shape = RayOptions(ray_address, ray_actors, ray_decoders, settings.device)
                summary: Any = run_source_ray(collection, source, options, shape, bar)
        else:
            summary = run_source(collection, source, options, bar)
    except MedsearchError as exc:
        fail(exc)
        return
    report: dict[str, Any] = {
        "server": config.url,
        "found": source.found,
        "already_indexed": summary.skipped,
        "fetched": source.fetched,
        "indexed": summary.indexed,
        "sampled_out": summary.sampled_out,
        "excluded": summary.excluded,
        "duplicates": summary.duplicates,
        "failed": summary.failed,
        "failures": [{"source": f.uri, "code": f.code, "reason": f.reason} for f in summary.failures],
        "bytes": dict(client.received),
        "seconds": round(summary.seconds, 3),
    }
    if ray:
        report["ray"] = ray_report(summary)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(
            f"pulled from {config.url}: {source.found} instances found, {summary.skipped} already indexed, "
            f"{source.fetched} fetched, {summary.indexed} images indexed, {summary.sampled_out} slices skipped by "
            f"sampling, {summary.excluded} excluded from their volume, {summary.duplicates} duplicates, "
            f"{summary.failed} failed, {sum(client.received.values()) / 1e6:.1f} MB received "
            f"({summary.seconds:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
        if ray:
            print_ray(summary)
        for failure in summary.failures[:20]:
            say(f"  failed: {failure.uri}: [{failure.code}] {failure.reason}")
        standin_notice(collection)
    if summary.failed:
        err.print(f"{summary.failed} instance(s) failed; they are retried on the next pull (`medsearch failures`)")
        raise typer.Exit(code=2)


def _spool_worker(
    collection: Collection, queue: Spool, workers: int | None, series_slices: str | None = None
) -> SpoolWorker:
    """The worker that indexes a spool with the collection's batch and series settings (`listen` and `requeue`)."""
    from indexer.pipeline import IndexOptions
    from indexer.spool import SpoolWorker

    settings = collection.settings
    options = IndexOptions(
        workers=settings.workers if workers is None else workers,
        batch_size=settings.batch_size,
        series_slices=series_slices_of(series_slices, settings),
    )
    return SpoolWorker(
        collection, queue, options, settings.spool_batch, settings.spool_poll_seconds, settings.series_quiet_seconds
    )


@app.command()
def listen(
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="Our AE title (default: setting).")] = None,
    port: Annotated[int | None, typer.Option(help="DICOM port (default: setting, 11112).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: setting, 127.0.0.1).")] = None,
    allow: Annotated[str | None, typer.Option(help="Comma-separated calling AE titles allowed (default: all).")] = None,
    spool: Annotated[str | None, typer.Option(help="Spool folder (default: DATA_DIR/spool).")] = None,
    workers: Annotated[int | None, typer.Option(help="Decode worker processes (0 = inline).")] = None,
    series_slices: SeriesSlices = None,
    data_dir: DataDir = None,
) -> None:
    """Be a DICOM destination: a Storage SCP that spools every instance durably and indexes the spool.

    A CT/MR/PET series is planned (K slices kept) once quiet for MEDSEARCH_SERIES_QUIET_SECONDS.
    """
    from pathlib import Path

    from indexer.listener import start_listener
    from indexer.spool import Spool

    try:
        collection = open_collection(data_dir)
        settings = collection.settings
        collection.load_encoder()  # a model problem is reported now, not after the first C-STORE
        folder = Path(spool) if spool else settings.resolved_spool_dir
        queue = Spool(folder)
        worker = _spool_worker(collection, queue, workers, series_slices)
        allowed = [a.strip() for a in (allow if allow is not None else settings.listen_allow).split(",") if a.strip()]
        title = ae_title or settings.listen_ae_title
        server = start_listener(
            queue, title, host or settings.listen_host, settings.listen_port if port is None else port, allowed
        )
    except MedsearchError as exc:
        fail(exc)
        return
    except OSError as exc:
        fail(ListenFailedError(f"cannot listen: {exc.strerror or exc}"))
        return
    import logging

    logging.getLogger("indexer.spool").setLevel(logging.INFO)  # one line per indexed batch
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    bound_host, bound_port = server.server_address[:2]
    who = ", ".join(allowed) if allowed else "any calling AE"
    say(f"listening as {title} on {bound_host}:{bound_port} ({who}); spool {folder}")
    out.file.flush()
    standin_notice(collection)
    stop.wait()
    server.shutdown()
    worker.stop()
    say(f"stopped; indexed {worker.indexed} images while listening")


@app.command()
def requeue(
    spool: Annotated[str | None, typer.Option(help="Spool folder (default: DATA_DIR/spool).")] = None,
    workers: Annotated[int | None, typer.Option(help="Decode worker processes (0 = inline).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Retry quarantined received instances: move them back into the spool and index it now."""
    from pathlib import Path

    from indexer.quarantine import Quarantine
    from indexer.spool import Spool

    try:
        collection = open_collection(data_dir)
        settings = collection.settings
        queue = Spool(Path(spool) if spool else settings.resolved_spool_dir)
        quarantine = Quarantine(queue.folder)
        moved = quarantine.release(quarantine.entries(), queue.folder)
        worker = _spool_worker(collection, queue, workers)
        while worker.drain_once():
            pass
    except MedsearchError as exc:
        fail(exc)
        return
    still = len(worker.quarantine.entries())
    waiting = len(queue.pending(1_000_000))
    out.print(
        f"requeued {moved} quarantined instances; indexed {worker.indexed} images; {still} quarantined; "
        f"{waiting} still waiting in the spool",
        highlight=False,
    )
    if still:
        raise typer.Exit(code=2)
