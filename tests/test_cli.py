"""The `medsearch` command as a user runs it: real subprocesses, JSON output, errors without tracebacks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from retrieval.vocabulary import STATS_FIELDS
from tests.commands import run
from tests.conftest import REPO, SAMPLES

pytestmark = pytest.mark.e2e  # drives the real `medsearch` command (not in `make test-fast`)


def test_index_search_stats_remove_rebuild(cli_env: dict[str, str]) -> None:
    out = json.loads(run(["index", str(SAMPLES), "--labels", str(SAMPLES / "labels.csv"), "--json"], cli_env).stdout)
    assert out["indexed"] == 10 and out["failed"] == 0 and out["sources"] == 10
    assert set(out["images_per_second"]) >= {"decode", "preprocess", "encode", "write", "overall"}
    again = json.loads(run(["index", str(SAMPLES), "--json"], cli_env).stdout)
    assert again["indexed"] == 0 and again["skipped"] == 10

    hits = json.loads(run(["search", "--image", str(SAMPLES / "CT_small.dcm"), "-k", "3", "--json"], cli_env).stdout)
    top = hits["hits"][0]
    assert top["source"].endswith("CT_small.dcm") and top["score"] > 0.999 and top["label"] == "ct-chest"
    assert "patient" not in json.dumps(hits).lower()

    text = json.loads(run(["search", "--text", "chest x-ray", "-k", "4", "--json"], cli_env).stdout)
    assert len(text["hits"]) == 4 and all(0 < h["text_score"] < 1 for h in text["hits"])
    ct_only = json.loads(run(["search", "--text", "head", "--modality", "CT", "--json"], cli_env).stdout)
    assert ct_only["hits"] and {h["modality"] for h in ct_only["hits"]} == {"CT"}
    pivot = json.loads(run(["search", "--id", str(top["id"]), "-k", "2", "--json"], cli_env).stdout)
    assert len(pivot["hits"]) == 2 and top["id"] not in [h["id"] for h in pivot["hits"]]

    stats = json.loads(run(["stats", "--json"], cli_env).stdout)
    assert stats["images"] == stats["vectors"] == stats["index_vectors"] == 10
    assert stats["standin_model"] is True and stats["by_modality"]["CR"] == 2
    assert list(stats) == list(STATS_FIELDS) and stats["index"]["params"]["type"] == "flat"

    assert "removed 1 images" in run(["remove", "--id", str(top["id"])], cli_env).stdout
    assert json.loads(run(["stats", "--json"], cli_env).stdout)["index_vectors"] == 9
    assert "rebuilt the index with 9 vectors" in run(["rebuild-index"], cli_env).stdout
    assert json.loads(run(["index", str(SAMPLES), "--json"], cli_env).stdout)["indexed"] == 1  # comes back


def test_errors_are_clear_and_never_tracebacks(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = run(["search", "--id", "999999"], cli_env, check=False)
    assert missing.returncode == 1 and "no indexed image with id 999999" in missing.stderr
    bad_k = run(["search", "--text", "x", "-k", "0"], cli_env, check=False)
    assert bad_k.returncode == 1 and "k must be between" in bad_k.stderr
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    bad_image = run(["search", "--image", str(junk)], cli_env, check=False)
    assert bad_image.returncode == 1 and "error" in bad_image.stderr
    other_env = {**cli_env, "MEDSEARCH_MODEL": str(tmp_path / "other")}
    run(["dev", "make-test-model", str(tmp_path / "other"), "--width", "48"], other_env)
    mismatch = run(["search", "--text", "chest"], other_env, check=False)
    assert mismatch.returncode == 1 and "model_mismatch" in mismatch.stderr and "MEDSEARCH_MODEL" in mismatch.stderr
    no_model = run(["search", "--text", "x"], {**cli_env, "MEDSEARCH_MODEL": str(tmp_path / "nowhere")}, check=False)
    assert no_model.returncode == 1 and "make-test-model" in no_model.stderr
    for proc in (missing, bad_k, bad_image, mismatch, no_model):
        assert "Traceback" not in proc.stderr + proc.stdout


def test_demo_falls_back_to_the_standin_and_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDSEARCH_DATA_DIR": str(tmp_path / "demo"), "COLUMNS": "200"}
    env.pop("MEDSEARCH_MODEL", None)
    proc = run(["demo"], env)
    assert "Falling back to the offline stand-in model" in proc.stdout
    assert "meaningless" in proc.stdout
    assert "indexed 10 images from 10 files" in proc.stdout
    assert "image query" in proc.stdout and "text query" in proc.stdout
    assert re.search(r"│ 1\s+│ \d+\s+│ 1\.0000", proc.stdout)  # the query image finds itself first


@pytest.mark.slow  # one real `medsearch` process per command; tests/test_docs.py checks the same in-process
def test_every_command_has_help_and_is_documented() -> None:
    guides = "\n".join(page.read_text() for page in (REPO / "docs").rglob("*.md") if page.name != "cli.md")
    env = dict(os.environ)
    names = re.compile(r"^│ ([a-z][\w-]*)\s{2,}", flags=re.MULTILINE)
    commands = names.findall(run(["--help"], env).stdout)
    assert {"index", "search", "stats", "failures", "remove", "rebuild-index", "demo", "serve", "dev", "key"} <= set(
        commands
    )
    groups = {
        "dev": ["make-test-model", "make-test-summarizer"],
        "key": ["new"],
        "tags": ["apply", "list", "remove"],
        "probe": ["train", "apply", "list", "remove", "rank"],
    }
    full = [c for c in commands if c not in groups]
    for group, expected in groups.items():
        assert names.findall(run([group, "--help"], env).stdout) == expected
        full += [f"{group} {sub}" for sub in expected]
    for command in full:
        assert "Usage:" in run([*command.split(), "--help"], env).stdout
        assert f"medsearch {command}" in guides, f"no page in docs/ documents `medsearch {command}`"
