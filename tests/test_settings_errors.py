"""Every bad MEDSEARCH_* value and every unusable data folder: one line with a code, exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from api.config import ServiceSettings
from retrieval.settings_errors import DataDirError, prepare_data_dir, translate

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
# Free text: any string is a valid value, so there is no bad one to give.
FREE_TEXT = {
    "model",
    "database_url",
    "patient_salt",
    "ct_window",
    "dicomweb_url",
    "dicomweb_user",
    "dicomweb_password",
    "dicomweb_token",
    "listen_host",
    "listen_allow",
    "summary_model",
    "summary_url",
    "summary_api_key",
    "milvus_uri",
    "milvus_token",
    "host",
    "api_keys",  # checked when the service starts (its own bad_settings error, tested in test_api)
    "viewer_url_template",  # checked when the service starts (unknown placeholders)
    "export_ae",  # checked when an export runs (AET@host:port, a one-line settings error: test_export_sr)
    "export_dicomweb",  # a URL, like dicomweb_url
}


def bad_value(name: str, annotation: Any, metadata: list[Any]) -> str | None:
    """A value the field must refuse, from its type and constraints (None for free text)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) and len(args) == 1 else annotation
    if typing.get_origin(base) is typing.Literal:
        return "bogus-choice"
    if base is bool:
        return "maybe"
    if base in (int, float):
        return "two"
    if typing.get_origin(base) is list:
        return "http://not-json"
    if base is Path:
        return None  # folders are checked when used: see the data-folder tests below
    if base is str and any(getattr(m, "pattern", None) or getattr(m, "max_length", None) for m in metadata):
        return "x" * 300 + " !"
    return None


FIELDS = sorted(ServiceSettings.model_fields.items())


def test_every_setting_has_a_bad_value_or_is_free_text() -> None:
    untestable = {name for name, info in FIELDS if bad_value(name, info.annotation, info.metadata) is None} - {
        "data_dir",
        "spool_dir",
    }
    assert untestable == FREE_TEXT


@pytest.mark.parametrize(("name", "info"), FIELDS, ids=[name for name, _ in FIELDS])
def test_each_bad_setting_is_one_line_naming_the_variable(
    name: str, info: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = bad_value(name, info.annotation, info.metadata)
    if value is None:
        assert name in FREE_TEXT | {"data_dir", "spool_dir"}
        return
    variable = f"MEDSEARCH_{name.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises((ValidationError, SettingsError)) as caught:
        ServiceSettings()
    problem = translate(caught.value)
    assert problem is not None and problem.code == "bad_settings"
    message = str(problem)
    assert "\n" not in message and variable in message and len(message) < 400


def test_numbers_out_of_range_are_caught_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEARCH_WORKERS", "-1")
    monkeypatch.setenv("MEDSEARCH_PORT", "70000")
    with pytest.raises(ValidationError) as caught:
        ServiceSettings()
    message = str(translate(caught.value))
    assert "MEDSEARCH_WORKERS='-1'" in message and "MEDSEARCH_PORT='70000'" in message


def test_data_folder_problems(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataDirError, match="is a file, not a folder"):
        prepare_data_dir(a_file)
    with pytest.raises(DataDirError, match="a file is in the way"):
        prepare_data_dir(a_file / "below")
    with pytest.raises(DataDirError, match="cannot be created or written"):
        prepare_data_dir(Path("/sys/medsearch-data"))  # refused even to root
    prepare_data_dir(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir() and not list((tmp_path / "new" / "folder").iterdir())


CASES = [
    ("MEDSEARCH_INDEX_TYPE", "fast", ["stats"]),
    ("MEDSEARCH_WORKERS", "two", ["index", "."]),
    ("MEDSEARCH_DEVICE", "gpu", ["search", "--text", "x"]),
    ("MEDSEARCH_PORT", "abc", ["serve"]),
    ("MEDSEARCH_CORS_ORIGINS", "http://x", ["serve"]),
]


@pytest.mark.parametrize(("variable", "value", "args"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.e2e
def test_cli_bad_setting_exits_1_with_one_line(variable: str, value: str, args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(tmp_path / "data"), variable: value, "COLUMNS": "300"}
    proc = subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error (bad_settings): ") and variable in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and not (tmp_path / "data").exists()


@pytest.mark.parametrize("how", ["env-file", "option-unwritable", "option-below-file"])
@pytest.mark.e2e
def test_cli_bad_data_folder_exits_1_with_one_line(how: str, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    env = {**os.environ, "COLUMNS": "300"}
    args = ["stats"]
    if how == "env-file":
        env["MEDSEARCH_DATA_DIR"] = str(a_file)
    else:
        args += ["--data-dir", "/sys/medsearch-data" if how == "option-unwritable" else str(a_file / "data")]
    proc = subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error (bad_data_dir): "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.e2e
def test_usage_errors_keep_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([MEDSEARCH, "search", "-k", "many"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
