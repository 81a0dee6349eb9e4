"""Commands that read a data folder: search and stats."""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from retrieval.cli.common import (
    DataDir,
    app,
    fail,
    open_collection,
    out,
    parse_date,
    say,
    standin_notice,
)
from retrieval.cli.tables import WIDE_WIDTH, hits_table
from retrieval.errors import BadQueryError, MedsearchError
from retrieval.feedback import ALPHA, BETA, GAMMA
from retrieval.imaging.roi import parse_roi
from retrieval.vocabulary import GroupBy, Level, Rerank, SearchFilters, filter_help, stats_report
from retrieval.why_empty import why_empty


class ExportChoice(StrEnum):
    sr = "sr"


class ExportVia(StrEnum):
    cstore = "cstore"
    stow = "stow"


@app.command()
def search(
    image: Annotated[Path | None, typer.Option(help="Query image file (DICOM, PNG, JPEG, TIFF).")] = None,
    text: Annotated[str | None, typer.Option(help="Query text, e.g. 'right lower lobe consolidation'.")] = None,
    image_id: Annotated[int | None, typer.Option("--id", help="Use an indexed image (by id) as the query.")] = None,
    series: Annotated[
        str | None, typer.Option("--series", help="Use an indexed series (its SeriesInstanceUID) as the query.")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Use an indexed study (its StudyInstanceUID) as the query.")
    ] = None,
    case: Annotated[
        list[Path] | None,
        typer.Option(
            "--case", help="Use a case as the query: its DICOM files, a folder of them or one zip. Repeatable."
        ),
    ] = None,
    level: Annotated[
        Level | None,
        typer.Option(
            help="What a hit is: image, series (mean of its slices) or study (mean of its series). "
            "Default: image; series for --series and --case, study for --study."
        ),
    ] = None,
    rerank: Annotated[
        Rerank,
        typer.Option(help="maxsim: re-rank the top 50 series/studies by late interaction over their slices."),
    ] = "none",
    like: Annotated[
        list[int] | None, typer.Option("--like", help="Relevance feedback: move towards this image id. Repeatable.")
    ] = None,
    unlike: Annotated[
        list[int] | None, typer.Option("--unlike", help="Relevance feedback: move away from this image id. Repeatable.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Feedback weight of the base query.")] = ALPHA,
    beta: Annotated[float, typer.Option(help="Feedback weight of the liked images' mean.")] = BETA,
    gamma: Annotated[float, typer.Option(help="Feedback weight of the unliked images' mean.")] = GAMMA,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    modality: Annotated[list[str] | None, typer.Option(help=filter_help("modality") + " Repeatable.")] = None,
    body_part: Annotated[list[str] | None, typer.Option(help=filter_help("body_part") + " Repeatable.")] = None,
    date_from: Annotated[str | None, typer.Option(help=filter_help("date_from"))] = None,
    date_to: Annotated[str | None, typer.Option(help=filter_help("date_to"))] = None,
    label: Annotated[str | None, typer.Option(help=filter_help("label"))] = None,
    report: Annotated[str | None, typer.Option(help=filter_help("report"))] = None,
    tag: Annotated[list[str] | None, typer.Option(help=filter_help("tag") + " Repeatable.")] = None,
    probe: Annotated[str | None, typer.Option(help=filter_help("probe"))] = None,
    min_prob: Annotated[float | None, typer.Option(help=filter_help("min_prob"), min=0.0, max=1.0)] = None,
    exclude_same_patient: Annotated[
        bool, typer.Option("--exclude-same-patient", help=filter_help("exclude_same_patient"))
    ] = False,
    exclude_same_study: Annotated[
        bool, typer.Option("--exclude-same-study", help=filter_help("exclude_same_study"))
    ] = False,
    group_by: Annotated[GroupBy, typer.Option(help="Best image per study or series.")] = "image",
    text_weight: Annotated[float, typer.Option(help="Weight of --text when combined with --image.")] = 0.5,
    hybrid: Annotated[
        bool,
        typer.Option(
            "--hybrid",
            help="Rank by the embedding and by the --text words in the studies' reports, fused by reciprocal rank "
            "fusion, at any --level (a series or study ranks by its study's report); hits show both ranks.",
        ),
    ] = False,
    show_duplicates: Annotated[
        bool, typer.Option("--show-duplicates", help="Also list near-duplicate copies (folded by default).")
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, whole UIDs and paths.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
    summarize: Annotated[
        bool, typer.Option("--summarize", help="Compare the query with its top matches (MedGemma).")
    ] = False,
    roi: Annotated[
        str | None, typer.Option(help="Search by a region x,y,w,h of --image or --id (source pixels, >= 8x8).")
    ] = None,
    frame: Annotated[int | None, typer.Option(help="Multi-frame --image: use this 1-based frame.", min=1)] = None,
    export: Annotated[
        ExportChoice | None,
        typer.Option(help="Send the results to the PACS as a DICOM SR in the query's study (DICOM queries only)."),
    ] = None,
    export_via: Annotated[
        ExportVia | None, typer.Option(help="Only this export route (default: every configured one).")
    ] = None,
    export_without_uids: Annotated[
        bool,
        typer.Option(
            "--export-without-uids", help="The SR lists rank, score, level and id only: no other patients' UIDs."
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Find the most similar indexed images to an image, a text, an indexed image, or image+text; --like and
    --unlike refine that query (or, alone, make one) by relevance feedback."""
    from retrieval import query as engine
    from retrieval.cli.context_view import context_lines, snippet_lines
    from retrieval.context import reference_context
    from retrieval.feedback import Weights, feedback_query
    from retrieval.query_cases import embed_case, embed_upload
    from retrieval.query_levels import search_level_page

    if image_id is not None and (image is not None or text is not None):
        raise typer.BadParameter("--id cannot be combined with --image or --text")
    cases = [name for name, given in (("--series", series), ("--study", study), ("--case", case)) if given]
    if cases and (len(cases) > 1 or image is not None or text is not None or image_id is not None):
        raise typer.BadParameter(f"{cases[0]} is a query of its own: not with --image, --text, --id or {cases[-1]}")
    if image is None and text is None and image_id is None and not like and not cases:
        raise typer.BadParameter("give --image, --text, --id, --series, --study, --case or --like")
    level = level or ("study" if study else "series" if series or case else "image")
    filters = SearchFilters(
        modality=modality or [],
        body_part=body_part or [],
        date_from=parse_date(date_from),
        date_to=parse_date(date_to),
        label=label,
        report=report,
        tag=tag or [],
        probe=probe,
        min_prob=min_prob,
        exclude_same_patient=exclude_same_patient,
        exclude_same_study=exclude_same_study,
    )
    data: bytes | None = None
    try:
        collection = open_collection(data_dir, read_only=True)
        if summarize:
            from retrieval.summarize.factory import build_summary_service

            service = build_summary_service(collection.settings)
            service.require()  # refuse before searching when summaries are off
        seed: engine.QueryVector | None = None
        region = parse_roi(roi) if roi else None
        if region is not None and image_id is None and image is None:
            raise typer.BadParameter("--roi needs --image or --id")
        if series or study:
            seed = embed_case(collection, "series" if series else "study", str(series or study))
        elif case:
            seed = embed_upload(collection, read_case(case, collection.settings.max_file_bytes))
        elif image_id is not None:
            seed = (
                engine.embed_id(collection, image_id)
                if region is None
                else engine.embed_region(collection, image_id, region)
            )
        elif image is not None:
            from retrieval.sources.files import read_file

            data = read_file(image, collection.settings.max_file_bytes)
            seed = engine.embed_image(collection, data, roi=region, frame=frame)
            if text:
                seed = engine.combine(seed, engine.embed_text(collection, text), text_weight)
        elif text is not None:
            seed = engine.embed_text(collection, text)
        header = _export_header(collection, image_id, data) if export else None
        if like or unlike or seed is None:
            weights = Weights(alpha=alpha, beta=beta, gamma=gamma)
            query = feedback_query(collection, like or [], unlike or [], base=seed, weights=weights)
        else:
            query = seed
        if hybrid:
            from retrieval.hybrid import hybrid_cases, hybrid_search, require_text

            if group_by != "image" or rerank != "none":
                raise BadQueryError("--hybrid ranks images or cases (--level): leave --group-by and --rerank out")
            if level == "image":
                hits = hybrid_search(
                    collection,
                    query,
                    require_text(text),
                    k=k,
                    filters=filters.store_filters(),
                    exclude_same_patient=filters.exclude_same_patient,
                    exclude_same_study=filters.exclude_same_study,
                )
            else:
                hits, _ = hybrid_cases(
                    collection,
                    query,
                    require_text(text),
                    level=level,
                    k=k,
                    filters=filters.store_filters(),
                    exclude_same_patient=filters.exclude_same_patient,
                    exclude_same_study=filters.exclude_same_study,
                )
        else:
            hits, _ = search_level_page(
                collection,
                query,
                level=level,
                rerank=rerank,
                k=k,
                filters=filters.store_filters(),
                exclude_same_patient=filters.exclude_same_patient,
                exclude_same_study=filters.exclude_same_study,
                group_by=group_by,
                show_duplicates=show_duplicates,
            )
        empty_reason = None if hits else why_empty(collection, filters.store_filters())
        summary = _summarize(service, collection, hits, image_id, data, text) if summarize and hits else None
        exported = None
        if header is not None:
            from retrieval.export.run import export_sr, region_text
            from retrieval.export.send import Route

            via: Route | None = "cstore" if export_via == ExportVia.cstore else "stow" if export_via else None
            exported = export_sr(
                collection,
                header,
                hits,
                query.kind,
                include_uids=not export_without_uids,
                via=via,
                region=region_text(query.region),
            )
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        from retrieval.sources.dicomweb import retrieve_url

        base = collection.settings.dicomweb_url
        rows = [{**h.as_dict(), "retrieve_url": retrieve_url(base, *_uids(h))} for h in hits]
        answer: dict[str, Any] = {"query": query.kind, "hits": rows, "context": reference_context(hits).as_dict()}
        if query.region is not None:
            answer["roi"] = list(query.region)
        if empty_reason is not None:
            answer["empty_reason"] = empty_reason
        if summarize:
            answer["summary"] = asdict(summary) if summary is not None else None
        if exported is not None:
            answer["export"] = asdict(exported)
        out.print_json(json.dumps(answer))
        return
    if empty_reason is None:
        what = {"image": "images", "series": "series", "study": "studies"}[level]
        where = "" if query.region is None else ", region " + ",".join(map(str, query.region))
        table = hits_table(f"{len(hits)} similar {what} ({query.kind} query{where})", hits, wide)
        console = Console(width=WIDE_WIDTH, highlight=False) if wide else out
        console.print(table)
        for line in [*snippet_lines(hits), *context_lines(reference_context(hits))]:
            console.print(line, highlight=False)
    else:
        say(f"no results: {empty_reason}")
    standin_notice(collection)
    if exported is not None:
        routes = ", ".join(f"{s['route']} {s['target']}" for s in exported.sent)
        say(f"SR {exported.sop_instance_uid} ({exported.matches} matches) stored in the query's study by {routes}")
    if summary is not None:
        ids = ", ".join(map(str, summary.compared_ids))
        out.print(f"\n[bold]Summary[/] by {summary.model} (compared images {ids}):", highlight=False)
        say(summary.text or "(the model returned no text)")
        out.print(f"[yellow]{summary.notice}[/]", highlight=False)
    elif summarize:
        say("no hits: nothing to summarize")


def _summarize(
    service: Any, collection: Any, hits: list[Any], image_id: int | None, data: bytes | None, text: str | None
) -> Any:
    """The comparison of the query and its top hits (scores from this search)."""
    from retrieval.summarize.cases import build_request

    request = build_request(
        collection,
        [h.image.id for h in hits],
        limit=collection.settings.summary_matches,
        query_id=image_id,
        query_bytes=data,
        query_text=text,
        scores=[h.score for h in hits],
    )
    return service.summarize(request)


def read_case(paths: list[Path], limit: int) -> list[bytes]:
    """The files of a case given on the command line: files, the files of folders (sorted), or one zip."""
    from retrieval.sources.files import read_file

    files: list[Path] = []
    for path in paths:
        files += (
            sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if path.is_dir()
            else [path]
        )
    return [read_file(p, limit) for p in files]


def _export_header(collection: Any, image_id: int | None, data: bytes | None) -> Any:
    """The query's own DICOM header for --export sr, checked before searching (routes configured, DICOM query)."""
    from retrieval.export.errors import ExportNeedsDicomError
    from retrieval.export.run import PNG_HINT, header_of, indexed_header
    from retrieval.export.send import targets

    targets(collection.settings)
    if image_id is not None:
        return indexed_header(collection, image_id)
    if data is not None:
        return header_of(data)
    raise ExportNeedsDicomError(f"a text or feedback query has no study: {PNG_HINT}")


def _uids(hit: Any) -> tuple[str | None, str | None, str | None]:
    image = hit.image
    return image.study_instance_uid, image.series_instance_uid, image.sop_instance_uid


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False, data_dir: DataDir = None) -> None:
    """Counts of images, vectors, studies, sources and failures; images by modality."""
    try:
        collection = open_collection(data_dir, read_only=True)
    except MedsearchError as exc:
        fail(exc)
        return
    report = stats_report(collection)
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    keys = ("images", "vectors", "index_vectors", "series", "studies", "sources", "failures", "model")
    for key in (*keys, "model_fingerprint"):
        out.print(f"{key:>18}: {report[key]}")  # type: ignore[literal-required]
    out.print(
        f"{'by modality':>18}: " + ", ".join(f"{m} {n}" for m, n in sorted(report["by_modality"].items())),
        highlight=False,
    )
    out.print(
        f"{'by encoder':>18}: " + ", ".join(f"{e} {n}" for e, n in sorted(report["by_encoder"].items())),
        highlight=False,
    )
    out.print(f"{'encoder':>18}: {report['encoder']} (CPU: {', '.join(report['cpu_features']) or 'none of note'})")
    out.print(f"{'encoder runs':>18}: {report['encoder_runs']}", highlight=False)
    if report["encoder_warning"]:
        out.print(f"{'encoder warning':>18}: {report['encoder_warning']}", highlight=False)
    if report["index"]:
        info = report["index"]
        described = info["params"]
        kinds = dict(described) if isinstance(described, dict) else {}
        params = ", ".join(f"{k}={v}" for k, v in kinds.items() if k != "type")
        mapped = ", memory-mapped" if info.get("memory_mapped") else ""
        out.print(f"{'index':>18}: {kinds.get('type')}" + (f" ({params})" if params else "") + mapped)
    if report["reports"]:
        out.print(
            f"{'reports':>18}: {report['reports']} of {report['report_studies']} studies "
            f"({report['reports_waiting']} studies wait for their images)"
        )
    if report["not_images"]:
        out.print(
            f"{'not images':>18}: {report['not_images']} skipped ("
            + ", ".join(f"{c} {n}" for c, n in sorted(report["not_images_by_class"].items()))
            + ")",
            highlight=False,
        )
    if report["encoder_calls_saved"]:
        out.print(
            f"{'series sampling':>18}: {report['slices_skipped_by_sampling']} slices skipped by sampling, "
            f"{report['encoder_calls_saved']} encoder calls saved (with the slices left out of volumes)",
            highlight=False,
        )
    if report["failures_by_code"]:
        out.print(
            f"{'failures by code':>18}: "
            + ", ".join(f"{c} {n}" for c, n in sorted(report["failures_by_code"].items())),
            highlight=False,
        )
