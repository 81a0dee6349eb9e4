"""Reports from every source: a DICOM SR pulled over DICOMweb from a real Orthanc, and one sent by DCMTK's storescu
into `medsearch listen`, each becomes its study's scrubbed, searchable report (not a failure)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.commands import run
from tests.orthanc import free_port, start_orthanc
from tests.test_pacs_listen import Listener, _env, _wait_for
from tests.test_reports import HEADER_VALUES, _study_files

pytestmark = pytest.mark.peers  # starts Orthanc, `medsearch listen` and storescu (not in `make test-fast`)


def _stored(data_dir: Path, study: str) -> list[str]:
    """Every stored text column of the study's reports (read straight from the database file)."""
    database = data_dir / "medsearch.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as conn:
        try:
            rows = conn.execute(
                "SELECT text, affirmed, negated FROM reports WHERE study_instance_uid = ?", (study,)
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
    return ["\n".join(row) for row in rows]


def _check_report(data_dir: Path, study: str, env: dict[str, str]) -> None:
    stored = _stored(data_dir, study)
    assert len(stored) == 1 and "Small left pleural effusion" in stored[0]
    assert [v for v in HEADER_VALUES if v.lower() in stored[0].lower()] == []
    found = json.loads(run(["search", "--text", "chest", "--report", '"pleural effusion"', "--json"], env).stdout)
    assert [h["study_instance_uid"] for h in found["hits"]] == [study]
    assert "pleural effusion" in found["hits"][0]["report"]
    negated = json.loads(run(["search", "--text", "chest", "--report", "pneumothorax", "--json"], env).stdout)
    assert negated["hits"] == []


def test_an_sr_pulled_over_dicomweb_becomes_its_studys_report(tmp_path: Path, tiny_model: Path) -> None:
    study = _study_files(tmp_path / "study")
    server = start_orthanc(tmp_path / "orthanc")
    try:
        for name in ("ct.dcm", "sr.dcm"):
            server.upload((tmp_path / "study" / name).read_bytes())
        env = {**_env(tmp_path / "data", tiny_model), "COLUMNS": "200"}
        pulled = json.loads(run(["pull", "--dicomweb", server.dicomweb, "--json"], env).stdout)
    finally:
        server.stop()
    assert pulled["found"] == 2 and pulled["failed"] == 0, pulled
    _check_report(tmp_path / "data", study, env)


@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK storescu is not installed")
def test_an_sr_sent_by_storescu_into_listen_becomes_its_studys_report(tmp_path: Path, tiny_model: Path) -> None:
    study = _study_files(tmp_path / "study")
    env = _env(tmp_path / "data", tiny_model, MEDSEARCH_SPOOL_POLL_SECONDS="0.2")
    listener = Listener(env, free_port(), tmp_path / "listen.log", "--allow", "STORESCU")
    try:
        files = [str(tmp_path / "study" / name) for name in ("ct.dcm", "sr.dcm")]
        sent = subprocess.run(
            ["storescu", "-aet", "STORESCU", "-aec", "MEDSEARCH", "127.0.0.1", str(listener.port), *files],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        _wait_for(lambda: _stored(listener.data_dir, study), 120, "the listener to store the SR as a report")
    finally:
        listener.stop()
    assert "Quibble" not in (tmp_path / "listen.log").read_text()  # nor in the listener's log
    _check_report(tmp_path / "data", study, env)
