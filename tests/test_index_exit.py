"""`medsearch index` exit statuses for cron and PACS scripts: 0 all indexed, 2 any failure or nothing found."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.commands import index
from tests.conftest import SAMPLES

pytestmark = pytest.mark.e2e  # drives the real `medsearch index` command (not in `make test-fast`)

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")


def test_missing_path_is_a_usage_error_before_the_model_loads(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "MEDSEARCH_MODEL": str(tmp_path / "no-model-here")}  # loading it would fail: it is never tried
    start = time.monotonic()
    proc = index(env, str(tmp_path / "typo" / "path"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no such file or folder" in proc.stderr and "typo/path" in proc.stderr
    assert "model" not in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing recorded as a permanent failure
    assert time.monotonic() - start < 60


def test_nothing_found_exits_2_unless_allowed(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")  # ignored sidecar: still nothing to index
    proc = index(env, str(empty))
    assert proc.returncode == 2 and "nothing to index" in proc.stderr
    assert index(env, str(empty), "--allow-failures").returncode == 0


def test_failures_exit_2_and_json_still_prints(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "CT_small.dcm", folder)
    (folder / "broken.dcm").write_bytes(b"DICM" * 10)
    proc = index(env, str(folder), "--json")
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["indexed"] == 1 and report["failed"] == 1 and "1 file(s) failed" in proc.stderr
    (folder / "broken2.dcm").write_bytes(b"\0" * 200)
    allowed = index(env, str(folder), "--allow-failures")
    assert allowed.returncode == 0 and "1 failed" in allowed.stdout


def test_all_indexed_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "good"
    folder.mkdir()
    shutil.copy(SAMPLES / "CT_small.dcm", folder)
    first = index(env, str(folder))
    assert first.returncode == 0 and "indexed 1 images" in first.stdout, first.stderr
    again = index(env, str(folder))  # nothing new, nothing failed: still success
    assert again.returncode == 0 and "skipped 1 already done" in again.stdout
