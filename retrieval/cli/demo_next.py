"""After `medsearch demo`: the exact commands that query and serve the demo collection, and `demo --serve`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from retrieval.cli.common import say

SERVE_URL = "http://127.0.0.1:8000/"


def medsearch_command() -> str:
    """How this program was started (`.venv/bin/medsearch` after `make demo`), to print runnable commands."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else "medsearch"
    if os.sep not in program:
        return "medsearch"
    path = Path(program)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def next_steps(model: str, data_dir: Path, image: Path, text: str) -> list[str]:
    """Commands that work verbatim from the folder the demo ran in (model and data folder spelled out)."""
    prefix = f"MEDSEARCH_MODEL={shlex.quote(model)} {shlex.quote(medsearch_command())}"
    folder = f"--data-dir {shlex.quote(str(data_dir))}"
    return [
        f"{prefix} search {folder} --text {shlex.quote(text)}",
        f"{prefix} search {folder} --image {shlex.quote(str(image))} -k 5",
        f"{prefix} stats {folder}",
        f"{prefix} serve {folder}",
    ]


def print_next_steps(model: str, data_dir: Path, image: Path, text: str) -> None:
    """The closing lines of the demo: what to run next."""
    lines = next_steps(model, data_dir, image, text)
    say("\nQuery the demo collection:")
    for line in lines[:-1]:
        say(f"  {line}")
    say(f"Serve it (web page at {SERVE_URL}; or `make serve-demo`):")
    say(f"  {lines[-1]}")


def serve_demo(model: str, data_dir: Path) -> None:
    """`medsearch serve` on the demo collection, with the model the demo used."""
    from retrieval.cli.service import serve

    os.environ["MEDSEARCH_MODEL"] = model  # read by the service's own settings
    say(f"serving the demo collection {data_dir} at {SERVE_URL}")
    serve(host=None, port=None, data_dir=data_dir)
