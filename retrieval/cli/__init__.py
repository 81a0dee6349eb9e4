"""The `medsearch` command line: parse, call the library, print. One module per group of commands."""

from __future__ import annotations

import sys

from retrieval.cli import (  # noqa: F401  # registers the commands
    copies,
    dev,
    evaluating,
    findings,
    indexing,
    pacs,
    reports,
    searching,
    service,
)
from retrieval.cli.common import app, err, quiet_libraries
from retrieval.errors import ModelLoadError
from retrieval.optional import without_telemetry
from retrieval.settings_errors import translate

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    quiet_libraries()
    without_telemetry()  # whatever imports OpenVINO in this process: nothing sent, nothing written under ~
    try:
        app()
    except ModelLoadError as exc:  # pragma: no cover - defensive; commands already translate errors
        err.print(f"error ({exc.code}): {exc}")
        sys.exit(1)
    except Exception as exc:  # settings are read inside every command: one line, never pydantic's traceback
        problem = translate(exc)
        if problem is None:
            raise
        err.print(f"[bold red]error[/] ({problem.code}): ", end="")
        err.print(str(problem), markup=False)
        sys.exit(1)
