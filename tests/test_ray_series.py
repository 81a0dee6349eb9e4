"""`index --ray` runs the same series plan as a local run: the same sampled slices, positions and records."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands import MEDSEARCH
from tests.conftest import REPO
from tests.phantoms import volume, write_enhanced, write_series

pytestmark = [pytest.mark.backends("sqlite-faiss"), pytest.mark.peers, pytest.mark.e2e]  # a real local Ray


@pytest.fixture
def ray_home() -> Iterator[Path]:
    """Ray's session files in a short temporary folder (its socket paths must fit in 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(data_dir: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Images (SOP, frame, position), sources (path, status, reason) and series plans, without run-local values."""
    with sqlite3.connect(data_dir / "medsearch.db") as db:
        images = db.execute(
            "SELECT sop_instance_uid, frame, round(slice_position, 3) FROM images ORDER BY 1, 2"
        ).fetchall()
        sources = db.execute(
            "SELECT uri, status, images, reason, series_instance_uid FROM sources ORDER BY 1"
        ).fetchall()
        series = db.execute(
            "SELECT series_instance_uid, slices_total, slices_sampled, requested, excluded_reasons"
            " FROM series ORDER BY 1"
        ).fetchall()
    return images, sources, series


def test_ray_plans_series_like_a_local_run(ray_home: Path, tiny_model: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "ct"
    write_series(inputs / "sphere", volume("sphere", slices=30, size=24), shape="sphere")
    write_enhanced(inputs / "enhanced" / "ct.dcm", volume("cube", slices=20, size=24), shape="cube")
    env = {
        **os.environ,
        "MEDSEARCH_MODEL": str(tiny_model),
        "RAY_TMPDIR": str(ray_home),
        "HOME": str(ray_home),
        "PYTHONPATH": str(REPO),
    }
    runs = {}
    for name, extra in (("local", ["--workers", "0"]), ("ray", ["--ray", "--ray-actors", "1", "--ray-decoders", "1"])):
        data_dir = tmp_path / name
        argv = [MEDSEARCH, "index", str(inputs), "-q", "--series-slices", "6", "--data-dir", str(data_dir), *extra]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = table(data_dir)
    images, sources, series = runs["local"]
    assert len(images) == 12 and sum(1 for s in sources if s[1] == "sampled_out") == 24
    assert sorted(s[1:4] for s in series) == [(20, 6, 6), (30, 6, 6)]
    assert runs["ray"] == runs["local"]
