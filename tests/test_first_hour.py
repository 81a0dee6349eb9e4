"""The first hour with a collection: it remembers its model, a mistyped --data-dir is an error, errors stay one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.pipeline import IndexOptions, run_index
from retrieval import cpu
from retrieval.collection import Collection
from retrieval.encoders.factory import auto_precision
from retrieval.encoders.standin import build_standin_model
from retrieval.settings import Settings
from tests.conftest import SAMPLES

pytestmark = pytest.mark.e2e  # the real `medsearch` command (not in `make test-fast`)

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
FILES = sorted(SAMPLES.glob("*.dcm"))[:3]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDSEARCH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def user_env(**extra: str) -> dict[str, str]:
    """No MEDSEARCH_* settings, no terminal width, no model hub: as in a cron job writing to a log file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_") and k not in ("COLUMNS", "LINES")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "MEDSEARCH_WORKERS": "0", **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A collection indexed with MEDSEARCH_MODEL spelled as a path relative to the folder the indexer ran in."""
    root = tmp_path_factory.mktemp("first-hour")
    (root / "models").mkdir()
    made = run(["dev", "make-test-model", "models/m"], user_env(), root)
    assert made.returncode == 0, made.stderr
    indexed = run(["index", *map(str, FILES), "--data-dir", "data"], user_env(MEDSEARCH_MODEL="models/m"), root)
    assert indexed.returncode == 0, indexed.stderr
    return root / "data", root / "models" / "m"


def test_search_and_stats_use_the_model_the_collection_was_built_with(built: tuple[Path, Path], tmp_path: Path) -> None:
    data, model = built
    elsewhere = tmp_path  # another working folder: the relative spelling would not find the model from here
    found = run(["search", "--data-dir", str(data), "--text", "chest", "-k", "2", "--json"], user_env(), elsewhere)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["hits"]) == 2
    note = f"note: model '{model}': the one this collection was built with (MEDSEARCH_MODEL is unset)"
    assert note in found.stderr
    stats = run(["stats", "--data-dir", str(data), "--json"], user_env(), elsewhere)
    assert stats.returncode == 0 and note in stats.stderr
    report = json.loads(stats.stdout)
    assert report["model"] == str(model)
    # the precision that runs on this CPU, and the CPU flags it depends on
    assert report["encoder"] == f"openvino-{auto_precision(cpu.cpu_features())}"  # bf16, int8-reduced or fp32
    assert report["cpu_features"] == sorted(cpu.cpu_features())


def test_a_set_model_wins_and_a_gone_one_is_named(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = built
    collection = Collection(Settings(data_dir=data, model="google/medsiglip-448"))
    try:
        assert collection.settings.model == "google/medsiglip-448" and collection.model_note is None
    finally:
        collection.close()
    # a collection whose model folder was deleted: said, and the default is tried (the load error then names it)
    gone = tmp_path / "gone-model"
    gone_data = tmp_path / "gone-data"
    build_standin_model(gone)
    first = Collection(Settings(data_dir=gone_data, model=str(gone), workers=0))
    try:
        run_index(first, FILES[:1], IndexOptions(workers=0, batch_size=4))
    finally:
        first.close()
    shutil.rmtree(gone)
    monkeypatch.delenv("MEDSEARCH_MODEL", raising=False)
    second = Collection(Settings(data_dir=gone_data))
    try:
        assert second.settings.model == "google/medsiglip-448"
        assert second.model_note is not None and f"{str(gone)!r}, which is gone" in second.model_note
    finally:
        second.close()


@pytest.mark.parametrize("command", [["search", "--text", "chest"], ["stats"], ["serve", "--port", "8765"]])
def test_a_mistyped_data_dir_is_an_error_for_read_only_commands(
    command: list[str], built: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = built
    typo = data.parent / "dta"
    proc = run([*command, "--data-dir", str(typo)], user_env(), tmp_path)
    assert proc.returncode == 1 and not typo.exists()  # no new empty collection
    assert proc.stderr.startswith("error (bad_data_dir): the data folder") and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_long_error_stays_one_line_in_a_log_file(built: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = built
    env = user_env(MEDSEARCH_MODEL=str(tmp_path / "no-such-model"))  # a long message, stderr not a terminal
    proc = run(["search", "--data-dir", str(data), "--text", "chest"], env, tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error (model_unavailable): ") and len(lines[0]) > 200, lines
