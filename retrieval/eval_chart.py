"""PNG bar chart of `medsearch eval` per-label metrics (matplotlib, Agg backend, from the `eval` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.evaluation import RetrievalReport
from retrieval.optional import require


def write_chart(report: RetrievalReport, path: Path) -> None:
    """Grouped bars per label: precision@k, recall@k, AP@k and (if measured) zero-shot accuracy."""
    matplotlib = require("matplotlib", "the evaluation chart (--chart)", "eval")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "the evaluation chart (--chart)", "eval")
    labels = list(report.per_label)
    series = {
        f"precision@{report.k}": [report.per_label[lb].precision or 0.0 for lb in labels],
        f"recall@{report.k}": [report.per_label[lb].recall or 0.0 for lb in labels],
        f"mAP@{report.k}": [report.per_label[lb].map or 0.0 for lb in labels],
    }
    if report.zero_shot_accuracy is not None:
        series["zero-shot accuracy"] = [report.per_label[lb].zero_shot_accuracy or 0.0 for lb in labels]
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    fig, ax = pyplot.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5), dpi=100)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (labels with no scored query: 0)")
    title = f"medsearch eval: {report.images} images, mAP@{report.k} {report.map:.3f}"
    if report.zero_shot_accuracy is not None:
        title += f", zero-shot {report.zero_shot_accuracy:.3f}"
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    pyplot.close(fig)
