"""Messages say what happened: a missing query file is "no such file", a vanished indexed source "no longer exists"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.errors import DecodeError, NotFoundError
from retrieval.sources.files import read_file, read_uri

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")


def test_read_messages(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"^no such file: .*missing\.dcm$"):
        read_file(tmp_path / "missing.dcm", 1000)
    with pytest.raises(NotFoundError, match=r"no longer exists \(it was indexed from there\)"):
        read_uri(str(tmp_path / "gone.dcm"), 1000)
    with pytest.raises(DecodeError, match="is a folder, not a file"):
        read_file(tmp_path, 1000)


@pytest.mark.e2e
def test_search_with_a_missing_image_says_no_such_file(tmp_path: Path, tiny_model: Path) -> None:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(tmp_path / "data"), "MEDSEARCH_MODEL": str(tiny_model)}
    env["COLUMNS"] = "300"
    proc = subprocess.run(
        [MEDSEARCH, "search", "--image", "missing.dcm"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error (not_found): no such file: missing.dcm"
