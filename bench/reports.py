"""Reports benchmark (issue 21): synthetic radiology reports at scale, word and hybrid queries vs vector-only.

A radiology lexicon assembled here (findings, anatomy, modifiers, negations, normal statements) makes `--reports`
synthetic reports, one study each; the first `--images` studies also hold one indexed image (a synthetic row and a
1152-wide clustered unit vector, as bench/api_load.py grows them), the rest are reports whose images never came.

Measured, all in one run on one data folder:
- import rate, full pipeline: `import_reports` on a CSV of `--pipeline-sample` rows (cap, de-identification,
  negation, store), reports/s;
- import rate, store: `--store-sample` reports through `ReportsStore.add` (5,000 a transaction; affirmed/negated
  text as the generator wrote it), the rest bulk-inserted (the full-text triggers index each row), reports/s of
  each, and the database's growth on disk (reports table + full-text index);
- per query (interleaved, the same `--queries` finding+anatomy texts): vector-only `search` (k=10), the same with
  the words as a `report` filter, and `hybrid_search`; wall-clock p50 and the calling thread's CPU time p50.

    flock /tmp/bigmem.lock python bench/reports.py --reports 1000000 --images 100000 --json /tmp/bench-reports.json
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from machine import cpu_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api_load import SYNTHETIC_BASE, WIDTH, synthetic_row  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from synthetic import cluster_centres, synthetic_rows  # noqa: E402

from retrieval import query as engine  # noqa: E402
from retrieval.collection import Collection  # noqa: E402
from retrieval.encoders.standin import build_standin_model  # noqa: E402
from retrieval.hybrid import hybrid_search  # noqa: E402
from retrieval.reports.imports import import_reports  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from retrieval.store.models import Image, Report, Vector  # noqa: E402
from retrieval.store.repo import Filters  # noqa: E402
from retrieval.store.reports import NewReport  # noqa: E402

# -- the lexicon ----------------------------------------------------------------------------------------
FINDINGS = (
    "pleural effusion", "pneumothorax", "consolidation", "atelectasis", "pulmonary nodule", "mass", "cardiomegaly",
    "pulmonary edema", "emphysema", "fibrosis", "bronchiectasis", "ground glass opacity", "hilar adenopathy",
    "rib fracture", "vertebral compression fracture", "osteophytes", "degenerative disc disease", "hernia",
    "free air", "bowel obstruction", "ascites", "hepatomegaly", "splenomegaly", "gallstones", "hydronephrosis",
    "renal cyst", "kidney stone", "appendicitis", "diverticulitis", "lymphadenopathy", "aortic aneurysm",
    "calcified granuloma", "infiltrate", "abscess", "hemorrhage", "infarct", "mass effect", "midline shift",
    "white matter lesions", "sinus disease", "meniscal tear", "ligament tear", "joint effusion", "osteopenia",
    "soft tissue swelling", "foreign body", "thrombus", "embolism", "stenosis", "calcification", "cyst",
    "metastasis", "lesion", "scarring", "thickening", "dilatation", "enhancement", "edema", "tear", "fracture",
)  # fmt: skip
ANATOMY = (
    "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe", "lingula",
    "left lung base", "right lung base", "mediastinum", "hilum", "pericardium", "thoracic spine", "lumbar spine",
    "cervical spine", "liver", "spleen", "pancreas", "gallbladder", "left kidney", "right kidney", "bladder",
    "appendix", "sigmoid colon", "small bowel", "abdominal aorta", "frontal lobe", "parietal lobe", "temporal lobe",
    "occipital lobe", "cerebellum", "basal ganglia", "maxillary sinus", "medial meniscus", "lateral meniscus",
    "anterior cruciate ligament", "left breast", "right breast", "thyroid", "left hip", "right shoulder",
)  # fmt: skip
MODIFIERS = (
    "small", "large", "moderate", "mild", "severe", "trace", "subtle", "focal", "diffuse", "patchy", "bilateral",
    "new", "stable", "increased", "decreased", "unchanged", "chronic", "acute", "subacute", "loculated",
    "multifocal", "minimal", "extensive", "scattered", "possible", "probable", "early", "resolving",
)  # fmt: skip
NEGATIONS = ("No {f}.", "No evidence of {f}.", "Negative for {f}.", "{F} is not seen.", "Without {f}.")
NORMALS = (
    "Heart size is normal.", "Lungs are clear.", "No acute osseous abnormality.", "Soft tissues are unremarkable.",
    "Visualized structures are within normal limits.", "Lines and tubes are in satisfactory position.",
)  # fmt: skip
HEADINGS = ("CLINICAL HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION")
TECHNIQUES = ("PA and lateral views", "CT without contrast", "CT with contrast", "MRI without contrast", "ultrasound")


def make_report(rng: np.random.Generator) -> tuple[str, str, str]:
    """(text, affirmed, negated) of one synthetic report: 1-4 positive findings with modifier and place, 0-3
    negated findings, normal statements, the usual headings."""
    positives, negatives, normals = [], [], []
    for _ in range(int(rng.integers(1, 5))):
        finding = FINDINGS[int(rng.integers(len(FINDINGS)))]
        modifier = MODIFIERS[int(rng.integers(len(MODIFIERS)))]
        place = ANATOMY[int(rng.integers(len(ANATOMY)))]
        positives.append(f"{modifier.capitalize()} {finding} in the {place}.")
    for _ in range(int(rng.integers(0, 4))):
        finding = FINDINGS[int(rng.integers(len(FINDINGS)))]
        template = NEGATIONS[int(rng.integers(len(NEGATIONS)))]
        negatives.append(template.format(f=finding, F=finding.capitalize()))
    for _ in range(int(rng.integers(0, 3))):
        normals.append(NORMALS[int(rng.integers(len(NORMALS)))])
    technique = TECHNIQUES[int(rng.integers(len(TECHNIQUES)))]
    impression = positives[0]
    body = " ".join([*positives, *negatives, *normals])
    report = (
        f"{HEADINGS[0]}: follow-up. {HEADINGS[1]}: {technique}. {HEADINGS[2]}: prior study. "
        f"{HEADINGS[3]}: {body} {HEADINGS[4]}: {impression}"
    )
    affirmed_body = " ".join([*positives, *normals])
    affirmed = (
        f"{HEADINGS[0]}: follow-up. {HEADINGS[1]}: {technique}. {HEADINGS[2]}: prior study. "
        f"{HEADINGS[3]}: {affirmed_body} {HEADINGS[4]}: {impression}"
    )
    return report, affirmed, "\n".join(negatives)


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def study_uid(i: int) -> str:
    return f"1.2.826.0.1.3680043.10.998.1.{i}"


# -- the data folder ------------------------------------------------------------------------------------
def grow_images(collection: Collection, n: int, seed: int) -> float:
    """n synthetic images, image i the only one of study i, then the index rebuilt as the product does."""
    start = time.perf_counter()
    centres = cluster_centres(seed, 64, WIDTH)
    chunk = 20_000
    for have in range(0, n, chunk):
        m = min(chunk, n - have)
        vecs, days = synthetic_rows(seed, have, m, centres)
        rows = []
        for j in range(m):
            row = synthetic_row(have + j, int(days[j]))
            row["study_instance_uid"] = study_uid(have + j)
            row["series_instance_uid"] = f"1.2.826.0.1.3680043.10.998.2.{have + j}"
            rows.append(row)
        blobs = [{"image_id": SYNTHETIC_BASE + have + j, "vector": vecs[j].tobytes()} for j in range(m)]
        with collection.engine.begin() as conn:
            conn.execute(insert(Image.__table__), rows)
            conn.execute(insert(Vector.__table__), blobs)
    index = collection.require_index()
    index.rebuild(collection.catalog)
    index.save()
    return time.perf_counter() - start


def db_bytes(collection: Collection) -> int:
    with collection.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
        size = conn.execute(text("PRAGMA page_size")).scalar_one()
    return int(pages) * int(size)


def _report(i: int, rng: np.random.Generator) -> NewReport:
    report, affirmed, negated = make_report(rng)
    return NewReport(study_uid(i), "import", None, None, report, affirmed, negated, len(report), False, 0, True)


def store_reports(collection: Collection, n: int, seed: int, through_store: int) -> dict[str, Any]:
    """The first `through_store` reports through `ReportsStore.add` (5,000 a transaction, the import's own write
    path), the rest bulk-inserted (20,000 rows an executemany; the full-text triggers still index every row):
    each part's reports/s, and the database's growth on disk."""
    rng = np.random.default_rng([seed, 7])
    before = db_bytes(collection)
    start = time.perf_counter()
    for first in range(0, through_store, 5_000):
        collection.catalog.reports.add([_report(i, rng) for i in range(first, min(first + 5_000, through_store))])
    store_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for first in range(through_store, n, 20_000):
        rows = []
        for i in range(first, min(first + 20_000, n)):
            r = _report(i, rng)
            rows.append({**asdict(r), "text_hash": r.text_hash, "latest": True, "received_at": NOW})
        with collection.engine.begin() as conn:
            conn.execute(insert(Report.__table__), rows)
        if (first // 20_000) % 10 == 9:
            print(f"  {first + 20_000:,} reports stored ({time.perf_counter() - start:.0f}s)", flush=True)
    bulk_seconds = time.perf_counter() - start
    return {
        "reports": n,
        "store_path": {"reports": through_store, "seconds": round(store_seconds, 1)}
        | {"reports_per_s": round(through_store / store_seconds, 1) if through_store else None},
        "bulk": {"reports": n - through_store, "seconds": round(bulk_seconds, 1)}
        | {"reports_per_s": round((n - through_store) / bulk_seconds, 1) if n > through_store else None},
        "db_growth_mb": round((db_bytes(collection) - before) / 2**20, 1),
    }


def pipeline_rate(collection: Collection, n: int, seed: int, work: Path) -> dict[str, Any]:
    """`import_reports` (cap, de-identify, negation, store) on a CSV of n new reports of studies never indexed."""
    rng = np.random.default_rng([seed, 8])
    path = work / "pipeline.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "report"])
        for i in range(n):
            writer.writerow([f"1.2.826.0.1.3680043.10.997.1.{seed}.{i}", make_report(rng)[0]])
    start = time.perf_counter()
    summary = import_reports(collection, path)
    seconds = time.perf_counter() - start
    return {
        "reports": n,
        "stored": summary.stored,
        "seconds": round(seconds, 1),
        "reports_per_s": round(n / seconds, 1),
    }


# -- queries ------------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p90_ms": round(float(np.percentile(arr, 90)), 2)}


def time_queries(collection: Collection, queries: int, seed: int) -> dict[str, Any]:
    """The three kinds interleaved per query (same words, same vector): wall and thread-CPU seconds each."""
    rng = np.random.default_rng([seed, 9])
    centres = cluster_centres(seed, 64, WIDTH)
    kinds = ("vector-only", "report filter", "hybrid")
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    hits: dict[str, list[int]] = {k: [] for k in kinds}
    for q in range(queries + 3):  # the first 3 warm up
        vector = centres[int(rng.integers(len(centres)))] + 0.3 * rng.standard_normal(WIDTH).astype(np.float32) / 34
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        words = f"{FINDINGS[int(rng.integers(len(FINDINGS)))]} {ANATOMY[int(rng.integers(len(ANATOMY)))]}"
        qv = engine.QueryVector(vector=vector, kind="text")
        for kind in kinds:
            w0, c0 = time.perf_counter(), time.thread_time()
            if kind == "hybrid":
                found = hybrid_search(collection, qv, words, k=10)
            else:
                found = engine.search(
                    collection, qv, k=10, filters=Filters(report=words if kind != "vector-only" else None)
                )
            w1, c1 = time.perf_counter(), time.thread_time()
            if q >= 3:
                wall[kind].append(w1 - w0)
                cpu[kind].append(c1 - c0)
                hits[kind].append(len(found))
    out: dict[str, Any] = {}
    for kind in kinds:
        cpu_p50 = round(float(np.percentile(np.asarray(cpu[kind]) * 1000.0, 50)), 2)
        out[kind] = {**summary(wall[kind]), "cpu_p50_ms": cpu_p50, "mean_hits": float(np.mean(hits[kind]))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=100_000, help="studies (of the first ones) holding an image")
    parser.add_argument("--pipeline-sample", type=int, default=2_000, help="rows through the full import pipeline")
    parser.add_argument("--store-sample", type=int, default=5_000, help="reports through ReportsStore.add")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-reports"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cpu": cpu_line(), "load_average_start": os.getloadavg()}
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    print(cpu_line(), "| load", os.getloadavg(), flush=True)
    model_dir = args.work / "model"
    if not (model_dir / "config.json").exists():
        build_standin_model(model_dir, width=WIDTH, layers=1, heads=16)
    data_dir = args.work / f"data-{args.reports}-{args.images}"
    with Collection(Settings(data_dir=data_dir, model=str(model_dir))) as collection:
        if collection.catalog.change_marker()[0] == 0:
            result["images_seconds"] = round(grow_images(collection, args.images, args.seed), 1)
            print(f"{args.images:,} images in {result['images_seconds']}s", flush=True)
            through = min(args.store_sample, args.reports)
            result["store"] = store_reports(collection, args.reports, args.seed, through)
            print("store:", result["store"], flush=True)
        result["pipeline"] = pipeline_rate(collection, args.pipeline_sample, int(time.time()), args.work)
        print("pipeline:", result["pipeline"], flush=True)
        result["db_mb"] = round(db_bytes(collection) / 2**20, 1)
        result["index"] = collection.index.describe()["params"] if collection.index is not None else None
        result["queries"] = time_queries(collection, args.queries, args.seed)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
