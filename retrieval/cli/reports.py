"""`medsearch reports ...`: import reports from CSV/JSONL and show a study's stored (de-identified) reports."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from retrieval.cli.common import DataDir, app, fail, open_collection, out, say
from retrieval.errors import MedsearchError, NotFoundError

reports_app = typer.Typer(help="Reports of studies: DICOM SRs are read by `index`; text exports are imported here.")
app.add_typer(reports_app, name="reports")
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@reports_app.command("import")
def reports_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (with a header row) or JSONL (.jsonl): study_instance_uid or "
            "accession_number, report, optionally date."
        ),
    ],
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """De-identify and store each row's report as its study's report (the latest by date wins; all are kept)."""
    from retrieval.reports.imports import import_reports

    try:
        collection = open_collection(data_dir)
        summary = import_reports(collection, file)
    except MedsearchError as exc:
        fail(exc)
        return
    if as_json:
        out.print_json(json.dumps(asdict(summary)))
        return
    say(
        f"{summary.rows} rows: {summary.stored} reports stored ({summary.waiting} wait for their study's images), "
        f"{summary.duplicates} already stored, {len(summary.rejected)} rejected, {summary.truncated} cut to "
        f"MEDSEARCH_REPORT_MAX_CHARS"
    )
    if summary.not_utf8:
        say("note: the file is not UTF-8; it was read as Windows-1252")
    for row, reason in summary.rejected[:20]:
        say(f"  row {row}: {reason}")
    if len(summary.rejected) > 20:
        say(f"  ... and {len(summary.rejected) - 20} more")


@reports_app.command("show")
def reports_show(
    study: Annotated[str, typer.Argument(help="Study Instance UID.")],
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """A study's stored reports, latest first: the de-identified text and the negated phrases words do not match."""
    try:
        collection = open_collection(data_dir, read_only=True)
        rows = collection.catalog.reports.all_of(study)
        if not rows:
            raise NotFoundError(f"no report is stored for study {study}: check the UID, or import its report")
    except MedsearchError as exc:
        fail(exc)
        return
    items = [
        {
            "id": r.id,
            "latest": r.latest,
            "origin": r.origin,
            "written_at": r.written_at.isoformat() if r.written_at else None,
            "truncated": r.truncated,
            "redactions": r.redactions,
            "text": r.text,
            "negated": r.negated.splitlines(),
        }
        for r in rows
    ]
    if as_json:
        out.print_json(json.dumps(items))
        return
    for item in items:
        flag = "latest" if item["latest"] else "earlier"
        say(f"report {item['id']} ({flag}, {item['origin']}, written {item['written_at'] or 'date unknown'}):")
        out.print(str(item["text"]), markup=False)
        if item["negated"]:
            out.print("negated: " + "; ".join(item["negated"]), markup=False)  # type: ignore[arg-type]
