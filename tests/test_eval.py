"""`medsearch eval`: metrics checked against hand-computed values, the real CLI on real DICOMs, rebuild-index types."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval import eval_data
from retrieval.collection import Collection
from retrieval.errors import LabelsFileError, MissingExtraError
from retrieval.evaluation import evaluate, evaluate_rankings, rankings, zero_shot
from retrieval.optional import require
from tests.commands import run
from tests.conftest import SAMPLES, make_settings

# -- metrics from explicit rankings -------------------------------------------------------------
LABELS = ["a", "a", "a", "b", "b", "c"]
PATIENTS = ["P1", "P1", "P2", "P3", "P4", "P5"]  # 0 and 1 are the same patient: never each other's match
RANKED = [
    [3, 2, 4, 5],  # q0 (a): eligible 2..5, relevant {2}
    [2, 4, 3, 5],  # q1 (a): relevant {2}
    [4, 3, 0, 1, 5],  # q2 (a): relevant {0, 1}
    [4, 0, 1, 2, 5],  # q3 (b): relevant {4}
    [0, 3, 1, 2, 5],  # q4 (b): relevant {3}
    [0, 1, 2, 3, 4],  # q5 (c): no other c -> skipped
]


def test_metrics_at_2_match_hand_computed_values() -> None:
    report = evaluate_rankings(RANKED, LABELS, PATIENTS, k=2)
    # by hand, per query (P@2, R@2, AP@2):
    #   q0 top [3,2] rel [0,1]: 1/2, 1/1, (1/2)/min(2,1) = 0.5
    #   q1 top [2,4] rel [1,0]: 1/2, 1,   (1/1)/1 = 1
    #   q2 top [4,3] rel [0,0]: 0,   0,   0
    #   q3 top [4,0] rel [1,0]: 1/2, 1,   1
    #   q4 top [0,3] rel [0,1]: 1/2, 1,   (1/2)/1 = 0.5
    per_query = [(q.precision, q.recall, q.average_precision) for q in report.queries[:5]]
    assert per_query == [(0.5, 1.0, 0.5), (0.5, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 1.0, 1.0), (0.5, 1.0, 0.5)]
    assert report.scored == 5 and report.skipped == 1 and not report.queries[5].scored
    assert report.precision == pytest.approx(2.0 / 5)  # (0.5+0.5+0+0.5+0.5)/5
    assert report.recall == pytest.approx(4.0 / 5)
    assert report.map == pytest.approx(3.0 / 5)  # (0.5+1+0+1+0.5)/5
    a, b, c = report.per_label["a"], report.per_label["b"], report.per_label["c"]
    assert (a.precision, a.recall, a.map) == pytest.approx((1 / 3, 2 / 3, 0.5))
    assert (b.precision, b.recall, b.map) == pytest.approx((0.5, 1.0, 0.75))
    assert (c.images, c.scored, c.precision, c.recall, c.map) == (1, 0, None, None, None)


def test_metrics_at_3_with_two_relevant() -> None:
    report = evaluate_rankings(RANKED, LABELS, PATIENTS, k=3)
    q2 = report.queries[2]  # top [4,3,0] rel [0,0,1]: P = 1/3, R = 1/2, AP = (1/3)/min(3,2) = 1/6
    assert (q2.relevant, q2.precision, q2.recall, q2.average_precision) == pytest.approx((2, 1 / 3, 1 / 2, 1 / 6))
    q0 = report.queries[0]  # top [3,2,4] rel [0,1,0]: 1/3, 1, (1/2)/1
    assert (q0.precision, q0.recall, q0.average_precision) == pytest.approx((1 / 3, 1.0, 0.5))


def unit(angle_deg: float, width: int = 4) -> np.ndarray:
    v = np.zeros(width, np.float32)
    v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return v


def test_rankings_from_vectors_exclude_self_and_same_patient() -> None:
    vectors = np.stack([unit(a) for a in (0, 10, 25, 90, 100, 165)])
    assert rankings(vectors, [None] * 6)[0] == [1, 2, 3, 4, 5]
    assert rankings(vectors, [None] * 6)[3] == [4, 2, 5, 1, 0]  # 10, 65, 75, 80, 90 degrees away
    same = rankings(vectors, ["x", "x", None, "y", "y", None])
    assert same[0] == [2, 3, 4, 5] and same[1] == [2, 3, 4, 5] and same[4] == [5, 2, 1, 0]  # 65, 75, 90, 100 away
    # and the whole pipeline on these vectors: labels by angle bands
    report = evaluate(vectors, ["r", "r", "r", "u", "u", "l"], [None] * 6, k=2)
    assert [q.precision for q in report.queries[:5]] == [1.0, 1.0, 1.0, 0.5, 0.5]  # q3 top [4,2]; q4 top [3,5]


def test_zero_shot_accuracy_from_prompt_vectors() -> None:
    images = np.stack([unit(a) for a in (0, 10, 80, 95, 170)])
    prompts = np.stack([unit(0), unit(180), unit(90)])  # sorted label order: chest, knee, skull
    accuracy, per_label, predicted = zero_shot(images, prompts, ["chest", "chest", "chest", "skull", "knee"])
    assert predicted == ["chest", "chest", "skull", "skull", "knee"]
    assert accuracy == pytest.approx(4 / 5)
    assert per_label == pytest.approx({"chest": 2 / 3, "knee": 1.0, "skull": 1.0})


def test_labels_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,diagnosis\nx.dcm,a\n")
    with pytest.raises(LabelsFileError, match="path,label"):
        eval_data.read_labels(bad)
    with pytest.raises(LabelsFileError, match="does not exist"):
        eval_data.read_labels(tmp_path / "missing.csv")
    few = tmp_path / "few.csv"
    few.write_text("path,label\na.dcm,x\nb.dcm,x\nc.dcm,x\n")
    with pytest.raises(LabelsFileError, match="2 different labels"):
        eval_data.read_labels(few)


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "medsearch\[eval\]"'):
        require("matplotlib", "the evaluation chart (--chart)", "eval")


# -- real images, real code paths --------------------------------------------------------------
SET = [  # (file, label, patient column)
    ("CT_small.dcm", "ct-head", "P1"),
    ("693_J2KI.dcm", "ct-head", "P1"),  # same patient as CT_small: each is the other's only CT -> skipped
    ("MR_small.dcm", "mr", "P2"),
    ("emri_small.dcm", "mr", "P3"),
    ("MR2_J2KI.dcm", "mr", "P4"),
    ("RG1_J2KI.dcm", "cr", "P5"),
    ("RG3_J2KI.dcm", "cr", "P6"),
    ("examples_jpeg2k.dcm", "us", "P7"),
    ("examples_palette.dcm", "us", "P8"),
]


def labelled_set(root: Path) -> Path:
    folder = root / "set" / "images"
    folder.mkdir(parents=True)
    for name, _, _ in SET:
        shutil.copy(SAMPLES / name, folder / name)
    path = root / "set" / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient"])
        writer.writerows([(f"images/{n}", label, patient) for n, label, patient in SET])
    return path


def test_stored_vectors_equal_fresh_embeddings(tmp_path: Path, tiny_model: Path) -> None:
    """Reusing an indexed vector or embedding the file again gives the same vector (same code path)."""
    from indexer.pipeline import IndexOptions, run_index

    labels = labelled_set(tmp_path)
    items = eval_data.read_labels(labels)
    fresh = Collection(make_settings(tmp_path / "fresh", tiny_model))
    embedded, reused = eval_data.embed_labelled(fresh, items)
    assert reused == 0 and embedded.shape[0] == len(SET)
    indexed = Collection(make_settings(tmp_path / "indexed", tiny_model))
    run_index(indexed, [labels.parent / "images"], IndexOptions(workers=0, batch_size=4), None)
    again, reused = eval_data.embed_labelled(indexed, eval_data.read_labels(labels))
    assert reused == len(SET)
    np.testing.assert_allclose(again, embedded, atol=1e-5)
    fresh.close()
    indexed.close()


def hand_metrics(query: dict[str, object], labels: dict[str, str], k: int) -> tuple[float, float, float]:
    rel = [1 if labels[p] == query["label"] else 0 for p in query["top_k"]]  # type: ignore[attr-defined]
    relevant = int(query["relevant"])  # type: ignore[call-overload]
    hits, running, ap = sum(rel), 0, 0.0
    for i, r in enumerate(rel, start=1):
        running += r
        ap += r * running / i
    return hits / k, hits / relevant, ap / min(k, relevant)


@pytest.mark.e2e
def test_eval_cli_end_to_end(cli_env: dict[str, str], tmp_path: Path) -> None:
    labels_csv = labelled_set(tmp_path)
    images = labels_csv.parent / "images"
    run(["index", str(images / "CT_small.dcm"), str(images / "MR_small.dcm"), "--json"], cli_env)
    report_path, chart = tmp_path / "out" / "report.json", tmp_path / "out" / "chart.png"
    args = ["eval", "--labels", str(labels_csv), "-k", "3", "--json-out", str(report_path), "--chart", str(chart)]
    shown = run(args, cli_env).stdout
    assert "mAP@3" in shown and "zero-shot" in shown and "probe AUC" in shown and "2 vectors reused" in shown
    report = json.loads(report_path.read_text())
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    assert report["images"] == len(SET) and report["from_index"] == 2 and report["k"] == 3
    assert report["skipped_queries"] == 2 and report["scored_queries"] == len(SET) - 2  # the two P1 CTs
    by_path = {str((images / n).resolve()): (label, patient) for n, label, patient in SET}
    labels = {p: v[0] for p, v in by_path.items()}
    scored = []
    for query in report["queries"]:
        label, patient = by_path[query["path"]]
        assert query["path"] not in query["top_k"] and len(query["top_k"]) == 3
        assert all(by_path[p][1] != patient for p in query["top_k"])  # no same-patient match
        expected_relevant = sum(1 for p, (lb, pt) in by_path.items() if lb == label and pt != patient)
        assert query["relevant"] == expected_relevant
        if expected_relevant:
            hand = hand_metrics(query, labels, 3)
            assert (query["precision_at_k"], query["recall_at_k"], query["ap_at_k"]) == pytest.approx(hand)
            scored.append(hand)
    assert report["precision_at_k"] == pytest.approx(np.mean([s[0] for s in scored]))
    assert report["recall_at_k"] == pytest.approx(np.mean([s[1] for s in scored]))
    assert report["map_at_k"] == pytest.approx(np.mean([s[2] for s in scored]))
    per_label = report["per_label"]
    assert sum(v["images"] for v in per_label.values()) == len(SET)
    zs = report["zero_shot"]
    assert zs["template"] == "a medical image showing {label}" and 0.0 <= zs["accuracy"] <= 1.0
    weighted = sum(v["zero_shot_accuracy"] * v["images"] for v in per_label.values()) / len(SET)
    assert zs["accuracy"] == pytest.approx(weighted)
    # a probe needs 3 images of the label and 3 others: only "mr" (3 of 9) has one here
    assert {name: v["probe_cv_auc"] is not None for name, v in per_label.items()} == {
        "ct-head": False,
        "mr": True,
        "cr": False,
        "us": False,
    }
    assert 0.0 <= per_label["mr"]["probe_cv_auc"] <= 1.0
    assert "P1" not in report_path.read_text() and "P2" not in report_path.read_text()  # no patient values

    bad = tmp_path / "bad.csv"
    bad.write_text("file,diagnosis\nx.dcm,a\n")
    failed = run(["eval", "--labels", str(bad)], cli_env, check=False)
    assert failed.returncode == 1 and "(bad_labels)" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.e2e
def test_rebuild_index_types_and_stats(cli_env: dict[str, str]) -> None:
    run(["index", str(SAMPLES), "--json"], cli_env)
    built = json.loads(
        run(["rebuild-index", "--type", "ivf-sq8", "--nlist", "2", "--nprobe", "2", "--json"], cli_env).stdout
    )
    assert built["params"] == {"type": "ivf-sq8", "nlist": 2, "nprobe": 2} and built["vectors"] >= 10
    stats = json.loads(run(["stats", "--json"], cli_env).stdout)
    assert stats["index"]["params"]["type"] == "ivf-sq8" and stats["index_vectors"] == stats["vectors"]
    shown = run(["stats"], cli_env).stdout
    assert "ivf-sq8 (nlist=2, nprobe=2)" in shown
    hits = json.loads(run(["search", "--image", str(SAMPLES / "CT_small.dcm"), "-k", "3", "--json"], cli_env).stdout)
    assert hits["hits"][0]["source"].endswith("CT_small.dcm")
    out = run(["rebuild-index", "--type", "hnsw", "--m", "8", "--ef-search", "16"], cli_env).stdout
    assert "vectors as hnsw (m=8, ef_construction=80, ef_search=16)" in out
    assert json.loads(run(["stats", "--json"], cli_env).stdout)["index"]["params"]["m"] == 8
