"""Search output a person can read: one line per hit at 80 columns, --wide for everything, empty results say why."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.e2e  # drives the real `medsearch` command (not in `make test-fast`)

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
ROW = re.compile(r"^\s*\d+\s+\d+\s+-?\d\.\d{4}\s")  # rank, id, score


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tables")
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(root / "data"), "MEDSEARCH_MODEL": str(tiny_model)}
    env["COLUMNS"] = "80"
    medsearch(env, "index", "-q", "--workers", "0", str(SAMPLES), "--labels", str(SAMPLES / "labels.csv"))
    return env


def medsearch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_empty_results_say_why(env: dict[str, str], tmp_path: Path) -> None:
    empty = medsearch({**env, "MEDSEARCH_DATA_DIR": str(tmp_path / "new")}, "search", "--text", "chest")
    assert "no results: nothing indexed yet" in empty.stdout and "similar images" not in empty.stdout
    filtered = medsearch(env, "search", "--text", "chest", "--modality", "XA", "--date-from", "2001-01-01")
    assert "no image matches these filters: modality=XA, date_from=2001-01-01" in filtered.stdout
    assert "on its own, modality matches nothing" in filtered.stdout
    report = json.loads(medsearch(env, "search", "--text", "chest", "--label", "nope", "--json").stdout)
    assert report["hits"] == [] and "label=nope" in report["empty_reason"]


def test_hits_fit_80_columns_one_line_each(env: dict[str, str]) -> None:
    full = json.loads(medsearch(env, "search", "--text", "chest x-ray", "-k", "10", "--json").stdout)["hits"]
    table = medsearch(env, "search", "--text", "chest x-ray", "-k", "10").stdout
    lines = table.splitlines()
    assert all(len(line) <= 80 for line in lines), table
    rows = [line for line in lines if ROW.match(line)]
    assert len(rows) == len(full) == 10, table  # one line per hit: nothing wraps
    for hit, row in zip(full, rows, strict=True):
        assert (hit["study_date"] or "") in row  # whole ISO dates
        assert Path(hit["source"]).name in row or "…" in row  # the file name, not the whole path
        assert hit["study_instance_uid"][-8:] in row and hit["study_instance_uid"] not in row  # shortened UID
    wide = medsearch(env, "search", "--text", "chest x-ray", "-k", "10", "--wide").stdout
    for hit in full:
        assert hit["source"] in wide and hit["sop_instance_uid"] in wide and hit["study_instance_uid"] in wide


def test_search_help_shows_every_default(env: dict[str, str]) -> None:
    text = medsearch(env, "search", "--help").stdout
    assert "…" not in text, text
    flat = " ".join(text.replace("│", " ").split())
    for default in ("[default: 10]", "[default: image]", "[default: 0.5]"):
        assert default in flat, text
    assert "--show-duplicates" in text and "--wide" in text
