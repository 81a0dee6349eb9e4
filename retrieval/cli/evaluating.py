"""The `medsearch eval` command: retrieval quality on a user's labelled set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from retrieval.cli.common import DataDir, app, fail, open_collection, out, standin_notice
from retrieval.errors import BadQueryError, MedsearchError, WriteFailedError
from retrieval.evaluation import RetrievalReport as StudyReport

if TYPE_CHECKING:
    from retrieval.eval_text import TextQueryResults


@app.command("eval")
def evaluate(
    labels: Annotated[
        Path,
        typer.Option(
            help="CSV with columns path,label[,patient] (paths relative to it), or study,label[,patient] with "
            "indexed StudyInstanceUIDs: then metrics at image and study level."
        ),
    ],
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Cut-off of the metrics.")] = 10,
    json_out: Annotated[Path | None, typer.Option(help="Write the full JSON report here.")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write a PNG bar chart per label here.")] = None,
    prompt_template: Annotated[
        str, typer.Option(help="Zero-shot prompt per label; {label} is replaced by the label.")
    ] = "a medical image showing {label}",
    text_queries: Annotated[
        bool,
        typer.Option(
            "--text-queries",
            help="Also score one text query per label three ways side by side: by the text embedding, with its "
            "words as a --report filter, and --hybrid (needs reports: see `medsearch reports`).",
        ),
    ] = False,
    query_template: Annotated[
        str, typer.Option(help="--text-queries: the query text per label; {label} is replaced by the label.")
    ] = "{label}",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Leave-one-out precision@k, recall@k, mAP@k per label (same-patient matches excluded), zero-shot accuracy and
    the cross-validated AUC of a one-vs-rest probe per label."""
    from retrieval import eval_data, eval_studies, eval_text, evaluation
    from retrieval.labels import read_labels_table

    if "{label}" not in prompt_template:
        raise typer.BadParameter("--prompt-template must contain {label}")
    if "{label}" not in query_template:
        raise typer.BadParameter("--query-template must contain {label}")
    try:
        if chart is not None:
            from retrieval.optional import require

            require("matplotlib", "the evaluation chart (--chart)", "eval")
        collection = open_collection(data_dir)
        table_in = read_labels_table(labels)
        study_report = None
        texts: dict[str, eval_text.TextQueryResults] = {}
        studies: list[str | None] = []  # per image: its study (--text-queries: where its report is)
        if eval_studies.is_study_table(table_in):  # labels keyed by StudyInstanceUID: image and study level
            study_set = eval_studies.load_studies(collection, eval_studies.read_study_labels(table_in, labels))
            items = [
                eval_data.LabelledImage(Path(uri), label)
                for uri, label in zip(study_set.sources, study_set.labels, strict=True)
            ]
            vectors, from_index, patients = study_set.vectors, len(items), study_set.groups
            study_report = eval_studies.evaluate_studies(study_set, k)
            if text_queries:
                owner = {i: s.uid for s in study_set.studies for i in s.image_ids}
                studies = [owner[i] for i in study_set.image_ids]
                uids = [s.uid for s in study_set.studies]
                texts["study_level"] = eval_text.run_text_queries(
                    collection,
                    eval_studies.study_vectors(study_set),
                    [s.label for s in study_set.studies],
                    uids,
                    query_template,
                    k,
                )
        else:
            items = eval_data.read_labels(labels)
            vectors, from_index = eval_data.embed_labelled(collection, items)
            patients = [i.patient for i in items]
            if text_queries:
                studies = eval_text.studies_of_sources(collection, [str(i.path) for i in items])
        if text_queries:
            image_labels = [i.label for i in items]
            texts = {
                "image_level": eval_text.run_text_queries(
                    collection, vectors, image_labels, studies, query_template, k
                ),
                **texts,
            }
        names = sorted({i.label for i in items})
        prompts = collection.load_encoder().encode_texts([prompt_template.format(label=n) for n in names])
        report = evaluation.evaluate(vectors, [i.label for i in items], patients, k, prompts, prompt_template)
        data = eval_data.report_dict(report, items, from_index)
        if study_report is not None:
            data["study_level"] = eval_studies.study_report_dict(study_report, study_set)
        if texts:
            shown = {"image_level": [str(i.path) for i in items]}
            if study_report is not None:
                shown["study_level"] = [s.uid for s in study_set.studies]
            data["text_queries"] = {
                "template": query_template,
                **{level: eval_text.text_queries_dict(r, shown[level]) for level, r in texts.items()},
            }
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
    if study_report is not None:
        print_study_table(study_report, data["study_level"]["missing_studies"], k)
    for level, results in texts.items():
        print_text_table(results, level.replace("_", " "))
    standin_notice(collection)


def print_study_table(report: StudyReport, missing: list[str], k: int) -> None:
    """The study-level metrics, under the image-level table."""
    table = Table(title=f"study level: {report.images} labelled studies, k={k}")
    for column in ("label", "studies", "scored", f"P@{k}", f"R@{k}", f"mAP@{k}"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for name, s in report.per_label.items():
        metrics = ["-" if v is None else f"{v:.3f}" for v in (s.precision, s.recall, s.map)]
        table.add_row(name, str(s.images), str(s.scored), *metrics)
    total = (f"{report.precision:.3f}", f"{report.recall:.3f}", f"{report.map:.3f}")
    table.add_row("all", str(report.images), str(report.scored), *total, style="bold")
    out.print(table)
    if report.skipped:
        out.print(f"{report.skipped} study queries skipped: no other study of their label from another patient")
    if missing:
        out.print(f"{len(missing)} labelled studies are not indexed: {', '.join(missing[:5])}")


def print_text_table(results: TextQueryResults, level: str) -> None:
    """One text query per label, its P@k and AP@k by the embedding, with the --report filter and --hybrid."""
    from retrieval.eval_text import MODES

    k = results.k
    table = Table(title=f"text queries ({level}), k={k}: by the embedding, with --report, --hybrid")
    table.add_column("label")
    table.add_column("query")
    table.add_column("relevant", justify="right")
    for metric in (f"P@{k}", "AP"):
        for mode in MODES:
            table.add_column(f"{metric} {mode}", justify="right")
    for label, text in results.texts.items():
        summaries = [results.modes[mode].per_label[label] for mode in MODES]
        cells = [f"{s.precision or 0.0:.3f}" for s in summaries] + [f"{s.map or 0.0:.3f}" for s in summaries]
        table.add_row(label, text, str(summaries[0].images), *cells)
    means = [f"{results.modes[m].precision:.3f}" for m in MODES] + [f"{results.modes[m].map:.3f}" for m in MODES]
    table.add_row("all", "", "", *means, style="bold")
    out.print(table)
