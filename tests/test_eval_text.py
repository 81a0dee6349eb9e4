"""`medsearch eval --text-queries`: one text query per label scored by the embedding, with --report and --hybrid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.eval_text import evaluate_text_queries, query_text
from tests.commands import run
from tests.conftest import testdata_file
from tests.test_eval_studies import _write_study


class FakeReports:
    """Reports of six one-image studies s0..s5: the filter needs every word, the ranking any of them."""

    def __init__(self, matching: dict[str, set[str]], ranked: dict[str, list[str]]) -> None:
        self._matching, self._ranked = matching, ranked

    def matching(self, query: str) -> set[str]:
        return self._matching[query]

    def ranked_studies(self, text_query: str, limit: int) -> list[str]:
        return self._ranked[text_query][:limit]


def test_the_three_modes_by_hand() -> None:
    # column 0: each item's cosine with the query of label a, column 1: with the query of label b
    vectors = np.asarray([[0.9, 0.1], [0.5, 0.2], [0.3, 0.3], [0.8, 0.9], [0.7, 0.8], [0.1, 0.7]], dtype=np.float32)
    labels = ["a", "a", "a", "b", "b", "b"]
    studies = [f"s{i}" for i in range(6)]
    reports = FakeReports(
        # "left effusion": s0, s1 say both words; s2 says "effusion" only; s3 says "no effusion" (never matches)
        matching={"left effusion": {"s0", "s1"}, "mass": set()},
        ranked={"left effusion": ["s1", "s0", "s2", "s9"], "mass": []},  # s9: a study outside the labelled set
    )
    text_vectors = {"a": np.asarray([1, 0], np.float32), "b": np.asarray([0, 1], np.float32)}
    texts = {"a": "left effusion", "b": "mass"}
    results = evaluate_text_queries(vectors, labels, studies, text_vectors, texts, reports, k=3, depth=100)
    a = {mode: results.rankings[mode]["a"] for mode in ("text", "report", "hybrid")}
    assert a["text"] == [0, 3, 4, 1, 2, 5]
    assert a["report"] == [0, 1]  # fewer than k: the empty place is a miss
    # RRF: item 0 = 1/61 + 1/62, item 1 = 1/64 + 1/61, item 2 = 1/65 + 1/63 > item 3 = 1/62 (embedding only)
    assert a["hybrid"] == [0, 1, 2, 3, 4, 5]
    by_mode = {mode: results.modes[mode].per_label["a"] for mode in ("text", "report", "hybrid")}
    assert [s.precision for s in by_mode.values()] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [s.map for s in by_mode.values()] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert by_mode["report"].recall == pytest.approx(2 / 3)
    # label b: the embedding alone is right; no report has its word, so the filter admits nothing and the
    # hybrid falls back to the embedding's order
    assert results.rankings["report"]["b"] == [] and results.rankings["hybrid"]["b"] == [3, 4, 5, 2, 1, 0]
    means = {mode: results.modes[mode].precision for mode in ("text", "report", "hybrid")}
    assert means == pytest.approx({"text": (1 / 3 + 1) / 2, "report": (2 / 3 + 0) / 2, "hybrid": 1.0})


def test_the_query_text_reads_underscores_as_spaces() -> None:
    assert query_text("{label}", "pleural_effusion") == "pleural effusion"
    assert query_text("chest x-ray with {label}", "mass") == "chest x-ray with mass"


@pytest.mark.e2e  # the real `medsearch index`, `reports import` and `eval` commands
def test_eval_cli_scores_text_queries_with_reports(tmp_path: Path, cli_env: dict[str, str]) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    reports = {"ct": "CT chest: spiculated nodule, right upper lobe.", "mr": "MR brain: no nodule. Normal."}
    rows = []
    for label, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        for patient in ("P1", "P2") if label == "ct" else ("P3", "P4"):
            rows.append((_write_study(folder, testdata_file(name), label, 2, patient), label))
    run(["index", str(folder), "--json"], cli_env)
    imported = tmp_path / "reports.csv"
    imported.write_text("study_instance_uid,report\n" + "".join(f'{uid},"{reports[lb]}"\n' for uid, lb in rows))
    run(["reports", "import", str(imported)], cli_env)
    labels = tmp_path / "labels.csv"
    labels.write_text("study,label\n" + "".join(f"{uid},{'nodule' if lb == 'ct' else 'normal'}\n" for uid, lb in rows))
    args = ["eval", "--labels", str(labels), "-k", "2", "--text-queries"]
    report = json.loads(run([*args, "--json"], cli_env).stdout)["text_queries"]
    assert report["template"] == "{label}"
    for level, relevant in (("image_level", 4), ("study_level", 2)):
        nodule = report[level]["per_label"]["nodule"]
        assert (nodule["query"], nodule["relevant"]) == ("nodule", relevant)
        # "no nodule" in the MR reports is negated: the filter keeps exactly the CT studies' items
        assert nodule["report"]["precision_at_k"] == 1.0
        assert nodule["hybrid"]["precision_at_k"] == 1.0  # both ranks beat the embedding rank alone
        assert report[level]["per_label"]["normal"]["report"]["precision_at_k"] == 1.0
        assert set(report[level]) >= {"text_precision_at_k", "report_map_at_k", "hybrid_map_at_k"}
    ct_studies = {uid for uid, lb in rows if lb == "ct"}
    assert set(report["study_level"]["per_label"]["nodule"]["report"]["top_k"]) == ct_studies
    shown = run(args, cli_env).stdout
    assert "text queries (image level), k=2" in shown and "text queries (study level), k=2" in shown
    assert "P@2 hybrid" in shown
    # labels by path: the images' studies (and so their reports) are found through the index
    by_path = tmp_path / "paths.csv"
    files = sorted(folder.glob("*.dcm"))
    rows_by_path = [f"{f},{'nodule' if f.name.startswith('ct') else 'normal'}\n" for f in files]
    by_path.write_text("path,label\n" + "".join(rows_by_path))
    paths = json.loads(run(["eval", "--labels", str(by_path), "-k", "2", "--text-queries", "--json"], cli_env).stdout)
    per_label = paths["text_queries"]["image_level"]["per_label"]
    assert per_label["nodule"]["relevant"] == 4 and per_label["nodule"]["report"]["precision_at_k"] == 1.0
    assert all(Path(p).name.startswith("ct") for p in per_label["nodule"]["report"]["top_k"])
    # the same collection through `search --hybrid` at each case level
    for level, count in (("series", 4), ("study", 4)):
        found = json.loads(run(["search", "--text", "nodule", "--hybrid", "--level", level, "--json"], cli_env).stdout)
        hits = found["hits"]
        assert len(hits) == count and {h["report_rank"] for h in hits[:2]} == {1, 2}, level
        assert {h["study_instance_uid"] for h in hits[:2]} == ct_studies and hits[2]["report_rank"] is None
