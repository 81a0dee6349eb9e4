"""The `medsearch eval` command: retrieval quality on a user's labelled set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrieval.cli.common import DataDir, app, fail, open_collection, out, standin_notice
from retrieval.errors import BadQueryError, MedsearchError, WriteFailedError


@app.command("eval")
def evaluate(
    labels: Annotated[Path, typer.Option(help="CSV with columns path,label[,patient]; paths relative to it.")],
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Cut-off of the metrics.")] = 10,
    json_out: Annotated[Path | None, typer.Option(help="Write the full JSON report here.")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write a PNG bar chart per label here.")] = None,
    prompt_template: Annotated[
        str, typer.Option(help="Zero-shot prompt per label; {label} is replaced by the label.")
    ] = "a medical image showing {label}",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Leave-one-out precision@k, recall@k, mAP@k per label (same-patient matches excluded), zero-shot accuracy and
    the cross-validated AUC of a one-vs-rest probe per label."""
    from retrieval import eval_data, evaluation

    if "{label}" not in prompt_template:
        raise typer.BadParameter("--prompt-template must contain {label}")
    try:
        if chart is not None:
            from retrieval.optional import require

            require("matplotlib", "the evaluation chart (--chart)", "eval")
        collection = open_collection(data_dir)
        items = eval_data.read_labels(labels)
        vectors, from_index = eval_data.embed_labelled(collection, items)
        names = sorted({i.label for i in items})
        prompts = collection.load_encoder().encode_texts([prompt_template.format(label=n) for n in names])
        report = evaluation.evaluate(
            vectors, [i.label for i in items], [i.patient for i in items], k, prompts, prompt_template
        )
        data = eval_data.report_dict(report, items, from_index)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(data, indent=2))
        if chart is not None:
            from retrieval.eval_chart import write_chart

            write_chart(report, chart)
    except (MedsearchError, BadQueryError) as exc:
        fail(exc)
        return
    except OSError as exc:
        fail(WriteFailedError(f"could not write the report: {exc}"))
        return
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title=f"{report.images} labelled images, k={k} ({from_index} vectors reused from the index)")
    for column in ("label", "images", "scored", f"P@{k}", f"R@{k}", f"mAP@{k}", "zero-shot", "probe AUC"):
        table.add_column(column, justify="left" if column == "label" else "right")

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, s in report.per_label.items():
        metrics = [cell(v) for v in (s.precision, s.recall, s.map, s.zero_shot_accuracy, s.probe_auc)]
        table.add_row(name, str(s.images), str(s.scored), *metrics)
    table.add_row(
        "all",
        str(report.images),
        str(report.scored),
        f"{report.precision:.3f}",
        f"{report.recall:.3f}",
        f"{report.map:.3f}",
        cell(report.zero_shot_accuracy),
        "",
        style="bold",
    )
    out.print(table)
    if report.skipped:
        out.print(f"{report.skipped} queries skipped: no other image of their label from another patient")
    standin_notice(collection)
