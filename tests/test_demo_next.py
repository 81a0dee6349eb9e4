"""After the demo: its printed commands work verbatim, `demo --serve` serves, model errors name the stand-in."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import SAMPLES, running_process

pytestmark = pytest.mark.e2e  # drives the real `medsearch` command (not in `make test-fast`)

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
SERVE = "http://127.0.0.1:8000"  # what the printed serve command uses (the tests run in a private network)


def user_env() -> dict[str, str]:
    """A user's environment: no MEDSEARCH_* settings, and no model hub to reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "100"})
    return env


def as_argv(line: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """A printed shell line: leading NAME=value assignments go to the environment, the rest is the command."""
    words = shlex.split(line)
    env = dict(env)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return words, env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """`medsearch demo` run as after a fresh clone: from a folder holding data/samples, default settings."""
    home = tmp_path_factory.mktemp("clone")
    shutil.copytree(SAMPLES, home / "data" / "samples")
    proc = subprocess.run([MEDSEARCH, "demo"], env=user_env(), cwd=home, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line.strip() for line in proc.stdout.splitlines() if line.startswith("  ") and MEDSEARCH in line]
    assert "Query the demo collection:" in proc.stdout and "make serve-demo" in proc.stdout
    return home, commands


def test_printed_commands_work_verbatim(demo: tuple[Path, list[str]], tmp_path: Path) -> None:
    home, commands = demo
    assert [c.split()[2] for c in commands] == ["search", "search", "stats", "serve"]
    for line in commands[:3]:
        argv, env = as_argv(line, user_env())
        proc = subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        if argv[1] == "search":
            assert "10 similar images" in proc.stdout or "5 similar images" in proc.stdout, proc.stdout
        else:
            assert re.search(r"images: 10\b", proc.stdout) and "standin" not in proc.stderr
    argv, env = as_argv(commands[3], user_env())
    with running_process(argv, env, f"{SERVE}/readyz", tmp_path / "serve.log", cwd=home):
        assert httpx.get(f"{SERVE}/").status_code == 200
        found = httpx.post(f"{SERVE}/v1/search/text", json={"text": "chest x-ray", "k": 3}, timeout=60).json()
        assert len(found["hits"]) == 3 and found["standin_model"] is True


def test_model_error_names_the_existing_standin(demo: tuple[Path, list[str]]) -> None:
    home, _ = demo
    proc = subprocess.run(
        [MEDSEARCH, "search", "--text", "chest"], env=user_env(), cwd=home, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert message.startswith("error (model_unavailable):")
    assert "An offline stand-in model already exists: MEDSEARCH_MODEL=medsearch-data/standin-model" in message
    assert "--data-dir medsearch-data/demo-standin" in message and "make-test-model" not in message


def test_demo_serve(demo: tuple[Path, list[str]], tmp_path: Path) -> None:
    home, _ = demo
    argv = [MEDSEARCH, "demo", "--serve"]
    with running_process(argv, user_env(), f"{SERVE}/readyz", tmp_path / "d.log", timeout=600, cwd=home):
        stats = httpx.get(f"{SERVE}/v1/stats", timeout=30).json()
        assert stats["images"] == 10
    assert "serving the demo collection" in (tmp_path / "d.log").read_text()
