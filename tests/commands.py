"""The `medsearch` command as a user runs it, for tests: a real subprocess, and an environment with a stand-in model.

`cli_env` is registered for every test file by `pytest_plugins` in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """`medsearch ARGS` from the repository root; fails the test with its output unless `check` is off."""
    proc = subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"medsearch {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment with its own data folder and a stand-in model built by `medsearch dev make-test-model`."""
    root = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDSEARCH_DATA_DIR": str(root / "data"), "COLUMNS": "200"}
    run(["dev", "make-test-model", str(root / "model")], env)
    env["MEDSEARCH_MODEL"] = str(root / "model")
    env["MEDSEARCH_WORKERS"] = "1"
    return env


def index(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`medsearch index -q --workers 0 ARGS` with `env`, its output captured."""
    argv = [str(MEDSEARCH), "index", "-q", "--workers", "0", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    """The environment of a `medsearch` command on a fresh data folder in this test's temp folder."""
    return {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(tmp_path / "data"),
        "MEDSEARCH_MODEL": str(tiny_model),
        "COLUMNS": "200",
    }
